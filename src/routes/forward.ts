/**
 * The contract between locations that say `proxy_pass` and the reverse proxy, and a plain
 * `fetch` forwarder that fulfils it until the full proxy (src/proxy/) is plugged in.
 *
 * @module
 */
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

const HOP_BY_HOP = [
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
];

/** Options of {@link createFetchForward}. */
export interface FetchForwardOptions {
  errorResponse: ErrorResponder;
  /** Seconds to wait for the backend's answer headers. Default 30. */
  timeoutSeconds?: number;
}

/**
 * A minimal forwarder over `fetch`: drops hop-by-hop headers, adds `X-Forwarded-For`,
 * `X-Forwarded-Host` and `X-Forwarded-Proto`, streams both bodies, does not follow redirects,
 * answers 502 when the backend cannot be reached and 504 when it does not answer in time.
 */
export function createFetchForward(options: FetchForwardOptions): ProxyForward {
  const timeoutMs = (options.timeoutSeconds ?? 30) * 1000;
  return async (request, ctx, target) => {
    const headers = new Headers(request.headers);
    for (const name of HOP_BY_HOP) headers.delete(name);
    headers.delete("host");
    // fetch would otherwise decompress the answer and leave a wrong Content-Encoding behind.
    headers.set("accept-encoding", "identity");
    const forwarded = headers.get("x-forwarded-for");
    const client = ctx.remote.hostname;
    headers.set("x-forwarded-for", forwarded ? `${forwarded}, ${client}` : client);
    const host = request.headers.get("host");
    if (host) headers.set("x-forwarded-host", host);
    headers.set("x-forwarded-proto", ctx.secure ? "https" : "http");
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
    const out = new Headers(answer.headers);
    for (const name of HOP_BY_HOP) out.delete(name);
    return new Response(answer.body, {
      status: answer.status,
      statusText: answer.statusText,
      headers: out,
    });
  };
}
