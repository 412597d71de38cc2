/**
 * `server.response_headers`: header rules (remove, set, add) on every answer of the server:
 * files, error pages, redirects and proxied answers alike, after each route's own headers and
 * the security headers, so that these win. A WebSocket's 101 is left alone.
 *
 * @module
 */
import type { HeaderRules as HeaderRulesConfig } from "../config/schema.ts";
import type { Handler, Wrapper } from "../http/types.ts";
import { compileHeaderRules } from "../proxy/header_rules.ts";

/** Wraps `next` with `config`'s rules; the identity when there are none. */
export function withResponseHeaders(config: HeaderRulesConfig | undefined): Wrapper {
  const rules = compileHeaderRules(config);
  return (next: Handler): Handler => {
    if (rules === undefined) return next;
    return (request, ctx) => {
      const apply = (response: Response): Response => {
        if (response.status === 101) return response;
        try {
          rules.applyTo(response.headers, request, ctx);
          return response;
        } catch (e) {
          if (!(e instanceof TypeError)) throw e; // immutable headers: a copy
          const copy = new Response(response.body, response);
          rules.applyTo(copy.headers, request, ctx);
          return copy;
        }
      };
      const response = next(request, ctx);
      return response instanceof Promise ? response.then(apply) : apply(response);
    };
  };
}
