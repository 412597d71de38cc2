import { strict as assert } from "node:assert";
import { spawnCli } from "./support/cli.ts";
import { rawRequest } from "./support/clients.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { startTestServer } from "./support/servers.ts";

const SITE = {
  "index.html": "<h1>home</h1>",
  "a.txt": "hello world",
  "style.css": "body{}",
  "data.json": '{"a":1}',
  "img.png": new Uint8Array([137, 80, 78, 71]),
  "docs/index.html": "<h1>docs</h1>",
  "docs/guide.md": "# guide",
  "empty/x.bin": new Uint8Array(0),
  "plain/one.txt": "1",
  "plain/<b>&two.txt": "2",
  ".secret": "dot",
  ".well-known/acme": "token",
  "space name.txt": "spaced",
};

async function site(extra: Record<string, unknown> = {}) {
  const dir = await tempDir();
  await writeFiles(`${dir.path}/root`, SITE);
  await Deno.writeTextFile(`${dir.path}/canary.txt`, "CANARY");
  const server = await startTestServer({
    http: { static_dir: `${dir.path}/root`, ...extra },
  });
  return {
    url: server.url,
    dir: dir.path,
    async [Symbol.asyncDispose]() {
      await server[Symbol.asyncDispose]();
      await dir[Symbol.asyncDispose]();
    },
  };
}

