/**
 * The `deno` flags every way of running denoserve shares (`deno task start`, the compiled binary,
 * the line `denoserve permissions` prints), kept in one place.
 *
 * @module
 */

/** Unstable APIs used: `reusePort` on TLS listeners, and the abort behaviour. */
export const UNSTABLE: readonly string[] = ["--unstable-net", "--unstable-no-legacy-abort"];

/**
 * V8 settings: the young generation capped at 1 MB keeps idle memory 5-7 MB lower with no
 * measurable change in throughput (see README, Performance).
 */
export const V8_FLAGS: readonly string[] = ["--v8-flags=--max-semi-space-size=1"];
