/**
 * Reliability run on loopback, bounded in time: sustained load with wrk, graceful shutdown and
 * reloads under load, a testssl.sh audit of the HTTPS server, the figures the hostile, peers and
 * browser tests print, descriptors and memory after 100,000 connections ended abruptly, and
 * 18,000 stalled TLS handshakes against handshake_timeout. Writes bench/reliability.md.
 *
 *   deno task reliability                 everything (about 6 minutes)
 *   deno task reliability --quick         10 s of load instead of 60, prints only
 *   deno task reliability --only tls,reload  run some phases (load, shutdown, reload, tls, tests,
 *                                            leak, flood)
 *                                            and replace only their sections in the file
 *
 * Needs wrk, h2load, prlimit and testssl.sh (Debian packages; .ci/run installs them), and root
 * for the flood's open-files limit.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { webSocketBackend } from "../tests/support/backends.ts";
import { makeCerts } from "../tests/support/certs.ts";
import { hasCommand, spawnCli } from "../tests/support/cli.ts";
import { clientLoop } from "../tests/support/clients.ts";
import { ROOT, tempDir, writeFiles } from "../tests/support/files.ts";
import { fdCount, rssBytes } from "../tests/support/proc.ts";
import { validate } from "../src/config/load.ts";
import { unsupported } from "../src/app/validate.ts";

const args = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    duration: { type: "string" },
    connections: { type: "string", default: "200" },
    abrupt: { type: "string", default: "100000" },
  },
});
const QUICK = args.values.quick;
const DURATION = Number(args.values.duration ?? (QUICK ? 10 : 60));
const CONNECTIONS = Number(args.values.connections);
const PHASES = new Set(
  (args.values.only ?? "load,shutdown,reload,tls,tests,leak,flood").split(","),
);
const ABRUPT = Number(args.values.abrupt);
const MiB = 1024 * 1024;
const sections: string[] = [];
const problems: string[] = [];

const say = (line: string) => console.error(line);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether this build serves `server.reverse_proxy`; else the proxied route uses `proxy_pass`. */
const reverseProxy = !unsupported(
  validate({ server: { reverse_proxy: [{ path: "/p", host: "127.0.0.1", port: 9 }] } }).config,
).includes("server.reverse_proxy");

/** Proxy configuration for `prefix` → the backend at `port`, in the form this build serves. */
function proxyConfig(prefix: string, port: number) {
  return reverseProxy
    ? { server: { reverse_proxy: [{ path: prefix, host: "127.0.0.1", port, strip_prefix: true }] } }
    : {
      version: 2,
      extensions: [{
        type: "routing",
        config: {
          regex_locations: { [`^~${prefix}/`]: { proxy_pass: `http://127.0.0.1:${port}/` } },
        },
      }],
    };
}

/** A backend in this process: /slow answers after 300 ms, everything else at once. */
function backend() {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    if (req.url.endsWith("/slow")) await sleep(300);
    return new Response("backend answer\n", { headers: { "content-type": "text/plain" } });
  });
  return { port: server.addr.port, close: () => server.shutdown() };
}

async function site(dir: string) {
  await writeFiles(dir, {
    "site/index.html": "<!doctype html><title>home</title><h1>home</h1>\n",
    "site/file.txt": "x".repeat(4096),
  });
  return `${dir}/site`;
}

async function writeConfig(dir: string, config: Record<string, unknown>) {
  await Deno.writeTextFile(`${dir}/config.yaml`, JSON.stringify(config, null, 1));
  return `${dir}/config.yaml`;
}

// ---------------------------------------------------------------- load

const WRK_LUA = `
-- Alternates the two paths; tells answers apart by the ETag only the static file carries.
local paths = { "/file.txt", "/api/x" }
local n = 0
counts = { 0, 0 }
bad = { 0, 0 }
local threads = {}
function setup(thread) table.insert(threads, thread) end
function request()
  n = n + 1
  return wrk.format("GET", paths[(n % 2) + 1])
end
function response(status, headers, body)
  local i = headers["etag"] and 1 or 2
  counts[i] = counts[i] + 1
  if status < 200 or status > 299 then bad[i] = bad[i] + 1 end
end
function done(summary, latency, requests)
  local c1, c2, b1, b2 = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    local c, b = t:get("counts"), t:get("bad")
    c1, c2, b1, b2 = c1 + c[1], c2 + c[2], b1 + b[1], b2 + b[2]
  end
  io.write(string.format("PERPATH static=%d static_non2xx=%d proxied=%d proxied_non2xx=%d\\n", c1, b1, c2, b2))
end
`;

