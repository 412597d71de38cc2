/**
 * What a start asks of the configuration beyond the file: the plain shape the command line maps
 * onto (see `cli/flags.ts`), so that loading needs nothing from the CLI.
 *
 * @module
 */

/** Settings that win over the file and the environment; every field optional. */
export interface Overrides {
  /** The configuration file (default `./config.yaml` when present). */
  config?: string;
  port?: number;
  host?: string;
  static?: string;
  templates?: string;
  /** Log at DEBUG. */
  debug?: boolean;
  /** Serve HTTPS. */
  ssl?: boolean;
  cert?: string;
  key?: string;
  /** Reverse-proxy rules added after the file's. */
  proxy?: { host: string; port: number; path: string }[];
  /** Unknown paths answer index.html (a V2 `__default__` location with `spa_fallback`). */
  spa?: boolean;
  /** CORS for any origin (the security extension's `cors` with its defaults). */
  cors?: boolean;
}
