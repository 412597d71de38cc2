/**
 * Automatic HTTPS: keeps a valid certificate for `ssl.acme.domains` in storage and in service.
 *
 * At start a stored certificate that is still valid is handed over at once; otherwise one is
 * ordered in the background while the server goes on serving. Renewal runs at two thirds of the
 * lifetime; failures are logged on one line and retried with back-off, and the certificate in
 * service stays until a new one arrives.
 *
 * With storage shared by several instances (Redis), each pass first looks at what is stored: a
 * certificate another instance stored is taken into service; one that is due is ordered only under
 * the storage's order lock, so one instance orders while the others wait for the result (told by
 * the storage's notification, or found by the poll every `ssl.acme.poll_interval`).
 *
 * The manager opens no socket: the CA's http-01 requests reach {@link AcmeManager.handleChallenge}
 * through the listener `server/challenge_listener.ts` opens on `ssl.acme.http_port`.
 *
 * @example The first certificate before the HTTPS listener, then port 80 pointed at it
 * ```ts
 * const first = Promise.withResolvers<void>();
 * const manager = createAcmeManager({
 *   acme: config.ssl.acme!,
 *   log,
 *   onCertificate: () => first.resolve(), // renewals: the reloader watches the stored files
 * });
 * const port80 = listenForChallenges({
 *   hostname: config.server.host,
 *   port: config.ssl.acme!.http_port,
 *   challenges: manager.handleChallenge,
 * });
 * await manager.start();
 * if (!manager.certificate) await first.promise;
 * // ssl.cert_file and ssl.key_file name manager.certFile and manager.keyFile
 * const server = await startServer(config, log, app, {
 *   onListen: (addr) => port80.redirectTo(addr.port),
 * });
 * // … at shutdown
 * await server.shutdown();
 * await manager.stop();
 * await port80.shutdown();
 * ```
 *
 * @module
 */
import { ConfigError } from "../../config/config_error.ts";
import type { Config } from "../../config/schema.ts";
import type { Logger } from "../../log/logger.ts";
import { type AcmeClient, openAccount } from "./account.ts";
import { createChallengeResponder } from "./challenge.ts";
import { AcmeError, explainAcmeError } from "./problems.ts";
import { orderCertificate } from "./order.ts";
import { createRenewalScheduler } from "./renewal.ts";
import { folderStorage } from "./folder_storage.ts";
import { redisStorage } from "./redis_storage.ts";
import {
  type AcmeStorage,
  inspectCertificate,
  isRedisStorage,
  isUsable,
  renewalTime,
  type StoredCertificate,
} from "./storage.ts";

/** The `ssl.acme` section. */
export type AcmeConfig = NonNullable<Config["ssl"]["acme"]>;

/** Options of {@link createAcmeManager}. */
export interface AcmeManagerOptions {
  /** The validated `ssl.acme` section. */
  acme: AcmeConfig;
  log: Logger;
  /**
   * Puts a certificate into service (hot reload). Called at start with a stored certificate and
   * after each issuance, with the chain (leaf first) and its private key in PEM.
   */
  onCertificate: (certPem: string, keyPem: string) => void | Promise<void>;
  /** First retry delay after a failed issuance, in ms. Default 60 000. */
  retryMinMs?: number;
  /** Longest retry delay, in ms. Default 3 600 000. */
  retryMaxMs?: number;
  /** Longest wait for one request to the CA, in ms. Default 30 000. */
  requestTimeoutMs?: number;
  /** The storage; default the one `acme.storage` names. */
  storage?: AcmeStorage;
}

/** A running certificate keeper. */
export interface AcmeManager {
  /**
   * Prepares storage, puts a valid stored certificate into service, or starts ordering one in
   * the background. Throws {@link ConfigError} for unusable settings.
   */
  start(): Promise<void>;
  /** Cancels planned renewals and closes the storage. */
  stop(): Promise<void>;
  /**
   * Answers `/.well-known/acme-challenge/<token>` requests; null for any other request. The
   * listener on `ssl.acme.http_port` (in `server/`) answers the CA with it.
   */
  handleChallenge(request: Request): Response | Promise<Response> | null;
  /** The certificate in service, if any. */
  readonly certificate: StoredCertificate | undefined;
  /** The last issuance failure since the last success. */
  readonly lastError: AcmeError | undefined;
  /** When the next issuance attempt is planned (epoch ms). */
  readonly nextAttempt: number | undefined;
  /**
   * Where the certificate and key are stored, for file-watching reloaders; undefined when the
   * storage is not a folder (the certificate then reaches the server only through onCertificate).
   */
  readonly certFile: string | undefined;
  readonly keyFile: string | undefined;
  /** Where the state is kept: the folder or the Redis URL (without its password). */
  readonly storageWhere: string;
}

