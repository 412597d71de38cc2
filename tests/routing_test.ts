/**
 * Redirects, basic auth, V2 locations, CORS and error-page templates, through the real server.
 */
import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import { ConfigError } from "../src/config/config_error.ts";
import { loadConfig, validate } from "../src/config/load.ts";
import { buildApp, unsupported } from "../src/routes/build.ts";
import { createErrorPages } from "../src/routes/error_pages.ts";
import { createProxyForward } from "../src/proxy/proxy_pass.ts";
import { startServer } from "../src/server/server.ts";
import { runCli } from "./support/cli.ts";
import { ROOT, tempDir, writeFiles } from "./support/files.ts";
import { echoBackend, serveBackend } from "./support/backends.ts";
import { captureLogger, freePort, startTestServer, type TestServer } from "./support/servers.ts";

const basic = (user: string, password: string) => `Basic ${btoa(`${user}:${password}`)}`;

async function get(url: string, init?: RequestInit) {
  const res = await fetch(url, { redirect: "manual", ...init });
  const body = await res.text();
  return { res, body, status: res.status, headers: res.headers };
}

function configError(raw: Record<string, unknown>): string {
  try {
    validate(structuredClone(raw));
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    return e.message;
  }
  assert.fail("expected a configuration error");
}

// ---------------------------------------------------------------- redirects

Deno.test("redirects: exact path, 302 by default, query carried over, status and absolute URL", async () => {
  await using dir = await tempDir();
  await using s = await startTestServer({
    http: { static_dir: dir.path },
    server: {
      redirect_instructions: [
        { "/home": "/index.html" },
        { "/blog": "https://blog.example.com/posts?lang=en" },
        { from: "/old", to: "/new", status: 301 },
        { from: "/tmp", to: "/elsewhere#top", status: 307 },
      ],
    },
  });
  let r = await get(`${s.url}/home?x=1&y=2`);
  assert.equal(r.status, 302);
  assert.equal(r.headers.get("location"), "/index.html?x=1&y=2");
  r = await get(`${s.url}/blog?page=2`);
  assert.equal(r.headers.get("location"), "https://blog.example.com/posts?lang=en&page=2");
  r = await get(`${s.url}/old`);
  assert.equal(r.status, 301);
  assert.equal(r.headers.get("location"), "/new");
  r = await get(`${s.url}/tmp?a=1`);
  assert.equal(r.status, 307);
  assert.equal(r.headers.get("location"), "/elsewhere?a=1#top");
  // Exact match only.
  r = await get(`${s.url}/home/x`);
  assert.equal(r.status, 404);
});

Deno.test("redirects: self redirects, loops and repeats are configuration errors", () => {
  let m = configError({ server: { redirect_instructions: [{ "/a": "/a?x=1" }] } });
  assert.match(m, /server\.redirect_instructions\[0\] redirects \/a to itself/);
  m = configError({
    server: {
      redirect_instructions: [{ "/a": "/b" }, { "/c": "https://x.example/" }, { "/b": "/a" }],
    },
  });
  assert.match(m, /redirect_instructions\[0\] makes a redirect loop: \/a → \/b → \/a/);
  assert.equal(m.split("\n").length, 1, "one loop is reported once");
  m = configError({ server: { redirect_instructions: [{ "/a": "/b" }, { "/a": "/c" }] } });
  assert.match(m, /redirect_instructions\[1\] repeats \/a/);
  m = configError({ server: { redirect_instructions: [{ "/a": "b.html" }] } });
  assert.match(m, /must be a path starting with "\/" or an http\(s\):\/\/ URL/);
  m = configError({ server: { redirect_instructions: [{ from: "/a", to: "/b", status: 303 }] } });
  assert.match(m, /must be `\/from: \/to` or \{ from, to, status \}|must be 301, 302, 307 or 308/);
});

// ---------------------------------------------------------------- authentication

async function authServer(auth: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const dir = await tempDir();
  await writeFiles(dir.path, {
    "admin/index.html": "secret area",
    "admin/report.txt": "secret report",
    "administer.txt": "public",
    "index.html": "home",
  });
  const s = await startTestServer({
    http: { static_dir: dir.path },
    server: { locations: { "/admin": { auth } } },
    // Successful logins are logged at DEBUG; the test reads those lines.
    logging: { level: "DEBUG" },
    ...extra,
  });
  return {
    s,
    async [Symbol.asyncDispose]() {
      await s[Symbol.asyncDispose]();
      await dir[Symbol.asyncDispose]();
    },
  };
}

