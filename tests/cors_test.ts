/**
 * CORS (`extensions: security`): preflights, listed and any origins, and origins refused at start.
 */
import assert from "node:assert/strict";
import { testApp } from "./support/app.ts";
import { echoBackend } from "./support/backends.ts";
import { basic, get } from "./support/clients.ts";
import { configError } from "./support/config.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { startTestServer, type TestServer } from "./support/servers.ts";

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

/** The site of {@link corsServer}, called in process. */
async function corsApp(cors: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const dir = await tempDir();
  await writeFiles(dir.path, { "data.json": "{}" });
  const app = await testApp({
    version: 2,
    http: { static_dir: dir.path },
    extensions: [{ type: "security", config: { cors } }],
    ...extra,
  });
  return Object.assign(app, {
    async [Symbol.asyncDispose]() {
      app[Symbol.dispose]();
      await dir[Symbol.asyncDispose]();
    },
  });
}

Deno.test("CORS: preflight 204 and simple requests for listed origins, Vary: Origin", async () => {
  await using app = await corsApp({
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
  let r = await app.get("/data.json", {
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

  r = await app.get("/data.json", {
    method: "OPTIONS",
    headers: { origin: "https://evil.example", "access-control-request-method": "POST" },
  });
  assert.equal(r.status, 204);
  assert.equal(r.headers.get("access-control-allow-origin"), null);

  r = await app.get("/data.json", {
    headers: { origin: "https://app.example", authorization: basic("u", "p") },
  });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("access-control-allow-origin"), "https://app.example");
  assert.equal(r.headers.get("access-control-expose-headers"), "ETag");
  assert.equal(r.headers.get("vary"), "Origin");

  r = await app.get("/data.json", { headers: { origin: "https://app.example" } });
  assert.equal(r.status, 401, "the 401 carries CORS headers so the page can read it");
  assert.equal(r.headers.get("access-control-allow-origin"), "https://app.example");

  r = await app.get("/missing", { headers: { origin: "https://evil.example" } });
  assert.equal(r.status, 404);
  assert.equal(r.headers.get("access-control-allow-origin"), null);
  assert.equal(r.headers.get("vary"), "Origin");
  r = await app.get("/missing");
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
