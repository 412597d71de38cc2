/**
 * The command: flags in, exit status out. A start checks and builds its configuration through
 * `app/boot.ts` (as each worker, every reload and `--test configuration` do), opens ACME's port-80
 * listener and the server's listeners through `server/`, then starts `app/`'s workers and reload
 * watcher, and stops them all on SIGINT or SIGTERM.
 *
 * @module
 */
import denoJson from "../../deno.json" with { type: "json" };
import { ConfigError } from "../config/config_error.ts";
import { type Config, isRedisStorage } from "../config/schema.ts";
import { createLogger, type Logger, loggerOptions } from "../log/logger.ts";
import type { App } from "../routes/build.ts";
import { boot, build, type CheckedConfig, CheckFailed, loadChecked } from "../app/boot.ts";
import { type Reloader, watchReload } from "../app/reload.ts";
import {
  connectionLimits,
  ListenerLost,
  type RunningServer,
  startServer,
} from "../server/server.ts";
import { timeoutsMs, workerCount } from "../config/derived.ts";
import { type ChallengeListener, listenForChallenges } from "../server/challenge_listener.ts";
import { startWorkers, type WorkerPool } from "../app/workers.ts";
import type { AcmeManager } from "../tls/acme/mod.ts";
import { TlsError } from "../tls/certs.ts";
import { runSslConfig } from "./ssl_config.ts";
import {
  keepRenewing,
  type LocalHttps,
  localHttpsLines,
  prepareLocalHttps,
  usesLocalCa,
} from "./local_https.ts";
import { networkAddresses, reachOf, urlFor } from "./addresses.ts";
import { runChecks } from "./test_command.ts";
import { explainError } from "../http/errors.ts";
import { type Flags, parseFlags, USAGE, UsageError } from "./flags.ts";

/** The version from deno.json. */
export const VERSION: string = denoJson.version;

const stderr = (line: string) => console.error(`denoserve: ${line}`);

/**
 * Reports why the server cannot start, with the exit code: every problem of a configuration on a
 * line of its own (so that one start shows them all), anything else in one line.
 */
function refuse(e: unknown, debug: boolean): number {
  if (!(e instanceof ConfigError)) {
    stderr(explainError(e, debug));
    return 1;
  }
  // What `--test configuration` prints as WARN beside the failures.
  if (e instanceof CheckFailed) { for (const w of e.warnings) stderr(`warning: ${w}`); }
  for (const line of e.message.split("\n")) stderr(line);
  return e.code;
}

