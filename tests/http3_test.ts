/**
 * HTTP/3 (`ssl.http3: true`) through the real server: the routes over h3 as over h2, and the
 * protocol cases with the client of `support/h3_client.ts`: SETTINGS, framing and QPACK errors,
 * limits, GOAWAY on shutdown and on a new certificate, and Alt-Svc on the HTTPS answers.
 */
import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { FRAME, frame, H3, STREAM, varint } from "../src/server/http3/frames.ts";
import { encodeFieldSection } from "../src/server/http3/qpack.ts";
import { echoBackend, serveBackend } from "./support/backends.ts";
import { makeCerts, type TestCerts } from "./support/certs.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { H3Client, type H3Response, readResponse } from "./support/h3_client.ts";
import { seeded } from "./support/random.ts";
import { startTestServer, type TestServer } from "./support/servers.ts";

const TEXT = "denoserve answers over QUIC as it does over TCP. ".repeat(100);

/** A server with `ssl.http3: true` on a site of a few files; `extra` merged over it. */
async function h3Server(
  dir: string,
  extra: Record<string, Record<string, unknown> | unknown> = {},
): Promise<TestServer & { certs: TestCerts; h3Port: number }> {
  await writeFiles(dir, {
    "site/index.html": "<h1>home</h1>",
    "site/page.html": TEXT,
    "site/ten.txt": "0123456789",
    "site/admin/secret.txt": "secret",
    "templates/error_404.html": "<p>missing: {{status_code}} {{status_text}}</p>",
  });
  const certs = await makeCerts(dir);
  const { ssl, http, ...rest } = extra as Record<string, Record<string, unknown>>;
  const s = await startTestServer({
    http: { static_dir: `${dir}/site`, templates_dir: `${dir}/templates`, ...http },
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key, http3: true, ...ssl },
    ...rest,
  });
  const h3Port = s.server.http3Addr!.port;
  return Object.assign(s, { certs, h3Port });
}

const connect = (s: { h3Port: number; certs: TestCerts }) =>
  H3Client.connect(s.h3Port, s.certs.caPem);

