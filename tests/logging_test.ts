import assert from "node:assert/strict";
import { validate } from "../src/config/load.ts";
import { formatCommon, formatJson, isoTime, requestIdFor } from "../src/log/access.ts";
import { setHeaders } from "../src/http/headers.ts";
import { openFileSink } from "../src/log/file_sink.ts";
import { createLogger, type Logger, loggerOptions } from "../src/log/logger.ts";
import { bootLoaded } from "../src/app/boot.ts";
import { type RunningServer, startServer } from "../src/server/server.ts";
import { serveBackend } from "./support/backends.ts";
import { MAIN, runCli, spawnCli } from "./support/cli.ts";
import { tempDir, writeFiles } from "./support/files.ts";

const readLines = async (path: string) =>
  (await Deno.readTextFile(path)).split("\n").filter((l) => l !== "");

/** A real server whose logger writes to `logging.log_file` under `dir`; dispose to stop. */
async function fileLoggedServer(
  dir: string,
  logging: Record<string, unknown>,
  more: Record<string, unknown> = {},
): Promise<{ url: string; log: Logger; server: RunningServer } & AsyncDisposable> {
  await writeFiles(dir, { "static/index.html": "<p>hi</p>", "static/a.txt": "hello" });
  const loaded = validate({
    ...more,
    server: { host: "127.0.0.1", port: 0 },
    http: { static_dir: `${dir}/static` },
    logging: { console_output: false, log_file: `${dir}/denoserve.log`, ...logging },
  });
  const log = createLogger(loggerOptions(loaded.config.logging));
  const { config, app } = await bootLoaded(loaded, log);
  const server = await startServer(config, log, app);
  let stopped = false;
  return {
    url: server.url.replace(/\/$/, ""),
    log,
    server,
    async [Symbol.asyncDispose]() {
      if (stopped) return;
      stopped = true;
      await server.shutdown(2000);
      await log.close();
    },
  };
}

/** Runs `count` GET requests, `concurrency` at a time; returns the response headers. */
async function requests(url: string, count: number, concurrency: number, init?: RequestInit) {
  const headers: Headers[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) {
      next++;
      const res = await fetch(url, init);
      await res.body?.cancel();
      headers.push(res.headers);
    }
  }));
  return headers;
}

Deno.test("levels below the configured one are not written", async () => {
  await using dir = await tempDir();
  const log = createLogger({ level: "WARNING", console: false, file: `${dir.path}/x.log` });
  log.debug("debug line");
  log.info("info line");
  log.warn("warn line");
  log.error("error line");
  assert.equal(log.enabled("INFO"), false);
  assert.equal(log.enabled("ERROR"), true);
  assert.equal(log.accessEnabled, false, "access lines are INFO and so are off at WARNING");
  await log.close();
  const lines = await readLines(`${dir.path}/x.log`);
  assert.equal(lines.length, 2);
  assert.match(lines[0], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING warn line$/);
  assert.match(lines[1], / ERROR error line$/);
});

