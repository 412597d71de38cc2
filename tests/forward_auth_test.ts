/**
 * `forward_auth` with a real auth service playing Authelia's protocol in front of a real
 * backend: what the service is asked, what goes on, forged identities, the service's refusals
 * passed back as they are, a stopped or silent service, the answer cache, an https service with
 * the proxy's TLS options, and configuration errors.
 */
import assert from "node:assert/strict";
import {
  autheliaBackend,
  brokenBackend,
  type Echo,
  echoBackend,
  recordingBackend,
  serveBackend,
} from "./support/backends.ts";
import { checkAccess } from "../src/routes/auth.ts";
import { makeBackendCerts } from "./support/certs.ts";
import { runCli } from "./support/cli.ts";
import { get } from "./support/clients.ts";
import { configError } from "./support/config.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { startTestServer } from "./support/servers.ts";

const LOGIN = "https://auth.example.com/";
const SESSIONS = {
  "good-alice": { user: "alice", groups: "admins,dev" },
  "good-bob": { user: "bob" },
  "banned-eve": { user: "eve", denied: true },
};

/** The proxy path /app to the echo backend, guarded by the Authelia-like service. */
function appConfig(authPort: number, backendPort: number, extra: Record<string, unknown> = {}) {
  return {
    server: {
      reverse_proxy: [{ path: "/app", host: "127.0.0.1", port: backendPort }],
      locations: {
        "/app": {
          forward_auth: { url: `http://127.0.0.1:${authPort}/api/authz/forward-auth`, ...extra },
        },
      },
    },
  };
}

const cookie = (session: string) => ({ cookie: `authelia_session=${session}; theme=dark` });

Deno.test("forward_auth: a good session goes on with Remote-* copied; others are sent to the login page", async () => {
  await using auth = autheliaBackend(SESSIONS, LOGIN);
  await using backend = echoBackend();
  await using s = await startTestServer(appConfig(auth.port, backend.port));

  // No session: Authelia's 302 to its login page, with its body and cookie, as it sent them.
  let r = await get(`${s.url}/app/dash?panel=1`);
  assert.equal(r.status, 302);
  const rd = encodeURIComponent(`${s.url}/app/dash?panel=1`);
  assert.equal(r.headers.get("location"), `${LOGIN}?rd=${rd}&rm=GET`);
  assert.equal(r.headers.get("set-cookie"), "authelia_flow=1; Path=/");
  assert.match(r.body, /302 Found/);
  assert.equal(backend.seen.length, 0, "nothing reached the backend");

  // What the service was asked: a GET without a body, the request's facts as X-Forwarded-*.
  const asked = auth.seen.at(-1)!;
  assert.equal(asked.method, "GET");
  assert.equal(asked.path, "/api/authz/forward-auth");
  assert.equal(asked.headers.get("x-forwarded-method"), "GET");
  assert.equal(asked.headers.get("x-forwarded-proto"), "http");
  assert.equal(asked.headers.get("x-forwarded-host"), new URL(s.url).host);
  assert.equal(asked.headers.get("x-forwarded-uri"), "/app/dash?panel=1");
  assert.equal(asked.headers.get("x-forwarded-for"), "127.0.0.1");
  assert.equal(asked.headers.get("x-original-url"), `${s.url}/app/dash?panel=1`);
  assert.equal(asked.headers.get("host"), `127.0.0.1:${auth.port}`);

  // A good session: the backend gets the request with the identity the service named.
  r = await get(`${s.url}/app/dash`, {
    headers: { ...cookie("good-alice"), authorization: "Bearer t0k" },
  });
  assert.equal(r.status, 200);
  const echo = JSON.parse(r.body) as Echo;
  assert.equal(echo.path, "/dash");
  assert.equal(echo.headers["remote-user"], "alice");
  assert.equal(echo.headers["remote-groups"], "admins,dev");
  assert.equal(echo.headers["remote-email"], "alice@example.com");
  assert.equal(echo.headers["x-not-copied"], undefined, "only copy_headers are copied");
  assert.equal(echo.headers["cookie"], "authelia_session=good-alice; theme=dark");
  const seen = auth.seen.at(-1)!;
  assert.equal(seen.headers.get("cookie"), "authelia_session=good-alice; theme=dark");
  assert.equal(seen.headers.get("authorization"), "Bearer t0k");

  // A POST: its body goes to the backend, never to the service; a refused POST gets 401.
  r = await get(`${s.url}/app/upload`, {
    method: "POST",
    headers: { ...cookie("good-bob"), "content-type": "text/plain" },
    body: "payload-bytes",
  });
  assert.equal(r.status, 200);
  assert.equal((JSON.parse(r.body) as Echo).body, "payload-bytes");
  const post = auth.seen.at(-1)!;
  assert.equal(post.method, "GET");
  assert.equal(post.headers.get("x-forwarded-method"), "POST");
  assert.equal(post.headers.get("content-length"), null);
  assert.equal(post.headers.get("content-type"), null);
  r = await get(`${s.url}/app/upload`, { method: "POST", body: "x" });
  assert.equal(r.status, 401);
  assert.equal(r.body, "401 Unauthorized");

  // The service's 403 goes back as it is.
  r = await get(`${s.url}/app/`, { headers: cookie("banned-eve") });
  assert.equal(r.status, 403);
  assert.equal(r.body, "403 Forbidden by policy");
  assert.equal(backend.seen.filter((b) => b.path.startsWith("/upload")).length, 1);

  // Paths outside the location are not asked about.
  const before = auth.seen.length;
  assert.notEqual((await get(`${s.url}/application`)).status, 302);
  assert.equal(auth.seen.length, before);
});

