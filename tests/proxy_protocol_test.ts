/**
 * `server.proxy_protocol`: the header parser (v1 and v2, every prefix of a header, the bounds),
 * raw clients sending good, truncated, oversized, forged and missing headers to plain and TLS
 * listeners, and a real HAProxy in TCP mode (`send-proxy`, `send-proxy-v2`, TLS passed through)
 * whose client address reaches the access log, a backend's `X-Forwarded-For`, IP filtering
 * and rate limits.
 */
import assert from "node:assert/strict";
import { readProxyHeader, V1_MAX, V2_MAX_BODY } from "../src/server/proxy_protocol.ts";
import { echoBackend } from "./support/backends.ts";
import { makeCerts, type TestCerts } from "./support/certs.ts";
import { curl, hasCommand, spawnCli } from "./support/cli.ts";
import { parseHead } from "./support/clients.ts";
import { assertCheckRefuses, configError } from "./support/config.ts";
import { validate } from "../src/config/load.ts";
import { listeningSockets } from "./support/proc.ts";
import { eventually } from "./support/wait.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { HAPROXY, HAPROXY_HOST, startTcpFrontends } from "./support/haproxy.ts";
import { startTestServer, type TestServer } from "./support/servers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
/** Only turns a connection that is never closed into a failure. */
const BOUND = 15_000;

/** A v1 header for a TCP4 client. */
const v1 = (src: string, sport: number) => `PROXY TCP4 ${src} 127.0.0.1 ${sport} 443\r\n`;

