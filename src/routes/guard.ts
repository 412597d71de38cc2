/**
 * No request may stop the server: whatever a handler or a wrapper throws becomes a 500 answer
 * and one ERROR line. After a WebSocket upgrade the answer is already given, so the session is
 * closed instead and the runtime still gets the upgrade answer it expects (any other answer
 * ends `Deno.serve`'s listener).
 *
 * @module
 */
import { explainError } from "../http/errors.ts";
import type { Logger } from "../log/logger.ts";
import { builtInErrorResponse } from "../pages/html.ts";
import type { ErrorResponder, Handler, RequestContext, Wrapper } from "../http/types.ts";

/** Wraps `next` so that a throw or a rejection is answered instead of escaping. */
export function withErrorGuard(log: Logger, errorResponse: ErrorResponder): Wrapper {
  return (next: Handler): Handler => (request, ctx) => {
    const fail = (error: unknown): Response => {
      // The stack only at DEBUG (-d), as everywhere else.
      const why = explainError(error, log.enabled("DEBUG"));
      log.error(`request failed: ${request.method} ${ctx.path}: ${why}`, ctx);
      return answerAfterFailure(request, ctx, errorResponse);
    };
    const settle = (response: Response): Response =>
      ctx.upgrade && response !== ctx.upgrade.response
        ? fail(new Error(`an upgraded request was answered with ${response.status}`))
        : response;
    try {
      const response = next(request, ctx);
      return response instanceof Promise ? response.then(settle, fail) : settle(response);
    } catch (e) {
      return fail(e);
    }
  };
}

function answerAfterFailure(
  request: Request,
  ctx: RequestContext,
  errorResponse: ErrorResponder,
): Response {
  if (ctx.upgrade) {
    const { socket } = ctx.upgrade;
    const close = () => {
      try {
        socket.close(1011, "server error");
      } catch { /* already closing */ }
    };
    if (socket.readyState === WebSocket.CONNECTING) socket.onopen = close;
    else close();
    return ctx.upgrade.response;
  }
  try {
    return errorResponse(500, request);
  } catch {
    return builtInErrorResponse(500, request);
  }
}
