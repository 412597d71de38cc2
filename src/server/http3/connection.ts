/**
 * One HTTP/3 connection (RFC 9114) over a QUIC connection: the control streams with SETTINGS,
 * the QPACK streams of a table of capacity 0, and a request on each bidirectional stream the
 * client opens. Each request becomes a web `Request` (its body a stream fed by the DATA frames
 * as the handler reads it) and goes to the same handler as HTTP/2; the `Response` goes back as
 * HEADERS and DATA frames, each write waiting for QUIC to take the last.
 *
 * **What Deno's QUIC API cannot say.** A send stream cannot be reset with an error code, and
 * reading can be stopped only with code 0. So where RFC 9114 asks for a stream error, a request
 * that can still be answered gets an HTTP answer (400 for a malformed request, 431 for an
 * oversized field section, 501 for CONNECT); one that cannot (a response body that fails
 * halfway) closes the connection with the error code instead (§8: "an endpoint MAY choose to
 * treat a stream error as a connection error"), so that a cut answer never looks whole.
 *
 * @module
 */
import type { Exchange, ExchangeHandler } from "../connections.ts";
import { TOKEN } from "../../http/headers.ts";
import {
  FRAME,
  frameHeader,
  FrameReader,
  goawayFrame,
  H3,
  H3Error,
  parseId,
  parseSettings,
  RESERVED_H2_FRAMES,
  SETTING,
  settingsFrame,
  STREAM,
  varint,
} from "./frames.ts";
import {
  checkDecoderStream,
  checkEncoderStream,
  decodeFieldSection,
  encodeFieldSection,
  FieldSectionTooLarge,
  QpackError,
} from "./qpack.ts";

/** Limits of one connection. */
export interface Http3Limits {
  /** Largest request field section (RFC 9114 §4.2.2 size), advertised in SETTINGS. */
  maxFieldSectionSize: number;
  /** The first request must come this long after the handshake (ms; 0 = no limit). */
  headerTimeoutMs: number;
  /** A connection with no request in flight is closed after this long (ms; 0 = never). */
  idleTimeoutMs: number;
  /** A request body that sends nothing for this long is given up (ms; 0 = never). */
  bodyTimeoutMs: number;
}

/** What a connection needs from its listener. */
export interface Http3ConnectionOptions {
  handler: ExchangeHandler;
  /** Answer for a handler that threw. */
  onError: (error: unknown) => Response | Promise<Response>;
  /** An error answer made by the server itself (400, 431, 501). */
  refuse: (status: number, request: Request) => Response | Promise<Response>;
  limits: Http3Limits;
  /** Told of connection errors, for the debug log. */
  onProtocolError?: (error: H3Error) => void;
  /** Told of each connection or request closed by a timeout, for the counts. */
  timedOut?: (stage: "header" | "idle" | "body") => void;
}

/** Bytes of a DATA frame's payload at most per write. */
const MAX_DATA_FRAME = 64 * 1024;
/** Below this, a DATA frame's header and payload go in one write. */
const JOIN_BELOW = 16 * 1024;
/** Largest control-stream frame taken (SETTINGS, GOAWAY and the like are a few bytes). */
const MAX_CONTROL_FRAME = 16 * 1024;
/** After a graceful GOAWAY, how long the client gets to close once nothing is in flight. */
const CLOSE_GRACE_MS = 1000;

/** Header fields of HTTP/1.1 connections, malformed in HTTP/3 (RFC 9114 §4.2). */
const CONNECTION_FIELDS = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
]);
const REQUEST_PSEUDO = new Set([":method", ":scheme", ":authority", ":path"]);
/** Frames that may not appear on a request stream (RFC 9114 §7.2). */
const NOT_ON_REQUEST = new Set<number>([
  FRAME.CANCEL_PUSH,
  FRAME.SETTINGS,
  FRAME.PUSH_PROMISE,
  FRAME.GOAWAY,
  FRAME.MAX_PUSH_ID,
  ...RESERVED_H2_FRAMES,
]);
const knownOnRequest = (t: number) => t === FRAME.HEADERS || NOT_ON_REQUEST.has(t);
const knownOnControl = (t: number) => t <= 0x9 || t === FRAME.MAX_PUSH_ID; // every frame type RFC 9114 defines or reserves