Deno.test("auth: missing, wrong and right credentials; logs never hold the password", async () => {
  await using t = await authServer({ type: "basic", username: "admin", password: "s3cret-pw" });
  const { s } = t;
  let r = await get(`${s.url}/admin/`);
  assert.equal(r.status, 401);
  assert.equal(r.headers.get("www-authenticate"), 'Basic realm="Restricted Area", charset="UTF-8"');
  assert.match(r.headers.get("content-type")!, /text\/html/);

  r = await get(`${s.url}/admin/report.txt`, {
    headers: { authorization: basic("admin", "wrong-guess") },
  });
  assert.equal(r.status, 401);
  r = await get(`${s.url}/admin/report.txt`, {
    headers: { authorization: basic("mallory", "s3cret-pw") },
  });
  assert.equal(r.status, 401);
  r = await get(`${s.url}/admin/report.txt`, { headers: { authorization: "Basic !!!" } });
  assert.equal(r.status, 401);

  r = await get(`${s.url}/admin/report.txt`, {
    headers: { authorization: basic("admin", "s3cret-pw") },
  });
  assert.equal(r.status, 200);
  assert.equal(r.body, "secret report");

  // Segment boundary: /administer.txt is not below /admin.
  r = await get(`${s.url}/administer.txt`);
  assert.equal(r.status, 200);

  const lines = s.log.lines;
  assert.ok(
    lines.some((l) => l === 'WARNING auth failed for user "admin" from 127.0.0.1 on /admin'),
    lines.join("\n"),
  );
  assert.ok(
    lines.some((l) => l.startsWith('WARNING auth failed for user "mallory" from 127.0.0.1')),
  );
  assert.ok(lines.some((l) => l.startsWith("WARNING auth failed: malformed Authorization")));
  assert.ok(lines.some((l) => l.startsWith('DEBUG auth ok for user "admin" from 127.0.0.1')));
  assert.ok(lines.some((l) => l.startsWith("DEBUG auth: no credentials from 127.0.0.1")));
  assert.ok(
    lines.some((l) => l.startsWith("WARNING server.locations./admin.auth has a plain password")),
    "plain password without TLS is warned about",
  );
  for (const line of lines) {
    assert.ok(!line.includes("s3cret-pw") && !line.includes("wrong-guess"), line);
  }
});

Deno.test("auth: encoded, dotted and /static/ spellings of a guarded path are guarded", async () => {
  await using t = await authServer({ type: "basic", username: "u", password: "p" });
  const { s } = t;
  for (const path of ["/%61dmin/report.txt", "//admin/report.txt", "/x/../admin/report.txt"]) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: s.server.addr.port });
    try {
      await conn.write(
        new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
      );
      const text = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
      assert.match(text, /^HTTP\/1\.1 (401|404)/, `${path}: ${text.slice(0, 80)}`);
      assert.ok(!text.includes("secret report"), path);
    } finally {
      try {
        conn.close();
      } catch { /* closed by the reader */ }
    }
  }
  const r = await get(`${s.url}/static/admin/report.txt`);
  assert.equal(r.status, 401);
  const ok = await get(`${s.url}/static/admin/report.txt`, {
    headers: { authorization: basic("u", "p") },
  });
  assert.equal(ok.body, "secret report");
});

Deno.test("auth: password_hash is checked with bcrypt and no plain-password warning", async () => {
  const hash = bcrypt.hashSync("hunter2", 4);
  await using t = await authServer({
    type: "basic",
    username: "alice",
    password_hash: hash,
    realm: 'Staff "only"',
  });
  const { s } = t;
  let r = await get(`${s.url}/admin/report.txt`, {
    headers: { authorization: basic("alice", "nope") },
  });
  assert.equal(r.status, 401);
  assert.equal(
    r.headers.get("www-authenticate"),
    'Basic realm="Staff \\"only\\"", charset="UTF-8"',
  );
  for (let i = 0; i < 2; i++) {
    r = await get(`${s.url}/admin/report.txt`, {
      headers: { authorization: basic("alice", "hunter2") },
    });
    assert.equal(r.status, 200);
  }
  r = await get(`${s.url}/admin/report.txt`, {
    headers: { authorization: basic("bob", "hunter2") },
  });
  assert.equal(r.status, 401);
  assert.ok(!s.log.lines.some((l) => l.includes("plain password")));
  assert.ok(!s.log.lines.some((l) => l.includes("hunter2")));
});

