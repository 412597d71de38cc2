/**
 * `rate_limiting` from the `security` extension: a token bucket per client address (and per
 * rule), in this process's memory; over the limit is 429.
 *
 * @module
 */
import type { RateLimiting } from "../config/schema.ts";
import type { ErrorResponder, Handler, RequestContext, Wrapper } from "../http/types.ts";
import { underPrefix } from "../http/types.ts";
import type { ClientKey } from "./client_address.ts";
import type { RedisLink } from "../redis/link.ts";
import {
  type BucketLimit,
  REDIS_RATE_PREFIX,
  TAKE_SCRIPT,
  type Taken,
  takenFrom,
  TokenBuckets,
} from "./token_bucket.ts";

/** SHA-1 of {@link TAKE_SCRIPT}, for EVALSHA. */
let scriptSha: Promise<string> | undefined;
function takeSha(): Promise<string> {
  scriptSha ??= crypto.subtle.digest("SHA-1", new TextEncoder().encode(TAKE_SCRIPT)).then((d) =>
    Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("")
  );
  return scriptSha;
}

/**
 * Takes a token from the bucket of `key` in Redis: EVALSHA, or EVAL when the server does not
 * know the script yet (after a restart). Redis down or slow: allowed (fail open).
 */
async function takeShared(link: RedisLink, key: string, limit: BucketLimit): Promise<Taken> {
  const sha = await takeSha();
  const args = {
    keys: [REDIS_RATE_PREFIX + key],
    arguments: [String(limit.burst), String(limit.perMinute / 60_000)],
  };
  const reply = await link.run(async (c) => {
    try {
      return await c.evalSha(sha, args);
    } catch (e) {
      if (!String((e as Error).message).includes("NOSCRIPT")) throw e;
      return await c.eval(TAKE_SCRIPT, args);
    }
  });
  if (!Array.isArray(reply)) return takenFrom(true, limit.burst, limit);
  return takenFrom(Number(reply[0]) === 1, Number(reply[1]), limit);
}

/** Options of {@link withRateLimit}. */
export interface RateLimitOptions {
  /** The client's key: its address, canonical (see {@link clientKey}). */
  key: ClientKey;
  errorResponse: ErrorResponder;
  /** Milliseconds, for tests. @default performance.now */
  now?: () => number;
  /** With `backend: redis`: the link to its server. */
  redis?: RedisLink;
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
    const { key: keyOf, errorResponse } = options;
    const shared = config.backend === "redis" ? options.redis : undefined;
    const answer = (request: Request, ctx: RequestContext, limit: BucketLimit, taken: Taken) => {
      if (taken.allowed) return next(request, ctx);
      const retry = String(Math.max(1, Math.ceil(taken.retryAfterMs / 1000)));
      return errorResponse(429, request, {
        "retry-after": retry,
        "ratelimit-limit": String(limit.burst),
        "ratelimit-remaining": String(taken.remaining),
        "ratelimit-reset": String(Math.max(1, Math.ceil(taken.resetMs / 1000))),
      });
    };
    return (request, ctx) => {
      const address = keyOf(request, ctx);
      const rule = rules.find((r) => underPrefix(ctx.path, r.prefix));
      const limit = rule?.limit ?? site;
      const key = rule ? `${rule.prefix} ${address}` : address;
      if (shared) {
        return takeShared(shared, key, limit).then((t) => answer(request, ctx, limit, t));
      }
      return answer(request, ctx, limit, buckets.take(key, limit));
    };
  };
}
