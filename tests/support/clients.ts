/**
 * Clients that talk to a server in ways fetch does not: raw bytes over `Deno.connect`, and a
 * fetch loop that runs until stopped (while a server reloads or swaps listeners).
 *
 * @module
 */

const enc = new TextEncoder();
const dec = new TextDecoder();

/** What came back on a raw connection. */
export interface RawAnswer {
  /** Everything read (latin-1 safe enough for headers; bodies are compared as text). */
  text: string;
  /** The status of the first answer, or 0 when none came. */
  status: number;
  /** Header lines of the first answer, lowercased names. */
  headers: [string, string][];
  /** Whether the server closed the connection (EOF or reset) before `ms` ran out. */
  closed: boolean;
}

/** Parses the status and headers of the first HTTP/1.x answer in `text`. */
export function parseHead(text: string): { status: number; headers: [string, string][] } {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
  if (!m) return { status: 0, headers: [] };
  const end = text.indexOf("\r\n\r\n");
  const lines = text.slice(0, end < 0 ? text.length : end).split("\r\n").slice(1);
  const headers = lines.map((l) => {
    const c = l.indexOf(":");
    return [l.slice(0, c).trim().toLowerCase(), l.slice(c + 1).trim()] as [string, string];
  });
  return { status: Number(m[1]), headers };
}

/**
 * Sends `data` as is on a new connection to `port` and reads until the server closes it or `ms`
 * pass (then the connection is closed from this side).
 */
export async function rawRequest(
  port: number,
  data: string | Uint8Array,
  ms = 2000,
): Promise<RawAnswer> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const chunks: Uint8Array[] = [];
  let closed = false;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      conn.close();
    } catch { /* closed */ }
  }, ms);
  try {
    await conn.write(typeof data === "string" ? enc.encode(data) : data);
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) {
        closed = true;
        break;
      }
      chunks.push(buf.slice(0, n));
    }
  } catch {
    closed = !timedOut;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed */ }
  }
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  const text = dec.decode(all);
  return { text, closed, ...parseHead(text) };
}

/**
 * Whether Linux hands connections queued on a closing SO_REUSEPORT listener to the one that
 * stays; without it a connection arriving in that instant is reset (see README, HTTPS).
 */
export const migrates = (() => {
  try {
    return Deno.readTextFileSync("/proc/sys/net/ipv4/tcp_migrate_req").trim() === "1";
  } catch {
    return false;
  }
})();

/**
 * Fetches `url` in a loop until stopped. With `fresh`, every request opens a new connection.
 * New connections reset while still in a closing listener's accept queue (possible only when
 * net.ipv4.tcp_migrate_req is 0, see README) are counted in `resets`, apart from `failures`.
 */
export function clientLoop(url: string, caPem: string | undefined, fresh: boolean) {
  let stop = false;
  const failures: string[] = [];
  const resets: string[] = [];
  let ok = 0;
  const shared = Deno.createHttpClient({ caCerts: caPem ? [caPem] : [] });
  const done = (async () => {
    while (!stop) {
      const client = fresh ? Deno.createHttpClient({ caCerts: caPem ? [caPem] : [] }) : shared;
      try {
        const res = await fetch(url, { client });
        const text = await res.text();
        if (res.status === 200) ok++;
        else failures.push(`${res.status} ${text.slice(0, 80)}`);
      } catch (e) {
        const why = `${e} ${(e as Error).cause ?? ""}`.split("\n")[0];
        if (!migrates && /\(Connect\): (tcp connect error: )?Connection reset by peer/.test(why)) {
          resets.push(why);
        } else failures.push(why);
      } finally {
        if (fresh) client.close();
      }
    }
    shared.close();
  })();
  return {
    get ok() {
      return ok;
    },
    failures,
    resets,
    async stop() {
      stop = true;
      await done;
      if (resets.length) {
        console.log(
          `${resets.length} new connection(s) reset in a closing listener's accept queue (net.ipv4.tcp_migrate_req=0)`,
        );
      }
    },
  };
}

/** An answer read whole. */
export interface Answer {
  res: Response;
  status: number;
  headers: Headers;
  /** The body as text. */
  body: string;
}

/** Reads `res` whole. */
export async function answerOf(res: Response): Promise<Answer> {
  const body = await res.text();
  return { res, body, status: res.status, headers: res.headers };
}

/** Fetches `url` without following redirects and reads the answer whole. */
export async function get(url: string, init?: RequestInit): Promise<Answer> {
  return answerOf(await fetch(url, { redirect: "manual", ...init }));
}

/** An `Authorization` value for HTTP Basic authentication. */
export const basic = (user: string, password: string) => `Basic ${btoa(`${user}:${password}`)}`;

/**
 * Whether `conn` is closed by the other side (end of stream or a reset) within `ms`; the bound
 * only turns a connection that is never closed into a failure.
 */
export async function closedWithin(conn: Deno.Conn, ms: number): Promise<boolean> {
  const buf = new Uint8Array(16 * 1024);
  const closed = (async () => {
    try {
      while ((await conn.read(buf)) !== null) { /* whatever comes is not looked at */ }
    } catch { /* a reset counts as closed */ }
    return true;
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<boolean>((r) => timer = setTimeout(() => r(false), ms));
  const result = await Promise.race([closed, late]);
  clearTimeout(timer);
  return result;
}
