/**
 * The forwarder behind `proxy_pass` in V2 locations, whose backend URL can change per request
 * (named groups): `fetch` with the reverse proxy's header rules from src/proxy/headers.ts.
 * Pools, health checks and WebSocket bridging are for `server.reverse_proxy` rules.
 *
 * @module
 */
import { fetchedHeaders, forwardHeaders, relocate } from "../proxy/headers.ts";
import type { ErrorResponder } from "./errors.ts";
import type { RequestContext } from "./types.ts";

/**
 * Forwards `request` to `target` (the full backend URL: origin, path and query) and returns the
 * backend's answer, or an error answer (502, 504) when it cannot.
 */
export type ProxyForward = (
  request: Request,
  ctx: RequestContext,
  target: URL,
) => Promise<Response>;

/** Options of {@link createFetchForward}. */
export interface FetchForwardOptions {
  errorResponse: ErrorResponder;
  /** Seconds to wait for the backend's answer headers. Default 30. */
  timeoutSeconds?: number;
}

/**
 * A forwarder over `fetch` with the reverse proxy's header rules (hop-by-hop headers dropped both
 * ways, `X-Forwarded-*` and `X-Real-IP` set, a `Location` naming the backend made relative to
 * this server), streaming both bodies; it does not follow redirects,
 * answers 502 when the backend cannot be reached and 504 when it does not answer in time.
 */
export function createFetchForward(options: FetchForwardOptions): ProxyForward {
  const timeoutMs = (options.timeoutSeconds ?? 30) * 1000;
  return async (request, ctx, target) => {
    const headers = forwardHeaders(request, ctx).filter(([name]) => name !== "host");
    // The timeout covers the wait for the answer's headers only; a long download may go on.
    const abort = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      abort.abort();
    }, timeoutMs);
    const hasBody = request.body !== null && request.method !== "GET" && request.method !== "HEAD";
    let answer: Response;
    try {
      answer = await fetch(target, {
        method: request.method,
        headers,
        body: hasBody ? request.body : undefined,
        redirect: "manual",
        signal: abort.signal,
      });
    } catch {
      return options.errorResponse(timedOut ? 504 : 502, request);
    } finally {
      clearTimeout(timer);
    }
    const out = relocate(
      fetchedHeaders(answer.headers),
      [target.origin.toLowerCase()],
      () => "",
      "",
    );
    return new Response(answer.body, {
      status: answer.status,
      statusText: answer.statusText,
      headers: out,
    });
  };
}
