/**
 * `--test all | configuration | directories`: checks what the server would check at start, one
 * line per check, and PyServe's exit status. `configuration` is a start without listening: the
 * same checks and warnings (`app/boot.ts`, `app/validate.ts`), the certificate loaded and the
 * route table built, then closed.
 *
 * Exit status: 0 every check passed; 1 the required checks passed and an optional one did not;
 * 2 a required check failed; 3 the configuration file could not be loaded at all.
 *
 * @module
 */
import { dirname, resolve } from "node:path";
import { ConfigError } from "../config/config_error.ts";
import { loadConfig, type LoadedConfig, readConfigFile } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { explainError } from "../http/errors.ts";
import { createLogger } from "../log/logger.ts";
import { build, check, type CheckedConfig, CheckFailed } from "../app/boot.ts";
import { type CheckResult, type CheckStatus, fail, ok, reason, warn } from "../app/validate.ts";
import type { Flags } from "./flags.ts";

/** What `--test` checks. */
export type CheckScope = "all" | "configuration" | "directories";

async function checkFolder(
  key: string,
  path: string,
  missing: (message: string) => CheckResult,
): Promise<CheckResult> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return missing(`${path} does not exist`);
    return missing(`${path}: ${reason(e)}`);
  }
  if (!info.isDirectory) return missing(`${path} is not a folder`);
  try {
    for await (const _ of Deno.readDir(path)) break;
  } catch (e) {
    return missing(`${path} is not readable: ${reason(e)}`);
  }
  return ok(key, `${path} exists and is readable`);
}

/** The static folder (required), the templates folder and the log file's folder (optional). */
export async function checkDirectories(config: Config): Promise<CheckResult[]> {
  const results = [
    await checkFolder(
      "http.static_dir",
      config.http.static_dir,
      (m) => fail("http.static_dir", `${m}; create it or set http.static_dir`),
    ),
    await checkFolder(
      "http.templates_dir",
      config.http.templates_dir,
      (m) => warn("http.templates_dir", `${m}; the built-in error pages are used`),
    ),
  ];
  const logFile = config.logging.log_file;
  if (logFile) {
    const folder = dirname(logFile);
    const result = await checkFolder(
      "logging.log_file",
      folder,
      (m) => warn("logging.log_file", `${m}; it is created at start`),
    );
    if (result.status === "ok") {
      try {
        (await Deno.open(logFile, { write: true, append: true })).close();
        results.push(ok("logging.log_file", `${logFile} is writable`));
      } catch (e) {
        results.push(
          e instanceof Deno.errors.NotFound
            ? ok("logging.log_file", `${folder} exists; ${logFile} is created at start`)
            : fail("logging.log_file", `${logFile} is not writable: ${reason(e)}`),
        );
      }
    } else results.push(result);
  }
  return results;
}

/**
 * Builds the route table as a start would, with nothing logged, and closes it again: a failure
 * when it cannot be built (nothing is added to the report when it can).
 */
function buildCheck(checked: CheckedConfig, debug: boolean): CheckResult[] {
  const log = createLogger({ console: false, access: false });
  try {
    build(checked, log, { logWarnings: false }).close();
    return [];
  } catch (e) {
    return [fail("configuration", `cannot be served: ${explainError(e, debug)}`)];
  }
}

const MARKS: Record<CheckStatus, [string, string]> = {
  ok: ["✅", "OK  "],
  warn: ["⚠️ ", "WARN"],
  fail: ["❌", "FAIL"],
};

/** One report line: ✅/⚠️/❌ on a terminal, OK/WARN/FAIL otherwise. */
export function formatResult(r: CheckResult, terminal: boolean): string {
  return `${MARKS[r.status][terminal ? 0 : 1]} ${r.name}: ${r.message}`;
}

/** Exit status for a list of results (0, 1 or 2). */
export function exitStatus(results: CheckResult[]): number {
  if (results.some((r) => r.status === "fail")) return 2;
  if (results.some((r) => r.status === "warn")) return 1;
  return 0;
}

/** Runs `--test scope`, prints one line per check, and resolves to the exit status. */
export async function runChecks(
  flags: Flags,
  scope: CheckScope,
  print: (line: string) => void = console.log,
  terminal: boolean = Deno.stdout.isTerminal(),
): Promise<number> {
  const show = (r: CheckResult) => print(formatResult(r, terminal));
  // A file that cannot be read or parsed is exit 3; one that parses but is invalid is a failed
  // required check (exit 2), reported one problem per line.
  const file = resolve(flags.config ?? "config.yaml");
  try {
    await readConfigFile(file);
  } catch (e) {
    const absent = e instanceof Deno.errors.NotFound && flags.config === undefined;
    if (!absent) {
      const message = e instanceof Deno.errors.NotFound
        ? `${flags.config}: configuration file not found`
        : explainError(e, flags.debug);
      show(fail("configuration", `cannot be loaded: ${message}`));
      return 3;
    }
  }
  let loaded: LoadedConfig;
  try {
    loaded = await loadConfig(flags);
  } catch (e) {
    if (!(e instanceof ConfigError)) {
      show(fail("configuration", `cannot be loaded: ${explainError(e, flags.debug)}`));
      return 3;
    }
    for (const line of e.message.split("\n")) show(fail("configuration", line));
    return 2;
  }
  const results: CheckResult[] = [];
  if (scope !== "directories") {
    let checks: CheckResult[];
    let checked: CheckedConfig | undefined;
    try {
      checked = await check(loaded, { tls: true, backends: !flags.skipProxyCheck });
      checks = checked.checks;
    } catch (e) {
      if (!(e instanceof CheckFailed)) throw e;
      checks = e.checks;
    }
    if (checked) checks.push(...buildCheck(checked, flags.debug));
    for (const r of checks) {
      // Below, the directory checks look at the static folder more closely (a failure without it).
      if (scope === "all" && r.name === "http.static_dir") continue;
      show(r);
      results.push(r);
    }
  }
  if (scope !== "configuration") {
    for (const r of await checkDirectories(loaded.config)) {
      show(r);
      results.push(r);
    }
  }
  const count = (s: CheckStatus) => results.filter((r) => r.status === s).length;
  const code = exitStatus(results);
  print(
    `${count("ok")} ok, ${count("warn")} warning(s), ${count("fail")} failing: ${
      ["all checks passed", "required checks passed", "a required check failed"][code]
    }`,
  );
  return code;
}
