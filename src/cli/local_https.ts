/**
 * `--ssl` without certificate files: a leaf from the local CA for the names the server answers
 * on, handed to the start as `--cert`/`--key` would be, and renewed while it runs.
 *
 * @module
 */
import type { Config } from "../config/schema.ts";
import type { Logger } from "../log/logger.ts";
import { explainError } from "../http/errors.ts";
import { type Leaf, type LocalCa, localCaFolder } from "../tls/local_ca.ts";
import { isWildcard, networkAddresses } from "./addresses.ts";

/** Whether `config` asks for HTTPS without certificate files or ACME: the local CA's case. */
export const usesLocalCa = (config: Config): boolean =>
  config.ssl.enabled && !config.ssl.acme && !config.ssl.cert_file && !config.ssl.key_file;

/** The local CA, its leaf for `config`, and the names in it. */
export interface LocalHttps {
  ca: LocalCa;
  leaf: Leaf;
  lifetime: number;
}

/**
 * The names a leaf for `config` carries: `localhost`, `127.0.0.1`, `::1`, `server.host`, and
 * on 0.0.0.0 or :: the machine's network addresses and host name (which need
 * `--allow-sys=networkInterfaces,hostname`).
 */
export function namesFor(config: Config): string[] {
  const host = config.server.host.replace(/^\[(.*)\]$/, "$1");
  const names = ["localhost", "127.0.0.1", "::1"];
  if (isWildcard(host)) {
    names.push(...networkAddresses(host !== "0.0.0.0"));
    const name = Deno.hostname();
    if (name && !names.includes(name)) names.push(name);
  } else names.push(host);
  return [...new Set(names)];
}

/** Opens the local CA and brings its leaf for `config` up to date. */
export async function prepareLocalHttps(config: Config): Promise<LocalHttps> {
  const { LocalCa } = await import("../tls/local_ca.ts");
  const ca = await LocalCa.open(localCaFolder());
  const lifetime = config.ssl.leaf_lifetime;
  return { ca, leaf: await ca.leaf(namesFor(config), lifetime), lifetime };
}

/** The start banner's lines about the local CA. */
export function localHttpsLines(local: LocalHttps): string[] {
  return [
    `HTTPS with a certificate from the local CA for ${local.leaf.names.join(", ")}, ` +
    `valid until ${local.leaf.notAfter.toISOString()} and renewed while serving`,
    `local CA root: ${local.ca.files.root}; run "denoserve trust" once so that browsers and ` +
    `curl accept it (or curl --cacert ${local.ca.files.root})`,
  ];
}

/**
 * Makes a new leaf two thirds into the life of each, in the same files (the server reloads
 * them as any certificate file), and calls `renewed` after each. Dispose to stop.
 */
export function keepRenewing(
  local: LocalHttps,
  log: Logger,
  renewed: () => void,
): Disposable {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  const schedule = () => {
    if (stopped) return;
    // Looked at least every minute: a laptop that slept may have passed the time already.
    const wait = Math.min(Math.max(local.leaf.renewAt.getTime() - Date.now(), 250), 60_000);
    timer = setTimeout(check, wait);
  };
  let failed = false;
  const check = async () => {
    if (Date.now() >= local.leaf.renewAt.getTime()) {
      try {
        const before = local.leaf.notAfter;
        local.leaf = await local.ca.leaf(local.leaf.names, local.lifetime);
        if (local.leaf.notAfter.getTime() !== before.getTime()) {
          log.info(
            `local CA: new certificate for ${local.leaf.names.join(", ")}, valid until ` +
              local.leaf.notAfter.toISOString(),
          );
          renewed();
        }
      } catch (e) {
        log.error(`local CA: cannot renew the certificate: ${explainError(e)}; retrying in 60 s`);
        failed = true;
      }
    }
    if (failed && !stopped) {
      failed = false;
      timer = setTimeout(check, 60_000);
    } else schedule();
  };
  schedule();
  return {
    [Symbol.dispose]() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
