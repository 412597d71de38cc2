/**
 * Header rules of the proxy: hop-by-hop headers are dropped both ways, the X-Forwarded-* family
 * is set on the way in (and nothing else is added), and a `Location` that names the backend is
 * rewritten on the way out.
 *
 * @module
 */
import { HOP_BY_HOP } from "../http/headers.ts";
import { type RequestContext, urlAuthority } from "../http/types.ts";

/** The Host the client asked for (HTTP/2 requests carry it only in the URL). */
export function clientHost(request: Request): string {
  return request.headers.get("host") ?? urlAuthority(request.url);
}

const HOP = new Set(HOP_BY_HOP);
/** Set by the proxy itself: what the client sent under these names is replaced. */
const OWN = new Set(["x-forwarded-for", "x-real-ip", "x-forwarded-proto", "x-forwarded-host"]);

/** Drops the headers that a `Connection` value names. */
export function withoutNamed(list: [string, string][], connection: string): [string, string][] {
  const named = new Set(connection.toLowerCase().split(",").map((t) => t.trim()));
  return list.filter(([name]) => !named.has(name));
}

/**
 * The headers sent to the backend: exactly the client's, without hop-by-hop ones, with
 * `X-Forwarded-For` (client address appended), `X-Forwarded-Proto` and `X-Real-IP`, and
 * `X-Forwarded-Host` when the client named a host (its `Host`, or an HTTP/2 request's
 * `:authority`, which also becomes its `host` here); nothing is made up for one that named none.
 * The Host header is left in; the HTTP client drops it unless `preserve_host`. Built in one pass
 * over the request's headers: this runs for every proxied request.
 */
export function forwardHeaders(request: Request, ctx: RequestContext): [string, string][] {
  let list: [string, string][] = [];
  let connection: string | null = null;
  let prior: string | null = null;
  let host = false;
  for (const pair of request.headers) {
    const name = pair[0];
    if (HOP.has(name)) {
      if (name === "connection") connection = pair[1];
      continue;
    }
    if (OWN.has(name)) {
      if (name === "x-forwarded-for") prior = pair[1];
      continue;
    }
    if (name === "host") host = true;
    list.push(pair);
  }
  if (connection !== null) list = withoutNamed(list, connection);
  const ip = ctx.remote.hostname;
  list.push(
    ["x-forwarded-for", prior === null ? ip : `${prior}, ${ip}`],
    ["x-real-ip", ip],
    ["x-forwarded-proto", ctx.secure ? "https" : "http"],
  );
  const named = ctx.authority === undefined ? clientHost(request) : ctx.authority;
  if (named !== null) {
    list.push(["x-forwarded-host", named]);
    if (!host) list.push(["host", named]);
  }
  return list;
}

/**
 * The `Location` to send to the client: one that points at the backend (`origins`) becomes the
 * public URL, and an absolute path (`/login`) gets the stripped prefix back (`/api/login`), as
 * PyServe does; `prefix` is "" when nothing was stripped. Anything else (another host, `//host`,
 * a path relative to the request's) is left alone.
 */
export function rewriteLocation(
  location: string,
  origins: readonly string[],
  publicOrigin: string,
  prefix: string,
): string {
  if (location.startsWith("/") && !location.startsWith("//") && !location.startsWith("/\\")) {
    return prefix + location;
  }
  for (const origin of origins) {
    if (location.length < origin.length) continue;
    if (location.slice(0, origin.length).toLowerCase() !== origin) continue;
    const rest = location.slice(origin.length);
    if (rest.length > 0 && rest[0] !== "/" && rest[0] !== "?" && rest[0] !== "#") continue;
    return publicOrigin + prefix + (rest.startsWith("/") ? rest : "/" + rest);
  }
  return location;
}

/** `headers` with a `Location` that names the backend rewritten to the public URL (in place). */
export function relocate(
  headers: [string, string][],
  origins: readonly string[],
  publicOrigin: () => string,
  prefix: string,
): [string, string][] {
  for (let i = 0; i < headers.length; i++) {
    if (headers[i][0] !== "location") continue;
    headers[i] = ["location", rewriteLocation(headers[i][1], origins, publicOrigin(), prefix)];
  }
  return headers;
}
