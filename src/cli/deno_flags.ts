/**
 * The `deno` flags every way of running denoserve shares (`deno task start`, the compiled binary,
 * the line `denoserve permissions` prints), kept in one place.
 *
 * @module
 */

/** Unstable APIs used: `reusePort` on TLS listeners, and the abort behaviour. */
export const UNSTABLE: readonly string[] = ["--unstable-net", "--unstable-no-legacy-abort"];
