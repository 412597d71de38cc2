/**
 * `csrf_protection` (`extensions: security`): the signed double-submit cookie against a real
 * server, its attributes over HTTP and TLS, exempt paths, and its settings checked at start.
 */
import assert from "node:assert/strict";
import { CsrfTokens, privateCacheControl } from "../src/routes/csrf.ts";
import { readCookie } from "../src/http/headers.ts";
import { testApp } from "./support/app.ts";
import { echoBackend, serveBackend } from "./support/backends.ts";
import { runCli } from "./support/cli.ts";
import { get } from "./support/clients.ts";
import { configError } from "./support/config.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { startTestServer } from "./support/servers.ts";

const SECRET = "a-secret-of-sixteen-or-more";

Deno.test("csrf: tokens verify only under their secret and unchanged", async () => {
  const tokens = new CsrfTokens(SECRET);
  const token = await tokens.issue();
  assert.match(token, /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/);
  assert.ok(await tokens.verify(token));
  assert.notEqual(await tokens.issue(), token, "each token is new");
  assert.ok(!await new CsrfTokens("another-secret-entirely").verify(token));
  const [nonce, sig] = token.split(".");
  assert.ok(!await tokens.verify(`${nonce}x.${sig}`));
  const flipped = (sig[0] === "A" ? "B" : "A") + sig.slice(1);
  assert.ok(!await tokens.verify(`${nonce}.${flipped}`));
  for (const bad of ["", ".", nonce, `${nonce}.`, `.${sig}`, `${nonce}.${sig}!`]) {
    assert.ok(!await tokens.verify(bad), bad);
  }
  assert.equal(readCookie("a=1; csrf_token=xyz; b=2", "csrf_token"), "xyz");
  assert.equal(readCookie("xcsrf_token=1", "csrf_token"), undefined);
  assert.equal(readCookie(null, "csrf_token"), undefined);
});

Deno.test("csrf: GET sets the cookie, unsafe requests need the header to match it", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "index.html": "home" });
  await using backend = echoBackend();
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path },
    extensions: [
      {
        type: "security",
        config: {
          csrf_protection: {
            secret: SECRET,
            header_name: "X-CSRF-Token",
            exempt_paths: ["/api/public/", "/health"],
          },
        },
      },
      { type: "routing", config: { regex_locations: { "^~/api/": { proxy_pass: backend.url } } } },
    ],
  });
  let r = await get(`${s.url}/`);
  assert.equal(r.body, "home");
  const setCookie = r.headers.get("set-cookie")!;
  assert.match(setCookie, /^csrf_token=[\w-]+\.[\w-]+; Path=\/; SameSite=Lax$/);
  assert.doesNotMatch(setCookie, /HttpOnly|Secure/i, "scripts read it; no Secure over HTTP");
  const token = setCookie.slice("csrf_token=".length, setCookie.indexOf(";"));
  const cookie = `csrf_token=${token}`;

  r = await get(`${s.url}/`, { headers: { cookie } });
  assert.equal(r.headers.get("set-cookie"), null, "a valid cookie is not replaced");
  r = await get(`${s.url}/`, { headers: { cookie: "csrf_token=forged.token" } });
  assert.match(r.headers.get("set-cookie")!, /^csrf_token=/, "an invalid one is");

  const post = (path: string, headers: Record<string, string>) =>
    get(`${s.url}${path}`, { method: "POST", body: "x=1", headers });
  r = await post("/api/items", {});
  assert.equal(r.status, 403);
  assert.match(r.body, /CSRF token is missing or invalid/);
  r = await post("/api/items", { cookie });
  assert.equal(r.status, 403, "the cookie alone is what a cross-site form sends");
  r = await post("/api/items", { "x-csrf-token": token });
  assert.equal(r.status, 403, "the header alone");
  r = await post("/api/items", { cookie, "x-csrf-token": `${token}x` });
  assert.equal(r.status, 403, "a header that differs");
  const forged = `${token.split(".")[0]}.${"A".repeat(43)}`;
  r = await post("/api/items", { cookie: `csrf_token=${forged}`, "x-csrf-token": forged });
  assert.equal(r.status, 403, "a matching pair with a forged signature");
  r = await post("/api/items", { cookie, "x-csrf-token": token });
  assert.equal(r.status, 200);
  assert.equal(JSON.parse(r.body).method, "POST");
  r = await get(`${s.url}/api/items`, {
    method: "DELETE",
    headers: { cookie, "x-csrf-token": token },
  });
  assert.equal(r.status, 200);
  r = await post("/api/public/ping", {});
  assert.equal(r.status, 200, "exempt path");
  r = await post("/health", {});
  assert.notEqual(r.status, 403, "exempt path");
  s.log.flush();
  assert.ok(
    s.log.lines.some((l) => l.startsWith("ACCESS ") && /"POST \/api\/items[^"]*" 403 /.test(l)),
  );
});

