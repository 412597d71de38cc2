/**
 * A small HTTP/3 client over `Deno.connectQuic`, built on the server's own codecs, for protocol
 * tests and the benchmark: requests (concurrent on one connection), raw streams for bytes no
 * well-behaved client sends, the server's SETTINGS and GOAWAY, and how the connection closed.
 *
 * @module
 */
import {
  FRAME,
  frame,
  FrameReader,
  H3,
  parseId,
  parseSettings,
  settingsFrame,
  STREAM,
  varint,
} from "../../src/server/http3/frames.ts";
import { decodeFieldSection, encodeFieldSection } from "../../src/server/http3/qpack.ts";

/** An answer read off a request stream. */
export interface H3Response {
  status: number;
  headers: Headers;
  body: Uint8Array;
  /** Trailer fields, when the server sent any. */
  trailers?: Headers;
  text(): string;
}

/** Options of {@link H3Client.request}. */
export interface H3RequestOptions {
  method?: string;
  headers?: [string, string][];
  /** The request body: bytes, or a stream sent as it comes (one DATA frame per chunk). */
  body?: Uint8Array | ReadableStream<Uint8Array>;
  /** `:authority`; default `localhost:PORT`. */
  authority?: string;
  /** Only read the answer's head; the body is left unread. */
  headOnly?: boolean;
}

/** A raw bidirectional stream: write what you like, read frames back. */
export interface RawStream {
  write(bytes: Uint8Array): Promise<void>;
  /** Sends FIN. */
  end(): Promise<void>;
  /** Reads the answer, or what came before the stream ended. */
  response(): Promise<H3Response | null>;
  readonly stream: Deno.QuicBidirectionalStream;
}

const decoder = new TextDecoder();

/** Reads an answer: HEADERS (1xx skipped), DATA, trailers. Null when the stream ends first. */
export async function readResponse(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  headOnly = false,
): Promise<H3Response | null> {
  const frames = new FrameReader(reader, { limit: () => 1 << 20 });
  let status = 0;
  let headers: Headers | undefined;
  let trailers: Headers | undefined;
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const e = await frames.next();
    if (e.kind === "end") break;
    if (e.kind === "oversized") throw new Error(`oversized frame ${e.type}`);
    if (e.kind === "data") {
      if (e.bytes.length) {
        chunks.push(e.bytes.slice());
        size += e.bytes.length;
      }
      continue;
    }
    if (e.type !== FRAME.HEADERS) continue;
    const fields = decodeFieldSection(e.payload);
    if (headers === undefined) {
      const s = Number(fields.find(([n]) => n === ":status")?.[1]);
      if (s < 200) continue;
      status = s;
      headers = new Headers(fields.filter(([n]) => !n.startsWith(":")));
      if (headOnly) break;
    } else trailers = new Headers(fields);
  }
  if (headers === undefined) return null;
  const body = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    body.set(c, at);
    at += c.length;
  }
  return { status, headers, body, trailers, text: () => decoder.decode(body) };
}

/** One HTTP/3 connection to a server. */
export class H3Client implements AsyncDisposable {
  /** The server's SETTINGS once received. */
  readonly settings: Promise<Map<number, number>>;
  /** The id of the first GOAWAY the server sends. */
  readonly goaway: Promise<number>;
  /** How the connection closed: the code and reason, or the transport error. */
  readonly closed: Promise<{ closeCode: number; reason: string } | { error: string }>;
  private control?: WritableStreamDefaultWriter<Uint8Array>;

  private constructor(readonly quic: Deno.QuicConn, readonly authority: string) {
    const settings = Promise.withResolvers<Map<number, number>>();
    const goaway = Promise.withResolvers<number>();
    this.settings = settings.promise;
    this.goaway = goaway.promise;
    this.settings.catch(() => {});
    this.goaway.catch(() => {});
    this.closed = quic.closed.then(
      (info) => ({ closeCode: info.closeCode, reason: info.reason }),
      (e) => ({ error: String(e) }),
    );
    this.closed.then(() => {
      settings.reject(new Error("closed"));
      goaway.reject(new Error("closed"));
    });
    (async () => {
      try {
        for await (const uni of quic.incomingUnidirectionalStreams) {
          const reader = uni.getReader();
          const frames = new FrameReader(reader, { limit: () => 1 << 16 });
          const type = await frames.varint();
          if (type !== STREAM.CONTROL) {
            reader.cancel().catch(() => {});
            continue;
          }
          (async () => {
            for (;;) {
              const e = await frames.next();
              if (e.kind === "end") return;
              if (e.kind !== "frame") continue;
              if (e.type === FRAME.SETTINGS) settings.resolve(parseSettings(e.payload));
              if (e.type === FRAME.GOAWAY) goaway.resolve(parseId(e.payload, "GOAWAY"));
            }
          })().catch(() => {});
        }
      } catch { /* closed */ }
    })();
  }