/** Waits for an access line matching `re` (lines are written when the log flushes). */
async function accessLine(s: TestServer, re: RegExp): Promise<string> {
  for (;;) {
    const line = s.log.lines.find((l) => l.startsWith("ACCESS ") && re.test(l));
    if (line) return line;
    s.log.flush();
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The close code of `client`'s connection. */
async function closeCode(client: H3Client): Promise<number | string> {
  const info = await client.closed;
  return "closeCode" in info ? info.closeCode : info.error;
}

Deno.test("HTTP/3: SETTINGS, the UDP port of HTTPS, Alt-Svc over h1 and h2, HTTP/3 in the access log", async () => {
  await using dir = await tempDir();
  await using s = await h3Server(dir.path);
  assert.equal(s.h3Port, s.server.addr.port, "UDP on the HTTPS port number");
  await using c = await connect(s);
  const settings = await c.settings;
  assert.equal(settings.get(0x1), 0, "QPACK_MAX_TABLE_CAPACITY 0");
  assert.equal(settings.get(0x7), 0, "QPACK_BLOCKED_STREAMS 0");
  assert.equal(settings.get(0x6), 16 * 1024, "MAX_FIELD_SECTION_SIZE");
  const r = await c.request("/");
  assert.equal(r.status, 200);
  assert.equal(r.text(), "<h1>home</h1>");
  assert.equal(r.headers.get("alt-svc"), null, "not announced over HTTP/3 itself");
  assert.match(await accessLine(s, /"GET \/ HTTP\/3" 200/), /^ACCESS 127\.0\.0\.1 /);

  for (const flag of ["--http1.1", "--http2"]) {
    const out = await new Deno.Command("curl", {
      args: ["-s", "-o", "/dev/null", "-D", "-", flag, "--cacert", s.certs.ca, `${s.url}/`],
      env: { NO_PROXY: "*" },
    }).output();
    const head = new TextDecoder().decode(out.stdout).toLowerCase();
    assert.match(head, new RegExp(`alt-svc: h3=":${s.h3Port}"; ma=86400`), `${flag}: ${head}`);
  }
  assert.match(await accessLine(s, /"GET \/ HTTP\/2" 200/), /HTTP\/2/);
});

Deno.test("HTTP/3 routes: static files with ranges, 304, compression; 404 template; redirect; auth; CORS", async () => {
  await using dir = await tempDir();
  await using s = await h3Server(dir.path, {
    version: 2,
    server: {
      redirect_instructions: [{ "/home": "/index.html" }],
      locations: {
        "/admin": { auth: { type: "basic", username: "admin", password: "s3cret-pw" } },
      },
    },
    extensions: [{ type: "security", config: { cors: { origins: ["https://app.example"] } } }],
  });
  await using c = await connect(s);

  let r = await c.request("/ten.txt", { headers: [["range", "bytes=2-5"]] });
  assert.equal(r.status, 206);
  assert.equal(r.text(), "2345");
  assert.equal(r.headers.get("content-range"), "bytes 2-5/10");

  r = await c.request("/ten.txt");
  const etag = r.headers.get("etag")!;
  assert.ok(etag);
  r = await c.request("/ten.txt", { headers: [["if-none-match", etag]] });
  assert.equal(r.status, 304);
  assert.equal(r.body.length, 0);

  r = await c.request("/page.html", { headers: [["accept-encoding", "gzip"]] });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("content-encoding"), "gzip");
  assert.equal(new TextDecoder().decode(gunzipSync(r.body)), TEXT);

  r = await c.request("/page.html", { method: "HEAD" });
  assert.equal(r.status, 200);
  assert.equal(r.body.length, 0);
  assert.equal(r.headers.get("content-length"), String(TEXT.length));

  r = await c.request("/nowhere");
  assert.equal(r.status, 404);
  assert.equal(r.text(), "<p>missing: 404 Not Found</p>");

  r = await c.request("/home?x=1");
  assert.equal(r.status, 302);
  assert.equal(r.headers.get("location"), "/index.html?x=1");

  r = await c.request("/admin/secret.txt");
  assert.equal(r.status, 401);
  assert.match(r.headers.get("www-authenticate")!, /^Basic /);
  r = await c.request("/admin/secret.txt", {
    headers: [["authorization", `Basic ${btoa("admin:s3cret-pw")}`]],
  });
  assert.equal(r.status, 200);
  assert.equal(r.text(), "secret");

  r = await c.request("/ten.txt", { headers: [["origin", "https://app.example"]] });
  assert.equal(r.headers.get("access-control-allow-origin"), "https://app.example");
  r = await c.request("/ten.txt", {
    method: "OPTIONS",
    headers: [["origin", "https://app.example"], ["access-control-request-method", "PUT"]],
  });
  assert.equal(r.status, 204);
  assert.equal(r.headers.get("access-control-allow-origin"), "https://app.example");
  r = await c.request("/ten.txt", { headers: [["origin", "https://evil.example"]] });
  assert.equal(r.headers.get("access-control-allow-origin"), null);

  // Requests in parallel on one connection.
  const many = await Promise.all(
    Array.from({ length: 20 }, (_, i) => c.request(`/ten.txt?i=${i}`)),
  );
  assert.deepEqual(new Set(many.map((m) => m.text())), new Set(["0123456789"]));
});

Deno.test("HTTP/3 routes: V2 locations, proxy_pass and reverse_proxy to an HTTP/1.1 backend, bodies streamed up", async () => {
  await using backend = echoBackend("h1");
  // A backend that sees the body arrive piece by piece: it answers once all has come.
  const pieces: number[] = [];
  await using counting = serveBackend(async (req) => {
    for await (const chunk of req.body!) pieces.push(chunk.byteLength);
    return new Response(`got ${pieces.reduce((a, b) => a + b, 0)} bytes`);
  });
  await using dir = await tempDir();
  await using s = await h3Server(dir.path, {
    version: 2,
    server: {
      reverse_proxy: [
        { path: "/rp", host: "127.0.0.1", port: backend.port },
        { path: "/count", host: "127.0.0.1", port: counting.port },
      ],
    },
    extensions: [{
      type: "routing",
      config: {
        regex_locations: {
          "~^/hello/(?P<name>[a-z]+)$": { return: "200 hi {name}", content_type: "text/plain" },
          "^~/api/": { proxy_pass: backend.url },
        },
      },
    }],
  });
  await using c = await connect(s);

  let r = await c.request("/hello/quic");
  assert.equal(r.status, 200);
  assert.equal(r.text(), "hi quic");

  r = await c.request("/api/items?x=1", { headers: [["x-custom", "yes"]] });
  assert.equal(r.status, 200);
  let echo = JSON.parse(r.text());
  assert.equal(echo.path, "/api/items?x=1");
  assert.equal(echo.headers["x-custom"], "yes");
  assert.equal(echo.headers.host, `127.0.0.1:${backend.port}`);
  assert.equal(echo.headers["x-forwarded-proto"], "https");

  r = await c.request("/rp/thing", { method: "PUT", body: new TextEncoder().encode("payload") });
  echo = JSON.parse(r.text());
  assert.equal(echo.method, "PUT");
  assert.equal(echo.path, "/thing");
  assert.equal(echo.body, "payload");

  // A body sent in pieces, each waiting for the backend to have had the last: streamed, not
  // gathered first.
  const total = 8;
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      if (sent === total) return ctl.close();
      if (sent > 0) {
        while (pieces.reduce((a, b) => a + b, 0) < sent * 1000) {
          await new Promise((res) => setTimeout(res, 5));
        }
      }
      sent++;
      ctl.enqueue(new Uint8Array(1000).fill(sent));
    },
  });
  r = await c.request("/count", { method: "POST", body });
  assert.equal(r.text(), `got ${total * 1000} bytes`);
  assert.ok(pieces.length >= total, `the backend read ${pieces.length} pieces`);

  // A large answer from the backend, streamed down.
  r = await c.request("/api/big", { method: "POST", body: new Uint8Array(300_000).fill(7) });
  echo = JSON.parse(r.text());
  assert.equal(echo.bytes, 300_000);
  await accessLine(s, /"POST \/api\/big HTTP\/3" 200/);
});