Deno.test("structured logs are one JSON object per line with the request id", async () => {
  await using dir = await tempDir();
  const file = `${dir.path}/logs/denoserve.log`; // the folder is created
  const log = createLogger({ level: "DEBUG", console: false, file, structured: true });
  log.debug("plain");
  log.info('with "quotes" and\nnewline', { requestId: "abc-1" });
  await log.close();
  const lines = await readLines(file);
  assert.equal(lines.length, 2);
  const [a, b] = lines.map((l) => JSON.parse(l));
  assert.match(a.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.ok(Math.abs(Date.parse(a.timestamp) - Date.now()) < 60_000);
  assert.deepEqual({ level: a.level, message: a.message, id: a.request_id }, {
    level: "DEBUG",
    message: "plain",
    id: undefined,
  });
  assert.deepEqual({ level: b.level, message: b.message, id: b.request_id }, {
    level: "INFO",
    message: 'with "quotes" and\nnewline',
    id: "abc-1",
  });
});

Deno.test("plain lines carry the request id of their request", async () => {
  await using dir = await tempDir();
  const log = createLogger({ console: false, file: `${dir.path}/x.log` });
  log.warn("backend slow", { requestId: "req-7" });
  await log.close();
  assert.match((await readLines(`${dir.path}/x.log`))[0], / WARNING \[req-7\] backend slow$/);
});

Deno.test("the cached clock strings match Date's own formatting", () => {
  for (const t of [0, 1_700_000_000_123, Date.now(), Date.now() + 999]) {
    assert.equal(isoTime(t), new Date(t).toISOString());
  }
  const line = formatCommon(
    {
      method: "GET",
      path: "/",
      status: 200,
      bytes: 1,
      durationMs: 1,
      clientIp: "1.2.3.4",
    },
    false,
    Date.UTC(2026, 10, 8, 6, 5, 4),
  );
  assert.match(line, /\[08\/Nov\/2026:06:05:04 \+0000\]/);
});

Deno.test("the rotating file loses no line under concurrent writes", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/denoserve.log`;
  const sink = openFileSink({ path, rotate: true, maxBytes: 2000, backups: 200, delayMs: 1 });
  const total = 3000;
  // 30 writers interleave on the event loop while the writer flushes and rotates.
  await Promise.all(Array.from({ length: 30 }, async (_, w) => {
    for (let i = 0; i < total / 30; i++) {
      sink.write(`writer ${w} line ${i} ${"x".repeat(i % 40)}\n`);
      if (i % 7 === 0) await new Promise((r) => setTimeout(r, 0));
    }
  }));
  await sink.close();
  const files = [...Deno.readDirSync(dir.path)].map((e) => e.name).sort();
  assert.ok(files.length > 20, `expected many rotated files, got ${files.length}`);
  const seen = new Set<string>();
  for (const name of files) {
    const size = Deno.statSync(`${dir.path}/${name}`).size;
    assert.ok(size <= 2000, `${name} has ${size} bytes`);
    for (const line of await readLines(`${dir.path}/${name}`)) {
      assert.match(line, /^writer \d+ line \d+ x*$/);
      seen.add(line.split(" x")[0].trimEnd());
    }
  }
  assert.equal(seen.size, total);
  // Order is kept: the oldest file has the highest number.
  const first = (await readLines(`${path}.${files.length - 1}`))[0];
  assert.match(first, /^writer 0 line 0\b/);
});

Deno.test("rotation keeps backup_count files and drops older ones", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/denoserve.log`;
  const sink = openFileSink({ path, rotate: true, maxBytes: 100, backups: 2 });
  for (let i = 0; i < 50; i++) sink.write(`line ${String(i).padStart(3, "0")} ${"y".repeat(20)}\n`);
  await sink.close();
  const files = [...Deno.readDirSync(dir.path)].map((e) => e.name).sort();
  assert.deepEqual(files, ["denoserve.log", "denoserve.log.1", "denoserve.log.2"]);
  const last = await readLines(path);
  assert.match(last[last.length - 1], /^line 049 /);
  const older = await readLines(`${path}.2`);
  const newer = await readLines(`${path}.1`);
  assert.ok(older[older.length - 1] < newer[0], "the .2 file holds the older lines");
});

Deno.test("a server's access lines survive rotation under concurrent requests", async () => {
  await using dir = await tempDir();
  const total = 300;
  {
    await using srv = await fileLoggedServer(dir.path, {
      use_rotation: true,
      max_log_size: 4096,
      backup_count: 100,
      access_format: "json",
    });
    const headers = await requests(`${srv.url}/a.txt`, total, 30);
    assert.equal(headers.length, total);
  }
  const names = [...Deno.readDirSync(dir.path)].map((e) => e.name).filter((n) =>
    n.startsWith("denoserve.log")
  );
  assert.ok(names.length > 3, `expected rotation, got ${names}`);
  const ids = new Set<string>();
  for (const name of names) {
    assert.ok(Deno.statSync(`${dir.path}/${name}`).size <= 4096);
    for (const line of await readLines(`${dir.path}/${name}`)) {
      const record = JSON.parse(line);
      assert.equal(record.path, "/a.txt");
      ids.add(record.request_id);
    }
  }
  assert.equal(ids.size, total, "every request logged exactly once, each with its own id");
});

