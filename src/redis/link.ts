/**
 * A Redis connection: the one piece of code that creates `@redis/client` clients, reconnects
 * them and bounds their calls. The caching extension and `rate_limiting` with `backend: redis`
 * use it on the request path (fail open, short calls); ACME storage in Redis uses it too, with
 * longer calls that fail loudly so that the caller retries. The client library is imported only
 * when Redis is configured.
 *
 * When Redis is down or slow, {@link RedisLink.run} gives `undefined` after at most the call
 * timeout and the caller goes on without Redis; {@link RedisLink.call} throws
 * {@link RedisUnavailable} instead. A warning is logged at most once a minute; the client
 * reconnects by itself.
 *
 * @module
 */
import type { RedisClientType } from "@redis/client";

/** Milliseconds one request-path Redis call may take before the request goes on without it. */
export const CALL_TIMEOUT_MS = 150;
/** After a call timed out, calls are skipped this long (a stalled server costs no latency). */
const PAUSE_AFTER_TIMEOUT_MS = 1000;
/** At most one warning per this many milliseconds. */
const WARN_EVERY_MS = 60_000;

/** The client type the callers see. */
export type RedisClient = RedisClientType;

/** Redis did not answer: not connected, too slow, or the call failed on the connection. */
export class RedisUnavailable extends Error {}

/** A lazily connected Redis client with bounded calls. */
export interface RedisLink {
  readonly url: string;
  /** `f` on the client, or `undefined` when Redis is not there or does not answer in time. */
  run<T>(f: (client: RedisClient) => Promise<T>): Promise<T | undefined>;
  /**
   * `f` on the client; throws {@link RedisUnavailable} (with the reason, one line) when Redis is
   * not connected or does not answer within the link's call timeout. Errors Redis itself answers
   * with (a failed script, a wrong type) are thrown as they are.
   */
  call<T>(f: (client: RedisClient) => Promise<T>): Promise<T>;
  /**
   * Calls `listener` with each message published on `channel`, on a second connection (a
   * subscribed connection can do nothing else), resubscribed after each reconnect. The returned
   * function unsubscribes.
   */
  subscribe(channel: string, listener: (message: string) => void): () => void;
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
  /** Longest wait for one call, in ms. @default CALL_TIMEOUT_MS (150) */
  callTimeoutMs?: number;
  /**
   * What happens while Redis is away, ending each warning.
   * @default "going on without it (cache misses, limits allow)"
   */
  meanwhile?: string;
}

/** The URL without its password, for messages. */
export function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.href;
  } catch {
    return url;
  }
}

const message = (e: unknown) =>
  (e instanceof Error ? e.message || e.name : String(e)).split("\n")[0];

/** A link to the Redis server at `url` (connecting starts now, in the background). */
export function redisLink(url: string, options: RedisLinkOptions): RedisLink {
  const now = options.now ?? Date.now;
  const callTimeout = options.callTimeoutMs ?? CALL_TIMEOUT_MS;
  const meanwhile = options.meanwhile ?? "going on without it (cache misses, limits allow)";
  let lastWarn = -Infinity;
  let pausedUntil = 0;
  let closed = false;
  let client: RedisClient | undefined;
  let lastProblem = "not connected yet";
  const subscribers: RedisClient[] = [];
  const warn = (what: string) => {
    lastProblem = what;
    const t = now();
    if (t - lastWarn < WARN_EVERY_MS) return;
    lastWarn = t;
    options.warn(`redis ${shownUrl(url)}: ${what}; ${meanwhile}`);
  };
  const ready = Promise.withResolvers<void>();
  ready.promise.catch(() => {});
  let firstDone = false;
  const library = import("@redis/client");
  const loading = library.then(({ createClient }) => {
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
    c.on("error", (e: Error) => warn(message(e)));
    c.on("ready", () => {
      ready.resolve();
      options.info?.(`redis ${shownUrl(url)}: connected`);
    });
    c.connect().catch((e: Error) => warn(message(e)));
    client = c;
    return c;
  });
  loading.catch((e) => warn(`client not loaded: ${message(e)}`));

  const call = async <T>(f: (client: RedisClient) => Promise<T>): Promise<T> => {
    if (closed) throw new RedisUnavailable("the connection is closed");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), callTimeout);
    });
    try {
      const c = client ?? await Promise.race([loading, timeout]);
      if (c === "timeout" || c === undefined) {
        throw new RedisUnavailable("the client is not loaded yet");
      }
      // The first calls wait (bounded) for the first connection; later ones never do.
      if (!firstDone) {
        const r = await Promise.race([ready.promise, timeout]);
        firstDone = true;
        if (r === "timeout") throw new RedisUnavailable(lastProblem);
      }
      if (!c.isReady) throw new RedisUnavailable(lastProblem);
      const pending = f(c);
      pending.catch(() => {});
      const result = await Promise.race([pending, timeout]);
      if (result === "timeout") {
        throw new RedisUnavailable(`no answer in ${callTimeout} ms`);
      }
      return result as T;
    } catch (e) {
      if (e instanceof RedisUnavailable) throw e;
      // The client's own errors (socket closed, disconnected) mean Redis is away; Redis's
      // answers (ERR …, WRONGTYPE …) are the caller's to handle.
      if ((e as object)?.constructor?.name === "ErrorReply") throw e;
      throw new RedisUnavailable(message(e));
    } finally {
      clearTimeout(timer);
    }
  };

  const run = async <T>(f: (client: RedisClient) => Promise<T>): Promise<T | undefined> => {
    if (closed || now() < pausedUntil) return undefined;
    try {
      return await call(f);
    } catch (e) {
      if (e instanceof RedisUnavailable && e.message.startsWith("no answer in")) {
        pausedUntil = now() + PAUSE_AFTER_TIMEOUT_MS;
      }
      warn(message(e));
      return undefined;
    }
  };

  const subscribe = (channel: string, listener: (message: string) => void) => {
    let sub: RedisClient | undefined;
    let gone = false;
    loading.then((c) => {
      if (!c || gone || closed) return;
      // The same settings as the main connection; the client subscribes again after a reconnect.
      sub = c.duplicate() as unknown as RedisClient;
      sub.on("error", (e: Error) => warn(message(e)));
      subscribers.push(sub);
      sub.connect().then(() => sub!.subscribe(channel, listener)).catch((e: Error) =>
        warn(message(e))
      );
    }, () => {});
    return () => {
      gone = true;
      if (sub) {
        subscribers.splice(subscribers.indexOf(sub), 1);
        sub.destroy();
      }
    };
  };

  return {
    url,
    run,
    call,
    subscribe,
    ready: ready.promise,
    close() {
      closed = true;
      for (const s of subscribers.splice(0)) s.destroy();
      if (client) client.destroy();
      else loading.then((c) => c?.destroy(), () => {});
    },
  };
}
