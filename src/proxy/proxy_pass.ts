/**
 * The forwarder behind `proxy_pass` in V2 locations, whose backend URL can change per request
 * (named groups): the reverse proxy's HTTP/1.1 client (one pool of kept-alive connections per
 * backend origin) and its header rules. Pools, health checks and WebSocket bridging are for
 * `server.reverse_proxy` rules.
 *
 * @module
 */
import { forwardHeaders, relocate } from "./forwarded_headers.ts";
import type { HeaderRules } from "./header_rules.ts";
import {
  BUFFERED_BODY,
  describeError,
  failureStatus,
  readPayload,
  streamLength,
} from "./forward.ts";
import {
  type BackendClient,
  ClientBodyError,
  ConnectError,
  createBackendClient,
  TimeoutError,
} from "./http1.ts";
import type { ErrorResponder, RequestContext } from "../http/types.ts";
import { bodyFailureStatus } from "../http/errors.ts";
import type { Logger } from "../log/logger.ts";

/** Backend origins whose connection pools are kept; the oldest is closed to make room. */
const MAX_ORIGINS = 64;

/**
 * Forwards `request` to `target` (the full backend URL: origin, path and query) and returns the
 * backend's answer, or an error answer (502, 504) when it cannot. Disposing it closes the
 * backend connections it keeps.
 */
export interface ProxyForward extends Disposable {
  (request: Request, ctx: RequestContext, target: URL, rules?: LocationHeaderRules): Promise<
    Response
  >;
}

/** A location's header rules, both ways. */
export interface LocationHeaderRules {
  up?: HeaderRules;
  down?: HeaderRules;
}

/** Options of {@link createProxyForward}. */
export interface ProxyForwardOptions {
  errorResponse: ErrorResponder;
  /** Seconds to connect, and again to wait for the backend's answer headers. Default 30. */
  timeoutSeconds?: number;
  /** Where a backend that cannot be reached or does not answer is reported (one line each). */
  log?: Logger;
}

/**
 * A forwarder with the reverse proxy's header rules (hop-by-hop headers dropped both ways,
 * `X-Forwarded-*` and `X-Real-IP` set, a `Location` naming the backend made relative to this
 * server), streaming both bodies; it does not follow redirects, answers 502 when the backend cannot
 * be reached or answers with something that is not HTTP, and 504 when it does not answer in time.
 */
export function createProxyForward(options: ProxyForwardOptions): ProxyForward {
  const timeoutMs = (options.timeoutSeconds ?? 30) * 1000;
  const clients = new Map<string, BackendClient>();
  const clientFor = (url: URL, hostname: string, port: number): BackendClient => {
    let client = clients.get(url.origin);
    if (client !== undefined) return client;
    if (clients.size >= MAX_ORIGINS) {
      const [origin, oldest] = clients.entries().next().value!;
      oldest[Symbol.dispose]();
      clients.delete(origin);
    }
    client = createBackendClient({
      hostname,
      port,
      tls: url.protocol === "https:",
      connectTimeoutMs: timeoutMs,
      authority: url.host,
    });
    clients.set(url.origin, client);
    return client;
  };
  const forward = async (
    request: Request,
    ctx: RequestContext,
    target: URL,
    rules?: LocationHeaderRules,
  ) => {
    const forwarded = forwardHeaders(request, ctx);
    const headers = rules?.up ? rules.up.apply(forwarded, request, ctx) : forwarded;
    const hostname = target.hostname.replace(/^\[(.*)\]$/, "$1");
    const port = Number(target.port) || (target.protocol === "https:" ? 443 : 80);
    let answer;
    try {
      const method = request.method;
      const body = method === "GET" || method === "HEAD" ? null : await readPayload(request);
      const streamed = body instanceof ReadableStream;
      answer = await clientFor(target, hostname, port).request({
        method,
        target: target.pathname + target.search,
        headers,
        body,
        bodyLength: streamed ? streamLength(request) : undefined,
        responseTimeoutMs: streamed ? 0 : timeoutMs,
        signal: request.signal,
        bufferLimit: BUFFERED_BODY,
      }, rules?.up?.setsHost ?? false);
    } catch (e) {
      const what = `${request.method} ${ctx.path}`;
      const seconds = timeoutMs / 1000;
      const bodyFailed = e instanceof ClientBodyError || bodyFailureStatus(e) !== 400;
      if (request.signal.aborted || bodyFailed) {
        options.log?.debug(`proxy_pass ${target.origin}: ${what}: ${describeError(e)}`, ctx);
      } else if (e instanceof TimeoutError) {
        options.log?.warn(
          `proxy_pass ${target.origin} sent no response headers within ${seconds}s for ${what}`,
          ctx,
        );
      } else if (e instanceof ConnectError) {
        options.log?.warn(
          `proxy_pass: cannot reach ${target.origin} for ${what}: ` +
            (e.timedOut ? `no connection within ${seconds}s` : describeError(e)),
          ctx,
        );
      } else {
        options.log?.warn(`proxy_pass ${target.origin}: ${what}: ${describeError(e)}`, ctx);
      }
      return options.errorResponse(failureStatus(e), request);
    }
    return new Response(answer.body, {
      status: answer.status,
      statusText: answer.statusText,
      headers: relocate(
        rules?.down ? rules.down.apply(answer.headers, request, ctx) : answer.headers,
        [target.origin.toLowerCase()],
        () => "",
        "",
      ),
    });
  };
  return Object.assign(forward, {
    [Symbol.dispose]() {
      for (const client of clients.values()) client[Symbol.dispose]();
      clients.clear();
    },
  });
}