/** A request that is malformed (§4.1.2): answered with 400. */
class Malformed extends Error {}

const close = (w: WritableStreamDefaultWriter<Uint8Array>) => w.close().catch(() => {});
const cancel = (r: ReadableStreamDefaultReader<Uint8Array>) => r.cancel().catch(() => {});

/** Waits for `p`, failing with `onTimeout()` after `ms` (0 = no limit). */
function within<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  if (ms <= 0) return p;
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => timer = setTimeout(() => reject(onTimeout()), ms)),
  ]).finally(() => clearTimeout(timer));
}

/** One HTTP/3 connection; {@link serve} runs it until it closes. */
export class Http3Connection {
  private control?: WritableStreamDefaultWriter<Uint8Array>;
  private readonly peerStreams = new Set<number>();
  private inFlight = 0;
  /** Highest request stream id taken, or -4 for none. */
  private highest = -4;
  /** The id in the GOAWAY sent, once sent: streams from it on are not taken. */
  private goawayId?: number;
  /** Closed, or closing on this side. */
  private over = false;
  private served = false;
  private idleTimer?: ReturnType<typeof setTimeout>;
  private graceTimer?: ReturnType<typeof setTimeout>;
  private readonly aborts = new Set<AbortController>();
  private readonly work = new Set<Promise<void>>();

  constructor(
    readonly quic: Deno.QuicConn,
    private readonly exchange: Exchange,
    private readonly options: Http3ConnectionOptions,
  ) {}

  /** Runs the connection; settles once it has closed and its requests have ended. */
  async serve(): Promise<void> {
    const closed = this.quic.closed.catch(() => {});
    closed.then(() => this.ended());
    try {
      const control = await this.quic.createUnidirectionalStream();
      this.control = control.getWriter();
      const { maxFieldSectionSize } = this.options.limits;
      await this.control.write(
        new Uint8Array([
          ...varint(STREAM.CONTROL),
          ...settingsFrame([
            [SETTING.QPACK_MAX_TABLE_CAPACITY, 0],
            [SETTING.QPACK_BLOCKED_STREAMS, 0],
            [SETTING.MAX_FIELD_SECTION_SIZE, maxFieldSectionSize],
          ]),
        ]),
      );
    } catch {
      this.fail(new H3Error(H3.INTERNAL_ERROR, "could not open the control stream"));
    }
    this.armIdle();
    await Promise.all([this.acceptUni(), this.acceptBidi(), closed]);
    await Promise.all(this.work);
  }

  /** Closes the connection with `error.code` (H3_NO_ERROR for a graceful close). */
  fail(error: H3Error) {
    if (this.over) return;
    this.over = true;
    if (error.code !== H3.NO_ERROR) this.options.onProtocolError?.(error);
    try {
      this.quic.close({ closeCode: error.code, reason: error.message.slice(0, 200) });
    } catch { /* already closed */ }
  }

  /**
   * Stops taking requests (GOAWAY, §5.2): those in flight finish, then the client gets a moment
   * to close before the server does. Settles when the connection has closed.
   */
  async goaway(): Promise<void> {
    if (this.goawayId === undefined && !this.over) {
      this.goawayId = this.highest + 4;
      try {
        await this.control?.write(goawayFrame(this.goawayId));
      } catch { /* the connection is going anyway */ }
      this.closeWhenIdle();
    }
    await this.quic.closed.catch(() => {});
  }

  private ended() {
    this.over = true;
    clearTimeout(this.idleTimer);
    clearTimeout(this.graceTimer);
    for (const a of this.aborts) a.abort(new Error("the HTTP/3 connection closed"));
  }

  /** Once nothing is in flight after GOAWAY: wait for the client to close, briefly. */
  private closeWhenIdle() {
    if (this.goawayId === undefined || this.inFlight > 0 || this.graceTimer) return;
    this.graceTimer = setTimeout(
      () => this.fail(new H3Error(H3.NO_ERROR, "shutting down")),
      CLOSE_GRACE_MS,
    );
  }

