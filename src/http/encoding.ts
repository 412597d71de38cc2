/**
 * Content codings: which one a client's `Accept-Encoding` prefers, which types are worth
 * compressing, and the compressors (node:zlib: gzip, br and zstd), for the file server's cached
 * forms and for compressed dynamic answers alike.
 *
 * @module
 */
import {
  brotliCompressSync,
  constants,
  createBrotliCompress,
  createGzip,
  createZstdCompress,
  gzipSync,
  zstdCompressSync,
} from "node:zlib";

/** The codings denoserve can produce. */
export type Coding = "zstd" | "br" | "gzip";

/** The q-value `header` gives `coding` (named, else through `*`); 0 when refused or absent. */
export function encodingQuality(header: string, coding: string): number {
  let star = 0;
  for (const part of header.split(",")) {
    const [name, ...params] = part.split(";");
    const token = name.trim().toLowerCase();
    if (token !== coding && token !== "*") continue;
    const q = params.map((p) => p.trim().toLowerCase()).find((p) => p.startsWith("q="));
    const value = q === undefined ? 1 : Number(q.slice(2));
    const quality = Number.isFinite(value) ? Math.min(Math.max(value, 0), 1) : 0;
    if (token === coding) return quality;
    star = quality;
  }
  return star;
}

/**
 * Whether an Accept-Encoding value accepts `coding`: named with a q above 0, or not named and
 * `*` allows it (a named coding wins over `*`, RFC 9110 §12.5.3).
 */
export function acceptsEncoding(header: string, coding: string): boolean {
  return encodingQuality(header, coding) > 0;
}

/**
 * The coding of `offered` that `header` rates highest (above 0); among equals the first offered
 * (the server's preference). Undefined when none is accepted.
 */
export function preferredEncoding<T extends string>(
  header: string,
  offered: readonly T[],
): T | undefined {
  let best: T | undefined;
  let top = 0;
  for (const coding of offered) {
    const q = encodingQuality(header, coding);
    if (q > top) {
      top = q;
      best = coding;
    }
  }
  return best;
}

/** Media types compressed unless told otherwise: text, JSON, JavaScript, XML, SVG, wasm. */
export const COMPRESSIBLE: RegExp =
  /^(text\/|application\/(javascript|json|xml|wasm|manifest\+json|.*\+xml|.*\+json)|image\/svg)/;

/** `body` compressed with `coding` at `level` in one go. */
export function compressBytes(
  body: Uint8Array,
  coding: Coding,
  level: number,
): Uint8Array<ArrayBuffer> {
  const out = coding === "br"
    ? brotliCompressSync(body, {
      params: {
        [constants.BROTLI_PARAM_QUALITY]: level,
        [constants.BROTLI_PARAM_SIZE_HINT]: body.byteLength,
      },
    })
    : coding === "zstd"
    ? zstdCompressSync(body, { params: { [constants.ZSTD_c_compressionLevel]: level } })
    : gzipSync(body, { level });
  return new Uint8Array(out.buffer as ArrayBuffer, out.byteOffset, out.byteLength);
}

/** A node:zlib compressor that flushes what each write gives (no waiting for more input). */
function flushingCompressor(coding: Coding, level: number) {
  if (coding === "br") {
    return createBrotliCompress({
      flush: constants.BROTLI_OPERATION_FLUSH,
      params: { [constants.BROTLI_PARAM_QUALITY]: level },
    });
  }
  if (coding === "zstd") {
    return createZstdCompress({
      flush: constants.ZSTD_e_flush,
      params: { [constants.ZSTD_c_compressionLevel]: level },
    });
  }
  return createGzip({ level, flush: constants.Z_SYNC_FLUSH });
}

/**
 * `body` compressed as it streams: every piece read is compressed and flushed on its own, so a
 * server-sent event or a chunk reaches the client when it arrives, not when more follows. An
 * error of `body` errors the result; cancelling the result cancels `body`.
 */
export function compressStream(
  body: ReadableStream<Uint8Array>,
  coding: Coding,
  level: number,
): ReadableStream<Uint8Array> {
  const z = flushingCompressor(coding, level);
  const reader = body.getReader();
  let ended: Promise<void> | undefined;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      z.on("data", (chunk: Uint8Array) => {
        controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      });
      z.on("error", (e: unknown) => controller.error(e));
    },
    async pull(controller) {
      if (ended) return ended;
      let next;
      try {
        next = await reader.read();
      } catch (e) {
        z.destroy();
        controller.error(e);
        return;
      }
      if (next.done) {
        ended = new Promise<void>((resolve) => {
          z.once("end", () => {
            controller.close();
            resolve();
          });
          z.end();
        });
        return ended;
      }
      await new Promise<void>((resolve) => z.write(next.value, () => resolve()));
    },
    cancel(reason) {
      z.destroy();
      return reader.cancel(reason);
    },
  });
}