Deno.test("csrf: the cookie is Secure over TLS, keeps a backend's cookies, and enabled: false is off", async () => {
  {
    using app = await testApp({
      version: 2,
      extensions: [{
        type: "security",
        config: { csrf_protection: { secret: SECRET, cookie_name: "xsrf" } },
      }],
    });
    const r = await app.get("https://localhost/");
    assert.match(r.headers.get("set-cookie")!, /^xsrf=[^;]+; Path=\/; SameSite=Lax; Secure$/);
  }
  {
    await using cookieBackend = serveBackend(() =>
      new Response("ok", { headers: { "set-cookie": "session=abc; HttpOnly" } })
    );
    await using s = await startTestServer({
      version: 2,
      extensions: [
        { type: "security", config: { csrf_protection: { secret: SECRET } } },
        {
          type: "routing",
          config: { regex_locations: { "^~/": { proxy_pass: cookieBackend.url } } },
        },
      ],
    });
    const r = await fetch(`${s.url}/`);
    await r.body?.cancel();
    const cookies = r.headers.getSetCookie();
    assert.equal(cookies.length, 2, cookies.join(" | "));
    assert.ok(cookies.includes("session=abc; HttpOnly"));
    assert.ok(cookies.some((c) => c.startsWith("csrf_token=")));
  }
  {
    using app = await testApp({
      version: 2,
      extensions: [{ type: "security", config: { csrf_protection: { enabled: false } } }],
    });
    const r = await app.get("/", { method: "POST", body: "x" });
    assert.notEqual(r.status, 403);
    assert.equal(r.headers.get("set-cookie"), null);
  }
});

Deno.test("csrf: privateCacheControl keeps what a browser may do and drops what shared caches would", () => {
  assert.equal(privateCacheControl(null), "private");
  assert.equal(
    privateCacheControl("public, max-age=31536000, immutable"),
    "private, max-age=31536000, immutable",
  );
  assert.equal(privateCacheControl("public, s-maxage=600, max-age=60"), "private, max-age=60");
  assert.equal(privateCacheControl('private="set-cookie", max-age=5'), "private, max-age=5");
  assert.equal(privateCacheControl("s-maxage=10, no-cache, proxy-revalidate"), "private, no-cache");
  assert.equal(privateCacheControl("no-store"), "no-store");
  assert.equal(privateCacheControl("Private, max-age=3"), "Private, max-age=3");
});

