/**
 * QPACK (RFC 9204) without the dynamic table: the server advertises
 * `SETTINGS_QPACK_MAX_TABLE_CAPACITY = 0`, so a peer may only use the static table and literals,
 * and any reference to the dynamic table is an error (QPACK_DECOMPRESSION_FAILED). Field values
 * may be Huffman-coded (RFC 7541 Appendix B). The encoder uses the static table and literals,
 * Huffman-coding a string when that is shorter.
 *
 * @module
 */

/** QPACK_DECOMPRESSION_FAILED (RFC 9204 §6). */
export const QPACK_DECOMPRESSION_FAILED = 0x200;
/** QPACK_ENCODER_STREAM_ERROR. */
export const QPACK_ENCODER_STREAM_ERROR = 0x201;
/** QPACK_DECODER_STREAM_ERROR. */
export const QPACK_DECODER_STREAM_ERROR = 0x202;

/** A field section or a QPACK stream that cannot be decoded; `code` is the HTTP/3 error code. */
export class QpackError extends Error {
  constructor(message: string, readonly code = QPACK_DECOMPRESSION_FAILED) {
    super(message);
  }
}

/** A field section that decodes to more than the limit (RFC 9114 §4.2.2: answered with 431). */
export class FieldSectionTooLarge extends Error {}

/** RFC 9204 Appendix A: the static table, indices 0–98. */
export const STATIC_TABLE: readonly (readonly [string, string])[] = [
  [":authority", ""],
  [":path", "/"],
  ["age", "0"],
  ["content-disposition", ""],
  ["content-length", "0"],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["referer", ""],
  ["set-cookie", ""],
  [":method", "CONNECT"],
  [":method", "DELETE"],
  [":method", "GET"],
  [":method", "HEAD"],
  [":method", "OPTIONS"],
  [":method", "POST"],
  [":method", "PUT"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "103"],
  [":status", "200"],
  [":status", "304"],
  [":status", "404"],
  [":status", "503"],
  ["accept", "*/*"],
  ["accept", "application/dns-message"],
  ["accept-encoding", "gzip, deflate, br"],
  ["accept-ranges", "bytes"],
  ["access-control-allow-headers", "cache-control"],
  ["access-control-allow-headers", "content-type"],
  ["access-control-allow-origin", "*"],
  ["cache-control", "max-age=0"],
  ["cache-control", "max-age=2592000"],
  ["cache-control", "max-age=604800"],
  ["cache-control", "no-cache"],
  ["cache-control", "no-store"],
  ["cache-control", "public, max-age=31536000"],
  ["content-encoding", "br"],
  ["content-encoding", "gzip"],
  ["content-type", "application/dns-message"],
  ["content-type", "application/javascript"],
  ["content-type", "application/json"],
  ["content-type", "application/x-www-form-urlencoded"],
  ["content-type", "image/gif"],
  ["content-type", "image/jpeg"],
  ["content-type", "image/png"],
  ["content-type", "text/css"],
  ["content-type", "text/html; charset=utf-8"],
  ["content-type", "text/plain"],
  ["content-type", "text/plain;charset=utf-8"],
  ["range", "bytes=0-"],
  ["strict-transport-security", "max-age=31536000"],
  ["strict-transport-security", "max-age=31536000; includesubdomains"],
  ["strict-transport-security", "max-age=31536000; includesubdomains; preload"],
  ["vary", "accept-encoding"],
  ["vary", "origin"],
  ["x-content-type-options", "nosniff"],
  ["x-xss-protection", "1; mode=block"],
  [":status", "100"],
  [":status", "204"],
  [":status", "206"],
  [":status", "302"],
  [":status", "400"],
  [":status", "403"],
  [":status", "421"],
  [":status", "425"],
  [":status", "500"],
  ["accept-language", ""],
  ["access-control-allow-credentials", "FALSE"],
  ["access-control-allow-credentials", "TRUE"],
  ["access-control-allow-headers", "*"],
  ["access-control-allow-methods", "get"],
  ["access-control-allow-methods", "get, post, options"],
  ["access-control-allow-methods", "options"],
  ["access-control-expose-headers", "content-length"],
  ["access-control-request-headers", "content-type"],
  ["access-control-request-method", "get"],
  ["access-control-request-method", "post"],
  ["alt-svc", "clear"],
  ["authorization", ""],
  ["content-security-policy", "script-src 'none'; object-src 'none'; base-uri 'none'"],
  ["early-data", "1"],
  ["expect-ct", ""],
  ["forwarded", ""],
  ["if-range", ""],
  ["origin", ""],
  ["purpose", "prefetch"],
  ["server", ""],
  ["timing-allow-origin", "*"],
  ["upgrade-insecure-requests", "1"],
  ["user-agent", ""],
  ["x-forwarded-for", ""],
  ["x-frame-options", "deny"],
  ["x-frame-options", "sameorigin"],
];

