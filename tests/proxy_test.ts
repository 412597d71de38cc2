/**
 * Reverse proxy: real backends on loopback (HTTP echo, HTTPS with a test CA, WebSocket echo,
 * slow, dying mid-response), the real server in process and the real CLI as a child.
 */
import assert from "node:assert/strict";
import { compileMatcher } from "../src/proxy/rules.ts";
import { rewriteLocation } from "../src/proxy/forwarded_headers.ts";
import { splitUrl } from "../src/http/types.ts";
import { describeError } from "../src/proxy/forward.ts";
import { ConnectError } from "../src/proxy/http1.ts";
import {
  type Backend,
  blackhole,
  echoBackend,
  recordingBackend,
  scriptedBackend,
  serveBackend,
  webSocketBackend,
} from "./support/backends.ts";
import { makeBackendCerts, makeCerts } from "./support/certs.ts";
import { curl, hasCommand, runCli, spawnCli } from "./support/cli.ts";
import { rawRequest } from "./support/clients.ts";
import { tempDir } from "./support/files.ts";
import { rssBytes } from "./support/proc.ts";
import {
  bootRaw,
  captureLogger,
  freePort,
  startTestServer,
  type TestServer,
} from "./support/servers.ts";

/** The names in `lines` (header lines as sent), lowercased and sorted. */
const headerNames = (lines: string[]) =>
  lines.map((l) => l.slice(0, l.indexOf(":")).toLowerCase()).sort();

/**
 * What a backend must receive: no header the client did not send (Deno's own `User-Agent`,
 * `Accept`, `Accept-Language`), none twice, the client's `User-Agent` once, X-Forwarded-* set.
 */
function assertOnlyClientHeaders(lines: string[], expected: string[], proto = "http") {
  assert.deepEqual(headerNames(lines), [...expected].sort(), lines.join("\n"));
  assert.deepEqual(lines.filter((l) => /^user-agent:/i.test(l)), ["user-agent: test-client/1"]);
  assert.ok(!lines.some((l) => /deno|^accept:|^accept-language:/i.test(l)), lines.join("\n"));
  assert.ok(lines.includes("x-forwarded-for: 127.0.0.1"), lines.join("\n"));
  assert.ok(lines.includes("x-real-ip: 127.0.0.1"), lines.join("\n"));
  assert.ok(lines.includes(`x-forwarded-proto: ${proto}`), lines.join("\n"));
}