Deno.test("auth: config errors for both/neither password and a malformed hash", () => {
  let m = configError({
    server: { locations: { "/a": { auth: { type: "basic", username: "u" } } } },
  });
  assert.match(m, /server\.locations\.\/a\.auth needs exactly one of password or password_hash/);
  m = configError({
    server: {
      locations: { "/a": { auth: { type: "basic", username: "u", password_hash: "plain" } } },
    },
  });
  assert.match(m, /password_hash must be a bcrypt hash/);
});

Deno.test("${VAR} in config values comes from the environment; unset is an error naming it", async () => {
  await using dir = await tempDir();
  const name = `DENOSERVE_TEST_PASS_${crypto.randomUUID().replaceAll("-", "")}`;
  const file = `${dir.path}/config.yaml`;
  await writeFiles(dir.path, {
    "config.yaml": `server:\n  locations:\n    /admin:\n      auth: { type: basic, ` +
      `username: admin, password: "pre-\${${name}}" }\n`,
  });
  await assert.rejects(
    () => loadConfig({ config: file }),
    (e: Error) =>
      e instanceof ConfigError && e.message.includes(`\${${name}}`) &&
      e.message.includes("server.locations./admin.auth.password") &&
      e.message.includes(`${name} is not set`),
  );
  Deno.env.set(name, "from-env");
  try {
    const { config } = await loadConfig({ config: file });
    assert.equal(config.server.locations["/admin"].auth?.password, "pre-from-env");
  } finally {
    Deno.env.delete(name);
  }
});

// ---------------------------------------------------------------- V2 locations

Deno.test("V2: priority order exact > regex (file order) > longest prefix > __default__", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "index.html": "home" });
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path },
    extensions: [{
      type: "routing",
      config: {
        regex_locations: {
          "__default__": { return: "200 default" },
          "^~/static/": { return: "200 prefix-static" },
          "^~/static/img/": { return: "200 prefix-img" },
          "/plain": { return: "200 plain-prefix" },
          "~^/static/.*\\.png$": { return: "200 regex-png" },
          "~*\\.PNG$": { return: "200 regex-any-png" },
          "=/static/exact.png": { return: "200 exact" },
        },
      },
    }],
  });
  const body = async (path: string) => (await get(`${s.url}${path}`)).body;
  assert.equal(await body("/static/exact.png"), "exact");
  assert.equal(await body("/static/img/a.png"), "regex-png"); // regex beats ^~ (PyServe order)
  assert.equal(await body("/other/a.PNG"), "regex-any-png");
  assert.equal(await body("/other/a.png"), "regex-any-png"); // ~* ignores case
  assert.equal(await body("/static/img/a.gif"), "prefix-img"); // longest prefix
  assert.equal(await body("/static/a.gif"), "prefix-static");
  assert.equal(await body("/plain/x"), "plain-prefix");
  assert.equal(await body("/anything"), "default");
  assert.equal(await body("/%73tatic/exact.png"), "exact"); // matched decoded
});

Deno.test("V2: named groups fill headers, return and proxy_pass; return with content_type", async () => {
  await using backend = echoBackend();
  await using dir = await tempDir();
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path },
    extensions: [{
      type: "routing",
      config: {
        regex_locations: {
          "~^/api/v(?P<version>\\d+)/users/(?P<id>\\d+)$": {
            proxy_pass: `${backend.url}/internal/{version}/user/{id}`,
            headers: ["API-Version: {version}", "User-ID: {id}", "X-Client: $remote_addr"],
          },
          "~^/api/v(?P<version>\\d+)/": {
            proxy_pass: backend.url,
            headers: ["API-Version: {version}", "X-Literal: {nope} $nothing"],
          },
          "~^/hello/(?P<name>[a-z]+)$": {
            return: "200 <p>{name}</p>",
            content_type: "text/html; charset=utf-8",
          },
          "~^/go/(?P<to>\\w+)$": { return: "302 https://example.com/{to}" },
          "=/health": { return: "200 OK", content_type: "text/plain" },
        },
      },
    }],
  });
  let r = await get(`${s.url}/api/v3/users/42?full=1`);
  assert.equal(r.status, 200);
  let echo = JSON.parse(r.body);
  assert.equal(echo.path, "/internal/3/user/42?full=1");
  assert.equal(echo.headers["x-forwarded-for"], "127.0.0.1");
  assert.equal(r.headers.get("api-version"), "3");
  assert.equal(r.headers.get("user-id"), "42");
  assert.equal(r.headers.get("x-client"), "127.0.0.1");
  assert.equal(r.headers.get("x-backend"), "echo");

  r = await get(`${s.url}/api/v2/orders?x=1`, { method: "POST", body: "payload" });
  echo = JSON.parse(r.body);
  assert.deepEqual([echo.method, echo.path, echo.body], ["POST", "/api/v2/orders?x=1", "payload"]);
  assert.equal(r.headers.get("api-version"), "2");
  assert.equal(r.headers.get("x-literal"), "{nope} $nothing");

  r = await get(`${s.url}/hello/world`);
  assert.equal(r.body, "<p>world</p>");
  assert.equal(r.headers.get("content-type"), "text/html; charset=utf-8");
  r = await get(`${s.url}/go/there`);
  assert.equal(r.status, 302);
  assert.equal(r.headers.get("location"), "https://example.com/there");
  r = await get(`${s.url}/health`);
  assert.deepEqual([r.status, r.body, r.headers.get("content-type")], [200, "OK", "text/plain"]);
  r = await get(`${s.url}/health`, { method: "HEAD" });
  assert.equal(r.body, "");
});

