/**
 * The HTTP/3 codecs on their own: QPACK against RFC 9204 (the static table of Appendix A, the
 * examples of Appendix B that use no dynamic table, and the dynamic-table ones refused), Huffman
 * against RFC 7541 Appendix B and C, varints against RFC 9000 §16 and §A.1, frames, and a fuzz
 * run with a fixed seed over the frame reader and the QPACK decoder.
 */
import assert from "node:assert/strict";
import {
  checkDecoderStream,
  checkEncoderStream,
  decodeFieldSection,
  encodeFieldSection,
  FieldSectionTooLarge,
  huffmanCode,
  huffmanDecode,
  huffmanEncode,
  QPACK_DECODER_STREAM_ERROR,
  QPACK_ENCODER_STREAM_ERROR,
  QpackError,
  STATIC_TABLE,
} from "../src/server/http3/qpack.ts";
import {
  FRAME,
  frame,
  FrameReader,
  goawayFrame,
  H3,
  H3Error,
  parseId,
  parseSettings,
  readVarint,
  settingsFrame,
  varint,
} from "../src/server/http3/frames.ts";
import { seeded } from "./support/random.ts";

const hex = (s: string) =>
  new Uint8Array((s.replace(/\s+/g, "").match(/../g) ?? []).map((b) => parseInt(b, 16)));
const toHex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const ascii = (s: string) => new TextEncoder().encode(s);

Deno.test("QPACK static table: 99 entries of RFC 9204 Appendix A", () => {
  assert.equal(STATIC_TABLE.length, 99);
  // Spot checks across the table, from Appendix A.
  assert.deepEqual(STATIC_TABLE[0], [":authority", ""]);
  assert.deepEqual(STATIC_TABLE[1], [":path", "/"]);
  assert.deepEqual(STATIC_TABLE[17], [":method", "GET"]);
  assert.deepEqual(STATIC_TABLE[25], [":status", "200"]);
  assert.deepEqual(STATIC_TABLE[31], ["accept-encoding", "gzip, deflate, br"]);
  assert.deepEqual(STATIC_TABLE[52], ["content-type", "text/html; charset=utf-8"]);
  assert.deepEqual(STATIC_TABLE[63], [":status", "100"]);
  assert.deepEqual(STATIC_TABLE[71], [":status", "500"]);
  assert.deepEqual(STATIC_TABLE[85], [
    "content-security-policy",
    "script-src 'none'; object-src 'none'; base-uri 'none'",
  ]);
  assert.deepEqual(STATIC_TABLE[98], ["x-frame-options", "sameorigin"]);
});

Deno.test("Huffman codes are those of RFC 7541 Appendix B", () => {
  // [symbol, code as hex aligned to LSB, length], rows of the appendix's table.
  const rows: [number, number, number][] = [
    [0, 0x1ff8, 13],
    [1, 0x7fffd8, 23],
    [9, 0xffffea, 24],
    [10, 0x3ffffffc, 30],
    [32, 0x14, 6],
    [48, 0x0, 5],
    [58, 0x5c, 7],
    [92, 0x7fff0, 19],
    [97, 0x3, 5],
    [126, 0x1ffd, 13],
    [127, 0xffffffc, 28],
    [128, 0xfffe6, 20],
    [171, 0xfffff0, 24],
    [195, 0x7fff1, 19],
    [208, 0x7fff2, 19],
    [220, 0xffffffd, 28],
    [254, 0x7fffff0, 27],
    [255, 0x3ffffee, 26],
    [256, 0x3fffffff, 30],
  ];
  for (const [sym, code, bits] of rows) {
    assert.deepEqual(huffmanCode(sym), { code, bits }, `symbol ${sym}`);
  }
});

