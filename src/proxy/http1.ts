/**
 * An HTTP/1.1 client for backends, over `Deno.connect`/`Deno.connectTls`, with a pool of
 * kept-alive connections per backend. It does what a reverse proxy needs and fetch does not
 * offer: bytes pass as they are (no content decoding), a connect timeout of its own, hop-by-hop
 * headers dropped while parsing; at the rate of fetch (the benchmark's bare fetch proxy).
 *
 * Framing follows RFC 9112: a response body is delimited by `Transfer-Encoding: chunked`, by
 * `Content-Length`, or by the end of the connection; HEAD, 1xx, 204 and 304 answers have none.
 * Interim 1xx answers are skipped. A malformed head, a conflicting length or an over-long head is
 * a {@link BackendError}. A connection goes back to the pool only when its answer was read to
 * the end and neither side asked to close it.
 *
 * @module
 */
import { HOP_BY_HOP } from "../http/headers.ts";
import { withoutNamed } from "./forwarded_headers.ts";
import { TOKEN } from "../http/headers.ts";

/** Longest response head accepted (status line and headers). */
const MAX_HEAD = 64 * 1024;
/** Longest chunk-size line accepted (with extensions). */
const MAX_LINE = 4096;
/** Idle connections kept per backend. */
const MAX_IDLE = 128;
/** Idle connections are closed after this long (nginx's `keepalive_timeout` for backends). */
const IDLE_MS = 60_000;
/** Dropped from responses while parsing. */
const HOP = new Set(HOP_BY_HOP);

/** A backend answered with something that is not valid HTTP/1.1, or broke off. */
export class BackendError extends Error {}

/** The connection ended before any byte of an answer: on a reused one, the backend closed it. */
class ClosedBeforeAnswer extends BackendError {
  constructor() {
    super("connection closed before an answer");
  }
}

/** The backend broke off a body that was being read whole. */
export class BrokenBodyError extends BackendError {}

/** The client's streamed body broke off (it went away or sent a malformed one). */
export class ClientBodyError extends Error {}

/** Connecting to the backend failed (nothing reached it). */
export class ConnectError extends Error {
  constructor(message: string, readonly timedOut: boolean, options?: ErrorOptions) {
    super(message, options);
  }
}

/** A backend's answer: status, headers for the client, and the body. */
export interface BackendResponse {
  status: number;
  statusText: string;
  /** Without hop-by-hop headers. */
  headers: [string, string][];
  /** Bytes when the answer had a Content-Length up to `bufferLimit`, a stream otherwise. */
  body: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> | null;
  /** Resolves when the body has been read to its end, cancelled or broken (with the error). */
  done: Promise<unknown>;
}

/** One request to send. */
export interface BackendRequest {
  method: string;
  /** Path and query. */
  target: string;
  /** Without hop-by-hop headers; `host` and framing headers are set here. */
  headers: readonly (readonly [string, string])[];
  /**
   * Bytes read whole beforehand (sent in one write with the head), or a stream sent as it
   * arrives: with `Content-Length` framing when `bodyLength` is given, chunked otherwise, and on
   * a new connection, since it cannot be sent again when a kept-alive one turns out closed.
   */
  body: Uint8Array | ReadableStream<Uint8Array> | null;
  /** The length of a streamed body, when the client gave one. */
  bodyLength?: number;
  /** Milliseconds to wait for the response head once connected; 0 for no limit. */
  responseTimeoutMs: number;
  /** Closing the request: the connection is dropped and the call rejects with its reason. */
  signal?: AbortSignal;
  /** Answers with a Content-Length up to this are read whole before the call resolves. */
  bufferLimit: number;
}

/** How to reach one backend. */
export interface BackendClient extends Disposable {
  /** Sends one request; see {@link BackendRequest}. */
  request(request: BackendRequest, preserveHost: boolean): Promise<BackendResponse>;
  /** A connection of its own (for a WebSocket), within `connectTimeoutMs`. */
  open(): Promise<Deno.Conn>;
  /** The Host sent when the client's is not kept. */
  readonly authority: string;
}

