/**
 * `server.compression`: proxied answers, error pages and listings compressed with the coding the
 * client prefers, checked by decoding with curl `--compressed` and the `gzip` and `zstd` tools;
 * what is never compressed; server-sent events and chunked answers that keep flowing event by
 * event (each sent only once the client has decoded the one before).
 */
import assert from "node:assert/strict";
import { type Backend, serveBackend } from "./support/backends.ts";
import { configError } from "./support/config.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { startTestServer, type TestServer } from "./support/servers.ts";
import { preferredEncoding } from "../src/http/encoding.ts";

const dec = new TextDecoder();

/** A JSON document of about `bytes` bytes. */
const json = (bytes: number) =>
  JSON.stringify(
    Array.from({ length: Math.ceil(bytes / 60) }, (_, i) => ({ id: i, name: `item number ${i}` })),
  );
const BIG = json(100 * 1024);
/** Past the size compressed in one go: compressed as it streams. */
const HUGE = json(400 * 1024);
const SMALL = json(10 * 1024);

/** Runs curl; resolves to its stdout bytes and the response head (-D). */
async function curlRaw(args: string[]): Promise<{ body: Uint8Array; head: string }> {
  const headFile = await Deno.makeTempFile();
  try {
    const out = await new Deno.Command("curl", {
      args: ["-sS", "-D", headFile, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, dec.decode(out.stderr));
    return { body: out.stdout, head: (await Deno.readTextFile(headFile)).toLowerCase() };
  } finally {
    await Deno.remove(headFile);
  }
}

/** `bytes` decoded by `tool -dc` (gzip or zstd). */
async function decodeWith(tool: "gzip" | "zstd", bytes: Uint8Array): Promise<string> {
  const child = new Deno.Command(tool, { args: ["-dc"], stdin: "piped", stdout: "piped" })
    .spawn();
  const writer = child.stdin.getWriter();
  await writer.write(bytes);
  await writer.close();
  const out = await child.output();
  assert.equal(out.code, 0, `${tool} -dc failed`);
  return dec.decode(out.stdout);
}

const header = (head: string, name: string) =>
  new RegExp(`^${name}: (.*)\\r$`, "m").exec(head)?.[1];

async function server(
  backend: Backend,
  dir: string,
  compression: Record<string, unknown> = { enabled: true },
  http: Record<string, unknown> = {},
): Promise<TestServer> {
  return await startTestServer({
    http: { static_dir: `${dir}/site`, templates_dir: `${dir}/templates`, ...http },
    server: {
      compression,
      reverse_proxy: [{ path: "/api", host: "127.0.0.1", port: backend.port }],
    },
  });
}

function jsonBackend(): Backend {
  return serveBackend((req) => {
    const path = new URL(req.url).pathname;
    if (path === "/big") {
      return new Response(BIG, {
        headers: { "content-type": "application/json", etag: '"v1"', vary: "Cookie" },
      });
    }
    if (path === "/small") return Response.json(JSON.parse(SMALL));
    if (path === "/huge") {
      return new Response(HUGE, { headers: { "content-type": "application/json" } });
    }
    if (path === "/tiny") return Response.json({ ok: true });
    if (path === "/png") {
      return new Response(new Uint8Array(5000), { headers: { "content-type": "image/png" } });
    }
    if (path === "/gzipped") {
      return new Response(new Uint8Array([1, 2, 3, 4]), {
        headers: { "content-type": "application/json", "content-encoding": "gzip" },
      });
    }
    if (path === "/no-transform") {
      return new Response(BIG, {
        headers: { "content-type": "text/plain", "cache-control": "no-transform" },
      });
    }
    return new Response("?", { status: 404 });
  });
}

Deno.test("compression: proxied JSON (400, 100 and 10 KiB) decoded by curl --compressed, gzip and zstd; q-values choose; ETag weak, Vary merged", async () => {
  await using b = jsonBackend();
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/.keep": "" });
  await using s = await server(b, dir.path, { enabled: true, encodings: ["zstd", "br", "gzip"] });
  for (const [path, text] of [["/api/huge", HUGE], ["/api/big", BIG], ["/api/small", SMALL]]) {
    // curl offers every coding it knows; it gets zstd, the server's first choice.
    const all = await curlRaw(["--compressed", s.url + path]);
    assert.equal(dec.decode(all.body), text);
    assert.equal(header(all.head, "content-encoding"), "zstd", all.head);

    const gz = await curlRaw(["-H", "Accept-Encoding: gzip", s.url + path]);
    assert.equal(header(gz.head, "content-encoding"), "gzip");
    // The length, always given for answers compressed in one go, is the compressed one.
    const length = header(gz.head, "content-length");
    if (path !== "/api/huge" || length !== undefined) assert.equal(Number(length), gz.body.length);
    assert.ok(gz.body.length < text.length / 3, `${gz.body.length} of ${text.length}`);
    assert.equal(await decodeWith("gzip", gz.body), text);

    const zs = await curlRaw(["-H", "Accept-Encoding: gzip;q=0.5, zstd", s.url + path]);
    assert.equal(header(zs.head, "content-encoding"), "zstd");
    assert.equal(await decodeWith("zstd", zs.body), text);

    const rated = await curlRaw([
      "-H",
      "Accept-Encoding: zstd;q=0.2, br;q=0.4, gzip",
      s.url + path,
    ]);
    assert.equal(header(rated.head, "content-encoding"), "gzip");
    const br = await curlRaw(["--compressed", "-H", "Accept-Encoding: br", s.url + path]);
    assert.equal(header(br.head, "content-encoding"), "br");
    assert.equal(dec.decode(br.body), text);
  }
  // The access log counts the bytes sent, compressed.
  const small = await curlRaw(["-H", "Accept-Encoding: gzip", s.url + "/api/small?logged"]);
  let line: string | undefined;
  while (line === undefined) {
    s.log.flush();
    line = s.log.lines.find((l) => l.startsWith("ACCESS") && l.includes("/api/small?logged"));
    if (line === undefined) await new Promise((r) => setTimeout(r, 20));
  }
  assert.match(line, new RegExp(`" 200 ${small.body.length} `), line);

  const big = await curlRaw(["-H", "Accept-Encoding: gzip", s.url + "/api/big"]);
  assert.equal(header(big.head, "etag"), 'w/"v1"'); // (the head is read lower-cased)
  assert.equal(header(big.head, "vary"), "cookie, accept-encoding");

  // Not accepted at all: identity, with the Vary a cache needs.
  const plain = await curlRaw(["-H", "Accept-Encoding: identity", s.url + "/api/big"]);
  assert.equal(header(plain.head, "content-encoding"), undefined);
  assert.equal(header(plain.head, "etag"), '"v1"');
  assert.equal(header(plain.head, "vary"), "cookie, accept-encoding");
  assert.equal(dec.decode(plain.body), BIG);
});

Deno.test("compression: never twice, never for Range, not below min_size, not for other types or no-transform; off by default", async () => {
  await using b = jsonBackend();
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/.keep": "" });
  await using s = await server(b, dir.path);
  const ae = ["-H", "Accept-Encoding: gzip, zstd"];
  const gz = await curlRaw([...ae, s.url + "/api/gzipped"]);
  assert.deepEqual([...gz.body], [1, 2, 3, 4]);
  assert.equal(header(gz.head, "content-encoding"), "gzip");
  for (const path of ["/api/tiny", "/api/png", "/api/no-transform"]) {
    const r = await curlRaw([...ae, s.url + path]);
    assert.equal(header(r.head, "content-encoding"), undefined, path);
  }
  const ranged = await curlRaw([...ae, "-H", "Range: bytes=0-9", s.url + "/api/big"]);
  assert.equal(header(ranged.head, "content-encoding"), undefined);
  assert.equal(dec.decode(ranged.body), BIG);

  // The shipped default: off.
  await using off = await startTestServer({
    http: { static_dir: `${dir.path}/site` },
    server: { reverse_proxy: [{ path: "/api", host: "127.0.0.1", port: b.port }] },
  });
  const r = await curlRaw(["--compressed", off.url + "/api/big"]);
  assert.equal(header(r.head, "content-encoding"), undefined);
});

Deno.test("compression: error pages and listings are compressed; files keep the file server's own", async () => {
  await using b = jsonBackend();
  await using dir = await tempDir();
  const page = `<html><body>${"<p>not here</p>".repeat(100)}</body></html>`;
  await writeFiles(dir.path, {
    "templates/error_404.html": page,
    ...Object.fromEntries(
      Array.from({ length: 40 }, (_, i) => [`site/list/file-${i}.txt`, "x"]),
    ),
    "site/data.json": SMALL,
  });
  await using s = await server(b, dir.path, { enabled: true }, { directory_listing: true });
  const missing = await curlRaw(["-H", "Accept-Encoding: zstd", s.url + "/nope"]);
  assert.match(missing.head, /^http\/1\.1 404/);
  assert.equal(header(missing.head, "content-encoding"), "zstd");
  assert.equal(await decodeWith("zstd", missing.body), page);
  const listing = await curlRaw(["-H", "Accept-Encoding: gzip", s.url + "/list/"]);
  assert.equal(header(listing.head, "content-encoding"), "gzip");
  assert.match(await decodeWith("gzip", listing.body), /file-39\.txt/);
  // A file: the file server's cached gzip form (its ETag suffix), not compressed again.
  const file = await curlRaw(["-H", "Accept-Encoding: gzip, zstd", s.url + "/data.json"]);
  assert.equal(header(file.head, "content-encoding"), "gzip");
  assert.match(header(file.head, "etag")!, /-gzip"$/);
  assert.equal(await decodeWith("gzip", file.body), SMALL);
});

Deno.test("compression: a file asked for without its codings is sent whole with its length, access log off", async () => {
  // With the access log off nothing else asks the file server to write Content-Length: the
  // runtime writes it from the answer's bytes, unless the answer was turned into a stream.
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/data.json": SMALL });
  await using s = await startTestServer({
    http: { static_dir: `${dir.path}/site` },
    server: { compression: { enabled: true } },
    logging: { access_log: false },
  });
  for (const args of [[], ["-H", "Accept-Encoding: identity"]]) {
    const plain = await curlRaw([...args, s.url + "/data.json"]);
    assert.equal(header(plain.head, "content-length"), String(SMALL.length));
    assert.equal(header(plain.head, "transfer-encoding"), undefined);
    assert.equal(dec.decode(plain.body), SMALL);
  }
});

Deno.test("compression: server-sent events and chunked answers reach the client one by one, compressed", async () => {
  // The backend sends event k+1 only once the client has decoded event k: an answer held back
  // by the compressor would stop the exchange (and fail the test by its time limit).
  let release: () => void = () => {};
  const b = serveBackend((req) => {
    const type = new URL(req.url).searchParams.get("type")!;
    let k = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(ctl) {
        if (k > 0) await new Promise<void>((r) => release = r);
        if (k === 5) return ctl.close();
        ctl.enqueue(new TextEncoder().encode(`data: event ${k++}\n\n`));
      },
    });
    return new Response(body, { headers: { "content-type": type } });
  });
  await using _b = b;
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/.keep": "" });
  await using s = await server(b, dir.path, { enabled: true, min_size: 0 });
  for (
    const [type, coding] of [
      ["text/event-stream", "zstd"],
      ["text/event-stream; charset=utf-8", "gzip"],
      ["application/json", "gzip"],
    ]
  ) {
    const child = new Deno.Command("curl", {
      args: [
        "-sS",
        "-N",
        "--compressed",
        "-H",
        `Accept-Encoding: ${coding}`,
        "-D",
        "/dev/stderr",
        `${s.url}/api/stream?type=${encodeURIComponent(type)}`,
      ],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(30_000),
    }).spawn();
    const head = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let headText = "";
    while (!headText.includes("\r\n\r\n")) headText += (await head.read()).value ?? "";
    assert.match(headText.toLowerCase(), new RegExp(`content-encoding: ${coding}`));
    let text = "";
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    for (let k = 0; k < 5; k++) {
      while (!text.includes(`data: event ${k}\n\n`)) {
        const { value, done } = await reader.read();
        assert.ok(!done, `${type}: ended before event ${k}: ${JSON.stringify(text)}`);
        text += value;
      }
      release();
    }
    while (!(await reader.read()).done) { /* to the end */ }
    head.cancel();
    assert.equal((await child.status).code, 0);
  }
});

Deno.test("compression: preferredEncoding and the keys' checks", () => {
  const offered = ["zstd", "br", "gzip"];
  assert.equal(preferredEncoding("gzip, deflate, br, zstd", offered), "zstd");
  assert.equal(preferredEncoding("gzip;q=1, zstd;q=0.9", offered), "gzip");
  assert.equal(preferredEncoding("gzip;q=0, *;q=0.5", offered), "zstd");
  assert.equal(preferredEncoding("*;q=0, br", offered), "br");
  assert.equal(preferredEncoding("identity", offered), undefined);
  assert.equal(preferredEncoding("", offered), undefined);
  assert.match(
    configError({ server: { compression: { gzip_level: 10 } } }),
    /server\.compression\.gzip_level must be 1–9, got 10/,
  );
  assert.match(
    configError({ server: { compression: { encodings: ["deflate"] } } }),
    /server\.compression\.encodings\[0\] must be "zstd", "br" or "gzip", got "deflate"/,
  );
  assert.match(
    configError({ server: { compression: { types: ["json"] } } }),
    /server\.compression\.types\[0\] must be a media type/,
  );
});

Deno.test("compression: a V2 location's files are left to the file server; a proxied answer offering ranges loses Accept-Ranges", async () => {
  await using b = serveBackend(() =>
    new Response(BIG, { headers: { "content-type": "application/json", "accept-ranges": "bytes" } })
  );
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/.keep": "", "files/data.json": SMALL });
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: `${dir.path}/site` },
    server: {
      compression: { enabled: true },
      reverse_proxy: [{ path: "/api", host: "127.0.0.1", port: b.port }],
    },
    extensions: [{
      type: "routing",
      config: { regex_locations: { "^~/files/": { root: dir.path } } },
    }],
  });
  // zstd only: the file server has br and gzip forms, so the file goes as it is.
  const file = await curlRaw(["-H", "Accept-Encoding: zstd", `${s.url}/files/data.json`]);
  assert.equal(header(file.head, "content-encoding"), undefined);
  assert.equal(header(file.head, "accept-ranges"), "bytes");
  assert.equal(dec.decode(file.body), SMALL);
  const proxied = await curlRaw(["-H", "Accept-Encoding: zstd", `${s.url}/api/x`]);
  assert.equal(header(proxied.head, "content-encoding"), "zstd");
  assert.equal(header(proxied.head, "accept-ranges"), undefined);
  assert.equal(await decodeWith("zstd", proxied.body), BIG);
});
