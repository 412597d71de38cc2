/**
 * Basic authentication on `server.locations`: credentials, spellings of a guarded path, bcrypt
 * hashes, and what is logged.
 */
import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import { testApp } from "./support/app.ts";
import { basic, get } from "./support/clients.ts";
import { configError } from "./support/config.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { startTestServer } from "./support/servers.ts";

/** A site with a guarded /admin folder (and /administer.txt, not below it). */
const SITE = {
  "admin/index.html": "secret area",
  "admin/report.txt": "secret report",
  "administer.txt": "public",
  "index.html": "home",
};

async function authServer(auth: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const dir = await tempDir();
  await writeFiles(dir.path, SITE);
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

/** The site of {@link authServer}, called in process. */
async function authApp(auth: Record<string, unknown>) {
  const dir = await tempDir();
  await writeFiles(dir.path, SITE);
  const app = await testApp({
    http: { static_dir: dir.path },
    server: { locations: { "/admin": { auth } } },
    // Successful logins are logged at DEBUG; the test reads those lines.
    logging: { level: "DEBUG" },
  });
  return {
    app,
    async [Symbol.asyncDispose]() {
      app[Symbol.dispose]();
      await dir[Symbol.asyncDispose]();
    },
  };
}

Deno.test("auth: missing, wrong and right credentials; logs never hold the password", async () => {
  await using t = await authApp({ type: "basic", username: "admin", password: "s3cret-pw" });
  const { app } = t;
  let r = await app.get("/admin/");
  assert.equal(r.status, 401);
  assert.equal(r.headers.get("www-authenticate"), 'Basic realm="Restricted Area", charset="UTF-8"');
  assert.match(r.headers.get("content-type")!, /text\/html/);

  r = await app.get("/admin/report.txt", {
    headers: { authorization: basic("admin", "wrong-guess") },
  });
  assert.equal(r.status, 401);
  r = await app.get("/admin/report.txt", {
    headers: { authorization: basic("mallory", "s3cret-pw") },
  });
  assert.equal(r.status, 401);
  r = await app.get("/admin/report.txt", { headers: { authorization: "Basic !!!" } });
  assert.equal(r.status, 401);

  r = await app.get("/admin/report.txt", {
    headers: { authorization: basic("admin", "s3cret-pw") },
  });
  assert.equal(r.status, 200);
  assert.equal(r.body, "secret report");

  // Segment boundary: /administer.txt is not below /admin.
  r = await app.get("/administer.txt");
  assert.equal(r.status, 200);

  const lines = app.log.lines;
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
  await using t = await authApp({
    type: "basic",
    username: "alice",
    password_hash: hash,
    realm: 'Staff "only"',
  });
  const { app } = t;
  let r = await app.get("/admin/report.txt", {
    headers: { authorization: basic("alice", "nope") },
  });
  assert.equal(r.status, 401);
  assert.equal(
    r.headers.get("www-authenticate"),
    'Basic realm="Staff \\"only\\"", charset="UTF-8"',
  );
  for (let i = 0; i < 2; i++) {
    r = await app.get("/admin/report.txt", {
      headers: { authorization: basic("alice", "hunter2") },
    });
    assert.equal(r.status, 200);
  }
  r = await app.get("/admin/report.txt", {
    headers: { authorization: basic("bob", "hunter2") },
  });
  assert.equal(r.status, 401);
  assert.ok(!app.log.lines.some((l) => l.includes("plain password")));
  assert.ok(!app.log.lines.some((l) => l.includes("hunter2")));
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
