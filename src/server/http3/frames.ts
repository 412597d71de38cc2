/**
 * HTTP/3 framing (RFC 9114 §7): QUIC variable-length integers, frame headers, SETTINGS and
 * GOAWAY payloads, and a reader that takes frames off a QUIC stream with limits on what it
 * buffers. A DATA frame's payload is handed on in pieces as it arrives, never buffered whole; the
 * payload of a frame type this server does not know is skipped as it arrives (§9).
 *
 * @module
 */

/** HTTP/3 error codes (RFC 9114 §8.1). */
export const H3 = {
  NO_ERROR: 0x100,
  GENERAL_PROTOCOL_ERROR: 0x101,
  INTERNAL_ERROR: 0x102,
  STREAM_CREATION_ERROR: 0x103,
  CLOSED_CRITICAL_STREAM: 0x104,
  FRAME_UNEXPECTED: 0x105,
  FRAME_ERROR: 0x106,
  EXCESSIVE_LOAD: 0x107,
  ID_ERROR: 0x108,
  SETTINGS_ERROR: 0x109,
  MISSING_SETTINGS: 0x10a,
  REQUEST_REJECTED: 0x10b,
  REQUEST_CANCELLED: 0x10c,
  REQUEST_INCOMPLETE: 0x10d,
  MESSAGE_ERROR: 0x10e,
  CONNECT_ERROR: 0x10f,
  VERSION_FALLBACK: 0x110,
} as const;

/** Frame types (RFC 9114 §7.2). */
export const FRAME = {
  DATA: 0x0,
  HEADERS: 0x1,
  CANCEL_PUSH: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  GOAWAY: 0x7,
  MAX_PUSH_ID: 0xd,
} as const;

/** HTTP/2 frame types with no HTTP/3 meaning: receiving one is H3_FRAME_UNEXPECTED (§7.2.8). */
export const RESERVED_H2_FRAMES: ReadonlySet<number> = new Set([0x2, 0x6, 0x8, 0x9]);

/** Unidirectional stream types (RFC 9114 §6.2, RFC 9204 §4.2). */
export const STREAM = { CONTROL: 0x0, PUSH: 0x1, QPACK_ENCODER: 0x2, QPACK_DECODER: 0x3 } as const;

/** Settings (RFC 9114 §7.2.4.1, RFC 9204 §5). */
export const SETTING = {
  QPACK_MAX_TABLE_CAPACITY: 0x1,
  MAX_FIELD_SECTION_SIZE: 0x6,
  QPACK_BLOCKED_STREAMS: 0x7,
} as const;

/** HTTP/2 settings with no HTTP/3 meaning: receiving one is H3_SETTINGS_ERROR (§7.2.4.1). */
const RESERVED_H2_SETTINGS = new Set([0x2, 0x3, 0x4, 0x5]);

/** An HTTP/3 error: `code` from {@link H3} or QPACK; on the whole connection or one stream. */
export class H3Error extends Error {
  constructor(readonly code: number, message: string, readonly connection = true) {
    super(message);
  }
}

/** Largest value of a QUIC variable-length integer (2^62 - 1), as a float. */
const VARINT_MAX = 2 ** 62 - 1;

/** Bytes a varint of `v` takes. */
export function varintLength(v: number): number {
  return v < 64 ? 1 : v < 16384 ? 2 : v < 2 ** 30 ? 4 : 8;
}

/** Writes `v` as a QUIC varint at `at`; returns the offset after it. */
export function writeVarint(out: Uint8Array, at: number, v: number): number {
  if (!(v >= 0 && v <= VARINT_MAX) || !Number.isInteger(v)) {
    throw new RangeError(`not a QUIC varint: ${v}`);
  }
  if (v < 64) {
    out[at] = v;
    return at + 1;
  }
  if (v < 16384) {
    out[at] = 0x40 | (v >>> 8);
    out[at + 1] = v & 0xff;
    return at + 2;
  }
  if (v < 2 ** 30) {
    out[at] = 0x80 | (v >>> 24);
    out[at + 1] = (v >>> 16) & 0xff;
    out[at + 2] = (v >>> 8) & 0xff;
    out[at + 3] = v & 0xff;
    return at + 4;
  }
  const hi = Math.floor(v / 2 ** 32);
  const lo = v - hi * 2 ** 32;
  out[at] = 0xc0 | (hi >>> 24);
  out[at + 1] = (hi >>> 16) & 0xff;
  out[at + 2] = (hi >>> 8) & 0xff;
  out[at + 3] = hi & 0xff;
  out[at + 4] = lo >>> 24;
  out[at + 5] = (lo >>> 16) & 0xff;
  out[at + 6] = (lo >>> 8) & 0xff;
  out[at + 7] = lo & 0xff;
  return at + 8;
}

