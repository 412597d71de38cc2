/**
 * The `monitoring` extension: Prometheus metrics scraped from the real server and read with a
 * parser of the text format, health answers over reverse-proxy pools, and the configuration
 * errors and warnings of the extension.
 */
import assert from "node:assert/strict";
import { parse } from "yaml";
import { validate } from "../src/config/load.ts";
import { watchReload } from "../src/app/reload.ts";
import { echoBackend } from "./support/backends.ts";
import { makeCerts } from "./support/certs.ts";
import { runCli } from "./support/cli.ts";
import { get } from "./support/clients.ts";
import { configError } from "./support/config.ts";
import { ROOT, tempDir, writeFiles } from "./support/files.ts";
import { type Exposition, parseExposition, valueOf } from "./support/prometheus.ts";
import { bootRaw, freePort, startTestServer } from "./support/servers.ts";
import { eventually } from "./support/wait.ts";

// From Prometheus's documentation of the text exposition format.
const DOC_EXAMPLE = String.raw`# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="0.1"} 33444
http_request_duration_seconds_bucket{le="0.2"} 100392
http_request_duration_seconds_bucket{le="0.5"} 129389
http_request_duration_seconds_bucket{le="1"} 133988
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320

# Finally a summary, which has a complex representation, too:
# HELP rpc_duration_seconds A summary of the RPC duration in seconds.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.01"} 3102
rpc_duration_seconds{quantile="0.05"} 3272
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds{quantile="0.9"} 9001
rpc_duration_seconds{quantile="0.99"} 76656
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
`;

Deno.test("prometheus parser: reads the example of the exposition format documentation", () => {
  const e = parseExposition(DOC_EXAMPLE);
  assert.equal(e.samples.length, 20);
  assert.equal(e.types.get("http_requests_total"), "counter");
  assert.equal(e.types.get("http_request_duration_seconds"), "histogram");
  assert.equal(e.types.get("rpc_duration_seconds"), "summary");
  assert.equal(e.help.get("http_requests_total"), "The total number of HTTP requests.");
  assert.deepEqual(e.samples[0], {
    name: "http_requests_total",
    labels: { method: "post", code: "200" },
    value: 1027,
    timestamp: 1395066363000,
  });
  assert.equal(valueOf(e, "http_requests_total", { code: "400" }), 3);
  assert.equal(valueOf(e, "http_requests_total"), 1030);
  assert.deepEqual(e.samples[2].labels, {
    path: "C:\\DIR\\FILE.TXT",
    error: 'Cannot find file:\n"FILE.TXT"',
  });
  assert.equal(e.samples[2].value, 1.458255915e9);
  assert.equal(valueOf(e, "metric_without_timestamp_and_labels"), 12.47);
  assert.deepEqual(e.samples[4], {
    name: "something_weird",
    labels: { problem: "division by zero" },
    value: Infinity,
    timestamp: -3982045,
  });
  assert.equal(valueOf(e, "http_request_duration_seconds_bucket", { le: "+Inf" }), 144320);
  assert.equal(valueOf(e, "rpc_duration_seconds_sum"), 1.7560473e7);
});

Deno.test("prometheus parser: refuses what the format does not allow", () => {
  for (
    const bad of [
      "x{a=1} 2",
      'x{a="1} 2',
      'x{a="\\t"} 2',
      "x",
      "x one",
      "# TYPE x meter",
      "1x 2",
      'x{a="1",a="2"} 3',
    ]
  ) {
    assert.throws(() => parseExposition(bad), Error, bad);
  }
});

