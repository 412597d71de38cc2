/**
 * Test tools for hostile and broken peers: raw HTTP over `Deno.connect`, a seeded random source,
 * and the file descriptor and memory figures of a process read from /proc.
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

/** A seeded pseudo-random source (mulberry32): the same seed gives the same run. */
export function seeded(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)],
  };
}

/** Open file descriptors of process `pid` (this one by default), from /proc. */
export function fdCount(pid: number | "self" = "self"): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/** Resident memory of process `pid` in bytes, from /proc/PID/status. */
export function rssBytes(pid: number | "self" = "self"): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

/**
 * Listening TCP sockets on `port` (IPv4 and IPv6) in this network namespace, from /proc/net:
 * one per listener, whichever thread or process holds it.
 */
export function listeningSockets(port: number): number {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  let n = 0;
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(table);
    } catch { /* no IPv6 */ }
    for (const line of text.split("\n").slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/);
      if (state === "0A" && local?.endsWith(`:${hex}`)) n++;
    }
  }
  return n;
}

/** Waits until `check` holds, polling every 50 ms for up to `ms`; returns whether it did. */
export async function eventually(check: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
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
