/**
 * `server.workers`: more event loops on the same port. Each worker is a Web Worker (its own
 * isolate and thread) that loads the same configuration and listens with SO_REUSEPORT, so the
 * kernel spreads new connections across them. The main thread serves too, owns signals and the
 * log file, and tells the workers to reload or stop.
 *
 * @module
 */
import type { Flags } from "../cli/flags.ts";
import type { Logger } from "../log/logger.ts";

/** Messages between the main thread and a worker. */
export type WorkerMessage =
  | { type: "start"; flags: Partial<Flags>; port: number }
  | { type: "reload" }
  | { type: "stop"; timeoutMs: number }
  | { type: "ready" }
  | { type: "failed"; message: string }
  | { type: "stopped" }
  | { type: "log"; console: string; file: string };

/** The workers started beside the main thread. */
export interface WorkerPool {
  /** How many run. */
  readonly size: number;
  /** Asks each worker to read the configuration again. */
  reload(): void;
  /** Lets each worker finish its in-flight requests, then ends it. */
  stop(timeoutMs: number): Promise<void>;
}

/** The number of event loops `server.workers` asks for. */
export function workerCount(setting: number | "auto"): number {
  return setting === "auto" ? Math.max(1, navigator.hardwareConcurrency || 1) : setting;
}

/**
 * Starts `count` workers serving on `port` with the configuration `flags` select. Resolves once
 * every worker listens; rejects (after ending them all) when one cannot start.
 */
export async function startWorkers(
  count: number,
  flags: Partial<Flags>,
  port: number,
  log: Logger,
): Promise<WorkerPool> {
  const workers: Worker[] = [];
  const stopped: Promise<void>[] = [];
  const ready: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const worker = new Worker(new URL("./worker_main.ts", import.meta.url).href, {
      type: "module",
      name: `denoserve-worker-${i + 1}`,
    });
    const started = Promise.withResolvers<void>();
    const done = Promise.withResolvers<void>();
    worker.onmessage = ({ data }: MessageEvent<WorkerMessage>) => {
      if (data.type === "ready") started.resolve();
      else if (data.type === "failed") started.reject(new Error(data.message));
      else if (data.type === "stopped") done.resolve();
      else if (data.type === "log") log.forward(data.console, data.file);
    };
    worker.onerror = (e) => {
      e.preventDefault();
      started.reject(new Error(e.message));
      done.resolve();
    };
    worker.postMessage({ type: "start", flags, port } satisfies WorkerMessage);
    workers.push(worker);
    ready.push(started.promise);
    stopped.push(done.promise);
  }
  const pool: WorkerPool = {
    size: count,
    reload() {
      for (const w of workers) w.postMessage({ type: "reload" } satisfies WorkerMessage);
    },
    async stop(timeoutMs) {
      for (const w of workers) w.postMessage({ type: "stop", timeoutMs } satisfies WorkerMessage);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.all(stopped),
        new Promise((r) => timer = setTimeout(r, timeoutMs + 1000)),
      ]);
      clearTimeout(timer);
      for (const w of workers) w.terminate();
    },
  };
  try {
    await Promise.all(ready);
  } catch (e) {
    for (const w of workers) w.terminate();
    throw e;
  }
  return pool;
}
