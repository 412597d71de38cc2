/**
 * Logging: levels, a buffered console sink, and one access line per request.
 *
 * Lines are collected and written in one go at most every few milliseconds, so that a busy
 * server pays for a string push per request, not a write system call.
 *
 * @module
 */
import type { LogLevel } from "../config/schema.ts";

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

/** One finished request, as the access log sees it. */
export interface AccessRecord {
  method: string;
  path: string;
  status: number;
  bytes: number | null;
  durationMs: number;
  clientIp: string;
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
}

/** The logger every module is handed. */
export interface Logger {
  readonly level: LogLevel;
  enabled(level: LogLevel): boolean;
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
  /** Whether access lines are written at all (lets the server skip measuring). */
  readonly accessEnabled: boolean;
  access(record: AccessRecord): void;
  /** Writes out everything buffered. */
  flush(): void;
}

/** Creates a logger writing to standard error. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? "INFO";
  const min = RANK[level];
  const toConsole = options.console ?? true;
  const colors = (options.colors ?? true) && Deno.stderr.isTerminal() &&
    !Deno.env.get("NO_COLOR");
  const encoder = new TextEncoder();
  let buffer: string[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;

  const flush = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (buffer.length === 0) return;
    const data = encoder.encode(buffer.join(""));
    buffer = [];
    let written = 0;
    while (written < data.length) written += Deno.stderr.writeSync(data.subarray(written));
  };
  const push = (line: string) => {
    if (!toConsole) return;
    buffer.push(line);
    if (buffer.length >= 512) flush();
    else if (timer === undefined) timer = setTimeout(flush, 20);
  };
  const write = (lvl: LogLevel, message: string) => {
    if (RANK[lvl] < min) return;
    const name = colors ? `${COLOR[lvl]}${lvl}\x1b[0m` : lvl;
    push(`${new Date().toISOString()} ${name} ${message}\n`);
    if (RANK[lvl] >= RANK.WARNING) flush();
  };
  const accessEnabled = (options.access ?? true) && toConsole && min <= RANK.INFO;
  return {
    level,
    enabled: (lvl) => RANK[lvl] >= min,
    debug: (m) => write("DEBUG", m),
    info: (m) => write("INFO", m),
    warn: (m) => write("WARNING", m),
    error: (m) => write("ERROR", m),
    accessEnabled,
    access(r) {
      if (!accessEnabled) return;
      write(
        "INFO",
        `${r.clientIp} "${r.method} ${r.path}" ${r.status} ${r.bytes ?? "-"} ${
          r.durationMs.toFixed(1)
        }ms`,
      );
    },
    flush,
  };
}
