/**
 * The one boot path: load the configuration, validate it (every check, I/O included), build the
 * route table. A start, a SIGHUP reload, each `server.workers` worker and `--test configuration`
 * all go through here, so they accept and refuse the same configurations with the same words.
 *
 * @module
 */
import { ConfigError } from "../config/config_error.ts";
import { loadConfig, type LoadedConfig } from "../config/load.ts";
import type { Overrides } from "../config/overrides.ts";
import type { Logger } from "../log/logger.ts";
import { type App, buildApp } from "../routes/build.ts";
import { type CheckResult, validateConfig, type ValidateOptions } from "./validate.ts";

/** A configuration that loaded, with what its checks said. */
export interface CheckedConfig extends LoadedConfig {
  /** Every check's result; none failed when {@link loadChecked} resolved. */
  checks: CheckResult[];
}

/**
 * Loads the configuration `overrides` select and runs every check on it. Rejects with a
 * {@link ConfigError} (exit 2) naming each failing check, one per line.
 */
export async function loadChecked(
  overrides: Overrides,
  options: ValidateOptions = {},
): Promise<CheckedConfig> {
  const loaded = await loadConfig(overrides);
  const checks = await validateConfig(loaded, options);
  const failed = checks.filter((c) => c.status === "fail");
  if (failed.length) throw new ConfigError(failed.map((c) => c.message).join("\n"));
  return { ...loaded, checks };
}

/** {@link loadChecked}, then the route table for it: what a reload or a worker takes. */
export async function boot(
  overrides: Overrides,
  log: Logger,
): Promise<CheckedConfig & { app: App }> {
  const checked = await loadChecked(overrides);
  return { ...checked, app: buildApp(checked.config, log) };
}
