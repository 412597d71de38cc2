/**
 * The one boot path: a configuration is loaded (the file, environment and flags an
 * {@link Overrides} selects, or one handed over already loaded), put through every check of
 * `validate.ts` (errors and warnings alike) and built into its route table. The start, each
 * worker's start, every reload (main thread and workers, through `reload.ts`'s `applyReload`),
 * `--test configuration` (which stops before listening) and the test harness go through here, so
 * they accept and refuse the same configurations and say the same warnings in the same words.
 *
 * @module
 */
import { ConfigError } from "../config/config_error.ts";
import { loadConfig, type LoadedConfig } from "../config/load.ts";
import type { Overrides } from "../config/overrides.ts";
import type { Logger } from "../log/logger.ts";
import type { App } from "../routes/build.ts";
import { buildSites } from "../routes/sites.ts";
import { type CheckResult, validateConfig, type ValidateOptions } from "./validate.ts";

/** A configuration that passed every required check. */
export interface CheckedConfig extends LoadedConfig {
  /** Every check's result; none failed. */
  checks: CheckResult[];
  /**
   * What the checks that warned said (loading's own warnings among them): what a start logs at
   * WARNING and `--test` prints as WARN.
   */
  warnings: string[];
}

/** A configuration that failed a required check: every failure, and the warnings beside them. */
export class CheckFailed extends ConfigError {
  constructor(readonly checks: CheckResult[]) {
    super(checks.filter((c) => c.status === "fail").map((c) => c.message).join("\n"));
  }
  /** What the checks that warned said. */
  get warnings(): string[] {
    return warningsOf(this.checks);
  }
}

const warningsOf = (checks: CheckResult[]) =>
  checks.filter((c) => c.status === "warn").map((c) => c.message);

/**
 * Runs every check on `loaded`. Rejects with {@link CheckFailed} (a {@link ConfigError}, exit 2)
 * naming each failing check, one per line.
 */
export async function check(
  loaded: LoadedConfig,
  options: ValidateOptions = {},
): Promise<CheckedConfig> {
  const checks = await validateConfig(loaded, options);
  if (checks.some((c) => c.status === "fail")) throw new CheckFailed(checks);
  return { ...loaded, checks, warnings: warningsOf(checks) };
}

/** Loads the configuration `overrides` select and {@link check}s it. */
export async function loadChecked(
  overrides: Overrides,
  options: ValidateOptions = {},
): Promise<CheckedConfig> {
  return await check(await loadConfig(overrides), options);
}

/** Options of {@link build} and {@link boot}. */
export interface BuildOptions {
  /**
   * Log the checks' warnings before building. Default true; a worker passes false, since the
   * main thread has said them already.
   */
  logWarnings?: boolean;
}

/** The route table of a checked configuration, its warnings logged first. */
export function build(checked: CheckedConfig, log: Logger, options: BuildOptions = {}): App {
  if (options.logWarnings ?? true) { for (const w of checked.warnings) log.warn(w); }
  return buildSites(checked.config, log);
}

/** A configuration checked and built, ready to serve (or to be swapped in by a reload). */
export interface Booted extends CheckedConfig {
  app: App;
}

/** {@link check} and {@link build} for a configuration already loaded. */
export async function bootLoaded(
  loaded: LoadedConfig,
  log: Logger,
  options: ValidateOptions & BuildOptions = {},
): Promise<Booted> {
  const checked = await check(loaded, options);
  return { ...checked, app: build(checked, log, options) };
}

/** {@link loadChecked}, then {@link build}: what a reload or a worker takes. */
export async function boot(
  overrides: Overrides,
  log: Logger,
  options: ValidateOptions & BuildOptions = {},
): Promise<Booted> {
  return await bootLoaded(await loadConfig(overrides), log, options);
}
