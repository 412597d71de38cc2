/**
 * Hostile input against the real server: path traversal, malformed requests over raw TCP,
 * request smuggling through `proxy_pass`, header injection, a seeded fuzz run, and Basic auth
 * timing and logging.
 */
import assert from "node:assert/strict";
import { type Backend, echoBackend } from "./support/backends.ts";
import { makeCerts } from "./support/certs.ts";
import { rawRequest } from "./support/clients.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { seeded } from "./support/random.ts";
import { startTestServer, type TestServer } from "./support/servers.ts";

/** A site folder with a canary file beside it (outside the root) and symlinks pointing out. */
async function hostileSite(dir: string) {
  const canary = `CANARY-${crypto.randomUUID()}`;
  await writeFiles(dir, {
    "canary.txt": canary,
    "site/index.html": "<h1>home</h1>",
    "site/sub/a.txt": "a",
    "site/docs.html": "docs",
    "site/admin/secret.txt": "secret",
  });
  await Deno.symlink(`${dir}/canary.txt`, `${dir}/site/escape.txt`);
  await Deno.symlink(dir, `${dir}/site/up`);
  await Deno.symlink("../canary.txt", `${dir}/site/sub/rel.txt`);
  return { canary, root: `${dir}/site` };
}

/**
 * At least 200 ways of writing a path that leads outside the root, all ending in the canary's
 * name (or /etc/passwd), so that none of them can rightly be answered with 200.
 */