async function loadPhase() {
  if (!hasCommand("wrk")) {
    problems.push("load: wrk is not installed (apt-get install wrk)");
    return;
  }
  await using dir = await tempDir();
  const root = await site(dir.path);
  const back = backend();
  await Deno.writeTextFile(`${dir.path}/paths.lua`, WRK_LUA);
  const configPath = await writeConfig(dir.path, {
    ...proxyConfig("/api", back.port),
    http: { static_dir: root },
    logging: { access_log: false, level: "INFO" },
  });
  await using srv = await spawnCli(["-c", configPath, "-p", "0"], { cwd: dir.path });
  const pid = srv.process.pid;
  await (await fetch(`${srv.url}/file.txt`)).text();
  await (await fetch(`${srv.url}/api/x`)).text();
  const fdBefore = fdCount(pid);
  const samples: [number, number][] = [];
  const started = Date.now();
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      samples.push([(Date.now() - started) / 1000, rssBytes(pid)]);
      await sleep(1000);
    }
  })();
  say(`load: wrk -t2 -c${CONNECTIONS} -d${DURATION}s, static file and proxied route alternating`);
  const out = await new Deno.Command("wrk", {
    args: [
      "-t2",
      `-c${CONNECTIONS}`,
      `-d${DURATION}s`,
      "--latency",
      "-s",
      `${dir.path}/paths.lua`,
      srv.url,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  sampling = false;
  await sampler;
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const fdAfterLoad = fdCount(pid);
  await sleep(2000);
  const fdIdle = fdCount(pid);
  await back.close();
  await sleep(1000);
  const fdNoBackend = fdCount(pid);

  const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? 0);
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(
    text,
  );
  const errors = socketErrors ? socketErrors.slice(1).map(Number) : [0, 0, 0, 0];
  const non2xx = num(/Non-2xx or 3xx responses: (\d+)/);
  const requests = num(/(\d+) requests in/);
  const rps = num(/Requests\/sec:\s+([\d.]+)/);
  const perPath = /PERPATH static=(\d+) static_non2xx=(\d+) proxied=(\d+) proxied_non2xx=(\d+)/
    .exec(text)?.slice(1).map(Number) ?? [0, 0, 0, 0];
  const latency = ["50%", "90%", "99%"].map((p) =>
    // At the start of a line: a "75.50%" column elsewhere must not match.
    `${p} ${new RegExp(`^\\s*${p}\\s+(\\S+)`, "m").exec(text)?.[1] ?? "?"}`
  );
  const at10 = samples.find(([t]) => t >= 10)?.[1] ?? samples[0]?.[1] ?? 0;
  const end = samples[samples.length - 1]?.[1] ?? 0;
  const peak = Math.max(...samples.map(([, r]) => r));
  const growth = at10 ? (end - at10) / at10 : 0;
  const errorSum = errors.reduce((a, b) => a + b, 0);
  if (errorSum) problems.push(`load: socket errors ${errors.join("/")}`);
  if (non2xx || perPath[1] || perPath[3]) problems.push(`load: ${non2xx} non-2xx answers`);
  if (growth > 0.1) problems.push(`load: RSS grew ${(growth * 100).toFixed(1)}% after 10 s`);
  const proxied = reverseProxy ? "`server.reverse_proxy`" : "V2 `proxy_pass`";
  sections.push(`## Sustained load

\`wrk -t2 -c${CONNECTIONS} -d${DURATION}s\` against the CLI server (HTTP, access log off), each
connection alternating a 4 KiB static file and a route proxied by ${proxied} to a Deno.serve
backend in the script's process. Two shared cores run wrk, the server and the backend together.

| figure | value |
| --- | --- |
| requests | ${requests} (${rps.toFixed(0)}/s): static ${perPath[0]}, proxied ${perPath[2]} |
| latency | ${latency.join(", ")} |
| socket errors (connect/read/write/timeout) | ${errors.join(" / ")} |
| non-2xx answers | ${non2xx} (static ${perPath[1]}, proxied ${perPath[3]}) |
| server RSS before load | ${((samples[0]?.[1] ?? 0) / MiB).toFixed(1)} MiB |
| server RSS after 10 s → end (peak) | ${(at10 / MiB).toFixed(1)} → ${
    (end / MiB).toFixed(1)
  } MiB (${(peak / MiB).toFixed(1)}), ${growth >= 0 ? "+" : ""}${(growth * 100).toFixed(1)}% |
| server file descriptors before / right after / 2 s later / backend stopped | ${fdBefore} / ${fdAfterLoad} / ${fdIdle} / ${fdNoBackend} |
`);
  say(text);
  say(`load: RSS ${(at10 / MiB).toFixed(1)} → ${(end / MiB).toFixed(1)} MiB`);
}

// ---------------------------------------------------------------- graceful shutdown

async function shutdownPhase() {
  await using dir = await tempDir();
  const root = await site(dir.path);
  const back = backend();
  const configPath = await writeConfig(dir.path, {
    ...proxyConfig("/api", back.port),
    http: { static_dir: root },
    server: { shutdown_timeout: 10, ...(proxyConfig("/api", back.port).server ?? {}) },
    logging: { access_log: false, level: "INFO" },
  });
  const srv = await spawnCli(["-c", configPath, "-p", "0"], { cwd: dir.path });
  let signalAt = Infinity;
  const results: { start: number; end: number; ok: boolean; why: string; slow: boolean }[] = [];
  let stop = false;
  const worker = async (slow: boolean) => {
    const client = Deno.createHttpClient({});
    while (!stop) {
      const start = performance.now();
      if (start > signalAt + 500) break;
      try {
        const res = await fetch(`${srv.url}${slow ? "/api/slow" : "/file.txt"}`, { client });
        await res.text();
        results.push({
          start,
          end: performance.now(),
          ok: res.status === 200,
          why: `${res.status}`,
          slow,
        });
      } catch (e) {
        results.push({
          start,
          end: performance.now(),
          ok: false,
          why: String(e).split("\n")[0],
          slow,
        });
        await sleep(20);
      }
    }
    client.close();
  };
  const workers = [
    ...Array.from({ length: 20 }, () => worker(true)),
    ...Array.from({ length: 10 }, () => worker(false)),
  ];
  await sleep(2000);
  signalAt = performance.now();
  const exit = srv.stop("SIGTERM");
  const code = await exit;
  const exitedAt = performance.now();
  stop = true;
  await Promise.all(workers);
  back.close();
  // Accepted before the signal: the slow requests already waiting on the backend (started at
  // least 50 ms before it, so their request had reached the server).
  const inFlight = results.filter((r) => r.slow && r.start < signalAt - 50 && r.end > signalAt);
  const inFlightOk = inFlight.filter((r) => r.ok).length;
  const after = results.filter((r) => r.start >= signalAt);
  const refused = after.filter((r) => !r.ok).length;
  const lostBefore = results.filter((r) => r.start < signalAt - 50 && !r.ok);
  // Sent in the last 50 ms before the signal: on the wire, or not yet read, when it came.
  const racing = results.filter((r) => r.start >= signalAt - 50 && r.start < signalAt);
  if (inFlightOk !== inFlight.length || lostBefore.length) {
    problems.push(
      `shutdown: ${
        inFlight.length - inFlightOk
      } in-flight and ${lostBefore.length} earlier requests failed`,
    );
  }
  sections.push(`## Graceful shutdown under load

30 clients (20 on a proxied route that answers after 300 ms, 10 on a static file) for 2 s, then
SIGTERM to the CLI server (\`shutdown_timeout: 10\`).

| figure | value |
| --- | --- |
| requests before the signal | ${
    results.filter((r) => r.start < signalAt).length
  }, failed ${lostBefore.length} |
| in flight at the signal (proxied, 300 ms) | ${inFlight.length}, completed with 200: ${inFlightOk} |
| process exit after the signal | ${(exitedAt - signalAt).toFixed(0)} ms, status ${code} |
| requests sent in the 50 ms before the signal | ${racing.length}, failed ${
    racing.filter((r) => !r.ok).length
  } |
| requests started after the signal | ${after.length}, refused ${refused} (listener closed, as expected) |
${
    lostBefore.length
      ? `\nFailures: ${lostBefore.slice(0, 5).map((r) => r.why).join("; ")}\n`
      : ""
  }`);
  say(`shutdown: ${inFlightOk}/${inFlight.length} in-flight completed, exit ${code}`);
}

// ---------------------------------------------------------------- reloads

async function reloadPhase() {
  await using dir = await tempDir();
  const root = await site(dir.path);
  const certs = await makeCerts(dir.path);
  const back = backend();
  const base = {
    ...proxyConfig("/api", back.port),
    http: { static_dir: root },
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key },
    logging: { access_log: false, level: "INFO" },
  };
  const configPath = await writeConfig(dir.path, base);
  await using srv = await spawnCli(["-c", configPath, "-p", "0"], { cwd: dir.path });
  const pid = srv.process.pid;
  const url = `https://localhost:${new URL(srv.url).port}/file.txt`;
  const proxied = url.replace("/file.txt", "/api/x");
  const loops = [
    ...Array.from({ length: 3 }, () => clientLoop(url, certs.caPem, false)),
    ...Array.from({ length: 2 }, () => clientLoop(proxied, certs.caPem, false)),
    ...Array.from({ length: 2 }, () => clientLoop(url, certs.caPem, true)),
  ];
  const steps: string[] = [];
  await sleep(1500);
  // 1. a configuration change (a redirect added), by SIGHUP
  await writeConfig(dir.path, {
    ...base,
    server: { ...base.server, redirect_instructions: [{ "/old": "/new" }] },
  });
  Deno.kill(pid, "SIGHUP");
  await srv.waitFor("reloaded configuration", 10_000);
  steps.push("SIGHUP with a changed configuration");
  await sleep(1500);
  // 2. a new certificate written over the files: picked up by the watcher
  const fresh = await makeCerts(dir.path, { name: "renewed" });
  await Deno.writeTextFile(certs.key, await Deno.readTextFile(fresh.key));
  await Deno.writeTextFile(certs.cert, await Deno.readTextFile(fresh.cert));
  await srv.waitFor("certificate reloaded", 10_000);
  steps.push("certificate and key replaced on disk");
  await sleep(1500);
  // 3. SIGHUP again with the certificate unchanged
  Deno.kill(pid, "SIGHUP");
  await sleep(1500);
  steps.push("SIGHUP with nothing changed");
  const counts = await Promise.all(loops.map(async (l) => {
    await l.stop();
    return { ok: l.ok, failures: l.failures, resets: l.resets };
  }));
  await back.close();
  const ok = counts.reduce((n, c) => n + c.ok, 0);
  const failures = counts.flatMap((c) => c.failures);
  const resets = counts.flatMap((c) => c.resets);
  const migrate = (() => {
    try {
      return Deno.readTextFileSync("/proc/sys/net/ipv4/tcp_migrate_req").trim();
    } catch {
      return "unknown";
    }
  })();
  if (failures.length) problems.push(`reload: ${failures.length} failed requests`);
  sections.push(`## Certificate and configuration reload under load

HTTPS CLI server; 3 clients on kept-alive connections to a static file, 2 to a proxied route, and 2
opening a new connection per request, for about 6 s, while: ${steps.join("; ")}.

| figure | value |
| --- | --- |
| successful requests | ${ok} |
| failed requests | ${failures.length}${
    failures.length ? ` (${failures.slice(0, 3).join("; ")})` : ""
  } |
| new connections reset in a closing listener's accept queue | ${resets.length} (net.ipv4.tcp_migrate_req=${migrate}; see README, HTTPS) |
| server file descriptors at the end | ${fdCount(pid)} |
`);
  say(`reload: ${ok} ok, ${failures.length} failed, ${resets.length} resets`);
}

