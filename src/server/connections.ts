/**
 * The connection table: the connections of one server across all its listeners and reloads,
 * the limits they share (`server.max_connections`, `server.max_connections_per_ip`), the
 * deadlines of their stages (handshake, header, idle, body) on one coarse ticker, and the counts
 * the metrics show (HTTP/3 connections are in it too), and what a handler learns of the
 * connection a request came on ({@link Exchange}).
 *
 * @module
 */
import { BodyTimeout } from "../http/errors.ts";
import type { ConnectionStats } from "../http/types.ts";
import { shutdownSockets } from "./sockets.ts";

/** What a handler learns of the connection a request came on. */
export interface Exchange {
  readonly remoteAddr: Deno.NetAddr;
  /** The protocol ALPN chose on a TLS connection (`h2`, `http/1.1`), or null. */
  readonly alpn: string | null;
  /**
   * The server name the client sent in its TLS hello, where the listener read it (several sites
   * with certificates of their own); undefined otherwise.
   */
  readonly sni?: string;
  /**
   * What the runtime puts in the URL of a request that names no authority (`localhost:PORT`),
   * or undefined where a request always names one (HTTP/2).
   */
  readonly madeUp?: string;
  /** Ends the connection at once, whatever is in flight on it. */
  close?(): void;
  /**
   * Told by the handler that upgraded the connection (a WebSocket): it counts as open until
   * `ended` settles.
   */
  upgraded(ended: Promise<unknown>, socket?: WebSocket): void;
}

/** Answers the requests of a listener. */
export type ExchangeHandler = (
  request: Request,
  exchange: Exchange,
) => Response | Promise<Response>;

/** Time limits of a connection's stages, in ms; 0 turns one off. */
export interface Timeouts {
  /** The TLS handshake must finish. */
  handshake: number;
  /** The first request head must arrive once the connection is ready. */
  header: number;
  /** A kept-alive connection with no request in flight is closed. */
  idle: number;
  /** A request body that sends nothing for this long is given up. */
  body: number;
}

export type Stage = keyof Timeouts;

/**
 * The connections of one server across all its listeners and reloads: the limits they share,
 * the deadlines of their stages and the counts.
 */
export class Connections {
  readonly stats: ConnectionStats = {
    open: 0,
    accepted: 0,
    refused: { total: 0, perIp: 0 },
    timedOut: { handshake: 0, header: 0, idle: 0, body: 0 },
    acceptErrors: 0,
  };
  private readonly perIp = new Map<string, number>();
  private readonly timed = new Set<Timed>();
  /** Sockets to shut down at the next tick (see {@link shutDownLater}). */
  private stuck: Deno.NetAddr[][] = [];
  private ticker?: ReturnType<typeof setInterval>;
  /** Coarse clock for deadlines, advanced by the ticker: reading the time per request costs. */
  now = Date.now();

  /** Most open connections; 0 = no limit. */
  max = 0;
  /** Most open connections from one client address; 0 = no limit. */
  maxPerIp = 0;
  timeouts: Timeouts = { handshake: 0, header: 0, idle: 0, body: 0 };
  /** Told when {@link timeouts} change (a reload), for clocks kept outside the table (HTTP/3). */
  readonly retimed = new Set<() => void>();

  /** Takes new timeouts into service and tells {@link retimed}. */
  retime(timeouts: Timeouts) {
    this.timeouts = timeouts;
    for (const told of this.retimed) told();
  }

  /** Takes a new connection from `ip` into the count, or says why not. */
  admit(ip: string): boolean {
    this.stats.accepted++;
    if (this.max > 0 && this.stats.open >= this.max) {
      this.stats.refused.total++;
      return false;
    }
    if (this.maxPerIp > 0) {
      const n = this.perIp.get(ip) ?? 0;
      if (n >= this.maxPerIp) {
        this.stats.refused.total++;
        this.stats.refused.perIp++;
        return false;
      }
      this.perIp.set(ip, n + 1);
    }
    this.stats.open++;
    return true;
  }

  release(ip: string) {
    this.stats.open--;
    const n = this.perIp.get(ip);
    if (n !== undefined) n > 1 ? this.perIp.set(ip, n - 1) : this.perIp.delete(ip);
  }

  /** Watches `t`'s deadline from now on (until {@link unwatch}). */
  watch(t: Timed) {
    this.timed.add(t);
    this.tickWhileNeeded();
  }

  unwatch(t: Timed) {
    this.timed.delete(t);
    this.tickWhileNeeded();
  }

