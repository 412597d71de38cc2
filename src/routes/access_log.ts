/**
 * One access line per request, written when the answer's head is ready; for a WebSocket, when
 * the session ends (status 101, the session's duration). Answers carry `X-Request-Id`.
 *
 * @module
 */
import { setHeaders } from "../http/headers.ts";
import { requestIdFor } from "../log/access.ts";
import type { Logger } from "../log/logger.ts";
import type { Handler, RequestContext, Wrapper } from "../http/types.ts";

/** Wraps `next` with access lines; the identity when the log writes none. */
export function withAccessLog(log: Logger): Wrapper {
  return (next: Handler): Handler => {
    if (!log.accessEnabled) return next;
    const write = (
      request: Request,
      ctx: RequestContext,
      response: Response,
      started: number,
      clientIp: string,
    ) => {
      const length = response.headers.get("content-length");
      log.access({
        method: request.method,
        path: ctx.path + ctx.query,
        status: response.status,
        bytes: length === null ? null : Number(length),
        durationMs: performance.now() - started,
        clientIp,
        requestId: ctx.requestId,
        protocol: ctx.protocol,
        site: ctx.site,
        headers: request.headers,
      });
    };
    // Functions made once rather than closures per request: this runs on every request.
    const logged = (
      request: Request,
      ctx: RequestContext,
      response: Response,
      started: number,
      clientIp: string,
    ): Response => {
      const upgrade = ctx.upgrade;
      if (upgrade && response === upgrade.response) {
        upgrade.ended.then(() => write(request, ctx, response, started, clientIp));
        return response;
      }
      write(request, ctx, response, started, clientIp);
      return setHeaders(response, [["x-request-id", ctx.requestId!]]);
    };
    return (request, ctx) => {
      const started = performance.now();
      ctx.requestId = requestIdFor(request.headers.get("x-request-id"));
      // Read before answering: after a WebSocket upgrade the runtime no longer tells.
      const clientIp = ctx.remote.hostname;
      const response = next(request, ctx);
      return response instanceof Promise
        ? response.then((r) => logged(request, ctx, r, started, clientIp))
        : logged(request, ctx, response, started, clientIp);
    };
  };
}