Deno.test("HTTP/3 errors: frames, QPACK and streams the RFCs forbid close the connection with their codes", async () => {
  await using dir = await tempDir();
  await using s = await h3Server(dir.path);
  const headers = (c: H3Client, path = "/ten.txt") => c.headersFrame("GET", path);
  type Case = [string, number, (c: H3Client) => Promise<unknown>];
  const cases: Case[] = [
    ["DATA before HEADERS", H3.FRAME_UNEXPECTED, async (c) => {
      const st = await c.raw();
      await st.write(frame(FRAME.DATA, new Uint8Array(3)));
    }],
    ["SETTINGS on a request stream", H3.FRAME_UNEXPECTED, async (c) => {
      const st = await c.raw();
      await st.write(frame(FRAME.SETTINGS, new Uint8Array(0)));
    }],
    ["an HTTP/2 frame type (PRIORITY) on a request stream", H3.FRAME_UNEXPECTED, async (c) => {
      const st = await c.raw();
      await st.write(frame(0x2, new Uint8Array(2)));
    }],
    ["a request stream ending inside a frame", H3.FRAME_ERROR, async (c) => {
      const st = await c.raw();
      await st.write(headers(c).subarray(0, 4));
      await st.end();
    }],
    ["a field section referring to the dynamic table", 0x200, async (c) => {
      const st = await c.raw();
      await st.write(frame(FRAME.HEADERS, new Uint8Array([0x03, 0x81, 0x10])));
    }],
    ["a Huffman string with EOS", 0x200, async (c) => {
      const st = await c.raw();
      await st.write(
        frame(FRAME.HEADERS, new Uint8Array([0, 0, 0x51, 0x84, 0xff, 0xff, 0xff, 0xff])),
      );
    }],
    ["a control stream not beginning with SETTINGS", H3.MISSING_SETTINGS, async (c) => {
      await c.sendUni(STREAM.CONTROL, frame(FRAME.GOAWAY, varint(0)));
    }],
    ["a second control stream", H3.STREAM_CREATION_ERROR, async (c) => {
      await c.sendUni(STREAM.CONTROL, frame(FRAME.SETTINGS, new Uint8Array(0)));
    }],
    ["a push stream from the client", H3.STREAM_CREATION_ERROR, async (c) => {
      await c.sendUni(STREAM.PUSH, varint(0));
    }],
    ["a second SETTINGS frame", H3.FRAME_UNEXPECTED, async (c) => {
      await c.sendControl(frame(FRAME.SETTINGS, new Uint8Array(0)));
    }],
    ["an HTTP/2 setting", H3.SETTINGS_ERROR, async (c) => {
      await c.sendUni(STREAM.CONTROL, frame(FRAME.SETTINGS, new Uint8Array([0x4, 0x0])));
    }],
    ["DATA on the control stream", H3.FRAME_UNEXPECTED, async (c) => {
      await c.sendControl(frame(FRAME.DATA, new Uint8Array(1)));
    }],
    ["CANCEL_PUSH of a push never promised", H3.ID_ERROR, async (c) => {
      await c.sendControl(frame(FRAME.CANCEL_PUSH, varint(3)));
    }],
    ["an oversized control frame", H3.EXCESSIVE_LOAD, async (c) => {
      await c.sendControl(frame(0x7, new Uint8Array(20_000)));
    }],
    ["the control stream closed", H3.CLOSED_CRITICAL_STREAM, async (c) => {
      const w = await c.sendUni(STREAM.CONTROL, frame(FRAME.SETTINGS, new Uint8Array(0)));
      await w.close();
    }],
    ["an insert on the QPACK encoder stream", 0x201, async (c) => {
      await c.sendUni(STREAM.QPACK_ENCODER, new Uint8Array([0xc0, 0x0f]));
    }],
    ["a Section Acknowledgment on the QPACK decoder stream", 0x202, async (c) => {
      await c.sendUni(STREAM.QPACK_DECODER, new Uint8Array([0x80]));
    }],
  ];
  for (const [what, code, act] of cases) {
    const needsOwnControl = what === "a control stream not beginning with SETTINGS" ||
      what === "an HTTP/2 setting" || what === "the control stream closed";
    await using c = await H3Client.connect(s.h3Port, s.certs.caPem, {
      settings: !needsOwnControl,
    });
    await act(c);
    assert.equal(await closeCode(c), code, what);
  }
  // The server is unharmed.
  await using c = await connect(s);
  assert.equal((await c.request("/ten.txt")).status, 200);
});

