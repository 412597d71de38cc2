/**
 * A real HAProxy (Debian package `haproxy`) in front of test servers, run in the foreground with
 * a configuration written by the test.
 *
 * @module
 */
import { hasCommand } from "./cli.ts";
import { tempDir } from "./files.ts";

/** Where haproxy is, or undefined when it is not on PATH (tests using it are ignored). */
export const HAPROXY: string | undefined = hasCommand("haproxy") ?? undefined;

/** A running haproxy. */
export interface Haproxy extends AsyncDisposable {
  /** What it printed so far. */
  output(): string;
  /** Runs one command of the runtime API (`disable server b/s`) and resolves to its answer. */
  admin(command: string): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Starts haproxy with `config` (the text of haproxy.cfg) and waits until each of `ports` on
 * 127.0.0.1 accepts connections. A `global` section with the runtime API's socket is added in
 * front of `config`.
 */
export async function startHaproxy(config: string, ports: number[]): Promise<Haproxy> {
  if (!HAPROXY) throw new Error("haproxy is not installed");
  const dir = await tempDir();
  const socket = `${dir.path}/admin.sock`;
  await Deno.writeTextFile(
    `${dir.path}/haproxy.cfg`,
    `global\n  stats socket ${socket} level admin\n${config}`,
  );
  const child = new Deno.Command(HAPROXY, {
    args: ["-db", "-f", `${dir.path}/haproxy.cfg`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) text += chunk;
  };
  const pumping = Promise.all([pump(child.stdout), pump(child.stderr)]).catch(() => {});
  let exited = false;
  child.status.then(() => exited = true);
  const stop = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    await pumping;
    await dir[Symbol.asyncDispose]();
  };
  const up = async (port: number) => {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return true;
    } catch {
      return false;
    }
  };
  const deadline = Date.now() + 10_000;
  for (const port of ports) {
    while (!await up(port)) {
      if (exited || Date.now() > deadline) {
        await stop();
        throw new Error(`haproxy did not listen on ${port}:\n${text}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const admin = async (command: string) => {
    const conn = await Deno.connect({ transport: "unix", path: socket });
    try {
      await conn.write(new TextEncoder().encode(command + "\n"));
      let answer = "";
      for await (const chunk of conn.readable.pipeThrough(new TextDecoderStream())) answer += chunk;
      return answer;
    } catch (e) {
      conn.close();
      throw e;
    }
  };
  return { output: () => text, admin, stop, [Symbol.asyncDispose]: stop };
}
