/**
 * The health answers of the `monitoring` extension: JSON at each `health_checks` path naming the
 * server itself and every reverse-proxy pool (up while one of its backends is up); 200 when all
 * are up, 503 otherwise. Checks denoserve does not have are listed as "unknown", not as down.
 *
 * @module
 */
import { KNOWN_HEALTH_CHECKS } from "../config/schema.ts";
import type { RequestContext, Route } from "../http/types.ts";
import { backendUp } from "../proxy/pool.ts";
import type { RulePool } from "../proxy/proxy.ts";

/** One `health_checks` entry. */
export interface HealthPath {
  path: string;
  checks: readonly string[];
}

type Status = "up" | "down" | "unknown";

/** The JSON body of a health answer. */
export interface HealthReport {
  status: "up" | "down";
  checks: Record<string, { status: Status; backends?: Record<string, "up" | "down"> }>;
}

/** What `pools` say now, with `extra` check names added as "unknown" when denoserve lacks them. */
export function healthReport(
  pools: readonly RulePool[],
  extra: readonly string[],
  now = Date.now(),
): HealthReport {
  const checks: HealthReport["checks"] = { server: { status: "up" } };
  for (const { index, path, pool } of pools) {
    const backends: Record<string, "up" | "down"> = {};
    let any = false;
    for (const b of pool.backends) {
      const up = backendUp(b, now);
      any ||= up;
      backends[b.address.origin] = up ? "up" : "down";
    }
    checks[`reverse_proxy[${index}] ${path}`] = { status: any ? "up" : "down", backends };
  }
  for (const name of extra) {
    if (!KNOWN_HEALTH_CHECKS.includes(name)) checks[name] = { status: "unknown" };
  }
  const down = Object.values(checks).some((c) => c.status === "down");
  return { status: down ? "down" : "up", checks };
}

/** The route answering every path of `paths` with {@link healthReport} over `pools()`. */
export function createHealthRoute(
  paths: readonly HealthPath[],
  pools: () => readonly RulePool[],
): Route<HealthPath> | undefined {
  if (paths.length === 0) return undefined;
  const byPath = new Map(paths.map((p) => [p.path, p]));
  return {
    name: "health",
    match: (ctx: RequestContext) => byPath.get(ctx.path),
    handle(request, _ctx, entry) {
      if (request.method !== "GET" && request.method !== "HEAD") {
        return new Response(null, { status: 405, headers: { allow: "GET, HEAD" } });
      }
      const report = healthReport(pools(), entry.checks);
      return new Response(request.method === "HEAD" ? null : JSON.stringify(report), {
        status: report.status === "up" ? 200 : 503,
        headers: { "content-type": "application/json", "cache-control": "no-store" },
      });
    },
  };
}
