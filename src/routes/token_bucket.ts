/**
 * Token buckets keyed by client, in memory, with a bounded number of buckets.
 *
 * @module
 */

/** How fast a bucket fills and how much it holds. */
export interface BucketLimit {
  /** Tokens added per minute. */
  perMinute: number;
  /** The most tokens a bucket holds: requests that may come at once. */
  burst: number;
}

/** What one {@link TokenBuckets.take} found. */
export interface Taken {
  allowed: boolean;
  /** Whole tokens left after this request. */
  remaining: number;
  /** Milliseconds until the next token (0 when one is there). */
  retryAfterMs: number;
  /** Milliseconds until the bucket is full again. */
  resetMs: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * A bucket per key. A bucket that is full again says nothing a fresh one would not, so buckets
 * are dropped least recently used first when there are `maxBuckets`: the memory stays bounded
 * however many addresses send requests, and an evicted client only gets a full bucket back.
 */
export class TokenBuckets {
  readonly #buckets = new Map<string, Bucket>();
  readonly #max: number;
  readonly #now: () => number;

  /** `now` gives milliseconds (an injected clock in tests). */
  constructor(maxBuckets: number, now: () => number = () => performance.now()) {
    this.#max = maxBuckets;
    this.#now = now;
  }

  /** Buckets held now. */
  get size(): number {
    return this.#buckets.size;
  }

  /** Takes one token from `key`'s bucket when there is one. */
  take(key: string, limit: BucketLimit): Taken {
    const now = this.#now();
    const perMs = limit.perMinute / 60_000;
    const old = this.#buckets.get(key);
    let tokens = limit.burst;
    if (old) {
      tokens = Math.min(limit.burst, old.tokens + Math.max(0, now - old.at) * perMs);
      // Re-inserted to keep the map in least-recently-used order.
      this.#buckets.delete(key);
    } else if (this.#buckets.size >= this.#max) {
      this.#evict(now, perMs, limit.burst);
    }
    const allowed = tokens >= 1;
    if (allowed) tokens -= 1;
    if (old) {
      old.tokens = tokens;
      old.at = now;
      this.#buckets.set(key, old);
    } else this.#buckets.set(key, { tokens, at: now });
    return {
      allowed,
      remaining: Math.floor(tokens),
      retryAfterMs: tokens >= 1 ? 0 : (1 - tokens) / perMs,
      resetMs: (limit.burst - tokens) / perMs,
    };
  }

  /** Drops the least recently used bucket, and the next few when they are full again. */
  #evict(now: number, perMs: number, burst: number) {
    let checked = 0;
    for (const [key, bucket] of this.#buckets) {
      const full = bucket.tokens + (now - bucket.at) * perMs >= burst;
      if (checked > 0 && !full) break;
      this.#buckets.delete(key);
      if (++checked >= 8) break;
    }
  }
}

/** Prefix of the buckets' keys in Redis. */
export const REDIS_RATE_PREFIX = "denoserve:ratelimit:";

/**
 * The token bucket of {@link TokenBuckets.take} as one Lua script, so that a take is atomic and
 * one round trip whichever process sends it. The clock is the Redis server's (`TIME`), so the
 * processes' clocks need not agree. A bucket is a hash of tokens and time, expiring when it is
 * full again (a full bucket says nothing a missing one would not).
 */
export const TAKE_SCRIPT = `
local burst = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 't', 'a')
local tokens = burst
if b[1] then
  tokens = math.min(burst, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * per_ms)
end
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'a', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / per_ms) + 1000)
return {allowed, tostring(tokens)}
`;

/** What the script's answer says, in the form of {@link TokenBuckets.take}. */
export function takenFrom(allowed: boolean, tokens: number, limit: BucketLimit): Taken {
  const perMs = limit.perMinute / 60_000;
  return {
    allowed,
    remaining: Math.floor(tokens),
    retryAfterMs: tokens >= 1 ? 0 : (1 - tokens) / perMs,
    resetMs: (limit.burst - tokens) / perMs,
  };
}
