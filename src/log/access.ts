/**
 * Access lines (common, combined, JSON), request ids, and the clock strings they use.
 *
 * Dates are formatted once per second and reused, so an access line costs string
 * concatenation, not a `Date` formatting call.
 *
 * @module
 */

/** One finished request, as the access log sees it. */
export interface AccessRecord {
  method: string;
  /** Path and query, as requested. */
  path: string;
  status: number;
  /** Body size from Content-Length; null when the body is streamed without one. */
  bytes: number | null;
  /** Milliseconds from receiving the request to having the response headers. */
  durationMs: number;
  clientIp: string;
  /** The request's id (see {@link requestIdFor}). */
  requestId?: string;
  /** `HTTP/3`, `HTTP/2`, or undefined where the server does not learn the version. */
  protocol?: string;
  /** With `sites`: the site that answered (its first name, or `default`). */
  site?: string;
  /** The request's headers; User-Agent and Referer are read only when a format needs them. */
  headers?: Headers;
}

/** `logging.access_format`. */
export type AccessFormat = "common" | "combined" | "json";

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const pad2 = (n: number) => n < 10 ? `0${n}` : `${n}`;
const pad3 = (n: number) => n < 10 ? `00${n}` : n < 100 ? `0${n}` : `${n}`;

let cachedSecond = -1;
let isoSecond = "";
let clfSecond = "";

function refresh(now: number): void {
  const second = Math.floor(now / 1000);
  if (second === cachedSecond) return;
  cachedSecond = second;
  const d = new Date(second * 1000);
  isoSecond = d.toISOString().slice(0, 19);
  clfSecond = `${pad2(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${
    pad2(d.getUTCHours())
  }:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())} +0000`;
}

/** ISO-8601 UTC time with milliseconds, e.g. `2026-11-28T16:25:28.042Z`. */
export function isoTime(now: number = Date.now()): string {
  refresh(now);
  return `${isoSecond}.${pad3(now % 1000)}Z`;
}

/** Common Log Format time, e.g. `28/Nov/2026:16:25:28 +0000`. */
export function clfTime(now: number = Date.now()): string {
  refresh(now);
  return clfSecond;
}

// Control characters are exactly what must not reach a log line unescaped.
// deno-lint-ignore no-control-regex
const UNSAFE = /["\\\x00-\x1f\x7f]/;
// deno-lint-ignore no-control-regex
const UNSAFE_ALL = /["\\\x00-\x1f\x7f]/g;

/** Escapes quotes, backslashes and control characters as `\xHH`, as nginx does. */
export function escapeField(value: string): string {
  return UNSAFE.test(value)
    ? value.replace(UNSAFE_ALL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`)
    : value;
}

const orDash = (v: string | null | undefined) => v ? escapeField(v) : "-";

/**
 * `client - - [time] "METHOD path PROTOCOL" status bytes`, then for `combined`
 * `"referer" "user-agent"`, then `id=REQUEST_ID`, `site=NAME` (with `sites`) and `ms=DURATION`. The protocol is there where the
 * connection tells it (HTTP/3, HTTP/2); for HTTP/1.x the server does not learn the version, and
 * the request field is `"METHOD path"`.
 */
export function formatCommon(r: AccessRecord, combined: boolean, now = Date.now()): string {
  let line = `${r.clientIp} - - [${clfTime(now)}] "${r.method} ${escapeField(r.path)}${
    r.protocol ? ` ${r.protocol}` : ""
  }" ${r.status} ${r.bytes ?? "-"}`;
  if (combined) {
    line += ` "${orDash(r.headers?.get("referer"))}" "${orDash(r.headers?.get("user-agent"))}"`;
  }
  if (r.requestId) line += ` id=${r.requestId}`;
  if (r.site) line += ` site=${escapeField(r.site)}`;
  return `${line} ms=${r.durationMs.toFixed(1)}\n`;
}

/** One JSON object: timestamp, level, message, and the request's fields. */
export function formatJson(r: AccessRecord, now = Date.now()): string {
  return JSON.stringify({
    timestamp: isoTime(now),
    level: "INFO",
    message: `${r.method} ${r.path} ${r.status}`,
    method: r.method,
    path: r.path,
    status: r.status,
    bytes: r.bytes,
    duration_ms: Math.round(r.durationMs * 1000) / 1000,
    client_ip: r.clientIp,
    user_agent: r.headers?.get("user-agent") ?? null,
    referer: r.headers?.get("referer") ?? null,
    request_id: r.requestId ?? null,
    protocol: r.protocol ?? null,
    ...(r.site ? { site: r.site } : {}),
  }) + "\n";
}

/** Longest request id accepted from a client. */
export const MAX_REQUEST_ID = 128;
const SAFE_ID = /^[A-Za-z0-9._~:@+=\/-]{1,128}$/;
const ID_PREFIX = crypto.randomUUID().slice(0, 8);
let idCounter = 0;

/**
 * The request's id: the client's `X-Request-Id` when it is 1–128 characters of letters, digits
 * and `._~:@+=/-`; otherwise a new one, unique in this process and unlikely to repeat across
 * restarts (a random prefix and a counter).
 */
export function requestIdFor(header: string | null): string {
  if (header !== null && SAFE_ID.test(header)) return header;
  return `${ID_PREFIX}-${(++idCounter).toString(36)}`;
}