Deno.test("V2: authentication runs before proxy_pass; the backend sees only allowed requests", async () => {
  await using backend = serveBackend(() => new Response("from backend"));
  await using dir = await tempDir();
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path },
    server: { locations: { "/api": { auth: { type: "basic", username: "u", password: "p" } } } },
    extensions: [{
      type: "routing",
      config: {
        regex_locations: {
          "^~/api/": { proxy_pass: `${backend.url}` },
        },
      },
    }],
  });
  let r = await get(`${s.url}/api/x`);
  assert.equal(r.status, 401);
  r = await get(`${s.url}/%61pi/x`);
  assert.equal(r.status, 401);
  assert.equal(backend.seen.length, 0);
  r = await get(`${s.url}/api/x`, { headers: { authorization: basic("u", "p") } });
  assert.deepEqual([r.status, r.body, backend.seen.length], [200, "from backend", 1]);
});

Deno.test("V2: proxy_pass to a dead backend is 502 from the error templates", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "t/error_502.html": "bad gateway: {{status_code}}" });
  const port = freePort();
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path, templates_dir: `${dir.path}/t` },
    extensions: [{
      type: "routing",
      config: { regex_locations: { "^~/api/": { proxy_pass: `http://127.0.0.1:${port}` } } },
    }],
  });
  const r = await get(`${s.url}/api/x`);
  assert.equal(r.status, 502);
  assert.equal(r.body, "bad gateway: 502");
});

Deno.test("V2: root, index_file, cache_control only on success, SPA fallback and exclusions", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "site/index.html": "main index",
    "app/shell.html": "spa shell",
    "app/main.js": "console.log(1)",
    "app/assets/logo.svg": "<svg/>",
    "assets/x.css": "body{}",
  });
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: `${dir.path}/site` },
    extensions: [{
      type: "routing",
      config: {
        regex_locations: {
          "~*\\.(js|css|svg)$": {
            root: `${dir.path}/app`,
            cache_control: "public, max-age=31536000",
          },
          "=/": { root: `${dir.path}/app`, index_file: "shell.html" },
          "__default__": {
            spa_fallback: true,
            root: `${dir.path}/app`,
            index_file: "shell.html",
            exclude_patterns: ["/api/", "/assets/"],
          },
        },
      },
    }],
  });
  let r = await get(`${s.url}/main.js`);
  assert.equal(r.body, "console.log(1)");
  assert.equal(r.headers.get("cache-control"), "public, max-age=31536000");
  r = await get(`${s.url}/MAIN.JS`);
  assert.equal(r.status, 404);
  assert.equal(r.headers.get("cache-control"), null, "no long cache on an error");
  r = await get(`${s.url}/`);
  assert.equal(r.body, "spa shell");
  for (const path of ["/dashboard", "/users/42/edit", "/assets-like/route"]) {
    r = await get(`${s.url}${path}`);
    assert.equal(r.status, 200, path);
    assert.equal(r.body, "spa shell", path);
  }
  r = await get(`${s.url}/assets/logo.svg`); // matched by the regex location, served from app/
  assert.equal(r.body, "<svg/>");
  for (const path of ["/api/users", "/assets/missing", "/missing.txt", "/deep/file.json"]) {
    r = await get(`${s.url}${path}`);
    assert.equal(r.status, 404, path);
  }
  r = await get(`${s.url}/dashboard`, { method: "POST" });
  assert.equal(r.status, 405);
});

