/**
 * `ip_filtering` from the `security` extension: addresses refused with 403 before any route.
 *
 * @module
 */
import type { IpFiltering } from "../config/schema.ts";
import { IpSet } from "../http/ip.ts";
import type { ErrorResponder, Handler, Wrapper } from "../http/types.ts";
import type { ClientAddress } from "./client_address.ts";

/**
 * Wraps `next` so that a client in `blacklist`, or outside a non-empty `whitelist`, is answered
 * with 403 from the error pages. The blacklist wins when an address is on both lists; a request
 * whose address cannot be read is refused when there is a whitelist.
 */
export function withIpFilter(
  filter: IpFiltering,
  client: ClientAddress,
  errorResponse: ErrorResponder,
): Wrapper {
  return (next: Handler): Handler => {
    if (!filter.enabled) return next;
    const allow = new IpSet(filter.whitelist);
    const deny = new IpSet(filter.blacklist);
    if (allow.size === 0 && deny.size === 0) return next;
    return (request, ctx) => {
      const ip = client(request, ctx);
      const refused = (deny.size > 0 && deny.has(ip)) || (allow.size > 0 && !allow.has(ip));
      return refused
        ? errorResponse(403, request, undefined, "Your address is not allowed to use this site.")
        : next(request, ctx);
    };
  };
}