const scrape = async (url: string): Promise<Exposition> => {
  const res = await get(url);
  assert.equal(res.status, 200, res.body);
  assert.match(res.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
  return parseExposition(res.body);
};

const monitoring = (config: Record<string, unknown>) => ({
  version: 2,
  extensions: [{ type: "monitoring", config }],
});

Deno.test("metrics: counters by route kind and status class move as requests are answered", async () => {
  await using dir = await tempDir();
  const kib = "x".repeat(1024);
  await writeFiles(dir.path, { "site/k.txt": kib });
  await using backend = echoBackend();
  await using srv = await startTestServer({
    version: 2,
    http: { static_dir: `${dir.path}/site` },
    server: {
      reverse_proxy: [{ path: "/api", host: "127.0.0.1", port: backend.port }],
      redirect_instructions: [{ "/old": "/k.txt" }],
    },
    extensions: [
      { type: "monitoring", config: { metrics: { enabled: true } } },
      { type: "routing", config: { regex_locations: { "=/ping": { return: "200 pong" } } } },
    ],
  });
  const at = `${srv.url}/metrics`;
  const before = await scrape(at);
  const n = (e: Exposition, route: string, status: string) =>
    valueOf(e, "denoserve_requests_total", { route, status }) ?? 0;
  const bytes = (e: Exposition, route: string) =>
    valueOf(e, "denoserve_response_bytes_total", { route }) ?? 0;

  // Bytes sent, so not compressed here: a compressed answer counts its compressed length.
  const identity = { headers: { "accept-encoding": "identity" } };
  for (let i = 0; i < 3; i++) assert.equal((await get(`${srv.url}/k.txt`, identity)).body, kib);
  assert.equal((await get(`${srv.url}/missing.txt`)).status, 404);
  assert.equal((await get(`${srv.url}/api/x`)).status, 200);
  assert.equal((await get(`${srv.url}/old`)).status, 302);
  assert.equal((await get(`${srv.url}/ping`)).body, "pong");
  const after = await scrape(at);

  assert.equal(after.types.get("denoserve_requests_total"), "counter");
  assert.equal(after.types.get("denoserve_request_duration_seconds"), "histogram");
  assert.equal(n(after, "static", "2xx") - n(before, "static", "2xx"), 3);
  assert.equal(n(after, "static", "4xx") - n(before, "static", "4xx"), 1);
  assert.equal(n(after, "proxy", "2xx") - n(before, "proxy", "2xx"), 1);
  assert.equal(n(after, "redirect", "3xx") - n(before, "redirect", "3xx"), 1);
  assert.equal(n(after, "location", "2xx") - n(before, "location", "2xx"), 1);
  // The first scrape is counted too, under its own kind.
  assert.ok(n(after, "metrics", "2xx") >= 1);
  // The three files (and the 404 page, when its length is known).
  const sent = bytes(after, "static") - bytes(before, "static");
  assert.ok(sent >= 3 * 1024, `${sent}`);
  const count = (e: Exposition) =>
    valueOf(e, "denoserve_request_duration_seconds_count", { route: "static" }) ?? 0;
  assert.equal(count(after) - count(before), 4);
  const inf = (e: Exposition) =>
    valueOf(e, "denoserve_request_duration_seconds_bucket", { route: "static", le: "+Inf" }) ?? 0;
  assert.equal(inf(after) - inf(before), 4);

  const origin = `http://127.0.0.1:${backend.port}`;
  assert.equal(valueOf(after, "denoserve_backend_up", { backend: origin, path: "/api" }), 1);
  assert.equal(valueOf(after, "denoserve_backend_in_flight_requests", { backend: origin }), 0);
  assert.equal(valueOf(after, "denoserve_certificate_expiry_seconds"), undefined, "no TLS");

  // Scrapes are logged as any request is.
  srv.log.flush();
  assert.ok(srv.log.lines.some((l) => l.startsWith("ACCESS") && l.includes("/metrics")));
});

Deno.test("metrics: a custom endpoint, answered before a static file of that name", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/internal/metrics": "a file" });
  await using srv = await startTestServer({
    ...monitoring({ metrics: { enabled: true, endpoint: "/internal/metrics" } }),
    http: { static_dir: `${dir.path}/site` },
  });
  const e = await scrape(`${srv.url}/internal/metrics`);
  assert.ok(e.types.has("denoserve_requests_total"));
  assert.equal((await get(`${srv.url}/metrics`)).status, 404);
  assert.equal((await get(`${srv.url}/internal/metrics`, { method: "POST" })).status, 405);
});

Deno.test("metrics: off without the extension or with enabled: false", async () => {
  for (const raw of [{}, monitoring({ metrics: { enabled: false } })]) {
    await using srv = await startTestServer(raw);
    assert.equal((await get(`${srv.url}/metrics`)).status, 404);
  }
});

