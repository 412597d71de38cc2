/**
 * Permission-scoped runs: main.ts run with too few Deno permissions reports each missing one as a
 * single line naming the flag to add, and `deno task start` grants only what the bundled config
 * needs.
 */
import assert from "node:assert/strict";
import {
  ENV_ALLOWED,
  HTTPS_PERMISSIONS,
  START_PERMISSIONS,
  TASK_CA_DIR,
  TRUST_PERMISSIONS,
  UNSTABLE,
} from "../scripts/compile.ts";
import denoJson from "../deno.json" with { type: "json" };
import { ENV_NAMES } from "../src/config/load.ts";
import { curl, DENO_DIR, runCli, spawnCli } from "./support/cli.ts";
import { ROOT, tempDir, writeFiles } from "./support/files.ts";
import { makeCerts } from "./support/certs.ts";
import { freePort } from "./support/servers.ts";
import { NEEDED } from "../src/server/sockets.ts";

const ENV = `--allow-env=${ENV_ALLOWED.join(",")}`;
const NET = "--allow-net=127.0.0.1";

/** Non-empty lines of `text`. */
const lines = (text: string) => text.split("\n").filter((l) => l.trim() !== "");

/** `stderr` is exactly one line, containing every one of `parts`, and no stack trace. */
function assertOneLine(stderr: string, ...parts: string[]) {
  const got = lines(stderr);
  assert.equal(got.length, 1, `expected one line, got:\n${stderr}`);
  for (const part of parts) assert.ok(got[0].includes(part), `"${part}" missing in: ${got[0]}`);
  assert.doesNotMatch(stderr, /^\s+at /m);
}

async function site() {
  const dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": "server:\n  host: 127.0.0.1\n  port: 0\n",
    "static/index.html": "<h1>home</h1>",
    "static/secret.txt": "secret",
  });
  return dir;
}

Deno.test("deno task start grants exactly the permissions in scripts/compile.ts", () => {
  const quote = (a: string) => a.includes("*") ? `'${a}'` : a;
  const args = [...UNSTABLE, ...START_PERMISSIONS].map(quote).join(" ");
  assert.equal(denoJson.tasks.start, `deno run ${args} main.ts`);
  assert.equal(denoJson.tasks.dev, `deno run --watch ${args} main.ts -d`);
  // deno task https and trust: the local CA in one folder named the same way in both.
  const ca = `DENOSERVE_CA_DIR=${TASK_CA_DIR}`;
  const https = [...UNSTABLE, ...HTTPS_PERMISSIONS].map(quote).join(" ");
  assert.equal(denoJson.tasks.https, `${ca} deno run ${https} main.ts --ssl`);
  const trust = TRUST_PERMISSIONS.map(quote).join(" ");
  assert.equal(denoJson.tasks.trust, `${ca} deno run ${trust} main.ts trust`);
  assert.equal(denoJson.tasks.untrust, `${ca} deno run ${trust} main.ts untrust`);
  // Network only for the bundled config's address, reading only its file and folders, no write.
  assert.ok(START_PERMISSIONS.includes("--allow-net=127.0.0.1:8000"));
  assert.ok(START_PERMISSIONS.includes("--allow-read=./config.yaml,./static,./templates,./ssl"));
  assert.ok(!START_PERMISSIONS.some((p) => p.startsWith("--allow-write")));
  // Every variable the configuration reads, PyServe's names included, is granted.
  for (const name of ENV_NAMES) assert.match(name, /^(DENOSERVE|PYSERVE)_/);
  assert.ok(ENV_NAMES.includes("PYSERVE_PORT") && ENV_ALLOWED.includes("PYSERVE_*"));
});

Deno.test("the bundled config serves with the start task's permissions", async () => {
  // As `deno task start`, but on a free port so that tests can run side by side.
  const permissions = START_PERMISSIONS.map((p) => p.startsWith("--allow-net") ? NET : p);
  await using server = await spawnCli(["-p", "0"], { cwd: ROOT, permissions });
  // Without --allow-ffi the open-files limit cannot be read, so max_connections has no default.
  assert.match(server.output(), /config\.yaml\), no connection limit\n/);
  const home = await fetch(`${server.url}/`);
  assert.equal(home.status, 200);
  assert.match(await home.text(), /<html/i);
  const missing = await fetch(`${server.url}/no-such-file`);
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
  assert.doesNotMatch(server.output(), /permission denied/);
});