function traversalCorpus(absCanary: string): string[] {
  const dots = [
    "..",
    "%2e%2e",
    "%2E%2E",
    "%2e%2E",
    ".%2e",
    "%2e.",
    "%252e%252e",
    "%c0%ae%c0%ae",
    "%e0%80%ae%e0%80%ae",
    "%c0%2e%c0%2e",
    "..%00",
    "%2e%2e%00",
  ];
  const seps = ["/", "%2f", "%2F", "\\", "%5c", "%5C", "%252f", "%c0%af", "%c1%9c", "//", "/./"];
  const corpus = new Set<string>();
  for (const d of dots) {
    for (const s of seps) {
      corpus.add(`/${d}${s}canary.txt`);
      corpus.add(`/static/${d}${s}${d}${s}canary.txt`);
    }
  }
  for (const d of ["..", "%2e%2e", "%252e%252e", "..%5c", "%2e%2e%5c"]) {
    corpus.add(`/sub/${d}/${d}/canary.txt`);
    corpus.add(`/sub/${d}%2f${d}%2fcanary.txt`);
    corpus.add(`/${d}/`.repeat(8) + "etc/passwd");
    corpus.add(`/static/${"../".repeat(8)}etc/passwd`.replace(/\.\.\//g, `${d}/`));
  }
  const encodedAbs = absCanary.split("/").map(encodeURIComponent).join("%2f");
  const extra = [
    // absolute paths
    `/${absCanary}`,
    `//${absCanary.slice(1)}`,
    `/${encodedAbs}`,
    `/static/${encodedAbs}`,
    `/%2f${absCanary.slice(1)}`,
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    "/etc/passwd",
    "/static//etc/passwd",
    `/file:${absCanary}`,
    `/file:%2f%2f${absCanary.slice(1)}`,
    // NUL bytes
    "/index.html%00/../../canary.txt",
    "/canary.txt%00.html",
    "/%00../canary.txt",
    "/sub/a.txt%00/../../../canary.txt",
    // Windows drive letters and UNC forms
    "/C:/Windows/win.ini",
    "/c:%5cwindows%5cwin.ini",
    "/C%3a%2fcanary.txt",
    "/C:%2f..%2fcanary.txt",
    "/%5c%5cserver%5cshare%5ccanary.txt",
    "/\\\\server\\share\\canary.txt",
    "/D:..%5ccanary.txt",
    "/static/C:/canary.txt",
    // symlinks that point out of the root
    "/escape.txt",
    "/static/escape.txt",
    "/up/canary.txt",
    "/up/site/../canary.txt",
    "/up%2fcanary.txt",
    "/static/up/canary.txt",
    "/sub/rel.txt",
    "/static/sub/rel.txt",
    // mixed case and double encodings of the separator only
    "/..%2F..%2Fcanary.txt",
    "/%2E%2e%2F%2e%2E%2Fcanary.txt",
    "/%252E%252E%252Fcanary.txt",
    "/%25%32%65%25%32%65/canary.txt",
    "/.%252e/canary.txt",
    "/..;/canary.txt",
    "/..%3b/canary.txt",
    "/...//canary.txt",
    "/..../canary.txt",
    "/..%u2216canary.txt",
    "/%uff0e%uff0e/canary.txt",
    "/%ef%bc%8e%ef%bc%8e/canary.txt",
    "/%e2%80%a5/canary.txt",
    "/sub/..%ef%bc%8fcanary.txt",
    "/%3f/../canary.txt",
    "/%23/../canary.txt",
  ];
  for (const e of extra) corpus.add(e);
  return [...corpus];
}

Deno.test("path traversal: 200+ variants never read the canary outside the root", async () => {
  await using dir = await tempDir();
  const { canary, root } = await hostileSite(dir.path);
  await using srv = await startTestServer({ http: { static_dir: root, directory_listing: true } });
  const port = srv.server.addr.port;
  const corpus = traversalCorpus(`${dir.path}/canary.txt`);
  assert.ok(corpus.length >= 200, `corpus has ${corpus.length} variants`);
  const statuses = new Map<number, number>();
  const bad: string[] = [];
  // Sent byte for byte over raw TCP: no client-side normalization of dots or backslashes.
  for (let i = 0; i < corpus.length; i += 16) {
    await Promise.all(
      corpus.slice(i, i + 16).map(async (path) => {
        const answer = await rawRequest(
          port,
          `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
        );
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
        if (answer.text.includes(canary) || /root:.*:0:0:/.test(answer.text)) {
          bad.push(`${path}: LEAKED the canary (${answer.status})`);
        } else if (answer.status !== 400 && answer.status !== 404) {
          bad.push(`${path}: ${answer.status}`);
        }
      }),
    );
  }
  // The same corpus through fetch, which normalizes some forms before sending.
  for (const path of corpus.slice(0, 60)) {
    const res = await fetch(`${srv.url}${path.replaceAll("#", "%23")}`);
    const body = await res.text();
    if (body.includes(canary)) bad.push(`fetch ${path}: LEAKED the canary`);
  }
  console.log(
    `traversal: ${corpus.length} variants, statuses ${
      JSON.stringify(Object.fromEntries(statuses))
    }`,
  );
  assert.deepEqual(bad, []);
  // The site itself still works.
  assert.equal(
    (await rawRequest(
      port,
      "GET /sub/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      10_000,
    ))
      .status,
    200,
  );
});

/** What the backend saw, one `METHOD path bytes` line per request (bytes once it read them). */
const sawLines = (backend: Backend) =>
  backend.seen.map((r) => `${r.method} ${r.path} ${r.bytes ?? "?"}`);

/** A server with a redirect, an auth prefix, V2 `return` and `proxy_pass` locations. */
async function hostileServer(
  root: string,
  backendPort: number,
  ssl?: Record<string, unknown>,
): Promise<TestServer> {
  return await startTestServer({
    ...(ssl ? { ssl } : {}),
    version: 2,
    http: { static_dir: root },
    server: {
      redirect_instructions: [{ "/docs": "/docs.html" }],
      locations: { "/admin": { auth: { type: "basic", username: "admin", password: "s3cret" } } },
      reverse_proxy: [{ path: "/rp", host: "127.0.0.1", port: backendPort }],
    },
    extensions: [{
      type: "routing",
      config: {
        regex_locations: {
          "~^/go/(?P<rest>[\\s\\S]*)$": { return: "302 https://example.com/{rest}" },
          "~^/tag/(?P<name>[^/]*)$": {
            return: "200 tagged",
            headers: ["X-Tag: {name}", "X-Uri: $uri"],
          },
          "^~/api/": { proxy_pass: `http://127.0.0.1:${backendPort}`, headers: ["X-Via: {x}"] },
          "=/health": { return: "200 OK" },
        },
      },
    }],
  });
}

Deno.test("malformed requests over raw TCP get 400 and leave the server serving", async () => {
  await using dir = await tempDir();
  const { root } = await hostileSite(dir.path);
  await using backend = echoBackend();
  await using srv = await hostileServer(root, backend.port);
  const port = srv.server.addr.port;
  const cases: [string, string, number[]][] = [
    ["request line without a version", "GET /\r\n\r\n", [400]],
    ["garbage request line", "GARBAGE\r\n\r\n", [400]],
    ["unknown HTTP version", "GET / HTTP/9.9\r\nHost: a\r\n\r\n", [400]],
    ["space in a header name", "GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", [400]],
    ["header without a colon", "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", [400]],
    ["obsolete line folding", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", [400]],
    ["bare CR in a header value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", [400]],
    ["NUL in the target", "GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n", [400]],
    ["two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", [400]],
    ["TLS hello on the plain port", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", [400]],
    [
      "Content-Length and Transfer-Encoding together",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      [400],
    ],
    [
      "two different Content-Length values",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
      [400],
    ],
    [
      "unknown transfer coding",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
      [400],
    ],
    [
      "chunked not last",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
      [400],
    ],
    [
      "negative Content-Length",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
      [400],
    ],
    [
      "bad chunk size",
      "POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n",
      // hyper has handed the request on when the body turns out broken: it closes the
      // connection without an answer (0), or the proxy answers 502.
      [0, 400, 502],
    ],
    [
      "oversized header (100 kB)",
      `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${"a".repeat(100_000)}\r\n\r\n`,
      [400, 431],
    ],
    [
      "oversized header (1 MB)",
      `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${"a".repeat(1_000_000)}\r\n\r\n`,
      [400, 431],
    ],
    [
      "a 64 KiB header",
      `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${"a".repeat(64 * 1024)}\r\n\r\n`,
      [400, 431],
    ],
    [
      "129 header fields",
      "GET / HTTP/1.1\r\nHost: a\r\n" +
      Array.from({ length: 128 }, (_, i) => `X-${i}: v\r\n`).join("") + "\r\n",
      [400, 431],
    ],
    [
      "200 header fields",
      "GET / HTTP/1.1\r\nHost: a\r\n" +
      Array.from({ length: 200 }, (_, i) => `X-${i}: v\r\n`).join("") + "\r\n",
      [400, 431],
    ],
  ];
  const report: string[] = [];
  for (const [name, data, expected] of cases) {
    const answer = await rawRequest(port, data);
    report.push(`${name}: ${answer.status || "closed without an answer"}`);
    if (answer.status === 0) assert.ok(answer.closed, `${name}: neither answered nor closed`);
    assert.ok(
      expected.includes(answer.status),
      `${name}: expected ${expected.join("/")}, got ${answer.status}: ${answer.text.slice(0, 120)}`,
    );
    // Still serving, on a fresh connection.
    const ok = await rawRequest(
      port,
      "GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert.equal(ok.status, 200, `after ${name}`);
  }
  console.log(report.join("\n"));
  // No malformed request reached the backend, except the one whose chunked body broke after its
  // head was valid (it reached the backend as a request with a cut body, once).
  assert.ok(
    backend.seen.length <= 1 && sawLines(backend).every((s) => s.startsWith("POST /api/x")),
  );
});

Deno.test("plain HTTP: HTTP/1.1 without Host is served for the listener's own address", async () => {
  // The runtime's HTTP layer accepts it, and the handler cannot reject it itself: it is told
  // neither the HTTP version nor whether a Host was sent, and refusing every request without
  // one would refuse HTTP/1.0 too (README, Reliability). The request is routed by its path.
  await using dir = await tempDir();
  const { root } = await hostileSite(dir.path);
  await using backend = echoBackend();
  await using srv = await hostileServer(root, backend.port);
  const port = srv.server.addr.port;
  const plain = await rawRequest(port, "GET /sub/a.txt HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert.equal(plain.status, 200);
  const proxied = await rawRequest(port, "GET /api/h HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert.equal(proxied.status, 200);
  // The backend is told the listener's own address (what Deno puts in the URL), nothing else.
  const forwardedHost = /^x-forwarded-host: (.*)$/im.exec(proxied.text)?.[1];
  assert.ok(
    forwardedHost === undefined || forwardedHost === `localhost:${port}` ||
      forwardedHost === `127.0.0.1:${port}`,
    `x-forwarded-host: ${forwardedHost}`,
  );
  const http10 = await rawRequest(port, "GET /sub/a.txt HTTP/1.0\r\n\r\n");
  assert.equal(http10.status, 200);
});

/** Sends `data` over TLS (ALPN http/1.1) and reads until the server closes or 5 s pass. */
async function rawTls(port: number, caPem: string, data: string): Promise<string> {
  const conn = await Deno.connectTls({
    hostname: "localhost",
    port,
    caCerts: [caPem],
    alpnProtocols: ["http/1.1"],
  });
  const timer = setTimeout(() => conn.close(), 5000);
  let text = "";
  try {
    await conn.write(new TextEncoder().encode(data));
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
  } catch { /* closed by the timer */ }
  clearTimeout(timer);
  try {
    conn.close();
  } catch { /* closed */ }
  return text;
}

Deno.test("HTTPS: HTTP/1.1 without Host is served for the listener's own address, as on plain HTTP; an empty Host is 400 on every listener", async () => {
  // The runtime's HTTP server serves HTTPS as it serves plain HTTP, and tells the handler neither
  // the HTTP version nor whether a Host was sent (README, Reliability).
  await using dir = await tempDir();
  const { root } = await hostileSite(dir.path);
  const certs = await makeCerts(dir.path);
  await using srv = await startTestServer({
    http: { static_dir: root },
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key },
  });
  const port = srv.server.addr.port;
  const statuses = (text: string) => [...text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => m[1]);
  const ok = "GET /sub/a.txt HTTP/1.1\r\nHost: localhost\r\n\r\n";
  const missing = "GET /sub/a.txt HTTP/1.1\r\nAccept: */*\r\n\r\n";
  const emptyHost = "GET /sub/a.txt HTTP/1.1\r\nHost:\r\n\r\n";
  // Pipelined, and after a body: each answer in order.
  const post = "POST /sub/a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /";
  const close = "GET /sub/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  assert.deepEqual(
    statuses(await rawTls(port, certs.caPem, ok + post + missing + emptyHost + close)),
    ["200", "405", "200", "400", "200"],
  );
  assert.deepEqual(
    statuses(await rawTls(port, certs.caPem, "GET /sub/a.txt HTTP/1.0\r\n\r\n")),
    ["200"],
  );
  await using plain = await startTestServer({ http: { static_dir: root } });
  const empty = await rawRequest(
    plain.server.addr.port,
    "GET /sub/a.txt HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
  );
  assert.equal(empty.status, 400);
});

Deno.test("no request smuggling through proxy_pass or reverse_proxy: the backend never sees a second request", async () => {
  await using dir = await tempDir();
  const { root } = await hostileSite(dir.path);
  await using backend = echoBackend();
  await using srv = await hostileServer(root, backend.port);
  const port = srv.server.addr.port;
  const smuggled = "GET /api/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
  const attacks = [
    // CL.TE and TE.CL: both headers
    `POST /api/a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`,
    `POST /api/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n${smuggled}`,
    // obfuscated Transfer-Encoding
    `POST /api/a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n${smuggled}`,
    `POST /api/a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: \tchunked\r\n\r\n0\r\n\r\n${smuggled}`,
    `POST /api/a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`,
    // duplicate lengths
    `POST /api/a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n${smuggled}`,
    `POST /api/a HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 44\r\n\r\n${smuggled}`,
    // a body that carries a request: must reach the backend as body bytes, never as a request
    `POST /api/a HTTP/1.1\r\nHost: a\r\nContent-Length: ${smuggled.length}\r\nConnection: close\r\n\r\n${smuggled}`,
    // chunk extensions and a chunked body holding a request
    `POST /api/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${
      smuggled.length.toString(16)
    };ext=1\r\n${smuggled}\r\n0\r\n\r\n`,
    // hop-by-hop header games
    `GET /api/a HTTP/1.1\r\nHost: a\r\nConnection: close, Content-Length\r\nContent-Length: 0\r\n\r\n`,
    `GET /api/a HTTP/1.1\r\nHost: a\r\nConnection: close, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
  ];
  const statuses: number[] = [];
  // The same through `server.reverse_proxy` (/rp/a reaches the backend as /a).
  for (const attack of [...attacks]) attacks.push(attack.replace("/api/a", "/rp/a"));
  for (const attack of attacks) {
    const answer = await rawRequest(port, attack, 1500);
    statuses.push(answer.status);
    // Whatever the first answer, there is never a second one for the smuggled request.
    assert.doesNotMatch(answer.text, /"path":"\/api\/smuggled/);
  }
  console.log(
    `smuggling attempts (proxy_pass, then reverse_proxy) answered ${
      statuses.join(" ")
    }; backend saw ${backend.seen.length}`,
  );
  for (const s of sawLines(backend)) assert.doesNotMatch(s, /smuggled/, `backend saw ${s}`);
  assert.ok(
    sawLines(backend).every((s) => /^(POST|GET) (\/api)?\/a /.test(s)),
    sawLines(backend).join("\n"),
  );
});

Deno.test("no request smuggling over HTTPS and plain HTTP: CL+TE, CL+CL and bad Transfer-Encoding get 400, the backend never sees a second request", async () => {
  await using dir = await tempDir();
  const { root } = await hostileSite(dir.path);
  const certs = await makeCerts(dir.path);
  await using backend = echoBackend();
  await using srv = await hostileServer(root, backend.port, {
    enabled: true,
    cert_file: certs.cert,
    key_file: certs.key,
  });
  const port = srv.server.addr.port;
  const smuggled = "GET /api/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
  const attacks = [
    `POST /api/a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`,
    `POST /api/a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n${smuggled}`,
    `POST /api/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${smuggled}`,
  ];
  for (const attack of [...attacks]) attacks.push(attack.replace("/api/a", "/rp/a"));
  for (const attack of attacks) {
    const text = await rawTls(port, certs.caPem, attack);
    assert.match(text, /^HTTP\/1\.1 400 /, attack.split("\r\n").slice(0, 4).join(" | "));
    assert.doesNotMatch(text, /"path":"\/api\/smuggled/);
  }
  // The same on plain HTTP.
  await using plain = await hostileServer(root, backend.port);
  for (const attack of attacks) {
    const answer = await rawRequest(plain.server.addr.port, attack, 1500);
    assert.equal(answer.status, 400, attack.split("\r\n").slice(0, 4).join(" | "));
    assert.doesNotMatch(answer.text, /"path":"\/api\/smuggled/);
  }
  assert.equal(backend.seen.length, 0, sawLines(backend).join("\n"));
});

Deno.test("CR/LF never reaches a response header: redirects, locations, proxied headers", async () => {
  await using dir = await tempDir();
  const { root } = await hostileSite(dir.path);
  await using backend = echoBackend();
  await using srv = await hostileServer(root, backend.port);
  const port = srv.server.addr.port;
  const injections = [
    "%0d%0aSet-Cookie:%20evil=1",
    "%0aSet-Cookie:%20evil=1",
    "%0dSet-Cookie:%20evil=1",
    "%e5%98%8a%e5%98%8dSet-Cookie:%20evil=1",
    "%c4%8d%c4%8aSet-Cookie:%20evil=1",
    "%00Set-Cookie:%20evil=1",
    "%250d%250aSet-Cookie:%20evil=1",
    "x%0d%0a%0d%0a<script>alert(1)</script>",
  ];
  const targets = injections.flatMap((inj) => [
    `/docs?${inj}`,
    `/go/${inj}`,
    `/tag/${inj}`,
    `/api/${inj}`,
    `/rp/${inj}`,
    `/rp?${inj}`,
    `/sub?${inj}`,
    `/${inj}/`,
    `/admin/${inj}`,
  ]);
  const seen = new Map<number, number>();
  for (const target of targets) {
    const answer = await rawRequest(
      port,
      `GET ${target} HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nConnection: close\r\n\r\n`,
    );
    seen.set(answer.status, (seen.get(answer.status) ?? 0) + 1);
    assert.ok(answer.status > 0, `${target}: no answer`);
    assert.ok(answer.status < 500, `${target}: ${answer.status}`);
    for (const [name, value] of answer.headers) {
      assert.notEqual(name, "set-cookie", `${target}: header injected`);
      assert.doesNotMatch(value, /[\r\n\0]/, `${target}: control character in ${name}`);
    }
  }
  // A group filled into a redirect target keeps its control characters percent-encoded.
  const go = await rawRequest(
    port,
    "GET /go/a%0d%0aSet-Cookie:x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
  );
  assert.equal(go.status, 302);
  assert.deepEqual(go.headers.find(([k]) => k === "location"), [
    "location",
    "https://example.com/a%0D%0ASet-Cookie:x",
  ]);
  // Headers sent to the backend cannot carry CR/LF either: Deno rejects them on the way in, and
  // what the proxy adds comes from parsed values.
  const sneaky = await rawRequest(
    port,
    "GET /api/h HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\rSet-Cookie: evil=1\r\nConnection: close\r\n\r\n",
  );
  assert.equal(sneaky.status, 400);
  console.log(
    `header injection: ${targets.length} targets, ${JSON.stringify(Object.fromEntries(seen))}`,
  );
  assert.ok(sawLines(backend).every((s) => !/\r|\n/.test(s)));
});

Deno.test("seeded fuzz: 20,000 requests across static, proxy, redirect and auth routes", async () => {
  await using dir = await tempDir();
  const { canary, root } = await hostileSite(dir.path);
  await using backend = echoBackend();
  await using srv = await hostileServer(root, backend.port);
  const seed = Number(Deno.env.get("FUZZ_SEED") ?? 20261128);
  const rnd = seeded(seed);
  const TOTAL = Number(Deno.env.get("FUZZ_REQUESTS") ?? 20_000);
  const bases = [
    "/",
    "/index.html",
    "/sub/a.txt",
    "/sub/",
    "/docs",
    "/docs.html",
    "/admin/secret.txt",
    "/admin",
    "/static/sub/a.txt",
    "/api/",
    "/api/v1/users",
    "/rp/",
    "/rp/v1/items",
    "/rp",
    "/go/",
    "/tag/",
    "/health",
    "/escape.txt",
    "/up/canary.txt",
  ];
  const pieces = [
    "..",
    "%2e%2e",
    "%2f",
    "%5c",
    "%00",
    "%ff",
    "%",
    "%c0%ae",
    "a",
    "index.html",
    "canary.txt",
    ";x",
    "~",
    "%0d%0a",
    "é",
    "%e2%80%ae",
    "//",
    ".",
    "?q=1",
    "?a=%0d%0a",
  ];
  const methods = ["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "FOO"];
  const good = `Basic ${btoa("admin:s3cret")}`;
  const headerMakers: (() => [string, string])[] = [
    () => ["range", rnd.pick(["bytes=0-0", "bytes=-5", "bytes=5-1", "bytes=0-1,2-3", "bytes=x"])],
    () => ["if-none-match", rnd.pick(['"x"', "*", 'W/"1"', ""])],
    () => ["if-modified-since", rnd.pick(["Thu, 01 Jan 1970 00:00:00 GMT", "garbage"])],
    () => ["accept-encoding", rnd.pick(["gzip", "br;q=0", "*", "identity;q=0, *;q=0"])],
    () => ["authorization", rnd.pick([good, "Basic !!!", "Basic " + btoa("admin:x"), "Bearer x"])],
    () => ["origin", rnd.pick(["https://evil.example", "null"])],
    () => ["x-forwarded-for", rnd.pick(["1.2.3.4", "", "::1, 10.0.0.1"])],
    () => ["connection", rnd.pick(["keep-alive", "upgrade"])],
    () => ["upgrade", "websocket"],
    () => ["content-type", rnd.pick(["application/json", "text/plain", "multipart/form-data"])],
  ];
  const makeRequest = () => {
    let path = rnd.pick(bases);
    const extra = rnd.int(4);
    for (let i = 0; i < extra; i++) {
      path += (path.endsWith("/") ? "" : "/") + rnd.pick(pieces);
    }
    const method = rnd.pick(methods);
    const headers: [string, string][] = [];
    const n = rnd.int(4);
    for (let i = 0; i < n; i++) headers.push(rnd.pick(headerMakers)());
    const withBody = method !== "GET" && method !== "HEAD" && rnd.next() < 0.7;
    const body = withBody ? new Uint8Array(rnd.int(4096)).map(() => rnd.int(256)) : undefined;
    return { path, method, headers, body };
  };
  const client = Deno.createHttpClient({});
  const statuses = new Map<number, number>();
  const failures: string[] = [];
  let upgradesRefused = 0;
  let next = 0;
  const started = performance.now();
  const worker = async () => {
    while (next < TOTAL) {
      next++;
      const { path, method, headers, body } = makeRequest();
      let url: string;
      try {
        url = new URL(path, srv.url).href;
      } catch {
        url = `${srv.url}/`;
      }
      try {
        const res = await fetch(url, { method, headers, body, client, redirect: "manual" });
        const text = method === "HEAD" ? "" : await res.text();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        // By design: a WebSocket upgrade that the (plain HTTP) backend refuses is a 502.
        const refusedUpgrade = res.status === 502 && path.startsWith("/rp") &&
          headers.some(([k, v]) => k === "upgrade" && v === "websocket");
        if (refusedUpgrade) upgradesRefused++;
        else if (res.status >= 500) failures.push(`${method} ${path}: ${res.status}`);
        if (text.includes(canary)) failures.push(`${method} ${path}: LEAKED the canary`);
      } catch (e) {
        failures.push(`${method} ${path}: ${String(e).split("\n")[0]}`);
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  client.close();
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `fuzz seed ${seed}: ${TOTAL} requests in ${seconds.toFixed(1)} s, statuses ${
      JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))
    }, backend saw ${backend.seen.length}; ${upgradesRefused} of the 502s are WebSocket upgrades the ` +
      `backend refused`,
  );
  assert.deepEqual(failures.slice(0, 20), [], `${failures.length} failures`);
  assert.deepEqual(srv.log.lines.filter((l) => l.startsWith("ERROR")).slice(0, 5), []);
  // Still serving.
  assert.equal((await fetch(`${srv.url}/health`)).status, 200);
});

Deno.test("basic auth: a wrong user and a wrong password take the same time; failures are logged", async () => {
  await using dir = await tempDir();
  const { root } = await hostileSite(dir.path);
  await using backend = echoBackend();
  await using srv = await hostileServer(root, backend.port);
  const client = Deno.createHttpClient({});
  const wrongUser = `Basic ${btoa("admiX:s3cret")}`;
  const wrongPass = `Basic ${btoa("admin:s3creX")}`;
  const time = async (authorization: string) => {
    const t = performance.now();
    const res = await fetch(`${srv.url}/admin/secret.txt`, { headers: { authorization }, client });
    await res.body?.cancel();
    assert.equal(res.status, 401);
    return performance.now() - t;
  };
  for (let i = 0; i < 50; i++) await time(i % 2 ? wrongUser : wrongPass);
  const a: number[] = [];
  const b: number[] = [];
  const ROUNDS = 800;
  for (let i = 0; i < ROUNDS; i++) {
    // Interleaved, order alternating, so that drift in machine load hits both alike.
    if (i % 2) {
      a.push(await time(wrongUser));
      b.push(await time(wrongPass));
    } else {
      b.push(await time(wrongPass));
      a.push(await time(wrongUser));
    }
  }
  client.close();
  const median = (xs: number[]) => xs.toSorted((x, y) => x - y)[xs.length >> 1];
  const [ma, mb] = [median(a), median(b)];
  // How often a wrong-user request was slower than its wrong-password twin: 50% when there is
  // no difference; with 800 pairs, 50% ± 12.5% is seven standard deviations wide.
  const slower = a.reduce((n, x, i) => n + (x > b[i] ? 1 : x === b[i] ? 0.5 : 0), 0) / ROUNDS;
  console.log(
    `auth timing over ${ROUNDS} pairs: median wrong user ${(ma * 1000).toFixed(0)} µs, ` +
      `wrong password ${(mb * 1000).toFixed(0)} µs; wrong user slower in ${
        (slower * 100).toFixed(1)
      }% of pairs`,
  );
  assert.ok(slower > 0.375 && slower < 0.625, `wrong user slower in ${slower} of pairs`);
  // Every failed attempt left a WARNING naming user and client, never the password.
  const warnings = srv.log.lines.filter((l) => l.startsWith("WARNING auth failed"));
  assert.equal(warnings.length, 50 + 2 * ROUNDS);
  assert.ok(warnings.some((l) => l.includes('user "admiX" from 127.0.0.1 on /admin')));
  assert.ok(warnings.every((l) => !l.includes("s3cre")));
});
