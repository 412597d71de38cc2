import { strict as assert } from "node:assert";
import { RequestHeads } from "../src/server/request_heads.ts";
import { seeded } from "./support/random.ts";

const enc = new TextEncoder();
const dec = new TextDecoder("latin1");

/** What the scanner passes on for `stream`, fed in pieces of the given sizes (cycled). */
function through(stream: string, sizes: number[] = [1 << 20]): string {
  const scanner = new RequestHeads();
  const bytes = enc.encode(stream);
  let out = "";
  for (let i = 0, k = 0; i < bytes.length; k++) {
    const n = sizes[k % sizes.length];
    for (const part of scanner.feed(bytes.subarray(i, i + n))) out += dec.decode(part);
    i += n;
  }
  return out;
}

const withHost = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
const noHost = "GET /b HTTP/1.1\r\nAccept: */*\r\n\r\n";
const noHostMarked = "GET /b HTTP/1.1\r\nHost: \r\nAccept: */*\r\n\r\n";

Deno.test("request heads: an HTTP/1.1 head without Host gets an empty Host; nothing else changes", () => {
  assert.equal(through(withHost), withHost);
  assert.equal(through(noHost), noHostMarked);
  const http10 = "GET / HTTP/1.0\r\n\r\n";
  assert.equal(through(http10), http10, "HTTP/1.0 may omit Host");
  assert.equal(through("\r\n" + noHost), "\r\n" + noHostMarked, "an empty line first");
  // Pipelined, after bodies of both framings; the body bytes are never taken for heads.
  const cl =
    "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 34\r\n\r\nGET /fake HTTP/1.1\r\nNot: head\r\n\r\n";
  const chunked = "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
    "1a;ext=1\r\nGET /fake HTTP/1.1\r\n\r\nxxxx\r\n0\r\nTrailer: t\r\n\r\n";
  const stream = cl + chunked + noHost + withHost;
  const expected = cl + chunked + noHostMarked + withHost;
  for (const sizes of [[1 << 20], [1], [2, 3], [7], [13, 1, 5]]) {
    assert.equal(through(stream, sizes), expected, `pieces of ${sizes}`);
  }
});

Deno.test("request heads: what cannot be followed passes through unchanged", () => {
  // After an upgrade the bytes are WebSocket frames, not requests.
  const upgrade =
    "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nHost: x\r\n\r\n";
  assert.equal(through(upgrade + noHost), upgrade + noHost);
  // Garbage and a bad length are left to the runtime's parser.
  assert.equal(through("NOT HTTP\r\n\r\n" + noHost), "NOT HTTP\r\n\r\n" + noHost);
  const bad = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n" + noHost;
  assert.equal(through(bad), bad);
  // A head over 64 KiB is passed on as it is.
  const big = `GET / HTTP/1.1\r\nX: ${"a".repeat(70_000)}\r\n\r\n`;
  assert.equal(through(big + noHost, [4096]), big + noHost);
});

Deno.test("request heads: random splits of random streams lose and reorder nothing", () => {
  const rand = seeded(14);
  const parts = [withHost, noHost, "GET /x HTTP/1.0\r\n\r\n"];
  for (let round = 0; round < 200; round++) {
    let stream = "";
    let expected = "";
    for (let k = 0; k < 6; k++) {
      const p = rand.pick(parts);
      stream += p;
      expected += p === noHost ? noHostMarked : p;
    }
    const sizes = Array.from({ length: 4 }, () => 1 + rand.int(40));
    assert.equal(through(stream, sizes), expected);
  }
});