/** A v2 header: PROXY (or LOCAL) for an IPv4 or IPv6 client, with `tlvs` appended. */
function v2(
  src: number[],
  sport: number,
  options: { local?: boolean; tlvs?: Uint8Array; family?: number; length?: number } = {},
): Uint8Array {
  const six = src.length === 16;
  const addresses = six ? 36 : 12;
  const tlvs = options.tlvs ?? new Uint8Array();
  const body = addresses + tlvs.length;
  const out = new Uint8Array(16 + body);
  out.set([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
  out[12] = options.local ? 0x20 : 0x21;
  out[13] = options.family ?? (six ? 0x21 : 0x11);
  const length = options.length ?? body;
  out[14] = length >> 8;
  out[15] = length & 0xff;
  out.set(src, 16);
  const dst = six ? [...Array(15).fill(0), 1] : [127, 0, 0, 1];
  out.set(dst, 16 + src.length);
  const ports = 16 + 2 * src.length;
  out.set([sport >> 8, sport & 0xff, 0x01, 0xbb], ports);
  out.set(tlvs, 16 + addresses);
  return out;
}

/** TLVs as HAProxy may send them: ALPN, authority, a unique id, and a type nobody defined. */
const TLVS = new Uint8Array([
  ...[0x01, 0, 2, ...enc.encode("h2")],
  ...[0x02, 0, 9, ...enc.encode("localhost")],
  ...[0x05, 0, 4, 1, 2, 3, 4],
  ...[0xee, 0, 3, 0, 0, 0],
]);

const concat = (...parts: (string | Uint8Array)[]) => {
  const bytes = parts.map((p) => typeof p === "string" ? enc.encode(p) : p);
  const out = new Uint8Array(bytes.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of bytes) {
    out.set(b, at);
    at += b.length;
  }
  return out;
};

Deno.test("proxy protocol: v1 and v2 headers give their source; TLVs, LOCAL and UNKNOWN are safe", () => {
  const line = v1("203.0.113.7", 51000);
  assert.deepEqual(readProxyHeader(enc.encode(line + "GET / HTTP/1.1\r\n")), {
    kind: "header",
    length: line.length,
    version: 1,
    source: { transport: "tcp", hostname: "203.0.113.7", port: 51000 },
  });
  const six = "PROXY TCP6 2001:db8::7 ::1 51000 443\r\n";
  assert.equal(
    (readProxyHeader(enc.encode(six)) as { source: Deno.NetAddr }).source.hostname,
    "2001:db8::7",
  );
  assert.deepEqual(readProxyHeader(enc.encode("PROXY UNKNOWN whatever\r\n")), {
    kind: "header",
    length: 24,
    version: 1,
  });

  const h = v2([198, 51, 100, 9], 40000, { tlvs: TLVS });
  assert.deepEqual(readProxyHeader(concat(h, "\x16\x03\x01")), {
    kind: "header",
    length: h.length,
    version: 2,
    source: { transport: "tcp", hostname: "198.51.100.9", port: 40000 },
  });
  const addr6 = [0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 0x05];
  const h6 = readProxyHeader(v2(addr6, 1234)) as { source: Deno.NetAddr };
  assert.deepEqual(h6.source, { transport: "tcp", hostname: "2001:db8::5", port: 1234 });
  const mapped = [...Array(10).fill(0), 0xff, 0xff, 10, 1, 2, 3];
  assert.equal(
    (readProxyHeader(v2(mapped, 1)) as { source: Deno.NetAddr }).source.hostname,
    "::ffff:10.1.2.3",
  );
  // LOCAL (a balancer's health check) and UNSPEC name no client: the socket's address stands.
  const local = v2([10, 0, 0, 1], 1, { local: true });
  assert.deepEqual(readProxyHeader(local), { kind: "header", length: local.length, version: 2 });
  const unspec = v2([10, 0, 0, 1], 1, { family: 0x00 });
  assert.deepEqual(readProxyHeader(unspec), { kind: "header", length: unspec.length, version: 2 });

  // Every proper prefix of a header asks for more, and nothing more.
  for (const whole of [enc.encode(line), h, enc.encode(six)]) {
    for (let n = 0; n < whole.length; n++) {
      assert.deepEqual(readProxyHeader(whole.subarray(0, n)), { kind: "partial" }, `${n}`);
    }
  }
});

Deno.test("proxy protocol: oversized, malformed and non-headers are refused, never waited on", () => {
  const refused = (bytes: string | Uint8Array, why: RegExp) => {
    const r = readProxyHeader(typeof bytes === "string" ? enc.encode(bytes) : bytes);
    assert.equal(r.kind, "bad", JSON.stringify(r));
    assert.match((r as { reason: string }).reason, why);
  };
  // v1: at most 107 bytes with CRLF; longest legal line is accepted.
  const longest = `PROXY TCP6 ${"ffff:".repeat(7)}ffff ${"ffff:".repeat(7)}ffff 65535 65535\r\n`;
  assert.equal(longest.length, 104);
  assert.equal(readProxyHeader(enc.encode(longest)).kind, "header");
  const padded = `PROXY UNKNOWN ${"x".repeat(V1_MAX - 16)}\r\n`;
  assert.equal(padded.length, V1_MAX);
  assert.equal(readProxyHeader(enc.encode(padded)).kind, "header");
  refused(`PROXY UNKNOWN ${"x".repeat(V1_MAX - 15)}\r\n`, /over 107 bytes/);
  refused(`PROXY UNKNOWN ${"x".repeat(200)}`, /over 107 bytes/);
  refused("GET / HTTP/1.1\r\nHost: x\r\n\r\n", /not a PROXY protocol header/);
  refused("\x16\x03\x01\x02\x00", /not a PROXY protocol header/);
  refused("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", /control byte/);
  refused("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", /CR without LF/);
  refused("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", /bad address/);
  refused("PROXY TCP4 ::1 ::1 1 2\r\n", /bad address/);
  refused("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", /bad address/);
  refused("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", /bad port/);
  refused("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", /bad port/);
  refused("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", /family UDP4/);
  refused("PROXY TCP4 1.2.3.4\r\n", /must be PROXY TCP4/);
  refused("PROXX", /not a PROXY/);
  // v2: its length is bounded, must hold its addresses, and version and command are checked.
  refused(v2([1, 2, 3, 4], 1, { length: V2_MAX_BODY + 1 }), /over 4096/);
  refused(v2([1, 2, 3, 4], 1, { length: 0xffff }), /over 4096/);
  refused(v2([1, 2, 3, 4], 1, { length: 11 }), /too short/);
  const version = v2([1, 2, 3, 4], 1);
  version[12] = 0x11;
  refused(version, /version 1/);
  const command = v2([1, 2, 3, 4], 1);
  command[12] = 0x22;
  refused(command, /command 2/);
  refused(v2([1, 2, 3, 4], 1, { family: 0x12 }), /not TCP/);
  refused(v2([1, 2, 3, 4], 1, { family: 0x41 }), /family byte/);
  refused(concat("\r\n\r\n\0\r\nQUIX\n"), /not a PROXY/);
});

/** What came back on a raw connection: the bytes, and whether the server closed it. */
async function exchange(
  port: number,
  bytes: Uint8Array,
  options: { halfClose?: boolean } = {},
): Promise<{ text: string; closed: boolean }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => conn.close(), BOUND);
  let text = "";
  let closed = false;
  try {
    await conn.write(bytes);
    if (options.halfClose) await conn.closeWrite();
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += dec.decode(buf.subarray(0, n));
    }
    closed = true;
  } catch (e) {
    // A reset is a close; the test's own bound closing it is not.
    closed = !(e instanceof Deno.errors.BadResource);
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed */ }
  }
  return { text, closed };
}

