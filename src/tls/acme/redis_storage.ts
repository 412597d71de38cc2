/**
 * ACME state in Redis, shared by every instance naming the same server and the same
 * `storage_key`. Private keys (the account's and the certificate's) are stored sealed
 * (AES-256-GCM, see seal.ts), never in clear; certificates are public and stored as they are.
 *
 * Keys (`<site>` is a hash of the directory URL and the sorted domains, `<ca>` of the URL):
 * - `denoserve:acme:account:<ca>`: the account key, sealed.
 * - `denoserve:acme:cert:<site>`: a hash with `cert` (PEM chain), `key` (sealed), `directory_url`,
 *   `domains` (JSON) and `stored_at`, written in one HSET so that a reader never sees half a pair.
 * - `denoserve:acme:lock:<site>`: the order lock (see lock.ts).
 * - `denoserve:acme:challenge:<token>`: an http-01 answer, for ten minutes at most.
 * - channel `denoserve:acme:certificates`: `<site>` is published after each new certificate.
 *
 * Redis is expected to persist (`appendonly yes`, or RDB snapshots): a restart that loses the data
 * costs a new order when the next instance starts, not the certificates in service.
 *
 * @module
 */
import type { Logger } from "../../log/logger.ts";
import { type RedisLink, redisLink, RedisUnavailable, shownUrl } from "../../redis/link.ts";
import { tryRedisLock } from "./lock.ts";
import { AcmeError } from "./problems.ts";
import { createSealer, type Sealer, SealError } from "./seal.ts";
import {
  type AcmeStorage,
  inspectCertificate,
  type NewCertificate,
  type StoredCertificate,
} from "./storage.ts";

/** Prefix of every key denoserve's ACME storage uses. */
export const KEY_PREFIX = "denoserve:acme:";
/** The channel a new certificate is announced on. */
export const CERTIFICATES_CHANNEL = `${KEY_PREFIX}certificates`;
/** Seconds an http-01 answer is kept (an order validates within seconds). */
const CHALLENGE_TTL_S = 600;
/** Longest wait for one storage call, in ms. */
const CALL_TIMEOUT_MS = 5000;

/** Options of {@link redisStorage}. */
export interface RedisStorageOptions {
  /** `ssl.acme.storage`: `redis://host:port/db`. */
  url: string;
  /** `ssl.acme.storage_key`. */
  secret: string;
  directoryUrl: string;
  domains: readonly string[];
  /** Expiry of the order lock, in ms. */
  lockTtlMs: number;
  log: Logger;
}

const hash = async (text: string) =>
  Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text))),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("").slice(0, 16);

/** The names of a site's keys. */
export async function redisKeys(directoryUrl: string, domains: readonly string[]) {
  const site = await hash(`${directoryUrl}\n${[...domains].map((d) => d.toLowerCase()).sort()}`);
  return {
    site,
    account: `${KEY_PREFIX}account:${await hash(directoryUrl)}`,
    cert: `${KEY_PREFIX}cert:${site}`,
    lock: `${KEY_PREFIX}lock:${site}`,
  };
}

/** ACME storage on the Redis server at `options.url`. */
export function redisStorage(options: RedisStorageOptions): AcmeStorage {
  const { log } = options;
  const where = shownUrl(options.url);
  let link: RedisLink | undefined;
  let sealer: Sealer | undefined;
  let keys: Awaited<ReturnType<typeof redisKeys>> | undefined;

  /** Runs `f`; Redis away or a value that does not open is an AcmeError of kind "storage". */
  const guarded = async <T>(f: (link: RedisLink) => Promise<T>): Promise<T> => {
    if (!link) throw new Error("redis storage used before open()");
    try {
      return await f(link);
    } catch (e) {
      if (e instanceof RedisUnavailable) {
        throw new AcmeError(
          "storage",
          `ssl.acme.storage ${where}: Redis unreachable (${e.message})`,
        );
      }
      if (e instanceof SealError) {
        throw new AcmeError(
          "storage",
          `ssl.acme.storage ${where}: ${e.message}; every instance needs the same ssl.acme.storage_key`,
        );
      }
      throw e;
    }
  };
  const challengeKey = (token: string) => `${KEY_PREFIX}challenge:${token}`;

  return {
    where,
    shared: true,
    async open() {
      keys = await redisKeys(options.directoryUrl, options.domains);
      sealer = await createSealer(options.secret);
      link = redisLink(options.url, {
        // Each failed attempt is one line of the manager's; the link's own warnings would repeat it.
        warn: (m) => log.debug(m),
        info: (m) => log.info(m),
        callTimeoutMs: CALL_TIMEOUT_MS,
        meanwhile: "keeping the certificate in service",
      });
    },
    readAccountKey: () =>
      guarded(async (l) => {
        const sealed = await l.call((c) => c.get(keys!.account));
        return sealed ? await sealer!.open(keys!.account, sealed) : undefined;
      }),
    writeAccountKey: (pem) =>
      guarded(async (l) => {
        const sealed = await sealer!.seal(keys!.account, pem);
        const set = await l.call((c) => c.set(keys!.account, sealed, { condition: "NX" }));
        if (set === "OK") return pem;
        const stored = await l.call((c) => c.get(keys!.account));
        return stored ? await sealer!.open(keys!.account, stored) : pem;
      }),
    readCertificate: () =>
      guarded(async (l): Promise<StoredCertificate | undefined> => {
        const h = await l.call((c) => c.hGetAll(keys!.cert)) as Record<string, string>;
        if (!h?.cert || !h.key) return undefined;
        const keyPem = await sealer!.open(`${keys!.cert}:key`, h.key);
        try {
          return {
            certPem: h.cert,
            keyPem,
            directoryUrl: h.directory_url ?? "",
            ...inspectCertificate(h.cert),
          };
        } catch {
          return undefined;
        }
      }),
    writeCertificate: (cert: NewCertificate) =>
      guarded(async (l) => {
        const key = await sealer!.seal(`${keys!.cert}:key`, cert.keyPem);
        await l.call((c) =>
          c.hSet(keys!.cert, {
            cert: cert.certPem,
            key,
            directory_url: cert.directoryUrl,
            domains: JSON.stringify(cert.domains),
            stored_at: new Date().toISOString(),
          })
        );
        await l.call((c) => c.publish(CERTIFICATES_CHANNEL, keys!.site));
      }),
    challenges: {
      put: (token, keyAuthorization) =>
        guarded(async (l) =>
          void await l.call((c) =>
            c.set(challengeKey(token), keyAuthorization, {
              expiration: { type: "EX", value: CHALLENGE_TTL_S },
            })
          )
        ),
      get: (token) =>
        guarded(async (l) => (await l.call((c) => c.get(challengeKey(token)))) ?? undefined),
      delete: (token) => guarded(async (l) => void await l.call((c) => c.del(challengeKey(token)))),
    },
    tryLock: () =>
      guarded((l) => tryRedisLock({ link: l, key: keys!.lock, ttlMs: options.lockTtlMs, log })),
    watch(changed) {
      if (!link) return () => {};
      return link.subscribe(CERTIFICATES_CHANNEL, (site) => {
        if (site === keys!.site) changed();
      });
    },
    close() {
      link?.close();
      link = undefined;
    },
  };
}
