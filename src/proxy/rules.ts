/**
 * Proxy rules as the request path sees them: compiled once per configuration, matched by
 * longest prefix on segment boundaries.
 *
 * @module
 */
import type { ProxyRule } from "../config/schema.ts";

/** One backend address. */
export interface BackendAddress {
  host: string;
  port: number;
  /** `http://host:port` or `https://host:port`, without a trailing slash. */
  origin: string;
  /** `host:port` as a Host header names it (the port left out when it is the default). */
  authority: string;
  /** Origins the backend may use in `Location` (with and without a default port). */
  locationOrigins: string[];
}

/** A rule after defaults and normalisation, ready for the request path. */
export interface CompiledRule {
  /** Index in `server.reverse_proxy`, for messages (`server.reverse_proxy[2]`). */
  index: number;
  /** Public prefix without a trailing slash ("" for "/"). */
  prefix: string;
  /** The rule as configured. */
  rule: ProxyRule;
  backends: BackendAddress[];
  /** Milliseconds. */
  connectTimeoutMs: number;
  responseTimeoutMs: number;
  failTimeoutMs: number;
  healthIntervalMs: number;
  tryDurationMs: number;
  tryIntervalMs: number;
}

const stripBrackets = (host: string) =>
  host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
const bracket = (host: string) => host.includes(":") ? `[${host}]` : host;

/** Parses `host:port` from `upstreams` (the schema has checked its form). */
export function parseHostPort(text: string): { host: string; port: number } {
  const colon = text.lastIndexOf(":");
  return { host: stripBrackets(text.slice(0, colon)), port: Number(text.slice(colon + 1)) };
}

function backendAddress(host: string, port: number, ssl: boolean): BackendAddress {
  const h = bracket(stripBrackets(host));
  const scheme = ssl ? "https" : "http";
  const origin = `${scheme}://${h}:${port}`;
  const locationOrigins = [origin];
  if (port === (ssl ? 443 : 80)) locationOrigins.push(`${scheme}://${h}`);
  return {
    host: stripBrackets(host),
    port,
    origin,
    authority: port === (ssl ? 443 : 80) ? h : `${h}:${port}`,
    locationOrigins,
  };
}

/** Applies defaults and turns seconds into milliseconds. */
export function compileRule(rule: ProxyRule, index: number): CompiledRule {
  const addresses = rule.upstreams?.map(parseHostPort) ?? [{ host: rule.host, port: rule.port }];
  return {
    index,
    prefix: rule.path.replace(/\/+$/, ""),
    rule,
    backends: addresses.map((a) => backendAddress(a.host, a.port, rule.ssl)),
    connectTimeoutMs: rule.connect_timeout * 1000,
    responseTimeoutMs: rule.response_timeout * 1000,
    failTimeoutMs: rule.fail_timeout * 1000,
    healthIntervalMs: rule.health_interval * 1000,
    tryDurationMs: rule.try_duration * 1000,
    tryIntervalMs: rule.try_interval * 1000,
  };
}

/**
 * Returns a matcher over `prefixes` (without trailing slashes, "" for the root) that answers the
 * index of the longest prefix `path` lies on or below, on a segment boundary, or -1.
 *
 * ```ts
 * const match = compileMatcher(["/api", ""]);
 * match("/api/x"); // 0
 * match("/apix"); // 1
 * ```
 */
export function compileMatcher(prefixes: readonly string[]): (path: string) => number {
  const order = prefixes.map((p, i) => ({ p, i })).sort((a, b) => b.p.length - a.p.length);
  const sorted = order.map((o) => o.p);
  const index = order.map((o) => o.i);
  const n = sorted.length;
  return (path) => {
    for (let k = 0; k < n; k++) {
      const p = sorted[k];
      if (p.length === 0) return index[k];
      if (
        path.startsWith(p) && (path.length === p.length || path.charCodeAt(p.length) === 47)
      ) return index[k];
    }
    return -1;
  };
}

/** The path the backend sees: the public path without the prefix when `strip_prefix` is on. */
export function backendPath(rule: CompiledRule, path: string): string {
  if (!rule.rule.strip_prefix || rule.prefix.length === 0) return path;
  return path.length === rule.prefix.length ? "/" : path.slice(rule.prefix.length);
}