Deno.test("V2: invalid regex, bad pattern, unknown or conflicting location keys are errors", () => {
  const routing = (regex_locations: Record<string, unknown>) => ({
    version: 2,
    extensions: [{ type: "routing", config: { regex_locations } }],
  });
  let m = configError(routing({ "~^/api/(": { return: "200 x" } }));
  assert.match(
    m,
    /extensions\[0\]\.config\.regex_locations\["~\^\/api\/\("\] is not a valid regular expression/,
  );
  m = configError(routing({ "api/": { return: "200 x" } }));
  assert.match(m, /regex_locations\["api\/"\] is not a location pattern/);
  m = configError(routing({ "=/health": { retrun: "200 OK" } }));
  assert.match(
    m,
    /regex_locations\["=\/health"\]\.retrun is not a location key \(did you mean "return"\?\)/,
  );
  m = configError(routing({ "=/x": { return: "200 x", root: "/tmp" } }));
  assert.match(m, /regex_locations\["=\/x"\]\.root cannot be used with return/);
  m = configError(routing({ "=/x": { return: "OK" } }));
  assert.match(m, /return must be "STATUS \[text\]"/);
  m = configError(routing({ "=/x": { proxy_pass: "backend:3000" } }));
  assert.match(m, /proxy_pass must be an http:\/\/ or https:\/\/ URL/);
  m = configError(routing({ "=/x": { headers: ["no colon here"] } }));
  assert.match(m, /headers\[0\] must be "Name: value"/);
  m = configError({ extensions: [{ type: "routing", config: {} }] });
  assert.match(m, /extensions needs "version: 2"/);
  m = configError({
    version: 2,
    extensions: [{ type: "routing", config: {} }, { type: "routing", config: {} }],
  });
  assert.match(m, /extensions\[1\] repeats type routing/);
});

Deno.test("V2: errors from the CLI name the key and exit 2", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": [
      "version: 2",
      "extensions:",
      "  - type: routing",
      "    config:",
      "      regex_locations:",
      '        "=/health":',
      '          retrun: "200 OK"',
      '        "~^/api/(":',
      "          proxy_pass: http://127.0.0.1:1",
      "",
    ].join("\n"),
  });
  let r = await runCli(["-c", `${dir.path}/config.yaml`, "-p", "0"]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /config\.yaml:7:19: .*\["=\/health"\]\.retrun is not a location key/);
  assert.ok(!r.stderr.includes("    at "), "no stack trace");
  const text = await Deno.readTextFile(`${dir.path}/config.yaml`);
  await Deno.writeTextFile(`${dir.path}/config.yaml`, text.replace("retrun", "return"));
  r = await runCli(["-c", `${dir.path}/config.yaml`, "-p", "0"]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(
    r.stderr,
    /config\.yaml:8:9: extensions\[0\]\.config\.regex_locations\["~\^\/api\/\("\] is not a valid regular expression: /,
  );
});

Deno.test("V2: `source:` loads an extension from another file, errors point into it", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": "version: 2\nextensions:\n  - type: routing\n    source: ./ext/routing.yaml\n" +
      "  - type: security\n    source: ./ext/security.yaml\n    config:\n" +
      "      cors: { origins: ['https://inline.example'] }\n",
    "ext/routing.yaml": "type: routing\nconfig:\n  regex_locations:\n" +
      '    "=/health":\n      return: "200 from source"\n' +
      '    "^~/files/":\n      root: ./static\n',
    "ext/security.yaml": "cors:\n  origins: ['https://ignored.example']\n  max_age: 60\n",
  });
  const { config } = await loadConfig({ config: `${dir.path}/config.yaml` });
  const routing = config.extensions[0].config as { regex_locations: Record<string, unknown> };
  assert.equal(
    (routing.regex_locations["=/health"] as { return: string }).return,
    "200 from source",
  );
  assert.equal(
    (routing.regex_locations["^~/files/"] as { root: string }).root,
    `${dir.path}/static`,
    "relative roots resolve against the main config file's folder",
  );
  const cors = (config.extensions[1].config as { cors: { origins: string[]; max_age: number } })
    .cors;
  assert.deepEqual(cors.origins, ["https://inline.example"], "inline keys win");

  await writeFiles(dir.path, {
    "ext/routing.yaml": 'type: routing\nconfig:\n  regex_locations:\n    "~(":\n      root: x\n',
  });
  await assert.rejects(
    () => loadConfig({ config: `${dir.path}/config.yaml` }),
    (e: Error) =>
      e instanceof ConfigError && e.message.includes("ext/routing.yaml:4:5: ") &&
      e.message.includes('regex_locations["~("] is not a valid regular expression'),
  );
  await writeFiles(dir.path, {
    "config.yaml": "version: 2\nextensions:\n  - type: routing\n    source: ./nope.yaml\n",
  });
  await assert.rejects(
    () => loadConfig({ config: `${dir.path}/config.yaml` }),
    (e: Error) =>
      e instanceof ConfigError && /config\.yaml:4:13: .*nope\.yaml not found/.test(e.message),
  );
});

