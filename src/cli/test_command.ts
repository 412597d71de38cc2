/**
 * `--test all | configuration | directories`: checks what the server would check at start, one
 * line per check, and PyServe's exit status.
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
import { unsupported } from "../routes/build.ts";
import { loadTlsMaterial, parseChain, TlsError } from "../tls/certs.ts";
import { explainError } from "../http/errors.ts";
import type { Flags } from "./flags.ts";

/** How a check ended: `warn` is an optional check that failed. */
export type CheckStatus = "ok" | "warn" | "fail";

/** One line of the report. */
export interface CheckResult {
  status: CheckStatus;
  /** What was checked, usually the config key. */
  name: string;
  message: string;
}

/** What `--test` checks. */
export type CheckScope = "all" | "configuration" | "directories";

const ok = (name: string, message: string): CheckResult => ({ status: "ok", name, message });
const warn = (name: string, message: string): CheckResult => ({ status: "warn", name, message });
const fail = (name: string, message: string): CheckResult => ({ status: "fail", name, message });

const reason = (e: unknown) => explainError(e).replace(/^[A-Za-z]+: /, "");

const HOST_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;

/** Why `host` is not a usable backend host name or address, or undefined when it is. */
export function badHost(host: string): string | undefined {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(host)) {
    return `must be a host name without a scheme, got "${host}" (use ssl: true for https)`;
  }
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  if (bare !== host || bare.includes(":")) {
    return IPV6.test(bare) && bare.includes(":")
      ? undefined
      : `is not a valid IPv6 address: "${host}"`;
  }
  if (/^[\d.]+$/.test(host)) {
    return IPV4.test(host) ? undefined : `is not a valid IPv4 address: "${host}"`;
  }
  return HOST_NAME.test(host) ? undefined : `is not a valid host name: "${host}"`;
}

/** Backend targets: host names, ports (0 is not a target), CA files, duplicate paths. */
export async function checkProxyTargets(config: Config): Promise<CheckResult[]> {
  const rules = config.server.reverse_proxy;
  if (rules.length === 0) return [];
  const results: CheckResult[] = [];
  const seen = new Map<string, number>();
  for (const [i, rule] of rules.entries()) {
    const key = `server.reverse_proxy[${i}]`;
    const problems: string[] = [];
    if (rule.upstreams) {
      for (const [j, target] of rule.upstreams.entries()) {
        const at = target.lastIndexOf(":");
        const host = target.slice(0, at);
        const port = Number(target.slice(at + 1));
        const bad = badHost(host);
        if (bad) problems.push(`${key}.upstreams[${j}] host ${bad}`);
        if (!(port >= 1 && port <= 65535)) {
          problems.push(`${key}.upstreams[${j}] port must be 1–65535, got ${port}`);
        }
      }
    } else {
      const bad = badHost(rule.host);
      if (bad) problems.push(`${key}.host ${bad}`);
      if (rule.port === 0) problems.push(`${key}.port must be 1–65535 for a backend, got 0`);
    }
    if (rule.ca_file) {
      try {
        parseChain(rule.ca_file, await Deno.readTextFile(rule.ca_file));
      } catch (e) {
        problems.push(`${key}.ca_file: cannot load ${rule.ca_file}: ${reason(e)}`);
      }
    }
    const first = seen.get(rule.path);
    if (first !== undefined) {
      results.push(
        warn(
          `${key}.path`,
          `"${rule.path}" is also server.reverse_proxy[${first}].path; only the first is used`,
        ),
      );
    } else seen.set(rule.path, i);
    const target = rule.upstreams?.join(", ") ??
      `${rule.ssl ? "https" : "http"}://${rule.host}:${rule.port}`;
    results.push(
      problems.length ? fail(key, problems.join("; ")) : ok(key, `${rule.path} → ${target}`),
    );
  }
  return results;
}

/** TLS material when HTTPS is on: both files load, the key matches, the dates are current. */
export async function checkTls(config: Config, now = new Date()): Promise<CheckResult[]> {
  const { ssl } = config;
  if (!ssl.enabled) return [ok("ssl", "HTTPS is off")];
  if (ssl.acme) {
    const stored = await Deno.stat(ssl.cert_file!).then(() => true, () => false);
    if (!stored) {
      return [
        ok("ssl.acme", `a certificate for ${ssl.acme.domains.join(", ")} is ordered at start`),
      ];
    }
  }
  const certFile = ssl.cert_file!;
  let tls;
  try {
    tls = await loadTlsMaterial(certFile, ssl.key_file!, now);
  } catch (e) {
    if (!(e instanceof TlsError)) throw e;
    const key = e.path === certFile ? "ssl.cert_file" : "ssl.key_file";
    return [fail(key, `${e.path}: ${e.reason}`)];
  }
  const { subject, notAfter } = tls.info;
  const results = tls.warnings.map((w) => warn("ssl", w));
  return results.length ? results : [
    ok("ssl.cert_file", `${subject}, key matches, valid until ${notAfter.toISOString()}`),
  ];
}

/** Everything the server validates at start, for a configuration that loaded. */
export async function checkConfiguration(loaded: LoadedConfig): Promise<CheckResult[]> {
  const { config } = loaded;
  const results: CheckResult[] = [
    ok(
      "configuration",
      loaded.file ? `${loaded.file} is valid` : "built-in defaults (no config.yaml)",
    ),
  ];
  for (const w of loaded.warnings) results.push(warn("configuration", w));
  const missing = unsupported(config);
  if (missing.length) {
    results.push(fail("configuration", `not supported by this build: ${missing.join(", ")}`));
  }
  results.push(...await checkProxyTargets(config));
  results.push(...await checkTls(config));
  return results;
}

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
    for (const r of await checkConfiguration(loaded)) {
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