// ---------------------------------------------------------------- TLS audit

async function tlsPhase() {
  const testssl = hasCommand("testssl") ?? hasCommand("testssl.sh");
  if (!testssl) {
    problems.push("tls: testssl.sh is not installed (apt-get install testssl.sh)");
    return;
  }
  await using dir = await tempDir();
  const root = await site(dir.path);
  const certs = await makeCerts(dir.path);
  const configPath = await writeConfig(dir.path, {
    http: { static_dir: root },
    ssl: {
      enabled: true,
      cert_file: certs.cert,
      key_file: certs.key,
      hsts: "max-age=31536000; includeSubDomains",
    },
    logging: { access_log: false, level: "INFO" },
  });
  await using srv = await spawnCli(["-c", configPath, "-p", "0"], { cwd: dir.path });
  const port = new URL(srv.url).port;
  say(`tls: testssl -p -s -f -h -S against 127.0.0.1:${port}`);
  const started = performance.now();
  const out = await new Deno.Command(testssl, {
    args: [
      "--quiet",
      "--color",
      "0",
      "--warnings",
      "off",
      "--sneaky",
      "--add-ca",
      certs.ca,
      "--jsonfile",
      `${dir.path}/testssl.json`,
      "-p",
      "-s",
      "-f",
      "-h",
      "-S",
      `localhost:${port}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const seconds = (performance.now() - started) / 1000;
  let findings: { id: string; severity: string; finding: string }[] = [];
  try {
    findings = JSON.parse(await Deno.readTextFile(`${dir.path}/testssl.json`));
  } catch {
    problems.push(
      `tls: testssl produced no JSON: ${new TextDecoder().decode(out.stderr).slice(-300)}`,
    );
    return;
  }
  // testssl 3.0 (Debian 12) says PFS where later versions say FS.
  const get = (id: string) =>
    findings.find((f) => f.id === id) ?? findings.find((f) => f.id === id.replace(/^FS/, "PFS"));
  const want: [string, RegExp, string][] = [
    ["SSLv2", /not offered/, "not offered"],
    ["SSLv3", /not offered/, "not offered"],
    ["TLS1", /not offered/, "not offered"],
    ["TLS1_1", /not offered/, "not offered"],
    ["TLS1_2", /offered/, "offered"],
    ["TLS1_3", /offered/, "offered"],
    ["cipherlist_NULL", /not offered/, "not offered"],
    ["cipherlist_aNULL", /not offered/, "not offered"],
    ["cipherlist_EXPORT", /not offered/, "not offered"],
    ["cipherlist_LOW", /not offered/, "not offered"],
    ["cipherlist_3DES_IDEA", /not offered/, "not offered"],
    ["cipherlist_AVERAGE", /not offered/, "not offered"],
    ["cipherlist_STRONG", /offered/, "offered"],
    ["FS", /offered/, "offered"],
    ["HSTS_time", /./, "present"],
  ];
  const rows = want.map(([id, re, expect]) => {
    const f = get(id);
    const ok = f !== undefined && re.test(f.finding) &&
      !/^not offered/.test(expect === "offered" ? f.finding : "");
    if (!ok) problems.push(`tls: ${id} is "${f?.finding ?? "missing"}", expected ${expect}`);
    return `| ${id} | ${f?.finding ?? "(no finding)"} | ${f?.severity ?? ""} | ${
      ok ? "ok" : "**not ok**"
    } |`;
  });
  const weak = findings.filter((f) =>
    /^(cipher_|cipherorder|P?FS|cipherlist_|SSL|TLS1)/.test(f.id) &&
    /HIGH|CRITICAL|MEDIUM/.test(f.severity)
  );
  for (const w of weak) problems.push(`tls: ${w.id} rated ${w.severity}: ${w.finding}`);
  const extra = [
    "HSTS_subdomains",
    "ALPN_HTTP2",
    "ALPN",
    "FS_ciphers",
    "FS_ECDHE_curves",
    "TLS_session_ticket",
    "cert_keySize",
    "cert_signatureAlgorithm",
  ]
    .map((id) => get(id))
    .filter((f) => f !== undefined)
    .map((f) => `| ${f!.id} | ${f!.finding} | ${f!.severity} | |`);
  sections.push(`## TLS audit (testssl.sh)

\`testssl --add-ca <test CA> -p -s -f -h -S localhost:PORT\` (Debian's testssl.sh) against the CLI
server with an ECDSA P-256 certificate and \`ssl.hsts\` set; ${seconds.toFixed(0)} s.

| check | finding | severity | |
| --- | --- | --- | --- |
${rows.join("\n")}
${extra.join("\n")}

Findings rated MEDIUM or worse on protocols, ciphers or forward secrecy: ${weak.length}. Other
findings rated MEDIUM or worse, with why they do not concern the server:

${
    findings.filter((f) => /HIGH|CRITICAL|MEDIUM/.test(f.severity) && !weak.includes(f)).map((f) =>
      `- ${f.id} (${f.severity}): ${f.finding}${
        f.id.startsWith("cert")
          ? " — a property of the 30-day test certificate"
          : f.id === "security_headers"
          ? " — no security headers configured in this run (the security extension adds them)"
          : ""
      }`
    ).join("\n")
  }
`);
  say(`tls: ${rows.filter((r) => r.endsWith("| ok |")).length}/${rows.length} as expected`);
}

// ---------------------------------------------------------------- figures from the tests

async function testsPhase() {
  say("tests: hostile, peers and browser test files");
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "test",
      "--unstable-net",
      "--allow-all",
      "tests/hostile_test.ts",
      "tests/peers_test.ts",
      "tests/browser_test.ts",
    ],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const figures = text.split("\n").filter((l) =>
    /^(traversal|fuzz|auth timing|smuggling|header injection|slowloris|slow readers|broken backends|reverse_proxy broken|after |chromium|.*: (400|closed))/
      .test(l) && !/ \.\.\.( ok|$)/.test(l)
  );
  const summary = /^(ok|FAILED) \|.*$/m.exec(text)?.[0] ?? "no summary";
  if (!out.success) problems.push(`tests: ${summary}`);
  sections.push(`## Figures from the test suite

\`deno test tests/hostile_test.ts tests/peers_test.ts tests/browser_test.ts\`: ${summary}

\`\`\`
${figures.join("\n")}
\`\`\`
`);
}

// ---------------------------------------------------------------- main

// ---------------------------------------------------------------- leak

/** Runs `job` `n` times, `parallel` at a time; failures are counted, not thrown. */
async function times(n: number, parallel: number, job: (i: number) => Promise<void>) {
  let next = 0;
  let failed = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < n) {
      try {
        await job(next++);
      } catch {
        failed++;
      }
    }
  }));
  return failed;
}

