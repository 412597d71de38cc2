/**
 * `rate_limiting` from the `security` extension: a token bucket per client address (and per
 * rule), in this process's memory; over the limit is 429.
 *
 * @module
 */
import type { RateLimiting } from "../config/schema.ts";
import { ipKey } from "../http/ip.ts";
import type { ErrorResponder, Handler, Wrapper } from "../http/types.ts";
import { underPrefix } from "../http/types.ts";
import type { ClientAddress } from "./client_address.ts";
import { type BucketLimit, TokenBuckets } from "./token_bucket.ts";

/** Options of {@link withRateLimit}. */
export interface RateLimitOptions {
  client: ClientAddress;
  errorResponse: ErrorResponder;
  /** Milliseconds, for tests. @default performance.now */
  now?: () => number;
}

/**
 * Wraps `next` so that each client may send `burst` requests at once and `requests_per_minute`
 * on average; a path under one of `rules` (longest prefix first) counts against that rule's own
 * bucket instead. Over the limit the answer is 429 from the error pages with `Retry-After`
 * (seconds until the next request is allowed) and the IETF draft's `RateLimit-Limit` (the
 * burst), `RateLimit-Remaining` (0) and `RateLimit-Reset` (seconds until the bucket is full).
 */
export function withRateLimit(config: RateLimiting, options: RateLimitOptions): Wrapper {
  return (next: Handler): Handler => {
    if (!config.enabled) return next;
    const rules = Object.entries(config.rules)
      .map(([prefix, r]) => ({
        prefix,
        limit: { perMinute: r.requests_per_minute, burst: r.burst } as BucketLimit,
      }))
      .sort((a, b) => b.prefix.length - a.prefix.length);
    const site: BucketLimit = { perMinute: config.requests_per_minute, burst: config.burst };
    const buckets = new TokenBuckets(config.max_clients, options.now);
    const { client, errorResponse } = options;
    return (request, ctx) => {
      const ip = client(request, ctx);
      const address = ip ? ipKey(ip) : "?";
      const rule = rules.find((r) => underPrefix(ctx.path, r.prefix));
      const limit = rule?.limit ?? site;
      const taken = buckets.take(rule ? `${rule.prefix} ${address}` : address, limit);
      if (taken.allowed) return next(request, ctx);
      const retry = String(Math.max(1, Math.ceil(taken.retryAfterMs / 1000)));
      return errorResponse(429, request, {
        "retry-after": retry,
        "ratelimit-limit": String(limit.burst),
        "ratelimit-remaining": String(taken.remaining),
        "ratelimit-reset": String(Math.max(1, Math.ceil(taken.resetMs / 1000))),
      });
    };
  };
}
