/**
 * A real `redis-server` for tests: started on a loopback port without persistence, and a plain
 * RESP2 connection to it for commands and keyspace notifications (so that a test can wait for
 * a background write instead of polling or sleeping).
 *
 * @module
 */
import { hasCommand } from "./cli.ts";

/** Where redis-server is, or undefined when it is not on PATH (tests using it are ignored). */
export const REDIS_SERVER: string | undefined = hasCommand("redis-server") ?? undefined;

/** Whether something accepts connections on `port`. */
async function listening(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return true;
  } catch {
    return false;
  }
}

/** A running redis-server. */
export interface RedisServer extends AsyncDisposable {
  port: number;
  /** `redis://127.0.0.1:PORT/0` */
  url: string;
  /** Stops it (SIGTERM) and waits for it to exit; twice is harmless. */
  stop(): Promise<void>;
  /** Sends `signal` (SIGSTOP/SIGCONT to stall it). */
  signal(signal: Deno.Signal): void;
}

/** Options of {@link startRedis}. */
export interface RedisOptions {
  /**
   * Keep the data in this folder with the append-only file (`appendonly yes`), so that a server
   * started again on the same folder has it all. Default: no persistence.
   */
  persistIn?: string;
}

/** A throwaway redis-server on 127.0.0.1:`port` (by default without persistence); stopped on dispose. */
export async function startRedis(port: number, options: RedisOptions = {}): Promise<RedisServer> {
  if (!REDIS_SERVER) throw new Error("redis-server is not on PATH");
  const persistence = options.persistIn
    ? ["--dir", options.persistIn, "--save", "", "--appendonly", "yes"]
    : ["--save", "", "--appendonly", "no"];
  const child = new Deno.Command(REDIS_SERVER, {
    args: ["--port", String(port), "--bind", "127.0.0.1", ...persistence],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    await child.status;
  };
  let up = false;
  const deadline = Date.now() + 10_000;
  while (!up && Date.now() < deadline) {
    up = await listening(port);
    if (!up) await new Promise((r) => setTimeout(r, 20));
  }
  if (!up) {
    await stop();
    throw new Error(`redis-server did not listen on ${port}`);
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    stop,
    signal: (sig) => child.kill(sig),
    [Symbol.asyncDispose]: stop,
  };
}

/** A RESP2 reply: simple and bulk strings, integers, nil, arrays, and errors. */
export type Reply = string | number | null | Error | Reply[];

/** One connection to a Redis server, speaking RESP2 directly. */
export interface RespConnection extends AsyncDisposable {
  /** Sends a command and reads its reply. */
  command(...args: string[]): Promise<Reply>;
  /**
   * Reads the next reply (a pushed message after SUBSCRIBE/PSUBSCRIBE); fails after `ms`
   * without one, closing the connection.
   */
  next(ms?: number): Promise<Reply>;
  close(): void;
}

const CRLF = [13, 10];

/** Connects to the Redis server on 127.0.0.1:`port`. */
export async function respConnect(port: number): Promise<RespConnection> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  let buf = new Uint8Array(0);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    conn.close();
  };
  const fill = async () => {
    const chunk = new Uint8Array(16 * 1024);
    const n = await conn.read(chunk);
    if (n === null) throw new Error("redis closed the connection");
    const more = new Uint8Array(buf.length + n);
    more.set(buf);
    more.set(chunk.subarray(0, n), buf.length);
    buf = more;
  };
  const line = async (): Promise<string> => {
    for (;;) {
      for (let i = 0; i + 1 < buf.length; i++) {
        if (buf[i] === CRLF[0] && buf[i + 1] === CRLF[1]) {
          const text = dec.decode(buf.subarray(0, i));
          buf = buf.subarray(i + 2);
          return text;
        }
      }
      await fill();
    }
  };
  const bulk = async (length: number): Promise<string> => {
    while (buf.length < length + 2) await fill();
    const text = dec.decode(buf.subarray(0, length));
    buf = buf.subarray(length + 2);
    return text;
  };
  const read = async (): Promise<Reply> => {
    const head = await line();
    const rest = head.slice(1);
    switch (head[0]) {
      case "+":
        return rest;
      case "-":
        return new Error(rest);
      case ":":
        return Number(rest);
      case "$":
        return rest === "-1" ? null : await bulk(Number(rest));
      case "*": {
        if (rest === "-1") return null;
        const items: Reply[] = [];
        for (let i = 0; i < Number(rest); i++) items.push(await read());
        return items;
      }
    }
    throw new Error(`not a RESP2 reply: ${JSON.stringify(head)}`);
  };
  const next = async (ms = 10_000): Promise<Reply> => {
    const timer = setTimeout(close, ms);
    try {
      return await read();
    } catch (e) {
      throw closed ? new Error(`no reply from redis within ${ms} ms`) : e;
    } finally {
      clearTimeout(timer);
    }
  };
  const command = async (...args: string[]): Promise<Reply> => {
    let text = `*${args.length}\r\n`;
    for (const a of args) text += `$${enc.encode(a).length}\r\n${a}\r\n`;
    const bytes = enc.encode(text);
    for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
    return await next();
  };
  return {
    command,
    next,
    close,
    [Symbol.asyncDispose]: () => Promise.resolve(close()),
  };
}

/**
 * Subscribes to keyspace notifications of string commands (SET…) on keys matching `pattern` in
 * database 0, so that {@link KeyEvents.written} resolves once such a key is written, however long
 * the write was deferred. The notifications are switched on in the server (`K$`).
 */
export interface KeyEvents extends AsyncDisposable {
  /** Waits for the next write to a matching key (fails after `ms`); resolves to its name. */
  written(ms?: number): Promise<string>;
}

/** See {@link KeyEvents}. */
export async function watchKeys(port: number, pattern: string): Promise<KeyEvents> {
  const admin = await respConnect(port);
  try {
    const set = await admin.command("CONFIG", "SET", "notify-keyspace-events", "K$");
    if (set !== "OK") throw new Error(`CONFIG SET notify-keyspace-events: ${set}`);
  } finally {
    admin.close();
  }
  const prefix = "__keyspace@0__:";
  const sub = await respConnect(port);
  const confirmed = await sub.command("PSUBSCRIBE", prefix + pattern);
  if (!Array.isArray(confirmed) || confirmed[0] !== "psubscribe") {
    sub.close();
    throw new Error(`PSUBSCRIBE: ${confirmed}`);
  }
  return {
    async written(ms = 10_000) {
      for (;;) {
        const message = await sub.next(ms);
        if (Array.isArray(message) && message[0] === "pmessage" && message[3] === "set") {
          return String(message[2]).slice(prefix.length);
        }
      }
    },
    [Symbol.asyncDispose]: () => Promise.resolve(sub.close()),
  };
}