Deno.test("csrf: an answer that hands out a token is private and varies on Cookie; answers to requests with one are left alone", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "index.html": "home", "app.js": "console.log(1);\n" });
  await using backend = serveBackend((request) =>
    new Response("api", {
      headers: {
        "cache-control": new URL(request.url).pathname.startsWith("/nostore/")
          ? "no-store"
          : "public, s-maxage=600, max-age=60",
      },
    })
  );
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path },
    extensions: [
      { type: "security", config: { csrf_protection: { secret: SECRET } } },
      {
        type: "routing",
        config: {
          regex_locations: {
            "~*\\.js$": { cache_control: "public, max-age=31536000, immutable" },
            "^~/api/": { proxy_pass: backend.url },
            "^~/nostore/": { proxy_pass: backend.url },
          },
        },
      },
      { type: "caching", config: {} },
    ],
  });
  const first = await get(`${s.url}/app.js`);
  const setCookie = first.headers.get("set-cookie")!;
  assert.match(setCookie, /^csrf_token=/);
  assert.equal(first.headers.get("cache-control"), "private, max-age=31536000, immutable");
  assert.match(first.headers.get("vary") ?? "", /\bCookie\b/);
  const cookie = setCookie.slice(0, setCookie.indexOf(";"));

  // With the token: nothing set, so nothing private about it; shared caches may keep it.
  const again = await get(`${s.url}/app.js`, { headers: { cookie } });
  assert.equal(again.headers.get("set-cookie"), null);
  assert.equal(again.headers.get("cache-control"), "public, max-age=31536000, immutable");
  assert.doesNotMatch(again.headers.get("vary") ?? "", /cookie/i);

  // A file without Cache-Control (heuristically cacheable by its Last-Modified).
  assert.equal((await get(`${s.url}/`)).headers.get("cache-control"), "private");

  // Proxied and cached by denoserve: the entry keeps the backend's header; only the answer
  // carrying a token is private.
  const miss = await get(`${s.url}/api/x`);
  assert.deepEqual(
    [miss.headers.get("x-cache"), miss.headers.get("cache-control")],
    ["MISS", "private, max-age=60"],
  );
  const hit = await get(`${s.url}/api/x`, { headers: { cookie } });
  assert.deepEqual(
    [hit.headers.get("x-cache"), hit.headers.get("cache-control"), hit.headers.get("set-cookie")],
    ["HIT", "public, s-maxage=600, max-age=60", null],
  );
  const hitNew = await get(`${s.url}/api/x`);
  assert.deepEqual(
    [hitNew.headers.get("x-cache"), hitNew.headers.get("cache-control")],
    ["HIT", "private, max-age=60"],
  );
  assert.match(hitNew.headers.get("set-cookie")!, /^csrf_token=/);

  const noStore = await get(`${s.url}/nostore/x`);
  assert.equal(noStore.headers.get("cache-control"), "no-store");
  assert.match(noStore.headers.get("vary") ?? "", /\bCookie\b/);
});

Deno.test("csrf: settings are checked at start; the secret takes ${VAR}", async () => {
  const sec = (csrf_protection: unknown) => ({
    version: 2,
    extensions: [{ type: "security", config: { csrf_protection } }],
  });
  assert.match(configError(sec({})), /csrf_protection\.secret is required when enabled/);
  assert.match(
    configError(sec({ secret: "short" })),
    /csrf_protection\.secret must be at least 16/,
  );
  assert.match(
    configError(sec({ secret: SECRET, exempt_paths: ["health"] })),
    /exempt_paths\[0\] must start with "\/"/,
  );
  assert.match(
    configError(sec({ secret: SECRET, header_name: "X CSRF" })),
    /header_name must be a header/,
  );
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": "version: 2\nextensions:\n  - type: security\n    config:\n" +
      "      csrf_protection:\n        secret: ${CSRF_SECRET}\n",
    // A start warns when the static folder is missing, and so does --test.
    "static/index.html": "home",
  });
  let out = await runCli(["--test", "configuration"], { cwd: dir.path });
  assert.equal(out.code, 2, out.stdout);
  assert.match(out.stdout + out.stderr, /CSRF_SECRET/);
  out = await runCli(["--test", "configuration"], { cwd: dir.path, env: { CSRF_SECRET: SECRET } });
  assert.equal(out.code, 0, out.stdout + out.stderr);
});