Deno.test("Huffman encodes and decodes the strings of RFC 7541 Appendix C", () => {
  const cases: [string, string][] = [
    ["www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"],
    ["no-cache", "a8eb 1064 9cbf"],
    ["custom-key", "25a8 49e9 5ba9 7d7f"],
    ["custom-value", "25a8 49e9 5bb8 e8b4 bf"],
    ["302", "6402"],
    ["private", "aec3 771a 4b"],
    ["Mon, 21 Oct 2013 20:13:21 GMT", "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff"],
    ["https://www.example.com", "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3"],
    ["307", "640e ff"],
    ["gzip", "9bd9 ab"],
    [
      "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
      "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 " +
      "3160 65c0 03ed 4ee5 b106 3d50 07",
    ],
  ];
  for (const [plain, coded] of cases) {
    assert.equal(toHex(huffmanEncode(ascii(plain))), toHex(hex(coded)), plain);
    assert.equal(new TextDecoder().decode(huffmanDecode(hex(coded))), plain);
  }
  // Every byte value survives a round trip.
  const all = new Uint8Array(256).map((_, i) => i);
  assert.deepEqual(huffmanDecode(huffmanEncode(all)), all);
});

Deno.test("Huffman decoder refuses EOS, long padding and padding that is not ones", () => {
  assert.throws(() => huffmanDecode(hex("ffffffff")), QpackError); // EOS (30 ones) inside
  assert.throws(() => huffmanDecode(hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff ff")), QpackError);
  assert.throws(() => huffmanDecode(hex("00")), QpackError); // '0' then 000 padding
});

Deno.test("QPACK decodes RFC 9204 B.1 (static name reference, literal value)", () => {
  // Appendix B.1: Required Insert Count 0, Base 0; :path=/index.html on static index 1.
  const section = hex("0000 510b 2f69 6e64 6578 2e68 746d 6c");
  assert.deepEqual(decodeFieldSection(section), [[":path", "/index.html"]]);
  // The encoder sends the same line with the value Huffman-coded, being shorter.
  const ours = encodeFieldSection([[":path", "/index.html"]]);
  assert.equal(toHex(ours), "0000518860d5485f2bce9a68");
  assert.equal(toHex(ours.subarray(4)), toHex(huffmanEncode(ascii("/index.html"))));
  assert.deepEqual(decodeFieldSection(ours), [[":path", "/index.html"]]);
});

Deno.test("QPACK refuses field sections like those of RFC 9204 B.2 and B.3, which use the dynamic table", () => {
  // B.2 stream 4: Required Insert Count 2, then two post-base indexed lines.
  assert.throws(() => decodeFieldSection(hex("0381 10 11")), QpackError);
  // Like B.3 stream 8: Required Insert Count 4 (encoded 05), dynamic indexed lines.
  assert.throws(() => decodeFieldSection(hex("0500 80c1 81")), QpackError);
  // A Required Insert Count of 0 but a dynamic (T=0) indexed line, a dynamic name reference and
  // post-base forms.
  for (const bad of ["0000 80", "0000 4100", "0000 10", "0000 0000"]) {
    assert.throws(() => decodeFieldSection(hex(bad)), QpackError, bad);
  }
});

Deno.test("QPACK decodes static indexed lines, literal names and Huffman values", () => {
  const fields: [string, string][] = [
    [":method", "GET"],
    [":scheme", "https"],
    [":path", "/"],
    [":authority", "www.example.com"],
    ["x-custom", "value with spaces"],
    ["accept-encoding", "gzip, deflate, br"],
  ];
  assert.deepEqual(decodeFieldSection(encodeFieldSection(fields)), fields);
  // Static exact matches take one byte each.
  assert.equal(toHex(encodeFieldSection([[":method", "GET"], [":status", "200"]])), "0000d1d9");
});

Deno.test("QPACK keeps bytes above 127 in values as they were", () => {
  const value = "caf\u00e9 \u00ff";
  assert.deepEqual(decodeFieldSection(encodeFieldSection([["x-latin", value]])), [[
    "x-latin",
    value,
  ]]);
});

Deno.test("QPACK decoder stops at the field section size limit", () => {
  const section = encodeFieldSection([["x-a", "a".repeat(100)], ["x-b", "b".repeat(100)]]);
  assert.equal(decodeFieldSection(section, 1000).length, 2);
  assert.throws(() => decodeFieldSection(section, 200), FieldSectionTooLarge);
  // Static references are cheap to send but count at their decoded size (+32 each).
  const many = new Uint8Array([0, 0, ...new Array(1000).fill(0xc0 | 31)]);
  assert.throws(() => decodeFieldSection(many, 16 * 1024), FieldSectionTooLarge);
});

Deno.test("QPACK encoder and decoder streams: only what a zero-capacity table allows", () => {
  assert.equal(checkEncoderStream(hex("20")), 1); // Set Dynamic Table Capacity 0
  // B.2's encoder stream: Set Dynamic Table Capacity 220, then inserts.
  assert.throws(
    () => checkEncoderStream(hex("3fbd01 c00f 7777 772e 6578 616d 706c 652e 636f 6d")),
    (e: unknown) => e instanceof QpackError && e.code === QPACK_ENCODER_STREAM_ERROR,
  );
  assert.throws(() => checkEncoderStream(hex("c00f")), QpackError); // insert with name reference
  assert.equal(checkDecoderStream(hex("44")), 1); // Stream Cancellation, stream 4
  assert.equal(checkDecoderStream(hex("7f")), 0); // incomplete: waits for more
  assert.throws(
    () => checkDecoderStream(hex("84")), // Section Acknowledgment, stream 4
    (e: unknown) => e instanceof QpackError && e.code === QPACK_DECODER_STREAM_ERROR,
  );
  assert.throws(() => checkDecoderStream(hex("01")), QpackError); // Insert Count Increment
});

Deno.test("varints: the examples of RFC 9000 §A.1", () => {
  const cases: [string, number][] = [
    ["c2197c5eff14e88c", 151288809941952652],
    ["9d7f3e7d", 494878333],
    ["7bbd", 15293],
    ["25", 37],
    ["4025", 37],
  ];
  for (const [h, v] of cases) {
    const r = readVarint(hex(h), 0)!;
    assert.equal(r[0], v, h);
    assert.equal(r[1], h.length / 2);
  }
  for (const v of [0, 63, 64, 16383, 16384, 2 ** 30 - 1, 2 ** 30, 2 ** 40 + 7]) {
    assert.equal(readVarint(varint(v), 0)![0], v);
  }
  assert.equal(readVarint(hex("40"), 0), null);
});

Deno.test("SETTINGS, GOAWAY: parse and refuse", () => {
  const s = settingsFrame([[0x1, 0], [0x6, 65536], [0x21, 7]]);
  assert.deepEqual(s.subarray(0, 1), new Uint8Array([FRAME.SETTINGS]));
  const settings = parseSettings(s.subarray(2));
  assert.equal(settings.get(0x6), 65536);
  assert.equal(settings.get(0x21), 7);
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return (e as H3Error).code;
    }
    return undefined;
  };
  assert.equal(code(() => parseSettings(hex("0600 0601"))), H3.SETTINGS_ERROR); // twice
  assert.equal(code(() => parseSettings(hex("0200"))), H3.SETTINGS_ERROR); // HTTP/2 setting
  assert.equal(code(() => parseSettings(hex("06"))), H3.FRAME_ERROR); // truncated
  assert.equal(parseId(goawayFrame(400).subarray(2), "GOAWAY"), 400);
  assert.equal(code(() => parseId(hex("0400"), "GOAWAY")), H3.FRAME_ERROR); // trailing byte
});