Deno.test("access lines in common, combined and json formats", async (t) => {
  const init = {
    headers: { "user-agent": 'probe/1.0 "quoted"', referer: "http://example.test/from" },
  };
  for (const format of ["common", "combined", "json"] as const) {
    await t.step(format, async () => {
      await using dir = await tempDir();
      {
        await using srv = await fileLoggedServer(dir.path, { access_format: format });
        const res = await fetch(`${srv.url}/a.txt?q=1`, init);
        assert.equal(await res.text(), "hello");
        const missing = await fetch(`${srv.url}/nope`, init);
        await missing.body?.cancel();
      }
      const lines = await readLines(`${dir.path}/denoserve.log`);
      assert.equal(lines.length, 2);
      if (format === "json") {
        const r = JSON.parse(lines[0]);
        assert.equal(r.level, "INFO");
        assert.equal(r.message, "GET /a.txt?q=1 200");
        assert.equal(r.method, "GET");
        assert.equal(r.path, "/a.txt?q=1");
        assert.equal(r.status, 200);
        assert.equal(r.bytes, 5);
        assert.equal(typeof r.duration_ms, "number");
        assert.equal(r.client_ip, "127.0.0.1");
        assert.equal(r.user_agent, 'probe/1.0 "quoted"');
        assert.equal(r.referer, "http://example.test/from");
        assert.match(r.request_id, /^[0-9a-f]{8}-[0-9a-z]+$/);
        assert.match(r.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
        assert.equal(JSON.parse(lines[1]).status, 404);
        return;
      }
      const common =
        /^127\.0\.0\.1 - - \[\d\d\/[A-Z][a-z]{2}\/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET \/a\.txt\?q=1" 200 5/;
      assert.match(lines[0], common);
      assert.match(lines[0], / id=[0-9a-f]{8}-[0-9a-z]+ ms=\d+\.\d$/);
      assert.match(lines[1], /"GET \/nope" 404 /);
      if (format === "combined") {
        assert.match(
          lines[0],
          / 200 5 "http:\/\/example\.test\/from" "probe\/1\.0 \\x22quoted\\x22" id=/,
        );
      } else {
        assert.doesNotMatch(lines[0], /probe/);
      }
    });
  }
});

Deno.test("structured_logs writes access lines as JSON whatever the access format", async () => {
  await using dir = await tempDir();
  {
    await using srv = await fileLoggedServer(dir.path, {
      access_format: "combined",
      structured_logs: true,
    });
    await (await fetch(`${srv.url}/a.txt`)).body?.cancel();
  }
  const r = JSON.parse((await readLines(`${dir.path}/denoserve.log`))[0]);
  assert.equal(r.status, 200);
  assert.ok(r.request_id);
});

Deno.test("request ids: taken from X-Request-Id when safe, generated otherwise", async () => {
  await using dir = await tempDir();
  const sent = ["trace-42.a:b/c=", "has space", "x".repeat(129), 'quo"te', "é", ""];
  const got: string[] = [];
  {
    await using srv = await fileLoggedServer(dir.path, { access_format: "json" });
    for (const id of sent) {
      const res = await fetch(`${srv.url}/a.txt`, { headers: { "x-request-id": id } });
      await res.body?.cancel();
      got.push(res.headers.get("x-request-id")!);
    }
    const plain = await fetch(`${srv.url}/nope`);
    await plain.body?.cancel();
    got.push(plain.headers.get("x-request-id")!);
  }
  assert.equal(got[0], sent[0], "a safe id is kept");
  for (const id of got.slice(1)) {
    assert.match(id, /^[0-9a-f]{8}-[0-9a-z]+$/, "an unsafe or missing id is replaced");
  }
  assert.equal(new Set(got).size, got.length);
  const logged = (await readLines(`${dir.path}/denoserve.log`)).map((l) =>
    JSON.parse(l).request_id
  );
  assert.deepEqual(logged, got, "each access line carries the id the client got back");
  assert.equal(requestIdFor("x".repeat(128)), "x".repeat(128));
  assert.notEqual(requestIdFor("x".repeat(129)), "x".repeat(129));
});

Deno.test("request ids: cached file answers (200, HEAD, 304) carry one; it replaces a location's own", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "static/framed/b.txt": "b" });
  await using srv = await fileLoggedServer(dir.path, {}, {
    version: 2,
    extensions: [{
      type: "routing",
      config: {
        regex_locations: {
          "^~/framed/": { headers: ["X-Request-Id: from-config"] },
          "__default__": {},
        },
      },
    }],
  });
  // From the second request on, the answers come from the file cache. A header given twice
  // reads back joined ("a, b").
  for (let i = 0; i < 3; i++) {
    for (
      const [path, method] of [["/a.txt", "GET"], ["/a.txt", "HEAD"], ["/framed/b.txt", "GET"]]
    ) {
      const id = `id-${i}-${method}${path}`;
      const res = await fetch(`${srv.url}${path}`, { method, headers: { "x-request-id": id } });
      await res.body?.cancel();
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("x-request-id"), id, `${method} ${path}, request ${i + 1}`);
    }
  }
  const first = await fetch(`${srv.url}/a.txt`);
  await first.body?.cancel();
  const notModified = await fetch(`${srv.url}/a.txt`, {
    headers: { "if-none-match": first.headers.get("etag")!, "x-request-id": "id-304" },
  });
  assert.equal(notModified.status, 304);
  assert.equal(notModified.headers.get("x-request-id"), "id-304");
});