Deno.test("metrics: reloads by result, and seconds until the certificate expires", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/a.txt": "A" });
  const notAfter = new Date(Date.now() + 10 * 86400_000);
  const certs = await makeCerts(dir.path, { notAfter });
  const raw = {
    ...monitoring({ metrics: {} }),
    http: { static_dir: `${dir.path}/site` },
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key },
  };
  await using srv = await startTestServer(raw);
  using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  const at = `${srv.url.replace("127.0.0.1", "localhost")}/metrics`;
  const read = async () => parseExposition(await (await fetch(at, { client })).text());
  const before = await read();
  const expiry = valueOf(before, "denoserve_certificate_expiry_seconds", { file: certs.cert });
  assert.ok(expiry !== undefined && expiry > 9 * 86400 && expiry <= 10 * 86400, `${expiry}`);

  using reloader = watchReload({
    server: srv.server,
    log: srv.log,
    signal: null,
    prepare: () => bootRaw({ ...structuredClone(raw), server: srv.config.server }, srv.log),
  });
  assert.equal(await reloader.reload(), true);
  const after = await read();
  const reloads = (e: Exposition, result: string) =>
    valueOf(e, "denoserve_reloads_total", { result }) ?? 0;
  assert.equal(reloads(after, "ok") - reloads(before, "ok"), 1);
  assert.equal(reloads(after, "failed") - reloads(before, "failed"), 0);
});

Deno.test("metrics: open, accepted and timed-out connections of an HTTPS listener", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/a.txt": "A" });
  const certs = await makeCerts(dir.path);
  await using srv = await startTestServer({
    ...monitoring({ metrics: {} }),
    server: { handshake_timeout: 1 },
    http: { static_dir: `${dir.path}/site` },
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key },
  });
  using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  const at = `${srv.url.replace("127.0.0.1", "localhost")}/metrics`;
  const read = async () => parseExposition(await (await fetch(at, { client })).text());
  const open = (e: Exposition) => valueOf(e, "denoserve_connections_open", {});
  const accepted = (e: Exposition) => valueOf(e, "denoserve_connections_accepted_total", {});
  const timedOut = (e: Exposition) =>
    valueOf(e, "denoserve_connections_timed_out_total", { stage: "handshake" });
  const before = await read();
  // Three clients that finished their handshake and stay idle, one that never starts it.
  const idle = await Promise.all([1, 2, 3].map(async () => {
    const conn = await Deno.connectTls({
      hostname: "localhost",
      port: srv.server.addr.port,
      caCerts: [certs.caPem],
    });
    await conn.handshake();
    return conn;
  }));
  const silent = await Deno.connect({ hostname: "127.0.0.1", port: srv.server.addr.port });
  try {
    const during = await read();
    assert.equal(open(during)! - open(before)!, 4, "three idle clients and the silent one");
    assert.equal(accepted(during)! - accepted(before)!, 4);
    assert.ok(
      await eventually(() => srv.server.connections.stats.timedOut.handshake > 0, 10_000),
      "the silent client is closed by handshake_timeout",
    );
    const after = await read();
    assert.equal(timedOut(after)! - timedOut(before)!, 1);
    assert.equal(open(after)! - open(before)!, 3);
  } finally {
    for (const c of idle) c.close();
    silent.close();
  }
});

Deno.test("health: 200 while every pool has a backend up, 503 once one is down", async () => {
  await using backend = echoBackend();
  const dead = freePort();
  await using srv = await startTestServer({
    server: {
      reverse_proxy: [
        { path: "/live", host: "127.0.0.1", port: backend.port },
        { path: "/gone", host: "127.0.0.1", port: dead, fail_timeout: 3600 },
      ],
    },
    ...monitoring({
      health_checks: [
        { path: "/health", checks: ["database"] },
        { path: "/ready" },
      ],
    }),
  });
  const first = await get(`${srv.url}/health`);
  assert.equal(first.status, 200, first.body);
  assert.equal(first.headers.get("content-type"), "application/json");
  assert.deepEqual(JSON.parse(first.body), {
    status: "up",
    checks: {
      server: { status: "up" },
      "reverse_proxy[0] /live": {
        status: "up",
        backends: { [`http://127.0.0.1:${backend.port}`]: "up" },
      },
      "reverse_proxy[1] /gone": { status: "up", backends: { [`http://127.0.0.1:${dead}`]: "up" } },
      database: { status: "unknown" },
    },
  });

  // The closed backend fails to connect, and the pool marks it down.
  assert.equal((await get(`${srv.url}/gone/x`)).status, 502);
  for (const path of ["/health", "/ready"]) {
    const down = await get(`${srv.url}${path}`);
    assert.equal(down.status, 503, down.body);
    const report = JSON.parse(down.body);
    assert.equal(report.status, "down");
    assert.equal(report.checks["reverse_proxy[0] /live"].status, "up");
    assert.deepEqual(report.checks["reverse_proxy[1] /gone"], {
      status: "down",
      backends: { [`http://127.0.0.1:${dead}`]: "down" },
    });
    assert.equal("database" in report.checks, path === "/health");
  }
  assert.equal((await get(`${srv.url}/health`, { method: "HEAD" })).status, 503);
});