/** A reader over `bytes` delivered in pieces of the sizes `cut` picks. */
function readerOf(bytes: Uint8Array, cut: (left: number) => number) {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (at >= bytes.length) return c.close();
      const n = Math.max(1, Math.min(cut(bytes.length - at), bytes.length - at));
      c.enqueue(bytes.slice(at, at + n));
      at += n;
    },
  }).getReader();
}

async function readAll(bytes: Uint8Array, cut: (n: number) => number, limit = 1024) {
  const known = (type: number) => [0, 1, 3, 4, 5, 7, 13].includes(type);
  const reader = new FrameReader(readerOf(bytes, cut), { limit: () => limit }, known);
  const events = [];
  for (;;) {
    const e = await reader.next();
    events.push(e);
    if (e.kind === "end" || e.kind === "oversized") return events;
  }
}

Deno.test("frame reader: frames across any cut, DATA in pieces, unknown types skipped", async () => {
  const headers = encodeFieldSection([[":status", "200"]]);
  const body = new Uint8Array(3000).map((_, i) => i & 0xff);
  const bytes = new Uint8Array([
    ...frame(FRAME.HEADERS, headers),
    ...frame(0x21, new Uint8Array(50)), // reserved (grease) type
    ...frame(FRAME.DATA, body),
    ...frame(FRAME.DATA, new Uint8Array(0)),
    ...frame(FRAME.HEADERS, encodeFieldSection([["x-trailer", "1"]])),
  ]);
  for (const size of [1, 2, 7, 100, 5000]) {
    const events = await readAll(bytes, () => size);
    const frames = events.filter((e) => e.kind === "frame");
    assert.equal(frames.length, 2);
    const data = events.flatMap((e) => e.kind === "data" ? [...e.bytes] : []);
    assert.deepEqual(new Uint8Array(data), body);
    assert.equal(events.at(-1)!.kind, "end");
  }
});

