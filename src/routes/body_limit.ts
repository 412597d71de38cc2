/**
 * `max_body_size`: nginx's `client_max_body_size`, server-wide (`server.max_body_size`) and per
 * location (`server.locations.<prefix>.max_body_size`, the nearest location that sets one
 * counting). A `Content-Length` over the limit is answered 413 before any byte of the body is
 * read; a body without one (chunked, HTTP/2, HTTP/3) is counted as it is read and fails with
 * {@link BodyTooLarge} once it grows past the limit, which whoever reads it answers with 413
 * (the proxy), or, when the answer has begun, which breaks the answer off. 0 is no limit.
 *
 * @module
 */
import type { Config } from "../config/schema.ts";
import { BodyTooLarge } from "../http/errors.ts";
import { normalizePath } from "../http/paths.ts";
import type { ErrorResponder, Handler, Wrapper } from "../http/types.ts";
import { findByPrefix, locationPrefix } from "./auth.ts";

/** One limit and the key that set it. */
interface Limit {
  bytes: number;
  where: string;
}

/**
 * How long the rest of an HTTP/2 body past the limit is read and dropped, as nginx's
 * `lingering_time`: an HTTP/2 body left unread or cancelled while the client still sends it makes
 * the runtime reset the stream, often before the 413 reaches the client (curl: "stream error in
 * the framing layer", also on a bare `Deno.serve`). Nothing read this way is forwarded.
 */
const LINGER_MS = 30_000;

/** Reads what is left of `reader` and drops it, for at most {@link LINGER_MS}. */
async function drain(reader: ReadableStreamDefaultReader<Uint8Array>) {
  const stop = setTimeout(() => reader.cancel().catch(() => {}), LINGER_MS);
  Deno.unrefTimer(stop);
  try {
    while (!(await reader.read()).done) { /* dropped */ }
  } catch { /* the client went away */ }
  clearTimeout(stop);
}

/** `request` whose body fails with {@link BodyTooLarge} once more than `limit.bytes` arrive. */
function counted(request: Request, limit: Limit, linger: boolean): Request {
  const reader = request.body!.getReader();
  let seen = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) return controller.close();
      seen += value.length;
      if (seen <= limit.bytes) return controller.enqueue(value);
      controller.error(new BodyTooLarge(limit.bytes, limit.where));
      if (linger) drain(reader);
      else reader.cancel().catch(() => {});
    },
    cancel: (reason) => reader.cancel(reason),
  });
  return new Request(request, { body, duplex: "half" } as RequestInit);
}

/** Wraps `next` with the limits of `config` (nothing at all when none is set). */
export function withBodyLimit(config: Config, errorResponse: ErrorResponder): Wrapper {
  const site: Limit = { bytes: config.server.max_body_size, where: "server.max_body_size" };
  const located = Object.entries(config.server.locations)
    .filter(([, l]) => l.max_body_size !== undefined)
    .map(([key, l]) => ({
      prefix: locationPrefix(key),
      limit: { bytes: l.max_body_size!, where: `server.locations.${key}.max_body_size` },
    }));
  const find = findByPrefix(located);
  return (next: Handler): Handler => {
    if (site.bytes === 0 && located.every((l) => l.limit.bytes === 0)) return next;
    return (request, ctx) => {
      if (request.body === null) return next(request, ctx);
      let limit = site;
      if (located.length > 0) {
        const path = normalizePath(ctx.path);
        if (path === null) return errorResponse(400, request);
        limit = find(path)?.limit ?? site;
      }
      if (limit.bytes === 0) return next(request, ctx);
      const length = request.headers.get("content-length");
      if (length !== null) {
        // The server has checked the value; the body cannot be longer than it says.
        if (Number(length) > limit.bytes) {
          if (ctx.protocol === "HTTP/2") drain(request.body.getReader());
          return errorResponse(413, request);
        }
        return next(request, ctx);
      }
      return next(counted(request, limit, ctx.protocol === "HTTP/2"), ctx);
    };
  };
}
