import { strict as assert } from "node:assert";
import denoJson from "../deno.json" with { type: "json" };
import { runCli, spawnCli } from "./support/cli.ts";
import { tempDir, writeFiles } from "./support/files.ts";

Deno.test("--version and --help", async () => {
  for (const flag of ["-v", "--version"]) {
    const r = await runCli([flag]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), `denoserve ${denoJson.version}`);
  }
  const help = await runCli(["-h"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Usage: denoserve/);
  assert.match(help.stdout, /--ssl-config/);
});

Deno.test("bad flags print the problem and the usage and exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [["--nope"], /Unknown option '--nope'/],
    [["-p", "0x"], /--port must be a port number 0–65535, got "0x"/],
    [["-p", "70000"], /--port must be a port number 0–65535, got "70000"/],
    [["--proxy", "nohost"], /--proxy must be HOST:PORT\/PATH/],
    [["--test", "everything"], /--test must be all, configuration or directories/],
    [["one", "two"], /unexpected argument "two"/],
    [["trust", "extra"], /unexpected argument "extra"/],
    [["--systemd"], /--systemd goes with the permissions command/],
  ];
  for (const [args, message] of cases) {
    const r = await runCli(args);
    assert.equal(r.code, 2, args.join(" "));
    assert.match(r.stderr, message);
    assert.match(r.stderr, /Usage: denoserve/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  }
});

Deno.test("a configuration with several errors: one start names them all, a line each", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(
    `${dir.path}/bad.yaml`,
    "server:\n  backlog: 0\nlogging:\n  access_format: jsn\n",
  );
  const r = await runCli(["-c", `${dir.path}/bad.yaml`]);
  assert.equal(r.code, 2);
  assert.deepEqual(
    r.stderr.trim().split("\n").map((l) => l.replace(/^denoserve: .*bad\.yaml:/, "")),
    [
      "2:12: server.backlog must be a whole number ≥ 1, got 0",
      '4:18: logging.access_format must be "common", "combined" or "json", got "jsn"',
    ],
  );
});

Deno.test("configuration errors exit 2 with one clear line and no stack trace", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir.path}/bad.yaml`, "server:\n  port: 70000\n");
  let r = await runCli(["-c", `${dir.path}/bad.yaml`]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /bad\.yaml:2:9: server\.port must be 0–65535, got 70000/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  r = await runCli(["-c", `${dir.path}/absent.yaml`]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /absent\.yaml: configuration file not found/);
  r = await runCli([], { env: { DENOSERVE_PORT: "http" }, cwd: dir.path });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /DENOSERVE_PORT must be a port number/);
});

Deno.test("serves from flags, logs one access line per request, stops on SIGTERM", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/hello.txt": "hi there" });
  await using server = await spawnCli(["-p", "0", "-s", "site"], { cwd: dir.path });
  assert.match(server.output(), /serving .*site on http:\/\/127\.0\.0\.1:\d+/);
  assert.match(server.output(), /built-in defaults/);
  const res = await fetch(`${server.url}/hello.txt?x=1`);
  assert.equal(await res.text(), "hi there");
  await server.waitFor(/"GET \/hello\.txt\?x=1" 200 8 id=\S+ ms=[\d.]+/);
  const missing = await fetch(`${server.url}/nope`);
  await missing.body?.cancel();
  await server.waitFor(/"GET \/nope" 404/);
  assert.equal(await server.stop("SIGTERM"), 0);
  assert.match(server.output(), /shutting down/);
});

Deno.test("SIGINT lets an in-flight download finish", async () => {
  await using dir = await tempDir();
  const size = 64 * 1024 * 1024;
  const f = await Deno.open(`${dir.path}/big.bin`, { write: true, create: true });
  await f.truncate(size);
  f.close();
  await using server = await spawnCli(["-p", "0", "-s", dir.path]);
  const res = await fetch(`${server.url}/big.bin`);
  const reader = res.body!.getReader();
  let received = (await reader.read()).value!.byteLength;
  const exit = server.stop("SIGINT");
  await server.waitFor("shutting down");
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    received += value.byteLength;
  }
  assert.equal(received, size, "the whole body arrived after the signal");
  assert.equal(await exit, 0);
});

Deno.test("the bundled config.yaml serves ./static (README's first command)", async () => {
  await using server = await spawnCli(["-p", "0"]);
  assert.match(server.output(), /config \/.*config\.yaml/);
  const res = await fetch(`${server.url}/`);
  assert.equal(res.status, 200);
  assert.match(await res.text(), /It works/);
});

Deno.test("a missing static folder is a warning and the welcome page, nothing written", async () => {
  await using dir = await tempDir();
  await using server = await spawnCli(["-p", "0"], { cwd: dir.path });
  assert.match(server.output(), /WARNING static folder .*static does not exist/);
  assert.match(await (await fetch(`${server.url}/`)).text(), /denoserve is running/);
  assert.deepEqual([...Deno.readDirSync(dir.path)], []);
});

Deno.test("a port in use is one clear line and exit 1", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const r = await runCli(["-p", String(busy.addr.port)]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot listen: 127\.0\.0\.1:\d+ is already in use/);
  } finally {
    busy.close();
  }
});

Deno.test("a missing read permission names the flag to add", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir.path}/c.yaml`, "server:\n  port: 0\n");
  const r = await runCli(["-c", `${dir.path}/c.yaml`], {
    permissions: ["--allow-env", "--allow-net", `--allow-read=${Deno.cwd()}`],
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /permission denied: read access to .*c\.yaml; run with --allow-read=/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});