Deno.test("HTTP/3 bad requests: malformed heads get 400, oversized ones 431, and the connection goes on", async () => {
  await using dir = await tempDir();
  await using s = await h3Server(dir.path);
  await using c = await connect(s);
  const send = async (fields: [string, string][]) => {
    const st = await c.raw();
    await st.write(frame(FRAME.HEADERS, encodeFieldSection(fields)));
    await st.end();
    return (await st.response())!;
  };
  const base: [string, string][] = [
    [":method", "GET"],
    [":scheme", "https"],
    [":authority", c.authority],
    [":path", "/ten.txt"],
  ];
  assert.equal((await send(base)).status, 200);
  const malformed: [string, [string, string][]][] = [
    ["no :path", base.filter(([n]) => n !== ":path")],
    ["no :method", base.filter(([n]) => n !== ":method")],
    ["an unknown pseudo-header", [[":protocol", "x"], ...base]],
    ["a pseudo-header after a field", [[":method", "GET"], ["x", "1"], ...base.slice(1)]],
    ["an upper-case name", [...base, ["X-Upper", "1"]]],
    ["a connection header", [...base, ["connection", "close"]]],
    ["transfer-encoding", [...base, ["transfer-encoding", "chunked"]]],
    ["te other than trailers", [...base, ["te", "gzip"]]],
    ["a NUL in a value", [...base, ["x-bad", "a\0b"]]],
    ["two :path", [...base, [":path", "/other"]]],
  ];
  for (const [what, fields] of malformed) {
    const r = await send(fields);
    assert.equal(r.status, 400, what);
  }
  const big = await send([...base, ["x-big", "a".repeat(20_000)]]);
  assert.equal(big.status, 431);
  // Huffman-packed fields and many small ones count at their decoded size.
  const many = await send([
    ...base,
    ...Array.from({ length: 600 }, (_, i) => ["x-n", `${i}`] as [string, string]),
  ]);
  assert.equal(many.status, 431);
  const connect_ = await send([[":method", "CONNECT"], [":authority", "example.com:443"]]);
  assert.equal(connect_.status, 501);
  // Unknown frame types and unknown stream types are ignored (RFC 9114 §9).
  await c.sendUni(0x21, new Uint8Array(10));
  const st = await c.raw();
  await st.write(frame(0x21 + 0x1f, new Uint8Array(5)));
  await st.write(c.headersFrame("GET", "/ten.txt"));
  await st.write(frame(0x40, new Uint8Array(300)));
  await st.end();
  const ok = (await st.response())!;
  assert.equal(ok.status, 200);
  assert.equal(ok.text(), "0123456789");
  // A POST whose DATA disagrees with its content-length.
  const post = await c.raw();
  await post.write(c.headersFrame("POST", "/ten.txt", { headers: [["content-length", "10"]] }));
  await post.write(frame(FRAME.DATA, new Uint8Array(3)));
  await post.end();
  assert.ok((await post.response())!.status >= 400);
  assert.equal((await c.request("/ten.txt")).status, 200, "the connection still serves");
});

