/**
 * `server.compression`: answers made on the fly (proxied answers, error pages, listings, V2
 * `return`s) compressed with the coding the client's `Accept-Encoding` rates highest among
 * `encodings`. Left as they are: answers that already have a `Content-Encoding` (never twice),
 * answers to `Range` requests, 206/204/304 and 1xx answers, types not listed, answers with a
 * `Content-Length` below `min_size`, `Cache-Control: no-transform`, and files (the file server
 * keeps compressed forms of its own). Every answer that could be compressed gets
 * `Vary: Accept-Encoding`; a compressed one loses `Content-Length` and `Accept-Ranges`, and a
 * strong `ETag` becomes weak (as nginx does: the bytes differ, the content does not, so a
 * backend's weak comparison of `If-None-Match` still answers 304).
 *
 * Answers up to 256 KiB with a `Content-Length` are compressed in one go (about a third of the
 * time streaming takes); others as they stream,
 * each piece flushed as it arrives, so that server-sent events and chunked answers keep flowing.
 *
 * @module
 */
import type { Compression } from "../config/schema.ts";
import {
  type Coding,
  compressBytes,
  COMPRESSIBLE,
  compressStream,
  preferredEncoding,
} from "../http/encoding.ts";
import { addVary, FILE_ANSWER, marksOf } from "../http/headers.ts";
import type { Handler, RequestContext, Wrapper } from "../http/types.ts";

/** Answers up to this size with a Content-Length are read whole and compressed at once. */
const WHOLE = 256 * 1024;

/** A test of a Content-Type against `types` (`text/*` or `a/b`), or the built-in list. */
export function typeMatcher(types: readonly string[]): (contentType: string) => boolean {
  if (types.length === 0) return (t) => COMPRESSIBLE.test(t.toLowerCase());
  const exact = new Set(types.filter((t) => !t.endsWith("/*")).map((t) => t.toLowerCase()));
  const families = types.filter((t) => t.endsWith("/*")).map((t) => t.slice(0, -1).toLowerCase());
  return (contentType) => {
    const semi = contentType.indexOf(";");
    const type = (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
    return exact.has(type) || families.some((f) => type.startsWith(f));
  };
}

/** Wraps `next` so that its answers are compressed as `config` says; the identity when off. */
export function withCompression(config: Compression): Wrapper {
  const offered = config.encodings as Coding[];
  const levels: Record<Coding, number> = {
    gzip: config.gzip_level,
    zstd: config.zstd_level,
    br: config.br_level,
  };
  const compressible = typeMatcher(config.types);
  const minSize = config.min_size;

  const compress = (
    response: Response,
    request: Request,
    ctx: RequestContext,
  ): Response | Promise<Response> => {
    // A file's answer the file server built (see also the check for `Accept-Ranges` below).
    if ((marksOf(response) & FILE_ANSWER) !== 0) return response;
    const status = response.status;
    if (status < 200 || status === 204 || status === 206 || status === 304) return response;
    const h = response.headers;
    if (h.has("content-encoding")) return response;
    const type = h.get("content-type");
    if (type === null || !compressible(type)) return response;
    // A file's answer (from the static folder or a V2 location's root; a `proxy_pass` answer
    // that offers ranges counts too): the file server has its own compressed forms and serves
    // ranges.
    if ((ctx.route === "static" || ctx.route === "locations") && h.has("accept-ranges")) {
      return response;
    }
    const lengthText = h.get("content-length");
    const length = lengthText === null ? undefined : Number(lengthText);
    if (length !== undefined && length < minSize) return response;
    if (/no-transform/i.test(h.get("cache-control") ?? "")) return response;
    // Read only now: reading `body` turns an answer's bytes into a stream, and an answer passed on
    // with a stream is sent chunked, without its Content-Length, and slower.
    const body = response.body;
    if (body === null) return response;
    const accept = request.headers.get("accept-encoding");
    const coding = accept === null || request.headers.has("range")
      ? undefined
      : preferredEncoding(accept, offered);
    const headers = new Headers(h);
    addVary(headers, "Accept-Encoding");
    const init = { status, statusText: response.statusText, headers };
    if (coding === undefined) return new Response(body, init);
    headers.delete("content-length");
    headers.delete("accept-ranges");
    headers.set("content-encoding", coding);
    const etag = headers.get("etag");
    if (etag !== null && !etag.startsWith("W/")) headers.set("etag", `W/${etag}`);
    const level = levels[coding];
    if (length !== undefined && length <= WHOLE) {
      return response.bytes().then((bytes) => {
        const packed = compressBytes(bytes, coding, level);
        // The compressed length, for the access log and the byte counter as for the client.
        headers.set("content-length", String(packed.byteLength));
        return new Response(packed, init);
      });
    }
    return new Response(compressStream(body, coding, level), init);
  };

  return (next: Handler): Handler => {
    if (!config.enabled) return next;
    return (request, ctx) => {
      if (request.method === "HEAD") return next(request, ctx);
      const response = next(request, ctx);
      return response instanceof Promise
        ? response.then((r) => compress(r, request, ctx))
        : compress(response, request, ctx);
    };
  };
}