  /** Connects, opens the control stream and sends SETTINGS (unless `settings` is false). */
  static async connect(
    port: number,
    caPem: string,
    options: { settings?: boolean; hostname?: string; authority?: string; serverName?: string } =
      {},
  ): Promise<H3Client> {
    const quic = await Deno.connectQuic({
      hostname: options.hostname ?? "127.0.0.1",
      port,
      serverName: options.serverName ?? "localhost",
      alpnProtocols: ["h3"],
      caCerts: [caPem],
    });
    const client = new H3Client(quic, options.authority ?? `localhost:${port}`);
    if (options.settings !== false) {
      const control = await quic.createUnidirectionalStream();
      client.control = control.getWriter();
      await client.control.write(
        new Uint8Array([...varint(STREAM.CONTROL), ...settingsFrame([[0x1, 0], [0x7, 0]])]),
      );
    }
    return client;
  }

  /** Writes more on the client's control stream. */
  async sendControl(bytes: Uint8Array) {
    await this.control!.write(bytes);
  }

  /** Opens a unidirectional stream of `type` and writes `bytes` on it. */
  async sendUni(type: number, bytes: Uint8Array, end = false) {
    const s = await this.quic.createUnidirectionalStream();
    const w = s.getWriter();
    await w.write(new Uint8Array([...varint(type), ...bytes]));
    if (end) await w.close();
    return w;
  }

  /** The HEADERS frame of a request. */
  headersFrame(method: string, path: string, options: H3RequestOptions = {}): Uint8Array {
    const fields: [string, string][] = [
      [":method", method],
      [":scheme", "https"],
      [":authority", options.authority ?? this.authority],
      [":path", path],
      ...(options.headers ?? []).map(([n, v]) => [n.toLowerCase(), v] as [string, string]),
    ];
    return frame(FRAME.HEADERS, encodeFieldSection(fields));
  }

  /** Sends a request and reads its answer. */
  async request(path: string, options: H3RequestOptions = {}): Promise<H3Response> {
    const method = options.method ?? (options.body ? "POST" : "GET");
    const stream = await this.quic.createBidirectionalStream({ waitUntilAvailable: true });
    const writer = stream.writable.getWriter();
    const reading = readResponse(stream.readable.getReader(), options.headOnly);
    await writer.write(this.headersFrame(method, path, options));
    const body = options.body;
    if (body instanceof Uint8Array) {
      if (body.length) await writer.write(frame(FRAME.DATA, body));
    } else if (body) {
      for await (const chunk of body) await writer.write(frame(FRAME.DATA, chunk));
    }
    await writer.close();
    const response = await reading;
    if (!response) throw new Error(`no answer to ${method} ${path}`);
    return response;
  }

  /** A bidirectional stream to write anything on. */
  async raw(): Promise<RawStream> {
    const stream = await this.quic.createBidirectionalStream({ waitUntilAvailable: true });
    const writer = stream.writable.getWriter();
    const reading = readResponse(stream.readable.getReader());
    reading.catch(() => {});
    return {
      stream,
      write: (bytes) => writer.write(bytes),
      end: () => writer.close(),
      response: () => reading,
    };
  }

  /** Closes with H3_NO_ERROR. */
  close() {
    try {
      this.quic.close({ closeCode: H3.NO_ERROR, reason: "" });
    } catch { /* closed */ }
  }

  async [Symbol.asyncDispose]() {
    this.close();
    await this.closed;
    try {
      this.quic.endpoint.close();
    } catch { /* closed */ }
  }
}
