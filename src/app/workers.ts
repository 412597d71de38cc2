/**
 * `server.workers`: more event loops on the same port. Each worker is a Web Worker (its own
 * isolate and thread) that loads the same configuration and listens with SO_REUSEPORT, so the
 * kernel spreads new connections across them. The main thread serves too, owns signals and the
 * log file, and tells the workers to reload or stop. Each worker answers a reload with whether it
 * took the new configuration, so the main thread knows when all of them serve it.
 *
 * @module
 */
import type { Overrides } from "../config/overrides.ts";
import type { Logger } from "../log/logger.ts";
import { ListenerLost } from "../server/server.ts";

/** Messages between the main thread and a worker. */
export type WorkerMessage =
  | { type: "start"; flags: Overrides; port: number }
  | { type: "reload"; id: number }
  | { type: "reloaded"; id: number }
  | { type: "reload-failed"; id: number; message: string }
  | { type: "stop"; timeoutMs: number }
  | { type: "ready" }
  | { type: "failed"; message: string }
  | { type: "stopped" }
  | { type: "lost" }
  | { type: "log"; console: string; file: string };

/** The workers started beside the main thread. */
export interface WorkerPool {
  /** How many run. */
  readonly size: number;
  /**
   * Asks each worker to read the configuration again and logs one line once all have answered:
   * how many took it, and an error naming each worker that refused it (that one keeps serving
   * its previous configuration). Resolves then, to the workers that refused.
   */
  reload(): Promise<WorkerRefusal[]>;
  /** Lets each worker finish its in-flight requests, then ends it. */
  stop(timeoutMs: number): Promise<void>;
  /**
   * Rejects with {@link ListenerLost} when a worker's listener stopped accepting by itself (the
   * worker logged why); the process then ends as it does for the main thread's listener.
   */
  readonly lost: Promise<never>;
}

/** A worker that did not take a reload, and why. */
export interface WorkerRefusal {
  worker: string;
  message: string;
  /** True when the worker had stopped or died, false when the new configuration failed in it. */
  ended: boolean;
}

/**
 * Starts `count` workers serving on `port` with the configuration `flags` select. Resolves once
 * every worker listens; rejects (after ending them all) when one cannot start.
 */
export async function startWorkers(
  count: number,
  flags: Overrides,
  port: number,
  log: Logger,
): Promise<WorkerPool> {
  const name = (i: number) => `denoserve-worker-${i + 1}`;
  const workers: Worker[] = [];
  const stopped: Promise<void>[] = [];
  const ready: Promise<void>[] = [];
  // Per worker, the reloads it has not answered yet, by id.
  const pending: Map<number, (refusal?: Omit<WorkerRefusal, "worker">) => void>[] = [];
  const gone: (string | undefined)[] = [];
  const lost = Promise.withResolvers<never>();
  lost.promise.catch(() => {}); // seen by whoever awaits it
  const end = (i: number, reason: string) => {
    gone[i] ??= reason;
    for (const answer of pending[i].values()) answer({ message: reason, ended: true });
    pending[i].clear();
  };
  for (let i = 0; i < count; i++) {
    const worker = new Worker(new URL("./worker_main.ts", import.meta.url).href, {
      type: "module",
      name: name(i),
    });
    const started = Promise.withResolvers<void>();
    const done = Promise.withResolvers<void>();
    pending.push(new Map());
    gone.push(undefined);
    const answer = (id: number, refusal?: Omit<WorkerRefusal, "worker">) => {
      pending[i].get(id)?.(refusal);
      pending[i].delete(id);
    };
    worker.onmessage = ({ data }: MessageEvent<WorkerMessage>) => {
      if (data.type === "ready") started.resolve();
      else if (data.type === "failed") started.reject(new Error(data.message));
      else if (data.type === "reloaded") answer(data.id);
      else if (data.type === "reload-failed") {
        answer(data.id, { message: data.message, ended: false });
      } else if (data.type === "stopped") {
        end(i, "it has stopped");
        done.resolve();
      } else if (data.type === "lost") {
        lost.reject(new ListenerLost(`the listener of ${name(i)} stopped`));
      } else if (data.type === "log") log.forward(data.console, data.file);
    };
    worker.onerror = (e) => {
      e.preventDefault();
      started.reject(new Error(e.message));
      end(i, `it ended: ${e.message}`);
      done.resolve();
    };
    worker.postMessage({ type: "start", flags, port } satisfies WorkerMessage);
    workers.push(worker);
    ready.push(started.promise);
    stopped.push(done.promise);
  }
  let lastId = 0;
  const pool: WorkerPool = {
    size: count,
    lost: lost.promise,
    async reload() {
      const id = ++lastId;
      const answers = workers.map((w, i) => {
        type Answer = Omit<WorkerRefusal, "worker"> | undefined;
        if (gone[i]) return Promise.resolve<Answer>({ message: gone[i], ended: true });
        const { promise, resolve } = Promise.withResolvers<Answer>();
        pending[i].set(id, resolve);
        w.postMessage({ type: "reload", id } satisfies WorkerMessage);
        return promise;
      });
      const refusals: WorkerRefusal[] = [];
      (await Promise.all(answers)).forEach((refusal, i) => {
        if (refusal) refusals.push({ worker: name(i), ...refusal });
      });
      // Workers that refused for the same reason (a configuration that does not load) share a line.
      const byReason = Map.groupBy(refusals, (r) => `${r.ended}\n${r.message}`);
      for (const group of byReason.values()) {
        const { ended, message } = group[0];
        const who = `${group.length > 1 ? "workers" : "worker"} ${
          group.map((r) => r.worker).join(", ")
        }`;
        log.error(
          ended
            ? `${who} did not reload: ${message}`
            : `reload failed in ${who}, still serving the previous configuration: ${message}`,
        );
      }
      const took = count - refusals.length;
      const of = took === count ? "" : `${took} of `;
      if (took) log.info(`reloaded configuration in ${of}${count} workers beside the main thread`);
      return refusals;
    },
    async stop(timeoutMs) {
      for (const w of workers) w.postMessage({ type: "stop", timeoutMs } satisfies WorkerMessage);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.all(stopped),
        new Promise((r) => timer = setTimeout(r, timeoutMs + 1000)),
      ]);
      clearTimeout(timer);
      workers.forEach((w, i) => {
        w.terminate();
        end(i, "it has stopped");
      });
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