/** A manager for the `ssl.acme` section; nothing happens until {@link AcmeManager.start}. */
/** First retry after Redis (or another storage) could not be used, in ms; doubled each time. */
const STORAGE_RETRY_MIN_MS = 1000;
/** Longest wait between storage retries, in ms. */
const STORAGE_RETRY_MAX_MS = 30_000;

/** The storage `acme.storage` names: a Redis server or a folder. */
export function storageFor(acme: AcmeConfig, log: Logger): AcmeStorage {
  if (!isRedisStorage(acme.storage)) return folderStorage(acme.storage);
  return redisStorage({
    url: acme.storage,
    secret: acme.storage_key!, // required with redis storage by the schema
    directoryUrl: acme.directory_url,
    domains: acme.domains,
    lockTtlMs: acme.lock_timeout * 1000,
    log,
  });
}

/** A manager for the `ssl.acme` section; nothing happens until {@link AcmeManager.start}. */
export function createAcmeManager(options: AcmeManagerOptions): AcmeManager {
  const { acme, log } = options;
  const domains = acme.domains.map((d) => d.toLowerCase());
  const names = domains.join(", ");
  const storage = options.storage ?? storageFor(acme, log);
  const responder = createChallengeResponder(storage.challenges, log);
  let certificate: StoredCertificate | undefined;
  let lastError: AcmeError | undefined;
  let client: AcmeClient | undefined;
  let caPem: string | undefined;
  let stopped = false;
  let unwatch = () => {};
  let waiting = false; // another instance holds the order lock; said once per wait
  let storageFailures = 0;
  const pollMs = storage.shared ? acme.poll_interval * 1000 : Infinity;
  // While another instance orders: look again this often (its crash frees the lock in lock_timeout).
  const lockWaitMs = Math.max(250, Math.min(pollMs, acme.lock_timeout * 1000 / 4));

  const use = async (cert: StoredCertificate) => {
    certificate = cert;
    await options.onCertificate(cert.certPem, cert.keyPem);
  };

  /** The next pass: at the renewal time, or sooner with shared storage (the poll). */
  const planAfter = (cert: StoredCertificate) =>
    scheduler.at(Math.min(renewalTime(cert), Date.now() + pollMs));

  const order = async () => {
    const started = performance.now();
    log.info(`acme: requesting a certificate for ${names} from ${acme.directory_url}`);
    let issued;
    try {
      client ??= await openAccount({
        directoryUrl: acme.directory_url,
        email: acme.email,
        caPem,
        storage,
        log,
        requestTimeoutMs: options.requestTimeoutMs,
      });
      issued = await orderCertificate(client, domains, responder, log);
    } catch (e) {
      client = undefined; // the next attempt starts with a fresh directory and nonce
      throw explainAcmeError(e, acme.directory_url);
    }
    const info = inspectCertificate(issued.certPem);
    try {
      await storage.writeCertificate({ ...issued, directoryUrl: acme.directory_url, domains });
    } catch (e) {
      log.error(
        `acme: cannot store the certificate in ${storage.where}: ${
          e instanceof Error ? e.message : e
        }; check ssl.acme.storage (it stays in service until restart)`,
      );
    }
    lastError = undefined;
    if (stopped) return; // stored for the next start, not handed to a listener that is gone
    const cert = { ...issued, ...info, directoryUrl: acme.directory_url };
    await use(cert);
    log.info(
      `acme: certificate for ${names} obtained in ${
        Math.round(performance.now() - started)
      } ms, valid until ${info.notAfter.toISOString()}, renewal at ${
        new Date(renewalTime(info)).toISOString()
      }`,
    );
    planAfter(cert);
  };

  /** Takes a stored certificate that differs from the one in service; whether it did. */
  const adopt = async (stored: StoredCertificate | undefined, now = Date.now()) => {
    if (!stored || stored.certPem === certificate?.certPem) return false;
    if (!isUsable(stored, domains, acme.directory_url, now)) return false;
    // An older certificate than the one in service (a store that lost a write) is not taken.
    if (certificate && stored.notAfter <= certificate.notAfter) return false;
    if (stopped) return true;
    await use(stored);
    log.info(
      `acme: took the certificate for ${names} stored in ${storage.where}, valid until ${stored.notAfter.toISOString()}, renewal at ${
        new Date(renewalTime(stored)).toISOString()
      }`,
    );
    return true;
  };

  /** One pass: take what is stored, order what is due (under the lock), plan the next pass. */
  const pass = async () => {
    const now = Date.now();
    await adopt(await storage.readCertificate(), now);
    if (storageFailures > 0) {
      log.info(`acme: ${storage.where} reachable again after ${storageFailures} failed attempts`);
      storageFailures = 0;
    }
    if (
      certificate && isUsable(certificate, domains, acme.directory_url, now) &&
      now < renewalTime(certificate)
    ) {
      waiting = false;
      return planAfter(certificate);
    }
    const lock = await storage.tryLock();
    if (!lock) {
      if (!waiting) {
        log.info(
          `acme: another instance is ordering the certificate for ${names} (the order lock in ${storage.where} is held); waiting for it`,
        );
      }
      waiting = true;
      return scheduler.at(Date.now() + lockWaitMs);
    }
    waiting = false;
    try {
      // It may have been stored between the look above and the lock.
      if (
        storage.shared && await adopt(await storage.readCertificate()) && certificate &&
        Date.now() < renewalTime(certificate)
      ) {
        return planAfter(certificate);
      }
      if (storage.shared) log.info(`acme: holding the order lock for ${names}`);
      await order();
    } finally {
      await lock.release();
    }
  };

  const scheduler = createRenewalScheduler({
    run: pass,
    retryMinMs: options.retryMinMs,
    retryMaxMs: options.retryMaxMs,
    backoff: (e) =>
      e instanceof AcmeError && e.kind === "storage"
        ? { minMs: STORAGE_RETRY_MIN_MS, maxMs: STORAGE_RETRY_MAX_MS }
        : undefined,
    onFailure(e, attempt, delay) {
      lastError = explainAcmeError(e, acme.directory_url);
      if (lastError.kind === "storage") storageFailures++;
      const keeping = certificate
        ? `keeping the certificate valid until ${certificate.notAfter.toISOString()}`
        : "no certificate yet";
      log.error(
        `acme: ${lastError.message} (attempt ${attempt}, ${keeping}, next try in ${
          Math.round(delay / 1000)
        } s)`,
      );
    },
  });

  return {
    async start() {
      if (acme.ca_file) {
        try {
          caPem = await Deno.readTextFile(acme.ca_file);
        } catch (e) {
          throw new ConfigError(
            `ssl.acme.ca_file: cannot read ${acme.ca_file}: ${e instanceof Error ? e.message : e}`,
          );
        }
      }
      await storage.open();
      // Another instance's new certificate is looked at at once, not at the next poll.
      unwatch = storage.watch(() => {
        if (!stopped) scheduler.at(Date.now());
      });
      let stored: StoredCertificate | undefined;
      try {
        stored = await storage.readCertificate();
      } catch (e) {
        // Redis away at start: the first pass says why, one line per attempt, until it is back.
        if (!(e instanceof AcmeError && e.kind === "storage")) throw e;
      }
      if (stored && isUsable(stored, domains, acme.directory_url)) {
        await use(stored);
        const renewAt = renewalTime(stored);
        log.info(
          `acme: using stored certificate for ${names}, valid until ${stored.notAfter.toISOString()}, renewal at ${
            new Date(renewAt).toISOString()
          }`,
        );
        planAfter(stored);
      } else {
        if (stored) log.info("acme: stored certificate is expired or for other names; ordering");
        scheduler.at(Date.now());
      }
    },
    stop() {
      stopped = true;
      scheduler.stop();
      unwatch();
      storage.close();
      return Promise.resolve();
    },
    handleChallenge: responder.handle,
    get certificate() {
      return certificate;
    },
    get lastError() {
      return lastError;
    },
    get nextAttempt() {
      return scheduler.next;
    },
    certFile: storage.files?.cert,
    keyFile: storage.files?.key,
    storageWhere: storage.where,
  };
}
