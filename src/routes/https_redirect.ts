/**
 * The answer of the plain-HTTP listeners (`ssl.redirect_http`, and ACME's on
 * `ssl.acme.http_port` for what is not a challenge): every request gets a 308 to the same path on
 * HTTPS. A route; the listeners are `server/`'s.
 *
 * @module
 */
import { splitUrl } from "../http/types.ts";

/** A Host header we can safely echo into a Location: a name or IP literal and an optional port. */
const HOST = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?$/;

/**
 * A handler answering every request with `308 Permanent Redirect` to
 * `https://<host from the request>[:httpsPort]<path><query>`; the port is left out when it is
 * 443. `fallbackHost` is used when the request has no usable Host header.
 */
export function redirectToHttps(
  httpsPort: number,
  fallbackHost: string,
): (request: Request) => Response {
  const port = httpsPort === 443 ? "" : `:${httpsPort}`;
  return (request) => {
    const { path, query } = splitUrl(request.url);
    const url = request.url;
    const m = HOST.exec(
      request.headers.get("host") ?? url.slice(url.indexOf("//") + 2, url.indexOf("/", 8)),
    );
    const location = `https://${m ? m[1] : fallbackHost}${port}${path}${query}`;
    return new Response(null, { status: 308, headers: { location } });
  };
}
