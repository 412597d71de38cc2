/**
 * Logging: levels, a buffered console sink, an optional rotating file, and one access line per
 * request.
 *
 * Lines are collected and written in one go at most every few milliseconds, so that a busy
 * server pays for building a string per request, not a write system call. Console lines go to
 * standard error; file lines are appended by a background writer (see `file_sink.ts`).
 *
 * @module
 */
import type { Config, LogLevel } from "../config/schema.ts";
import {
  type AccessFormat,
  type AccessRecord,
  formatCommon,
  formatJson,
  isoTime,
} from "./access.ts";
import { type FileSink, openFileSink } from "./file_sink.ts";
import { LineChunks } from "./line_chunks.ts";

export type { AccessFormat, AccessRecord } from "./access.ts";

const RANK: Record<LogLevel, number> = {
  DEBUG: 10,
  INFO: 20,
  WARNING: 30,
  ERROR: 40,
  CRITICAL: 50,
};
const COLOR: Record<LogLevel, string> = {
  DEBUG: "\x1b[90m",
  INFO: "\x1b[36m",
  WARNING: "\x1b[33m",
  ERROR: "\x1b[31m",
  CRITICAL: "\x1b[1;31m",
};

/** Context a line can carry; a request's {@link RequestContext} fits. */
export interface LogFields {
  /** Id of the request the line is about. */
  requestId?: string;
}

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** Lowest level written. Default INFO. */
  level?: LogLevel;
  /** Write to the console (standard error). Default true. */
  console?: boolean;
  /** Colour levels when the console is a terminal and NO_COLOR is unset. Default true. */
  colors?: boolean;
  /** Write access lines. Default true. */
  access?: boolean;
  /** Format of access lines. Default "common". */
  accessFormat?: AccessFormat;
  /** Also append lines to this file. Default: no file. */
  file?: string;
  /** Lines in the file are JSON objects. Default false. */
  structured?: boolean;
  /** Rotate the file by size. Default false. */
  rotate?: boolean;
  /** Size in bytes past which the file is rotated. Default 10 MiB. */
  maxFileSize?: number;
  /** Rotated files kept. Default 5. */
  backups?: number;
  /**
   * Hand finished console and file text to this function (a worker passing its lines to the
   * thread that owns the console and the file) instead of writing them.
   */
  forward?: (consoleText: string, fileText: string) => void;
}

/** The logger every module is handed. */
export interface Logger {
  readonly level: LogLevel;
  enabled(level: LogLevel): boolean;
  /** `fields.requestId` (pass the request's context) ties the line to its request. */
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** Whether access lines are written at all (lets the server skip measuring). */
  readonly accessEnabled: boolean;
  access(record: AccessRecord): void;
  /** Starts writing out everything buffered (the console synchronously). */
  flush(): void;
  /** Writes out everything buffered and closes the log file; call once at shutdown. */
  close(): Promise<void>;
  /** Writes text another logger formatted (see {@link LoggerOptions.forward}). */
  forward(consoleText: string, fileText: string): void;
}

/** {@link LoggerOptions} from the `logging:` section. */
export function loggerOptions(logging: Config["logging"]): LoggerOptions {
  return {
    level: logging.level,
    console: logging.console_output,
    colors: logging.use_colors,
    access: logging.access_log,
    accessFormat: logging.access_format,
    file: logging.log_file,
    structured: logging.structured_logs,
    rotate: logging.use_rotation,
    maxFileSize: logging.max_log_size,
    backups: logging.backup_count,
  };
}

/** Whether console output should be coloured: wanted, a terminal, and NO_COLOR unset. */
export function useColors(wanted: boolean, terminal = Deno.stderr.isTerminal()): boolean {
  return wanted && terminal && !Deno.env.get("NO_COLOR");
}

/**
 * Creates a logger writing to standard error and, with `file`, to that file. Throws when the
 * file cannot be opened.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? "INFO";
  const min = RANK[level];
  const toConsole = options.console ?? true;
  const colors = toConsole && useColors(options.colors ?? true);
  const accessFormat = options.accessFormat ?? "common";
  const structured = options.structured ?? false;
  const forward = options.forward;
  let forwardFile: string[] = [];
  const file: FileSink | undefined = !options.file ? undefined : forward
    ? {
      write: (line) => {
        forwardFile.push(line);
        if (timer === undefined) timer = setTimeout(flushConsole, 20);
      },
      flush: () => flushConsole(),
      close: () => Promise.resolve(flushConsole()),
    }
    : openFileSink({
      path: options.file,
      rotate: options.rotate,
      maxBytes: options.maxFileSize,
      backups: options.backups,
    });

  // Text for another logger stays text (it is posted); text for standard error is encoded at once.
  let buffer: string[] = [];
  const chunks = new LineChunks();
  let timer: ReturnType<typeof setTimeout> | undefined;

  const flushConsole = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (forward) {
      if (buffer.length || forwardFile.length) forward(buffer.join(""), forwardFile.join(""));
      [buffer, forwardFile] = [[], []];
      return;
    }
    if (chunks.empty) return;
    const data = chunks.take();
    let written = 0;
    while (written < data.length) written += Deno.stderr.writeSync(data.subarray(written));
  };
  const toStderr = (line: string) => {
    const full = forward ? buffer.push(line) >= 512 : chunks.add(line);
    if (full) flushConsole();
    else if (timer === undefined) timer = setTimeout(flushConsole, 20);
  };
  const flush = () => {
    flushConsole();
    file?.flush();
  };

  const write = (lvl: LogLevel, message: string, fields?: LogFields) => {
    if (RANK[lvl] < min) return;
    const now = Date.now();
    const time = isoTime(now);
    const id = fields?.requestId;
    const tail = id ? ` [${id}] ${message}\n` : ` ${message}\n`;
    const plain = `${time} ${lvl}${tail}`;
    if (toConsole) toStderr(colors ? `${time} ${COLOR[lvl]}${lvl}\x1b[0m${tail}` : plain);
    if (file) {
      file.write(
        structured
          ? JSON.stringify(
            id
              ? { timestamp: time, level: lvl, message, request_id: id }
              : { timestamp: time, level: lvl, message },
          ) + "\n"
          : plain,
      );
    }
    if (RANK[lvl] >= RANK.WARNING) flush();
  };

  const accessEnabled = (options.access ?? true) && min <= RANK.INFO &&
    (toConsole || file !== undefined);
  const access = (r: AccessRecord) => {
    const now = Date.now();
    const text = accessFormat === "json"
      ? formatJson(r, now)
      : formatCommon(r, accessFormat === "combined", now);
    if (toConsole) toStderr(text);
    if (file) file.write(structured && accessFormat !== "json" ? formatJson(r, now) : text);
  };

  return {
    level,
    enabled: (lvl) => RANK[lvl] >= min,
    debug: (m, f) => write("DEBUG", m, f),
    info: (m, f) => write("INFO", m, f),
    warn: (m, f) => write("WARNING", m, f),
    error: (m, f) => write("ERROR", m, f),
    accessEnabled,
    access: accessEnabled ? access : () => {},
    flush,
    async close() {
      flushConsole();
      await file?.close();
    },
    forward(consoleText, fileText) {
      if (consoleText && toConsole) toStderr(consoleText);
      if (fileText && file) file.write(fileText);
    },
  };
}

/**
 * True at most once per `ms` (the first call included): for a line that would otherwise repeat
 * once per connection or request while a fault lasts.
 */
export function oncePer(ms: number, now: () => number = Date.now): () => boolean {
  let last = -Infinity;
  return () => {
    const t = now();
    if (t - last < ms) return false;
    last = t;
    return true;
  };
}
