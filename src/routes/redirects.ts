/**
 * `server.redirect_instructions`: exact-path redirects, checked before anything else.
 *
 * @module
 */
import { type Config, redirectRule } from "../config/schema.ts";
import type { Route } from "../http/types.ts";

/** One redirect, ready to answer. */
interface Redirect {
  to: string;
  /** What joins the request's query to `to`: "?", or "&" when `to` has a query already. */
  joiner: string;
  status: number;
}

/**
 * The redirect route, or undefined when there are no rules. The query string of the request is
 * carried over to the target.
 *
 * @example
 * ```ts
 * createRedirectRoute([{ "/docs": "/docs.html" }]); // GET /docs?x=1 → 302 /docs.html?x=1
 * ```
 */
export function createRedirectRoute(
  rules: Config["server"]["redirect_instructions"],
): Route<Redirect> | undefined {
  if (rules.length === 0) return undefined;
  const table = new Map<string, Redirect>();
  for (const r of rules.map(redirectRule)) {
    if (table.has(r.from)) continue;
    const hash = r.to.indexOf("#");
    const base = hash < 0 ? r.to : r.to.slice(0, hash);
    table.set(r.from, { to: r.to, joiner: base.includes("?") ? "&" : "?", status: r.status });
  }
  return {
    name: "redirect",
    match: (ctx) => table.get(ctx.path),
    handle(_request, ctx, rule) {
      let location = rule.to;
      if (ctx.query.length > 1) {
        const hash = location.indexOf("#");
        const extra = rule.joiner + ctx.query.slice(1);
        location = hash < 0
          ? location + extra
          : location.slice(0, hash) + extra + location.slice(hash);
      }
      return new Response(null, { status: rule.status, headers: { location } });
    },
  };
}
