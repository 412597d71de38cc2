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

const DAY = "(Mon|Tue|Wed|Thu|Fri|Sat|Sun)";
const MONTH = "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)";
const TIME = "\\d{2}:\\d{2}:\\d{2}";
/** The three forms of RFC 9110 §5.6.7: IMF-fixdate, RFC 850 and asctime. */
const HTTP_DATE = new RegExp(
  `^(${DAY}, \\d{2} ${MONTH} \\d{4} ${TIME} GMT|` +
    `(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), \\d{2}-${MONTH}-\\d{2} ${TIME} GMT|` +
    `${DAY} ${MONTH} [ \\d]\\d ${TIME} \\d{4})$`,
);

/**
 * The time an HTTP date stands for, or undefined when `text` is not one of its three forms:
 * such a value is ignored (RFC 9110 §13.1.3), never read as some other date (`0`, `2030`).
 */
export function httpDate(text: string): number | undefined {
  const trimmed = text.trim();
  if (!HTTP_DATE.test(trimmed)) return undefined;
  // asctime has no zone: it is UTC.
  const time = Date.parse(/GMT$/.test(trimmed) ? trimmed : `${trimmed} GMT`);
  return Number.isNaN(time) ? undefined : time;
}

/** Whether a file modified at `mtimeMs` is unchanged since the HTTP date `header`. */
export function notModifiedSince(header: string, mtimeMs: number): boolean {
  const since = httpDate(header);
  return since !== undefined && Math.floor(mtimeMs / 1000) * 1000 <= since;
}

/** Whether a file modified at `mtimeMs` changed after the HTTP date `header`; false if none. */
export function modifiedSince(header: string, mtimeMs: number): boolean {
  const since = httpDate(header);
  return since !== undefined && Math.floor(mtimeMs / 1000) * 1000 > since;
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