Deno.test("V2: proxied bodies stream whole both ways; a slow backend is 504", async () => {
  const big = new Uint8Array(3 * 1024 * 1024).map((_, i) => i % 251);
  await using backend = serveBackend(async (req) => {
    if (req.url.endsWith("/slow")) {
      await new Promise((r) => setTimeout(r, 500));
      return new Response("late");
    }
    if (req.method === "POST") {
      return new Response(String((await req.arrayBuffer()).byteLength));
    }
    return new Response(big);
  });
  const origin = backend.url;
  await using dir = await tempDir();
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path },
    extensions: [{
      type: "routing",
      config: { regex_locations: { "^~/": { proxy_pass: origin } } },
    }],
  });
  const res = await fetch(`${s.url}/big`);
  const got = new Uint8Array(await res.arrayBuffer());
  assert.equal(got.byteLength, big.byteLength);
  assert.ok(got.every((b, i) => b === big[i]));
  const up = await fetch(`${s.url}/upload`, { method: "POST", body: big });
  assert.equal(await up.text(), String(big.byteLength));

  const { errorResponse } = createErrorPages();
  using forward = createProxyForward({ errorResponse, timeoutSeconds: 0.1 });
  const ctx = {
    path: "/slow",
    query: "",
    remote: { transport: "tcp" as const, hostname: "127.0.0.1", port: 1 },
    secure: false,
  };
  const slow = await forward(new Request("http://x/slow"), ctx, new URL(`${origin}/slow`));
  assert.equal(slow.status, 504);
  await slow.body?.cancel();
});

Deno.test("extensions: unimplemented types and security blocks are reported as unsupported", () => {
  const { config, warnings } = validate({
    version: 2,
    extensions: [
      { type: "routing", config: {} },
      {
        type: "security",
        config: {
          cors: { origins: ["*"], orgins: ["x"] },
          rate_limiting: { enabled: true, requests_per_minute: 60 },
          ip_filtering: { enabled: false },
        },
      },
      { type: "monitoring", config: { metrics: { enabled: true } } },
    ],
  });
  assert.deepEqual(unsupported(config), [
    "extensions[1].config.rate_limiting (security)",
    "extensions[2] (type monitoring)",
  ]);
  assert.equal(warnings.length, 1);
  assert.match(
    warnings[0],
    /unknown key extensions\[1\]\.config\.cors\.orgins is ignored/,
  );
});

// ---------------------------------------------------------------- CORS

function corsServer(cors: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return (async () => {
    const dir = await tempDir();
    await writeFiles(dir.path, { "data.json": "{}" });
    const s = await startTestServer({
      version: 2,
      http: { static_dir: dir.path },
      extensions: [{ type: "security", config: { cors } }],
      ...extra,
    });
    return Object.assign(s, {
      async [Symbol.asyncDispose]() {
        await s.server.shutdown(2000);
        await dir[Symbol.asyncDispose]();
      },
    }) as TestServer;
  })();
}

