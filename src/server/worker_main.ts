/**
 * The body of one `server.workers` worker: the same configuration, app and listener as the
 * main thread, on the port the main thread holds. Its log lines go to the main thread.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { loadConfig } from "../config/load.ts";
import { createLogger, type Logger, loggerOptions } from "../log/logger.ts";
import { buildApp } from "../routes/build.ts";
import { type RunningServer, startServer } from "./server.ts";
import type { WorkerMessage } from "./workers.ts";

let server: RunningServer | undefined;
let log: Logger | undefined;
let flags: WorkerMessage & { type: "start" };

const post = (message: WorkerMessage) => self.postMessage(message);

async function load() {
  const loaded = await loadConfig({ ...flags.flags, port: flags.port });
  return loaded.config;
}

self.onmessage = async ({ data }: MessageEvent<WorkerMessage>) => {
  try {
    if (data.type === "start") {
      flags = data;
      const config = await load();
      log = createLogger({
        ...loggerOptions(config.logging),
        forward: (console, file) => post({ type: "log", console, file }),
      });
      server = await startServer(config, log, buildApp(config, log), { sharePort: true });
      post({ type: "ready" });
    } else if (data.type === "reload" && server && log) {
      const config = await load();
      await server.reload(config, buildApp(config, log));
    } else if (data.type === "stop") {
      await server?.shutdown(data.timeoutMs);
      await log?.close();
      post({ type: "stopped" });
      self.close();
    }
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    if (data.type === "start") post({ type: "failed", message });
    else log?.error(`worker ${self.name}: ${message}`);
  }
};
