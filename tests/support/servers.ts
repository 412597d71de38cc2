/**
 * The real server started in this process on 127.0.0.1 and a free port, with a logger that
 * keeps its lines for the test to read.
 *
 * @module
 */
import { type Booted, bootLoaded } from "../../src/app/boot.ts";
import { validate } from "../../src/config/load.ts";
import type { Config } from "../../src/config/schema.ts";
import { createLogger, type Logger } from "../../src/log/logger.ts";
import { type RunningServer, startServer } from "../../src/server/server.ts";

/** Lines a test logger collected. */
export interface CapturedLog extends Logger {
  lines: string[];
}

/**
 * A logger that keeps lines in memory instead of printing them. Access lines (on, as shipped,
 * unless `access` is false) are formatted by the real logger and kept as `ACCESS <line>` once it
 * flushes them.
 */
export function captureLogger(
  level: Config["logging"]["level"] = "DEBUG",
  access = true,
): CapturedLog {
  const lines: string[] = [];
  const base = createLogger({
    level,
    access,
    forward: (text) => {
      for (const line of text.split("\n")) if (line) lines.push(`ACCESS ${line}`);
    },
  });
  const keep = (lvl: string) => (m: string) => {
    if (base.enabled(lvl as Config["logging"]["level"])) lines.push(`${lvl} ${m}`);
  };
  return {
    ...base,
    lines,
    debug: keep("DEBUG"),
    info: keep("INFO"),
    warn: keep("WARNING"),
    error: keep("ERROR"),
  };
}

/**
 * `raw` configuration (what a config.yaml parses to) through the start's own boot path
 * (`app/boot.ts`): every check, its warnings logged to `log`, the route table built. Rejects as a
 * start refuses.
 */
export async function bootRaw(raw: Record<string, unknown>, log: Logger): Promise<Booted> {
  return await bootLoaded(validate(raw), log);
}

/** A server started in this process on 127.0.0.1 and a free port. */
export interface TestServer extends AsyncDisposable {
  url: string;
  server: RunningServer;
  config: Config;
  log: CapturedLog;
}

/**
 * Starts the real server with `raw` configuration merged over port 0 (with HTTP/3 a free port
 * below the ephemeral range) on 127.0.0.1, otherwise on the shipped defaults (access log on, to
 * the test's logger), booted as a start boots ({@link bootRaw}); dispose it to stop it.
 */
export async function startTestServer(raw: Record<string, unknown>): Promise<TestServer> {
  const merged = structuredClone(raw) as Record<string, Record<string, unknown>>;
  // HTTP/3 takes the TCP port's number over UDP too, which an ephemeral port (port 0) may
  // already be as some client's UDP socket: such a server gets a port below that range.
  const port = merged.ssl?.http3 ? freePort() : 0;
  merged.server = { host: "127.0.0.1", port, ...merged.server };
  const loaded = validate(merged);
  const log = captureLogger(loaded.config.logging.level, loaded.config.logging.access_log);
  const { config, app } = await bootLoaded(loaded, log);
  const server = await startServer(config, log, app);
  return {
    url: server.url.replace(/\/$/, ""),
    server,
    config,
    log,
    async [Symbol.asyncDispose]() {
      await server.shutdown(2000);
    },
  };
}

/**
 * The real server with one proxy rule, `path: /` to 127.0.0.1:`port` with `rule`'s keys, an empty
 * static folder of its own (removed on dispose) and `server` merged into the server section.
 */
export async function startProxyServer(
  port: number,
  rule: Record<string, unknown> = {},
  server: Record<string, unknown> = {},
): Promise<TestServer> {
  const dir = await Deno.makeTempDir({ prefix: "denoserve-proxy-" });
  const s = await startTestServer({
    http: { static_dir: dir },
    server: { ...server, reverse_proxy: [{ path: "/", host: "127.0.0.1", port, ...rule }] },
  }).catch(async (e) => {
    await Deno.remove(dir, { recursive: true });
    throw e;
  });
  const stop = s[Symbol.asyncDispose].bind(s);
  return Object.assign(s, {
    async [Symbol.asyncDispose]() {
      await stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  });
}

/**
 * Ports {@link freePort} picks from: below Linux's ephemeral range (32768–60999), from which the
 * system picks for `port: 0` and outgoing connections, so that no server of a test running
 * alongside can take the port between the check and its use.
 */
const FREE_PORTS = { from: 20000, to: 32767 };

/** The next port {@link freePort} tries: in turn from a random start, so no port comes twice. */
let nextFree = FREE_PORTS.from +
  Math.floor(Math.random() * (FREE_PORTS.to - FREE_PORTS.from + 1));

/** A port nothing listens on right now (a dead backend, or one to start a server on later). */
export function freePort(): number {
  for (let tried = FREE_PORTS.from; tried <= FREE_PORTS.to; tried++) {
    const port = nextFree;
    nextFree = port === FREE_PORTS.to ? FREE_PORTS.from : port + 1;
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch (e) {
      if (!(e instanceof Deno.errors.AddrInUse)) throw e;
    }
  }
  throw new Error(`no free port on 127.0.0.1 from ${FREE_PORTS.from} to ${FREE_PORTS.to}`);
}