const enc = new TextEncoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts the server with `rules` and an empty static folder. */
async function proxyServer(
  rules: Record<string, unknown>[],
  extra: Record<string, unknown> = {},
): Promise<TestServer & { dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "denoserve-proxy-" });
  const server = await startTestServer({
    http: { static_dir: dir },
    server: { reverse_proxy: rules },
    logging: { access_log: true }, // the shipped default
    ...extra,
  });
  return {
    ...server,
    dir,
    async [Symbol.asyncDispose]() {
      await server[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

const at = (b: Backend, path = "/", more: Record<string, unknown> = {}) => ({
  path,
  host: "127.0.0.1",
  port: b.port,
  ...more,
});

// ---------------------------------------------------------------------------------------------
// Matching and rewriting (pure)

Deno.test("matcher: longest prefix on segment boundaries", () => {
  const match = compileMatcher(
    ["/api", "/api/v2", "", "/static/"].map((p) => p.replace(/\/$/, "")),
  );
  assert.equal(match("/api"), 0);
  assert.equal(match("/api/"), 0);
  assert.equal(match("/api/x"), 0);
  assert.equal(match("/api/v2"), 1);
  assert.equal(match("/api/v2/users"), 1);
  assert.equal(match("/api/v20"), 0);
  assert.equal(match("/apix"), 2);
  assert.equal(match("/static/a.css"), 3);
  const noRoot = compileMatcher(["/api"]);
  assert.equal(noRoot("/apix"), -1);
  assert.equal(noRoot("/"), -1);
});

Deno.test("Location: backend URLs become public ones, others stay", () => {
  const origins = ["http://10.0.0.1:8080"];
  const pub = "https://example.com";
  assert.equal(
    rewriteLocation("http://10.0.0.1:8080/login?x=1", origins, pub, "/api"),
    "https://example.com/api/login?x=1",
  );
  assert.equal(rewriteLocation("HTTP://10.0.0.1:8080", origins, pub, ""), "https://example.com/");
  assert.equal(
    rewriteLocation("http://10.0.0.1:80801/x", origins, pub, ""),
    "http://10.0.0.1:80801/x",
  );
  assert.equal(rewriteLocation("/login?next=/x", origins, pub, "/api"), "/api/login?next=/x");
  assert.equal(rewriteLocation("/", origins, pub, "/api"), "/api/");
  assert.equal(rewriteLocation("/relative", origins, pub, ""), "/relative", "nothing stripped");
  assert.equal(rewriteLocation("//other.org/x", origins, pub, "/api"), "//other.org/x");
  assert.equal(rewriteLocation("next", origins, pub, "/api"), "next");
  assert.equal(rewriteLocation("https://other.org/", origins, pub, ""), "https://other.org/");
});

// ---------------------------------------------------------------------------------------------
// HTTP forwarding

Deno.test("prefix rules: strip by default, strip_prefix: false, longest wins, static otherwise", async () => {
  await using a = echoBackend("a");
  await using b = echoBackend("b");
  await using c = echoBackend("c");
  await using srv = await proxyServer([
    at(a, "/api"),
    at(b, "/api/v2"),
    at(c, "/keep", { strip_prefix: false }),
  ]);
  const get = async (path: string) => {
    const res = await fetch(srv.url + path);
    return res.ok ? await res.json() : { status: res.status, text: await res.text() };
  };
  assert.deepEqual(
    [(await get("/api/users?q=1")).name, (await get("/api/users?q=1")).path],
    ["a", "/users?q=1"],
  );
  assert.equal((await get("/api")).path, "/");
  assert.equal((await get("/api/")).path, "/");
  assert.deepEqual([(await get("/api/v2/x")).name, (await get("/api/v2/x")).path], ["b", "/x"]);
  assert.equal((await get("/api/v20")).name, "a");
  assert.equal((await get("/keep/x?y")).path, "/keep/x?y");
  assert.equal((await get("/apix")).status, 404);
});

Deno.test("every method and body is forwarded, redirects are not followed", async () => {
  await using a = echoBackend();
  await using srv = await proxyServer([at(a, "/")]);
  for (const method of ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]) {
    const body = ["GET", "OPTIONS"].includes(method) ? undefined : "x".repeat(1000);
    const res = await fetch(srv.url + "/m", { method, body });
    const j = await res.json();
    assert.equal(j.method, method);
    assert.equal(j.bytes, body?.length ?? 0);
  }
  const head = await fetch(srv.url + "/h", { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), "");
});

Deno.test("headers: X-Forwarded-*, X-Real-IP, hop-by-hop dropped, backend's own Host", async () => {
  await using a = echoBackend();
  await using raw = scriptedBackend(() => ({
    bytes:
      "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n" +
      "Proxy-Authenticate: Basic\r\nX-End: kept\r\nContent-Length: 2\r\n\r\nok",
    close: true,
  }));
  await using srv = await proxyServer([at(a, "/"), at(raw, "/raw")]);
  const port = new URL(srv.url).port;
  const res = await fetch(srv.url + "/h", {
    headers: {
      "x-forwarded-for": "203.0.113.9",
      "connection": "x-custom",
      "x-custom": "drop me",
      "te": "trailers",
      "proxy-authorization": "Basic Zm9vOmJhcg==",
      "cookie": "a=1",
      "authorization": "Bearer t",
    },
  });
  assert.equal(res.headers.get("x-backend"), "echo");
  const h = (await res.json()).headers;
  assert.equal(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
  assert.equal(h["x-real-ip"], "127.0.0.1");
  assert.equal(h["x-forwarded-proto"], "http");
  assert.equal(h["x-forwarded-host"], `127.0.0.1:${port}`);
  assert.equal(h["host"], `127.0.0.1:${a.port}`);
  assert.equal(h["cookie"], "a=1");
  assert.equal(h["authorization"], "Bearer t");
  for (const gone of ["x-custom", "te", "proxy-authorization", "connection"]) {
    assert.equal(h[gone], undefined, gone);
  }
  const back = await fetch(srv.url + "/raw/");
  assert.equal(await back.text(), "ok");
  assert.equal(back.headers.get("x-end"), "kept");
  for (const gone of ["x-hop", "keep-alive", "proxy-authenticate"]) {
    assert.equal(back.headers.get(gone), null, gone);
  }
});

Deno.test("preserve_host sends the client's Host", async () => {
  await using a = echoBackend();
  await using srv = await proxyServer([at(a, "/", { preserve_host: true })]);
  const out = await new Deno.Command("curl", {
    args: ["-sS", "-H", "Host: public.example", srv.url + "/"],
  }).output();
  assert.equal(JSON.parse(new TextDecoder().decode(out.stdout)).headers.host, "public.example");
});

/** The header names the proxy adds to those of the client. */
const FORWARDED = ["x-forwarded-for", "x-real-ip", "x-forwarded-proto", "x-forwarded-host"];

Deno.test("a streamed upload reaches the backend with only the client's headers", async () => {
  await using b = recordingBackend();
  await using srv = await proxyServer([at(b, "/up")]);
  const port = Number(new URL(srv.url).port);
  const head = (framing: string) =>
    "POST /up/big HTTP/1.1\r\nHost: public.example\r\nUser-Agent: test-client/1\r\n" +
    `X-Custom: 1\r\n${framing}Connection: close\r\n\r\n`;
  const body = "x".repeat(100_000); // over the 64 KiB read whole first: streamed
  const sized = await rawRequest(port, head(`Content-Length: ${body.length}\r\n`) + body);
  assert.equal(sized.status, 200);
  assert.equal(sized.text.split("\r\n\r\n")[1], "100000");
  const chunk = `9c40\r\n${"y".repeat(40_000)}\r\n`;
  const chunked = await rawRequest(
    port,
    head("Transfer-Encoding: chunked\r\n") + chunk + chunk + chunk + "0\r\n\r\n",
  );
  assert.equal(chunked.status, 200);
  assert.equal(chunked.text.split("\r\n\r\n")[1], "120000");
  const common = ["host", "user-agent", "x-custom", ...FORWARDED];
  assertOnlyClientHeaders(b.heads[0], [...common, "content-length"]);
  assert.ok(b.heads[0].includes("content-length: 100000"));
  assertOnlyClientHeaders(b.heads[1], [...common, "transfer-encoding"]);
  for (const lines of b.heads) {
    assert.ok(lines.includes("x-forwarded-host: public.example"));
    assert.ok(lines.includes(`host: 127.0.0.1:${b.port}`));
  }
});

Deno.test("a WebSocket upgrade reaches the backend with only the client's headers", async () => {
  await using b = recordingBackend();
  await using srv = await proxyServer([at(b, "/ws")]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(srv.url).port) });
  try {
    await conn.write(enc.encode(
      "GET /ws/chat HTTP/1.1\r\nHost: public.example\r\nUser-Agent: test-client/1\r\n" +
        "Cookie: a=1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ));
    const buf = new Uint8Array(4096);
    const n = await conn.read(buf);
    assert.match(new TextDecoder().decode(buf.subarray(0, n!)), /^HTTP\/1\.1 101/);
  } finally {
    conn.close();
  }
  const lines = b.heads[0];
  assertOnlyClientHeaders(lines, [
    "host",
    "user-agent",
    "cookie",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    ...FORWARDED,
  ]);
  assert.ok(lines.includes("x-forwarded-host: public.example"));
  assert.ok(lines.includes("cookie: a=1"));
});

Deno.test("X-Forwarded-Host is the host the client named, never one made up", async () => {
  await using tmp = await tempDir();
  const certs = await makeCerts(tmp.path);
  await using b = recordingBackend();
  await using plain = await proxyServer([at(b, "/")]);
  await using tls = await proxyServer([at(b, "/")], {
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key },
  });
  // HTTP/1.0 without Host: nothing to forward, and the backend gets its own Host.
  const old = await rawRequest(
    Number(new URL(plain.url).port),
    "GET /old HTTP/1.0\r\nUser-Agent: test-client/1\r\n\r\n",
  );
  assert.equal(old.status, 200);
  assertOnlyClientHeaders(b.heads[0], ["host", "user-agent", ...FORWARDED.slice(0, 3)]);
  assert.ok(b.heads[0].includes(`host: 127.0.0.1:${b.port}`));
  // The same over TLS, where Deno's own URL names an inner port.
  const conn = await Deno.connectTls({
    hostname: "localhost",
    port: tls.server.addr.port,
    caCerts: [certs.caPem],
  });
  await conn.write(enc.encode("GET /old HTTP/1.0\r\nUser-Agent: test-client/1\r\n\r\n"));
  await new Response(conn.readable).text();
  assertOnlyClientHeaders(b.heads[1], ["host", "user-agent", ...FORWARDED.slice(0, 3)], "https");
  // HTTP/2 has no Host header: its :authority is what the client named.
  const h2 = await curl([
    "-sS",
    "--http2",
    "--cacert",
    certs.ca,
    "-A",
    "test-client/1",
    "-H",
    "Accept:",
    `https://localhost:${tls.server.addr.port}/h2`,
  ]);
  assert.equal(h2.stdout, "0");
  const lines = b.heads[2];
  assertOnlyClientHeaders(lines, ["host", "user-agent", ...FORWARDED], "https");
  assert.ok(lines.includes(`x-forwarded-host: localhost:${tls.server.addr.port}`));
});

Deno.test("redirects pass through; a Location naming the backend or a path is rewritten", async () => {
  await using b = serveBackend((request) => {
    const path = new URL(request.url).pathname;
    const location = path === "/abs"
      ? `http://127.0.0.1:${new URL(request.url).port}/login?next=1`
      : path === "/other"
      ? "https://elsewhere.example/x"
      : "/relative";
    return new Response(null, { status: 302, headers: { location } });
  });
  await using srv = await proxyServer([at(b, "/app")]);
  const get = (p: string) => fetch(srv.url + p, { redirect: "manual" });
  const abs = await get("/app/abs");
  assert.equal(abs.status, 302);
  assert.equal(abs.headers.get("location"), `${srv.url}/app/login?next=1`);
  assert.equal((await get("/app/other")).headers.get("location"), "https://elsewhere.example/x");
  assert.equal(
    (await get("/app/rel")).headers.get("location"),
    "/app/relative",
    "a relative Location gets the stripped prefix back",
  );
});

Deno.test("TLS front: X-Forwarded-Proto and Location say https (handler called directly)", async () => {
  await using b = serveBackend((request) =>
    new URL(request.url).pathname === "/go"
      ? new Response(null, {
        status: 301,
        headers: { location: `http://127.0.0.1:${new URL(request.url).port}/there` },
      })
      : Response.json(Object.fromEntries(request.headers))
  );
  const { app } = await bootRaw({ server: { reverse_proxy: [at(b, "/p")] } }, captureLogger());
  try {
    const call = async (url: string) => {
      const request = new Request(url, { headers: { host: "secure.example" } });
      const { path, query } = splitUrl(url);
      return await app.handle(request, {
        path,
        query,
        secure: true,
        remote: { transport: "tcp", hostname: "192.0.2.7", port: 5555 },
      });
    };
    const h = await (await call("https://secure.example/p/h")).json();
    assert.equal(h["x-forwarded-proto"], "https");
    assert.equal(h["x-forwarded-for"], "192.0.2.7");
    const r = await call("https://secure.example/p/go");
    assert.equal(r.headers.get("location"), "https://secure.example/p/there");
  } finally {
    app.close();
  }
});

Deno.test("streaming: first bytes arrive before the backend sends the last", async () => {
  const { promise: more, resolve: sendMore } = Promise.withResolvers<void>();
  await using b = serveBackend(() =>
    new Response(
      new ReadableStream({
        async start(c) {
          c.enqueue(enc.encode("data: one\n\n"));
          await more;
          c.enqueue(enc.encode("data: two\n\n"));
          c.close();
        },
      }),
      { headers: { "content-type": "text/event-stream" } },
    )
  );
  await using srv = await proxyServer([at(b, "/events")], {
    server: { reverse_proxy: [at(b, "/events", { response_timeout: 0.3 })] },
  });
  const res = await fetch(srv.url + "/events");
  assert.equal(res.headers.get("content-type"), "text/event-stream");
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  assert.equal((await reader.read()).value, "data: one\n\n");
  await sleep(600); // idle longer than response_timeout: the body is not cut
  sendMore();
  let rest = "";
  for (let r = await reader.read(); !r.done; r = await reader.read()) rest += r.value;
  assert.equal(rest, "data: two\n\n");
});

Deno.test("502 when the backend refuses, 504 when headers take too long", async () => {
  await using slow = serveBackend(async () => {
    await sleep(1500);
    return new Response("late");
  });
  await using srv = await proxyServer([
    { path: "/down", host: "127.0.0.1", port: freePort() },
    at(slow, "/slow", { connect_timeout: 0.1, response_timeout: 0.4 }),
    at(slow, "/slow2", { connect_timeout: 1, response_timeout: 0.3 }),
  ]);
  const down = await fetch(srv.url + "/down/x");
  assert.equal(down.status, 502);
  assert.match(await down.text(), /502 Bad Gateway/);
  const t0 = performance.now();
  const late = await fetch(srv.url + "/slow/x");
  assert.equal(late.status, 504);
  await late.body?.cancel();
  assert.ok(performance.now() - t0 < 1400, "504 came after response_timeout, not the backend");
  const late2 = await fetch(srv.url + "/slow2/x");
  assert.equal(late2.status, 504);
  await late2.body?.cancel();
  assert.ok(srv.log.lines.some((l) => /no response headers within 0.4s/.test(l)));
  assert.ok(srv.log.lines.some((l) => /127\.0\.0\.1:\d+ is down/.test(l)));
  await sleep(1200); // let the slow backend's handlers finish before it is shut down
});

Deno.test("a backend name that does not resolve is 502, and the log gives the reason once", async () => {
  // .invalid never resolves (RFC 2606).
  await using srv = await proxyServer([{ path: "/gone", host: "backend.invalid", port: 80 }]);
  const r = await fetch(srv.url + "/gone/x");
  assert.equal(r.status, 502);
  await r.body?.cancel();
  const lines = srv.log.lines.filter((l) => /backend\.invalid/.test(l) && /: [^:]+$/.test(l));
  assert.ok(lines.length > 0, srv.log.lines.join("\n"));
  for (const line of lines) {
    const reason = line.slice(line.lastIndexOf(": ") + 2);
    assert.equal(line.split(reason).length, 2, line);
  }
});

Deno.test("describeError: the cause is added when it says more, not when it repeats", () => {
  const os = new Error("failed to lookup address information: Name or service not known");
  assert.equal(
    describeError(new ConnectError(os.message, false, { cause: os })),
    "failed to lookup address information: Name or service not known",
  );
  assert.equal(
    describeError(new Error("fetch failed", { cause: new Error("reset\nby peer") })),
    "fetch failed: reset",
  );
  assert.equal(describeError("plain"), "plain");
});

const hasPython = hasCommand("python3") !== null;

Deno.test({
  name: "504 when the backend cannot be connected within connect_timeout",
  ignore: !hasPython,
  async fn() {
    await using hole = await blackhole();
    await using srv = await proxyServer([{
      path: "/",
      host: "127.0.0.1",
      port: hole.port,
      connect_timeout: 0.4,
      response_timeout: 10,
    }]);
    const t0 = performance.now();
    const res = await fetch(srv.url + "/x");
    const ms = performance.now() - t0;
    assert.equal(res.status, 504);
    await res.body?.cancel();
    assert.ok(ms < 3000, `504 after ${ms.toFixed(0)} ms`);
    assert.ok(srv.log.lines.some((l) => /is down for 10s: no connection within 0.4s/.test(l)));
  },
});
if (!hasPython) {
  console.log(
    "connect timeout test skipped: python3 (for a listener that never accepts) is missing",
  );
}

Deno.test("a client that goes away aborts the backend request", async () => {
  const waiting = Promise.withResolvers<void>();
  const headersAborted = Promise.withResolvers<void>();
  const bodyCancelled = Promise.withResolvers<void>();
  await using b = serveBackend((request) => {
    if (new URL(request.url).pathname === "/wait") {
      request.signal.addEventListener("abort", () => headersAborted.resolve());
      waiting.resolve();
      return new Promise<Response>((r) =>
        request.signal.addEventListener("abort", () => r(new Response("gone")))
      );
    }
    return new Response(
      new ReadableStream({
        start(c) {
          c.enqueue(new Uint8Array(1000));
        },
        cancel() {
          bodyCancelled.resolve();
        },
      }),
    );
  });
  await using srv = await proxyServer([at(b, "/")]);
  const before = new AbortController();
  const p1 = fetch(srv.url + "/wait", { signal: before.signal }).catch(() => "aborted");
  await waiting.promise;
  before.abort();
  assert.equal(await p1, "aborted");
  await headersAborted.promise;

  const during = new AbortController();
  const res = await fetch(srv.url + "/stream", { signal: during.signal });
  const reader = res.body!.getReader();
  await reader.read();
  during.abort();
  await reader.read().catch(() => {});
  await bodyCancelled.promise;
});

Deno.test("a backend dying mid-body aborts the client's connection and is logged", async () => {
  await using withLength = scriptedBackend(() => ({
    bytes: "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + "\0".repeat(5000),
    close: true,
  }));
  await using chunked = scriptedBackend(() => ({
    bytes: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + "x".repeat(4096) +
      "\r\n",
    close: true,
  }));
  await using srv = await proxyServer([at(withLength, "/len"), at(chunked, "/chunked")]);
  for (const path of ["/len/x", "/chunked/x"]) {
    const res = await fetch(srv.url + path);
    assert.equal(res.status, 200);
    await assert.rejects(res.arrayBuffer(), path);
  }
  // curl agrees: the transfer is reported as cut, not complete.
  const out = await new Deno.Command("curl", {
    args: ["-sS", "-o", "/dev/null", srv.url + "/len/x"],
    stderr: "piped",
    stdout: "null",
  }).output();
  assert.notEqual(out.code, 0);
  assert.ok(srv.log.lines.filter((l) => /broke off the response/.test(l)).length >= 2);
});

Deno.test("only a GET with Upgrade: websocket is bridged; other methods are plain requests", async () => {
  await using echo = echoBackend();
  await using srv = await proxyServer([at(echo, "/api")]);
  const res = await fetch(srv.url + "/api/x", {
    method: "DELETE",
    headers: { upgrade: "websocket", connection: "upgrade" },
  });
  assert.equal(res.status, 200);
  const seen = await res.json();
  assert.equal(seen.method, "DELETE");
  assert.equal(seen.headers.upgrade, undefined, "Upgrade is hop-by-hop");
});

Deno.test("websocket: false passes an upgrade on as a plain GET without Upgrade", async () => {
  await using echo = echoBackend();
  await using ws = webSocketBackend();
  await using srv = await proxyServer([
    at(echo, "/plain", { websocket: false }),
    at(ws, "/ws", { websocket: true }),
  ]);
  assert.deepEqual(srv.config.server.reverse_proxy.map((r) => r.websocket), [false, true]);
  const upgrade = {
    upgrade: "websocket",
    connection: "Upgrade",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "13",
  };
  const res = await fetch(srv.url + "/plain/chat", { headers: upgrade });
  assert.equal(res.status, 200, "the backend's own answer, not a refused handshake");
  const seen = await res.json();
  assert.equal(seen.method, "GET");
  assert.equal(seen.path, "/chat");
  assert.equal(seen.headers.upgrade, undefined, "no Upgrade reaches the backend");
  assert.equal(seen.headers["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
  // `websocket: true` (as when absent) still bridges.
  const socket = new WebSocket(srv.url.replace("http", "ws") + "/ws/x");
  const opened = Promise.withResolvers<void>();
  socket.onopen = () => opened.resolve();
  socket.onerror = () => opened.reject(new Error("WebSocket through websocket: true failed"));
  const closed = new Promise((r) => socket.onclose = r);
  await opened.promise;
  socket.close();
  await closed;
});

Deno.test("a small answer the backend breaks off becomes a logged 502, never a short 200", async () => {
  await using short = scriptedBackend(() => ({
    bytes: "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this",
    close: true,
  }));
  await using srv = await proxyServer([at(short, "/short")]);
  const res = await fetch(srv.url + "/short/x");
  assert.equal(res.status, 502);
  await res.body?.cancel();
  assert.ok(srv.log.lines.some((l) => /broke off the response to GET \/short\/x/.test(l)));
});

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 to backends

const okAnswer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/** A gzip body, and a backend answer that carries it. */
const gz = new Uint8Array(
  await new Response(
    new Blob(["compressed"]).stream().pipeThrough(new CompressionStream("gzip")),
  ).arrayBuffer(),
);
const gzipAnswer = new Uint8Array([
  ...enc.encode(
    `HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: ${gz.length}\r\n\r\n`,
  ),
  ...gz,
]);

/** The client of `url` gets `gzipAnswer`'s body as sent: still gzip, its length unchanged. */
async function assertGzipPassed(url: string, path: string) {
  const raw = await rawRequest(
    Number(new URL(url).port),
    `GET ${path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n`,
  );
  assert.equal(raw.status, 200);
  assert.equal(new Map(raw.headers).get("content-encoding"), "gzip");
  assert.equal(new Map(raw.headers).get("content-length"), String(gz.length));
}

Deno.test("backend connections are reused; one the backend closes while idle is not", async () => {
  await using kept = scriptedBackend(() => ({ bytes: okAnswer }));
  // Closes each connection 20 ms after answering, as a backend with a short keep-alive does.
  await using brief = scriptedBackend(() => ({ bytes: okAnswer, closeAfterMs: 20 }));
  await using srv = await proxyServer([at(kept, "/kept"), at(brief, "/brief")]);
  for (let i = 0; i < 20; i++) assert.equal(await (await fetch(srv.url + "/kept/x")).text(), "ok");
  assert.equal(kept.connections, 1, "twenty requests in a row share one backend connection");
  // A POST is never sent twice; it must not meet a connection the backend has closed.
  for (let i = 0; i < 5; i++) {
    const res = await fetch(srv.url + "/brief/x", { method: "POST", body: "data" });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "ok");
    await sleep(60);
  }
  assert.equal(brief.connections, 5);
  assert.ok(!srv.log.lines.some((l) => /brief|invalid/.test(l) && /WARN|ERROR/.test(l)));
});

Deno.test("response framing: chunked, close-delimited, 1xx skipped, HEAD, bytes as sent", async () => {
  const big = "y".repeat(100_000);
  await using b = scriptedBackend((head) => {
    const path = head.split(" ")[1];
    if (path === "/chunked") {
      return {
        bytes: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" +
          "5;ext=1\r\nhello\r\n" + big.length.toString(16) + "\r\n" + big + "\r\n" +
          "0\r\nx-trailer: 1\r\n\r\n",
      };
    }
    if (path === "/close") {
      return {
        bytes: "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end",
        close: true,
      };
    }
    if (path === "/interim") {
      return {
        bytes: "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n" +
          "HTTP/1.1 200 OK\r\nConnection: x-private\r\nx-private: 1\r\nx-kept: 1\r\n" +
          "content-length: 5\r\n\r\nfinal",
      };
    }
    if (path === "/head") return { bytes: "HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n" };
    return { bytes: gzipAnswer };
  });
  await using srv = await proxyServer([at(b, "/")]);
  const chunked = await fetch(srv.url + "/chunked");
  assert.equal(await chunked.text(), "hello" + big);
  const close = await fetch(srv.url + "/close");
  assert.equal(await close.text(), "until the end");
  const interim = await fetch(srv.url + "/interim");
  assert.equal(interim.status, 200);
  assert.equal(await interim.text(), "final");
  assert.equal(interim.headers.get("x-private"), null, "a header named in Connection is dropped");
  assert.equal(interim.headers.get("x-kept"), "1");
  const head = await fetch(srv.url + "/head", { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("content-length"), "1234");
  // The client gets the backend's bytes: no decoding on the way.
  await assertGzipPassed(srv.url, "/gz");
});

Deno.test("V2 proxy_pass uses the same client: kept-alive connections, answers as sent", async () => {
  await using b = scriptedBackend(() => ({ bytes: gzipAnswer }));
  await using srv = await proxyServer([], {
    version: 2,
    extensions: [{
      type: "routing",
      config: { regex_locations: { "^~/v2/": { proxy_pass: `http://127.0.0.1:${b.port}` } } },
    }],
  });
  for (let i = 0; i < 10; i++) await assertGzipPassed(srv.url, "/v2/x");
  assert.equal(b.connections, 1, "ten requests share one backend connection");
});

Deno.test("an invalid backend answer is a logged 502", async () => {
  const answers: Record<string, string> = {
    "/status": "HTTP/1.1 2OO OK\r\n\r\n",
    "/lengths": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "/fold": "HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 0\r\n\r\n",
    "/huge": "HTTP/1.1 200 OK\r\n" + `x-big: ${"z".repeat(70_000)}\r\n` +
      "content-length: 0\r\n\r\n",
    "/switch": "HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
  };
  await using b = scriptedBackend((head) => ({ bytes: answers[head.split(" ")[1]], close: true }));
  await using srv = await proxyServer([at(b, "/")]);
  for (const path of Object.keys(answers)) {
    const res = await fetch(srv.url + path);
    assert.equal(res.status, 502, path);
    await res.body?.cancel();
    assert.ok(
      srv.log.lines.some((l) => l.includes(`GET ${path} with an invalid response`)),
      `${path} is logged`,
    );
  }
});

// ---------------------------------------------------------------------------------------------
// Several backends

Deno.test("round robin spreads requests; a dead backend is skipped and retried later", async () => {
  await using a = echoBackend("a");
  await using b = echoBackend("b");
  const dead = freePort();
  await using srv = await proxyServer([
    { path: "/rr", upstreams: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`] },
    {
      path: "/dead",
      upstreams: [`127.0.0.1:${a.port}`, `127.0.0.1:${dead}`],
      fail_timeout: 30,
    },
  ]);
  const names: string[] = [];
  for (let i = 0; i < 6; i++) names.push((await (await fetch(srv.url + "/rr/x")).json()).name);
  assert.equal(names.filter((n) => n === "a").length, 3);
  assert.equal(names.filter((n) => n === "b").length, 3);
  for (let i = 0; i < 6; i++) {
    const res = await fetch(srv.url + "/dead/x");
    assert.equal(res.status, 200, "the GET is retried on the live backend");
    await res.body?.cancel();
  }
  const downs = srv.log.lines.filter((l) => l.includes(`127.0.0.1:${dead} is down`));
  assert.equal(downs.length, 1, "marked down once, then skipped");
  // A POST is not retried: it fails only if it hits the dead one, which is now skipped.
  const post = await fetch(srv.url + "/dead/x", { method: "POST", body: "x" });
  assert.equal(post.status, 200);
  await post.body?.cancel();
});

Deno.test("least_conn sends new requests to the idle backend", async () => {
  const release = Promise.withResolvers<void>();
  const holding = Promise.withResolvers<void>();
  await using a = serveBackend(async (request) => {
    if (new URL(request.url).pathname === "/hold") {
      holding.resolve();
      await release.promise;
    }
    return new Response("a");
  });
  await using b = serveBackend(() => new Response("b"));
  await using srv = await proxyServer([{
    path: "/",
    upstreams: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`],
    lb: "least_conn",
  }]);
  const held = fetch(srv.url + "/hold").then((r) => r.text());
  await holding.promise;
  const got: string[] = [];
  for (let i = 0; i < 4; i++) got.push(await (await fetch(srv.url + "/x")).text());
  assert.deepEqual(got, ["b", "b", "b", "b"]);
  release.resolve();
  assert.equal(await held, "a");
});

Deno.test("active health check skips a backend whose health path fails", async () => {
  let sick = true;
  await using a = serveBackend((r) =>
    new URL(r.url).pathname === "/health" && sick
      ? new Response("no", { status: 503 })
      : new Response("a")
  );
  await using b = serveBackend(() => new Response("b"));
  await using srv = await proxyServer([{
    path: "/",
    upstreams: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`],
    health_path: "/health",
    health_interval: 0.1,
  }]);
  await sleep(250);
  const got: string[] = [];
  for (let i = 0; i < 4; i++) got.push(await (await fetch(srv.url + "/x")).text());
  assert.deepEqual(got, ["b", "b", "b", "b"]);
  sick = false;
  await sleep(300);
  const after: string[] = [];
  for (let i = 0; i < 4; i++) after.push(await (await fetch(srv.url + "/x")).text());
  assert.ok(after.includes("a"));
  assert.ok(srv.log.lines.some((l) => /health check of .*\/health failed \(status 503\)/.test(l)));
});

// ---------------------------------------------------------------------------------------------
// TLS backends

Deno.test("https backends: ca_file verifies, no CA fails, insecure_skip_verify warns", async () => {
  await using tmp = await tempDir();
  const pki = await makeBackendCerts(tmp.path);
  await using tlsBackend = echoBackend("tls", { cert: pki.cert, key: pki.key });
  await using srv = await proxyServer([
    at(tlsBackend, "/ca", { ssl: true, ca_file: pki.ca }),
    at(tlsBackend, "/noca", { ssl: true }),
    at(tlsBackend, "/insecure", { ssl: true, insecure_skip_verify: true }),
  ]);
  const ok = await fetch(srv.url + "/ca/x");
  assert.equal(ok.status, 200);
  assert.equal((await ok.json()).path, "/x");
  const bad = await fetch(srv.url + "/noca/x");
  assert.equal(bad.status, 502);
  await bad.body?.cancel();
  assert.ok(srv.log.lines.some((l) => /UnknownIssuer|certificate/i.test(l)));
  const insecure = await fetch(srv.url + "/insecure/y?z", { method: "POST", body: "abc" });
  assert.equal(insecure.status, 200);
  const j = await insecure.json();
  assert.deepEqual([j.path, j.bytes], ["/y?z", 3]);
  assert.ok(srv.log.lines.some((l) => /WARNING .*insecure_skip_verify is on/.test(l)));
});

// ---------------------------------------------------------------------------------------------
// WebSocket

function openWs(url: string, protocols?: string[], headers?: HeadersInit): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { protocols, headers });
    ws.binaryType = "arraybuffer";
    ws.onopen = () => resolve(ws);
    ws.onerror = (e) => reject(new Error((e as ErrorEvent).message));
  });
}

const nextMessage = (ws: WebSocket) =>
  new Promise<string | ArrayBuffer>((r) =>
    ws.addEventListener("message", (e) => r(e.data), { once: true })
  );
const closed = (ws: WebSocket) =>
  new Promise<CloseEvent>((r) =>
    ws.addEventListener("close", (e) => r(e as CloseEvent), { once: true })
  );

Deno.test("WebSocket: text and binary both ways, subprotocol, cookies, close codes", async () => {
  await using b = webSocketBackend();
  await using srv = await proxyServer([at(b, "/ws")]);
  const wsUrl = srv.url.replace("http:", "ws:") + "/ws/chat";
  const ws = await openWs(wsUrl, ["x-unknown", "chat"], { cookie: "session=abc" });
  assert.equal(ws.protocol, "chat");
  ws.send("hello");
  assert.equal(await nextMessage(ws), "hello");
  ws.send(new Uint8Array([1, 2, 3, 255]));
  const bin = await nextMessage(ws);
  assert.ok(bin instanceof ArrayBuffer);
  assert.deepEqual([...new Uint8Array(bin)], [1, 2, 3, 255]);
  ws.send("who");
  assert.equal(await nextMessage(ws), "session=abc");
  // Lengths in 16 and 64 bits, and an odd length (the masking of the last bytes).
  const big = new Uint8Array(200_003).map((_, i) => i * 7);
  ws.send(big);
  assert.deepEqual(new Uint8Array(await nextMessage(ws) as ArrayBuffer), big);
  const text = "é✓".repeat(30_001);
  ws.send(text);
  assert.equal(await nextMessage(ws), text);
  const seen = b.seen.at(-1)!;
  assert.equal(new URL(seen.url).pathname, "/chat");
  assert.equal(seen.headers.get("x-forwarded-for"), "127.0.0.1");
  const c = closed(ws);
  ws.send("close-me");
  const e = await c;
  assert.deepEqual([e.code, e.reason], [4001, "asked to"]);

  const ws2 = await openWs(wsUrl);
  assert.equal(ws2.protocol, "");
  ws2.close(4002, "client done");
  await closed(ws2);
  for (let i = 0; i < 50 && !b.closes.some((x) => x.code === 4002); i++) await sleep(20);
  assert.ok(b.closes.some((x) => x.code === 4002 && x.reason === "client done"));
});

Deno.test("WebSocket: wss backend with ca_file; unreachable backend gets 502", async () => {
  await using tmp = await tempDir();
  const pki = await makeBackendCerts(tmp.path);
  await using b = webSocketBackend({ cert: pki.cert, key: pki.key });
  await using srv = await proxyServer([
    at(b, "/wss", { ssl: true, ca_file: pki.ca }),
    { path: "/nows", host: "127.0.0.1", port: freePort() },
  ]);
  const ws = await openWs(srv.url.replace("http:", "ws:") + "/wss/");
  ws.send("secure hello");
  assert.equal(await nextMessage(ws), "secure hello");
  const c = closed(ws);
  ws.close();
  await c;
  const res = await fetch(srv.url + "/nows/", {
    headers: {
      upgrade: "websocket",
      connection: "Upgrade",
      "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      "sec-websocket-version": "13",
    },
  });
  assert.equal(res.status, 502);
  await res.body?.cancel();
});

Deno.test("WebSocket: a client that stops reading is disconnected, not buffered without end", async () => {
  const backendClosed = Promise.withResolvers<number>();
  await using b = serveBackend((request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onopen = () => {
      const mib = new Uint8Array(1024 * 1024);
      for (let i = 0; i < 64 && socket.readyState === WebSocket.OPEN; i++) socket.send(mib);
    };
    socket.onclose = (e) => backendClosed.resolve(e.code);
    return response;
  });
  await using srv = await proxyServer([at(b, "/flood")]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(srv.url).port) });
  try {
    await conn.write(enc.encode(
      "GET /flood/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ));
    const buf = new Uint8Array(4096);
    const n = await conn.read(buf);
    assert.match(new TextDecoder().decode(buf.subarray(0, n!)), /^HTTP\/1\.1 101/);
    // From here on the client reads nothing.
    const code = await Promise.race([backendClosed.promise, sleep(10_000).then(() => -1)]);
    assert.equal(code, 4013);
    assert.ok(srv.log.lines.some((l) => /closed: the client reads too slowly/.test(l)));
  } finally {
    conn.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Big bodies through the real CLI, with its memory watched

const BIG = 256 * 1024 * 1024;

Deno.test({
  name: "256 MiB upload and download stream through with flat memory",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const chunk = new Uint8Array(256 * 1024);
    await using b = serveBackend(async (request) => {
      if (request.method === "POST" || request.method === "PUT") {
        let n = 0;
        for await (const c of request.body!) n += c.byteLength;
        return new Response(String(n));
      }
      let sent = 0;
      return new Response(
        new ReadableStream({
          pull(c) {
            if (sent >= BIG) return c.close();
            c.enqueue(chunk.slice());
            sent += chunk.byteLength;
          },
        }),
        { headers: { "content-length": String(BIG) } },
      );
    });
    await using tmp = await tempDir();
    await using cli = await spawnCli([
      "-p",
      "0",
      "-s",
      tmp.path,
      "--proxy",
      `127.0.0.1:${b.port}/big`,
    ]);
    const pid = cli.process.pid;
    await (await fetch(cli.url + "/big/warm", { method: "POST", body: "x" })).text();
    const base = rssBytes(pid) / 1024;

    // curl on both ends: a real client with its own flow control, streaming from a pipe.
    const upload = new Deno.Command("curl", {
      args: ["-sS", "-T", "-", cli.url + "/big/up"],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const writer = upload.stdin.getWriter();
    for (let sent = 0; sent < BIG; sent += chunk.byteLength) await writer.write(chunk);
    await writer.close();
    const up = await upload.output();
    assert.equal(new TextDecoder().decode(up.stdout), String(BIG));

    const down = await new Deno.Command("curl", {
      args: ["-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", cli.url + "/big/dl"],
    }).output();
    assert.equal(new TextDecoder().decode(down.stdout), `200 ${BIG}`);

    const peak = rssBytes(pid, "VmHWM") / 1024;
    const growthMiB = (peak - base) / 1024;
    console.log(
      `proxy RSS ${(base / 1024).toFixed(0)} MiB at rest, peak +${growthMiB.toFixed(0)} MiB ` +
        `after ${BIG >> 20} MiB up and down`,
    );
    // Response bodies pass through JavaScript (to see a backend break off); V8 collects their
    // buffers once about 64 MiB are outstanding, so the peak is bounded, not proportional.
    assert.ok(growthMiB < 128, `proxy memory grew by ${growthMiB.toFixed(0)} MiB`);
  },
});

// ---------------------------------------------------------------------------------------------
// CLI

Deno.test("CLI: --proxy forwards; the start-up check warns about a dead backend", async () => {
  await using a = echoBackend();
  await using tmp = await tempDir();
  const dead = freePort();
  await using cli = await spawnCli([
    "-p",
    "0",
    "-s",
    tmp.path,
    "--proxy",
    `127.0.0.1:${a.port}/api`,
    "--proxy",
    `127.0.0.1:${dead}/gone`,
  ]);
  assert.match(
    cli.output(),
    new RegExp(`backend 127\\.0\\.0\\.1:${dead} for /gone is not reachable`),
  );
  assert.doesNotMatch(cli.output(), new RegExp(`${a.port} for /api is not reachable`));
  const res = await fetch(cli.url + "/api/v?x=1");
  assert.equal((await res.json()).path, "/v?x=1");
  const gone = await fetch(cli.url + "/gone/");
  assert.equal(gone.status, 502);
  await gone.body?.cancel();

  await using quiet = await spawnCli([
    "-p",
    "0",
    "-s",
    tmp.path,
    "--skip-proxy-check",
    "--proxy",
    `127.0.0.1:${dead}/gone`,
  ]);
  assert.doesNotMatch(quiet.output(), /not reachable/);
});

Deno.test("CLI: a missing ca_file is a configuration error naming the key", async () => {
  await using tmp = await tempDir();
  await Deno.writeTextFile(
    `${tmp.path}/config.yaml`,
    "server:\n  reverse_proxy:\n    - path: /s\n      ssl: true\n      port: 8443\n      ca_file: ./nope.pem\n",
  );
  const r = await runCli(["-c", `${tmp.path}/config.yaml`, "-p", "0", "--skip-proxy-check"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /server\.reverse_proxy\[0\]\.ca_file: .*nope\.pem does not exist/);
});