Deno.test("the seed's steps: mkdir -p ssl, its openssl line, then the start task with --ssl --cert --key", async () => {
  await using dir = await tempDir();
  // A checkout's bundled config.yaml and a static folder.
  await Deno.copyFile(`${ROOT}/config.yaml`, `${dir.path}/config.yaml`);
  await writeFiles(dir.path, { "static/index.html": "<h1>home</h1>" });
  // As written in PyServe's documentation; Enter answers each of openssl's questions.
  const openssl = new Deno.Command("sh", {
    args: [
      "-c",
      "mkdir -p ./ssl && openssl req -x509 -newkey rsa:4096 -keyout ./ssl/key.pem " +
      "-out ./ssl/cert.pem -days 365 -nodes",
    ],
    cwd: dir.path,
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const answers = openssl.stdin.getWriter();
  await answers.write(new TextEncoder().encode("\n".repeat(10)));
  await answers.close();
  const made = await openssl.output();
  assert.ok(made.success, new TextDecoder().decode(made.stderr));
  // The start task's permissions, on a free port so that tests can run side by side: HTTPS
  // needs no address but its own.
  const port = freePort();
  const permissions = START_PERMISSIONS.map((p) =>
    p.startsWith("--allow-net") ? `--allow-net=127.0.0.1:${port}` : p
  );
  await using server = await spawnCli(
    ["--ssl", "--cert", "./ssl/cert.pem", "--key", "./ssl/key.pem", "-p", String(port)],
    { cwd: dir.path, permissions },
  );
  assert.match(server.url, /^https:/);
  // A self-signed certificate: curl -k, as a browser after its warning.
  const r = await curl(["-k", `${server.url.replace("127.0.0.1", "localhost")}/`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "<h1>home</h1>");
  assert.doesNotMatch(server.output(), /permission denied/);
});

Deno.test("deno task https: HTTPS from the local CA with the task's permissions", async () => {
  await using home = await tempDir();
  await using dir = await tempDir();
  await Deno.copyFile(`${ROOT}/config.yaml`, `${dir.path}/config.yaml`);
  await writeFiles(dir.path, { "static/index.html": "<h1>home</h1>" });
  // As the task, with HOME a throwaway folder and on a free port, its own address only.
  const port = freePort();
  const permissions = HTTPS_PERMISSIONS.map((p) =>
    p.startsWith("--allow-net") ? `--allow-net=127.0.0.1:${port}` : p.replaceAll("$HOME", home.path)
  );
  const ca = TASK_CA_DIR.replace("$HOME", home.path);
  await using server = await spawnCli(["--ssl", "-p", String(port)], {
    cwd: dir.path,
    permissions,
    env: { HOME: home.path, DENOSERVE_CA_DIR: ca, DENO_DIR },
  });
  const r = await curl([
    "--cacert",
    `${ca}/root.pem`,
    `${server.url.replace("127.0.0.1", "localhost")}/`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "<h1>home</h1>");
  assert.doesNotMatch(server.output(), /permission denied/);
});

Deno.test("unreadable config file: one line naming --allow-read=<file>", async () => {
  await using dir = await site();
  const r = await runCli(["-c", `${dir.path}/config.yaml`], {
    permissions: ["--no-prompt", NET, ENV],
  });
  assert.equal(r.code, 1);
  assertOneLine(r.stderr, `--allow-read=${dir.path}/config.yaml`);
});

Deno.test("unreadable static folder: one line naming --allow-read=<folder>", async () => {
  await using dir = await site();
  const r = await runCli(["-c", `${dir.path}/config.yaml`], {
    permissions: ["--no-prompt", NET, ENV, `--allow-read=${dir.path}/config.yaml`],
  });
  assert.equal(r.code, 1);
  assertOneLine(r.stderr, `--allow-read=${dir.path}/static`);
});

Deno.test("static file denied at request time: 500 and one log line naming the flag", async () => {
  await using dir = await site();
  await using server = await spawnCli(["-c", `${dir.path}/config.yaml`], {
    permissions: [
      "--no-prompt",
      NET,
      ENV,
      `--allow-read=${dir.path}`,
      `--deny-read=${dir.path}/static/secret.txt`,
    ],
  });
  const res = await fetch(`${server.url}/secret.txt`);
  assert.equal(res.status, 500);
  assert.doesNotMatch(await res.text(), /secret/);
  const ok = await fetch(`${server.url}/`);
  assert.equal(await ok.text(), "<h1>home</h1>");
  await server.waitFor("request failed");
  const failed = lines(server.output()).filter((l) => l.includes("request failed"));
  assert.equal(failed.length, 1);
  assert.ok(failed[0].includes(`--allow-read=${dir.path}/static/secret.txt`), failed[0]);
  assert.doesNotMatch(server.output(), /^\s+at /m);
});

Deno.test("unreadable templates folder: built-in page and one warning for the folder", async () => {
  await using dir = await site();
  await writeFiles(dir.path, { "templates/error_404.html": "custom {{status_code}}" });
  await using server = await spawnCli(["-c", `${dir.path}/config.yaml`], {
    permissions: [
      "--no-prompt",
      NET,
      ENV,
      `--allow-read=${dir.path}/config.yaml,${dir.path}/static`,
    ],
  });
  for (let i = 0; i < 2; i++) {
    const res = await fetch(`${server.url}/missing-${i}`);
    assert.equal(res.status, 404);
    assert.doesNotMatch(await res.text(), /custom/);
  }
  await server.waitFor("--allow-read=");
  const warned = lines(server.output()).filter((l) => l.includes("permission denied"));
  assert.equal(warned.length, 1, server.output());
  assert.ok(warned[0].includes(`--allow-read=${dir.path}/templates`), warned[0]);
});

Deno.test("unwritable log folder: one line naming --allow-write=<folder>", async () => {
  await using dir = await site();
  await writeFiles(dir.path, {
    "config.yaml": "server:\n  port: 0\nlogging:\n  log_file: ./logs/denoserve.log\n",
  });
  const r = await runCli(["-c", `${dir.path}/config.yaml`], {
    permissions: ["--no-prompt", NET, ENV, `--allow-read=${dir.path}`],
  });
  assert.equal(r.code, 2);
  assertOneLine(r.stderr, "logging.log_file", `--allow-write=${dir.path}/logs`);
});

Deno.test("no network permission: one line naming --allow-net=<host:port>", async () => {
  await using dir = await site();
  const r = await runCli(["-c", `${dir.path}/config.yaml`], {
    permissions: ["--no-prompt", ENV, `--allow-read=${dir.path}`],
  });
  assert.equal(r.code, 1);
  assertOneLine(r.stderr, "cannot listen", "--allow-net=127.0.0.1:0");
});

Deno.test("HTTPS with only its own address (and FFI for libc): served, h2 and HTTP/1.1, no warning", async () => {
  await using dir = await site();
  const certs = await makeCerts(dir.path);
  const port = freePort();
  await Deno.writeTextFile(
    `${dir.path}/config.yaml`,
    `server:\n  host: 127.0.0.1\n  port: ${port}\nssl:\n  enabled: true\n` +
      `  cert_file: ${certs.cert}\n  key_file: ${certs.key}\n` +
      `http:\n  static_dir: ${dir.path}/static\n`,
  );
  await using server = await spawnCli(["-c", `${dir.path}/config.yaml`], {
    cwd: dir.path,
    permissions: [
      "--no-prompt",
      ENV,
      `--allow-read=${dir.path}`,
      `--allow-net=127.0.0.1:${port}`,
      NEEDED,
    ],
  });
  for (const version of ["--http1.1", "--http2"]) {
    const r = await curl([version, "--cacert", certs.ca, `https://localhost:${port}/`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "<h1>home</h1>");
  }
  assert.doesNotMatch(server.output(), /WARNING|permission|denied/i);
});

Deno.test("no environment permission: one line naming the whole --allow-env list", async () => {
  await using dir = await site();
  const r = await runCli(["-c", `${dir.path}/config.yaml`], {
    permissions: ["--no-prompt", NET, `--allow-read=${dir.path}`],
  });
  assert.equal(r.code, 1);
  assertOneLine(r.stderr, ENV);
});

Deno.test("${VAR} outside the granted environment: config error naming key and flag", async () => {
  await using dir = await site();
  await writeFiles(dir.path, {
    "config.yaml": "server:\n  port: 0\n  host: ${BIND_ADDRESS}\n",
  });
  const r = await runCli(["-c", `${dir.path}/config.yaml`], {
    permissions: ["--no-prompt", NET, ENV, `--allow-read=${dir.path}`],
    env: { BIND_ADDRESS: "127.0.0.1" },
  });
  assert.equal(r.code, 2);
  assertOneLine(r.stderr, "server.host", "${BIND_ADDRESS}", "--allow-env=BIND_ADDRESS");
});

Deno.test("unreadable certificate: --test names --allow-read=<cert>", async () => {
  await using dir = await site();
  await writeFiles(dir.path, {
    "config.yaml":
      "ssl:\n  enabled: true\n  cert_file: ./ssl/cert.pem\n  key_file: ./ssl/key.pem\n",
    "ssl/cert.pem": "not read",
    "ssl/key.pem": "not read",
  });
  const r = await runCli(["-c", `${dir.path}/config.yaml`, "--test", "configuration"], {
    permissions: ["--no-prompt", ENV, `--allow-read=${dir.path}/config.yaml`],
  });
  assert.equal(r.code, 2);
  const line = lines(r.stdout + r.stderr).find((l) => l.includes("ssl.cert_file"));
  assert.ok(line?.includes(`--allow-read=${dir.path}/ssl/cert.pem`), r.stdout + r.stderr);
  assert.doesNotMatch(r.stdout + r.stderr, /^\s+at /m);
});
