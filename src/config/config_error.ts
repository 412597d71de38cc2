/**
 * The one error type of a configuration that cannot be used.
 *
 * @module
 */

/** A configuration that cannot be used; `message` holds one line per problem. */
export class ConfigError extends Error {
  /** Exit status for this problem (2: bad configuration). */
  code = 2;
}