Deno.test("forward_auth: an identity the client forges is removed, with or without the service naming one", async () => {
  await using auth = autheliaBackend(SESSIONS, LOGIN);
  await using backend = echoBackend();
  await using s = await startTestServer(appConfig(auth.port, backend.port));
  const forged = { "remote-user": "admin", "Remote-Groups": "admins", "remote-email": "x@y" };

  // alice's session, an identity of admin's: alice it is.
  let r = await get(`${s.url}/app/x`, { headers: { ...cookie("good-alice"), ...forged } });
  assert.equal(r.status, 200);
  let echo = JSON.parse(r.body) as Echo;
  assert.equal(echo.headers["remote-user"], "alice");
  assert.equal(echo.headers["remote-groups"], "admins,dev");
  assert.equal(echo.headers["remote-email"], "alice@example.com");

  // bob's answer names no groups: the forged ones are gone all the same.
  r = await get(`${s.url}/app/x`, { headers: { ...cookie("good-bob"), ...forged } });
  echo = JSON.parse(r.body) as Echo;
  assert.equal(echo.headers["remote-user"], "bob");
  assert.equal(echo.headers["remote-groups"], undefined);

  // Without a session the forgery gets the login page.
  r = await get(`${s.url}/app/x`, { headers: forged });
  assert.equal(r.status, 302);
  assert.equal(backend.seen.length, 2);
});

Deno.test("forward_auth: a WebSocket upgrade is asked about, then bridged with the identity copied", async () => {
  await using auth = autheliaBackend(SESSIONS, LOGIN);
  await using backend = recordingBackend();
  await using s = await startTestServer(appConfig(auth.port, backend.port));
  const url = s.url.replace("http:", "ws:") + "/app/live";
  const open = (headers: HeadersInit) =>
    new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(url, { headers });
      ws.onopen = () => resolve(ws);
      ws.onerror = (e) => reject(new Error((e as ErrorEvent).message));
    });
  await assert.rejects(open({ "remote-user": "admin" }), "no session: the upgrade is refused");
  assert.equal(backend.heads.length, 0);
  const ws = await open({ ...cookie("good-alice"), "remote-user": "admin" });
  const closed = new Promise((r) => ws.onclose = r);
  ws.close();
  await closed;
  const head = backend.heads[0].map((l) => l.toLowerCase());
  assert.deepEqual(head.filter((l) => l.startsWith("remote-user:")), ["remote-user: alice"]);
  assert.equal(auth.seen.at(-1)!.headers.get("x-forwarded-uri"), "/app/live");
});

