/**
 * HAProxy (Debian package `haproxy`) in front of a server under test: TCP mode, one frontend
 * per backend server line, started in the foreground and killed on dispose.
 *
 * @module
 */
import { hasCommand } from "./cli.ts";
import { tempDir } from "./files.ts";

/**
 * The address HAProxy listens on: a loopback address of its own, so that a port found free on it
 * stays free until HAProxy binds it (servers of tests running alongside bind 127.0.0.1).
 */
export const HAPROXY_HOST = "127.0.80.1";

function freePort(): number {
  const l = Deno.listen({ hostname: HAPROXY_HOST, port: 0 });
  const { port } = l.addr as Deno.NetAddr;
  l.close();
  return port;
}

/** The haproxy binary, or undefined where it is not installed (tests are then ignored). */
export const HAPROXY: string | undefined = hasCommand("haproxy") ?? (() => {
  try {
    return Deno.statSync("/usr/sbin/haproxy").isFile ? "/usr/sbin/haproxy" : undefined;
  } catch {
    return undefined;
  }
})();

/** One frontend: HAProxy listens on a free port and passes connections to `to`. */
export interface Frontend {
  /** Port on 127.0.0.1 the server under test listens on. */
  to: number;
  /** What the `server` line says after the address: `send-proxy`, `send-proxy-v2` and options. */
  server: string;
}

/** A running HAProxy; `ports[i]` is where frontend i listens on {@link HAPROXY_HOST}. */
export interface Haproxy extends AsyncDisposable {
  ports: number[];
  /** What it wrote so far (its alerts and warnings). */
  output(): string;
}

/** Starts HAProxy with `frontends` and waits until each of them accepts connections. */
export async function startHaproxy(frontends: Frontend[]): Promise<Haproxy> {
  if (!HAPROXY) throw new Error("haproxy is not installed (apt-get install haproxy)");
  const dir = await tempDir();
  const ports = frontends.map(() => freePort());
  const sections = frontends.map((f, i) =>
    `frontend f${i}\n  bind ${HAPROXY_HOST}:${ports[i]}\n  default_backend b${i}\n` +
    `backend b${i}\n  server s${i} 127.0.0.1:${f.to} ${f.server}\n`
  );
  const config = "global\n  maxconn 256\n" +
    "defaults\n  mode tcp\n  timeout connect 10s\n  timeout client 60s\n  timeout server 60s\n" +
    sections.join("");
  await Deno.writeTextFile(`${dir.path}/haproxy.cfg`, config);
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
  const pumped = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const stop = async () => {
    if (!exited) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }
    await status;
    await pumped;
    await dir[Symbol.asyncDispose]();
  };
  try {
    for (const port of ports) {
      // Until HAProxy binds: each refused connect is an answer, not a wait.
      for (;;) {
        if (exited) throw new Error(`haproxy exited: ${text}`);
        try {
          (await Deno.connect({ hostname: HAPROXY_HOST, port })).close();
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { ports, output: () => text, [Symbol.asyncDispose]: stop };
}