const enc = new TextEncoder();

/** Runs a command to its end; its exit code. */
async function run(cmd: string, argv: string[]) {
  const out = await new Deno.Command(cmd, { args: argv, stdout: "null", stderr: "null" }).output();
  return out.code;
}

async function leakPhase() {
  for (const tool of ["wrk", "h2load"]) {
    if (!hasCommand(tool)) return void problems.push(`leak: ${tool} is not installed`);
  }
  await using dir = await tempDir();
  const root = await site(dir.path);
  const certs = await makeCerts(dir.path);
  await using ws = webSocketBackend();
  const common = {
    server: {
      reverse_proxy: [{ path: "/ws", host: "127.0.0.1", port: ws.port, websocket: true }],
    },
    http: { static_dir: root },
    logging: { access_log: false, level: "INFO" },
  };
  await Deno.mkdir(`${dir.path}/tls`);
  const plainConfig = await writeConfig(dir.path, common);
  const tlsConfig = await writeConfig(`${dir.path}/tls`, {
    ...common,
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key },
  });
  await using plain = await spawnCli(["-c", plainConfig, "-p", "0"], { cwd: dir.path });
  await using secure = await spawnCli(["-c", tlsConfig, "-p", "0"], { cwd: dir.path });
  const plainPort = Number(new URL(plain.url).port);
  const tlsPort = Number(new URL(secure.url).port);
  using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  const warm = async () => {
    await (await fetch(`${plain.url}/index.html`)).text();
    await (await fetch(`https://localhost:${tlsPort}/index.html`, { client })).text();
  };
  await warm();
  await sleep(2000);
  const measure = () => ({
    fd: [fdCount(plain.process.pid), fdCount(secure.process.pid)],
    rss: [rssBytes(plain.process.pid), rssBytes(secure.process.pid)],
  });
  const idle = measure();
  const quarter = Math.round(ABRUPT / 4);
  const rows: string[] = [];
  const row = (what: string, failed: string) => {
    const m = measure();
    const line = `| ${what} | ${failed} | ${m.fd[0]} / ${m.fd[1]} | ${
      (m.rss[0] / MiB).toFixed(0)
    } / ${(m.rss[1] / MiB).toFixed(0)} |`;
    rows.push(line);
    say(`leak: ${line}`);
  };
  row("idle, before", "");

  const half = enc.encode("GET /index.html HTTP/1.1\r\nHost: a\r\nX-a: ");
  const upgrade = enc.encode(
    "GET /ws/echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
  );
  const runs = Math.ceil(quarter / 1000);
  let failed = 0;
  // Twice: what the first round leaves is what memory settles at, not a growth per connection.
  for (const round of [1, 2]) {
    // Plain: half a request head, then the client closes.
    failed = await times(quarter, 100, async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: plainPort });
      await c.write(half);
      c.close();
    });
    row(`${round}: ${quarter} plain, closed mid-head`, String(failed));

    // TLS, as wrk ends its connections: no close_notify, answers in flight.
    failed = 0;
    for (let i = 0; i < runs; i++) {
      failed += await run("wrk", [
        "-t1",
        "-c1000",
        "-d1s",
        `https://localhost:${tlsPort}/index.html`,
      ]);
    }
    row(`${round}: ${runs * 1000} TLS by wrk (no close_notify)`, `${failed} wrk runs failed`);

    // HTTP/2 over TLS: h2load with a new connection per client.
    failed = 0;
    for (let i = 0; i < runs; i++) {
      failed += await run("h2load", [
        "-n",
        "1000",
        "-c",
        "1000",
        "-m",
        "1",
        `https://localhost:${tlsPort}/index.html`,
      ]);
    }
    row(`${round}: ${runs * 1000} h2 by h2load`, `${failed} h2load runs failed`);

    // WebSockets through the proxy: upgraded, then the client's socket just closes.
    failed = await times(quarter, 100, async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: plainPort });
      try {
        await c.write(upgrade);
        const buf = new Uint8Array(512);
        const n = await c.read(buf);
        if (!n || !new TextDecoder().decode(buf.subarray(0, n)).startsWith("HTTP/1.1 101")) {
          throw new Error("not upgraded");
        }
      } finally {
        c.close();
      }
    });
    row(`${round}: ${quarter} WebSockets, closed without a close frame`, String(failed));
    await sleep(5000);
    await warm();
    row(`${round}: 5 s later`, "");
    // The runtime keeps a WebSocket that went away without a close frame until its ping timer
    // fires, 30 s after the last frame.
    await sleep(30_000);
    await warm();
    row(`${round}: 35 s later`, "");
  }
  const end = measure();
  if (end.fd[0] > idle.fd[0] + 2 || end.fd[1] > idle.fd[1] + 2) {
    problems.push(`leak: descriptors ${idle.fd.join("/")} before, ${end.fd.join("/")} after`);
  }
  sections.push(`## Connections ended abruptly

Twice ${quarter * 4} connections, a quarter of each kind, against a plain and an HTTPS denoserve
(defaults, \`reverse_proxy\` with \`websocket: true\` to a WebSocket echo backend). Server
descriptors and RSS after each kind (plain / HTTPS); "5 s later" and "35 s later" after one more
request each (the runtime keeps a WebSocket closed without a close frame until its 30 s ping timer
fires).

| after | failures | descriptors | RSS MiB |
| --- | --- | --- | --- |
${rows.join("\n")}
`);
}

