/**
 * `max_body_size` (server-wide and per location): 413 for a Content-Length over the limit before
 * any of the body is read or forwarded, and for bodies without one (HTTP/1.1 chunked, HTTP/2,
 * HTTP/3) once they grow past it; real clients (raw TCP, curl over h1 and h2, the HTTP/3 client)
 * against the real server proxying to a real backend.
 */
import assert from "node:assert/strict";
import { serveBackend, tcpBackend } from "./support/backends.ts";
import { makeCerts } from "./support/certs.ts";
import { curl, spawnCli } from "./support/cli.ts";
import { configError } from "./support/config.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { H3Client } from "./support/h3_client.ts";
import { startTestServer } from "./support/servers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A backend that reads the whole body and answers with its length. */
const countingBackend = () =>
  serveBackend(async (req) => new Response(`got ${(await req.bytes()).length}`));

/** curl with `stdin` piped in: an upload of unknown size (chunked over h1, no length over h2). */
async function curlStdin(args: string[], stdin: Uint8Array): Promise<string> {
  const child = new Deno.Command("curl", {
    args: ["-sS", "-o", "/dev/null", "-w", "%{http_code}", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(stdin).catch(() => {});
  await writer.close().catch(() => {});
  const out = await child.output();
  return dec.decode(out.stdout);
}

Deno.test("max_body_size: Content-Length over the limit is 413 before the body is sent; chunked past it is 413; a location raises it", async () => {
  await using backend = countingBackend();
  await using dir = await tempDir();
  await using s = await startTestServer({
    http: { static_dir: dir.path },
    server: {
      max_body_size: "1k",
      locations: { "/up/big": { max_body_size: "1m" } },
      reverse_proxy: [{ path: "/up", host: "127.0.0.1", port: backend.port }],
    },
  });
  const port = s.server.addr.port;

  // Only the head is sent: the answer comes without a byte of the body, and nothing reaches
  // the backend.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(
    enc.encode("POST /up/x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1025\r\n\r\n"),
  );
  const buf = new Uint8Array(4096);
  const n = await conn.read(buf);
  conn.close();
  assert.match(dec.decode(buf.subarray(0, n ?? 0)), /^HTTP\/1\.1 413 /);
  assert.equal(backend.seen.length, 0);

  // At the limit it passes.
  const file = `${dir.path}/body`;
  await Deno.writeFile(file, new Uint8Array(1024).fill(97));
  let r = await curl(["-w", " %{http_code}", "--data-binary", `@${file}`, `${s.url}/up/x`]);
  assert.equal(r.stdout, "got 1024 200");

  // Chunked (no length): cut once it grows past the limit.
  assert.equal(
    await curlStdin(["-T", "-", "-X", "POST", `${s.url}/up/x`], new Uint8Array(5000)),
    "413",
  );
  assert.equal(
    await curlStdin(["-T", "-", "-X", "POST", `${s.url}/up/x`], new Uint8Array(1000)),
    "200",
  );

  // The location's limit replaces the site's.
  await Deno.writeFile(file, new Uint8Array(500_000).fill(97));
  r = await curl(["-w", " %{http_code}", "--data-binary", `@${file}`, `${s.url}/up/big/x`]);
  assert.equal(r.stdout, "got 500000 200");
  await Deno.writeFile(file, new Uint8Array(1024 * 1024 + 1).fill(97));
  r = await curl([
    "-o",
    "/dev/null",
    "-w",
    "%{http_code}",
    "--data-binary",
    `@${file}`,
    `${s.url}/up/big/x`,
  ]);
  assert.equal(r.stdout, "413");
  assert.equal(
    await curlStdin(["-T", "-", "-X", "POST", `${s.url}/up/big/x`], new Uint8Array(2_000_000)),
    "413",
  );
});

Deno.test("max_body_size: HTTP/2 and HTTP/3 bodies, with and without a length, get 413", async () => {
  await using backend = countingBackend();
  await using dir = await tempDir();
  const certs = await makeCerts(dir.path);
  await writeFiles(dir.path, { "site/index.html": "home" });
  await using s = await startTestServer({
    http: { static_dir: `${dir.path}/site` },
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key, http3: true },
    server: {
      max_body_size: 4096,
      reverse_proxy: [{ path: "/up", host: "127.0.0.1", port: backend.port }],
    },
  });
  const url = `https://localhost:${s.server.addr.port}/up/x`;
  const h2 = ["--http2", "--cacert", certs.ca];
  const file = `${dir.path}/body`;
  await Deno.writeFile(file, new Uint8Array(10_000));
  const r = await curl([
    ...h2,
    "-o",
    "/dev/null",
    "-w",
    "%{http_version} %{http_code}",
    "--data-binary",
    `@${file}`,
    url,
  ]);
  assert.equal(r.stdout, "2 413");
  assert.equal(
    await curlStdin([...h2, "-T", "-", "-X", "POST", url], new Uint8Array(10_000)),
    "413",
  );
  assert.equal(await curlStdin([...h2, "-T", "-", "-X", "POST", url], new Uint8Array(4096)), "200");

  await using c = await H3Client.connect(s.server.http3Addr!.port, certs.caPem);
  const big = new Uint8Array(10_000);
  let a = await c.request("/up/x", { method: "POST", body: big });
  assert.equal(a.status, 413);
  a = await c.request("/up/x", {
    method: "POST",
    body: big,
    headers: [["content-length", String(big.length)]],
  });
  assert.equal(a.status, 413);
  a = await c.request("/up/x", { method: "POST", body: new Uint8Array(4096) });
  assert.equal(a.status, 200);
  assert.equal(a.text(), "got 4096");
});

Deno.test("max_body_size: sizes in bytes or k/m/g; anything else names the key", () => {
  assert.match(
    configError({ server: { max_body_size: "ten" } }),
    /server\.max_body_size must be a number of bytes or a size such as "512k", "10m" or "1g", got "ten"/,
  );
  assert.match(
    configError({ server: { locations: { "/a": { max_body_size: -1 } } } }),
    /server\.locations\.\/a\.max_body_size must be a number of bytes/,
  );
});

/**
 * A raw backend that answers at once (chunked) and, as the body comes, reports how many body
 * bytes it has read (the test bodies are all "a", which chunk framing never contains).
 */
function earlyAnswerBackend() {
  return tcpBackend(async (conn) => {
    const buf = new Uint8Array(65536);
    let head = "";
    let total = 0;
    const count = (bytes: Uint8Array) => {
      for (const b of bytes) if (b === 97) total++;
    };
    while (!head.includes("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) return;
      head += new TextDecoder("latin1").decode(buf.subarray(0, n));
    }
    count(enc.encode(head.slice(head.indexOf("\r\n\r\n") + 4)));
    const chunk = (text: string) =>
      conn.write(enc.encode(`${text.length.toString(16)}\r\n${text}\r\n`));
    await conn.write(enc.encode("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"));
    if (total > 0) await chunk(`got ${total}\n`);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) return;
      count(buf.subarray(0, n));
      if (buf.subarray(0, n).includes(97)) await chunk(`got ${total}\n`);
      if (dec.decode(buf.subarray(0, n)).endsWith("0\r\n\r\n")) break;
    }
    await chunk(`end ${total}\n`);
    await conn.write(enc.encode("0\r\n\r\n"));
  });
}

