/**
 * Basic authentication on `server.locations`: credentials, spellings of a guarded path, bcrypt
 * hashes, several users, htpasswd files made by the real `htpasswd` (apache2-utils) with each
 * hash kind, and what is logged.
 */
import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import { testApp } from "./support/app.ts";
import { hasCommand, runCli, spawnCli } from "./support/cli.ts";
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
  assert.match(m, /password_hash must be a bcrypt, \$apr1\$ or \{SHA\} hash/);
});

const HTPASSWD = hasCommand("htpasswd");
const noHtpasswd = HTPASSWD
  ? false
  : (console.log("htpasswd (apache2-utils) is not installed"), true);

/** Runs the real `htpasswd` with `args`; resolves to what it printed. */
async function htpasswd(...args: string[]): Promise<string> {
  const out = await new Deno.Command(HTPASSWD!, { args, stdout: "piped", stderr: "piped" })
    .output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).trim();
}

/** An `Authorization` value for UTF-8 credentials (`basic` is for Latin-1 ones). */
const utf8Basic = (user: string, password: string) =>
  `Basic ${
    btoa(
      Array.from(new TextEncoder().encode(`${user}:${password}`), (b) => String.fromCharCode(b))
        .join(""),
    )
  }`;

Deno.test({
  name: "auth: an htpasswd file with bcrypt, apr1 and SHA-1 hashes, and users inline beside it",
  ignore: noHtpasswd,
  async fn() {
    await using dir = await tempDir();
    const file = `${dir.path}/users.htpasswd`;
    await htpasswd("-cbB", "-C", "4", file, "alice", "alice-pw");
    await htpasswd("-bm", file, "bob", "pässwörd ünïcode");
    await htpasswd("-bs", file, "carol", "carol-pw");
    const erin = (await htpasswd("-nbm", "erin", "erin-pw")).split(":")[1];
    await using t = await authApp({
      type: "basic",
      htpasswd_file: file,
      users: [
        { username: "dave", password: "dave-pw" },
        { username: "erin", password_hash: erin },
      ],
    });
    const { app } = t;
    const status = async (user: string, password: string) =>
      (await app.get("/admin/report.txt", {
        headers: { authorization: utf8Basic(user, password) },
      }))
        .status;
    for (
      const [user, password] of [
        ["alice", "alice-pw"],
        ["bob", "pässwörd ünïcode"],
        ["carol", "carol-pw"],
        ["dave", "dave-pw"],
        ["erin", "erin-pw"],
      ]
    ) {
      assert.equal(await status(user, password), 200, user);
      assert.equal(await status(user, password + "x"), 401, `${user} with a wrong password`);
      assert.equal(await status(user, password), 200, `${user} again (remembered)`);
    }
    assert.equal(await status("bob", "passwort unicode"), 401);
    assert.equal(await status("mallory", "alice-pw"), 401);
    assert.equal(await status("alice", "dave-pw"), 401, "one user's password is not another's");
    assert.ok(app.log.lines.some((l) => l.includes('auth failed for user "mallory"')));
  },
});