// ---------------------------------------------------------------- flood

async function floodPhase() {
  // The soft open-files limit raised to the hard one, for this process (the clients) and the
  // server, which inherits it.
  const hard = /Max open files\s+\d+\s+(\d+)/.exec(await Deno.readTextFile("/proc/self/limits"))
    ?.[1];
  await run("prlimit", ["--pid", String(Deno.pid), `--nofile=${hard}:${hard}`]);
  const limit = Number(
    /Max open files\s+(\d+)/.exec(await Deno.readTextFile("/proc/self/limits"))?.[1],
  );
  if (!(limit >= 19_000)) return void problems.push(`flood: open files ${limit}, 19000 needed`);
  const STALLED = 18_000;
  await using dir = await tempDir();
  const root = await site(dir.path);
  const certs = await makeCerts(dir.path);
  const configPath = await writeConfig(dir.path, {
    server: { handshake_timeout: 5, max_connections: 40_000 },
    http: { static_dir: root },
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key },
    logging: { access_log: false, level: "INFO" },
  });
  await using srv = await spawnCli(["-c", configPath, "-p", "0"], { cwd: dir.path });
  const port = Number(new URL(srv.url).port);
  using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  const conns: Deno.Conn[] = [];
  const started = performance.now();
  for (let i = 0; i < STALLED; i++) {
    conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
  }
  const opened = performance.now() - started;
  // Each one's read ends (null or a reset) when the server closes it.
  let closed = 0;
  for (const c of conns) {
    c.read(new Uint8Array(16)).catch(() => null).then(() => closed++);
  }
  const served = await fetch(`https://localhost:${port}/index.html`, { client })
    .then((r) => r.text()).then(() => "answered", (e) => `failed: ${e}`);
  const at: string[] = [];
  for (const s of [3, 10, 20, 30]) {
    await sleep(Math.max(0, started + opened + s * 1000 - performance.now()));
    at.push(`| ${s} s | ${STALLED - closed} |`);
    say(`flood: ${s} s after the last connection: ${STALLED - closed} of ${STALLED} still open`);
  }
  for (const c of conns) {
    try {
      c.close();
    } catch { /* closed */ }
  }
  if (STALLED - closed > 0) {
    problems.push(`flood: ${STALLED - closed} stalled handshakes open at 30 s`);
  }
  sections.push(`## Stalled TLS handshakes

${STALLED} TCP connections to the HTTPS port that never start TLS, opened in ${
    (opened / 1000).toFixed(1)
  } s, with \`handshake_timeout: 5\` and room for all of them (\`max_connections: 40000\`, open
files ${limit}). A normal HTTPS request meanwhile: ${served}. Still open, counted from the last
one's connect:

| after | still open |
| --- | ---: |
${at.join("\n")}
`);
}