Deno.test("CORS: preflight 204 and simple requests for listed origins, Vary: Origin", async () => {
  await using s = await corsServer({
    origins: ["https://app.example"],
    methods: ["GET", "POST"],
    headers: ["Content-Type", "X-Token"],
    expose_headers: ["ETag"],
    credentials: true,
    max_age: 600,
  }, {
    server: {
      locations: { "/data.json": { auth: { type: "basic", username: "u", password: "p" } } },
    },
  });
  let r = await get(`${s.url}/data.json`, {
    method: "OPTIONS",
    headers: {
      origin: "https://app.example",
      "access-control-request-method": "POST",
      "access-control-request-headers": "content-type",
    },
  });
  assert.equal(r.status, 204, "preflight is answered before authentication");
  assert.equal(r.headers.get("access-control-allow-origin"), "https://app.example");
  assert.equal(r.headers.get("access-control-allow-methods"), "GET, POST");
  assert.equal(r.headers.get("access-control-allow-headers"), "Content-Type, X-Token");
  assert.equal(r.headers.get("access-control-allow-credentials"), "true");
  assert.equal(r.headers.get("access-control-max-age"), "600");
  assert.match(r.headers.get("vary")!, /Origin/);

  r = await get(`${s.url}/data.json`, {
    method: "OPTIONS",
    headers: { origin: "https://evil.example", "access-control-request-method": "POST" },
  });
  assert.equal(r.status, 204);
  assert.equal(r.headers.get("access-control-allow-origin"), null);

  r = await get(`${s.url}/data.json`, {
    headers: { origin: "https://app.example", authorization: basic("u", "p") },
  });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("access-control-allow-origin"), "https://app.example");
  assert.equal(r.headers.get("access-control-expose-headers"), "ETag");
  assert.equal(r.headers.get("vary"), "Origin");

  r = await get(`${s.url}/data.json`, { headers: { origin: "https://app.example" } });
  assert.equal(r.status, 401, "the 401 carries CORS headers so the page can read it");
  assert.equal(r.headers.get("access-control-allow-origin"), "https://app.example");

  r = await get(`${s.url}/missing`, { headers: { origin: "https://evil.example" } });
  assert.equal(r.status, 404);
  assert.equal(r.headers.get("access-control-allow-origin"), null);
  assert.equal(r.headers.get("vary"), "Origin");
  r = await get(`${s.url}/missing`);
  assert.equal(r.headers.get("vary"), "Origin");
});

Deno.test("CORS: any origin without credentials is a constant *; proxied answers too", async () => {
  await using backend = echoBackend();
  await using s = await corsServer({ origins: ["*"], headers: ["*"] }, {
    extensions: [
      { type: "security", config: { cors: { origins: ["*"], headers: ["*"] } } },
      { type: "routing", config: { regex_locations: { "^~/api/": { proxy_pass: backend.url } } } },
    ],
  });
  let r = await get(`${s.url}/data.json`, { headers: { origin: "https://any.example" } });
  assert.equal(r.headers.get("access-control-allow-origin"), "*");
  assert.equal(r.headers.get("vary"), null);
  r = await get(`${s.url}/api/x`, { headers: { origin: "https://any.example" } });
  assert.equal(r.headers.get("x-backend"), "echo");
  assert.equal(r.headers.get("access-control-allow-origin"), "*");
  r = await get(`${s.url}/api/x`, {
    method: "OPTIONS",
    headers: {
      origin: "https://any.example",
      "access-control-request-method": "PUT",
      "access-control-request-headers": "x-anything",
    },
  });
  assert.equal(r.status, 204);
  assert.equal(r.headers.get("access-control-allow-origin"), "*");
  assert.equal(r.headers.get("access-control-allow-headers"), "*");
  assert.equal(r.headers.get("x-backend"), null, "the preflight does not reach the backend");
});

Deno.test("CORS: an origin that is not an origin is a configuration error", () => {
  const m = configError({
    version: 2,
    extensions: [{ type: "security", config: { cors: { origins: ["app.example"] } } }],
  });
  assert.match(m, /extensions\[0\]\.config\.cors\.origins\[0\] must be "\*" or an origin/);
});

// ---------------------------------------------------------------- error pages

Deno.test("error pages: error_<code>.html, then errors.html, then built-in; values escaped", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "static/index.html": "home",
    "templates/error_404.html":
      "<h1>{{ status_code }} {{status_text}}</h1><p>{{error_details}}</p>",
    "templates/errors.html": "generic {{status_code}} {{status_text}}",
  });
  await using s = await startTestServer({
    http: {
      static_dir: `${dir.path}/static`,
      templates_dir: `${dir.path}/templates`,
      file_cache_ttl_ms: 0,
    },
  });
  let r = await get(`${s.url}/%3Cscript%3Ealert(1)%3C%2Fscript%3E`);
  assert.equal(r.status, 404);
  assert.equal(
    r.body,
    "<h1>404 Not Found</h1><p>The requested URL /&lt;script&gt;alert(1)&lt;/script&gt; was not " +
      "found on this server.</p>",
  );
  assert.match(r.headers.get("content-type")!, /^text\/html/);
  r = await get(`${s.url}/index.html`, { method: "DELETE" });
  assert.equal(r.status, 405);
  assert.equal(r.body, "generic 405 Method Not Allowed");
  assert.equal(r.headers.get("allow"), "GET, HEAD");

  await Deno.remove(`${dir.path}/templates/errors.html`);
  r = await get(`${s.url}/index.html`, { method: "DELETE" });
  assert.equal(r.status, 405);
  assert.match(r.body, /<h1>405 Method Not Allowed<\/h1>/, "built-in page");

  // Reloaded when changed.
  await Deno.writeTextFile(`${dir.path}/templates/error_404.html`, "changed {{status_code}}!");
  r = await get(`${s.url}/nothing`);
  assert.equal(r.body, "changed 404!");
  r = await get(`${s.url}/nothing`, { method: "HEAD" });
  assert.equal(r.status, 404);
  assert.equal(r.body, "");
});

