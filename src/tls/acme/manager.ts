/**
 * Automatic HTTPS: keeps a valid certificate for `ssl.acme.domains` in storage and in service.
 *
 * At start a stored certificate that is still valid is handed over at once; otherwise one is
 * ordered in the background while the server goes on serving. Renewal runs at two thirds of the
 * lifetime; failures are logged on one line and retried with back-off, and the certificate in
 * service stays until a new one arrives.
 *
 * @example The first certificate before the HTTPS listener, then port 80 pointed at it
 * ```ts
 * const first = Promise.withResolvers<void>();
 * const manager = createAcmeManager({
 *   acme: config.ssl.acme!,
 *   log,
 *   onCertificate: () => first.resolve(), // renewals: the reloader watches the stored files
 * });
 * await manager.start(); // the challenge listener is open from here on
 * if (!manager.certificate) await first.promise;
 * // ssl.cert_file and ssl.key_file name manager.certFile and manager.keyFile
 * const server = await startServer(config, log, app, {
 *   onListen: (addr) => manager.redirectTo(addr.port),
 * });
 * // … at shutdown
 * await server.shutdown();
 * await manager.stop();
 * ```
 *
 * @module
 */
import { ConfigError } from "../../config/config_error.ts";
import type { Config } from "../../config/schema.ts";
import type { Logger } from "../../log/logger.ts";
import { redirectToHttps } from "../../server/redirect_http.ts";
import { type AcmeClient, openAccount } from "./account.ts";
import { createChallengeResponder, serveChallenges } from "./challenge.ts";
import { type AcmeError, explainAcmeError } from "./problems.ts";
import { orderCertificate } from "./order.ts";
import { createRenewalScheduler } from "./renewal.ts";
import {
  ensureStorage,
  inspectCertificate,
  isUsable,
  readCertificate,
  renewalTime,
  storagePaths,
  type StoredCertificate,
  writeCertificate,
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
  /**
   * Open the http-01 listener on `ssl.acme.http_port`. Default true. Pass false when something
   * else answers the CA there (it can call {@link AcmeManager.handleChallenge}).
   */
  listen?: boolean;
  /** Address the http-01 listener binds. Default "0.0.0.0". */
  hostname?: string;
  /**
   * Port of the HTTPS listener, for the redirect of non-challenge requests until
   * {@link AcmeManager.redirectTo} names the real one. Default 443.
   */
  httpsPort?: number;
  /** First retry delay after a failed issuance, in ms. Default 60 000. */
  retryMinMs?: number;
  /** Longest retry delay, in ms. Default 3 600 000. */
  retryMaxMs?: number;
  /** Longest wait for one request to the CA, in ms. Default 30 000. */
  requestTimeoutMs?: number;
}

/** A running certificate keeper. */
export interface AcmeManager {
  /**
   * Prepares storage and the challenge listener, puts a valid stored certificate into service, or
   * starts ordering one in the background. Throws {@link ConfigError} for unusable settings.
   */
  start(): Promise<void>;
  /** Cancels planned renewals and closes the challenge listener. */
  stop(): Promise<void>;
  /**
   * Answers `/.well-known/acme-challenge/<token>` requests; null for any other request. The
   * challenge listener answers with it; for a listener of one's own, see
   * {@link AcmeManagerOptions.listen}.
   */
  handleChallenge(request: Request): Response | null;
  /**
   * From now on the challenge listener redirects requests that are not challenges to HTTPS on
   * `httpsPort` (the port the HTTPS listener really took, after start and after a reload).
   */
  redirectTo(httpsPort: number): void;
  /** The certificate in service, if any. */
  readonly certificate: StoredCertificate | undefined;
  /** The last issuance failure since the last success. */
  readonly lastError: AcmeError | undefined;
  /** When the next issuance attempt is planned (epoch ms). */
  readonly nextAttempt: number | undefined;
  /** Where the certificate and key are stored, for file-watching reloaders. */
  readonly certFile: string;
  readonly keyFile: string;
  /** Address of the http-01 listener when it runs. */
  readonly challengeAddr: Deno.NetAddr | undefined;
}

