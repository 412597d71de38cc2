/**
 * The command: flags in, exit status out.
 *
 * @module
 */
import denoJson from "../../deno.json" with { type: "json" };
import { ConfigError, loadConfig, type LoadedConfig } from "../config/load.ts";
import { createLogger, type Logger } from "../log/logger.ts";
import { checkBackends } from "../proxy/check.ts";
import { type App, buildApp, unsupported } from "../routes/build.ts";
import { type RunningServer, startServer } from "../server/server.ts";
import { explainError } from "./errors.ts";
import { type Flags, parseFlags, USAGE, UsageError } from "./flags.ts";

/** The version from deno.json. */
export const VERSION: string = denoJson.version;

const stderr = (line: string) => console.error(`denoserve: ${line}`);

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
  if (flags.sslConfig || flags.test) {
    stderr(`${flags.sslConfig ? "--ssl-config" : "--test"} is not supported yet`);
    return 2;
  }
  let loaded: LoadedConfig;
  try {
    loaded = await loadConfig(flags);
  } catch (e) {
    stderr(explainError(e, flags.debug));
    return e instanceof ConfigError ? e.code : 1;
  }
  const { config } = loaded;
  const log = createLogger({
    level: config.logging.level,
    console: config.logging.console_output,
    colors: config.logging.use_colors,
    access: config.logging.access_log,
  });
  for (const w of loaded.warnings) log.warn(w);
  const missing = unsupported(config);
  if (missing.length) {
    stderr(`not supported yet: ${missing.join(", ")}`);
    return 2;
  }
  return await serve(loaded, log, flags);
}

async function serve(loaded: LoadedConfig, log: Logger, flags: Flags): Promise<number> {
  const { config } = loaded;
  try {
    await Deno.stat(config.http.static_dir);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    log.warn(
      `static folder ${config.http.static_dir} does not exist; serving a welcome page at /`,
    );
  }
  let app: App;
  try {
    app = buildApp(config, log);
  } catch (e) {
    stderr(explainError(e, flags.debug));
    return e instanceof ConfigError ? e.code : 1;
  }
  if (!flags.skipProxyCheck && config.server.reverse_proxy.length) {
    await checkBackends(config.server.reverse_proxy, log);
  }
  let server: RunningServer;
  try {
    server = await startServer(config, log, app);
  } catch (e) {
    const reason = e instanceof Deno.errors.AddrInUse
      ? `${config.server.host}:${config.server.port} is already in use`
      : explainError(e, flags.debug);
    stderr(`cannot listen: ${reason}`);
    return 1;
  }
  log.info(
    `denoserve ${VERSION} serving ${config.http.static_dir} on ${server.url}` +
      (loaded.file ? ` (config ${loaded.file})` : " (built-in defaults)"),
  );
  log.flush();
  const stop = () => {
    log.info("shutting down");
    server.shutdown();
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await server.finished;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  log.flush();
  return 0;
}