/** `v` as a QUIC varint. */
export function varint(v: number): Uint8Array {
  const out = new Uint8Array(varintLength(v));
  writeVarint(out, 0, v);
  return out;
}

/**
 * Reads a varint at `at`: its value (above 2^53 only approximately: such values are never valid
 * lengths, and as identifiers they only need to compare as large) and the offset after it, or
 * null when `buf` ends first.
 */
export function readVarint(buf: Uint8Array, at: number): [number, number] | null {
  if (at >= buf.length) return null;
  const first = buf[at];
  const len = 1 << (first >>> 6);
  if (at + len > buf.length) return null;
  let v = first & 0x3f;
  for (let i = 1; i < len; i++) v = v * 256 + buf[at + i];
  return [v, at + len];
}

/** A frame: its type and payload. */
export function frame(type: number, payload: Uint8Array): Uint8Array {
  const head = varintLength(type) + varintLength(payload.length);
  const out = new Uint8Array(head + payload.length);
  writeVarint(out, writeVarint(out, 0, type), payload.length);
  out.set(payload, head);
  return out;
}

/** The header of a frame of `type` with a payload of `length` bytes. */
export function frameHeader(type: number, length: number): Uint8Array {
  const out = new Uint8Array(varintLength(type) + varintLength(length));
  writeVarint(out, writeVarint(out, 0, type), length);
  return out;
}

/** A SETTINGS frame. */
export function settingsFrame(settings: Iterable<readonly [number, number]>): Uint8Array {
  const parts: number[] = [];
  for (const [id, value] of settings) parts.push(...varint(id), ...varint(value));
  return frame(FRAME.SETTINGS, new Uint8Array(parts));
}

/** A GOAWAY frame carrying `id` (RFC 9114 §5.2). */
export function goawayFrame(id: number): Uint8Array {
  return frame(FRAME.GOAWAY, varint(id));
}

/**
 * A SETTINGS payload as a map. A setting given twice or an HTTP/2 setting is H3_SETTINGS_ERROR;
 * a payload that does not parse is H3_FRAME_ERROR; unknown settings are kept (and ignored by
 * the caller, as §7.2.4 asks).
 */
export function parseSettings(payload: Uint8Array): Map<number, number> {
  const settings = new Map<number, number>();
  let at = 0;
  while (at < payload.length) {
    const id = readVarint(payload, at);
    const value = id && readVarint(payload, id[1]);
    if (!id || !value) throw new H3Error(H3.FRAME_ERROR, "SETTINGS frame ends inside a setting");
    if (RESERVED_H2_SETTINGS.has(id[0])) {
      throw new H3Error(H3.SETTINGS_ERROR, `SETTINGS carries HTTP/2 setting ${id[0]}`);
    }
    if (settings.has(id[0])) {
      throw new H3Error(H3.SETTINGS_ERROR, `SETTINGS carries setting ${id[0]} twice`);
    }
    settings.set(id[0], value[0]);
    at = value[1];
  }
  return settings;
}

/** The identifier a GOAWAY or MAX_PUSH_ID or CANCEL_PUSH payload carries: one varint, whole. */
export function parseId(payload: Uint8Array, what: string): number {
  const v = readVarint(payload, 0);
  if (!v || v[1] !== payload.length) {
    throw new H3Error(H3.FRAME_ERROR, `${what} frame does not hold exactly one integer`);
  }
  return v[0];
}

/** What {@link FrameReader.next} found. */
export type FrameEvent =
  /** A whole frame other than DATA, with its payload. */
  | { kind: "frame"; type: number; payload: Uint8Array }
  /** A piece of a DATA frame's payload; `last` when it ends the frame. */
  | { kind: "data"; bytes: Uint8Array; last: boolean }
  /** A frame whose payload is over the limit for its type: the reader stops there. */
  | { kind: "oversized"; type: number; length: number }
  /** The stream ended cleanly between frames. */
  | { kind: "end" };

