/**
 * Reload without downtime: on SIGHUP the configuration and certificates are read again and
 * swapped in whole when valid; when the certificate or key file changes on disk, the new pair is
 * taken. Anything that cannot be used is reported in one line and the running setup stays.
 * {@link applyReload} is the one way a new configuration takes over, in the main thread and in
 * each worker.
 *
 * @module
 */
import { explainError } from "../http/errors.ts";
import type { Config } from "../config/schema.ts";
import type { Logger } from "../log/logger.ts";
import type { App } from "../routes/build.ts";
import { countReload } from "../routes/metrics.ts";
import { TlsError } from "../tls/certs.ts";
import type { RunningServer } from "../server/server.ts";

/** A configuration read again and its route table, ready to take over (what `boot()` gives). */
export interface Prepared {
  config: Config;
  app: App;
}

/** Options of {@link watchReload}. */
export interface ReloadOptions {
  server: RunningServer;
  log: Logger;
  /**
   * Reads, validates and builds the next configuration (`boot()`, which logs its warnings);
   * throws when it cannot be served.
   */
  prepare(): Promise<Prepared>;
  /** Told the configuration a reload took into service. */
  reloaded?(config: Config): void;
  /** How often the certificate and key files are checked for changes, in ms; 0 = never. Default 1000. */
  certCheckMs?: number;
  /** The signal that asks for a reload; null for none. Default SIGHUP (none on Windows). */
  signal?: Deno.Signal | null;
  /** Stack traces in failure lines. Default false. */
  debug?: boolean;
}

/** A reload watcher; dispose it to stop listening for signals and file changes. */
export interface Reloader extends Disposable {
  /** Reads the configuration and certificates again; resolves to whether it took over. */
  reload(): Promise<boolean>;
  /** Reads the certificate and key again under the running configuration. */
  reloadCertificates(): Promise<boolean>;
  /**
   * Settles once the certificate and key files have been looked at the first time: a change on
   * disk after that is noticed. At once when they are not watched.
   */
  readonly watching: Promise<void>;
}

/** A reload failure as one line; with `debug`, its stack trace joined in. */
export const oneLine = (e: unknown, debug: boolean): string =>
  e instanceof TlsError ? e.message : explainError(e, debug).split("\n").join("; ");

/**
 * Prepares the next configuration and puts it into `server`: the reload of the main thread and
 * of each worker. Counts the reload as a success or a failure; on failure (rethrown) the new
 * route table is closed and the running configuration stays.
 */
export async function applyReload(
  server: RunningServer,
  prepare: () => Promise<Prepared>,
): Promise<{ listenersReplaced: boolean }> {
  let prepared: Prepared;
  try {
    prepared = await prepare();
  } catch (e) {
    countReload(false);
    throw e;
  }
  try {
    const replaced = await server.reload(prepared.config, prepared.app);
    countReload(true);
    return replaced;
  } catch (e) {
    prepared.app.close();
    countReload(false);
    throw e;
  }
}

/** Watches for SIGHUP and certificate changes and reloads `server` accordingly. */
export function watchReload(options: ReloadOptions): Reloader {
  const { server, log, debug = false } = options;
  const certCheckMs = options.certCheckMs ?? 1000;
  const signal = options.signal === undefined
    ? (Deno.build.os === "windows" ? null : "SIGHUP")
    : options.signal;
  // Reloads run one after another, never interleaved.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(job: () => Promise<T>): Promise<T> => {
    const run = queue.then(job);
    queue = run.catch(() => {});
    return run;
  };

  const reload = () =>
    serial(async () => {
      log.info("reloading configuration");
      const before = server.url;
      try {
        const { listenersReplaced } = await applyReload(server, options.prepare);
        options.reloaded?.(server.config);
        log.info(
          `reloaded configuration; serving on ${server.url}` +
            (listenersReplaced
              ? ` (new listeners${before !== server.url ? `, was ${before}` : ""})`
              : ""),
        );
        return true;
      } catch (e) {
        log.error(`reload failed, still serving the previous configuration: ${oneLine(e, debug)}`);
        return false;
      }
    });

  const reloadCertificates = () =>
    serial(async () => {
      try {
        const { listenersReplaced } = await server.reload(server.config);
        if (listenersReplaced) {
          log.info(`certificate reloaded: SHA-256 ${server.tls?.info.fingerprint256}`);
        }
        return true;
      } catch (e) {
        log.error(`${oneLine(e, debug)}; still serving the previous certificate`);
        return false;
      }
    });

  const onSignal = () => void reload();
  if (signal) Deno.addSignalListener(signal, onSignal);

  // Certificate files are polled with stat: it follows symlinks (Let's Encrypt's live/ layout),
  // survives files replaced by rename, and needs no read permission beyond the files themselves.
  // A change is taken once it has stayed the same for one interval, so a renewal that writes the
  // certificate and the key one after the other is read once, complete.
  let seen = "";
  let pending = "";
  const signature = async (): Promise<string> => {
    const { ssl, sites } = server.config;
    if (!ssl.enabled) return "";
    // The default site's files and those of each of `sites` that has its own.
    const files = [ssl, ...sites.map((site) => site.ssl)].flatMap((s) =>
      s.cert_file && s.key_file ? [s.cert_file, s.key_file] : []
    );
    if (files.length === 0) return "";
    const parts = await Promise.all(files.map(async (f) => {
      try {
        const s = await Deno.stat(f);
        return `${f}:${s.mtime?.getTime()}:${s.size}:${s.ino}`;
      } catch {
        return `${f}:missing`;
      }
    }));
    return parts.join("|");
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;
  const poll = async () => {
    const now = await signature();
    if (seen === "" || now === "") {
      seen = now;
    } else if (now !== seen) {
      if (now === pending) {
        seen = now;
        pending = "";
        log.info("certificate or key file changed on disk; loading it");
        await reloadCertificates();
      } else {
        pending = now;
      }
    } else {
      pending = "";
    }
    if (!closed) timer = setTimeout(poll, certCheckMs);
  };
  const watching = certCheckMs > 0
    ? signature().then((s) => {
      seen = s;
      if (!closed) timer = setTimeout(poll, certCheckMs);
    })
    : Promise.resolve();

  return {
    reload,
    reloadCertificates,
    watching,
    [Symbol.dispose]() {
      closed = true;
      clearTimeout(timer);
      if (signal) Deno.removeSignalListener(signal, onSignal);
    },
  };
}
