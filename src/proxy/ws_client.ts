/**
 * The backend side of a WebSocket bridge: the client's handshake and framing of RFC 6455 over a
 * connection of the proxy's own (src/proxy/http1.ts dials it), so that the backend gets exactly
 * the headers it is given. Deno's `WebSocket` adds `User-Agent: Deno/…`, `Accept` and
 * `Accept-Language`, and a client's own `User-Agent` then arrived twice.
 *
 * Frames sent are masked; frames received are checked (no mask, no reserved bits, control frames
 * short and whole), fragments joined into one message, text checked to be UTF-8, pings answered.
 * No extension is offered, so none may be chosen.
 *
 * @module
 */
import { concatBytes } from "../http/bytes.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** Longest handshake answer accepted. */
const MAX_HEAD = 64 * 1024;
/** Longest message accepted from the backend (then it is closed with 1009). */
export const MAX_MESSAGE = 64 * 1024 * 1024;
/** How long a close waits for the backend's close frame. */
const CLOSE_WAIT_MS = 5000;

const enc = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The backend did not switch to WebSocket as it should have. */
export class HandshakeError extends Error {}

/** What to send in the opening handshake. */
export interface HandshakeOptions {
  /** Path and query. */
  target: string;
  /** The Host header to send. */
  host: string;
  /** Other headers, without Host, hop-by-hop and Sec-WebSocket-* ones. */
  headers: readonly (readonly [string, string])[];
  /** The client's `Sec-WebSocket-Protocol`, passed as it came; null when it offered none. */
  protocols: string | null;
}

/** An open WebSocket to a backend, with the parts of the WebSocket API the bridge uses. */
export interface BackendSocket {
  /** The subprotocol the backend chose, or "". */
  readonly protocol: string;
  /** `WebSocket.OPEN`, `CLOSING` or `CLOSED`. */
  readonly readyState: number;
  /** Bytes given to {@link send} that have not been written yet. */
  readonly bufferedAmount: number;
  onmessage: (data: string | ArrayBuffer) => void;
  /** Called once, when the connection has closed; 1005 without a code, 1006 when cut. */
  onclose: (code: number, reason: string) => void;
  /** Starts reading frames (after the handlers are set). */
  start(): void;
  send(data: string | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
}

function latin1(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 8192) {
    s += String.fromCharCode.apply(null, b.subarray(i, i + 8192) as never);
  }
  return s;
}

async function acceptFor(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", enc.encode(key + GUID));
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

/** One frame, masked, in a buffer whose payload starts 4-aligned so masking goes by words. */
function encodeFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const n = payload.length;
  const lengthBytes = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const head = 2 + lengthBytes + 4;
  const pad = (4 - head % 4) % 4;
  const buf = new Uint8Array(pad + head + n);
  const view = new DataView(buf.buffer);
  buf[pad] = 0x80 | opcode;
  if (lengthBytes === 0) buf[pad + 1] = 0x80 | n;
  else if (lengthBytes === 2) {
    buf[pad + 1] = 0x80 | 126;
    view.setUint16(pad + 2, n);
  } else {
    buf[pad + 1] = 0x80 | 127;
    view.setUint32(pad + 2, Math.floor(n / 2 ** 32));
    view.setUint32(pad + 6, n >>> 0);
  }
  const mask = buf.subarray(pad + head - 4, pad + head);
  crypto.getRandomValues(mask);
  const start = pad + head;
  buf.set(payload, start);
  const words = n >>> 2;
  const m32 = new Uint32Array(mask.slice().buffer)[0];
  const w = new Uint32Array(buf.buffer, start, words);
  for (let i = 0; i < words; i++) w[i] ^= m32;
  for (let i = words * 4; i < n; i++) buf[start + i] ^= mask[i & 3];
  return buf.subarray(pad);
}

function closePayload(code: number | undefined, reason: string | undefined): Uint8Array {
  if (code === undefined) return new Uint8Array(0);
  const text = enc.encode(reason ?? "");
  const out = new Uint8Array(2 + Math.min(text.length, 123));
  new DataView(out.buffer).setUint16(0, code);
  out.set(text.subarray(0, 123), 2);
  return out;
}

/**
 * Opens a WebSocket over `conn` (already connected to the backend). Rejects with a
 * {@link HandshakeError} when the backend answers anything but a valid 101, or with the
 * connection's error; the caller closes `conn` then (and to give up waiting).
 */