Deno.test("request ids reach responses whose headers cannot be changed", async () => {
  await using backend = serveBackend(() =>
    new Response("b", { status: 201, headers: { "x-b": "1" } })
  );
  const fetched = await fetch(`${backend.url}/`);
  assert.throws(() => fetched.headers.set("x", "1"));
  const res = setHeaders(fetched, [["x-request-id", "id-1"]]);
  assert.equal(res.status, 201);
  assert.equal(res.headers.get("x-b"), "1");
  assert.equal(res.headers.get("x-request-id"), "id-1");
  assert.equal(await res.text(), "b");
});

Deno.test("with the access log off, responses carry no request id and nothing is logged", async () => {
  await using dir = await tempDir();
  {
    await using srv = await fileLoggedServer(dir.path, { access_log: false });
    assert.equal(srv.log.accessEnabled, false);
    const res = await fetch(`${srv.url}/a.txt`);
    await res.body?.cancel();
    assert.equal(res.headers.get("x-request-id"), null);
  }
  assert.deepEqual(await readLines(`${dir.path}/denoserve.log`), []);
});

Deno.test("the CLI writes no file without log_file, and flushes its file on shutdown", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "static/a.txt": "hello",
    "plain.yaml": "logging:\n  access_log: true\n",
    "file.yaml": "logging:\n  log_file: ./logs/denoserve.log\n  console_output: false\n",
  });
  {
    await using cli = await spawnCli(["-c", "plain.yaml", "-p", "0"], { cwd: dir.path });
    await (await fetch(`${cli.url}/a.txt`)).body?.cancel();
    await cli.waitFor('"GET /a.txt" 200 5');
    assert.equal(await cli.stop(), 0);
  }
  assert.deepEqual(
    [...Deno.readDirSync(dir.path)].map((e) => e.name).sort(),
    ["file.yaml", "plain.yaml", "static"],
  );
  // Console output off: the "serving … on URL" line is only in the file, so wait for it there.
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "-c", "file.yaml", "-p", "0"],
    cwd: dir.path,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    const logFile = `${dir.path}/logs/denoserve.log`;
    let url: string | undefined;
    for (let i = 0; i < 100 && !url; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const text = await Deno.readTextFile(logFile).catch(() => "");
      url = / on (http:\/\/\S+?)\/? /.exec(text)?.[1];
    }
    assert.ok(url, "the start line reached the file");
    // Requests right before the stop are still buffered when SIGTERM arrives.
    for (let i = 0; i < 5; i++) await (await fetch(`${url}/a.txt?n=${i}`)).body?.cancel();
    child.kill("SIGTERM");
    const status = await child.output();
    assert.equal(status.code, 0, new TextDecoder().decode(status.stderr));
    const lines = await readLines(logFile);
    assert.equal(lines.filter((l) => l.includes('"GET /a.txt?n=')).length, 5);
    assert.match(lines[lines.length - 1], / INFO shutting down$/);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }
});

