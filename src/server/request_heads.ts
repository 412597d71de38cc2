/**
 * Follows the HTTP/1.x requests a client sends on one connection, as bytes pass through the TLS
 * front, to find what the runtime's parser does not tell a handler: an HTTP/1.1 request without
 * `Host` (RFC 9112 §3.2 asks for a 400). Such a head gets an empty `Host:` line, which the routes
 * refuse with 400 as they refuse a client's own empty Host; nothing else is changed.
 *
 * Bodies are skipped by their framing (Content-Length, chunked). Whatever the scanner cannot
 * follow (an upgrade, a head over 64 KiB, framing it does not understand) makes it step aside and
 * pass the rest through unchanged: the runtime's parser refuses what is really malformed.
 *
 * @module
 */
import { concatBytes } from "../http/bytes.ts";

/** Longest request head followed; a longer one is passed on as it is. */
const MAX_HEAD = 64 * 1024;
const CR = 13;
const LF = 10;
const EMPTY_HOST = new TextEncoder().encode("Host: \r\n");

type State =
  | { kind: "head" }
  | { kind: "body"; left: number }
  | { kind: "chunk-size" }
  | { kind: "chunk-data"; left: number }
  | { kind: "chunk-end" }
  | { kind: "trailers" }
  | { kind: "through" };

/** What one finished head says about framing and Host. */
interface Head {
  http11: boolean;
  host: boolean;
  /** Where the request line ends (the index of its CR LF) in the head's bytes. */
  lineEnd: number;
  next: State;
}

const decoder = new TextDecoder("latin1");

/** Whether `bytes` at `at` holds `name` (lowercase ASCII) in any case, then a colon. */
function headerIs(bytes: Uint8Array, at: number, end: number, name: string): boolean {
  if (end - at <= name.length || bytes[at + name.length] !== 58) return false;
  for (let k = 0; k < name.length; k++) {
    if ((bytes[at + k] | 0x20) !== name.charCodeAt(k)) return false;
  }
  return true;
}

const VERSION = "HTTP/1.";

/**
 * Reads what the scanner needs from a whole head, on its bytes: decoding the head to a string
 * cost about 6% of a small HTTPS answer.
 */
function parseHead(bytes: Uint8Array): Head {
  let start = 0;
  // Empty lines before a request are ignored (RFC 9112 §2.2).
  while (bytes[start] === CR && bytes[start + 1] === LF) start += 2;
  let lineEnd = start;
  while (lineEnd + 1 < bytes.length && !(bytes[lineEnd] === CR && bytes[lineEnd + 1] === LF)) {
    lineEnd++;
  }
  const v = lineEnd - VERSION.length - 1;
  let version = v > start && bytes[v - 1] === 32;
  for (let k = 0; version && k < VERSION.length; k++) {
    version = bytes[v + k] === VERSION.charCodeAt(k);
  }
  const minor = bytes[lineEnd - 1];
  if (!version || (minor !== 48 && minor !== 49)) {
    return { http11: false, host: true, lineEnd, next: { kind: "through" } };
  }
  let host = false;
  let length: number | undefined;
  let chunked = false;
  let through = bytes[start] === 67 && decoder.decode(bytes.subarray(start, start + 8)) ===
      "CONNECT "; // a tunnel, not requests
  for (let at = lineEnd + 2; at < bytes.length;) {
    let end = at;
    while (end + 1 < bytes.length && !(bytes[end] === CR && bytes[end + 1] === LF)) end++;
    if (end === at) break;
    const value = () => decoder.decode(bytes.subarray(bytes.indexOf(58, at) + 1, end)).trim();
    switch (bytes[at] | 0x20) {
      case 104: // h
        if (headerIs(bytes, at, end, "host")) host = true;
        break;
      case 99: // c
        if (headerIs(bytes, at, end, "content-length")) {
          const text = value();
          length = /^\d+$/.test(text) ? Number(text) : NaN;
        }
        break;
      case 116: // t
        if (headerIs(bytes, at, end, "transfer-encoding")) {
          chunked = /(^|,)\s*chunked$/i.test(value());
          if (!chunked) through = true;
        }
        break;
      case 117: // u
        if (headerIs(bytes, at, end, "upgrade")) through = true;
        break;
    }
    at = end + 2;
  }
  let next: State = { kind: "head" };
  if (through || (length !== undefined && !Number.isSafeInteger(length))) {
    next = { kind: "through" };
  } else if (chunked) next = { kind: "chunk-size" };
  else if (length !== undefined && length > 0) next = { kind: "body", left: length };
  return { http11: minor === 49, host, lineEnd, next };
}

/** Appends `part` to `out`, joined to the last part when it continues it in the same buffer. */
function push(out: Uint8Array[], part: Uint8Array) {
  if (part.length === 0) return;
  const last = out[out.length - 1];
  if (
    last !== undefined && last.buffer === part.buffer &&
    last.byteOffset + last.length === part.byteOffset
  ) {
    out[out.length - 1] = new Uint8Array(last.buffer, last.byteOffset, last.length + part.length);
  } else out.push(part);
}

