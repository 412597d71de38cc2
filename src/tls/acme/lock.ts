/**
 * The order lock in Redis: one instance orders a certificate at a time. `SET key token NX PX`
 * takes it with an expiry, so a holder that crashes frees it by itself; the holder renews it
 * every third of the expiry while it works, and gives it up with a compare-and-delete, so it
 * never deletes a lock that expired and was taken by another instance meanwhile.
 *
 * @module
 */
import type { Logger } from "../../log/logger.ts";
import type { RedisLink } from "../../redis/link.ts";
import type { StorageLock } from "./storage.ts";

/** Deletes the lock only if it still holds our token. */
export const RELEASE_SCRIPT =
  `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) end return 0`;
/** Extends the lock only if it still holds our token. */
export const RENEW_SCRIPT =
  `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) end return 0`;

/** Options of {@link tryRedisLock}. */
export interface RedisLockOptions {
  link: RedisLink;
  key: string;
  /** Expiry of the lock, in ms; it is renewed every third of it. */
  ttlMs: number;
  log: Logger;
}

/** Takes the lock at `key`, or resolves to undefined when another instance holds it. */
export async function tryRedisLock(options: RedisLockOptions): Promise<StorageLock | undefined> {
  const { link, key, ttlMs, log } = options;
  const token = crypto.randomUUID();
  const taken = await link.call((c) =>
    c.set(key, token, { condition: "NX", expiration: { type: "PX", value: ttlMs } })
  );
  if (taken !== "OK") return undefined;
  let held = true;
  let renewing: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    renewing = link.call((c) =>
      c.eval(RENEW_SCRIPT, { keys: [key], arguments: [token, String(ttlMs)] })
    ).then((renewed) => {
      if (Number(renewed) === 1 || !held) return;
      held = false;
      clearInterval(timer);
      log.warn(`acme: the order lock ${key} expired while held; another instance may order too`);
    }, (e) => {
      // Redis away for a moment: the next renewal tries again; the expiry frees it if we are gone.
      log.debug(`acme: cannot renew the order lock ${key}: ${(e as Error).message}`);
    });
  }, Math.max(50, Math.floor(ttlMs / 3)));
  return {
    get held() {
      return held;
    },
    async release() {
      clearInterval(timer);
      await renewing;
      if (!held) return;
      held = false;
      await link.call((c) => c.eval(RELEASE_SCRIPT, { keys: [key], arguments: [token] }))
        .catch((e) => {
          log.debug(`acme: cannot release the order lock ${key} (it expires by itself): ${e}`);
        });
    },
  };
}
