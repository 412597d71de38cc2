/**
 * Test helpers: real servers on port 0, the real CLI as a child process, temp folders, and
 * certificates made with openssl.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { validate } from "../src/config/load.ts";
import type { Config } from "../src/config/schema.ts";
import { createLogger, type Logger } from "../src/log/logger.ts";
import { buildApp } from "../src/routes/build.ts";
import { type RunningServer, startServer } from "../src/server/server.ts";

/** The repository's root folder. */
export const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
/** main.ts, for child-process runs. */
export const MAIN = `${ROOT}/main.ts`;

/** A fresh temp folder, removed by the returned disposer. */
export async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "denoserve-test-" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** Writes `files` (relative path → content) below `dir`, making folders as needed. */
export async function writeFiles(dir: string, files: Record<string, string | Uint8Array>) {
  for (const [name, content] of Object.entries(files)) {
    const path = `${dir}/${name}`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    if (typeof content === "string") await Deno.writeTextFile(path, content);
    else await Deno.writeFile(path, content);
  }
}

/** Lines a test logger collected. */
export interface CapturedLog extends Logger {
  lines: string[];
}

/** A logger that keeps lines in memory instead of printing them. */
export function captureLogger(level: Config["logging"]["level"] = "DEBUG"): CapturedLog {
  const lines: string[] = [];
  const base = createLogger({ level, console: false });
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

/** A server started in this process on 127.0.0.1 and a free port. */
export interface TestServer extends AsyncDisposable {
  url: string;
  server: RunningServer;
  config: Config;
  log: CapturedLog;
}

/**
 * Starts the real server with `raw` configuration (merged over port 0 on 127.0.0.1, access log
 * off); dispose it to stop it.
 */
export async function startTestServer(raw: Record<string, unknown>): Promise<TestServer> {
  const merged = structuredClone(raw) as Record<string, Record<string, unknown>>;
  merged.server = { host: "127.0.0.1", port: 0, ...merged.server };
  merged.logging = { access_log: false, ...merged.logging };
  const { config } = validate(merged);
  const log = captureLogger();
  const server = await startServer(config, log, buildApp(config, log));
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

/** Output of a finished CLI run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `main.ts` with `args` (all permissions unless `permissions` is given). */
export async function runCli(
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; permissions?: string[] } = {},
): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...(options.permissions ?? ["-A"]), MAIN, ...args],
    cwd: options.cwd ?? ROOT,
    env: { NO_COLOR: "1", ...options.env },
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A CLI server running as a child process. */
export interface CliServer extends AsyncDisposable {
  url: string;
  process: Deno.ChildProcess;
  /** Everything it wrote to stderr so far. */
  output(): string;
  /** Waits until its stderr contains `text` (or fails after `ms`). */
  waitFor(text: string | RegExp, ms?: number): Promise<void>;
  /** Sends a signal and waits for the exit status. */
  stop(signal?: Deno.Signal): Promise<number>;
}

/**
 * Starts `main.ts` with `args` as a child process and waits for its "serving … on URL" line.
 * Pass `-p 0` in `args` to get a free port.
 */
export async function spawnCli(
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; permissions?: string[] } = {},
): Promise<CliServer> {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", ...(options.permissions ?? ["-A"]), MAIN, ...args],
    cwd: options.cwd ?? ROOT,
    env: { NO_COLOR: "1", ...options.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const waiters: (() => void)[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      for (const w of waiters.splice(0)) w();
    }
  };
  const pumping = Promise.all([pump(process.stdout), pump(process.stderr)]);
  let exited: number | null = null;
  const status = process.status.then((s) => {
    exited = s.code;
    return s.code;
  });
  const waitFor = async (pattern: string | RegExp, ms = 10_000) => {
    const deadline = Date.now() + ms;
    const found = () => typeof pattern === "string" ? text.includes(pattern) : pattern.test(text);
    while (!found()) {
      if (exited !== null) {
        await pumping;
        if (found()) return;
        throw new Error(`process exited (${exited}) before printing ${pattern}:\n${text}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${pattern}:\n${text}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  };
  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    if (exited === null) {
      try {
        process.kill(signal);
      } catch { /* already gone */ }
    }
    const code = await status;
    await pumping;
    return code;
  };
  try {
    await waitFor(/ on (https?:\/\/\S+?)\/? /);
  } catch (e) {
    await stop("SIGKILL");
    throw e;
  }
  const url = / on (https?:\/\/\S+?)\/? /.exec(text)![1];
  return {
    url,
    process,
    output: () => text,
    waitFor,
    stop,
    async [Symbol.asyncDispose]() {
      await stop("SIGKILL");
    },
  };
}
