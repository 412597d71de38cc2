/**
 * Automatic HTTPS through ACME (RFC 8555): see {@link createAcmeManager}.
 *
 * @module
 */
import type { Config } from "../../config/schema.ts";
import type { Logger } from "../../log/logger.ts";
import { type AcmeManager, createAcmeManager } from "./manager.ts";

export {
  type AcmeConfig,
  type AcmeManager,
  type AcmeManagerOptions,
  createAcmeManager,
} from "./manager.ts";
export { AcmeError, type AcmeFailure } from "./problems.ts";
export { CHALLENGE_PREFIX, type ChallengeResponder } from "./challenge.ts";

/**
 * The manager for `config`, or undefined when `ssl.acme` is not in use. Its challenge listener
 * binds `server.host` on `ssl.acme.http_port` and redirects what is not a challenge to HTTPS;
 * when `ssl.redirect_http` names the same port it is that listener too, and the server opens
 * none there.
 *
 * @example
 * ```ts
 * const first = Promise.withResolvers<void>();
 * const acme = acmeManagerFor(config, log, () => first.resolve());
 * await acme?.start();
 * if (acme && !acme.certificate) await first.promise;
 * const server = await startServer(config, log, app, {
 *   onListen: (addr) => acme?.redirectTo(addr.port),
 * });
 * ```
 */
export function acmeManagerFor(
  config: Config,
  log: Logger,
  onCertificate: (certPem: string, keyPem: string) => void | Promise<void>,
): AcmeManager | undefined {
  const acme = config.ssl.acme;
  if (!config.ssl.enabled || !acme) return undefined;
  return createAcmeManager({
    acme,
    log,
    onCertificate,
    hostname: config.server.host,
    httpsPort: config.server.port,
  });
}
