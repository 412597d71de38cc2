/**
 * Slow and broken peers against the real CLI server (a child process, so that its memory and
 * file descriptors can be read from /proc): slowloris, slow readers, and backends that hang,
 * reset, send garbage or close in the middle of a body.
 */
import assert from "node:assert/strict";
import { makeCerts } from "./support/certs.ts";
import { brokenBackend, serveBackend } from "./support/backends.ts";
import { type CliServer, spawnCli } from "./support/cli.ts";
import { closedWithin, rawRequest } from "./support/clients.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { fdCount, rssBytes } from "./support/proc.ts";
import { eventually } from "./support/wait.ts";

const enc = new TextEncoder();
const MiB = 1024 * 1024;

/** Starts the CLI with `config` (written as config.yaml in `dir`) on a free port. */
async function serve(dir: string, config: Record<string, unknown>): Promise<CliServer> {
  await Deno.writeTextFile(`${dir}/config.yaml`, JSON.stringify(config));
  return await spawnCli(["-c", `${dir}/config.yaml`, "-p", "0"], { cwd: dir });
}

const portOf = (url: string) => Number(new URL(url).port);

/** Waits until the server's descriptor count is back to `baseline` (or below); returns it. */
async function backToBaseline(pid: number, baseline: number, what: string) {
  const ok = await eventually(() => fdCount(pid) <= baseline, 5000);
  const now = fdCount(pid);
  console.log(`${what}: ${now} file descriptors (baseline ${baseline})`);
  assert.ok(ok, `${what}: ${now} file descriptors, baseline ${baseline}`);
}

/**
 * Backends behind /reset, /close and /garbage get the client a 502 (and /good/ still answers);
 * /midbody promised 100000 bytes and sent 1000, so the client must not get a complete answer.
 * Findings go into `report` when given.
 */
async function expectBrokenBackends(srv: CliServer, report?: string[]) {
  for (const name of ["reset", "close", "garbage"]) {
    const res = await fetch(`${srv.url}/${name}/x`);
    await res.body?.cancel();
    report?.push(`${name}: ${res.status}`);
    assert.equal(res.status, 502, name);
    assert.equal(await (await fetch(`${srv.url}/good/`)).text(), "good");
  }
  // Read raw, so that what the server sends is seen as is.
  const cut = await rawRequest(
    portOf(srv.url),
    "GET /midbody/x HTTP/1.1\r\nHost: a\r\n\r\n",
    3000,
  );
  const body = cut.text.slice(cut.text.indexOf("\r\n\r\n") + 4);
  report?.push(`mid-body: ${cut.status}, ${body.length} body bytes, then closed: ${cut.closed}`);
  assert.ok(cut.closed, "a cut body ends the client's connection");
  const length = cut.headers.find(([k]) => k === "content-length")?.[1];
  const chunked = cut.headers.some(([k, v]) => k === "transfer-encoding" && v === "chunked");
  // Either the length promised is not delivered, or the chunked stream never ends.
  assert.ok(
    (length !== undefined && body.length < Number(length)) ||
      (chunked && !body.endsWith("0\r\n\r\n")),
    `mid-body answer looked complete: ${cut.text.slice(0, 200)}`,
  );
}

/**
 * Sends `head` one byte every 100 ms on each of `conns`, never finishing it, and after 300 ms
 * times `count` normal requests made by `request`, 25 ms apart. Returns the server's descriptor
 * count once the trickle runs, and the times sorted.
 */
