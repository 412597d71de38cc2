/**
 * Every check a configuration must pass before it is served, including those that need I/O
 * (files, certificates, permissions, backends), and every warning a start says about a
 * configuration: the one list behind a start, a SIGHUP reload, each worker and `--test
 * configuration` (all through `boot.ts`), so that what `--test` passes starts, what it fails does
 * not, and a start warns of nothing `--test` did not print.
 *
 * @module
 */
import type { LoadedConfig } from "../config/load.ts";
import {
  cachingConfig,
  type Config,
  type HeaderRules,
  isRedisStorage,
  type ProxyRule,
  routingConfig,
  securityConfig,
} from "../config/schema.ts";
import { shownUrl } from "../redis/link.ts";
import { workerCount } from "../config/derived.ts";
import { explainError } from "../http/errors.ts";
import { ConfigError } from "../config/config_error.ts";
import { loadTlsMaterial, readCaFile, TlsError } from "../tls/certs.ts";
import { nameCovers, siteConfigs } from "../config/sites.ts";
import { authWarnings, checkAccess } from "../routes/auth.ts";
import { checkBackends } from "../proxy/startup_check.ts";
import { compileRule } from "../proxy/rules.ts";

/** How a check ended: `warn` is an optional check that failed. */
export type CheckStatus = "ok" | "warn" | "fail";

/** One line of the report. */
export interface CheckResult {
  status: CheckStatus;
  /** What was checked, usually the config key. */
  name: string;
  message: string;
}

export const ok = (name: string, message: string): CheckResult => ({ status: "ok", name, message });
export const warn = (name: string, message: string): CheckResult => ({
  status: "warn",
  name,
  message,
});
export const fail = (name: string, message: string): CheckResult => ({
  status: "fail",
  name,
  message,
});

export const reason = (e: unknown) => explainError(e).replace(/^[A-Za-z]+: /, "");

const HOST_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;
/** A URL scheme in front of a host (`http://x`). */
const SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