/** Runs denoserve with `args`; resolves to the exit status. */
export async function run(args: string[]): Promise<number> {
  let flags: Flags;
  try {
    flags = parseFlags(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    stderr(e.message);
    console.error(USAGE);
    return 2;
  }
  if (flags.help) {
    console.log(USAGE);
    return 0;
  }
  if (flags.version) {
    console.log(`denoserve ${VERSION}`);
    return 0;
  }
  if (flags.command === "trust" || flags.command === "untrust") {
    const { runTrust } = await import("./trust.ts");
    return await runTrust(flags.command === "trust");
  }
  if (flags.command === "permissions") {
    const { runPermissions } = await import("./permissions.ts");
    return await runPermissions(flags, args);
  }
  if (flags.sslConfig) return await runSslConfig(flags);
  if (flags.test) return await runChecks(flags, flags.test);
  if (flags.folder !== undefined) {
    // A folder named on the command line must be there (a configured one may come later).
    const info = await Deno.stat(flags.folder).catch((e) => e as Error);
    if (info instanceof Deno.errors.NotFound || (!(info instanceof Error) && !info.isDirectory)) {
      stderr(`${flags.folder} is not a folder; name the folder to serve`);
      return 2;
    }
  }
  let checked: CheckedConfig;
  let local: LocalHttps | undefined;
  try {
    checked = await loadChecked(flags, { backends: !flags.skipProxyCheck });
    if (usesLocalCa(checked.config)) {
      // The leaf's files are given as --cert and --key would be: a reload and each worker load
      // the same pair, and the file watch takes each renewal.
      local = await prepareLocalHttps(checked.config);
      flags = { ...flags, cert: local.leaf.cert, key: local.leaf.key };
      checked = await loadChecked(flags, { backends: !flags.skipProxyCheck });
    }
  } catch (e) {
    return refuse(e, flags.debug);
  }
  const { config } = checked;
  let log: Logger;
  try {
    log = createLogger(loggerOptions(config.logging));
  } catch (e) {
    stderr(
      `logging.log_file: cannot open ${config.logging.log_file}: ${explainError(e, flags.debug)}`,
    );
    return 2;
  }
  try {
    return await serve(checked, log, flags, local);
  } finally {
    await log.close();
  }
}

async function serve(
  checked: CheckedConfig,
  log: Logger,
  flags: Flags,
  local?: LocalHttps,
): Promise<number> {
  const { config } = checked;
  let app: App;
  try {
    app = build(checked, log);
  } catch (e) {
    return refuse(e, flags.debug);
  }
  // With ACME, the first certificate must be there before the HTTPS listener opens; renewals
  // land in the same files, which the reloader below watches. With Redis storage there are no
  // files: each certificate is handed to the server in memory and swapped in by the reloader.
  const firstCertificate = Promise.withResolvers<void>();
  let acme: AcmeManager | undefined;
  let port80: ChallengeListener | undefined;
  let inMemory: { cert: string; key: string; source: string } | undefined;
  const reloading: { reloader?: Reloader } = {};
  const keptInMemory = config.ssl.enabled && config.ssl.acme !== undefined &&
    isRedisStorage(config.ssl.acme.storage);
  if (config.ssl.enabled && config.ssl.acme) {
    try {
      // Loaded only when used: the ACME client library reads the whole environment at import.
      const { acmeManagerFor } = await import("../tls/acme/mod.ts");
      acme = acmeManagerFor(config, log, (cert, key) => {
        if (keptInMemory) {
          inMemory = { cert, key, source: `the certificate from ${acme!.storageWhere}` };
          void reloading.reloader?.reloadCertificates();
        }
        firstCertificate.resolve();
      })!;
      // Open before the first order: the CA fetches its challenge answers here.
      port80 = listenForChallenges({
        hostname: config.server.host,
        port: config.ssl.acme.http_port,
        challenges: acme.handleChallenge,
        httpsPort: config.server.port,
        timeouts: timeoutsMs(config),
        maxPerIp: config.server.max_connections_per_ip,
        log,
      });
      await acme.start();
    } catch (e) {
      await port80?.shutdown();
      return refuse(e, flags.debug);
    }
    if (!acme!.certificate) {
      log.info(`waiting for the first certificate for ${config.ssl.acme!.domains.join(", ")}`);
      log.flush();
      await firstCertificate.promise;
    }
  }
  let server: RunningServer;
  try {
    // Port 80 (the ACME challenge listener) redirects to wherever HTTPS really listens.
    server = await startServer(config, log, app, {
      onListen: (addr) => port80?.redirectTo(addr.port),
      certificate: keptInMemory ? () => inMemory : undefined,
    });
  } catch (e) {
    if (e instanceof TlsError) {
      stderr(e.message);
      return e.code;
    }
    const reason = e instanceof Deno.errors.AddrInUse
      ? `${config.server.host}:${config.server.port} is already in use`
      : explainError(e, flags.debug);
    stderr(`cannot listen: ${reason}`);
    return 1;
  }
  // Listening for SIGHUP before saying where we serve: a reload asked for right after that
  // line must not meet the signal's default action (exit).
  using watcher = watchReload({
    server,
    log,
    debug: flags.debug,
    // Port 80 takes the new timeouts and per-address limit as every listener does.
    reloaded: (next) => port80?.retime(timeoutsMs(next), next.server.max_connections_per_ip),
    prepare: async () => {
      const next = await boot(flags, log);
      if (usesLocalCa(next.config)) {
        next.app.close();
        throw new ConfigError(
          "ssl: HTTPS without certificate files or ACME uses the local CA, which is set up at " +
            "start; restart denoserve to turn it on",
        );
      }
      return next;
    },
  });
  reloading.reloader = watcher;
  // One that arrived between the start of the listener and now.
  if (inMemory && server.tls?.cert !== inMemory.cert) void watcher.reloadCertificates();
  const extra = workerCount(config.server.workers) - 1;
  let pool: WorkerPool | undefined;
  if (extra > 0) {
    try {
      pool = await startWorkers(extra, flags, server.addr.port, log);
    } catch (e) {
      stderr(`cannot start workers: ${explainError(e, flags.debug)}`);
      await server.shutdown(0);
      return 1;
    }
  }
  const reloadWorkers = () => void pool?.reload();
  if (pool && Deno.build.os !== "windows") Deno.addSignalListener("SIGHUP", reloadWorkers);
  log.info(
    `denoserve ${VERSION} serving ${config.http.static_dir} on ${server.url}` +
      (checked.file ? ` (config ${checked.file})` : " (built-in defaults)") +
      (pool ? ` with ${pool.size + 1} workers` : "") + limitsOf(config) +
      (config.server.proxy_protocol
        ? `; PROXY protocol required, from ${config.server.proxy_protocol_from.join(", ")}`
        : "") +
      (config.sites.length
        ? `; by Host also ${config.sites.length === 1 ? "site" : `${config.sites.length} sites`} ` +
          config.sites.slice(0, 5).map((s) => s.names[0]).join(", ") +
          (config.sites.length > 5 ? ", …" : "")
        : ""),
  );
  for (const line of bannerLines(server, config)) log.info(line);
  if (local) { for (const line of localHttpsLines(local)) log.info(line); }
  using _renewing = local
    ? keepRenewing(local, log, () => {
      void watcher.reloadCertificates();
      reloadWorkers();
    })
    : undefined;
  log.flush();
  const stop = () => {
    log.info("shutting down");
    const timeoutMs = server.config.server.shutdown_timeout * 1000;
    pool?.stop(timeoutMs);
    server.shutdown(timeoutMs);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  let status = 0;
  try {
    await (pool ? Promise.race([server.finished, pool.lost]) : server.finished);
  } catch (e) {
    if (!(e instanceof ListenerLost)) throw e;
    status = 1;
    await server.shutdown(0);
  }
  await acme?.stop();
  await port80?.shutdown();
  await pool?.stop(0);
  if (pool && Deno.build.os !== "windows") Deno.removeSignalListener("SIGHUP", reloadWorkers);
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  return status;
}

/** The connection limits for the start banner (every listener has them). */
function limitsOf(config: Config): string {
  const { max, perIp } = connectionLimits(config);
  return (max === 0 ? ", no connection limit" : `, up to ${max} connections`) +
    (perIp > 0 ? ` (${perIp} per client address)` : "");
}

/**
 * Every URL the server answers on, when there is more than the one in the first line: the local
 * names, and on 0.0.0.0 or :: the machine's network addresses.
 */
function bannerLines(server: RunningServer, config: Config): string[] {
  const url = new URL(server.url);
  const scheme = url.protocol.slice(0, -1);
  const port = Number(url.port || (scheme === "https" ? 443 : 80));
  let unlisted: string | undefined;
  const reach = reachOf(config.server.host, () => {
    try {
      return networkAddresses(config.server.host.includes(":"));
    } catch (e) {
      unlisted = explainError(e);
      return [];
    }
  });
  const lines: string[] = [];
  if (reach.local.length) {
    lines.push(`local: ${reach.local.map((h) => urlFor(scheme, h, port)).join("  ")}`);
  }
  if (reach.network.length && reach.local.length) {
    lines.push(`network: ${reach.network.map((h) => urlFor(scheme, h, port)).join("  ")}`);
  }
  if (unlisted) lines.push(`network addresses not listed: ${unlisted}`);
  return lines;
}