async function curl(...args: string[]): Promise<{ status: number; headers: string; body: string }> {
  const out = await new Deno.Command("curl", {
    args: ["-s", "-i", "--path-as-is", ...args],
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const split = text.indexOf("\r\n\r\n");
  const headers = text.slice(0, split);
  return { status: Number(headers.split(" ")[1]), headers, body: text.slice(split + 4) };
}

Deno.test("serves files with MIME types, charset, ETag and Last-Modified", async () => {
  await using s = await site();
  const cases: [string, string, string][] = [
    ["/a.txt", "text/plain; charset=utf-8", "hello world"],
    ["/style.css", "text/css; charset=utf-8", "body{}"],
    ["/data.json", "application/json; charset=utf-8", '{"a":1}'],
    ["/docs/guide.md", "text/markdown; charset=utf-8", "# guide"],
    ["/space%20name.txt", "text/plain; charset=utf-8", "spaced"],
  ];
  for (const [path, type, body] of cases) {
    const res = await fetch(s.url + path);
    assert.equal(res.status, 200, path);
    assert.equal(res.headers.get("content-type"), type, path);
    assert.equal(await res.text(), body, path);
    assert.match(res.headers.get("etag") ?? "", /^"[0-9a-f]+-[0-9a-f]+"$/);
    assert.ok(res.headers.get("last-modified")?.endsWith("GMT"));
    assert.equal(res.headers.get("accept-ranges"), "bytes");
  }
  const png = await fetch(s.url + "/img.png");
  assert.equal(png.headers.get("content-type"), "image/png");
  assert.deepEqual(new Uint8Array(await png.arrayBuffer()), SITE["img.png"]);
  const empty = await fetch(s.url + "/empty/x.bin");
  assert.equal(empty.status, 200);
  assert.equal((await empty.arrayBuffer()).byteLength, 0);
});

Deno.test("index.html for folders, 301 to the slash form with the query kept", async () => {
  await using s = await site();
  assert.equal(await (await fetch(s.url + "/")).text(), "<h1>home</h1>");
  assert.equal(await (await fetch(s.url + "/docs/")).text(), "<h1>docs</h1>");
  const res = await fetch(s.url + "/docs?x=1&y=2", { redirect: "manual" });
  assert.equal(res.status, 301);
  assert.equal(res.headers.get("location"), "/docs/?x=1&y=2");
  await res.body?.cancel();
  const noIndex = await fetch(s.url + "/plain/");
  assert.equal(noIndex.status, 404);
  await noIndex.body?.cancel();
  const fileSlash = await fetch(s.url + "/a.txt/");
  assert.equal(fileSlash.status, 404);
  await fileSlash.body?.cancel();
});

Deno.test("files are also reachable under /static/, a root file wins", async () => {
  await using s = await site();
  await writeFiles(`${s.dir}/root`, { "static/own.txt": "own", "static/a.txt": "root wins" });
  assert.equal(await (await fetch(s.url + "/static/a.txt")).text(), "root wins");
  assert.equal(await (await fetch(s.url + "/static/docs/guide.md")).text(), "# guide");
  assert.equal(await (await fetch(s.url + "/static/own.txt")).text(), "own");
});

Deno.test("HEAD gives the headers without a body; other methods get 405 with Allow", async () => {
  await using s = await site();
  const head = await curl("-I", `${s.url}/a.txt`);
  assert.equal(head.status, 200);
  assert.match(head.headers, /content-length: 11/i);
  assert.equal(head.body, "");
  for (const method of ["POST", "PUT", "DELETE", "PATCH"]) {
    const res = await fetch(s.url + "/a.txt", { method });
    assert.equal(res.status, 405, method);
    assert.equal(res.headers.get("allow"), "GET, HEAD");
    assert.match(res.headers.get("content-type") ?? "", /text\/html/);
    assert.match(await res.text(), /405 Method Not Allowed/);
  }
});

Deno.test("conditional requests: If-None-Match and If-Modified-Since give 304", async () => {
  await using s = await site();
  const first = await fetch(s.url + "/a.txt");
  await first.body?.cancel();
  const etag = first.headers.get("etag")!;
  const lastModified = first.headers.get("last-modified")!;
  const cases: [Record<string, string>, number][] = [
    [{ "if-none-match": etag }, 304],
    [{ "if-none-match": `"other", W/${etag}` }, 304],
    [{ "if-none-match": "*" }, 304],
    [{ "if-none-match": '"other"' }, 200],
    [{ "if-modified-since": lastModified }, 304],
    [{ "if-modified-since": "Thu, 01 Jan 1970 00:00:00 GMT" }, 200],
    [{ "if-none-match": '"other"', "if-modified-since": lastModified }, 200],
    [{ "if-match": '"other"' }, 412],
    [{ "if-match": etag }, 200],
    [{ "if-unmodified-since": "Thu, 01 Jan 1970 00:00:00 GMT" }, 412],
    // Values that are not HTTP dates are ignored (RFC 9110 §13.1.3, §13.1.4).
    [{ "if-unmodified-since": "garbage" }, 200],
    [{ "if-modified-since": "2099" }, 200],
  ];
  for (const [headers, status] of cases) {
    const res = await fetch(s.url + "/a.txt", { headers });
    assert.equal(res.status, status, JSON.stringify(headers));
    if (status === 304) assert.equal(res.headers.get("etag"), etag);
    await res.body?.cancel();
  }
});

Deno.test("ranges: 206 with Content-Range, 416 past the end, If-Range honoured", async () => {
  await using s = await site();
  const get = (headers: Record<string, string>) => fetch(s.url + "/a.txt", { headers });
  let res = await get({ range: "bytes=0-4" });
  assert.equal(res.status, 206);
  assert.equal(res.headers.get("content-range"), "bytes 0-4/11");
  assert.equal(await res.text(), "hello");
  res = await get({ range: "bytes=6-" });
  assert.equal(await res.text(), "world");
  res = await get({ range: "bytes=-3" });
  assert.equal(res.headers.get("content-range"), "bytes 8-10/11");
  assert.equal(await res.text(), "rld");
  res = await get({ range: "bytes=5-100" });
  assert.equal(res.headers.get("content-range"), "bytes 5-10/11");
  await res.body?.cancel();
  res = await get({ range: "bytes=11-" });
  assert.equal(res.status, 416);
  assert.equal(res.headers.get("content-range"), "bytes */11");
  await res.body?.cancel();
  res = await get({ range: "bytes=0-1,3-4" });
  assert.equal(res.status, 200, "several ranges get the whole file");
  assert.equal(await res.text(), "hello world");
  const etag = (await get({})).headers.get("etag")!;
  res = await get({ range: "bytes=0-4", "if-range": etag });
  assert.equal(res.status, 206);
  await res.body?.cancel();
  res = await get({ range: "bytes=0-4", "if-range": '"stale"' });
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "hello world");
});

Deno.test("a changed file is served fresh once the cache TTL has passed", async () => {
  await using s = await site({ file_cache_ttl_ms: 50 });
  assert.equal(await (await fetch(s.url + "/a.txt")).text(), "hello world");
  await Deno.writeTextFile(`${s.dir}/root/a.txt`, "changed content");
  await new Promise((r) => setTimeout(r, 120));
  const res = await fetch(s.url + "/a.txt");
  assert.equal(await res.text(), "changed content");
  assert.equal(res.headers.get("content-length"), "15");
  await Deno.remove(`${s.dir}/root/a.txt`);
  await new Promise((r) => setTimeout(r, 120));
  const gone = await fetch(s.url + "/a.txt");
  assert.equal(gone.status, 404);
  await gone.body?.cancel();
});

Deno.test("a large file streams from disk with flat memory, and ranges work on it", async () => {
  await using dir = await tempDir();
  const size = 512 * 1024 * 1024;
  const file = await Deno.open(`${dir.path}/big.bin`, { write: true, create: true });
  await file.truncate(size);
  await file.seek(size - 4, Deno.SeekMode.Start);
  await file.write(new TextEncoder().encode("TAIL"));
  file.close();
  // The server runs as its own process so that its peak memory is its own.
  await using server = await spawnCli(["-p", "0", "-s", dir.path]);
  const peakMb = async () => {
    const status = await Deno.readTextFile(`/proc/${server.process.pid}/status`);
    return Number(/VmHWM:\s+(\d+)/.exec(status)![1]) / 1024;
  };
  const idle = await peakMb();
  const res = await fetch(server.url + "/big.bin");
  assert.equal(res.headers.get("content-length"), String(size));
  let received = 0;
  let last = new Uint8Array();
  for await (const chunk of res.body!) {
    received += chunk.byteLength;
    last = chunk;
  }
  assert.equal(received, size);
  assert.equal(new TextDecoder().decode(last.subarray(last.length - 4)), "TAIL");
  const peak = await peakMb();
  assert.ok(peak - idle < 64, `peak memory grew by ${(peak - idle).toFixed(0)} MB serving 512 MiB`);
  const tail = await fetch(server.url + "/big.bin", { headers: { range: `bytes=${size - 4}-` } });
  assert.equal(tail.status, 206);
  assert.equal(await tail.text(), "TAIL");
});

Deno.test("directory listing is opt-in, sorted, escaped", async () => {
  await using off = await site();
  const res = await fetch(off.url + "/plain/");
  assert.equal(res.status, 404);
  await res.body?.cancel();
  await using on = await site({ directory_listing: true });
  const list = await fetch(on.url + "/plain/");
  assert.equal(list.status, 200);
  const html = await list.text();
  assert.match(html, /Index of \/plain\//);
  assert.ok(html.includes("&lt;b&gt;&amp;two.txt"), "names are HTML-escaped");
  assert.ok(!html.includes("<b>&two"), "no raw markup from file names");
  assert.ok(html.indexOf("&lt;b&gt;") < html.indexOf("one.txt"), "sorted by name");
  assert.ok(html.includes('href="%3Cb%3E%26two.txt"'));
});

Deno.test("dotfiles are hidden unless configured; .well-known is served", async () => {
  await using s = await site();
  let res = await fetch(s.url + "/.secret");
  assert.equal(res.status, 404);
  await res.body?.cancel();
  assert.equal(await (await fetch(s.url + "/.well-known/acme")).text(), "token");
  await using on = await site({ serve_dotfiles: true });
  res = await fetch(on.url + "/.secret");
  assert.equal(await res.text(), "dot");
});

Deno.test("never serves outside the root: traversal, encodings, symlinks", async () => {
  await using s = await site();
  await Deno.symlink(`${s.dir}/canary.txt`, `${s.dir}/root/link.txt`);
  await Deno.symlink(s.dir, `${s.dir}/root/up`);
  await Deno.symlink(`${s.dir}/root/a.txt`, `${s.dir}/root/inside.txt`);
  const attempts = [
    "/../canary.txt",
    "/%2e%2e/canary.txt",
    "/%2E%2E/canary.txt",
    "/..%2fcanary.txt",
    "/..%2Fcanary.txt",
    "/%2e%2e%2fcanary.txt",
    "/..%5ccanary.txt",
    "/..\\canary.txt",
    "/docs/../../canary.txt",
    "/docs/%2e%2e/%2e%2e/canary.txt",
    "/link.txt",
    "/up/canary.txt",
    "/static/../canary.txt",
    "/static/%2e%2e/canary.txt",
    "//../canary.txt",
    "/C:/canary.txt",
    "/%252e%252e/canary.txt",
  ];
  for (const path of attempts) {
    const res = await curl(`${s.url}${path}`);
    assert.ok([400, 404].includes(res.status), `${path} got ${res.status}`);
    assert.ok(!res.body.includes("CANARY"), `${path} leaked the canary`);
  }
  for (const path of ["/a%00.txt", "/%c0%ae%c0%ae/canary.txt", "/%zz"]) {
    const res = await curl(`${s.url}${path}`);
    assert.equal(res.status, 400, path);
  }
  assert.equal((await curl(`${s.url}/inside.txt`)).body, "hello world", "links inside are fine");
});

Deno.test("without a static folder, / shows the welcome page and other paths 404", async () => {
  await using dir = await tempDir();
  await using s = await startTestServer({ http: { static_dir: `${dir.path}/missing` } });
  const res = await fetch(s.url + "/");
  assert.equal(res.status, 200);
  assert.match(await res.text(), /denoserve is running[\s\S]*missing/);
  const other = await fetch(s.url + "/x.html");
  assert.equal(other.status, 404);
  await other.body?.cancel();
  assert.deepEqual([...Deno.readDirSync(dir.path)], [], "the server wrote nothing");
});

Deno.test("server.default_root: true shows the welcome page at / when there is no index.html", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "a.txt": "a", "sub/index.html": "<p>sub</p>" });
  const status = async (url: string) => {
    const res = await fetch(url);
    return [res.status, await res.text()] as const;
  };
  {
    // The shipped default: no index.html at / is a 404.
    await using s = await startTestServer({ http: { static_dir: dir.path } });
    assert.equal(s.config.server.default_root, false);
    assert.equal((await status(s.url + "/"))[0], 404);
  }
  {
    await using s = await startTestServer({
      server: { default_root: true },
      http: { static_dir: dir.path, directory_listing: true },
    });
    const [code, body] = await status(s.url + "/");
    assert.equal(code, 200);
    assert.match(body, /denoserve is running/, "the welcome page, before the listing");
    assert.deepEqual(await status(s.url + "/a.txt"), [200, "a"]);
    assert.deepEqual(await status(s.url + "/sub/"), [200, "<p>sub</p>"]);
  }
  await writeFiles(dir.path, { "index.html": "<h1>home</h1>" });
  {
    await using s = await startTestServer({
      server: { default_root: true },
      http: { static_dir: dir.path },
    });
    assert.deepEqual(await status(s.url + "/"), [200, "<h1>home</h1>"], "the site's index wins");
  }
});

