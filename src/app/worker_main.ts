/**
 * The body of one `server.workers` worker: the same configuration, app and listener as the
 * main thread, on the port the main thread holds. Its log lines go to the main thread.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { boot, build, loadChecked } from "./boot.ts";
import { createLogger, type Logger, loggerOptions } from "../log/logger.ts";
import { type RunningServer, startServer } from "../server/server.ts";
import { applyReload, oneLine } from "./reload.ts";
import type { WorkerMessage } from "./workers.ts";

let server: RunningServer | undefined;
let log: Logger | undefined;
let flags: WorkerMessage & { type: "start" };

const post = (message: WorkerMessage) => self.postMessage(message);
const debug = () => flags?.flags.debug ?? false;

/** The main thread's boot path, on the port it holds: a worker refuses what the main refuses. */
const overrides = () => ({ ...flags.flags, port: flags.port });
/** The main thread has said the warnings (and probed the backends) already. */
const quiet = { logWarnings: false };

async function handle(data: WorkerMessage) {
  try {
    if (data.type === "start") {
      flags = data;
      const checked = await loadChecked(overrides());
      log = createLogger({
        ...loggerOptions(checked.config.logging),
        forward: (console, file) => post({ type: "log", console, file }),
      });
      server = await startServer(checked.config, log, build(checked, log, quiet), {
        sharePort: true,
      });
      server.finished.catch(() => post({ type: "lost" })); // already logged by the server
      post({ type: "ready" });
    } else if (data.type === "reload") {
      if (!server || !log) throw new Error("it is not serving");
      const logger = log;
      await applyReload(server, () => boot(overrides(), logger, quiet));
      post({ type: "reloaded", id: data.id });
    } else if (data.type === "stop") {
      await server?.shutdown(data.timeoutMs);
      await log?.close();
      post({ type: "stopped" });
      self.close();
    }
  } catch (e) {
    if (data.type === "start") {
      post({ type: "failed", message: e instanceof Error ? e.message : String(e) });
    } else if (data.type === "reload") {
      post({ type: "reload-failed", id: data.id, message: oneLine(e, debug()) });
    } else log?.error(`worker ${self.name}: ${oneLine(e, debug())}`);
  }
}

// One message at a time, in order: a second reload waits for the first, and a stop for both.
let queue: Promise<void> = Promise.resolve();
self.onmessage = ({ data }: MessageEvent<WorkerMessage>) => {
  queue = queue.then(() => handle(data));
};