Deno.test("health: with no proxy, the server alone answers 200", async () => {
  await using srv = await startTestServer(monitoring({ health_checks: [{ path: "/health" }] }));
  const res = await get(`${srv.url}/health`);
  assert.equal(res.status, 200);
  assert.deepEqual(JSON.parse(res.body), { status: "up", checks: { server: { status: "up" } } });
});

Deno.test("monitoring config: unknown check names are warnings naming the key", () => {
  const { warnings } = validate(
    monitoring({ health_checks: [{ path: "/h", checks: ["server", "external_api"] }] }),
  );
  assert.equal(warnings.length, 1, warnings.join("\n"));
  assert.match(warnings[0], /extensions\[0\]\.config\.health_checks\[0\]\.checks\[1\]/);
  assert.match(warnings[0], /"external_api".*"unknown"/);
});

Deno.test("monitoring config: a metrics endpoint that is also a health path is refused", () => {
  const message = configError(monitoring({
    metrics: { enabled: true, endpoint: "/status" },
    health_checks: [{ path: "/status" }],
  }));
  assert.match(message, /extensions\[0\]\.config\.metrics\.endpoint/);
  assert.match(message, /health_checks\[0\]\.path/);
  assert.match(
    configError(monitoring({ health_checks: [{ path: "/h" }, { path: "/h" }] })),
    /extensions\[0\]\.config\.health_checks\[1\]\.path.*repeats \/h/,
  );
  assert.match(configError(monitoring({ metrics: { endpoint: "metrics" } })), /must start with/);
});

Deno.test("monitoring config: --test configuration exits 2 naming the colliding key", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": [
      "version: 2",
      "extensions:",
      "  - type: monitoring",
      "    config:",
      "      metrics:",
      "        enabled: true",
      "        endpoint: /health",
      "      health_checks:",
      "        - path: /health",
      "",
    ].join("\n"),
  });
  const out = await runCli(["-c", `${dir.path}/config.yaml`, "--test", "configuration"]);
  assert.equal(out.code, 2, out.stdout + out.stderr);
  assert.match(out.stdout + out.stderr, /config\.yaml:7:\d+: .*metrics\.endpoint/);
});

Deno.test("README: the monitoring example loads, warning about the two unknown checks", async () => {
  const readme = await Deno.readTextFile(`${ROOT}/README.md`);
  const start = readme.indexOf("## Monitoring");
  assert.ok(start > 0, "README has the monitoring section");
  const block = /```yaml\n([\s\S]*?)```/.exec(readme.slice(start));
  assert.ok(block);
  const { config, warnings } = validate(parse(block[1]) as Record<string, unknown>);
  assert.equal(warnings.length, 2, warnings.join("\n"));
  assert.match(warnings[0], /"database"/);
  assert.match(warnings[1], /"external_api"/);
  assert.equal(
    (config.extensions[0].config as { metrics: { endpoint: string } }).metrics.endpoint,
    "/internal/metrics",
  );
});

Deno.test("metrics: label values are escaped as the format requires", async () => {
  await using backend = echoBackend();
  const path = '/a"b\\c';
  await using srv = await startTestServer({
    server: { reverse_proxy: [{ path, host: "127.0.0.1", port: backend.port }] },
    ...monitoring({ metrics: {} }),
  });
  const e = await scrape(`${srv.url}/metrics`);
  assert.equal(valueOf(e, "denoserve_backend_up", { path }), 1);
});