Deno.test("forward_auth: a stopped auth service gives 502 and a silent one 504, logged, nothing let through", async () => {
  await using backend = echoBackend();
  const auth = autheliaBackend(SESSIONS, LOGIN);
  await using s = await startTestServer(appConfig(auth.port, backend.port));
  assert.equal((await get(`${s.url}/app/`, { headers: cookie("good-alice") })).status, 200);
  await auth[Symbol.asyncDispose]();

  const r = await get(`${s.url}/app/`, { headers: cookie("good-alice") });
  assert.equal(r.status, 502);
  assert.equal(backend.seen.length, 1, "nothing reached the backend once the service stopped");
  assert.ok(
    s.log.lines.some((l) =>
      /^WARNING forward_auth server\.locations\.\/app: cannot ask http:\/\/127\.0\.0\.1:\d+ about GET \/app\/, refused with 502: /
        .test(l)
    ),
    s.log.lines.join("\n"),
  );

  // A service that accepts the connection and never answers: 504 once `timeout` has passed.
  await using silent = brokenBackend("hang");
  await using s2 = await startTestServer(appConfig(silent.port, backend.port, { timeout: 0.5 }));
  const late = await get(`${s2.url}/app/`, { headers: cookie("good-alice") });
  assert.equal(late.status, 504);
  assert.equal(backend.seen.length, 1);
  assert.ok(s2.log.lines.some((l) => l.includes("sent no answer within 0.5s")));
});

Deno.test("forward_auth: on a proxy rule, and with cache_ttl answers are reused per credentials and request", async () => {
  await using auth = autheliaBackend(SESSIONS, LOGIN);
  await using backend = echoBackend();
  await using s = await startTestServer({
    server: {
      reverse_proxy: [{
        path: "/grafana",
        host: "127.0.0.1",
        port: backend.port,
        forward_auth: {
          url: `http://127.0.0.1:${auth.port}/api/verify?rd=${encodeURIComponent(LOGIN)}`,
          copy_headers: ["Remote-User"],
          cache_ttl: 60,
        },
      }],
    },
  });
  for (let i = 0; i < 3; i++) {
    const r = await get(`${s.url}/grafana/d/1`, { headers: cookie("good-alice") });
    assert.equal(r.status, 200);
    const echo = JSON.parse(r.body) as Echo;
    assert.equal(echo.headers["remote-user"], "alice");
    assert.equal(echo.headers["remote-groups"], undefined, "not in this rule's copy_headers");
  }
  assert.equal(auth.seen.length, 1, "asked once for three requests");
  assert.equal(auth.seen[0].path, `/api/verify?rd=${encodeURIComponent(LOGIN)}`);
  // Another path, another session, no session: asked again; refusals are never cached.
  await get(`${s.url}/grafana/d/2`, { headers: cookie("good-alice") });
  await get(`${s.url}/grafana/d/1`, { headers: cookie("good-bob") });
  assert.equal(auth.seen.length, 3);
  for (let i = 0; i < 2; i++) {
    assert.equal((await get(`${s.url}/grafana/d/1`)).status, 302);
  }
  assert.equal(auth.seen.length, 5);
  // A forged Remote-User on a cached answer is still replaced.
  const r = await get(`${s.url}/grafana/d/1`, {
    headers: { ...cookie("good-alice"), "remote-user": "root" },
  });
  assert.equal((JSON.parse(r.body) as Echo).headers["remote-user"], "alice");
  assert.equal(auth.seen.length, 5);
});