  /** The idle clock: runs while no request is in flight (the first must come in time too). */
  private armIdle() {
    clearTimeout(this.idleTimer);
    const { headerTimeoutMs, idleTimeoutMs } = this.options.limits;
    const ms = this.served ? idleTimeoutMs : headerTimeoutMs;
    if (ms <= 0 || this.over) return;
    const stage = this.served ? "idle" : "header";
    this.idleTimer = setTimeout(() => {
      if (this.inFlight > 0) return;
      this.options.timedOut?.(stage);
      this.fail(new H3Error(H3.NO_ERROR, "idle"));
    }, ms);
  }

  /** The timeouts changed: a connection waiting for a request starts its clock again. */
  retime() {
    if (this.inFlight === 0 && !this.over && this.goawayId === undefined) this.armIdle();
  }

  /** A request body of this connection timed out. */
  timedOutBody() {
    this.options.timedOut?.("body");
  }

  private track(p: Promise<void>) {
    const done = p.catch((e) => this.onStreamError(e)).finally(() => this.work.delete(done));
    this.work.add(done);
  }

  private onStreamError(e: unknown) {
    if (e instanceof H3Error && e.connection) this.fail(e);
    else if (e instanceof QpackError) this.fail(new H3Error(e.code, e.message));
    // Anything else is a stream that broke (a reset, the connection closing): the stream is done.
  }

  private async acceptBidi() {
    try {
      for await (const stream of this.quic.incomingBidirectionalStreams) {
        this.track(this.request(stream));
      }
    } catch { /* the connection closed */ }
  }

  private async acceptUni() {
    try {
      for await (const stream of this.quic.incomingUnidirectionalStreams) {
        this.track(this.peerStream(stream));
      }
    } catch { /* the connection closed */ }
  }

  // -------------------------------------------------------------------------------------------
  // Unidirectional streams (§6.2)
  // -------------------------------------------------------------------------------------------

  private async peerStream(stream: Deno.QuicReceiveStream) {
    const reader = stream.getReader();
    const frames = new FrameReader(reader, { limit: () => MAX_CONTROL_FRAME }, knownOnControl);
    let type: number | null;
    try {
      type = await frames.varint();
    } catch {
      return; // ended inside the type: nothing was said
    }
    if (type === null) return;
    if (type === STREAM.PUSH) {
      throw new H3Error(H3.STREAM_CREATION_ERROR, "a client may not open a push stream");
    }
    if (type !== STREAM.CONTROL && type !== STREAM.QPACK_ENCODER && type !== STREAM.QPACK_DECODER) {
      // Unknown (and reserved) stream types are ignored: stop the sender (§6.2, §9).
      await cancel(reader);
      return;
    }
    if (this.peerStreams.has(type)) {
      throw new H3Error(H3.STREAM_CREATION_ERROR, `a second stream of type ${type}`);
    }
    this.peerStreams.add(type);
    const critical = () =>
      new H3Error(H3.CLOSED_CRITICAL_STREAM, `the client closed its stream of type ${type}`);
    try {
      if (type === STREAM.CONTROL) await this.readControl(frames);
      else await this.readQpack(frames, type === STREAM.QPACK_ENCODER);
    } catch (e) {
      if (e instanceof H3Error || e instanceof QpackError) throw e;
      if (!this.over) throw critical(); // reset by the client
      return;
    }
    if (!this.over) throw critical();
  }

