/**
 * The rules of the `caching` extension, as pure functions: what a shared cache may store
 * (RFC 9111 §3), for how long (§4.2), and when a stored answer satisfies a conditional request
 * (RFC 9110 §13).
 *
 * @module
 */
import { etagMatches, notModifiedSince } from "../static/conditional.ts";
import { TCHAR } from "../http/headers.ts";

/** One directive: a token, then `=` and a token or a quoted string, up to the next comma. */
const DIRECTIVE = String.raw`\s*([${TCHAR}]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,]*))?\s*(?:,|$)`;

/** `Cache-Control` directives by lower-case name; a directive without a value is `true`. */
export type Directives = Map<string, string | true>;

/** Parses a `Cache-Control` value (quoted values unquoted; the first of a repeated name wins). */
export function parseCacheControl(value: string | null): Directives {
  const out: Directives = new Map();
  if (!value) return out;
  const re = new RegExp(DIRECTIVE, "gy");
  let m: RegExpExecArray | null;
  while (re.lastIndex < value.length && (m = re.exec(value)) !== null) {
    const name = m[1].toLowerCase();
    if (out.has(name)) continue;
    const raw = m[2]?.trim();
    out.set(
      name,
      raw === undefined
        ? true
        : raw.startsWith('"')
        ? raw.slice(1, -1).replace(/\\(.)/g, "$1")
        : raw,
    );
  }
  return out;
}

/** A delta-seconds value of a directive, or undefined when absent or malformed. */
export function deltaSeconds(d: Directives, name: string): number | undefined {
  const v = d.get(name);
  if (typeof v !== "string" || !/^\d+$/.test(v)) return undefined;
  return Number(v);
}

/** Header names an answer's `Vary` lists, lower-cased; `["*"]` when it varies on anything. */
export function varyNames(value: string | null): string[] {
  if (!value) return [];
  const names = value.split(",").map((n) => n.trim().toLowerCase()).filter((n) => n !== "");
  return names.includes("*") ? ["*"] : [...new Set(names)].sort();
}

/** What the request asks of the cache. */
export interface RequestPolicy {
  /** Neither look up nor store (methods other than GET/HEAD, upgrades, ranges, `no-store`). */
  bypass: boolean;
  /** Go to the backend even when an entry is fresh (`no-cache`, `max-age=0`, `Pragma`). */
  revalidate: boolean;
}

/** How the cache treats `request`. */
export function requestPolicy(request: Request): RequestPolicy {
  const h = request.headers;
  if (request.method !== "GET" && request.method !== "HEAD") {
    return { bypass: true, revalidate: true };
  }
  if (h.has("upgrade") || h.has("range")) return { bypass: true, revalidate: true };
  const cc = parseCacheControl(h.get("cache-control"));
  if (cc.has("no-store")) return { bypass: true, revalidate: true };
  const revalidate = cc.has("no-cache") || deltaSeconds(cc, "max-age") === 0 ||
    (!h.has("cache-control") && /(^|,)\s*no-cache\s*(,|$)/i.test(h.get("pragma") ?? ""));
  return { bypass: false, revalidate };
}

/** Whether and how long an answer may be kept. */
export type StoreDecision =
  | { store: true; ttlSeconds: number; initialAge: number; vary: string[] }
  | { store: false; reason: string };

/**
 * Whether a shared cache may keep `response` to a GET from a client whose request had
 * `requestHeaders`, and its freshness lifetime: `s-maxage`, else `max-age`, else `fallbackTtl`
 * (the matching rule or `default_ttl`). Only 200 answers are kept; never with `no-store`,
 * `private`, `no-cache`, `Set-Cookie` or `Vary: *`; a request with `Authorization` only when
 * the answer says `public` or `s-maxage`.
 */
export function storeDecision(
  requestHeaders: Headers,
  response: { status: number; headers: Headers },
  fallbackTtl: number,
): StoreDecision {
  if (response.status !== 200) return { store: false, reason: `status ${response.status}` };
  const h = response.headers;
  const cc = parseCacheControl(h.get("cache-control"));
  for (const name of ["no-store", "private", "no-cache"]) {
    if (cc.has(name)) return { store: false, reason: name };
  }
  if (h.has("set-cookie")) return { store: false, reason: "set-cookie" };
  const vary = varyNames(h.get("vary"));
  if (vary[0] === "*") return { store: false, reason: "vary *" };
  if (requestHeaders.has("authorization") && !cc.has("public") && !cc.has("s-maxage")) {
    return { store: false, reason: "authorization" };
  }
  const ttlSeconds = deltaSeconds(cc, "s-maxage") ?? deltaSeconds(cc, "max-age") ?? fallbackTtl;
  const age = h.get("age");
  const initialAge = age !== null && /^\d+$/.test(age.trim()) ? Number(age.trim()) : 0;
  if (ttlSeconds <= initialAge) return { store: false, reason: "not fresh" };
  return { store: true, ttlSeconds, initialAge, vary };
}

/** The `Age` of an entry stored at `storedAtMs` with `initialAge`, at `nowMs` (whole seconds). */
export function currentAge(storedAtMs: number, initialAge: number, nowMs: number): number {
  return initialAge + Math.max(0, Math.floor((nowMs - storedAtMs) / 1000));
}

/** Whether an entry is still fresh: its lifetime is more than its current age. */
export function isFresh(
  entry: { storedAtMs: number; initialAge: number; ttlSeconds: number },
  nowMs: number,
): boolean {
  return (nowMs - entry.storedAtMs) / 1000 + entry.initialAge < entry.ttlSeconds;
}

/**
 * Whether a conditional GET/HEAD is answered 304 by a stored answer with `etag` and
 * `lastModified`: `If-None-Match` (weak comparison) when present, else `If-Modified-Since`.
 */
export function notModified(
  requestHeaders: Headers,
  etag: string | null,
  lastModified: string | null,
): boolean {
  const inm = requestHeaders.get("if-none-match");
  if (inm !== null) return etag !== null && etagMatches(inm, etag, false);
  const ims = requestHeaders.get("if-modified-since");
  if (ims === null || lastModified === null) return false;
  const modified = Date.parse(lastModified);
  return !Number.isNaN(modified) && notModifiedSince(ims, modified);
}
