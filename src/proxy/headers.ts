/**
 * Header rules of the proxy: hop-by-hop headers are dropped both ways, the X-Forwarded-* family
 * is set on the way in, and a `Location` that names the backend is rewritten on the way out.
 *
 * @module
 */
import type { RequestContext } from "../routes/types.ts";

/** Headers that describe one connection, never forwarded (RFC 9110 §7.6.1, plus Proxy-*). */
export const HOP_BY_HOP: readonly string[] = [
  "connection",
  "keep-alive",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
];

/** Removes hop-by-hop headers, including those the Connection header names. */
export function dropHopByHop(headers: Headers): void {
  const connection = headers.get("connection");
  if (connection !== null) {
    for (const token of connection.split(",")) {
      const name = token.trim();
      if (name.length > 0) {
        try {
          headers.delete(name);
        } catch { /* not a header name */ }
      }
    }
  }
  for (const name of HOP_BY_HOP) headers.delete(name);
}

/** Whether a backend's response carries anything that must not reach the client as is. */
export function needsRewrite(headers: Headers): boolean {
  return headers.has("connection") || headers.has("transfer-encoding") ||
    headers.has("keep-alive") || headers.has("location") || headers.has("content-encoding") ||
    headers.has("trailer") || headers.has("upgrade") || headers.has("proxy-authenticate") ||
    headers.has("proxy-connection") || headers.has("te");
}

/** The Host the client asked for (HTTP/2 requests carry it only in the URL). */
export function clientHost(request: Request): string {
  const host = request.headers.get("host");
  if (host !== null) return host;
  const url = request.url;
  const start = url.indexOf("//") + 2;
  const end = url.indexOf("/", start);
  return end < 0 ? url.slice(start) : url.slice(start, end);
}

/**
 * The headers sent to the backend: the client's, without hop-by-hop ones, with
 * `X-Forwarded-For` (client address appended), `X-Forwarded-Proto`, `X-Forwarded-Host` and
 * `X-Real-IP`. The Host header is left in; the HTTP client drops it unless `preserve_host`.
 */
export function forwardHeaders(request: Request, ctx: RequestContext): Headers {
  const headers = new Headers(request.headers);
  dropHopByHop(headers);
  const ip = ctx.remote.hostname;
  const prior = headers.get("x-forwarded-for");
  headers.set("x-forwarded-for", prior === null ? ip : `${prior}, ${ip}`);
  headers.set("x-real-ip", ip);
  headers.set("x-forwarded-proto", ctx.secure ? "https" : "http");
  const host = request.headers.get("host");
  if (host !== null) headers.set("x-forwarded-host", host);
  else {
    // HTTP/2 carries the host only in the URL; preserve_host needs it as a header.
    const authority = clientHost(request);
    headers.set("x-forwarded-host", authority);
    headers.set("host", authority);
  }
  // Without this the HTTP client asks for gzip and br on the client's behalf and decodes them.
  if (!headers.has("accept-encoding")) headers.set("accept-encoding", "identity");
  return headers;
}

/**
 * The `Location` to send to the client: one that points at the backend (`origins`) becomes the
 * public URL (the prefix put back when it was stripped); anything else is left alone.
 */
export function rewriteLocation(
  location: string,
  origins: readonly string[],
  publicOrigin: string,
  prefix: string,
): string {
  for (const origin of origins) {
    if (location.length < origin.length) continue;
    if (location.slice(0, origin.length).toLowerCase() !== origin) continue;
    const rest = location.slice(origin.length);
    if (rest.length > 0 && rest[0] !== "/" && rest[0] !== "?" && rest[0] !== "#") continue;
    return publicOrigin + prefix + (rest.startsWith("/") ? rest : "/" + rest);
  }
  return location;
}

/** Content codings the HTTP client decodes by itself (the body arrives decoded). */
const DECODED = new Set(["gzip", "x-gzip", "br"]);

/**
 * The response headers for the client: hop-by-hop headers dropped, `Location` rewritten, and
 * `Content-Encoding`/`Content-Length` removed when the HTTP client has already decoded the body.
 */
export function responseHeaders(
  from: Headers,
  origins: readonly string[],
  publicOrigin: () => string,
  prefix: string,
): Headers {
  const headers = new Headers(from);
  dropHopByHop(headers);
  const location = headers.get("location");
  if (location !== null) {
    headers.set("location", rewriteLocation(location, origins, publicOrigin(), prefix));
  }
  const coding = headers.get("content-encoding");
  if (coding !== null && DECODED.has(coding.trim().toLowerCase())) {
    headers.delete("content-encoding");
    headers.delete("content-length");
  }
  return headers;
}
