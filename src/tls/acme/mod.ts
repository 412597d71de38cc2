/**
 * Automatic HTTPS through ACME (RFC 8555): see {@link createAcmeManager}.
 *
 * @module
 */
export {
  type AcmeConfig,
  type AcmeManager,
  type AcmeManagerOptions,
  createAcmeManager,
} from "./manager.ts";
export { AcmeError, type AcmeFailure } from "./errors.ts";
export { CHALLENGE_PREFIX, type ChallengeResponder } from "./challenge.ts";