const GET = "GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/** Access log lines so far. */
const accessLines = (s: TestServer) => {
  s.log.flush();
  return s.log.lines.filter((l) => l.startsWith("ACCESS "));
};

async function plainServer(dir: string, server: Record<string, unknown> = {}, extra = {}) {
  await writeFiles(dir, { "site/index.html": "home" });
  return await startTestServer({
    server: { proxy_protocol: true, ...server },
    http: { static_dir: `${dir}/site` },
    ...extra,
  });
}

Deno.test("proxy protocol, plain: the header's source is the client in the log and to a backend", async () => {
  await using backend = echoBackend();
  await using dir = await tempDir();
  await using s = await plainServer(dir.path, {
    reverse_proxy: [{ path: "/api", host: "127.0.0.1", port: backend.port }],
  }, {
    version: 2,
    extensions: [{
      type: "routing",
      config: { regex_locations: { "=/who": { return: "200 $remote_addr" } } },
    }],
  });
  const port = s.server.addr.port;
  let r = await exchange(port, concat(v1("203.0.113.7", 51000), GET));
  assert.match(r.text, /^HTTP\/1\.1 200/);
  assert.match(r.text, /home$/);
  assert.ok(accessLines(s).some((l) => l.includes("203.0.113.7")), accessLines(s).join("\n"));

  const api = "GET /api/who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  r = await exchange(port, concat(v2([198, 51, 100, 9], 40000, { tlvs: TLVS }), api));
  const echo = JSON.parse(r.text.slice(r.text.indexOf("\r\n\r\n") + 4));
  assert.equal(echo.headers["x-forwarded-for"], "198.51.100.9");
  assert.equal(echo.headers["x-real-ip"], "198.51.100.9");

  // A V2 location's $remote_addr.
  r = await exchange(
    port,
    concat(v1("192.0.2.44", 2), "GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
  );
  assert.match(r.text, /\r\n\r\n192\.0\.2\.44$/);

  // LOCAL (a health check): the connection's own address.
  r = await exchange(port, concat(v2([10, 9, 9, 9], 1, { local: true }), api));
  assert.equal(
    JSON.parse(r.text.slice(r.text.indexOf("\r\n\r\n") + 4)).headers["x-real-ip"],
    "127.0.0.1",
  );
});

Deno.test("proxy protocol, plain: no header, bad, truncated and oversized headers are closed unanswered", async () => {
  await using dir = await tempDir();
  await using s = await plainServer(dir.path);
  const port = s.server.addr.port;
  const unanswered = async (bytes: Uint8Array, what: string, halfClose = false) => {
    const r = await exchange(port, bytes, { halfClose });
    assert.deepEqual(r, { text: "", closed: true }, what);
  };
  await unanswered(enc.encode(GET), "a request without a header");
  await unanswered(enc.encode(`PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n${GET}`), "a bad v1 line");
  await unanswered(enc.encode(`PROXY UNKNOWN ${"x".repeat(300)}\r\n${GET}`), "over 107 bytes");
  const huge = v2([1, 2, 3, 4], 1, { length: V2_MAX_BODY + 1 });
  await unanswered(concat(huge, new Uint8Array(V2_MAX_BODY), GET), "a v2 length over the bound");
  await unanswered(
    concat(v2([1, 2, 3, 4], 1, { length: 4 }), GET),
    "a v2 length under its addresses",
  );
  await unanswered(enc.encode("PROXY TCP4 203.0.113.7 127.0.0.1"), "cut short", true);
  await unanswered(v2([1, 2, 3, 4], 1).subarray(0, 20), "v2 cut short", true);
  // The request after a bad header was never served.
  assert.deepEqual(accessLines(s), []);
  assert.ok(
    s.log.lines.some((l) => /^WARNING closed a connection .*not a PROXY protocol header/.test(l)),
    s.log.lines.join("\n"),
  );
  // And a good one is served still.
  assert.match((await exchange(port, concat(v1("192.0.2.1", 1), GET))).text, /^HTTP\/1\.1 200/);
});

Deno.test("proxy protocol: a peer outside proxy_protocol_from is closed, whatever its header says", async () => {
  await using dir = await tempDir();
  await using s = await plainServer(dir.path, { proxy_protocol_from: ["10.0.0.0/8"] });
  const r = await exchange(s.server.addr.port, concat(v1("203.0.113.7", 1), GET));
  assert.deepEqual(r, { text: "", closed: true });
  assert.ok(
    s.log.lines.some((l) => /not in server\.proxy_protocol_from/.test(l)),
    s.log.lines.join("\n"),
  );
  assert.deepEqual(accessLines(s), []);
});

const curlCan = (feature: string) => {
  if (!hasCommand("curl")) return false;
  const out = new Deno.Command("curl", { args: ["--help", "all"], stdout: "piped" }).outputSync();
  return dec.decode(out.stdout).includes(feature);
};

Deno.test({
  name: "proxy protocol: a forged header from 127.0.0.2 is closed when only 127.0.0.1 may send one",
  ignore: !curlCan("--haproxy-protocol") &&
    (console.log("ignored: curl without --haproxy-protocol"), true),
  async fn() {
    await using dir = await tempDir();
    await using s = await plainServer(dir.path, { proxy_protocol_from: ["127.0.0.1/32"] });
    const url = `http://127.0.0.1:${s.server.addr.port}/index.html`;
    const forged = await curl(["--interface", "127.0.0.2", "--haproxy-protocol", url]);
    // Closed unanswered: curl says so as an empty reply, a reset or a lost peer.
    assert.notEqual(forged.code, 0);
    assert.equal(forged.stdout, "");
    assert.ok(
      s.log.lines.some((l) =>
        /from 127\.0\.0\.2:\d+: .*not in server\.proxy_protocol_from/.test(l)
      ),
      s.log.lines.join("\n"),
    );
    const trusted = await curl(["--interface", "127.0.0.1", "--haproxy-protocol", url]);
    assert.equal(trusted.stdout, "home", trusted.stderr);
    assert.equal(accessLines(s).length, 1);
  },
});

Deno.test("proxy protocol: a header that does not come within header_timeout closes the connection", async () => {
  await using dir = await tempDir();
  await using s = await plainServer(dir.path, { header_timeout: 1 });
  // Half a header, then nothing: only the server's clock can end this.
  const r = await exchange(s.server.addr.port, enc.encode("PROXY TCP4 203.0.113.7"));
  assert.deepEqual(r, { text: "", closed: true });
  assert.ok(
    s.server.connections.stats.timedOut.header >= 1,
    JSON.stringify(s.server.connections.stats),
  );
  const silent = await exchange(s.server.addr.port, new Uint8Array());
  assert.deepEqual(silent, { text: "", closed: true }, "a connection that sends nothing");
});

Deno.test("proxy protocol: a reload turns it on and off on the same port", async () => {
  await using dir = await tempDir();
  await using s = await plainServer(dir.path, { proxy_protocol: false });
  const port = s.server.addr.port;
  assert.match((await exchange(port, enc.encode(GET))).text, /^HTTP\/1\.1 200/);
  const raw = (proxy_protocol: boolean) =>
    validate({
      server: { host: "127.0.0.1", port: 0, proxy_protocol },
      http: { static_dir: `${dir.path}/site` },
    }).config;
  // A connection queued on the old listener as it closes may be reset (README, HTTPS): the
  // checks begin once the old listener is gone.
  const swapped = async (proxy: boolean) => {
    assert.deepEqual(await s.server.reload(raw(proxy)), { listenersReplaced: true });
    assert.equal(s.server.addr.port, port);
    assert.ok(await eventually(() => listeningSockets(port) === 1, BOUND), "the old one closed");
  };
  await swapped(true);
  assert.deepEqual(await exchange(port, enc.encode(GET)), { text: "", closed: true });
  assert.match((await exchange(port, concat(v1("192.0.2.9", 9), GET))).text, /^HTTP\/1\.1 200/);
  await swapped(false);
  assert.match((await exchange(port, enc.encode(GET))).text, /^HTTP\/1\.1 200/);
});

async function tlsServer(dir: string, server: Record<string, unknown> = {}, extra = {}) {
  await writeFiles(dir, { "site/index.html": "home" });
  const certs = await makeCerts(dir);
  const s = await startTestServer({
    server: { proxy_protocol: true, ...server },
    http: { static_dir: `${dir}/site` },
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key },
    ...extra,
  });
  return { s, certs };
}