Deno.test("forward_auth: an https auth service is verified with ca_file, as the proxy's backends", async () => {
  await using dir = await tempDir();
  const certs = await makeBackendCerts(dir.path);
  await using auth = autheliaBackend(SESSIONS, LOGIN, certs);
  await using backend = echoBackend();
  const url = `https://localhost:${auth.port}/api/authz/forward-auth`;
  {
    await using s = await startTestServer(appConfig(auth.port, backend.port, {
      url,
      ca_file: certs.ca,
    }));
    const r = await get(`${s.url}/app/`, { headers: cookie("good-alice") });
    assert.equal(r.status, 200);
    assert.equal((JSON.parse(r.body) as Echo).headers["remote-user"], "alice");
  }
  {
    // Without the CA the certificate is not trusted: 502, nothing let through.
    await using s = await startTestServer(appConfig(auth.port, backend.port, { url }));
    const r = await get(`${s.url}/app/`, { headers: cookie("good-alice") });
    assert.equal(r.status, 502);
    assert.equal(backend.seen.length, 1);
  }
  // insecure_skip_verify: reached all the same, and warned about by the checks.
  await using s = await startTestServer(
    appConfig(auth.port, backend.port, { url, insecure_skip_verify: true }),
  );
  const r = await get(`${s.url}/app/`, { headers: cookie("good-bob") });
  assert.equal(r.status, 200);
  assert.equal((JSON.parse(r.body) as Echo).headers["remote-user"], "bob");
  const checks = await checkAccess(s.config);
  assert.ok(
    checks.some((c) =>
      c.status === "warn" &&
      /forward_auth: insecure_skip_verify is on: .* is NOT verified/.test(c.message)
    ),
    JSON.stringify(checks),
  );
});

Deno.test("forward_auth: basic auth and forward_auth on one location, in that order", async () => {
  await using auth = serveBackend(() =>
    new Response(null, { status: 200, headers: { "remote-user": "svc" } })
  );
  await using backend = echoBackend();
  const config = appConfig(auth.port, backend.port);
  (config.server.locations["/app"] as Record<string, unknown>).auth = {
    type: "basic",
    users: [{ username: "ops", password: "pw-ops" }],
  };
  await using s = await startTestServer(config);
  assert.equal((await get(`${s.url}/app/`)).status, 401);
  assert.equal(auth.seen.length, 0, "the service is not asked before the password is right");
  const r = await get(`${s.url}/app/`, {
    headers: { authorization: `Basic ${btoa("ops:pw-ops")}` },
  });
  assert.equal(r.status, 200);
  assert.equal((JSON.parse(r.body) as Echo).headers["remote-user"], "svc");
  assert.equal(auth.seen[0].headers.get("authorization"), `Basic ${btoa("ops:pw-ops")}`);
});

Deno.test("forward_auth: a more specific location with only basic auth keeps the broader one's auth service", async () => {
  await using auth = autheliaBackend(SESSIONS, LOGIN);
  await using backend = echoBackend();
  const config = appConfig(auth.port, backend.port);
  (config.server.locations as Record<string, unknown>)["/app/admin"] = {
    auth: { type: "basic", username: "ops", password: "pw-ops" },
  };
  await using s = await startTestServer(config);
  const ops = { authorization: `Basic ${btoa("ops:pw-ops")}` };
  assert.equal((await get(`${s.url}/app/admin/x`, { headers: cookie("good-alice") })).status, 401);
  assert.equal((await get(`${s.url}/app/admin/x`, { headers: ops })).status, 302);
  const r = await get(`${s.url}/app/admin/x`, { headers: { ...ops, ...cookie("good-alice") } });
  assert.equal(r.status, 200);
  assert.equal((JSON.parse(r.body) as Echo).headers["remote-user"], "alice");
  assert.equal((await get(`${s.url}/app/other`, { headers: cookie("good-alice") })).status, 200);
});