Deno.test("server.backlog sets the listen queue length", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "c.yaml": "server:\n  backlog: 37\n" });
  await using server = await spawnCli(["-p", "0", "-c", `${dir.path}/c.yaml`]);
  const port = new URL(server.url).port;
  const out = await new Deno.Command("ss", { args: ["-ltnH", `sport = :${port}`] }).output();
  // For a listening socket, ss shows the backlog in the Send-Q column.
  const [, , sendQ] = new TextDecoder().decode(out.stdout).trim().split(/\s+/);
  assert.equal(sendQ, "37");
});

Deno.test("a folder argument, --spa and --cors: serve, http-server and file_server habits", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "dist/index.html": "<h1>app</h1>",
    "dist/assets/app.js": "run()",
  });
  // No config.yaml in the working folder: built-in defaults plus the flags.
  await using server = await spawnCli(["./dist", "--spa", "--cors", "-p", "0"], { cwd: dir.path });
  assert.match(server.output(), /serving .*\/dist on http:\/\/127\.0\.0\.1:\d+\//);
  const port = new URL(server.url).port;
  assert.match(
    server.output(),
    new RegExp(`local: http://localhost:${port}/ +http://127\\.0\\.0\\.1:${port}/`),
  );
  // An unknown path is the app's page; a missing file stays 404.
  const deep = await fetch(`${server.url}/settings/profile`);
  assert.equal(deep.status, 200);
  assert.equal(await deep.text(), "<h1>app</h1>");
  const missing = await fetch(`${server.url}/assets/missing.js`);
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
  const asset = await fetch(`${server.url}/assets/app.js`, {
    headers: { origin: "http://a.test" },
  });
  assert.equal(await asset.text(), "run()");
  assert.equal(asset.headers.get("access-control-allow-origin"), "*");
  assert.doesNotMatch(server.output(), /WARNING/);
});

Deno.test("a folder argument that is not there: one line, exit 2", async () => {
  await using dir = await tempDir();
  const r = await runCli(["./nowhere"], { cwd: dir.path });
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim(), "denoserve: ./nowhere is not a folder; name the folder to serve");
});

Deno.test("bound to 0.0.0.0: the banner lists the local and the network URLs", async () => {
  await using server = await spawnCli(["-H", "0.0.0.0", "-p", "0"]);
  const port = new URL(server.url).port;
  const addresses = Deno.networkInterfaces().filter((i) =>
    i.family === "IPv4" && !i.address.startsWith("127.")
  );
  await server.waitFor("local: ");
  assert.match(
    server.output(),
    new RegExp(`local: http://localhost:${port}/ +http://127\\.0\\.0\\.1:${port}/`),
  );
  for (const a of addresses) assert.ok(server.output().includes(`http://${a.address}:${port}/`));
});
