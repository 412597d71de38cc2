/**
 * `security_headers` from the `security` extension: fixed headers on every answer.
 *
 * @module
 */
import type { SecurityHeaders } from "../config/schema.ts";
import { FIXED_HEADERS, marksOf, setHeaders } from "../http/headers.ts";
import type { Handler, Wrapper } from "../http/types.ts";

/** The headers `config` adds, lower-cased; none when it is off. */
export function securityHeaderPairs(config: SecurityHeaders | undefined): [string, string][] {
  if (!config?.enabled) return [];
  return Object.entries(config.headers).map(([k, v]) => [k.toLowerCase(), v]);
}

/**
 * Wraps `next` so that every answer (errors, redirects and proxied answers included) carries
 * `pairs` ({@link securityHeaderPairs}); the identity when there are none. A header the answer
 * already has is kept: a backend or a location that sets its own `Content-Security-Policy` knows
 * its page better than a site-wide default does. A WebSocket's 101 is left alone. The file
 * server's cached answers carry them already (the same pairs are handed to it), so that adding
 * them finds them there.
 */
export function withSecurityHeaders(pairs: readonly (readonly [string, string])[]): Wrapper {
  return (next: Handler): Handler => {
    if (pairs.length === 0) return next;
    const add = (response: Response): Response => {
      if (response.status === 101 || (marksOf(response) & FIXED_HEADERS) !== 0) {
        return response;
      }
      const headers = response.headers;
      try {
        // A name found missing is appended: set would search the list for it a second time.
        for (const [name, value] of pairs) if (!headers.has(name)) headers.append(name, value);
        return response;
      } catch (e) {
        if (!(e instanceof TypeError)) throw e; // immutable headers (a fetch answer): a copy
        return setHeaders(response, pairs.filter(([name]) => !headers.has(name)));
      }
    };
    return (request, ctx) => {
      const response = next(request, ctx);
      return response instanceof Promise ? response.then(add) : add(response);
    };
  };
}
