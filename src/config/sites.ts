/**
 * The sites of a configuration: the default site (the top-level sections) and each of `sites`,
 * each as a whole {@link Config} that the route builder and the checks read as they read a
 * single-site file. A site's configuration is the file's with the site-level keys replaced by
 * the site's own (or their defaults); the server-wide keys are the file's.
 *
 * @module
 */
import type { Config } from "./schema.ts";

/** One of `sites`, made a whole configuration. */
export interface SiteConfig {
  /** Its index in `sites`. */
  index: number;
  /** Its names, lower case, without a trailing dot; wildcards as `*.example.com`. */
  names: readonly string[];
  config: Config;
}

const derived = new WeakMap<Config, SiteConfig[]>();

/** The configurations of `config.sites`, in order (none for a single-site file); made once. */
export function siteConfigs(config: Config): SiteConfig[] {
  let found = derived.get(config);
  if (found) return found;
  found = config.sites.map((site, index) => ({
    index,
    names: site.names,
    config: Object.freeze({
      ...config,
      server: { ...config.server, ...site.server },
      http: { ...config.http, ...site.http },
      ssl: {
        ...config.ssl,
        // Without files of its own, the site is served the default site's certificate.
        cert_file: site.ssl.cert_file ?? config.ssl.cert_file,
        key_file: site.ssl.cert_file ? site.ssl.key_file : config.ssl.key_file,
        hsts: site.ssl.hsts,
      },
      extensions: site.extensions,
      sites: [],
    }) as Config,
  }));
  derived.set(config, found);
  return found;
}

/** The name a site is known by in logs and metrics: its first name. */
export const siteLabel = (site: SiteConfig): string => site.names[0];

/** Whether certificate name `pattern` (`example.com`, `*.example.com`) covers host `name`. */
export function nameCovers(pattern: string, name: string): boolean {
  pattern = pattern.toLowerCase();
  if (pattern === name) return true;
  if (!pattern.startsWith("*.")) return false;
  // A certificate's wildcard covers one label; a site's wildcard name is covered only by the
  // same wildcard.
  const dot = name.indexOf(".");
  return dot > 0 && !name.startsWith("*.") && name.slice(dot + 1) === pattern.slice(2);
}

/** The host name of a Host value: lower case, without `:port` and a trailing dot. */
export function hostName(authority: string): string {
  let end = authority.length;
  const colon = authority.lastIndexOf(":");
  // `[::1]:8443` and `[::1]`: the port follows the bracket; `example.com:8443`: the one colon.
  if (colon >= 0 && (authority[0] !== "[" || authority[colon - 1] === "]")) end = colon;
  if (authority.charCodeAt(end - 1) === 46 /* . */) end--;
  const name = end === authority.length ? authority : authority.slice(0, end);
  return name.toLowerCase();
}

/** What a name chooses: a site's handler, by exact name and by wildcard. */
export interface SiteTable<T> {
  exact: Map<string, T>;
  /** `*.example.com` under `example.com`. */
  wildcard: Map<string, T>;
}

/** The site of host `name` (see {@link hostName}), or undefined. */
export function siteFor<T>(table: SiteTable<T>, name: string): T | undefined {
  const found = table.exact.get(name);
  if (found !== undefined || table.wildcard.size === 0) return found;
  const dot = name.indexOf(".");
  return dot < 0 ? undefined : table.wildcard.get(name.slice(dot + 1));
}

/** Adds `value` under each of `names` (`*.example.com` as a wildcard). */
export function addNames<T>(table: SiteTable<T>, names: readonly string[], value: T): void {
  for (const name of names) {
    if (name.startsWith("*.")) table.wildcard.set(name.slice(2), value);
    else table.exact.set(name, value);
  }
}