  /**
   * A TLS connection closed before its handshake keeps its socket until the client sends
   * something; its socket is shut down at the next tick.
   */
  shutDownLater(conn: Deno.Conn) {
    this.stuck.push([conn.localAddr as Deno.NetAddr, conn.remoteAddr as Deno.NetAddr]);
    this.tickWhileNeeded();
  }

  /** Runs the ticker while something has a deadline or a socket waits to be shut down. */
  private tickWhileNeeded() {
    const needed = this.timed.size > 0 || this.stuck.length > 0;
    if (needed && this.ticker === undefined) {
      this.now = Date.now();
      this.ticker = setInterval(() => this.tick(), 250);
      Deno.unrefTimer(this.ticker);
    } else if (!needed && this.ticker !== undefined) {
      clearInterval(this.ticker);
      this.ticker = undefined;
    }
  }

  private tick() {
    const now = this.now = Date.now();
    const expired: Timed[] = [];
    for (const t of this.timed) if (t.deadline > 0 && t.deadline <= now) expired.push(t);
    const stuck = this.stuck;
    this.stuck = [];
    for (const t of expired) {
      this.stats.timedOut[t.stage]++;
      t.deadline = 0;
      const pair = t.expire();
      if (pair) stuck.push(pair);
    }
    // A TLS handshake the runtime is waiting on cannot be cancelled from here: closing the
    // connection leaves its socket open until the client sends something. Shutting the socket
    // down makes that wait end.
    if (stuck.length > 0) shutdownSockets(stuck);
    this.tickWhileNeeded();
  }
}

/** Something with a deadline the ticker of {@link Connections} checks. */
export interface Timed {
  /** When it expires (ms since the epoch), or 0. */
  deadline: number;
  stage: Stage;
  /**
   * Ends what took too long; returns the local and remote address of a socket that could not be
   * closed from here (a TLS handshake in progress).
   */
  expire(): Deno.NetAddr[] | undefined;
}

/**
 * `request` with its body on the body clock: when no part of it arrives for `ms`, reading it
 * fails with a {@link BodyTimeout} (the handler answers 408) and it counts as a body timeout.
 * For HTTP/2, where a stream stopping cannot close the connection its neighbours share.
 */
export function timedBody(request: Request, table: Connections, ms: number): Request {
  const source = request.body!;
  // A byte stream read through one buffer of its own, whose bytes are copied into the reader's
  // buffer when it brings one (BYOB): the proxy reuses two buffers for a whole upload, and a new
  // buffer per chunk here would undo that.
  let byob: ReadableStreamBYOBReader | undefined;
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  try {
    byob = source.getReader({ mode: "byob" });
  } catch {
    reader = source.getReader();
  }
  const underlying = (byob ?? reader)!;
  /** What the source is read into (BYOB): handed back by each read and used again. */
  let spare = new ArrayBuffer(64 * 1024);
  const clock: Timed = {
    deadline: table.now + ms,
    stage: "body",
    expire() {
      body.error(new BodyTimeout(ms / 1000));
      underlying.cancel().catch(() => {});
      table.unwatch(clock);
      return undefined;
    },
  };
  let body!: ReadableByteStreamController;
  table.watch(clock);
  const stream = new ReadableStream({
    type: "bytes",
    start(controller: ReadableByteStreamController) {
      body = controller;
    },
    async pull(controller: ReadableByteStreamController) {
      const asked = controller.byobRequest;
      try {
        let result: ReadableStreamReadResult<Uint8Array>;
        // An empty piece is no piece (a byte stream cannot pass one on): read again.
        for (;;) {
          if (byob) {
            result = await byob.read(new Uint8Array(spare, 0, spare.byteLength));
            if (result.value) spare = result.value.buffer as ArrayBuffer;
          } else result = await reader!.read();
          if (result.done || result.value.byteLength > 0) break;
        }
        if (clock.deadline === 0) return; // expired meanwhile: already errored
        const { done, value } = result;
        if (done) {
          table.unwatch(clock);
          controller.close();
          asked?.respond(0);
          return;
        }
        clock.deadline = table.now + ms;
        const view = asked?.view;
        if (view) {
          // Copied into the reader's own buffer, so that ours is read into again.
          const n = Math.min(value.byteLength, view.byteLength);
          new Uint8Array(view.buffer, view.byteOffset, n).set(value.subarray(0, n));
          asked!.respond(n);
          if (n < value.byteLength) controller.enqueue(value.slice(n));
        } else controller.enqueue(byob ? value.slice() : value);
      } catch (e) {
        table.unwatch(clock);
        controller.error(e);
      }
    },
    cancel(reason) {
      table.unwatch(clock);
      return underlying.cancel(reason);
    },
  });
  return new Request(request, { body: stream, duplex: "half" } as RequestInit);
}
