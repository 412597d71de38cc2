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
 * What an answer is known to be, so that the wrappers it passes need not look at its headers to
 * tell: a sum of {@link FIXED_HEADERS} and {@link FILE_ANSWER}. An answer without marks is checked
 * header by header.
 */
export const MARKS: unique symbol = Symbol("marks");

/**
 * It carries a configuration's fixed headers already (the file server's cached answers carry the
 * `security_headers`): the wrapper adding them leaves it as it is.
 */
export const FIXED_HEADERS = 1;

/**
 * It is a file's answer from the file server, which keeps compressed forms of its own: the
 * compression wrapper leaves it as it is.
 */
export const FILE_ANSWER = 2;

/** An answer that may carry {@link MARKS}. */
export type MarkedResponse = Response & { [MARKS]?: number };

/** The marks of `response` (0 when it has none). */
export function marksOf(response: Response): number {
  return (response as MarkedResponse)[MARKS] ?? 0;
}

/**
 * A copy of a prebuilt answer with `marks`. Only when there are some: the extra property costs
 * about 0.3 µs per answer.
 */
export function cloneMarked(response: Response, marks: number): Response {
  const copy = response.clone() as MarkedResponse;
  if (marks !== 0) copy[MARKS] = marks;
  return copy;
}
