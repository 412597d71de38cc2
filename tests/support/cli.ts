/**
 * Programs run as child processes: the real CLI (`main.ts`, to completion or as a server),
 * curl, and a check for tools a test needs.
 *
 * @module
 */
import { ROOT } from "./files.ts";

/** main.ts, for child-process runs. */
export const MAIN = `${ROOT}/main.ts`;

/** Output of a finished CLI run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@link runCli} and {@link spawnCli}. */
export interface CliOptions {
  /** Working folder. Default the repository's root. */
  cwd?: string;
  /** Added to the environment (NO_COLOR=1 is always set). */
  env?: Record<string, string>;
  /** Deno permission flags. Default `-A`. */
  permissions?: string[];
  /**
   * {@link spawnCli}: wait for the "serving … on URL" line before returning. Default true; with
   * false, `url` is "" until that line has been printed (see {@link CliServer.waitFor}).
   */
  waitServing?: boolean;
}

/** The `deno run` command for `main.ts` with `args`. */
function cliCommand(args: string[], options: CliOptions, piped: boolean): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--unstable-net", ...(options.permissions ?? ["-A"]), MAIN, ...args],
    cwd: options.cwd ?? ROOT,
    env: { NO_COLOR: "1", ...options.env },
    stdin: "null",
    ...(piped ? { stdout: "piped", stderr: "piped" } as const : {}),
  });
}

/** Runs `main.ts` with `args` (all permissions unless `permissions` is given). */
export async function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const out = await cliCommand(args, options, false).output();
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
export async function spawnCli(args: string[], options: CliOptions = {}): Promise<CliServer> {
  const process = cliCommand(args, options, true).spawn();
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
  const serving = / on (https?:\/\/\S+?)\/? /;
  if (options.waitServing ?? true) {
    try {
      await waitFor(serving);
    } catch (e) {
      await stop("SIGKILL");
      throw e;
    }
  }
  return {
    get url() {
      return serving.exec(text)?.[1] ?? "";
    },
    process,
    output: () => text,
    waitFor,
    stop,
    async [Symbol.asyncDispose]() {
      await stop("SIGKILL");
    },
  };
}

/** Runs curl with `args`; resolves to its exit code and output. */
export async function curl(args: string[]): Promise<CliResult> {
  const out = await new Deno.Command("curl", { args: ["-sS", ...args], stdin: "null" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Whether a command exists on PATH. */
export function hasCommand(name: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch { /* not here */ }
  }
  return null;
}

/**
 * Deno's cache folder, for a child given another HOME (which would otherwise fetch every package
 * again into a cache of its own).
 */
export const DENO_DIR: string = Deno.env.get("DENO_DIR") ??
  JSON.parse(
    new TextDecoder().decode(
      (await new Deno.Command(Deno.execPath(), { args: ["info", "--json"] }).output()).stdout,
    ),
  ).denoDir;
