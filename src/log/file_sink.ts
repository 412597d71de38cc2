/**
 * A log file written in the background: lines are buffered in memory and appended by one
 * asynchronous writer, which also rotates the file by size.
 *
 * Rotation happens between lines, inside the writer, so a line is never split, lost or written
 * out of order, however many requests log at once: `denoserve.log` becomes `denoserve.log.1`,
 * `.1` becomes `.2` … and the one past `backups` is dropped.
 *
 * @module
 */
import { dirname } from "node:path";
import { explainError } from "../http/errors.ts";
import { LineChunks } from "./line_chunks.ts";

/** Options of {@link openFileSink}. */
export interface FileSinkOptions {
  /** The file appended to; its folder is created when missing. */
  path: string;
  /** Rotate by size. Default false (the file grows without bound). */
  rotate?: boolean;
  /** Size in bytes past which the file is rotated. Default 10 MiB. */
  maxBytes?: number;
  /** Rotated files kept (`.1` … `.N`); 0 truncates instead. Default 5. */
  backups?: number;
  /** Milliseconds a line may wait in memory before it is written. Default 50. */
  delayMs?: number;
  /** Where write failures are reported. Default standard error. */
  report?: (message: string) => void;
}

/** A buffered, rotating log file. */
export interface FileSink {
  /** Queues one line; `line` must end with "\n". */
  write(line: string): void;
  /** Starts writing what is queued without waiting for it. */
  flush(): void;
  /** Writes everything queued, then closes the file. */
  close(): Promise<void>;
}

const NEWLINE = 10;

const ignoreNotFound = (e: unknown) => {
  if (!(e instanceof Deno.errors.NotFound)) throw e;
};

/** Opens (creating, appending) the log file; throws when it cannot be opened. */
export function openFileSink(options: FileSinkOptions): FileSink {
  const { path } = options;
  const rotate = options.rotate ?? false;
  const maxBytes = options.maxBytes ?? 10 * 1024 * 1024;
  const backups = options.backups ?? 5;
  const delayMs = options.delayMs ?? 50;
  const report = options.report ??
    ((m: string) => Deno.stderr.writeSync(new TextEncoder().encode(`denoserve: ${m}\n`)));

  Deno.mkdirSync(dirname(path), { recursive: true });
  let file = Deno.openSync(path, { create: true, append: true });
  let size = file.statSync().size;
  const queue = new LineChunks();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let writing: Promise<void> | undefined;
  let closed = false;
  let failing = false;

  const rollOver = async () => {
    file.close();
    if (backups === 0) {
      await Deno.remove(path).catch(ignoreNotFound);
    } else {
      for (let i = backups - 1; i >= 1; i--) {
        await Deno.rename(`${path}.${i}`, `${path}.${i + 1}`).catch(ignoreNotFound);
      }
      await Deno.rename(path, `${path}.1`).catch(ignoreNotFound);
    }
    file = await Deno.open(path, { create: true, append: true });
    size = 0;
  };

  const writeAll = async (data: Uint8Array) => {
    let n = 0;
    while (n < data.length) n += await file.write(data.subarray(n));
  };

  /** Appends `data` (whole lines), rotating between lines so that no file passes maxBytes. */
  const append = async (data: Uint8Array) => {
    let start = 0;
    while (start < data.length) {
      let end = data.length;
      if (rotate && size + (end - start) > maxBytes) {
        const room = maxBytes - size;
        const cut = room > 0 ? data.lastIndexOf(NEWLINE, start + room - 1) : -1;
        if (cut >= start) {
          end = cut + 1;
        } else if (size > 0) {
          await rollOver();
          continue;
        } else {
          // One line longer than maxBytes: it gets a file of its own rather than being cut.
          const nl = data.indexOf(NEWLINE, start);
          end = nl < 0 ? data.length : nl + 1;
        }
      }
      await writeAll(data.subarray(start, end));
      size += end - start;
      start = end;
    }
  };

  const drain = async () => {
    while (!queue.empty) {
      const data = queue.take();
      try {
        await append(data);
        failing = false;
      } catch (e) {
        // Reported once per failing stretch; the lines of a failed write are dropped so that a
        // broken disk cannot make memory grow without bound.
        if (!failing) report(`cannot write log file ${path}: ${explainError(e)}`);
        failing = true;
        try {
          file.close();
        } catch { /* already closed */ }
        try {
          file = await Deno.open(path, { create: true, append: true });
          size = (await file.stat()).size;
        } catch { /* retried on the next write */ }
      }
    }
    writing = undefined;
  };

  const flush = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (writing === undefined && !queue.empty) writing = drain();
  };

  return {
    write(line) {
      if (closed) return;
      const full = queue.add(line);
      if (writing !== undefined) return; // the running drain picks it up
      if (full) flush();
      else if (timer === undefined) timer = setTimeout(flush, delayMs);
    },
    flush,
    async close() {
      if (closed) return;
      flush();
      closed = true;
      while (writing !== undefined) await writing;
      try {
        file.close();
      } catch { /* already closed after a failure */ }
    },
  };
}