export async function openWebSocket(
  conn: Deno.Conn,
  options: HandshakeOptions,
): Promise<BackendSocket> {
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  let head = `GET ${options.target} HTTP/1.1\r\n`;
  for (const [name, value] of options.headers) head += `${name}: ${value}\r\n`;
  head += `host: ${options.host}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n` +
    `sec-websocket-key: ${key}\r\nsec-websocket-version: 13\r\n`;
  if (options.protocols !== null) head += `sec-websocket-protocol: ${options.protocols}\r\n`;
  const bytes = new Uint8Array(head.length + 2);
  for (let i = 0; i < head.length; i++) bytes[i] = head.charCodeAt(i);
  bytes.set([13, 10], head.length);
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));

  let buf = new Uint8Array(16 * 1024);
  let end = 0;
  let headEnd = -1;
  while (headEnd < 0) {
    if (end === buf.length) {
      if (buf.length >= MAX_HEAD) throw new HandshakeError("handshake answer too large");
      const bigger = new Uint8Array(buf.length * 2);
      bigger.set(buf);
      buf = bigger;
    }
    const n = await conn.read(buf.subarray(end));
    if (n === null) throw new HandshakeError("backend closed the connection during the handshake");
    const from = Math.max(0, end - 3);
    end += n;
    for (let i = buf.indexOf(10, from); i >= 0 && i < end; i = buf.indexOf(10, i + 1)) {
      if (i >= 3 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) {
        headEnd = i + 1;
        break;
      }
    }
  }
  const lines = latin1(buf.subarray(0, headEnd - 4)).split("\r\n");
  const status = /^HTTP\/1\.1 (\d{3})(?: (.*))?$/.exec(lines[0]);
  if (status === null) {
    throw new HandshakeError(`invalid status line ${JSON.stringify(lines[0].slice(0, 80))}`);
  }
  if (status[1] !== "101") {
    throw new HandshakeError(`backend answered ${status[1]} ${status[2] ?? ""}`.trim());
  }
  const got = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) throw new HandshakeError("invalid header line in the handshake answer");
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    got.set(name, got.has(name) ? `${got.get(name)}, ${value}` : value);
  }
  if (got.get("upgrade")?.toLowerCase() !== "websocket") {
    throw new HandshakeError("handshake answer without Upgrade: websocket");
  }
  if (!(got.get("connection") ?? "").toLowerCase().split(",").some((t) => t.trim() === "upgrade")) {
    throw new HandshakeError("handshake answer without Connection: Upgrade");
  }
  if (got.get("sec-websocket-accept") !== await acceptFor(key)) {
    throw new HandshakeError("wrong Sec-WebSocket-Accept");
  }
  if (got.has("sec-websocket-extensions")) {
    throw new HandshakeError("backend chose an extension that was not offered");
  }
  const protocol = got.get("sec-websocket-protocol") ?? "";
  const offered = (options.protocols ?? "").split(",").map((p) => p.trim());
  if (protocol !== "" && !offered.includes(protocol)) {
    throw new HandshakeError(`backend chose subprotocol ${JSON.stringify(protocol)}, not offered`);
  }
  return new Socket(conn, protocol, buf.slice(headEnd, end));
}

class Socket implements BackendSocket {
  readyState: number = WebSocket.OPEN;
  bufferedAmount = 0;
  onmessage: (data: string | ArrayBuffer) => void = () => {};
  onclose: (code: number, reason: string) => void = () => {};
  private queue: Uint8Array[] = [];
  private writing = false;
  private closeSent = false;
  private ended = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** The close frame the backend sent, when it did. */
  private received: { code: number; reason: string } | undefined;

  constructor(
    private readonly conn: Deno.Conn,
    readonly protocol: string,
    private rest: Uint8Array,
  ) {}

  start() {
    this.read().catch(() => this.end(1006, ""));
  }

  send(data: string | ArrayBuffer) {
    if (this.readyState !== WebSocket.OPEN) return;
    const text = typeof data === "string";
    this.write(encodeFrame(text ? 1 : 2, text ? enc.encode(data) : new Uint8Array(data)));
  }

  close(code?: number, reason?: string) {
    if (this.readyState !== WebSocket.OPEN) return;
    this.readyState = WebSocket.CLOSING;
    this.sendClose(code, reason);
    this.timer = setTimeout(() => this.end(1006, ""), CLOSE_WAIT_MS);
  }

  private sendClose(code?: number, reason?: string) {
    if (this.closeSent) return;
    this.closeSent = true;
    this.write(encodeFrame(8, closePayload(code, reason)));
  }

  /** Fails the connection (RFC 6455 §7.1.7) with `code`. */
  private fail(code: number, reason: string) {
    this.readyState = WebSocket.CLOSING;
    this.sendClose(code, reason);
    this.afterWrites(() => this.end(code, reason));
  }

  private write(frame: Uint8Array) {
    this.queue.push(frame);
    this.bufferedAmount += frame.length;
    if (!this.writing) this.pump();
  }

