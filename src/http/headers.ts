/**
 * Adding headers to answers that may have come from `fetch` (whose headers are immutable), the
 * one definition of an HTTP token, the hop-by-hop headers, and reading a cookie.
 *
 * @module
 */

/** The characters of an HTTP token (RFC 9110 §5.6.2 `tchar`), for a regex character class. */
export const TCHAR = "!#$%&'*+\\-.^_`|~0-9A-Za-z";

/** An HTTP token: a header name, a method, a directive name. */
export const TOKEN: RegExp = new RegExp(`^[${TCHAR}]+$`);

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

/** The value of cookie `name` in a `Cookie` header, or undefined. */
export function readCookie(header: string | null, name: string): string | undefined {
  if (header === null) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** Adds `value` to the `Vary` of `headers`, unless it is named there already or Vary is `*`. */
export function addVary(headers: Headers, value: string): void {
  const old = headers.get("vary");
  if (old === null) headers.set("vary", value);
  else if (old !== "*" && !old.toLowerCase().includes(value.toLowerCase())) {
    headers.set("vary", `${old}, ${value}`);
  }
}

function apply(headers: Headers, pairs: readonly (readonly [string, string])[]) {
  for (const [name, value] of pairs) {
    if (name === "vary") addVary(headers, value);
    else if (name === "set-cookie") headers.append(name, value);
    else headers.set(name, value);
  }
}

/**
 * Sets `pairs` on `response` (`vary` is merged with what is there, `set-cookie` is added to the
 * cookies already set) and returns it, or a copy
 * when its headers cannot be changed. The one place for a header on an answer that may be
 * immutable: every wrapper that adds one goes through here.
 */
export function setHeaders(
  response: Response,
  pairs: readonly (readonly [string, string])[],
): Response {
  if (pairs.length === 0) return response;
  try {
    apply(response.headers, pairs);
    return response;
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
    // The Response constructor refuses a 1xx status (a WebSocket upgrade's 101): left as it is.
    if (response.status < 200) return response;
    const copy = new Response(response.body, response);
    apply(copy.headers, pairs);
    return copy;
  }
}

/**
 * Marks an answer that already carries a configuration's fixed headers (the file server's
 * cached answers carry the `security_headers`), so that the wrapper adding them can skip the
 * lookups; an answer without the mark is checked header by header.
 */
export const HAS_FIXED_HEADERS: unique symbol = Symbol("has the fixed headers");

/** An answer that may carry {@link HAS_FIXED_HEADERS}. */
export type MarkedResponse = Response & { [HAS_FIXED_HEADERS]?: true };

/**
 * A copy of a prebuilt answer, marked as carrying the fixed headers when `marked`. Only then:
 * the extra property costs about 0.3 µs per answer.
 */
export function cloneMarked(response: Response, marked: boolean): Response {
  const copy = response.clone() as MarkedResponse;
  if (marked) copy[HAS_FIXED_HEADERS] = true;
  return copy;
}
