/**
 * `security_headers` (`extensions: security`): on every answer from a real server, errors and
 * proxied answers included; a header the backend set is kept.
 */
import assert from "node:assert/strict";
import { serveBackend } from "./support/backends.ts";
import { curl, hasCommand } from "./support/cli.ts";
import { get, rawRequest } from "./support/clients.ts";
import { configError } from "./support/config.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { freePort, startTestServer } from "./support/servers.ts";

const HEADERS = {
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  "Content-Security-Policy": "default-src 'self'",
};

Deno.test("security_headers: static, error, redirect, refused and proxied answers all carry them", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "index.html": "home" });
  await using backend = serveBackend(() =>
    new Response("from backend", { headers: { "x-frame-options": "SAMEORIGIN" } })
  );
  const dead = freePort();
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path },
    server: { redirect_instructions: [{ "/old": "/new" }] },
    extensions: [
      {
        type: "security",
        config: {
          security_headers: { headers: HEADERS },
          ip_filtering: { blacklist: ["127.0.0.1"] },
          trusted_proxies: ["127.0.0.1"],
        },
      },
      {
        type: "routing",
        config: {
          regex_locations: {
            "^~/api/": { proxy_pass: backend.url },
            "^~/dead/": { proxy_pass: `http://127.0.0.1:${dead}` },
          },
        },
      },
    ],
  });
  const from = { "x-forwarded-for": "192.0.2.1" };
  const check = (headers: Headers, what: string) => {
    assert.equal(headers.get("x-content-type-options"), "nosniff", what);
    assert.equal(headers.get("content-security-policy"), "default-src 'self'", what);
  };
  let r = await get(`${s.url}/`, { headers: from });
  assert.equal(r.body, "home");
  check(r.headers, "static");
  assert.equal(r.headers.get("x-frame-options"), "DENY");
  r = await get(`${s.url}/missing`, { headers: from });
  assert.equal(r.status, 404);
  check(r.headers, "404");
  r = await get(`${s.url}/old`, { headers: from });
  assert.equal(r.status, 302);
  check(r.headers, "redirect");
  r = await get(`${s.url}/`);
  assert.equal(r.status, 403);
  check(r.headers, "403 from ip_filtering");
  r = await get(`${s.url}/api/x`, { headers: from });
  assert.equal(r.body, "from backend");
  check(r.headers, "proxied");
  assert.equal(r.headers.get("x-frame-options"), "SAMEORIGIN", "the backend's own value is kept");
  r = await get(`${s.url}/dead/x`, { headers: from });
  assert.equal(r.status, 502);
  check(r.headers, "502");
  const raw = await rawRequest(
    s.server.addr.port,
    "GET / HTTP/1.1\r\nHost:\r\nX-Forwarded-For: 192.0.2.1\r\nConnection: close\r\n\r\n",
  );
  assert.equal(raw.status, 400);
  assert.ok(raw.headers.some(([k, v]) => k === "x-content-type-options" && v === "nosniff"));
});

Deno.test("security_headers: cached file answers (200, HEAD, 304, 206) carry each one once; a location's own value wins", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "page.html": "a page", "framed/page.html": "framed" });
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path },
    extensions: [
      { type: "security", config: { security_headers: { headers: HEADERS } } },
      {
        type: "routing",
        config: {
          regex_locations: {
            "^~/framed/": { headers: ["X-Frame-Options: SAMEORIGIN"] },
            "__default__": { root: dir.path },
          },
        },
      },
    ],
  });
  const once = (headers: Headers, what: string, frame = "DENY") => {
    // A header present twice reads back joined ("nosniff, nosniff").
    assert.equal(headers.get("x-content-type-options"), "nosniff", what);
    assert.equal(headers.get("content-security-policy"), "default-src 'self'", what);
    assert.equal(headers.get("x-frame-options"), frame, what);
  };
  // The second GET is answered from the file cache.
  for (const what of ["first GET", "cached GET"]) {
    once((await get(`${s.url}/page.html`)).headers, what);
  }
  const head = await fetch(`${s.url}/page.html`, { method: "HEAD" });
  await head.body?.cancel();
  once(head.headers, "HEAD");
  const etag = head.headers.get("etag")!;
  const notModified = await get(`${s.url}/page.html`, { headers: { "if-none-match": etag } });
  assert.equal(notModified.status, 304);
  once(notModified.headers, "304");
  const part = await get(`${s.url}/page.html`, { headers: { range: "bytes=0-1" } });
  assert.equal(part.status, 206);
  assert.equal(part.body, "a ");
  once(part.headers, "206");
  for (const what of ["framed", "framed, cached"]) {
    const r = await get(`${s.url}/framed/page.html`);
    assert.equal(r.body, "framed");
    once(r.headers, what, "SAMEORIGIN");
  }
});

Deno.test(
  {
    name: "security_headers: the defaults, seen by curl; enabled: false adds none",
    ignore: !hasCommand("curl"),
  },
  async () => {
    await using dir = await tempDir();
    await writeFiles(dir.path, { "index.html": "home" });
    {
      await using s = await startTestServer({
        version: 2,
        http: { static_dir: dir.path },
        extensions: [{ type: "security", config: { security_headers: {} } }],
      });
      const out = await curl(["-sS", "-D", "-", "-o", "/dev/null", `${s.url}/`]);
      assert.match(out.stdout, /^x-content-type-options: nosniff\r$/im);
      assert.match(out.stdout, /^x-frame-options: DENY\r$/im);
      assert.match(out.stdout, /^referrer-policy: strict-origin-when-cross-origin\r$/im);
    }
    {
      await using s = await startTestServer({
        version: 2,
        http: { static_dir: dir.path },
        extensions: [{
          type: "security",
          config: { security_headers: { enabled: false, headers: HEADERS } },
        }],
      });
      const r = await get(`${s.url}/`);
      assert.equal(r.headers.get("x-content-type-options"), null);
    }
  },
);

Deno.test("security_headers: bad names and values are configuration errors naming the key", () => {
  const sec = (security_headers: unknown) => ({
    version: 2,
    extensions: [{ type: "security", config: { security_headers } }],
  });
  assert.match(
    configError(sec({ headers: { "Bad Name": "x" } })),
    /security_headers\.headers\["Bad Name"\] is not a valid header name/,
  );
  assert.match(
    configError(sec({ headers: { "X-A": 5 } })),
    /security_headers\.headers\.X-A must be a string, got 5/,
  );
  assert.match(configError(sec({ headers: ["X-A"] })), /security_headers\.headers/);
});
