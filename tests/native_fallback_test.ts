/**
 * The slower path of the native connection layer (src/server/native_http.ts), taken when the
 * start-up check fails on some other Deno: forced here, then the same things a user relies on are
 * checked through it: pages over plain HTTP, HTTP/1.1 and HTTP/2 over TLS, TCP_NODELAY, WebSockets
 * both ways, the header timeout, and smuggling refused.
 */
import assert from "node:assert/strict";
import { echoBackend, webSocketBackend } from "./support/backends.ts";
import { makeCerts } from "./support/certs.ts";
import { curl, hasCommand } from "./support/cli.ts";
import { closedWithin, rawRequest } from "./support/clients.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { startTestServer } from "./support/servers.ts";
import { servedWithNoDelay } from "./support/sockets.ts";
import { fastPath, useFallback } from "../src/server/native_http.ts";

useFallback("forced by the test");

/** Opens `n` WebSockets to `url`, sends each a message, and checks every echo. */
async function echoed(url: string, n: number, client?: Deno.HttpClient) {
  const sockets = await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(url, client ? { client } as unknown as string[] : undefined);
        ws.onopen = () => resolve(ws);
        ws.onerror = (e) => reject(new Error(`a WebSocket failed: ${(e as ErrorEvent).message}`));
      })),
  );
  // Twice, the second time well after the upgrade.
  for (const round of ["a", "b"]) {
    await Promise.all(sockets.map((ws, i) =>
      new Promise<void>((resolve, reject) => {
        ws.onmessage = (e) => e.data === `${round}${i}` ? resolve() : reject(new Error(e.data));
        ws.onclose = (e) => reject(new Error(`closed ${e.code} before the echo of ${round}${i}`));
        ws.send(`${round}${i}`);
      })
    ));
    await new Promise((r) => setTimeout(r, 200));
  }
  await Promise.all(sockets.map((ws) =>
    new Promise<void>((resolve) => {
      ws.onclose = () => resolve();
      ws.close();
    })
  ));
}

for (const secure of [false, true]) {
  const kind = secure ? "TLS" : "plain";
  Deno.test(`fallback (${kind}): pages, HTTP/2, WebSockets both ways, smuggling refused, header timeout`, async () => {
    assert.equal(fastPath(), false);
    await using dir = await tempDir();
    await writeFiles(dir.path, { "site/index.html": "home" });
    const certs = secure ? await makeCerts(dir.path) : undefined;
    await using ws = webSocketBackend();
    await using backend = echoBackend();
    const srv = await startTestServer({
      server: {
        header_timeout: 1,
        reverse_proxy: [
          { path: "/ws", host: "127.0.0.1", port: ws.port, websocket: true },
          { path: "/api", host: "127.0.0.1", port: backend.port },
        ],
      },
      http: { static_dir: `${dir.path}/site` },
      ...(certs ? { ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key } } : {}),
    });
    try {
      // Said once per process, at the first start.
      if (!secure) {
        assert.ok(
          srv.log.lines.some((l) => /older server \(Deno\.serveHttp\)/.test(l)),
          srv.log.lines.join("\n"),
        );
      }
      const port = srv.server.addr.port;
      const base = `${secure ? "https" : "http"}://localhost:${port}`;
      using client = Deno.createHttpClient(certs ? { caCerts: [certs.caPem] } : {});
      assert.equal(await (await fetch(`${base}/`, { client })).text(), "home");
      assert.equal(await servedWithNoDelay(srv.url, certs?.caPem), true, "TCP_NODELAY");
      if (certs && hasCommand("curl")) {
        for (const version of ["--http2", "--http1.1"]) {
          const out = await curl([
            "-sS",
            version,
            "--cacert",
            certs.ca,
            "-w",
            " %{http_version}",
            `${base}/`,
          ]);
          assert.equal(out.stdout, `home ${version === "--http2" ? "2" : "1.1"}`, out.stderr);
        }
      }
      await echoed(`${secure ? "wss" : "ws"}://localhost:${port}/ws/echo`, 50, client);
      if (!secure) {
        // CL+TE with a request hidden after the chunked body: the body is taken as chunked, the
        // connection then closed; what came after it never reaches the backend.
        const hidden = "GET /api/hidden HTTP/1.1\r\nHost: a\r\n\r\n";
        const both = await rawRequest(
          port,
          "POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n" +
            `Content-Length: ${5 + hidden.length}\r\n\r\n0\r\n\r\n${hidden}`,
          10_000,
        );
        assert.ok(both.closed, "the server closed the connection");
        assert.equal(both.text.match(/HTTP\/1\.1 /g)?.length, 1, both.text);
        assert.deepEqual(backend.seen.map((r) => r.path), ["/x"]);
        // An unknown coding: 400, unanswered by the backend.
        const unknown = await rawRequest(
          port,
          "POST /api/y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        );
        assert.equal(unknown.status, 400, unknown.text);
        assert.deepEqual(backend.seen.map((r) => r.path), ["/x"]);
        const slow = await Deno.connect({ hostname: "127.0.0.1", port });
        await slow.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: a\r\nX-a: "));
        assert.ok(await closedWithin(slow, 15_000), "the half-sent head was closed");
        slow.close();
      }
    } finally {
      await srv[Symbol.asyncDispose]();
    }
  });
}
