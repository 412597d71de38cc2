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
 * The manager for `config`, or undefined when `ssl.acme` is not in use. The CA's http-01
 * requests reach its {@link AcmeManager.handleChallenge} through the listener `server/` opens on
 * `ssl.acme.http_port` (see `server/challenge_listener.ts`).
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
  });
}