const started = new Date();
const phases: [string, () => Promise<void>][] = [
  ["tests", testsPhase],
  ["load", loadPhase],
  ["shutdown", shutdownPhase],
  ["reload", reloadPhase],
  ["tls", tlsPhase],
  ["leak", leakPhase],
  ["flood", floodPhase],
];
for (const [name, run] of phases) {
  if (!PHASES.has(name)) continue;
  const first = sections.length;
  try {
    await run();
    const stamp = `_Measured ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC._`;
    for (let i = first; i < sections.length; i++) {
      sections[i] = sections[i].replace("\n\n", `\n\n${stamp}\n\n`);
    }
  } catch (e) {
    problems.push(`${name}: ${String(e).split("\n")[0]}`);
    say(`${name} failed: ${e instanceof Error ? e.stack : e}`);
  }
}
const cpu = /model name\s*:\s*(.*)/.exec(await Deno.readTextFile("/proc/cpuinfo"))?.[1] ?? "";
const report = `# Reliability figures

Written by \`deno task reliability\`${QUICK ? " --quick" : ""} on ${
  started.toISOString().slice(0, 16)
} UTC:
Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores (${cpu}), loopback only, machine
shared with other work. The proxied route uses ${
  reverseProxy
    ? "`server.reverse_proxy`"
    : "a V2 `proxy_pass` location (reverse_proxy not in this build)"
}.

${
  problems.length
    ? `**Problems:**\n\n${problems.map((p) => `- ${p}`).join("\n")}\n`
    : "No problems found."
}

${sections.join("\n")}`;
const target = `${ROOT}/bench/reliability.md`;
if (QUICK) console.log(report);
else if (args.values.only) {
  // Some phases only: their sections replace the same ones in the file, the others stay.
  const old = await Deno.readTextFile(target).catch(() => "");
  const fresh = new Map(sections.map((s) => [s.slice(0, s.indexOf("\n")), s]));
  const kept = old.split(/\n(?=## )/).slice(1).map((s) => s.trimEnd() + "\n");
  const merged = kept.map((s) => fresh.get(s.slice(0, s.indexOf("\n"))) ?? s);
  for (const [title, s] of fresh) if (!kept.some((k) => k.startsWith(title + "\n"))) merged.push(s);
  const head = report.slice(0, report.indexOf("\n## ")).replace(
    "Written by",
    `Each section says when it was measured; the last run (${[...PHASES].join(", ")}) was`,
  );
  await Deno.writeTextFile(target, `${head.trimEnd()}\n\n${merged.join("\n")}`);
  say("updated bench/reliability.md");
} else {
  await Deno.mkdir(`${ROOT}/bench`, { recursive: true });
  await Deno.writeTextFile(target, report);
  say("wrote bench/reliability.md");
}
Deno.exit(problems.length ? 1 : 0);