/** Follows one connection's requests; see the module comment. */
export class RequestHeads {
  #state: State = { kind: "head" };
  /** Bytes of a head not complete yet, held back until its end is seen. */
  #held: Uint8Array[] = [];
  #heldBytes = 0;
  /** Trailing bytes of the last chunk that may begin CR LF CR LF across a chunk boundary. */
  #tail = 0;
  #line = "";

  /** Set when a request came that this connection may not carry: it is to be closed. */
  refused = false;

  /**
   * `onHead` is called each time a whole request head has been seen. With `http11Only` (ALPN
   * chose http/1.1) an HTTP/2 preface is refused rather than passed on.
   */
  constructor(private readonly onHead?: () => void, private readonly http11Only = false) {}

  /** Whether the bytes now expected are a request body (or its chunked framing). */
  get inBody(): boolean {
    const kind = this.#state.kind;
    return kind !== "head" && kind !== "through";
  }

  /** Whether part of a request head has come and its end has not. */
  get partial(): boolean {
    return this.#state.kind === "head" && (this.#heldBytes > 0 || this.#tail > 0);
  }

  /** The bytes to send on for `chunk` (possibly none yet, possibly with a Host line added). */
  feed(chunk: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    let i = 0;
    while (i < chunk.length) {
      const s = this.#state;
      if (s.kind === "through") {
        push(out, chunk.subarray(i));
        return out;
      }
      if (s.kind === "body" || s.kind === "chunk-data") {
        const n = Math.min(s.left, chunk.length - i);
        push(out, chunk.subarray(i, i + n));
        i += n;
        s.left -= n;
        if (s.left === 0) {
          this.#state = s.kind === "body" ? { kind: "head" } : { kind: "chunk-end" };
        }
        continue;
      }
      if (s.kind === "head") {
        const end = this.#headEnd(chunk, i);
        if (end < 0) {
          this.#hold(chunk.subarray(i));
          if (this.#heldBytes > MAX_HEAD) {
            for (const part of this.#release()) push(out, part);
            this.#state = { kind: "through" };
          }
          return out;
        }
        // A head within one read is used where it lies; one spread over reads is joined.
        let head: Uint8Array;
        if (this.#heldBytes === 0) head = chunk.subarray(i, end);
        else {
          this.#hold(chunk.subarray(i, end));
          head = this.#joinHeld();
        }
        i = end;
        if (this.http11Only && decoder.decode(head.subarray(0, 14)) === "PRI * HTTP/2.0") {
          this.refused = true;
          return out;
        }
        this.onHead?.();
        const parsed = parseHead(head);
        if (parsed.http11 && !parsed.host && parsed.lineEnd >= 0) {
          push(out, head.subarray(0, parsed.lineEnd + 2));
          push(out, EMPTY_HOST);
          push(out, head.subarray(parsed.lineEnd + 2));
        } else push(out, head);
        this.#state = parsed.next;
        continue;
      }
      // Chunked framing: lines (size, the CR LF after data, trailers) pass as they are.
      const lf = chunk.indexOf(LF, i);
      const stop = lf < 0 ? chunk.length : lf + 1;
      push(out, chunk.subarray(i, stop));
      this.#line += decoder.decode(chunk.subarray(i, stop));
      i = stop;
      if (lf < 0) {
        if (this.#line.length > 4096) this.#state = { kind: "through" };
        continue;
      }
      const line = this.#line.replace(/\r?\n$/, "");
      this.#line = "";
      if (s.kind === "chunk-size") {
        const size = /^([0-9A-Fa-f]{1,15})\s*(;.*)?$/.exec(line);
        if (!size) this.#state = { kind: "through" };
        else {
          const n = parseInt(size[1], 16);
          this.#state = n === 0 ? { kind: "trailers" } : { kind: "chunk-data", left: n };
        }
      } else if (s.kind === "chunk-end") {
        this.#state = line === "" ? { kind: "chunk-size" } : { kind: "through" };
      } else if (line === "") this.#state = { kind: "head" }; // the end of the trailers
    }
    return out;
  }

  /** Index just past CR LF CR LF in `chunk` from `from`, counting held bytes; -1 when not there. */
  #headEnd(chunk: Uint8Array, from: number): number {
    let matched = this.#tail;
    for (let j = from; j < chunk.length; j++) {
      const b = chunk[j];
      matched = (matched === 0 || matched === 2) && b === CR
        ? matched + 1
        : (matched === 1 || matched === 3) && b === LF
        ? matched + 1
        : b === CR
        ? 1
        : 0;
      if (matched === 4) {
        this.#tail = 0;
        return j + 1;
      }
    }
    this.#tail = matched;
    return -1;
  }

  #hold(bytes: Uint8Array) {
    if (bytes.length === 0) return;
    this.#held.push(bytes.slice());
    this.#heldBytes += bytes.length;
  }

  #release(): Uint8Array[] {
    const held = this.#held;
    this.#held = [];
    this.#heldBytes = 0;
    return held;
  }

  #joinHeld(): Uint8Array {
    return concatBytes(this.#release());
  }
}
