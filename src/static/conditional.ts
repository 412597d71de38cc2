/**
 * Conditional and range request rules (RFC 9110 §13 and §14), as pure functions.
 *
 * @module
 */

/**
 * Whether an If-Match / If-None-Match list matches `etag`. `strong` comparison (If-Match)
 * never matches a weak tag; weak comparison (If-None-Match) ignores the `W/` prefix.
 */
export function etagMatches(header: string, etag: string, strong: boolean): boolean {
  const value = header.trim();
  if (value === "*") return true;
  const own = etag.startsWith("W/") ? etag.slice(2) : etag;
  if (strong && etag.startsWith("W/")) return false;
  for (const part of value.split(",")) {
    let tag = part.trim();
    if (tag.startsWith("W/")) {
      if (strong) continue;
      tag = tag.slice(2);
    }
    if (tag === own) return true;
  }
  return false;
}

/** Whether a file modified at `mtimeMs` is unchanged since the HTTP date `header`. */
export function notModifiedSince(header: string, mtimeMs: number): boolean {
  const since = Date.parse(header);
  return !Number.isNaN(since) && Math.floor(mtimeMs / 1000) * 1000 <= since;
}

/**
 * The inclusive byte range a `Range` header asks of a body of `size` bytes: `null` when the
 * header is not one single byte range we honour (answer the whole body), `"unsatisfiable"` for
 * a range that starts past the end (answer 416).
 */
export function byteRange(header: string, size: number): [number, number] | null | "unsatisfiable" {
  const m = /^bytes=\s*(\d*)\s*-\s*(\d*)\s*$/.exec(header);
  if (!m || (m[1] === "" && m[2] === "")) return null;
  if (size === 0) return "unsatisfiable";
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0) return "unsatisfiable";
    return [Math.max(0, size - suffix), size - 1];
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== "" && Number(m[2]) < start) return null;
  if (start >= size) return "unsatisfiable";
  return [start, end];
}