// ---------------------------------------------------------------------------------------------
// Huffman code (RFC 7541 Appendix B). The code is canonical: codes of one length are consecutive
// and ordered by symbol, shorter codes first, so the length of each symbol's code defines it.
// ---------------------------------------------------------------------------------------------

/** Code lengths of symbols 0–255 and EOS (256), from RFC 7541 Appendix B. */
// deno-fmt-ignore
const HUFFMAN_LENGTHS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0-15
  28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16-31
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //         ' ' to '/'
  5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //              '0' to '?'
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //                '@' to 'O'
  7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //             'P' to '_'
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //                '`' to 'o'
  6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //            'p' to 127
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128-143
  24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144-159
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160-175
  21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176-191
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192-207
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208-223
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224-239
  26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240-255
  30, //                                                                EOS
];

const EOS = 256;
/** Each symbol's code, right-aligned. */
const CODES = new Uint32Array(257);
/** Per code length: the first code of that length, how many there are, where they start. */
const FIRST = new Uint32Array(31);
const COUNT = new Uint32Array(31);
const START = new Uint32Array(31);
/** Symbols ordered by (length, symbol). */
const SORTED = new Uint16Array(257);
{
  const order = [...HUFFMAN_LENGTHS.keys()].sort((a, b) =>
    HUFFMAN_LENGTHS[a] - HUFFMAN_LENGTHS[b] || a - b
  );
  let code = 0;
  let len = HUFFMAN_LENGTHS[order[0]];
  order.forEach((sym, i) => {
    const l = HUFFMAN_LENGTHS[sym];
    if (l !== len) {
      code <<= l - len;
      len = l;
    }
    if (COUNT[l] === 0) {
      FIRST[l] = code;
      START[l] = i;
    }
    COUNT[l]++;
    CODES[sym] = code;
    SORTED[i] = sym;
    code++;
  });
}

/** The Huffman code of symbol `sym` and its length, as RFC 7541 Appendix B lists them. */
export function huffmanCode(sym: number): { code: number; bits: number } {
  return { code: CODES[sym], bits: HUFFMAN_LENGTHS[sym] };
}

/** Length in bytes of `bytes` Huffman-coded. */
export function huffmanLength(bytes: Uint8Array): number {
  let bits = 0;
  for (let i = 0; i < bytes.length; i++) bits += HUFFMAN_LENGTHS[bytes[i]];
  return (bits + 7) >>> 3;
}

/** Huffman-codes `bytes`, padded with the most significant bits of EOS (all ones). */
export function huffmanEncode(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(huffmanLength(bytes));
  let acc = 0; // pending bits, at most 7 + 30, kept below 2^53 with floating arithmetic
  let n = 0;
  let o = 0;
  for (let i = 0; i < bytes.length; i++) {
    const sym = bytes[i];
    const len = HUFFMAN_LENGTHS[sym];
    acc = acc * 2 ** len + CODES[sym];
    n += len;
    while (n >= 8) {
      n -= 8;
      const byte = Math.floor(acc / 2 ** n);
      out[o++] = byte;
      acc -= byte * 2 ** n;
    }
  }
  if (n > 0) out[o++] = (acc << (8 - n)) | (0xff >>> n);
  return out;
}

/**
 * Decodes a Huffman-coded string. Padding longer than 7 bits, padding that is not a prefix of
 * EOS, and an EOS symbol inside the string are errors (RFC 7541 §5.2).
 */
export function huffmanDecode(bytes: Uint8Array): Uint8Array {
  // At most 8/5 symbols per byte: the shortest code has 5 bits.
  const out = new Uint8Array(Math.ceil(bytes.length * 8 / 5));
  let o = 0;
  let code = 0;
  let len = 0;
  let ones = true; // the bits since the last symbol are all ones
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    for (let bit = 7; bit >= 0; bit--) {
      const v = (b >>> bit) & 1;
      code = code * 2 + v;
      len++;
      if (v === 0) ones = false;
      if (len >= 5) {
        const k = code - FIRST[len];
        if (COUNT[len] > 0 && k >= 0 && k < COUNT[len]) {
          const sym = SORTED[START[len] + k];
          if (sym === EOS) throw new QpackError("Huffman string contains EOS");
          out[o++] = sym;
          code = 0;
          len = 0;
          ones = true;
        } else if (len >= 30) throw new QpackError("invalid Huffman code");
      }
    }
  }
  if (len > 7) throw new QpackError("Huffman padding longer than 7 bits");
  if (!ones) throw new QpackError("Huffman padding is not a prefix of EOS");
  return out.subarray(0, o);
}