Deno.test("error pages: a broken template never turns a 404 into a 500", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "static/index.html": "home",
    "templates/error_404.html": new Uint8Array([0x3c, 0x70, 0x3e, 0xff, 0xfe, 0x00]),
    "templates/errors.html": "fallback {{status_code}}",
    "templates/error_405.html/inner": "a folder, not a file",
  });
  await using s = await startTestServer({
    http: {
      static_dir: `${dir.path}/static`,
      templates_dir: `${dir.path}/templates`,
      file_cache_ttl_ms: 60_000,
    },
  });
  let r = await get(`${s.url}/nope`);
  assert.equal(r.status, 404);
  assert.equal(r.body, "fallback 404");
  r = await get(`${s.url}/nope`);
  assert.equal(r.body, "fallback 404");
  r = await get(`${s.url}/`, { method: "PUT" });
  assert.equal(r.status, 405);
  assert.equal(r.body, "fallback 405");
  const warnings = s.log.lines.filter((l) => l.startsWith("WARNING error template"));
  assert.equal(warnings.length, 2, warnings.join("\n"));
  assert.match(warnings[0], /error_404\.html is not used/);

  // No templates folder at all: built-in pages.
  await using s2 = await startTestServer({
    http: { static_dir: `${dir.path}/static`, templates_dir: `${dir.path}/none` },
  });
  r = await get(`${s2.url}/nope`);
  assert.equal(r.status, 404);
  assert.match(r.body, /<h1>404 Not Found<\/h1>/);
});

// ---------------------------------------------------------------- README's V2 example

Deno.test("README: the PyServe V2 example loads and behaves as described", async () => {
  const readme = await Deno.readTextFile(`${ROOT}/README.md`);
  const start = readme.indexOf("### Example: a PyServe V2 file");
  assert.ok(start > 0, "README has the V2 example");
  const block = /```yaml\n([\s\S]*?)```/.exec(readme.slice(start))![1];
  assert.match(block, /version: 2/);

  await using backend = echoBackend();
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": block.replace("http://127.0.0.1:3000", backend.url),
    "static/index.html": "index page",
    "static/docs.html": "docs page",
    "static/app.js": "let app;",
  });
  const { config, warnings } = await loadConfig({ config: `${dir.path}/config.yaml`, port: 0 });
  assert.deepEqual(warnings, []);
  const log = captureLogger();
  const server = await startServer(config, log, buildApp(config, log));
  try {
    const url = server.url.replace(/\/$/, "");
    let r = await get(`${url}/health`);
    assert.deepEqual([r.status, r.body, r.headers.get("content-type")], [200, "OK", "text/plain"]);

    r = await get(`${url}/api/v2/users?id=7`);
    const echo = JSON.parse(r.body);
    assert.equal(echo.path, "/api/v2/users?id=7");
    assert.equal(r.headers.get("api-version"), "2");
    assert.equal(r.headers.get("x-forwarded-for"), "127.0.0.1");

    r = await get(`${url}/app.js`);
    assert.equal(r.body, "let app;");
    assert.equal(r.headers.get("cache-control"), "public, max-age=31536000");
    assert.equal(r.headers.get("access-control-allow-origin"), "*");
    r = await get(`${url}/logo.png`);
    assert.equal(r.status, 404);
    assert.equal(r.headers.get("cache-control"), null);

    r = await get(`${url}/`);
    assert.equal(r.body, "index page");
    r = await get(`${url}/docs`);
    assert.equal(r.status, 302);
    assert.equal(r.headers.get("location"), "/docs.html");
    r = await get(`${url}/dashboard/settings`);
    assert.deepEqual([r.status, r.body], [200, "docs page"]);
    for (const path of ["/api/unknown", "/admin/x", "/assets/missing", "/missing.txt"]) {
      r = await get(`${url}${path}`);
      assert.equal(r.status, 404, path);
    }
  } finally {
    await server.shutdown(2000);
  }
});