Deno.test("max_body_size: a body that grows past the limit after the answer has begun breaks the answer off (HTTP/1.1 chunked, HTTP/2)", async () => {
  await using backend = earlyAnswerBackend();
  await using dir = await tempDir();
  const certs = await makeCerts(dir.path);
  await using s = await startTestServer({
    http: { static_dir: dir.path },
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key },
    server: {
      max_body_size: 4096,
      reverse_proxy: [{ path: "/", host: "127.0.0.1", port: backend.port }],
    },
  });

  // HTTP/1.1 over TLS, chunked: 1000 bytes at a time, each once the backend has reported the
  // one before.
  const conn = await Deno.connectTls({
    hostname: "localhost",
    port: s.server.addr.port,
    caCerts: [certs.caPem],
  });
  await conn.write(
    enc.encode("POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"),
  );
  const buf = new Uint8Array(65536);
  let text = "";
  let closed = false;
  const more = async () => {
    const n = await conn.read(buf).catch(() => null);
    if (n === null) closed = true;
    else text += dec.decode(buf.subarray(0, n));
  };
  for (let sent = 1000; !closed && sent <= 20_000; sent += 1000) {
    await conn.write(enc.encode(`3e8\r\n${"a".repeat(1000)}\r\n`)).catch(() => {});
    while (!closed && !text.includes(`got ${sent}\n`)) await more();
  }
  try {
    conn.close();
  } catch { /* closed */ }
  assert.ok(closed, `the connection was closed: ${JSON.stringify(text)}`);
  assert.match(text, /^HTTP\/1\.1 200 /);
  assert.match(text, /got 4000\n/);
  assert.doesNotMatch(text, /got 5000|end /, "no byte past the limit reached the backend");
  assert.ok(!text.endsWith("0\r\n\r\n"), `the answer is cut, not ended: ${JSON.stringify(text)}`);

  // HTTP/2: the same upload as a stream without a length; the answer's stream is reset.
  const client = Deno.createHttpClient({ caCerts: [certs.caPem], http1: false, http2: true });
  try {
    let got = "";
    let wake = () => {};
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(ctl) {
        while (sent > 0 && !got.includes(`got ${sent}\n`)) {
          await new Promise<void>((r) => wake = r);
        }
        if (sent >= 20_000) return ctl.close();
        sent += 1000;
        ctl.enqueue(new Uint8Array(1000).fill(97));
      },
    });
    const res = await fetch(`https://localhost:${s.server.addr.port}/x`, {
      method: "POST",
      body,
      client,
      duplex: "half",
    } as RequestInit);
    assert.equal(res.status, 200);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    await assert.rejects(async () => {
      for (;;) {
        const r = await reader.read();
        if (r.done) return;
        got += r.value;
        wake();
      }
    }, "the answer's stream ends in an error, not cleanly");
    assert.match(got, /got 4000\n/);
    assert.doesNotMatch(got, /got 5000|end /);
  } finally {
    client.close();
  }
});

