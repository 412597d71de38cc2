/**
 * The listening side: Deno.serve, access logging around the route table, swapping the table on
 * reload, and a bounded graceful stop.
 *
 * @module
 */
import { explainError, permissionProblem } from "../cli/errors.ts";
import type { Config } from "../config/schema.ts";
import { requestIdFor, withRequestId } from "../log/access.ts";
import type { Logger } from "../log/logger.ts";
import type { App } from "../routes/build.ts";
import { type RequestContext, splitUrl } from "../routes/types.ts";

/** A running server. */
export interface RunningServer {
  /** Where it listens (the real port when 0 was asked for). */
  addr: Deno.NetAddr;
  /** The base URL clients use. */
  url: string;
  /** Serves new requests with `app` from now on; in-flight ones finish with the old one. */
  swap(app: App): void;
  /** Stops accepting, lets in-flight requests finish for up to `timeoutMs`, then closes. */
  shutdown(timeoutMs?: number): Promise<void>;
  /** Settles when the listener has closed. */
  finished: Promise<void>;
}

const displayHost = (host: string) => host.includes(":") ? `[${host}]` : host;

/** Starts listening with `app` answering requests. */
export function startServer(config: Config, log: Logger, app: App): Promise<RunningServer> {
  let current = app;
  const secure = false;
  const handler = (request: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => {
    const { path, query } = splitUrl(request.url);
    const ctx: RequestContext = { path, query, remote: info.remoteAddr, secure };
    if (!log.accessEnabled) return current.handle(request, ctx);
    const started = performance.now();
    const requestId = ctx.requestId = requestIdFor(request.headers.get("x-request-id"));
    const logged = (response: Response) => {
      const length = response.headers.get("content-length");
      log.access({
        method: request.method,
        path: path + query,
        status: response.status,
        bytes: length === null ? null : Number(length),
        durationMs: performance.now() - started,
        clientIp: info.remoteAddr.hostname,
        requestId,
        headers: request.headers,
      });
      return withRequestId(response, requestId);
    };
    const response = current.handle(request, ctx);
    return response instanceof Promise ? response.then(logged) : logged(response);
  };

  const { promise, resolve, reject } = Promise.withResolvers<RunningServer>();
  try {
    const server = Deno.serve({
      hostname: config.server.host,
      port: config.server.port,
      onListen() {},
      onError(error) {
        log.error(
          permissionProblem(error)
            ? `request failed: ${explainError(error)}`
            : `request failed: ${error instanceof Error ? (error.stack ?? error.message) : error}`,
        );
        return current.errorResponse(500, new Request("http://x/"));
      },
    }, handler);
    const addr = server.addr;
    const url = `http://${displayHost(addr.hostname)}:${addr.port}/`;
    resolve({
      addr,
      url,
      swap(next) {
        const old = current;
        current = next;
        old.close();
      },
      async shutdown(timeoutMs = config.server.shutdown_timeout * 1000) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const timeout = new Promise<void>((r) => timer = setTimeout(r, timeoutMs));
        await Promise.race([server.shutdown(), timeout]);
        clearTimeout(timer);
        current.close();
        log.flush();
      },
      finished: server.finished,
    });
  } catch (e) {
    reject(e);
  }
  return promise;
}
