/**
 * An empty `Host` is refused with 400 (RFC 9112 §3.2). (One that is absent cannot be told from
 * HTTP/1.0's: the runtime's HTTP server names the listener's own address instead.)
 *
 * @module
 */
import type { ErrorResponder, Handler, Wrapper } from "../http/types.ts";

const DETAILS = "An HTTP/1.1 request must name the host it is for in a Host header.";

/** Wraps `next` so that a request with an empty Host gets 400 instead. */
export function withHostRequired(errorResponse: ErrorResponder): Wrapper {
  return (next: Handler): Handler => (request, ctx) =>
    request.headers.get("host") === ""
      ? errorResponse(400, request, undefined, DETAILS)
      : next(request, ctx);
}