/** Options of {@link FrameReader}. */
export interface FrameReaderOptions {
  /** Largest payload buffered for a frame of `type` (DATA is never buffered). */
  limit(type: number): number;
}

/**
 * Reads frames off a byte stream. A stream that ends inside a frame is H3_FRAME_ERROR (§7.1).
 * Payloads of unknown frame types are skipped without being kept.
 */
export class FrameReader {
  private buf: Uint8Array = new Uint8Array(0);
  private off = 0;
  private ended = false;
  /** Bytes left of the DATA frame being read. */
  private dataLeft = 0;
  private inData = false;

  constructor(
    private readonly source: ReadableStreamDefaultReader<Uint8Array>,
    private readonly options: FrameReaderOptions,
    /** Frame types whose payload is read (the others are skipped). */
    private readonly known: (type: number) => boolean = () => true,
  ) {}

  /** Bytes buffered and not yet read. */
  private get buffered() {
    return this.buf.length - this.off;
  }

  /** Reads more from the source; false at its end. */
  private async more(): Promise<boolean> {
    if (this.ended) return false;
    const { value, done } = await this.source.read();
    if (done) {
      this.ended = true;
      return false;
    }
    if (this.buffered === 0) {
      this.buf = value;
      this.off = 0;
    } else {
      const joined = new Uint8Array(this.buffered + value.length);
      joined.set(this.buf.subarray(this.off));
      joined.set(value, this.buffered);
      this.buf = joined;
      this.off = 0;
    }
    return true;
  }

  /** A varint; null at a clean end before its first byte. */
  async varint(): Promise<number | null> {
    for (;;) {
      const v = readVarint(this.buf, this.off);
      if (v) {
        this.off = v[1];
        return v[0];
      }
      const had = this.buffered;
      if (!(await this.more())) {
        if (had === 0) return null;
        throw new H3Error(H3.FRAME_ERROR, "stream ends inside a frame");
      }
    }
  }

  private async mustVarint(): Promise<number> {
    const v = await this.varint();
    if (v === null) throw new H3Error(H3.FRAME_ERROR, "stream ends inside a frame");
    return v;
  }

  /** Skips `n` bytes. */
  private async skip(n: number) {
    while (n > 0) {
      if (this.buffered === 0 && !(await this.more())) {
        throw new H3Error(H3.FRAME_ERROR, "stream ends inside a frame");
      }
      const k = Math.min(n, this.buffered);
      this.off += k;
      n -= k;
    }
  }

  /** Exactly `n` bytes. */
  private async exact(n: number): Promise<Uint8Array> {
    while (this.buffered < n) {
      if (!(await this.more())) throw new H3Error(H3.FRAME_ERROR, "stream ends inside a frame");
    }
    const out = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return out;
  }

  /** The bytes that follow, unframed: what is buffered, else the next read; null at the end. */
  async chunk(): Promise<Uint8Array | null> {
    if (this.buffered === 0 && !(await this.more())) return null;
    const out = this.buf.subarray(this.off);
    this.off = this.buf.length;
    return out;
  }

  /** The next frame, piece of DATA, oversized frame, or the stream's end. */
  async next(): Promise<FrameEvent> {
    for (;;) {
      if (this.inData) {
        if (this.dataLeft === 0) {
          this.inData = false;
          return { kind: "data", bytes: new Uint8Array(0), last: true };
        }
        if (this.buffered === 0 && !(await this.more())) {
          throw new H3Error(H3.FRAME_ERROR, "stream ends inside a DATA frame");
        }
        const k = Math.min(this.dataLeft, this.buffered);
        const bytes = this.buf.subarray(this.off, this.off + k);
        this.off += k;
        this.dataLeft -= k;
        if (this.dataLeft === 0) this.inData = false;
        return { kind: "data", bytes, last: this.dataLeft === 0 };
      }
      const type = await this.varint();
      if (type === null) return { kind: "end" };
      const length = await this.mustVarint();
      if (type === FRAME.DATA) {
        this.inData = true;
        this.dataLeft = length;
        continue;
      }
      if (!this.known(type)) {
        await this.skip(length);
        continue;
      }
      if (length > this.options.limit(type)) return { kind: "oversized", type, length };
      return { kind: "frame", type, payload: await this.exact(length) };
    }
  }
}