Deno.test("compressed forms: precompressed siblings and cached text, by Accept-Encoding", async () => {
  await using dir = await tempDir();
  const text = "denoserve compresses text once and serves it many times. ".repeat(200);
  const { gzipSync, brotliDecompressSync, gunzipSync } = await import("node:zlib");
  await writeFiles(dir.path, {
    "app.js": text,
    "app.js.gz": gzipSync(new TextEncoder().encode("/* the precompressed sibling */")),
    "page.html": text,
    "tiny.txt": "short",
    "photo.jpg": new Uint8Array(4096),
  });
  await using s = await startTestServer({ http: { static_dir: dir.path } });
  const raw = async (path: string, headers: Record<string, string>) => {
    const out = await new Deno.Command("curl", {
      args: [
        "-s",
        "-D",
        "-",
        "-o",
        `${dir.path}/out.bin`,
        ...Object.entries(headers).flatMap((
          [k, v],
        ) => ["-H", `${k}: ${v}`]),
        `${s.url}${path}`,
      ],
    }).output();
    return {
      headers: new TextDecoder().decode(out.stdout).toLowerCase(),
      body: await Deno.readFile(`${dir.path}/out.bin`),
    };
  };
  let r = await raw("/app.js", { "accept-encoding": "gzip, br" });
  assert.match(r.headers, /content-encoding: gzip/, "the .gz sibling wins over compressing");
  assert.match(r.headers, /vary: accept-encoding/);
  assert.match(r.headers, /content-type: text\/javascript; charset=utf-8/);
  assert.equal(new TextDecoder().decode(gunzipSync(r.body)), "/* the precompressed sibling */");
  r = await raw("/page.html", { "accept-encoding": "gzip, br" });
  assert.match(r.headers, /content-encoding: br/);
  assert.ok(r.body.byteLength < text.length / 5, `compressed to ${r.body.byteLength} bytes`);
  assert.equal(new TextDecoder().decode(brotliDecompressSync(r.body)), text);
  r = await raw("/page.html", { "accept-encoding": "gzip" });
  assert.match(r.headers, /content-encoding: gzip/);
  assert.equal(new TextDecoder().decode(gunzipSync(r.body)), text);
  r = await raw("/page.html", { "accept-encoding": "br;q=0, gzip;q=0" });
  assert.doesNotMatch(r.headers, /content-encoding/);
  assert.match(r.headers, /vary: accept-encoding/);
  assert.equal(new TextDecoder().decode(r.body), text);
  r = await raw("/page.html", { "accept-encoding": "br", range: "bytes=0-9" });
  assert.doesNotMatch(r.headers, /content-encoding/, "ranges are of the identity form");
  assert.match(r.headers, /^http\/1\.1 206/);
  assert.match(r.headers, /vary: accept-encoding/, "a 206 carries the Vary of the 200");
  assert.equal(new TextDecoder().decode(r.body), text.slice(0, 10));
  // A 304 carries the Vary (RFC 9110 §15.4.5), for the compressed and the identity form.
  for (const encoding of ["br", "identity"]) {
    const full = await raw("/page.html", { "accept-encoding": encoding });
    const etag = /etag: (\S+)/.exec(full.headers)![1];
    r = await raw("/page.html", { "accept-encoding": encoding, "if-none-match": etag });
    assert.match(r.headers, /^http\/1\.1 304/, encoding);
    assert.match(r.headers, /vary: accept-encoding/, `${encoding}: a 304 carries the Vary`);
  }
  for (const path of ["/tiny.txt", "/photo.jpg"]) {
    r = await raw(path, { "accept-encoding": "gzip, br" });
    assert.doesNotMatch(r.headers, /content-encoding/, `${path} is not worth compressing`);
  }
});

Deno.test("error pages show a requested path's control characters percent-encoded, never raw", async () => {
  await using s = await site();
  const port = Number(new URL(s.url).port);
  const answer = await rawRequest(
    port,
    "GET /x%0d%0aSet-Cookie:%20evil=1%07 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
  );
  assert.equal(answer.status, 404);
  const body = answer.text.slice(answer.text.indexOf("\r\n\r\n") + 4);
  assert.match(body, /\/x%0D%0ASet-Cookie: evil=1%07 was not found/);
  assert.doesNotMatch(body, /[\r\n]Set-Cookie/);
  assert.ok(!body.includes("\x07"), "no raw control character in the page");
});