  private async readControl(frames: FrameReader) {
    let first = true;
    for (;;) {
      const e = await frames.next();
      if (e.kind === "end") return;
      if (e.kind === "oversized") {
        throw new H3Error(H3.EXCESSIVE_LOAD, `control frame of ${e.length} bytes`);
      }
      const type = e.kind === "data" ? FRAME.DATA : e.type;
      if (first && type !== FRAME.SETTINGS) {
        throw new H3Error(H3.MISSING_SETTINGS, "the control stream does not begin with SETTINGS");
      }
      if (e.kind === "data") throw new H3Error(H3.FRAME_UNEXPECTED, "DATA on the control stream");
      if (type === FRAME.SETTINGS) {
        if (!first) throw new H3Error(H3.FRAME_UNEXPECTED, "a second SETTINGS frame");
        parseSettings(e.payload);
      } else if (type === FRAME.GOAWAY || type === FRAME.MAX_PUSH_ID) {
        parseId(e.payload, type === FRAME.GOAWAY ? "GOAWAY" : "MAX_PUSH_ID"); // nothing to do
      } else if (type === FRAME.CANCEL_PUSH) {
        parseId(e.payload, "CANCEL_PUSH");
        throw new H3Error(H3.ID_ERROR, "CANCEL_PUSH for a push never promised");
      } else {
        throw new H3Error(H3.FRAME_UNEXPECTED, `frame type ${type} on the control stream`);
      }
      first = false;
    }
  }