Deno.test("max_body_size over HTTP/2 as a user runs it (denoserve -c FILE): every 413 reaches curl", async () => {
  await using backend = countingBackend();
  await using dir = await tempDir();
  const certs = await makeCerts(dir.path);
  await writeFiles(dir.path, {
    "site/index.html": "home",
    "config.yaml": `server:
  host: 127.0.0.1
  port: 0
  max_body_size: 4096
  reverse_proxy: [{ path: /up, host: 127.0.0.1, port: ${backend.port} }]
http: { static_dir: ${dir.path}/site }
ssl: { enabled: true, cert_file: ${certs.cert}, key_file: ${certs.key} }
`,
  });
  await using server = await spawnCli(["-c", `${dir.path}/config.yaml`]);
  const url = `${server.url.replace("127.0.0.1", "localhost")}/up/x`;
  const file = `${dir.path}/body`;
  await Deno.writeFile(file, new Uint8Array(10_000));
  // A body left unread (a Content-Length over the limit) or cancelled while curl still sent it
  // made the runtime reset the stream before the 413 arrived, about one time in two.
  for (let i = 0; i < 20; i++) {
    const r = await curl([
      "--http2",
      "--cacert",
      certs.ca,
      "-o",
      "/dev/null",
      "-w",
      "%{http_version} %{http_code}",
      "--data-binary",
      `@${file}`,
      url,
    ]);
    assert.equal(r.stdout, "2 413", r.stderr);
    const streamed = ["--http2", "--cacert", certs.ca, "-T", "-", "-X", "POST", url];
    assert.equal(await curlStdin(streamed, new Uint8Array(10_000)), "413");
  }
});