async function whileTrickling(
  conns: Deno.Conn[],
  head: Uint8Array,
  pid: number,
  count: number,
  request: () => Promise<void>,
): Promise<{ open: number; times: number[] }> {
  let stop = false;
  const trickle = Promise.all(conns.map(async (c, i) => {
    let at = 0;
    await new Promise((r) => setTimeout(r, i % 100));
    while (!stop) {
      try {
        await c.write(head.subarray(at % head.length, (at % head.length) + 1));
      } catch {
        return;
      }
      at++;
      await new Promise((r) => setTimeout(r, 100));
    }
  }));
  await new Promise((r) => setTimeout(r, 300));
  const open = fdCount(pid);
  const times: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const t = performance.now();
      await request();
      times.push(performance.now() - t);
      await new Promise((r) => setTimeout(r, 25));
    }
  } finally {
    stop = true;
    await trickle;
  }
  return { open, times: times.sort((a, b) => a - b) };
}

Deno.test("slowloris: 200 connections trickling headers do not stop a normal client", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/index.html": "home" });
  await using srv = await serve(dir.path, {
    http: { static_dir: `${dir.path}/site` },
  });
  const pid = srv.process.pid;
  const port = portOf(srv.url);
  assert.equal(await (await fetch(srv.url)).text(), "home");
  const baseline = fdCount(pid);

  const head = enc.encode("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\nX-A: ");
  const conns = await Promise.all(
    Array.from({ length: 200 }, () => Deno.connect({ hostname: "127.0.0.1", port })),
  );
  const { open, times } = await whileTrickling(conns, head, pid, 40, async () => {
    // Starved, a request would hang; the bound only turns that into a failure.
    const res = await fetch(srv.url, { signal: AbortSignal.timeout(10_000) });
    assert.equal(await res.text(), "home");
  });
  console.log(
    `slowloris: server held ${open - baseline} extra descriptors for 200 trickling ` +
      `connections; 40 normal requests meanwhile, median ${times[20].toFixed(1)} ms, max ${
        times[39].toFixed(1)
      } ms`,
  );

  for (const c of conns) c.close();
  await backToBaseline(pid, baseline, "after slowloris");
});

Deno.test("slowloris over plain HTTP: server.header_timeout closes what never finishes its head", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/index.html": "home" });
  await using srv = await serve(dir.path, {
    server: { header_timeout: 1 },
    http: { static_dir: `${dir.path}/site` },
  });
  const port = portOf(srv.url);
  const baseline = fdCount(srv.process.pid);
  const trickle = await Deno.connect({ hostname: "127.0.0.1", port });
  await trickle.write(enc.encode("GET / HTTP/1.1\r\nHost: localhost\r\nX-a: "));
  const dripping = setInterval(() => trickle.write(enc.encode("a")).catch(() => {}), 200);
  {
    using client = Deno.createHttpClient({});
    assert.equal(await (await fetch(srv.url, { client })).text(), "home");
  }
  try {
    assert.ok(await closedWithin(trickle, 10_000), "the trickling connection was closed");
  } finally {
    clearInterval(dripping);
    trickle.close();
  }
  // A kept-alive connection whose first request finished is not cut by the header timeout.
  const kept = await Deno.connect({ hostname: "127.0.0.1", port });
  const buf = new Uint8Array(4096);
  for (let i = 0; i < 2; i++) {
    if (i) await new Promise((r) => setTimeout(r, 1500));
    await kept.write(enc.encode("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    assert.match(
      new TextDecoder().decode(buf.subarray(0, (await kept.read(buf))!)),
      /^HTTP\/1\.1 200/,
    );
  }
  kept.close();
  await backToBaseline(srv.process.pid, baseline, "after the plain header timeout");
});