Deno.test("forward_auth: copy_headers may name Authorization (oauth2-proxy's token): the service sees the client's, the backend its own", async () => {
  await using auth = serveBackend((request) =>
    request.headers.get("authorization") === "Basic Y2xpZW50OnB3"
      ? new Response(null, { status: 202, headers: { authorization: "Bearer from-service" } })
      : new Response("no", { status: 401 })
  );
  await using backend = echoBackend();
  await using s = await startTestServer(
    appConfig(auth.port, backend.port, { copy_headers: ["Authorization", "X-Auth-Request-User"] }),
  );
  const r = await get(`${s.url}/app/`, {
    headers: { authorization: "Basic Y2xpZW50OnB3", "x-auth-request-user": "forged" },
  });
  assert.equal(r.status, 200);
  const echo = JSON.parse(r.body) as Echo;
  assert.equal(echo.headers["authorization"], "Bearer from-service");
  assert.equal(echo.headers["x-auth-request-user"], undefined);
  assert.equal((await get(`${s.url}/app/`)).status, 401);
});

Deno.test("forward_auth: configuration errors name the key; --test configuration shows file:line", async () => {
  let m = configError({
    server: { locations: { "/a": { forward_auth: { url: "authelia:9091/verify" } } } },
  });
  assert.match(
    m,
    /server\.locations\.\/a\.forward_auth\.url must be an http:\/\/ or https:\/\/ URL/,
  );
  m = configError({
    server: {
      locations: { "/a": { forward_auth: { url: "http://a:1/", copy_headers: ["Remote User"] } } },
    },
  });
  assert.match(m, /copy_headers\[0\] must be a header name/);
  m = configError({
    server: { reverse_proxy: [{ path: "/x", forward_auth: { url: "http://a:1/", timeout: 0 } }] },
  });
  assert.match(m, /server\.reverse_proxy\[0\]\.forward_auth\.timeout must be a positive number/);

  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": [
      "server:",
      "  locations:",
      "    /app:",
      "      forward_auth:",
      "        url: http://127.0.0.1:9091/",
      "        ca_file: ./missing-ca.pem",
      "  reverse_proxy:",
      "    - path: /app",
      "      port: 3000",
      "      forward_auth: { url: http://127.0.0.1:9092/ }",
      "    - path: /b",
      "      forward_auth: { url: 'ftp://x/' }",
      "",
    ].join("\n"),
  });
  let out = await runCli(["--test", "configuration"], { cwd: dir.path });
  assert.equal(out.code, 2, out.stdout);
  assert.match(
    out.stdout,
    /config\.yaml:12:28: server\.reverse_proxy\[1\]\.forward_auth\.url must be/,
  );
  await writeFiles(dir.path, {
    "config.yaml": (await Deno.readTextFile(`${dir.path}/config.yaml`)).replace(
      "'ftp://x/'",
      "http://x/",
    ),
  });
  out = await runCli(["--test", "configuration"], { cwd: dir.path });
  assert.equal(out.code, 2, out.stdout);
  assert.match(
    out.stdout,
    /config\.yaml:6:18: server\.locations\.\/app\.forward_auth\.ca_file: .*missing-ca\.pem does not exist/,
  );
  assert.match(
    out.stdout,
    /config\.yaml:10:7: server\.reverse_proxy\[0\]\.forward_auth: server\.locations\.\/app\.forward_auth already guards \/app; keep one of them/,
  );
  // Without the permission to reach the service, the check names the flag to add.
  await writeFiles(dir.path, {
    "config.yaml": "server:\n  locations:\n    /app:\n      forward_auth:\n" +
      "        url: http://127.0.0.1:9091/verify\n",
  });
  out = await runCli(["--test", "configuration"], {
    cwd: dir.path,
    permissions: ["--allow-read", "--allow-env", "--allow-net=127.0.0.1:8000", "--no-prompt"],
  });
  assert.equal(out.code, 2, out.stdout + out.stderr);
  assert.match(
    out.stdout,
    /FAIL server\.locations\.\/app\.forward_auth\.url: .*config\.yaml:5:14: .*url: no net permission for 127\.0\.0\.1:9091; run with --allow-net=127\.0\.0\.1:9091/,
  );
});