Deno.test({
  name:
    "auth: plain-text, crypt and malformed htpasswd lines are errors naming file:line, at start and in --test",
  ignore: noHtpasswd,
  async fn() {
    await using dir = await tempDir();
    const file = `${dir.path}/users.htpasswd`;
    await htpasswd("-cbB", "-C", "4", file, "alice", "alice-pw");
    const lines = [
      await Deno.readTextFile(file),
      await htpasswd("-nbp", "bob", "bob-plain-pw"),
      await htpasswd("-nbd", "carol", "carol-pw"),
      await htpasswd("-nb5", "dan", "dan-pw"),
      "# a comment, then a blank line",
      "",
      "no colon here",
      "alice:$apr1$abcdefgh$0123456789012345678901",
    ];
    await Deno.writeTextFile(file, lines.join("\n").replace(/\n\n/, "\n") + "\n");
    await writeFiles(dir.path, {
      "config.yaml": "server:\n  locations:\n    /admin:\n      auth:\n        type: basic\n" +
        "        htpasswd_file: ./users.htpasswd\n",
    });
    for (const args of [["--test", "configuration"], ["-p", "0"]]) {
      const out = await runCli(args, { cwd: dir.path });
      assert.equal(out.code, 2, out.stdout + out.stderr);
      const text = out.stdout + out.stderr;
      const at = `${file}:`;
      assert.ok(text.includes(`${at}2: user "bob" has a plain-text password`), text);
      assert.ok(text.includes(`${at}3: user "carol" has a DES crypt hash`), text);
      assert.ok(text.includes(`${at}4: user "dan" has a SHA-crypt hash`), text);
      assert.ok(text.includes(`${at}7: expected "user:hash"`), text);
      assert.ok(text.includes(`${at}8: user "alice" is also on line 1`), text);
      // Each line also names the key and its place in config.yaml.
      assert.ok(
        text.includes(
          `${dir.path}/config.yaml:6:24: server.locations./admin.auth.htpasswd_file: ${at}2: user "bob"`,
        ),
        text,
      );
      assert.ok(!text.includes("bob-plain-pw"), "a refused entry is never shown");
    }
    await Deno.remove(file);
    const out = await runCli(["--test", "configuration"], { cwd: dir.path });
    assert.equal(out.code, 2);
    assert.match(out.stdout, /users\.htpasswd: cannot be read: not found/);
  },
});

Deno.test({
  name: "auth: the htpasswd file is read again on reload; a broken one keeps the running users",
  ignore: noHtpasswd,
  async fn() {
    await using dir = await tempDir();
    const file = `${dir.path}/users.htpasswd`;
    await htpasswd("-cbB", "-C", "4", file, "alice", "alice-pw");
    await writeFiles(dir.path, {
      "static/admin/index.html": "admin area",
      "config.yaml": "server:\n  host: 127.0.0.1\n  locations:\n    /admin:\n      auth:\n" +
        "        type: basic\n        htpasswd_file: ./users.htpasswd\n",
    });
    await using cli = await spawnCli(["-c", "config.yaml", "-p", "0"], { cwd: dir.path });
    const status = async (user: string, password: string) =>
      (await get(`${cli.url}/admin/`, { headers: { authorization: basic(user, password) } }))
        .status;
    assert.equal(await status("alice", "alice-pw"), 200);
    assert.equal(await status("bob", "bob-pw"), 401);

    await htpasswd("-bs", file, "bob", "bob-pw");
    await htpasswd("-D", file, "alice");
    cli.process.kill("SIGHUP");
    await cli.waitFor("reloaded configuration");
    assert.equal(await status("bob", "bob-pw"), 200);
    assert.equal(await status("alice", "alice-pw"), 401, "a removed user is out after reload");

    await Deno.writeTextFile(file, "broken line\n", { append: true });
    cli.process.kill("SIGHUP");
    await cli.waitFor("reload failed");
    assert.match(cli.output(), /users\.htpasswd:2: expected "user:hash"/);
    assert.equal(await status("bob", "bob-pw"), 200, "the running configuration stays");
  },
});

Deno.test("auth: several inline users; a user given twice and a lone password are errors", () => {
  let m = configError({
    server: {
      locations: {
        "/a": {
          auth: {
            type: "basic",
            username: "x",
            password: "1",
            users: [{ username: "y", password: "2" }, { username: "x", password: "3" }],
          },
        },
      },
    },
  });
  assert.match(m, /server\.locations\.\/a\.auth\.users\[1\]\.username repeats "x" of username/);
  m = configError({
    server: { locations: { "/a": { auth: { type: "basic", password: "pw" } } } },
  });
  assert.match(m, /server\.locations\.\/a\.auth\.password needs username/);
  m = configError({ server: { locations: { "/a": { auth: { type: "basic" } } } } });
  assert.match(m, /needs username with password or password_hash, users, or htpasswd_file/);
  m = configError({
    server: {
      locations: {
        "/a": { auth: { type: "basic", users: [{ username: "a:b", password_hash: "x" }] } },
      },
    },
  });
  assert.match(m, /users\[0\]\.username must not contain a colon/);
  assert.match(m, /users\[0\]\.password_hash must be a bcrypt, \$apr1\$ or \{SHA\} hash/);
});
