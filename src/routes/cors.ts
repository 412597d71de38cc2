/**
 * CORS from the `security` extension's `cors:` block: preflights are answered with 204, other
 * answers get `Access-Control-Allow-Origin` when the origin is allowed.
 *
 * @module
 */
import type { Cors } from "../config/schema.ts";
import { setHeaders } from "../http/headers.ts";
import type { Handler } from "../http/types.ts";

/**
 * Wraps `next` so that its answers carry CORS headers, and answers preflight requests itself
 * (before authentication, since browsers send preflights without credentials).
 *
 * With `origins: ["*"]` and no credentials every answer gets `Access-Control-Allow-Origin: *`;
 * otherwise an allowed origin is echoed and every answer says `Vary: Origin`, because it then
 * depends on the request's Origin.
 */
export function withCors(cors: Cors, next: Handler): Handler {
  if (!cors.enabled) return next;
  const anyOrigin = cors.origins.includes("*");
  const allowed = new Set(cors.origins);
  const echo = !anyOrigin || cors.credentials;
  const anyHeader = cors.headers.includes("*");
  const methods = cors.methods.join(", ");
  const headers = cors.headers.filter((h) => h !== "*").join(", ");

  const common: [string, string][] = [];
  if (cors.credentials) common.push(["access-control-allow-credentials", "true"]);
  const simple: [string, string][] = [...common];
  if (cors.expose_headers.length) {
    simple.push(["access-control-expose-headers", cors.expose_headers.join(", ")]);
  }
  const constant: [string, string][] = [["access-control-allow-origin", "*"], ...simple];
  const vary: [string, string][] = [["vary", "Origin"]];

  const originOk = (origin: string) => anyOrigin || allowed.has(origin);

  const preflight = (request: Request, origin: string): Response => {
    const h = new Headers();
    h.set("vary", "Origin, Access-Control-Request-Headers");
    if (originOk(origin)) {
      h.set("access-control-allow-origin", echo ? origin : "*");
      for (const [k, v] of common) h.set(k, v);
      h.set("access-control-allow-methods", methods);
      const asked = request.headers.get("access-control-request-headers");
      if (anyHeader && asked) {
        // "*" is literal when credentials are allowed, so name the requested headers instead.
        h.set("access-control-allow-headers", cors.credentials ? asked : "*");
      } else if (headers) {
        h.set("access-control-allow-headers", headers);
      }
      if (cors.max_age !== undefined) h.set("access-control-max-age", String(cors.max_age));
    }
    return new Response(null, { status: 204, headers: h });
  };

  const decorate = (origin: string | null) => (response: Response): Response => {
    if (!echo) return setHeaders(response, constant);
    if (origin === null || !originOk(origin)) return setHeaders(response, vary);
    return setHeaders(response, [["access-control-allow-origin", origin], ...simple, ...vary]);
  };

  return (request, ctx) => {
    const origin = request.headers.get("origin");
    if (
      origin !== null && request.method === "OPTIONS" &&
      request.headers.has("access-control-request-method")
    ) {
      return preflight(request, origin);
    }
    const response = next(request, ctx);
    const add = decorate(origin);
    return response instanceof Promise ? response.then(add) : add(response);
  };
}