Deno.test("a log file that cannot be opened names the key and exits 2", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "blocker": "a file where a folder is needed",
    "c.yaml": "logging:\n  log_file: ./blocker/denoserve.log\n",
  });
  const out = await runCli(["-c", "c.yaml", "-p", "0"], { cwd: dir.path });
  assert.equal(out.code, 2);
  assert.match(
    out.stderr,
    /^denoserve: logging\.log_file: cannot open .*blocker\/denoserve\.log: /,
  );
});

const hasScript = (() => {
  try {
    return Deno.statSync("/usr/bin/script").isFile;
  } catch {
    return false;
  }
})();
if (!hasScript) console.log("console colour test skipped: /usr/bin/script (util-linux) is missing");

Deno.test({
  name: "console levels are coloured on a terminal unless NO_COLOR is set",
  ignore: !hasScript,
  async fn() {
    const code = `import { createLogger } from "${
      new URL("../src/log/logger.ts", import.meta.url).href
    }"; const l = createLogger(); l.warn("careful"); await l.close();`;
    const runIn = async (terminal: boolean, noColor: boolean) => {
      const deno = `${Deno.execPath()} eval '${code}'`;
      // CI exports NO_COLOR; the child gets exactly the environment this case asks for.
      const env: Record<string, string> = { ...Deno.env.toObject(), TERM: "xterm" };
      delete env.NO_COLOR;
      if (noColor) env.NO_COLOR = "1";
      const cmd = terminal
        ? new Deno.Command("script", {
          args: ["-qec", deno, "/dev/null"],
          env,
          clearEnv: true,
          stdin: "null",
        })
        : new Deno.Command("sh", { args: ["-c", deno], env, clearEnv: true });
      const out = await cmd.output();
      return new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    };
    const ESC = "\x1b[";
    assert.ok((await runIn(true, false)).includes(`${ESC}33mWARNING${ESC}0m careful`));
    assert.match(await runIn(true, true), / WARNING careful/);
    assert.ok(!(await runIn(true, true)).includes(ESC));
    const piped = await runIn(false, false);
    assert.match(piped, / WARNING careful/);
    assert.ok(!piped.includes(ESC));
  },
});

Deno.test("formatJson and formatCommon escape what a client controls", () => {
  const headers = new Headers({ "user-agent": "a\tb" });
  const record = {
    method: "GET",
    path: '/x"y',
    status: 200,
    bytes: null,
    durationMs: 0.25,
    clientIp: "::1",
    requestId: "r1",
    headers,
  };
  assert.match(formatCommon(record, true), /"GET \/x\\x22y" 200 - "-" "a\\x09b" id=r1 ms=0\.3\n$/);
  assert.equal(JSON.parse(formatJson(record)).path, '/x"y');
});