Deno.test("slowloris over HTTPS: server.header_timeout closes what never finishes its head", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/index.html": "home" });
  const certs = await makeCerts(dir.path);
  await using srv = await serve(dir.path, {
    server: { header_timeout: 1 },
    http: { static_dir: `${dir.path}/site` },
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key },
  });
  const port = portOf(srv.url);
  const baseline = fdCount(srv.process.pid);
  // A TLS client that trickles a head and never ends it.
  const trickle = await Deno.connectTls({ hostname: "localhost", port, caCerts: [certs.caPem] });
  await trickle.write(enc.encode("GET / HTTP/1.1\r\nHost: localhost\r\nX-a: "));
  const dripping = setInterval(() => trickle.write(enc.encode("a")).catch(() => {}), 200);
  // Meanwhile a normal client is served.
  {
    using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
    assert.equal(await (await fetch(`https://localhost:${port}/`, { client })).text(), "home");
  }
  try {
    // Closed after header_timeout (1 s); the wait is long only so that a loaded machine passes.
    assert.ok(await closedWithin(trickle, 10_000), "the trickling TLS connection was closed");
  } finally {
    clearInterval(dripping);
    trickle.close();
  }
  // A kept-alive connection whose first request finished is not cut by the header timeout.
  const kept = await Deno.connectTls({ hostname: "localhost", port, caCerts: [certs.caPem] });
  await kept.write(enc.encode("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  const buf = new Uint8Array(4096);
  assert.match(
    new TextDecoder().decode(buf.subarray(0, (await kept.read(buf))!)),
    /^HTTP\/1\.1 200/,
  );
  await new Promise((r) => setTimeout(r, 1500));
  await kept.write(enc.encode("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  assert.match(
    new TextDecoder().decode(buf.subarray(0, (await kept.read(buf))!)),
    /^HTTP\/1\.1 200/,
  );
  kept.close();
  await backToBaseline(srv.process.pid, baseline, "after the header timeout");
});

/**
 * Opens `count` connections that GET `path` and read 64 KiB each every 100 ms (640 KiB/s, while
 * the server could send GiB/s) for 3 s; the server's peak RSS growth over `before`.
 */
async function slowReaders(pid: number, port: number, path: string, count: number, before: number) {
  const readers = await Promise.all(Array.from({ length: count }, async () => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    await c.write(enc.encode(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`));
    return c;
  }));
  let received = 0;
  const buf = new Uint8Array(64 * 1024);
  let peak = before;
  const until = Date.now() + 3000;
  while (Date.now() < until) {
    for (const c of readers) {
      const n = await c.read(buf);
      if (n) received += n;
    }
    peak = Math.max(peak, rssBytes(pid));
    await new Promise((r) => setTimeout(r, 100));
  }
  return { readers, received, growth: peak - before };
}

Deno.test("a slow reader of a large download does not grow the server's memory", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/index.html": "home" });
  // A sparse 256 MiB file: far larger than the in-memory file cache, so it is streamed.
  const big = await Deno.open(`${dir.path}/site/big.bin`, { create: true, write: true });
  await big.truncate(256 * MiB);
  big.close();
  await using srv = await serve(dir.path, {
    http: { static_dir: `${dir.path}/site` },
  });
  const pid = srv.process.pid;
  const port = portOf(srv.url);
  // Warm up: one full small download and one partial big one.
  await (await fetch(srv.url)).text();
  const warm = await fetch(`${srv.url}/big.bin`, { headers: { range: "bytes=0-1048575" } });
  await warm.arrayBuffer();
  const baselineFds = fdCount(pid);
  const before = rssBytes(pid);

  const { readers, received, growth } = await slowReaders(pid, port, "/big.bin", 8, before);
  console.log(
    `slow readers: 8 × 256 MiB downloads, ${(received / MiB).toFixed(1)} MiB read in 3 s; ` +
      `server RSS ${(before / MiB).toFixed(0)} MiB before, peak growth ${
        (growth / MiB).toFixed(1)
      } MiB`,
  );
  // Without backpressure the server would buffer the files (2 GiB); a bound of 64 MiB is
  // generous for socket buffers and stream chunks.
  assert.ok(growth < 64 * MiB, `server RSS grew by ${growth / MiB} MiB`);
  for (const c of readers) c.close();
  await backToBaseline(pid, baselineFds, "after slow readers");
});

Deno.test("broken backends: reset, early close, garbage give 502, a cut body aborts; other routes keep serving", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/index.html": "home" });
  await using reset = brokenBackend("reset");
  await using close = brokenBackend("close");
  await using garbage = brokenBackend("garbage");
  await using midBody = brokenBackend("mid-body");
  await using good = serveBackend(() => new Response("good"));
  const location = (port: number) => ({ proxy_pass: `http://127.0.0.1:${port}` });
  await using srv = await serve(dir.path, {
    version: 2,
    http: { static_dir: `${dir.path}/site` },
    extensions: [{
      type: "routing",
      config: {
        regex_locations: {
          "^~/reset/": location(reset.port),
          "^~/close/": location(close.port),
          "^~/garbage/": location(garbage.port),
          "^~/midbody/": location(midBody.port),
          "^~/good/": location(good.port),
        },
      },
    }],
  });
  const pid = srv.process.pid;
  assert.equal(await (await fetch(`${srv.url}/good/`)).text(), "good");
  assert.equal(await (await fetch(srv.url)).text(), "home");
  const baseline = fdCount(pid);
  const report: string[] = [];
  for (let round = 0; round < 3; round++) {
    await expectBrokenBackends(srv, round === 0 ? report : undefined);
    assert.equal(await (await fetch(srv.url)).text(), "home");
  }
  console.log(`broken backends: ${report.join("; ")}`);
  await backToBaseline(pid, baseline, "after broken backends");
});

Deno.test("broken backends behind server.reverse_proxy: 502, 504 on a hang, a cut body aborts; descriptors return", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/index.html": "home" });
  await using reset = brokenBackend("reset");
  await using close = brokenBackend("close");
  await using garbage = brokenBackend("garbage");
  await using midBody = brokenBackend("mid-body");
  await using hang = brokenBackend("hang");
  await using good = serveBackend(() => new Response("good"));
  // fail_timeout is short so that a backend marked down is tried again by the next round.
  const rule = (path: string, port: number) => ({
    path,
    host: "127.0.0.1",
    port,
    response_timeout: 1,
    connect_timeout: 2,
    fail_timeout: 0.1,
  });
  await using srv = await serve(dir.path, {
    http: { static_dir: `${dir.path}/site` },
    server: {
      reverse_proxy: [
        rule("/reset", reset.port),
        rule("/close", close.port),
        rule("/garbage", garbage.port),
        rule("/midbody", midBody.port),
        rule("/hang", hang.port),
        // The same backend, waited for long enough that the test, not a timeout, ends it.
        { ...rule("/held", hang.port), response_timeout: 60 },
        rule("/good", good.port),
      ],
    },
  });
  const pid = srv.process.pid;
  assert.equal(await (await fetch(`${srv.url}/good/`)).text(), "good");
  assert.equal(await (await fetch(srv.url)).text(), "home");
  const baseline = fdCount(pid);
  const report: string[] = [];
  for (let round = 0; round < 2; round++) {
    // While a request waits on a backend that never answers, other routes answer.
    const seen = hang.connections;
    const giveUp = new AbortController();
    let heldSettled = false;
    const held = fetch(`${srv.url}/held/x`, { signal: giveUp.signal })
      .catch(() => undefined)
      .finally(() => heldSettled = true);
    assert.ok(
      await eventually(() => hang.connections > seen, 10_000),
      "the backend got no request",
    );
    for (let i = 0; i < 5; i++) {
      assert.equal(await (await fetch(`${srv.url}/good/`)).text(), "good");
      assert.ok(!heldSettled, "other routes wait for the hanging one");
    }
    // A client that gives up on a hanging backend: the backend request is dropped with it.
    giveUp.abort();
    await held;
    // 504 after response_timeout.
    const t = performance.now();
    const hung = await fetch(`${srv.url}/hang/x`);
    await hung.body?.cancel();
    if (round === 0) {
      report.push(`hang: ${hung.status} after ${(performance.now() - t).toFixed(0)} ms`);
    }
    assert.equal(hung.status, 504);
    await expectBrokenBackends(srv, round === 0 ? report : undefined);
    await new Promise((r) => setTimeout(r, 150));
  }
  console.log(`reverse_proxy broken backends: ${report.join("; ")}`);
  // The hanging backend still holds its side of the connections; the server must not.
  await hang[Symbol.asyncDispose]();
  await backToBaseline(pid, baseline, "after broken backends (reverse_proxy)");
});

Deno.test("a slow reader of a large proxied download does not grow the server's memory", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/index.html": "home" });
  const chunk = new Uint8Array(64 * 1024);
  // A backend that streams 256 MiB as fast as it is asked for.
  await using big = serveBackend(() => {
    let left = 256 * MiB;
    return new Response(
      new ReadableStream({
        pull(ctrl) {
          if (left <= 0) return ctrl.close();
          ctrl.enqueue(chunk.slice());
          left -= chunk.length;
        },
      }, { highWaterMark: 0 }),
      { headers: { "content-length": String(256 * MiB) } },
    );
  });
  await using srv = await serve(dir.path, {
    http: { static_dir: `${dir.path}/site` },
    server: { reverse_proxy: [{ path: "/big", host: "127.0.0.1", port: big.port }] },
  });
  const pid = srv.process.pid;
  const port = portOf(srv.url);
  assert.equal(await (await fetch(srv.url)).text(), "home");
  const baselineFds = fdCount(pid);
  const warm = await fetch(`${srv.url}/big/`);
  await warm.body?.cancel();
  await new Promise((r) => setTimeout(r, 300));
  const before = rssBytes(pid);
  const { readers, received, growth } = await slowReaders(pid, port, "/big/", 4, before);
  console.log(
    `slow readers through the proxy: 4 × 256 MiB, ${
      (received / MiB).toFixed(1)
    } MiB read in 3 s; ` +
      `server RSS peak growth ${(growth / MiB).toFixed(1)} MiB`,
  );
  assert.ok(growth < 64 * MiB, `server RSS grew by ${growth / MiB} MiB`);
  for (const c of readers) c.close();
  // Kept-alive connections to the backend close with it.
  await big[Symbol.asyncDispose]();
  await backToBaseline(pid, baselineFds, "after slow readers through the proxy");
});

Deno.test("slowloris over HTTPS: trickling TLS connections do not stop a normal client", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/index.html": "home" });
  const certs = await makeCerts(dir.path);
  await using srv = await serve(dir.path, {
    http: { static_dir: `${dir.path}/site` },
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key },
  });
  const pid = srv.process.pid;
  const port = portOf(srv.url);
  const client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  const url = `https://localhost:${port}/`;
  assert.equal(await (await fetch(url, { client })).text(), "home");
  const baseline = fdCount(pid);
  const head = enc.encode("GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slow\r\nX-A: ");
  const conns: Deno.TlsConn[] = [];
  for (let i = 0; i < 100; i++) {
    const c = await Deno.connectTls({ hostname: "localhost", port, caCerts: [certs.caPem] });
    await c.handshake();
    conns.push(c);
  }
  let times: number[];
  let held: number;
  try {
    const trickled = await whileTrickling(conns, head, pid, 30, async () => {
      const res = await fetch(url, { client, signal: AbortSignal.timeout(10_000) });
      assert.equal(await res.text(), "home");
    });
    times = trickled.times;
    held = trickled.open - baseline;
  } finally {
    client.close();
  }
  console.log(
    `slowloris over HTTPS: server held ${held} extra descriptors for 100 trickling TLS ` +
      `connections; 30 normal requests meanwhile, median ${times[15].toFixed(1)} ms, max ${
        times[29].toFixed(1)
      } ms`,
  );
  for (const c of conns) c.close();
  await backToBaseline(pid, baseline, "after slowloris over HTTPS");
});