Deno.test("HTTP/3 limits: requests past the stream limit wait for QUIC credit; an idle connection is closed", async () => {
  await using backend = echoBackend();
  await using dir = await tempDir();
  await using s = await h3Server(dir.path, {
    server: {
      idle_timeout: 1,
      reverse_proxy: [{ path: "/echo", host: "127.0.0.1", port: backend.port }],
    },
  });
  await using c = await connect(s);
  // 100 requests whose bodies have not come: the backend waits for them, and so they stay in
  // flight, up to the server's limit of streams.
  type Held = {
    w: WritableStreamDefaultWriter<Uint8Array>;
    answer: Promise<H3Response | null>;
  };
  const held: Held[] = [];
  for (let i = 0; i < 100; i++) {
    const st = await c.quic.createBidirectionalStream();
    const w = st.writable.getWriter();
    await w.write(c.headersFrame("POST", "/echo", { headers: [["content-length", "1"]] }));
    const answer = readResponse(st.readable.getReader());
    answer.catch(() => {}); // awaited below
    held.push({ w, answer });
  }
  await assert.rejects(
    () => c.quic.createBidirectionalStream(),
    RangeError,
    "the 101st stream has no credit",
  );
  const waiting = c.request("/ten.txt"); // waits for credit
  const finish = async (h: Held, byte: number) => {
    await h.w.write(frame(FRAME.DATA, new Uint8Array([byte])));
    await h.w.close();
    return (await h.answer)!;
  };
  assert.equal(JSON.parse((await finish(held[0], 65)).text()).body, "A");
  // The QUIC stack hands stream credit back in batches of an eighth of the limit.
  for (const h of held.slice(1, 13)) assert.equal((await finish(h, 66)).status, 200);
  assert.equal((await waiting).status, 200, "served once streams were free");
  const rest = await Promise.all(held.slice(13).map((h) => finish(h, 67)));
  assert.ok(rest.every((r) => r.status === 200));
  // With nothing in flight, idle_timeout (1 s here) ends the connection gracefully.
  assert.equal(await closeCode(c), H3.NO_ERROR);
});

