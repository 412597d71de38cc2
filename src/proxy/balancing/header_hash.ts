/**
 * `lb: header`: the value of the request header `lb_header` picks the backend (Caddy's `header`
 * policy); a request without the header goes round-robin.
 *
 * @module
 */
import { byHash, hashKey } from "./hash.ts";
import type { BalancingPolicy } from "./policy.ts";
import { roundRobin } from "./round_robin.ts";

/** Picks by the hash of header `name`'s value, round-robin without it. */
export function headerHash(name: string): BalancingPolicy {
  const header = name.toLowerCase();
  const fallback = roundRobin();
  return {
    pick(backends, request, ctx) {
      const value = request.headers.get(header);
      return value === null
        ? fallback.pick(backends, request, ctx)
        : byHash(backends, hashKey(value));
    },
  };
}