// ---------------------------------------------------------------------------------------------
// Integers and strings (RFC 7541 §5.1 and §5.2, as RFC 9204 §4.1 uses them)
// ---------------------------------------------------------------------------------------------

/** Largest integer a decoder takes: far beyond any valid length or index here. */
const MAX_INT = 2 ** 32;

/** A cursor over an encoded field section. */
export class Cursor {
  pos = 0;
  constructor(readonly bytes: Uint8Array) {}
  get done() {
    return this.pos >= this.bytes.length;
  }
  byte(): number {
    if (this.pos >= this.bytes.length) throw new QpackError("field section ends early");
    return this.bytes[this.pos];
  }
  /** An integer with an `n`-bit prefix in the current byte (the bits above it are ignored). */
  int(n: number): number {
    const mask = (1 << n) - 1;
    let value = this.byte() & mask;
    this.pos++;
    if (value < mask) return value;
    let shift = 0;
    for (;;) {
      const b = this.byte();
      this.pos++;
      value += (b & 0x7f) * 2 ** shift;
      if (value > MAX_INT) throw new QpackError("integer too large");
      if ((b & 0x80) === 0) return value;
      shift += 7;
    }
  }
  /** A string whose H bit is at `1 << n` of the current byte and length has an `n`-bit prefix. */
  string(n: number): Uint8Array {
    const huffman = (this.byte() & (1 << n)) !== 0;
    const len = this.int(n);
    if (len > this.bytes.length - this.pos) throw new QpackError("string runs past the end");
    const raw = this.bytes.subarray(this.pos, this.pos + len);
    this.pos += len;
    return huffman ? huffmanDecode(raw) : raw;
  }
}