/** Options of {@link createBackendClient}. */
export interface BackendClientOptions {
  hostname: string;
  port: number;
  /** Speak TLS to the backend (verifying it against the system roots and `caCerts`). */
  tls: boolean;
  caCerts?: string[];
  connectTimeoutMs: number;
  /** The Host header sent when the client's is not kept. */
  authority: string;
}

/** One connection and what has been read from it but not used yet. */
class Connection {
  buf = new Uint8Array(16 * 1024);
  start = 0;
  end = 0;
  idleSince = 0;
  closed = false;
  /** Closed because no response head came in time. */
  timedOut = false;
  /**
   * A read started when the connection went idle, as nginx watches its cached connections: it
   * ends when the backend closes the connection, which then leaves the pool at once. A request
   * that takes the connection takes over the read.
   */
  pending: Promise<number | null> | null = null;
  constructor(readonly conn: Deno.Conn) {}

  close() {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }

  /** Reads more bytes into the buffer (growing it up to {@link MAX_HEAD}); false at the end. */
  async fill(): Promise<boolean> {
    if (this.pending !== null) {
      const read = this.pending;
      this.pending = null;
      const n = await read;
      if (n === null) return false;
      this.end += n;
      return true;
    }
    if (this.start > 0 && this.end === this.buf.length) {
      this.buf.copyWithin(0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    if (this.end === this.buf.length) {
      if (this.buf.length >= MAX_HEAD) throw new BackendError("response head too large");
      const bigger = new Uint8Array(Math.min(MAX_HEAD, this.buf.length * 2));
      bigger.set(this.buf.subarray(0, this.end));
      this.buf = bigger;
    }
    const n = await this.conn.read(this.buf.subarray(this.end));
    if (n === null) return false;
    this.end += n;
    return true;
  }

  /** Index just after the next CRLF CRLF at or after `from`, or -1. */
  headEnd(from: number): number {
    const b = this.buf;
    for (let i = b.indexOf(10, from); i >= 0 && i < this.end; i = b.indexOf(10, i + 1)) {
      if (i >= 3 && b[i - 1] === 13 && b[i - 2] === 10 && b[i - 3] === 13) return i + 1;
    }
    return -1;
  }

  /** The next line (without CRLF), reading more as needed. */
  async line(): Promise<string> {
    for (;;) {
      const i = this.buf.indexOf(10, this.start);
      if (i >= 0 && i < this.end) {
        const text = latin1(
          this.buf,
          this.start,
          i > this.start && this.buf[i - 1] === 13 ? i - 1 : i,
        );
        this.start = i + 1;
        return text;
      }
      if (this.end - this.start > MAX_LINE) throw new BackendError("chunk header too long");
      if (!await this.fill()) throw new BackendError("connection closed mid-body");
    }
  }

  /** Up to `max` body bytes as a fresh array, or null at the end of the connection. */
  async take(max: number): Promise<Uint8Array | null> {
    if (this.end > this.start) {
      const n = Math.min(max, this.end - this.start);
      const out = this.buf.slice(this.start, this.start + n);
      this.start += n;
      return out;
    }
    const out = new Uint8Array(Math.min(max, 64 * 1024));
    const n = await this.conn.read(out);
    return n === null ? null : out.subarray(0, n);
  }

  async writeAll(bytes: Uint8Array): Promise<void> {
    for (let off = 0; off < bytes.length;) off += await this.conn.write(bytes.subarray(off));
  }
}

/**
 * Connections waiting for a response head, with their deadlines. One timer checks them ten times
 * a second while any wait: a timer per request costs about 7% of a small proxied answer, and
 * `response_timeout` is given in seconds.
 */
const waiting = new Map<Connection, number>();
let ticker: ReturnType<typeof setInterval> | undefined;

function expire() {
  const now = Date.now();
  for (const [c, deadline] of waiting) {
    if (now < deadline) continue;
    stopWaiting(c);
    c.timedOut = true;
    c.close();
  }
}

function stopWaiting(c: Connection) {
  if (waiting.delete(c) && waiting.size === 0) {
    clearInterval(ticker);
    ticker = undefined;
  }
}

/** Closes `c` when no response head has come within `ms` (100 ms late at most). */
function awaitHead(c: Connection, ms: number) {
  waiting.set(c, Date.now() + ms);
  if (ticker === undefined) {
    ticker = setInterval(expire, 100);
    Deno.unrefTimer(ticker as unknown as number);
  }
}

function latin1(b: Uint8Array, from: number, to: number): string {
  let s = "";
  for (let i = from; i < to; i += 8192) {
    s += String.fromCharCode.apply(null, b.subarray(i, Math.min(to, i + 8192)) as never);
  }
  return s;
}

function encodeLatin1(s: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/**
 * Bytes of a streamed body read at once (Deno hands over what has arrived, up to this), and so
 * the largest chunk sent: a Deno.serve backend takes chunks over 64 KiB some 50 times slower
 * (measured with Deno 2.9.6: 18 s instead of 0.2 s for 256 MiB in 256 KiB chunks).
 */
const SLOT = 64 * 1024;
/** Room before a slot for a chunk-size line ("10000\r\n"), and after it for its CRLF. */
const PREFIX = 8;
const LAST_CHUNK = new Uint8Array([48, 13, 10, 13, 10]);

/**
 * Sends `body` on `c`, as chunks when `chunked` (then with the last chunk), as it is otherwise.
 * Two buffers take turns: the body is read into one (a BYOB read, so nothing is allocated per
 * piece) while the other is written, each read framed as one chunk in place and written in one
 * write. Nothing read waits for more data. A body that fails is a {@link ClientBodyError}; a
 * write that fails throws the write's error.
 */
async function sendBody(
  c: Connection,
  body: ReadableStream<Uint8Array>,
  chunked: boolean,
): Promise<void> {
  let byob: ReadableStreamBYOBReader | undefined;
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    reader = body.getReader(); // not a byte stream
  }
  let fill = new ArrayBuffer(PREFIX + SLOT + 2);
  let spare = new ArrayBuffer(PREFIX + SLOT + 2);
  let writing: Promise<void> | undefined;
  /** The next piece: in `fill` at PREFIX (BYOB), or a chunk of its own. */
  const read = async (): Promise<Uint8Array | null> => {
    try {
      if (byob === undefined) {
        const r = await reader!.read();
        return r.done ? null : r.value;
      }
      const r = await byob.read(new Uint8Array(fill, PREFIX, SLOT));
      if (r.done) return null;
      fill = r.value.buffer as ArrayBuffer;
      return r.value;
    } catch (e) {
      throw new ClientBodyError(`request body broke off: ${(e as Error).message}`, { cause: e });
    }
  };
  const frame = (piece: Uint8Array): Uint8Array => {
    if (!chunked) return piece;
    const line = encodeLatin1(piece.length.toString(16) + "\r\n");
    if (byob === undefined) {
      const out = new Uint8Array(line.length + piece.length + 2);
      out.set(line);
      out.set(piece, line.length);
      out.set([13, 10], line.length + piece.length);
      return out;
    }
    const all = new Uint8Array(fill);
    const from = PREFIX - line.length;
    all.set(line, from);
    all[PREFIX + piece.length] = 13;
    all[PREFIX + piece.length + 1] = 10;
    return all.subarray(from, PREFIX + piece.length + 2);
  };
  try {
    for (;;) {
      const piece = await read();
      if (writing !== undefined) await writing;
      if (piece === null) break;
      if (piece.length === 0) continue;
      const bytes = frame(piece);
      [fill, spare] = [spare, fill];
      const w = c.writeAll(bytes);
      w.catch(() => {});
      writing = w;
    }
    if (chunked) await c.writeAll(LAST_CHUNK);
  } catch (e) {
    (byob ?? reader!).cancel(e).catch(() => {});
    throw e;
  }
}

/** Parsed response head. */
interface Head {
  status: number;
  statusText: string;
  headers: [string, string][];
  /** Body length, -1 for chunked, -2 until the connection closes. */
  length: number;
  keepAlive: boolean;
}

function parseHead(text: string): Head {
  const lines = text.split("\r\n");
  const m = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([^\r\n]*))?$/.exec(lines[0]);
  if (m === null) {
    throw new BackendError(`invalid status line ${JSON.stringify(lines[0].slice(0, 80))}`);
  }
  let keepAlive = m[1] === "1";
  const headers: [string, string][] = [];
  let length = -2;
  let chunked = false;
  let coded = false;
  let connection: string | undefined;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).toLowerCase();
    if (colon <= 0 || !TOKEN.test(name)) {
      throw new BackendError(`invalid header line ${JSON.stringify(line.slice(0, 80))}`);
    }
    const value = line.slice(colon + 1).trim();
    if (name === "content-length") {
      // "5, 5" is one length sent twice (RFC 9110 §8.6); different values are an attack or a bug.
      for (const part of value.split(",")) {
        const v = part.trim();
        if (!/^\d{1,15}$/.test(v) || (length >= 0 && Number(v) !== length)) {
          throw new BackendError(`invalid Content-Length ${JSON.stringify(value)}`);
        }
        length = Number(v);
      }
      headers.push([name, String(length)]);
      continue;
    }
    if (HOP.has(name)) {
      if (name === "transfer-encoding") {
        coded = true;
        chunked = value.toLowerCase().split(",").at(-1)!.trim() === "chunked";
      } else if (name === "connection") {
        const tokens = value.toLowerCase().split(",").map((t) => t.trim());
        if (tokens.includes("close")) keepAlive = false;
        else if (tokens.includes("keep-alive") && m[1] === "0") keepAlive = true;
        connection = connection === undefined ? value : `${connection},${value}`;
      }
      continue;
    }
    headers.push([name, value]);
  }
  if (coded) {
    // Transfer-Encoding overrides Content-Length, and such a connection is not reused (§6.3).
    keepAlive = false;
    length = chunked ? -1 : -2;
  }
  if (length === -2) keepAlive = false;
  const kept = connection === undefined ? headers : withoutNamed(headers, connection);
  return {
    status: Number(m[2]),
    statusText: m[3] ?? "",
    headers: coded ? kept.filter(([n]) => n !== "content-length") : kept,
    length,
    keepAlive,
  };
}