/** Why `host` is not a usable backend host name or address, or undefined when it is. */
export function badHost(host: string): string | undefined {
  if (SCHEME.test(host)) {
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
export function checkProxyTargets(config: Config): CheckResult[] {
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
        readCaFile(`${key}.ca_file`, rule.ca_file);
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        problems.push(e.message);
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
    if (rule.insecure_skip_verify && rule.ssl && !problems.length) {
      results.push(warn(
        `${key}.insecure_skip_verify`,
        `${key}: insecure_skip_verify is on: the certificate of ` +
          `${compileRule(rule, i).backends.map((b) => b.origin).join(", ")} is NOT verified; ` +
          `anyone on the path can read and change this traffic. Use ca_file instead.`,
      ));
    }
    const target = rule.upstreams?.join(", ") ??
      `${rule.ssl ? "https" : "http"}://${rule.host}:${rule.port}`;
    const extras = ruleSettings(rule);
    results.push(
      problems.length
        ? fail(key, problems.join("; "))
        : ok(key, `${rule.path} → ${target}${extras.length ? ` (${extras.join("; ")})` : ""}`),
    );
    if (
      rule.lb === "cookie" && rule.lb_cookie_secret === undefined &&
      (config.server.workers === "auto" || config.server.workers > 1)
    ) {
      results.push(warn(
        `${key}.lb_cookie_secret`,
        `${key}: lb: cookie without lb_cookie_secret makes a key per worker process, so a ` +
          `client's cookie from one worker is replaced by another; set lb_cookie_secret`,
      ));
    }
  }
  return results;
}

/** Header rules in a few words: `set 2, remove 1`. */
function ruleCounts(rules: HeaderRules | undefined): string {
  if (rules === undefined) return "";
  const counts = [
    ["remove", rules.remove.length],
    ["set", Object.keys(rules.set).length],
    ["add", Object.keys(rules.add).length],
  ] as const;
  return counts.filter(([, n]) => n > 0).map(([what, n]) => `${what} ${n}`).join(", ");
}

/** What a rule sets beyond its target, for its `--test` line. */
function ruleSettings(rule: ProxyRule): string[] {
  const out: string[] = [];
  if (rule.lb !== "round_robin") {
    out.push(
      `lb ${rule.lb}` + (rule.lb === "header" ? ` ${rule.lb_header}` : "") +
        (rule.lb === "cookie" ? ` ${rule.lb_cookie}` : ""),
    );
  }
  if (rule.try_duration > 0) {
    out.push(`retried for ${rule.try_duration}s every ${rule.try_interval}s`);
  }
  const up = ruleCounts(rule.request_headers);
  if (up) out.push(`request headers: ${up}`);
  const down = ruleCounts(rule.response_headers);
  if (down) out.push(`response headers: ${down}`);
  return out;
}

/** Bytes as a person reads them: `10 MiB`, `512 KiB`, `1000 bytes`. */
function sizeText(bytes: number): string {
  for (const [unit, n] of [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const) {
    if (bytes >= n && bytes % n === 0) return `${bytes / n} ${unit}`;
  }
  return `${bytes} bytes`;
}

/**
 * The server-wide answer settings that are not the defaults, one line each, so that `--test`
 * shows what a file turned on: `max_body_size`, `compression`, `response_headers`.
 */
export function checkAnswerSettings(config: Config): CheckResult[] {
  const { server } = config;
  const results: CheckResult[] = [];
  const located = Object.entries(server.locations)
    .filter(([, l]) => l.max_body_size !== undefined)
    .map(([key, l]) => `${key}: ${l.max_body_size ? sizeText(l.max_body_size!) : "no limit"}`);
  if (server.max_body_size > 0 || located.length > 0) {
    results.push(ok(
      "server.max_body_size",
      (server.max_body_size > 0
        ? `request bodies over ${sizeText(server.max_body_size)} get 413`
        : "no limit") + (located.length ? `; locations: ${located.join(", ")}` : ""),
    ));
  }
  const c = server.compression;
  if (c.enabled) {
    const levels = c.encodings.map((e) => `${e} ${c[`${e}_level`]}`).join(", ");
    results.push(ok(
      "server.compression",
      `${levels} for answers made on the fly of ${sizeText(c.min_size)} or more` +
        (c.types.length ? ` of ${c.types.join(", ")}` : ""),
    ));
  }
  const headers = ruleCounts(server.response_headers);
  if (headers) results.push(ok("server.response_headers", `${headers} on every answer`));
  return results;
}

/** TLS material when HTTPS is on: both files load, the key matches, the dates are current. */
export async function checkTls(config: Config, now = new Date()): Promise<CheckResult[]> {
  const { ssl } = config;
  if (!ssl.enabled) return [ok("ssl", "HTTPS is off")];
  if (!ssl.acme && !ssl.cert_file && !ssl.key_file) {
    return [ok("ssl", "no certificate files: a certificate from the local CA is made at start")];
  }
  if (ssl.acme && !ssl.cert_file) {
    return [ok(
      "ssl.acme",
      `a certificate for ${ssl.acme.domains.join(", ")} is taken from ${
        shownUrl(ssl.acme.storage)
      } or ordered at start`,
    )];
  }
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

/** `ssl` keys that mean something only over HTTPS, set while it is off. */
export function checkSslIgnored(config: Config): CheckResult[] {
  if (config.ssl.enabled) return [];
  const results: CheckResult[] = [];
  for (const key of ["hsts", "redirect_http"] as const) {
    if (config.ssl[key] !== undefined) {
      results.push(warn(`ssl.${key}`, `ssl.${key} is ignored while ssl.enabled is false`));
    }
  }
  if (config.ssl.http3) {
    results.push(warn("ssl.http3", "ssl.http3 is ignored while ssl.enabled is false"));
  }
  return results;
}

/**
 * `http.static_dir` missing is no reason not to start (a welcome page answers at /), but it is
 * said. One that cannot be looked at (a missing permission) is a failed check with `report`, and
 * thrown otherwise: a start ends on it with exit 1, naming the flag. `--test directories` checks
 * the folder more closely and fails without it.
 */
export async function checkStaticDir(config: Config, report = false): Promise<CheckResult[]> {
  const dir = config.http.static_dir;
  try {
    await Deno.stat(dir);
    return [];
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return [
        warn("http.static_dir", `static folder ${dir} does not exist; serving a welcome page at /`),
      ];
    }
    if (!report) throw e;
    return [fail("http.static_dir", `${dir}: ${reason(e)}`)];
  }
}

/**
 * Net permission for the backends and Redis servers the configuration names: without it each
 * request to them would fail, so a start says which `--allow-net` to add instead.
 */
export function checkNetPermissions(config: Config): CheckResult[] {
  const targets: [string, string][] = [];
  config.server.reverse_proxy.forEach((rule, i) => {
    const key = `server.reverse_proxy[${i}]`;
    if (rule.upstreams) { for (const u of rule.upstreams) targets.push([key, u]); }
    else targets.push([key, `${rule.host}:${rule.port}`]);
  });
  const security = securityConfig(config);
  const caching = cachingConfig(config);
  for (
    const [key, url] of [
      [
        "rate_limiting.url",
        security?.rate_limiting?.backend === "redis" && security.rate_limiting.url,
      ],
      ["caching.url", caching?.backend === "redis" && caching.url],
    ] as const
  ) {
    if (url) {
      const u = new URL(url);
      targets.push([key, `${u.hostname}:${u.port || 6379}`]);
    }
  }
  const missing = targets.filter(([, host]) => {
    try {
      return Deno.permissions.querySync({ name: "net", host }).state !== "granted";
    } catch {
      return false; // not a host the permission API takes; the request says why
    }
  });
  if (!missing.length) return [];
  const hosts = [...new Set(missing.map(([, h]) => h))].join(",");
  return [fail(
    missing[0][0],
    `${missing.map(([k, h]) => `${k} (${h})`).join(", ")}: no net permission; run with ` +
      `--allow-net=${hosts} beside the listen address`,
  )];
}

/** `server.host` must be something a listener can bind: a host name or an IP address. */
export function checkServerHost(config: Config): CheckResult[] {
  const { host } = config.server;
  if (SCHEME.test(host)) {
    return [fail("server.host", `server.host must be an address without a scheme, got "${host}"`)];
  }
  const bad = badHost(host);
  return bad ? [fail("server.host", `server.host ${bad}`)] : [];
}

/** ACME settings that can only be checked on this machine: the challenge, CA file, storage. */
export async function checkAcme(config: Config): Promise<CheckResult[]> {
  const acme = config.ssl.enabled ? config.ssl.acme : undefined;
  if (!acme) return [];
  const results: CheckResult[] = [];
  if (acme.challenge === "tls-alpn-01") {
    results.push(fail(
      "ssl.acme.challenge",
      "ssl.acme.challenge: tls-alpn-01 is not supported (Deno's TLS listener cannot pick a " +
        "certificate by ALPN); use http-01 with ssl.acme.http_port reachable",
    ));
  }
  if (acme.ca_file) {
    try {
      await Deno.readTextFile(acme.ca_file);
    } catch (e) {
      results.push(fail(
        "ssl.acme.ca_file",
        `ssl.acme.ca_file: cannot read ${acme.ca_file}: ${reason(e)}`,
      ));
    }
  }
  if (isRedisStorage(acme.storage)) {
    const { hostname, port } = new URL(acme.storage);
    const host = `${hostname}:${port || 6379}`;
    if (Deno.permissions.querySync({ name: "net", host }).state !== "granted") {
      results.push(fail(
        "ssl.acme.storage",
        `ssl.acme.storage: no net permission for ${host}; run with --allow-net=${host}`,
      ));
    }
    if (workerCount(config.server.workers) !== 1 || config.server.workers === "auto") {
      // The certificate from Redis is kept in the main thread's memory only.
      results.push(fail(
        "server.workers",
        `server.workers: must be 1 with ssl.acme.storage ${shownUrl(acme.storage)}; run one ` +
          "denoserve instance per core instead (they share the certificate through Redis)",
      ));
    }
    return results;
  }
  for (const name of ["read", "write"] as const) {
    if (Deno.permissions.querySync({ name, path: acme.storage }).state !== "granted") {
      results.push(fail(
        "ssl.acme.storage",
        `ssl.acme.storage: no ${name} permission for ${acme.storage}; run with ` +
          `--allow-${name}=${acme.storage}`,
      ));
    }
  }
  return results;
}

/** Configuration this build cannot serve yet, named so that it is never silently ignored. */
export function unsupported(config: Config): string[] {
  const found: string[] = [];
  config.extensions.forEach((e, i) => {
    // Every block of `security` is served (unknown keys in it are warned about by loading).
    if (
      e.type !== "routing" && e.type !== "security" && e.type !== "monitoring" &&
      e.type !== "caching"
    ) {
      found.push(`extensions[${i}] (type ${e.type})`);
    }
  });
  return found;
}

/**
 * The checks of each of `sites` that a single-site file gets for its own sections (static folder,
 * backends, permissions, htpasswd files, extensions), each message naming the site; and its
 * certificate: files that load, and that cover the site's names (a warning naming both, as a
 * client would refuse the certificate).
 */
export async function checkSites(
  loaded: LoadedConfig,
  options: ValidateOptions = {},
): Promise<CheckResult[]> {
  const { config } = loaded;
  const sites = siteConfigs(config);
  const locate = loaded.locate ?? (() => "");
  if (sites.length === 0) {
    return config.server.unknown_host === "default" ? [] : [warn(
      "server.unknown_host",
      `${locate(["server", "unknown_host"])}server.unknown_host is ignored without sites ` +
        "(every Host goes to the one site)",
    )];
  }
  const results: CheckResult[] = [];
  const defaultCert = config.ssl.enabled && !config.ssl.acme ? config.ssl.cert_file : undefined;
  for (const site of sites) {
    const key = `sites[${site.index}]`;
    const named = (r: CheckResult) => ({
      ...r,
      name: `${key}.${r.name}`,
      message: `${key} (${site.names[0]}): ${r.message}`,
    });
    const c = site.config;
    const own = config.sites[site.index].ssl.cert_file;
    results.push(ok(
      key,
      `${site.names.join(", ")}: ${
        c.server.reverse_proxy.length ? `${c.server.reverse_proxy.length} proxy rule(s), ` : ""
      }files from ${c.http.static_dir}${
        config.ssl.enabled
          ? `, certificate ${own ?? "of the default site"}${c.ssl.hsts ? ", HSTS" : ""}`
          : ""
      }`,
    ));
    const missing = unsupported(c);
    if (missing.length) {
      results.push(fail(key, `${key}: not supported by this build: ${missing.join(", ")}`));
    }
    // A site whose routes take every path (a proxy of "/", a `__default__` location that
    // answers or proxies) never serves a file: its static folder is not looked at.
    const fallback = routingConfig(c)?.regex_locations.__default__;
    const takesAll = c.server.reverse_proxy.some((r) => r.path === "/") ||
      fallback?.return !== undefined || fallback?.proxy_pass !== undefined;
    if (!takesAll) results.push(...(await checkStaticDir(c, options.tls)).map(named));
    for (const w of authWarnings(c)) results.push(named(warn("server.locations", w)));
    const targets = [...checkProxyTargets(c), ...checkNetPermissions(c)];
    results.push(...targets.map(named));
    if (options.backends && !targets.some((r) => r.status === "fail")) {
      for (const w of await checkBackends(c.server.reverse_proxy)) {
        results.push(named(warn("server.reverse_proxy", w)));
      }
    }
    results.push(...(await checkAccess(c)).map(named));
    if (!config.ssl.enabled) {
      const set = (["cert_file", "key_file", "hsts"] as const).filter((k) =>
        config.sites[site.index].ssl[k] !== undefined
      );
      if (set.length) {
        results.push(warn(
          `${key}.ssl`,
          `${locate(["sites", site.index, "ssl", set[0]], true)}${
            set.map((k) => `${key}.ssl.${k}`).join(", ")
          } ${set.length > 1 ? "are" : "is"} ignored while ssl.enabled is false`,
        ));
      }
      continue;
    }
    if (config.ssl.acme && !own) {
      for (const name of site.names.filter((n) => n.startsWith("*."))) {
        results.push(warn(
          `${key}.names`,
          `${locate(["sites", site.index, "names"])}${key}.names: ${name} cannot be ordered ` +
            `with an http-01 challenge; give the site certificate files that cover it`,
        ));
      }
      continue;
    }
    const certFile = own ?? defaultCert;
    if (certFile === undefined) continue; // the local CA's certificate names every site
    let sans: string[];
    try {
      const tls = await loadTlsMaterial(certFile, c.ssl.key_file!);
      // A start logs them as it loads the certificate (server.ts), as for the default one.
      if (own && options.tls) {
        for (const w of tls.warnings) results.push(warn(`${key}.ssl`, `${key}: ${w}`));
      }
      sans = tls.info.sans.filter((n) => n.startsWith("DNS:")).map((n) => n.slice(4));
    } catch (e) {
      if (!(e instanceof TlsError)) throw e;
      // A start reports a broken default certificate in the listener's words.
      if (own || options.tls) {
        const which = e.path === certFile ? "cert_file" : "key_file";
        results.push(fail(
          `${key}.ssl.${which}`,
          `${
            locate(["sites", site.index, "ssl", which])
          }${key}.ssl.${which}: ${e.path}: ${e.reason}`,
        ));
      }
      continue;
    }
    const uncovered = site.names.filter((name) => !sans.some((san) => nameCovers(san, name)));
    if (uncovered.length) {
      const at = own ? ["sites", site.index, "ssl", "cert_file"] : ["sites", site.index, "names"];
      results.push(warn(
        `${key}.ssl.cert_file`,
        `${locate(at)}${key}: the certificate ${certFile}${own ? "" : " (ssl.cert_file)"} ` +
          `does not cover ${uncovered.join(", ")} (it names ${
            sans.join(", ") || "no DNS name"
          }); ` +
          `clients will refuse it for ${uncovered.length > 1 ? "those names" : "that name"}`,
      ));
    }
  }
  return results;
}

/** Options of {@link validateConfig}. */
export interface ValidateOptions {
  /**
   * Also load the certificate and key, and report a static folder that cannot be looked at, as
   * failed checks. A start leaves the certificate to the listener, which reports a broken one in
   * its own words, and ends on an unreadable static folder naming the flag (exit 1 for both, as
   * PyServe does); `--test` checks them here.
   */
  tls?: boolean;
  /**
   * Also try one TCP connection to each `server.reverse_proxy` backend; one that cannot be
   * reached is a warning. A start does this unless `--skip-proxy-check`, and so does `--test`.
   */
  backends?: boolean;
}

/**
 * Every check for a configuration that loaded: one `ok` line for the file, its warnings, then
 * what this build cannot serve, the listen address, the static folder, `ssl` keys without HTTPS,
 * plain passwords without HTTPS, the proxy targets (with `options.backends`, whether they
 * answer), ACME and (with `options.tls`) the certificate.
 */
export async function validateConfig(
  loaded: LoadedConfig,
  options: ValidateOptions = {},
): Promise<CheckResult[]> {
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
  results.push(...checkServerHost(config));
  results.push(...await checkStaticDir(config, options.tls));
  results.push(...checkSslIgnored(config));
  results.push(...checkAnswerSettings(config));
  for (const w of authWarnings(config)) results.push(warn("server.locations", w));
  const targets = [...checkProxyTargets(config), ...checkNetPermissions(config)];
  results.push(...targets);
  if (options.backends && !targets.some((r) => r.status === "fail")) {
    for (const w of await checkBackends(config.server.reverse_proxy)) {
      results.push(warn("server.reverse_proxy", w));
    }
  }
  results.push(...await checkAccess(config, loaded.file));
  results.push(...await checkAcme(config));
  if (options.tls) results.push(...await checkTls(config));
  results.push(...await checkSites(loaded, options));
  return results;
}