/** A manager for the `ssl.acme` section; nothing happens until {@link AcmeManager.start}. */
export function createAcmeManager(options: AcmeManagerOptions): AcmeManager {
  const { acme, log } = options;
  const domains = acme.domains.map((d) => d.toLowerCase());
  const paths = storagePaths(acme.storage);
  const responder = createChallengeResponder(log);
  const hostname = options.hostname ?? "0.0.0.0";
  // Used when a request has no usable Host header.
  const fallbackHost = hostname.includes(":") ? `[${hostname}]` : hostname;
  let others = redirectToHttps(options.httpsPort ?? 443, fallbackHost);
  let listener: Deno.HttpServer<Deno.NetAddr> | undefined;
  let certificate: StoredCertificate | undefined;
  let lastError: AcmeError | undefined;
  let client: AcmeClient | undefined;
  let caPem: string | undefined;
  let stopped = false;

  const use = async (cert: StoredCertificate) => {
    certificate = cert;
    await options.onCertificate(cert.certPem, cert.keyPem);
  };

  const issue = async () => {
    const started = performance.now();
    log.info(`acme: requesting a certificate for ${domains.join(", ")} from ${acme.directory_url}`);
    let issued;
    try {
      client ??= await openAccount({
        directoryUrl: acme.directory_url,
        email: acme.email,
        caPem,
        paths,
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
      await writeCertificate(paths, { ...issued, directoryUrl: acme.directory_url, domains });
    } catch (e) {
      log.error(
        `acme: cannot store the certificate in ${acme.storage}: ${
          e instanceof Error ? e.message : e
        }; check ssl.acme.storage (it stays in service until restart)`,
      );
    }
    lastError = undefined;
    if (stopped) return; // stored for the next start, not handed to a listener that is gone
    await use({ ...issued, ...info, directoryUrl: acme.directory_url });
    const renewAt = renewalTime(info);
    log.info(
      `acme: certificate for ${domains.join(", ")} obtained in ${
        Math.round(performance.now() - started)
      } ms, valid until ${info.notAfter.toISOString()}, renewal at ${
        new Date(renewAt).toISOString()
      }`,
    );
    scheduler.at(renewAt);
  };

  const scheduler = createRenewalScheduler({
    run: issue,
    retryMinMs: options.retryMinMs,
    retryMaxMs: options.retryMaxMs,
    onFailure(e, attempt, delay) {
      lastError = explainAcmeError(e, acme.directory_url);
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
      try {
        await ensureStorage(acme.storage);
      } catch (e) {
        throw new ConfigError(
          `ssl.acme.storage: cannot create ${acme.storage}: ${e instanceof Error ? e.message : e}`,
        );
      }
      if (options.listen ?? true) {
        try {
          listener = serveChallenges({
            hostname,
            port: acme.http_port,
            responder,
            others: (request) => others(request),
          });
        } catch (e) {
          const why = e instanceof Deno.errors.AddrInUse
            ? "already in use"
            : e instanceof Deno.errors.PermissionDenied
            ? "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
            : e instanceof Error
            ? e.message
            : String(e);
          throw new ConfigError(
            `ssl.acme.http_port: cannot listen on ${hostname}:${acme.http_port}: ${why}`,
          );
        }
      }
      const stored = await readCertificate(paths);
      if (stored && isUsable(stored, domains, acme.directory_url)) {
        await use(stored);
        const renewAt = renewalTime(stored);
        log.info(
          `acme: using stored certificate for ${
            domains.join(", ")
          }, valid until ${stored.notAfter.toISOString()}, renewal at ${
            new Date(renewAt).toISOString()
          }`,
        );
        scheduler.at(renewAt);
      } else {
        if (stored) log.info("acme: stored certificate is expired or for other names; ordering");
        scheduler.at(Date.now());
      }
    },
    async stop() {
      stopped = true;
      scheduler.stop();
      if (listener) await listener.shutdown();
      listener = undefined;
    },
    handleChallenge: responder.handle,
    redirectTo(httpsPort) {
      others = redirectToHttps(httpsPort, fallbackHost);
    },
    get certificate() {
      return certificate;
    },
    get lastError() {
      return lastError;
    },
    get nextAttempt() {
      return scheduler.next;
    },
    certFile: paths.cert,
    keyFile: paths.key,
    get challengeAddr() {
      return listener?.addr;
    },
  };
}