/** Connects to `hostname:port` (over TLS when `tls`) within `connectTimeoutMs`. */
export async function dial(
  options: Pick<BackendClientOptions, "hostname" | "port" | "tls" | "caCerts" | "connectTimeoutMs">,
): Promise<Deno.Conn> {
  const { hostname, port, connectTimeoutMs } = options;
  const attempt = options.tls
    ? Deno.connectTls({ hostname, port, caCerts: options.caCerts, alpnProtocols: ["http/1.1"] })
    : Deno.connect({ hostname, port });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((r) => timer = setTimeout(() => r(null), connectTimeoutMs));
  let conn: Deno.Conn | null;
  try {
    conn = await Promise.race([attempt, timeout]);
  } catch (e) {
    throw new ConnectError((e as Error).message, false, { cause: e });
  } finally {
    clearTimeout(timer);
  }
  if (conn !== null) return conn;
  attempt.then((c) => c.close(), () => {});
  throw new ConnectError(`no connection within ${connectTimeoutMs / 1000}s`, true);
}

/** Creates the client of one backend; dispose it to close its idle connections. */
export function createBackendClient(options: BackendClientOptions): BackendClient {
  const idle: Connection[] = [];
  const authority = options.authority;
  let sweeper: ReturnType<typeof setInterval> | undefined;

  const sweep = () => {
    const now = Date.now();
    let kept = 0;
    for (const c of idle) {
      if (now - c.idleSince < IDLE_MS) idle[kept++] = c;
      else c.close();
    }
    idle.length = kept;
    if (kept === 0) {
      clearInterval(sweeper);
      sweeper = undefined;
    }
  };

  const drop = (c: Connection) => {
    c.close();
    const i = idle.indexOf(c);
    if (i >= 0) idle.splice(i, 1);
  };

  const release = (c: Connection) => {
    // Bytes after the answer are not HTTP; such a connection is not reused.
    if (c.closed || c.end > c.start || idle.length >= MAX_IDLE) return c.close();
    c.start = c.end = 0;
    c.idleSince = Date.now();
    const read = c.conn.read(c.buf);
    c.pending = read;
    const idleEnd = () => {
      if (c.pending === read) drop(c);
    };
    read.then(idleEnd, idleEnd);
    idle.push(c);
    if (sweeper === undefined) {
      sweeper = setInterval(sweep, 1000);
      Deno.unrefTimer(sweeper as unknown as number);
    }
  };

  const connect = async (): Promise<Connection> => {
    const conn = await dial(options);
    if (!options.tls) (conn as Deno.TcpConn).setNoDelay(true);
    return new Connection(conn);
  };

  /** The bytes of the request head (and a small body) to write. */
  const encodeHead = (req: BackendRequest, preserveHost: boolean): Uint8Array<ArrayBuffer> => {
    let head = `${req.method} ${req.target} HTTP/1.1\r\n`;
    let host = preserveHost ? undefined : authority;
    for (const [name, value] of req.headers) {
      if (name === "content-length" || name === "expect") continue;
      if (name === "host") {
        host ??= value;
        continue;
      }
      head += `${name}: ${value}\r\n`;
    }
    // HTTP/1.1 requires a Host; a client that named none (HTTP/1.0) leaves the backend's own.
    head = head + `host: ${host ?? authority}\r\n`;
    const body = req.body;
    if (body instanceof ReadableStream) {
      head += req.bodyLength === undefined
        ? "transfer-encoding: chunked\r\n"
        : `content-length: ${req.bodyLength}\r\n`;
    } else if (body !== null) head += `content-length: ${body.length}\r\n`;
    else if (req.method === "POST" || req.method === "PUT" || req.method === "PATCH") {
      head += "content-length: 0\r\n";
    }
    const bytes = encodeLatin1(head + "\r\n");
    if (body === null || body instanceof ReadableStream || body.length === 0) return bytes;
    const all = new Uint8Array(bytes.length + body.length);
    all.set(bytes);
    all.set(body, bytes.length);
    return all;
  };

  /** Reads the head of the final (non-1xx) answer. */
  const readHead = async (c: Connection): Promise<Head> => {
    for (;;) {
      let end = c.headEnd(c.start);
      while (end < 0) {
        const seen = c.end - c.start;
        if (!await c.fill()) {
          throw seen > 0
            ? new BackendError("connection closed mid-head")
            : new ClosedBeforeAnswer();
        }
        end = c.headEnd(c.start + Math.max(0, seen - 3));
      }
      const head = parseHead(latin1(c.buf, c.start, end - 4));
      c.start = end;
      if (head.status >= 200) return head;
      if (head.status === 101) throw new BackendError("unexpected 101 Switching Protocols");
    }
  };

  /** A stream over the body of `head`; `finish` runs once at its end, cancel or failure. */
  const bodyStream = (
    c: Connection,
    head: Head,
    finish: (error?: unknown) => void,
  ): ReadableStream<Uint8Array> => {
    let left = head.length === -1 ? 0 : head.length;
    let lastChunk = false;
    const pull = async (): Promise<Uint8Array | null> => {
      if (head.length === -2) return await c.take(64 * 1024);
      if (head.length >= 0) {
        if (left === 0) return null;
        const chunk = await c.take(left);
        if (chunk === null) throw new BackendError("connection closed mid-body");
        left -= chunk.length;
        return chunk;
      }
      while (left === 0) {
        if (lastChunk) return null;
        const line = await c.line();
        const size = /^([0-9a-fA-F]{1,15})[ \t]*(?:;.*)?$/.exec(line);
        if (size === null) throw new BackendError("invalid chunk size");
        left = parseInt(size[1], 16);
        if (left === 0) {
          while ((await c.line()) !== "") { /* trailers are not passed on */ }
          lastChunk = true;
          return null;
        }
      }
      const chunk = await c.take(left);
      if (chunk === null) throw new BackendError("connection closed mid-body");
      left -= chunk.length;
      if (left === 0 && (await c.line()) !== "") throw new BackendError("invalid chunk end");
      return chunk;
    };
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        let chunk: Uint8Array | null;
        try {
          chunk = await pull();
        } catch (e) {
          finish(e);
          controller.error(e);
          return;
        }
        if (chunk === null) {
          finish();
          controller.close();
        } else controller.enqueue(chunk);
      },
      cancel() {
        c.close();
        finish();
      },
    }, { highWaterMark: 0 });
  };

  const send = async (
    c: Connection,
    req: BackendRequest,
    preserveHost: boolean,
  ): Promise<BackendResponse> => {
    const signal = req.signal;
    const onAbort = () => c.close();
    signal?.addEventListener("abort", onAbort, { once: true });
    let head: Head;
    // A streamed body goes out while the answer is awaited: a backend may answer (and even
    // stream its answer) before it has read all of it.
    let upload: Promise<unknown> | null = null;
    let clientFailure: ClientBodyError | null = null;
    try {
      if (signal?.aborted) throw signal.reason;
      if (req.responseTimeoutMs > 0) awaitHead(c, req.responseTimeoutMs);
      await c.writeAll(encodeHead(req, preserveHost));
      if (req.body instanceof ReadableStream) {
        upload = sendBody(c, req.body, req.bodyLength === undefined).then(
          () => undefined,
          (e) => {
            // Without the rest of the body the backend cannot answer; a failed write is the
            // backend's doing, and it may still have an answer to read.
            if (e instanceof ClientBodyError) {
              clientFailure = e;
              c.close();
            }
            return e ?? new BackendError("upload failed");
          },
        );
      }
      head = await readHead(c);
    } catch (e) {
      c.close();
      signal?.removeEventListener("abort", onAbort);
      if (signal?.aborted) throw signal.reason;
      if (c.timedOut) throw new TimeoutError();
      if (clientFailure !== null) throw clientFailure;
      throw e;
    } finally {
      stopWaiting(c);
    }
    const { status, statusText, headers } = head;
    let settle!: (error?: unknown) => void;
    const done = new Promise<unknown>((r) => settle = r);
    let uploaded = upload === null;
    upload?.then((error) => uploaded = error === undefined);
    const finish = (error?: unknown) => {
      signal?.removeEventListener("abort", onAbort);
      // A connection whose request did not go out whole is not reused (nor waited for).
      if (error === undefined && head.keepAlive && uploaded) release(c);
      else c.close();
      settle(error);
    };
    if (req.method === "HEAD" || status === 204 || status === 304) {
      finish();
      return { status, statusText, headers, body: null, done };
    }
    if (head.length >= 0 && head.length <= req.bufferLimit) {
      const body = new Uint8Array(head.length);
      try {
        let got = Math.min(head.length, c.end - c.start);
        body.set(c.buf.subarray(c.start, c.start + got));
        c.start += got;
        while (got < head.length) {
          const n = await c.conn.read(body.subarray(got));
          if (n === null) throw new BackendError("connection closed mid-body");
          got += n;
        }
      } catch (e) {
        finish(e);
        throw signal?.aborted ? signal.reason : new BrokenBodyError((e as Error).message);
      }
      finish();
      return { status, statusText, headers, body, done };
    }
    return { status, statusText, headers, body: bodyStream(c, head, finish), done };
  };

  return {
    async request(req, preserveHost) {
      // A kept-alive connection may have been closed by the backend just now: an idempotent
      // request (which may be sent again, RFC 9110 §9.2.2, as nginx does) gets one more try on a
      // new connection when nothing came back. A streamed body never takes an idle connection.
      const replayable = IDEMPOTENT.has(req.method);
      const c = req.body instanceof ReadableStream ? undefined : idle.pop();
      if (c === undefined) return send(await connect(), req, preserveHost);
      try {
        return await send(c, req, preserveHost);
      } catch (e) {
        const stale = e instanceof ClosedBeforeAnswer ||
          e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.BrokenPipe;
        if (!replayable || !stale || req.signal?.aborted) throw e;
      }
      return send(await connect(), req, preserveHost);
    },
    async open() {
      return (await connect()).conn;
    },
    authority,
    [Symbol.dispose]() {
      clearInterval(sweeper);
      for (const c of idle) c.close();
      idle.length = 0;
    },
  };
}

/** Methods a request may be sent again with (RFC 9110 §9.2.2). */
export const IDEMPOTENT: ReadonlySet<string> = new Set([
  "GET",
  "HEAD",
  "OPTIONS",
  "PUT",
  "DELETE",
  "TRACE",
]);

/** The backend sent no response head within `responseTimeoutMs`. */
export class TimeoutError extends Error {
  constructor() {
    super("timed out");
  }
}