/** Appends `value` with an `n`-bit prefix, the bits above it taken from `first`. */
export function pushInt(out: number[], first: number, n: number, value: number) {
  const mask = (1 << n) - 1;
  if (value < mask) {
    out.push(first | value);
    return;
  }
  out.push(first | mask);
  value -= mask;
  while (value >= 128) {
    out.push((value % 128) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
}

/** Appends a string literal: the H bit at `1 << n` of `first`, the length with an `n`-bit prefix. */
function pushString(out: number[], first: number, n: number, s: Uint8Array) {
  const h = huffmanLength(s);
  if (h < s.length) {
    pushInt(out, first | (1 << n), n, h);
    for (const b of huffmanEncode(s)) out.push(b);
  } else {
    pushInt(out, first, n, s.length);
    for (let i = 0; i < s.length; i++) out.push(s[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Field sections (RFC 9204 §4.5)
// ---------------------------------------------------------------------------------------------

/** A header string's bytes: `Headers` hold byte strings, one code point below 256 per byte. */
function bytesOf(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
/** Bytes as a string of the same code points (ISO 8859-1), as `Headers` take them. */
function text(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 4096) {
    s += String.fromCharCode(...b.subarray(i, Math.min(i + 4096, b.length)));
  }
  return s;
}

/** Bytes a field line counts for toward SETTINGS_MAX_FIELD_SECTION_SIZE (RFC 9114 §4.2.2). */
const fieldSize = (name: string, value: string) => name.length + value.length + 32;

/**
 * Decodes a field section with the static table only. Throws {@link QpackError} for anything a
 * peer told of a zero-capacity dynamic table may not send, or for bytes that do not parse, and
 * {@link FieldSectionTooLarge} once the lines add up to more than `maxSize` (RFC 9114 §4.2.2).
 */
export function decodeFieldSection(
  bytes: Uint8Array,
  maxSize = Infinity,
): [string, string][] {
  const c = new Cursor(bytes);
  const requiredInsertCount = c.int(8);
  if (requiredInsertCount !== 0) {
    throw new QpackError("field section refers to the dynamic table, whose capacity is 0");
  }
  c.int(7); // Delta Base, with its sign: meaningless without a dynamic table
  const fields: [string, string][] = [];
  let size = 0;
  const add = (name: string, value: string) => {
    size += fieldSize(name, value);
    if (size > maxSize) throw new FieldSectionTooLarge(`field section over ${maxSize} bytes`);
    fields.push([name, value]);
  };
  const staticEntry = (index: number) => {
    const entry = STATIC_TABLE[index];
    if (entry === undefined) throw new QpackError(`static table has no index ${index}`);
    return entry;
  };
  while (!c.done) {
    const b = c.byte();
    if (b & 0x80) {
      // Indexed Field Line: 1 T index(6)
      if ((b & 0x40) === 0) throw new QpackError("indexed field line refers to the dynamic table");
      const [name, value] = staticEntry(c.int(6));
      add(name, value);
    } else if (b & 0x40) {
      // Literal Field Line with Name Reference: 0 1 N T index(4)
      if ((b & 0x10) === 0) throw new QpackError("field name refers to the dynamic table");
      const [name] = staticEntry(c.int(4));
      add(name, text(c.string(7)));
    } else if (b & 0x20) {
      // Literal Field Line with Literal Name: 0 0 1 N H len(3)
      const name = text(c.string(3));
      add(name, text(c.string(7)));
    } else {
      // 0001xxxx (post-base index) and 0000xxxx (post-base name reference): the dynamic table
      throw new QpackError("field line refers to the dynamic table");
    }
  }
  return fields;
}

const exact = new Map<string, number>();
const byName = new Map<string, number>();
STATIC_TABLE.forEach(([name, value], i) => {
  exact.set(`${name}\0${value}`, i);
  if (!byName.has(name)) byName.set(name, i);
});

/**
 * Encodes fields (names in lower case) as a field section that uses no dynamic table: a static
 * entry where one matches whole, else a literal with a static name where the name matches, else
 * a literal name. Strings are Huffman-coded where that is shorter.
 */
export function encodeFieldSection(fields: Iterable<readonly [string, string]>): Uint8Array {
  const out: number[] = [0, 0]; // Required Insert Count 0, Base 0
  for (const [name, value] of fields) {
    const whole = exact.get(`${name}\0${value}`);
    if (whole !== undefined) {
      pushInt(out, 0xc0, 6, whole);
      continue;
    }
    const named = byName.get(name);
    if (named !== undefined) pushInt(out, 0x50, 4, named);
    else pushString(out, 0x20, 3, bytesOf(name));
    pushString(out, 0x00, 7, bytesOf(value));
  }
  return new Uint8Array(out);
}

/**
 * Checks what a peer's QPACK encoder stream sends. With a capacity of 0 the only instruction it
 * may send is Set Dynamic Table Capacity to 0 (RFC 9204 §4.3.1); anything else is
 * QPACK_ENCODER_STREAM_ERROR. Returns how many bytes were whole instructions.
 */
export function checkEncoderStream(bytes: Uint8Array): number {
  return wholeInstructions(bytes, (c) => {
    const b = c.byte();
    if ((b & 0xe0) !== 0x20) {
      throw new QpackError(
        "encoder stream inserts into the dynamic table, whose capacity is 0",
        QPACK_ENCODER_STREAM_ERROR,
      );
    }
    if (c.int(5) !== 0) {
      throw new QpackError(
        "encoder stream sets a dynamic table capacity above 0",
        QPACK_ENCODER_STREAM_ERROR,
      );
    }
  });
}

/**
 * Checks what a peer's QPACK decoder stream sends. The server never refers to the dynamic table,
 * so only Stream Cancellation may come (RFC 9204 §4.4.2); a Section Acknowledgment or an Insert
 * Count Increment is QPACK_DECODER_STREAM_ERROR (§4.4.1, §4.4.3). Returns how many bytes were
 * whole instructions.
 */
export function checkDecoderStream(bytes: Uint8Array): number {
  return wholeInstructions(bytes, (c) => {
    const b = c.byte();
    if (b & 0x80) {
      throw new QpackError(
        "decoder stream acknowledges a section that needed no acknowledgment",
        QPACK_DECODER_STREAM_ERROR,
      );
    }
    if ((b & 0x40) === 0) {
      throw new QpackError(
        "decoder stream increments the insert count of an empty dynamic table",
        QPACK_DECODER_STREAM_ERROR,
      );
    }
    c.int(6);
  });
}

/**
 * Reads instructions from `bytes` with `one` until they run out; returns how many bytes were
 * whole instructions (a cut one at the end waits for more bytes).
 */
function wholeInstructions(bytes: Uint8Array, one: (c: Cursor) => void): number {
  const c = new Cursor(bytes);
  let whole = 0;
  try {
    while (!c.done) {
      one(c);
      whole = c.pos;
    }
  } catch (e) {
    if (e instanceof QpackError && e.code === QPACK_DECOMPRESSION_FAILED) return whole; // partial
    throw e;
  }
  return whole;
}