  private async readQpack(frames: FrameReader, encoder: boolean) {
    let pending = new Uint8Array(0);
    for (;;) {
      const chunk = await frames.chunk();
      if (chunk === null) return;
      const bytes = pending.length ? new Uint8Array([...pending, ...chunk]) : chunk;
      const whole = encoder ? checkEncoderStream(bytes) : checkDecoderStream(bytes);
      pending = bytes.slice(whole);
      if (pending.length > 64) {
        throw new QpackError("instruction too long", encoder ? 0x201 : 0x202);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Requests (§4.1)
  // -------------------------------------------------------------------------------------------

  private async request(stream: Deno.QuicBidirectionalStream) {
    const id = Number(stream.readable.id);
    const reader = stream.readable.getReader();
    const writer = stream.writable.getWriter();
    if (this.goawayId !== undefined && id >= this.goawayId) {
      // After GOAWAY (H3_REQUEST_REJECTED): the client retries elsewhere.
      await Promise.all([cancel(reader), close(writer)]);
      return;
    }
    if (id > this.highest) this.highest = id;
    this.inFlight++;
    this.served = true;
    clearTimeout(this.idleTimer);
    const aborter = new AbortController();
    this.aborts.add(aborter);
    try {
      await this.exchangeOn(reader, writer, aborter);
    } finally {
      this.aborts.delete(aborter);
      if (--this.inFlight === 0) {
        this.armIdle();
        this.closeWhenIdle();
      }
    }
  }

  private async exchangeOn(
    reader: ReadableStreamDefaultReader<Uint8Array>,
    writer: WritableStreamDefaultWriter<Uint8Array>,
    aborter: AbortController,
  ) {
    const { limits } = this.options;
    const frames = new FrameReader(
      reader,
      { limit: (t) => t === FRAME.HEADERS ? limits.maxFieldSectionSize : MAX_CONTROL_FRAME },
      knownOnRequest,
    );
    const timedOut = () => {
      this.options.timedOut?.("header");
      return new Error("request head timed out");
    };
    let fields: [string, string][] | undefined;
    let status = 0;
    try {
      const e = await within(frames.next(), limits.headerTimeoutMs, timedOut);
      if (e.kind === "end") return await close(writer); // no request (H3_REQUEST_INCOMPLETE)
      if (e.kind === "data") throw new H3Error(H3.FRAME_UNEXPECTED, "DATA before HEADERS");
      if (e.type !== FRAME.HEADERS) {
        throw new H3Error(H3.FRAME_UNEXPECTED, `frame type ${e.type} on a request stream`);
      }
      if (e.kind === "oversized") status = 431;
      else fields = decodeFieldSection(e.payload, limits.maxFieldSectionSize);
    } catch (e) {
      if (e instanceof FieldSectionTooLarge) status = 431;
      else if (e instanceof H3Error || e instanceof QpackError) throw e;
      else {
        // Timed out, or the client reset the stream: nothing to answer.
        await Promise.all([cancel(reader), close(writer)]);
        return;
      }
    }

    let request: Request;
    let method = "GET";
    let bodyState: BodyState | undefined;
    try {
      if (status) throw new Malformed();
      const head = requestHead(fields!, this.exchange.madeUp ?? "localhost");
      method = head.method;
      if (head.method === "CONNECT") status = 501;
      const hasBody = head.method !== "GET" && head.method !== "HEAD";
      bodyState = new BodyState(frames, reader, head.contentLength, limits.bodyTimeoutMs, this);
      request = new Request(head.url, {
        method: head.method,
        headers: head.headers,
        body: hasBody ? bodyState.stream() : null,
        signal: aborter.signal,
      });
      if (!hasBody) this.track(bodyState.drain());
      if (status) throw new Malformed();
    } catch (e) {
      if (e instanceof H3Error) throw e;
      if (!status) status = 400;
      request = new Request(`https://${this.exchange.madeUp ?? "localhost"}/`, { method: "GET" });
      bodyState?.discard();
      if (!bodyState) void cancel(reader);
    }

    let response: Response;
    try {
      response = status
        ? await this.options.refuse(status, request)
        : await this.options.handler(request, this.exchange);
    } catch (e) {
      response = await this.options.onError(e);
    }
    await this.respond(writer, response, method === "HEAD", aborter);
    // Whatever of the body the handler did not read is not wanted (STOP_SENDING).
    bodyState?.discard();
  }

  private async respond(
    writer: WritableStreamDefaultWriter<Uint8Array>,
    response: Response,
    head: boolean,
    aborter: AbortController,
  ) {
    const fields: [string, string][] = [[":status", String(response.status)]];
    for (const [name, value] of response.headers) {
      if (!CONNECTION_FIELDS.has(name)) fields.push([name, value]);
    }
    const section = encodeFieldSection(fields);
    const noBody = head || response.status === 204 || response.status === 304 ||
      response.body === null;
    const body = noBody ? undefined : response.body!.getReader();
    if (noBody) response.body?.cancel().catch(() => {});
    try {
      await writer.write(
        new Uint8Array([...frameHeader(FRAME.HEADERS, section.length), ...section]),
      );
    } catch {
      aborter.abort(new Error("the client stopped reading"));
      await body?.cancel().catch(() => {});
      return;
    }
    if (body) {
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await body.read();
        } catch {
          // The answer failed halfway and cannot be reset with a code: end the connection so
          // that the client sees an error, not a short answer.
          this.fail(new H3Error(H3.INTERNAL_ERROR, "the response body failed"));
          return;
        }
        if (chunk.done) break;
        try {
          await this.writeData(writer, chunk.value);
        } catch {
          aborter.abort(new Error("the client stopped reading"));
          await body.cancel().catch(() => {});
          return;
        }
      }
    }
    await close(writer);
  }

  private async writeData(writer: WritableStreamDefaultWriter<Uint8Array>, bytes: Uint8Array) {
    for (let at = 0; at < bytes.length; at += MAX_DATA_FRAME) {
      const part = bytes.subarray(at, Math.min(at + MAX_DATA_FRAME, bytes.length));
      const header = frameHeader(FRAME.DATA, part.length);
      if (part.length < JOIN_BELOW) {
        const joined = new Uint8Array(header.length + part.length);
        joined.set(header);
        joined.set(part, header.length);
        await writer.write(joined);
      } else {
        await writer.write(header);
        await writer.write(part);
      }
    }
  }
}

/** A request's pseudo-header fields and headers, checked (RFC 9114 §4.2, §4.3.1). */
function requestHead(fields: [string, string][], madeUp: string) {
  const pseudo = new Map<string, string>();
  const headers = new Headers();
  const cookies: string[] = [];
  let regular = false;
  let contentLength: number | undefined;
  for (const [name, value] of fields) {
    if (name !== name.toLowerCase() || name === "") throw new Malformed();
    if (name.startsWith(":")) {
      if (regular || !REQUEST_PSEUDO.has(name) || pseudo.has(name)) throw new Malformed();
      pseudo.set(name, value);
      continue;
    }
    regular = true;
    if (CONNECTION_FIELDS.has(name)) throw new Malformed();
    if (name === "te" && value !== "trailers") throw new Malformed();
    if (name === "cookie") {
      cookies.push(value); // joined with "; " (§4.2.1)
      continue;
    }
    if (name === "content-length") {
      if (!/^\d{1,15}$/.test(value)) throw new Malformed();
      const n = Number(value);
      if (contentLength !== undefined && contentLength !== n) throw new Malformed();
      contentLength = n;
      if (headers.has(name)) continue;
    }
    headers.append(name, value); // throws (a TypeError) for bytes a field may not hold
  }
  if (cookies.length) headers.set("cookie", cookies.join("; "));
  const method = pseudo.get(":method");
  if (!method || !TOKEN.test(method)) throw new Malformed();
  if (method === "CONNECT") {
    return { method, url: `https://${madeUp}/`, headers, contentLength };
  }
  const scheme = pseudo.get(":scheme");
  const path = pseudo.get(":path");
  if (!scheme || !path || (scheme !== "https" && scheme !== "http")) throw new Malformed();
  if (!path.startsWith("/") && !(path === "*" && method === "OPTIONS")) throw new Malformed();
  const authority = pseudo.get(":authority") ?? headers.get("host") ?? madeUp;
  if (authority === "" || /[\s/?#@\\]/.test(authority)) throw new Malformed();
  if (pseudo.has(":authority") && headers.has("host") && headers.get("host") !== authority) {
    throw new Malformed(); // §4.3.1: they must name the same
  }
  const url = `${scheme}://${authority}${path === "*" ? "/" : path}`;
  return { method, url, headers, contentLength };
}

/** The request body: DATA frames handed to the handler as it reads, then trailers, then FIN. */
class BodyState {
  private received = 0;
  private finished = false;
  private discarded = false;

  constructor(
    private readonly frames: FrameReader,
    private readonly reader: ReadableStreamDefaultReader<Uint8Array>,
    private readonly contentLength: number | undefined,
    private readonly timeoutMs: number,
    private readonly connection: Http3Connection,
  ) {}

  /** The next piece of the body, or null at its end; throws for a broken body. */
  private async next(): Promise<Uint8Array | null> {
    for (;;) {
      const e = await within(
        this.frames.next(),
        this.timeoutMs,
        () => {
          this.connection.timedOutBody();
          return new Error("request body timed out");
        },
      );
      if (e.kind === "data") {
        if (e.bytes.length === 0) continue;
        this.received += e.bytes.length;
        if (this.contentLength !== undefined && this.received > this.contentLength) {
          throw new Malformed(); // §4.1.2: more DATA than content-length
        }
        return e.bytes;
      }
      if (e.kind === "end") {
        if (this.contentLength !== undefined && this.received !== this.contentLength) {
          throw new Malformed();
        }
        this.finished = true;
        return null;
      }
      if (e.kind === "oversized" || NOT_ON_REQUEST.has(e.type)) {
        throw new H3Error(H3.FRAME_UNEXPECTED, `frame type ${e.type} on a request stream`);
      }
      // Trailers: decoded (they must be valid) and dropped; the stream must end after them.
      decodeFieldSection(e.payload);
      const after = await this.frames.next();
      if (after.kind !== "end") {
        throw new H3Error(H3.FRAME_UNEXPECTED, "a frame after the trailers");
      }
      this.finished = true;
      return null;
    }
  }

  private broken(e: unknown) {
    if (e instanceof H3Error || e instanceof QpackError) {
      this.connection.fail(
        e instanceof H3Error ? e : new H3Error(e.code, (e as Error).message),
      );
    }
    this.discard();
  }

  /** The body for the `Request`. */
  stream(): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>({
      pull: async (c) => {
        try {
          const bytes = await this.next();
          if (bytes === null) c.close();
          else c.enqueue(bytes);
        } catch (e) {
          this.broken(e);
          c.error(e instanceof Malformed ? new TypeError("malformed HTTP/3 request body") : e);
        }
      },
      cancel: () => this.discard(),
    }, { highWaterMark: 0 });
  }

  /** Reads (and drops) a body no one wants, to see the stream end cleanly. */
  async drain() {
    try {
      while (!this.discarded && (await this.next()) !== null) { /* dropped */ }
    } catch (e) {
      this.broken(e);
    }
  }

  /** The rest of the body is not wanted: stop the client sending it. */
  discard() {
    if (this.discarded) return;
    this.discarded = true;
    if (!this.finished) void cancel(this.reader);
  }
}
