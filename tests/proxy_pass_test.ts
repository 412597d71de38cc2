/**
 * V2 `proxy_pass`: behind authentication, to a dead backend, and streamed bodies both ways.
 */
import assert from "node:assert/strict";
import { createErrorPages } from "../src/routes/error_pages.ts";
import { createProxyForward } from "../src/proxy/proxy_pass.ts";
import { appRequest } from "./support/app.ts";
import { serveBackend } from "./support/backends.ts";
import { answerOf, basic, get } from "./support/clients.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { captureLogger, freePort, startTestServer } from "./support/servers.ts";

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
  const r = await answerOf(
    await appRequest({
      version: 2,
      http: { static_dir: dir.path, templates_dir: `${dir.path}/t` },
      extensions: [{
        type: "routing",
        config: { regex_locations: { "^~/api/": { proxy_pass: `http://127.0.0.1:${port}` } } },
      }],
    }, "/api/x"),
  );
  assert.equal(r.status, 502);
  assert.equal(r.body, "bad gateway: 502");
});

Deno.test("V2: a proxy_pass backend that cannot be reached is logged with the reason, once", async () => {
  await using dir = await tempDir();
  const port = freePort();
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path },
    extensions: [{
      type: "routing",
      config: { regex_locations: { "^~/api/": { proxy_pass: `http://127.0.0.1:${port}` } } },
    }],
  });
  const r = await fetch(`${s.url}/api/x?q=1`);
  assert.equal(r.status, 502);
  await r.body?.cancel();
  const warned = s.log.lines.filter((l) => l.startsWith("WARNING "));
  assert.equal(warned.length, 1, s.log.lines.join("\n"));
  assert.match(
    warned[0],
    new RegExp(
      `^WARNING proxy_pass: cannot reach http://127\\.0\\.0\\.1:${port} for GET /api/x: .*refused`,
      "i",
    ),
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
  const log = captureLogger();
  using forward = createProxyForward({ errorResponse, timeoutSeconds: 0.1, log });
  const ctx = {
    path: "/slow",
    query: "",
    remote: { transport: "tcp" as const, hostname: "127.0.0.1", port: 1 },
    secure: false,
  };
  const slow = await forward(new Request("http://x/slow"), ctx, new URL(`${origin}/slow`));
  assert.equal(slow.status, 504);
  await slow.body?.cancel();
  assert.deepEqual(log.lines, [
    `WARNING proxy_pass ${origin} sent no response headers within 0.1s for GET /slow`,
  ]);
});