Deno.test("frame reader: a stream ending inside a frame is H3_FRAME_ERROR", async () => {
  const whole = frame(FRAME.HEADERS, new Uint8Array(20));
  for (const n of [1, 2, 10, whole.length - 1]) {
    await assert.rejects(
      () => readAll(whole.subarray(0, n), () => 3),
      (e: unknown) => e instanceof H3Error && e.code === H3.FRAME_ERROR,
    );
  }
  const data = frame(FRAME.DATA, new Uint8Array(20));
  await assert.rejects(
    () => readAll(data.subarray(0, 10), () => 4),
    (e: unknown) => e instanceof H3Error && e.code === H3.FRAME_ERROR,
  );
  // Over the limit: reported, not buffered.
  const events = await readAll(frame(FRAME.HEADERS, new Uint8Array(2000)), () => 100, 1000);
  assert.deepEqual(events.at(-1), { kind: "oversized", type: FRAME.HEADERS, length: 2000 });
});

Deno.test("fuzz (seed 20): frame reader and QPACK decoder fail only with their own errors", async () => {
  const rnd = seeded(20);
  const randomBytes = (n: number) => new Uint8Array(n).map(() => rnd.int(256));
  const valid = encodeFieldSection([
    [":method", "POST"],
    [":path", "/a?b=c"],
    ["content-type", "text/plain"],
    ["x-y", "z".repeat(40)],
  ]);
  let decoded = 0;
  let refused = 0;
  for (let i = 0; i < 5000; i++) {
    // Random bytes, and a valid section with a few bytes flipped.
    const input = i % 2 === 0
      ? randomBytes(rnd.int(64))
      : valid.map((b) => rnd.int(10) === 0 ? rnd.int(256) : b);
    try {
      decodeFieldSection(input, 4096);
      decoded++;
    } catch (e) {
      if (!(e instanceof QpackError) && !(e instanceof FieldSectionTooLarge)) throw e;
      refused++;
    }
  }
  assert.ok(decoded > 0 && refused > 0, `decoded ${decoded}, refused ${refused}`);

  let ended = 0;
  let failed = 0;
  for (let i = 0; i < 1500; i++) {
    const parts: number[] = [];
    for (let f = rnd.int(5); f >= 0; f--) {
      const type = rnd.pick([0, 1, 4, 7, 0x21, rnd.int(64)]);
      const payload = randomBytes(rnd.int(40));
      const whole = frame(type, payload);
      // Sometimes cut a frame short, or put random bytes in.
      const cut = rnd.int(8) === 0 ? whole.subarray(0, rnd.int(whole.length)) : whole;
      parts.push(...(rnd.int(10) === 0 ? randomBytes(cut.length) : cut));
    }
    try {
      await readAll(new Uint8Array(parts), () => 1 + rnd.int(9), 32);
      ended++;
    } catch (e) {
      if (!(e instanceof H3Error)) throw e;
      failed++;
    }
  }
  assert.ok(ended > 0 && failed > 0, `ended ${ended}, failed ${failed}`);
});