/** Sends `header` in clear, then a request over TLS on the same connection. */
async function tlsAfterHeader(
  port: number,
  certs: TestCerts,
  header: Uint8Array,
  alpn = "http/1.1",
) {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  await tcp.write(header);
  const conn = await Deno.startTls(tcp, {
    hostname: "localhost",
    caCerts: [certs.caPem],
    alpnProtocols: [alpn],
  });
  try {
    const { alpnProtocol } = await conn.handshake();
    await conn.write(enc.encode(GET));
    let text = "";
    const buf = new Uint8Array(16 * 1024);
    for (let n; (n = await conn.read(buf)) !== null;) text += dec.decode(buf.subarray(0, n));
    return { alpnProtocol, text };
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

Deno.test("proxy protocol, TLS: the header comes in clear before the handshake; limits count the client", async () => {
  await using dir = await tempDir();
  const { s, certs } = await tlsServer(dir.path, { max_connections_per_ip: 1 });
  await using _ = s;
  const port = s.server.addr.port;
  const r = await tlsAfterHeader(port, certs, v2([198, 51, 100, 20], 40000, { tlvs: TLVS }));
  assert.equal(r.alpnProtocol, "http/1.1");
  assert.equal(parseHead(r.text).status, 200);
  assert.ok(accessLines(s).some((l) => l.includes("198.51.100.20")), accessLines(s).join("\n"));

  // One connection per client: a second one from the same PROXY source is closed, another
  // source is served; all of them come from the same socket address.
  const held = await Deno.connect({ hostname: "127.0.0.1", port });
  await held.write(enc.encode(v1("198.51.100.21", 1)));
  const first = await Deno.startTls(held, { hostname: "localhost", caCerts: [certs.caPem] });
  await first.handshake();
  try {
    await assert.rejects(tlsAfterHeader(port, certs, enc.encode(v1("198.51.100.21", 2))));
    const other = await tlsAfterHeader(port, certs, enc.encode(v1("198.51.100.22", 3)));
    assert.equal(parseHead(other.text).status, 200);
    assert.ok(s.server.connections.stats.refused.perIp >= 1);
  } finally {
    first.close();
  }
  // A TLS client without a header is closed before any handshake.
  const bare = await Deno.connect({ hostname: "127.0.0.1", port });
  await assert.rejects(
    Deno.startTls(bare, { hostname: "localhost", caCerts: [certs.caPem] }).then(async (c) => {
      try {
        await c.handshake();
      } finally {
        c.close();
      }
    }),
  );
});

Deno.test("proxy protocol, TLS: a reload with a new certificate keeps the front serving", async () => {
  await using dir = await tempDir();
  const { s, certs } = await tlsServer(dir.path);
  await using _ = s;
  const port = s.server.addr.port;
  const next = await makeCerts(dir.path, { name: "next", cn: "next.localhost" });
  const config = validate({
    server: { host: "127.0.0.1", port: 0, proxy_protocol: true },
    http: { static_dir: `${dir.path}/site` },
    ssl: { enabled: true, cert_file: next.cert, key_file: next.key },
  }).config;
  assert.deepEqual(await s.server.reload(config), { listenersReplaced: true });
  assert.equal(s.server.addr.port, port, "the front stays");
  assert.equal(s.server.tls?.certFile, next.cert);
  // A new TLS listener took the port with the new certificate. A connection made in the instant
  // the old one closes can be reset unless net.ipv4.tcp_migrate_req=1 (README, HTTPS): wait
  // until the old one has closed.
  assert.ok(await eventually(() => listeningSockets(port) === 1, 10_000), "the old listener stays");
  const r = await tlsAfterHeader(port, certs, enc.encode(v1("192.0.2.50", 5)));
  assert.equal(parseHead(r.text).status, 200);
});

Deno.test("proxy protocol: proxy_protocol_from must hold addresses; errors name the key, --test exits 2", async () => {
  assert.match(
    configError({ server: { proxy_protocol: true, proxy_protocol_from: ["10.0.0.0/33"] } }),
    /server\.proxy_protocol_from\[0\] must be an IP address or CIDR .*got "10\.0\.0\.0\/33"/,
  );
  assert.match(
    configError({ server: { proxy_protocol_from: "10.0.0.0/8" } }),
    /server\.proxy_protocol_from must be a list of addresses/,
  );
  assert.match(
    configError({ server: { proxy_protocol: true, proxy_protocol_from: [] } }),
    /server\.proxy_protocol_from must list at least one address/,
  );
  assert.match(
    configError({ server: { proxy_protocol: "yes" } }),
    /server\.proxy_protocol must be true or false/,
  );
  await assertCheckRefuses(
    "server:\n  proxy_protocol: true\n  proxy_protocol_from:\n    - 127.0.0.0/8\n    - not-an-ip\n",
    /server\.proxy_protocol_from\[1\] must be an IP address or CIDR/,
  );
});

const haproxyIgnored = !HAPROXY &&
  (console.log("ignored: the HAProxy tests need haproxy (apt-get install haproxy)"), true);

Deno.test({
  name:
    "HAProxy send-proxy and send-proxy-v2: the client HAProxy saw is logged and forwarded, plain and TLS passed through",
  ignore: haproxyIgnored,
  async fn() {
    await using backend = echoBackend();
    await using dir = await tempDir();
    await Deno.mkdir(`${dir.path}/plain`);
    await Deno.mkdir(`${dir.path}/tls`);
    const proxyRule = { reverse_proxy: [{ path: "/api", host: "127.0.0.1", port: backend.port }] };
    await using plain = await plainServer(`${dir.path}/plain`, proxyRule);
    const { s: secure, certs } = await tlsServer(`${dir.path}/tls`, proxyRule);
    await using _ = secure;
    await using haproxy = await startTcpFrontends([
      { to: plain.server.addr.port, server: "send-proxy" },
      { to: plain.server.addr.port, server: "send-proxy-v2" },
      { to: secure.server.addr.port, server: "send-proxy-v2 proxy-v2-options unique-id,crc32c" },
      { to: secure.server.addr.port, server: "send-proxy" },
    ]);
    const [v1Port, v2Port, tlsV2Port, tlsV1Port] = haproxy.ports;
    const from = (ip: string, url: string, ...more: string[]) =>
      curl(["--interface", ip, "--cacert", certs.ca, ...more, url]);
    const https = (
      port: number,
      path: string,
    ) => [`https://localhost:${port}${path}`, "--resolve", `localhost:${port}:${HAPROXY_HOST}`];

    const echoed = (r: { code: number; stdout: string; stderr: string }, body = r.stdout) => {
      try {
        return JSON.parse(body).headers;
      } catch {
        assert.fail(
          `no echo (curl ${r.code}: ${r.stderr}); haproxy said: ${haproxy.output()}; ` +
            `server: ${JSON.stringify(plain.server.connections.stats)}\n` +
            plain.log.lines.join("\n"),
        );
      }
    };
    let r = await from("127.0.0.11", `http://${HAPROXY_HOST}:${v1Port}/api/a`);
    assert.equal(echoed(r)["x-forwarded-for"], "127.0.0.11");
    r = await from("127.0.0.12", `http://${HAPROXY_HOST}:${v2Port}/api/b`);
    assert.equal(echoed(r)["x-real-ip"], "127.0.0.12");
    const [url, ...resolve] = https(tlsV2Port, "/api/c");
    r = await from("127.0.0.13", url, ...resolve, "--http2", "-w", "\\n%{http_version}");
    const [body, version] = r.stdout.split("\n");
    assert.equal(version, "2", "HTTP/2 over TLS passed through");
    assert.equal(echoed(r, body)["x-forwarded-for"], "127.0.0.13");
    const [url1, ...resolve1] = https(tlsV1Port, "/index.html");
    r = await from("127.0.0.14", url1, ...resolve1, "--http1.1");
    assert.equal(r.stdout, "home", r.stderr);

    const logged = [...accessLines(plain), ...accessLines(secure)].join("\n");
    for (const ip of ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"]) {
      assert.match(logged, new RegExp(`^ACCESS ${ip.replaceAll(".", "\\.")} `, "m"), logged);
    }
  },
});

Deno.test({
  name: "HAProxy: ip_filtering and rate_limiting act on the address HAProxy saw",
  ignore: haproxyIgnored,
  async fn() {
    await using dir = await tempDir();
    const { s, certs } = await tlsServer(dir.path, {}, {
      version: 2,
      extensions: [{
        type: "security",
        config: {
          ip_filtering: { blacklist: ["127.0.0.21"] },
          rate_limiting: { requests_per_minute: 1, burst: 1 },
        },
      }],
    });
    await using _ = s;
    await using haproxy = await startTcpFrontends([
      { to: s.server.addr.port, server: "send-proxy-v2" },
    ]);
    const port = haproxy.ports[0];
    const status = async (ip: string) => {
      const r = await curl([
        "--interface",
        ip,
        "--cacert",
        certs.ca,
        "--resolve",
        `localhost:${port}:${HAPROXY_HOST}`,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        `https://localhost:${port}/index.html`,
      ]);
      if (r.code !== 0) {
        assert.fail(
          `curl ${r.code}: ${r.stderr}; haproxy said: ${haproxy.output()}; server: ` +
            `${JSON.stringify(s.server.connections.stats)}\n${s.log.lines.join("\n")}`,
        );
      }
      return r.stdout;
    };
    assert.equal(await status("127.0.0.21"), "403", "the blacklisted client");
    assert.equal(await status("127.0.0.22"), "200");
    assert.equal(await status("127.0.0.22"), "429", "its bucket is empty");
    assert.equal(await status("127.0.0.23"), "200", "another client has its own bucket");
  },
});

Deno.test("proxy protocol, CLI: the banner says it is required; curl --haproxy-protocol is served, plain curl is closed", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "site/a.txt": "hello\n",
    "config.yaml": "server:\n  port: 0\n  proxy_protocol: true\nhttp:\n  static_dir: ./site\n",
  });
  await using server = await spawnCli(["-c", `${dir.path}/config.yaml`]);
  assert.match(server.output(), /PROXY protocol required, from 127\.0\.0\.0\/8, ::1\/128/);
  const url = `${server.url}/a.txt`;
  const served = await curl(["-s", "--haproxy-protocol", url]);
  assert.equal(served.stdout, "hello\n", `${served.stderr}\n${server.output()}`);
  const plain = await curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", url]);
  assert.equal(plain.code, 52, "curl: empty reply from server");
  assert.equal(plain.stdout, "000");
  await server.waitFor(/"GET \/a\.txt" 200 6/);
});
