/**
 * `lb: uri_hash`: the request's path and query pick the backend (Caddy's `uri_hash`, nginx's
 * `hash $request_uri`), so that each URL is served by the same backend and its caches.
 *
 * @module
 */
import { byHash, hashKey } from "./hash.ts";
import type { BalancingPolicy } from "./policy.ts";

/** Picks by the hash of the URI among the backends that are up. */
export function uriHash(): BalancingPolicy {
  return { pick: (backends, _request, ctx) => byHash(backends, hashKey(ctx.path + ctx.query)) };
}