Deno.test("HTTP/3 timeouts come from the connection table: a reload's idle_timeout reaches an open connection, and the close is counted", async () => {
  await using dir = await tempDir();
  await using s = await h3Server(dir.path, { server: { idle_timeout: 3600 } });
  await using c = await connect(s);
  assert.equal((await c.request("/ten.txt")).status, 200);
  const next = { ...s.config, server: { ...s.config.server, idle_timeout: 1 } };
  assert.deepEqual(await s.server.reload(next), { listenersReplaced: false });
  assert.equal(s.server.http3Addr?.port, s.h3Port, "the HTTP/3 listener was kept");
  // Closed after the new 1 s, not the 3,600 s it was opened under.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const code = await Promise.race([
    closeCode(c),
    new Promise((r) => timer = setTimeout(() => r("still open after 15 s"), 15_000)),
  ]);
  clearTimeout(timer);
  assert.equal(code, H3.NO_ERROR);
  assert.equal(s.server.connections.stats.timedOut.idle, 1);
});

Deno.test("HTTP/3 GOAWAY: on shutdown the request in flight finishes, then the connection closes", async () => {
  const arrived = Promise.withResolvers<void>();
  const release = Promise.withResolvers<void>();
  await using slow = serveBackend(async () => {
    arrived.resolve();
    await release.promise;
    return new Response("finished late");
  });
  await using dir = await tempDir();
  const s = await h3Server(dir.path, {
    server: { reverse_proxy: [{ path: "/slow", host: "127.0.0.1", port: slow.port }] },
  });
  await using c = await connect(s);
  assert.equal((await c.request("/ten.txt")).status, 200); // stream 0
  const pending = c.request("/slow"); // stream 4
  await arrived.promise;
  const stopping = s.server.shutdown(10_000);
  assert.equal(await c.goaway, 8, "GOAWAY names the first stream not taken");
  release.resolve();
  const r = await pending;
  assert.equal(r.text(), "finished late");
  assert.equal(await closeCode(c), H3.NO_ERROR);
  await stopping;
});

Deno.test("HTTP/3 new certificate: taken on the same UDP port; open connections get GOAWAY", async () => {
  await using dir = await tempDir();
  await using s = await h3Server(dir.path);
  await using before = await connect(s);
  assert.equal((await before.request("/ten.txt")).status, 200);
  // A certificate from another CA, written where the configuration points.
  await using other = await tempDir();
  const fresh = await makeCerts(other.path);
  await Deno.copyFile(fresh.cert, s.config.ssl.cert_file!);
  await Deno.copyFile(fresh.key, s.config.ssl.key_file!);
  const result = await s.server.reload(s.config);
  assert.equal(result.listenersReplaced, true);
  assert.equal(s.server.http3Addr!.port, s.h3Port, "the same UDP port");
  assert.equal(await before.goaway, 4);
  await using after = await H3Client.connect(s.h3Port, fresh.caPem);
  assert.equal((await after.request("/ten.txt")).status, 200, "the new CA's certificate");
  await assert.rejects(() => H3Client.connect(s.h3Port, s.certs.caPem), "not the old one");
});

Deno.test("HTTP/3 fuzz (seed 3): random bytes on request and control streams never take the server down", async () => {
  await using dir = await tempDir();
  await using s = await h3Server(dir.path);
  const rnd = seeded(3);
  const bytes = (n: number) => new Uint8Array(n).map(() => rnd.int(256));
  for (let i = 0; i < 30; i++) {
    await using c = await connect(s);
    const st = await c.raw();
    // A valid start sometimes, then garbage.
    const head = rnd.int(2) ? c.headersFrame("GET", "/ten.txt").subarray(0, rnd.int(20)) : [];
    await st.write(new Uint8Array([...head, ...bytes(1 + rnd.int(200))]));
    await st.end();
    if (rnd.int(3) === 0) await c.sendControl(bytes(1 + rnd.int(50)));
    // Either an answer or a connection error: never silence for ever.
    const answered = st.response().then((r) => r?.status ?? 0, () => -1);
    const outcome = await Promise.race([answered, c.closed.then(() => -2)]);
    assert.ok(typeof outcome === "number");
  }
  await using c = await connect(s);
  assert.equal((await c.request("/ten.txt")).status, 200);
});