  private async pump() {
    this.writing = true;
    try {
      while (this.queue.length > 0) {
        let bytes: Uint8Array;
        if (this.queue.length === 1) bytes = this.queue.pop()!;
        else {
          // Small frames queued together go out in one write.
          bytes = new Uint8Array(this.queue.reduce((n, f) => n + f.length, 0));
          let at = 0;
          for (const f of this.queue) {
            bytes.set(f, at);
            at += f.length;
          }
          this.queue = [];
        }
        for (let off = 0; off < bytes.length;) off += await this.conn.write(bytes.subarray(off));
        this.bufferedAmount -= bytes.length;
      }
    } catch {
      this.queue = [];
      this.bufferedAmount = 0;
      this.end(1006, "");
    }
    this.writing = false;
    this.drained?.();
  }

  private drained?: () => void;
  private afterWrites(then: () => void) {
    if (!this.writing) return then();
    this.drained = () => {
      this.drained = undefined;
      then();
    };
  }

  private end(code: number, reason: string) {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.timer);
    this.readyState = WebSocket.CLOSED;
    try {
      this.conn.close();
    } catch { /* closed */ }
    const received = this.received;
    this.onclose(received?.code ?? code, received?.reason ?? reason);
  }

  private async read() {
    let buf = this.rest;
    let start = 0;
    let end = buf.length;
    const chunk = new Uint8Array(64 * 1024);
    /** Makes `n` bytes from `start` available; false at the end of the connection. */
    const need = async (n: number): Promise<boolean> => {
      while (end - start < n) {
        if (start > 0 && buf.length - start < n) {
          buf = buf.slice(start, end);
          end -= start;
          start = 0;
        }
        const got = await this.conn.read(chunk);
        if (got === null) return false;
        if (end + got > buf.length) {
          const bigger = new Uint8Array(Math.max(end + got, n, buf.length * 2));
          bigger.set(buf.subarray(0, end));
          buf = bigger;
        }
        buf.set(chunk.subarray(0, got), end);
        end += got;
      }
      return true;
    };
    let parts: Uint8Array[] = [];
    let size = 0;
    let kind = 0;
    while (!this.ended) {
      if (!await need(2)) return this.end(1006, "");
      const b0 = buf[start];
      const b1 = buf[start + 1];
      const fin = (b0 & 0x80) !== 0;
      const opcode = b0 & 0x0f;
      let length = b1 & 0x7f;
      let head = 2;
      if ((b0 & 0x70) !== 0 || (b1 & 0x80) !== 0) {
        return this.fail(1002, "reserved bits or mask from the server");
      }
      if (length === 126) {
        if (!await need(4)) return this.end(1006, "");
        length = (buf[start + 2] << 8) | buf[start + 3];
        head = 4;
      } else if (length === 127) {
        if (!await need(10)) return this.end(1006, "");
        const view = new DataView(buf.buffer, buf.byteOffset + start + 2, 8);
        length = view.getUint32(0) * 2 ** 32 + view.getUint32(4);
        head = 10;
      }
      const control = opcode >= 8;
      if (control && (!fin || length > 125)) return this.fail(1002, "invalid control frame");
      if (!control && size + length > MAX_MESSAGE) return this.fail(1009, "message too big");
      if (!await need(head + length)) return this.end(1006, "");
      const payload = buf.slice(start + head, start + head + length);
      start += head + length;
      if (opcode === 8) {
        const code = length >= 2 ? (payload[0] << 8) | payload[1] : 1005;
        let reason = "";
        try {
          reason = utf8.decode(payload.subarray(2));
        } catch { /* an invalid reason is dropped */ }
        this.received = { code, reason };
        this.readyState = WebSocket.CLOSING;
        this.sendClose(length >= 2 ? code : undefined, reason);
        return this.afterWrites(() => this.end(code, reason));
      }
      if (opcode === 9) {
        if (!this.closeSent) this.write(encodeFrame(10, payload));
        continue;
      }
      if (opcode === 10) continue;
      if (opcode === 0 ? kind === 0 : opcode > 2 || kind !== 0) {
        return this.fail(1002, "unexpected frame");
      }
      if (opcode !== 0) kind = opcode;
      parts.push(payload);
      size += length;
      if (!fin) continue;
      const message = concatBytes(parts);
      const isText = kind === 1;
      parts = [];
      size = 0;
      kind = 0;
      if (this.readyState !== WebSocket.OPEN) continue;
      if (isText) {
        let text: string;
        try {
          text = utf8.decode(message);
        } catch {
          return this.fail(1007, "invalid UTF-8");
        }
        this.onmessage(text);
      } else this.onmessage(message.buffer as ArrayBuffer);
    }
  }
}
