/**
 * A real HAProxy (Debian package `haproxy`) in front of test servers, run in the foreground with
 * a configuration written by the test ({@link startHaproxy}), or with TCP frontends passing
 * connections to the servers under test ({@link startTcpFrontends}).
 *
 * @module
 */
import { hasCommand } from "./cli.ts";
import { tempDir } from "./files.ts";

/** Where haproxy is, or undefined when it is not on PATH (tests using it are ignored). */
export const HAPROXY: string | undefined = hasCommand("haproxy") ?? (() => {
  try {
    return Deno.statSync("/usr/sbin/haproxy").isFile ? "/usr/sbin/haproxy" : undefined;
  } catch {
    return undefined;
  }
})();

/**
 * A loopback address of HAProxy's own for frontends, so that a port found free on it stays free
 * until HAProxy binds it (servers of tests running alongside bind 127.0.0.1).
 */
export const HAPROXY_HOST = "127.0.80.1";

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
 * `host` accepts connections. A `global` section with the runtime API's socket is added in
 * front of `config`.
 */
export async function startHaproxy(
  config: string,
  ports: number[],
  host = "127.0.0.1",
): Promise<Haproxy> {
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
      (await Deno.connect({ hostname: host, port })).close();
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

/** One TCP frontend of {@link startTcpFrontends}. */
export interface Frontend {
  /** Port on 127.0.0.1 the server under test listens on. */
  to: number;
  /** What the `server` line says after the address: `send-proxy`, `send-proxy-v2` and options. */
  server: string;
}

/** Running frontends; `ports[i]` is where frontend i listens on {@link HAPROXY_HOST}. */
export interface TcpFrontends extends Haproxy {
  ports: number[];
}

/** Starts haproxy in TCP mode with one frontend on {@link HAPROXY_HOST} per entry of `frontends`. */
export async function startTcpFrontends(frontends: Frontend[]): Promise<TcpFrontends> {
  const ports = frontends.map(() => {
    const l = Deno.listen({ hostname: HAPROXY_HOST, port: 0 });
    const { port } = l.addr as Deno.NetAddr;
    l.close();
    return port;
  });
  const sections = frontends.map((f, i) =>
    `frontend f${i}\n  bind ${HAPROXY_HOST}:${ports[i]}\n  default_backend b${i}\n` +
    `backend b${i}\n  server s${i} 127.0.0.1:${f.to} ${f.server}\n`
  );
  const config = "  maxconn 256\n" +
    "defaults\n  mode tcp\n  timeout connect 10s\n  timeout client 60s\n  timeout server 60s\n" +
    sections.join("");
  const haproxy = await startHaproxy(config, ports, HAPROXY_HOST);
  return Object.assign(haproxy, { ports });
}
