/**
 * One Redis connection of a route table, for the caching extension and `rate_limiting` with
 * `backend: redis`. The client library is imported only when such a backend is configured.
 *
 * Every call is bounded: when Redis is down or slow, {@link RedisLink.run} gives `undefined`
 * after at most {@link CALL_TIMEOUT_MS} and the caller goes on without Redis (fail open). A
 * warning is logged at most once a minute; the client reconnects by itself.
 *
 * @module
 */
import type { RedisClientType } from "@redis/client";

/** Milliseconds one Redis call may take before the request goes on without it. */
export const CALL_TIMEOUT_MS = 150;
/** After a call timed out, calls are skipped this long (a stalled server costs no latency). */
const PAUSE_AFTER_TIMEOUT_MS = 1000;
/** At most one warning per this many milliseconds. */
const WARN_EVERY_MS = 60_000;

/** The client type the callers see. */
export type RedisClient = RedisClientType;

/** A lazily connected Redis client with bounded calls. */
export interface RedisLink {
  readonly url: string;
  /** `f` on the client, or `undefined` when Redis is not there or does not answer in time. */
  run<T>(f: (client: RedisClient) => Promise<T>): Promise<T | undefined>;
  /** Resolves once the client is connected (for tests and the first requests). */
  readonly ready: Promise<void>;
  close(): void;
}

/** Options of {@link redisLink}. */
export interface RedisLinkOptions {
  warn: (message: string) => void;
  /** Told each time the client is connected (the first time and after each reconnect). */
  info?: (message: string) => void;
  /** Milliseconds since the epoch, for tests. @default Date.now */
  now?: () => number;
}

/** The URL without its password, for messages. */
function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.href;
  } catch {
    return url;
  }
}

/** A link to the Redis server at `url` (connecting starts now, in the background). */
export function redisLink(url: string, options: RedisLinkOptions): RedisLink {
  const now = options.now ?? Date.now;
  let lastWarn = -Infinity;
  let pausedUntil = 0;
  let closed = false;
  let client: RedisClient | undefined;
  const warn = (what: string) => {
    const t = now();
    if (t - lastWarn < WARN_EVERY_MS) return;
    lastWarn = t;
    options.warn(
      `redis ${shownUrl(url)}: ${what}; going on without it (cache misses, limits allow)`,
    );
  };
  const ready = Promise.withResolvers<void>();
  ready.promise.catch(() => {});
  let firstDone = false;
  const loading = import("@redis/client").then(({ createClient }) => {
    if (closed) return undefined;
    const c = createClient({
      url,
      // Commands fail at once while disconnected instead of queueing behind the reconnect.
      disableOfflineQueue: true,
      socket: {
        connectTimeout: 1000,
        reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 1000),
      },
    }) as unknown as RedisClient;
    c.on("error", (e: Error) => warn(e.message || String(e)));
    c.on("ready", () => {
      ready.resolve();
      options.info?.(`redis ${shownUrl(url)}: connected`);
    });
    c.connect().catch((e: Error) => warn(e.message || String(e)));
    client = c;
    return c;
  });
  loading.catch((e) => warn(`client not loaded: ${(e as Error).message}`));

  const run = async <T>(f: (client: RedisClient) => Promise<T>): Promise<T | undefined> => {
    if (closed || now() < pausedUntil) return undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), CALL_TIMEOUT_MS);
    });
    try {
      const c = client ?? await Promise.race([loading, timeout]);
      if (c === "timeout" || c === undefined) return undefined;
      // The first requests wait (bounded) for the first connection; later ones never do.
      if (!firstDone) {
        const r = await Promise.race([ready.promise, timeout]);
        firstDone = true;
        if (r === "timeout") return undefined;
      }
      if (!c.isReady) return undefined;
      const call = f(c);
      call.catch(() => {});
      const result = await Promise.race([call, timeout]);
      if (result === "timeout") {
        pausedUntil = now() + PAUSE_AFTER_TIMEOUT_MS;
        warn(`no answer in ${CALL_TIMEOUT_MS} ms`);
        return undefined;
      }
      return result as T;
    } catch (e) {
      warn((e as Error).message || String(e));
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  };

  return {
    url,
    run,
    ready: ready.promise,
    close() {
      closed = true;
      if (client) client.destroy();
      else loading.then((c) => c?.destroy(), () => {});
    },
  };
}
