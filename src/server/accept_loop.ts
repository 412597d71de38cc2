/**
 * What every TCP listener shares: the {@link Listening} it returns, its options, and its accept
 * loop: an accept error that leaves the listener usable (EMFILE when a flood uses up the
 * open-files limit) is logged at most once a second and retried after a short back-off; the
 * listener goes on and no open connection is closed to make room.
 *
 * @module
 */
import type { IpSet } from "../http/ip.ts";
import { type Logger, oncePer } from "../log/logger.ts";
import type { Connections } from "./connections.ts";

/** A listening socket and its accept loop. */
export interface Listening {
  readonly addr: Deno.NetAddr;
  /** Stops accepting, lets in-flight requests finish, then closes every connection. */
  shutdown(): Promise<void>;
  /**
   * Settles when the listener has stopped: after {@link shutdown}, or by itself when accepting
   * failed for good (then it rejects with the reason).
   */
  readonly finished: Promise<void>;
  /**
   * Ends what a graceful {@link shutdown} still waits for: WebSockets are closed with 1001
   * (going away), other connections cut.
   */
  abort?(): void;
  /**
   * TLS only: new connections get this certificate from now on. A new TLS listener takes the
   * port (SO_REUSEPORT) before the old one closes; open connections keep theirs and go on.
   */
  replaceCertificate?(cert: string, key: string, sni?: TlsKeys["sni"]): void;
}

/**
 * Certificate and key in PEM, and `sni`, when given, choosing them by the name each client sends
 * (the runtime asks once per name and listener, and keeps the answer).
 */
export interface TlsKeys {
  cert: string;
  key: string;
  sni?: (name: string) => { cert: string; key: string };
}

/** Options of {@link listen}. */
export interface ListenOptions {
  hostname: string;
  port: number;
  reusePort: boolean;
  /** Listen queue length. */
  tcpBacklog: number;
  /** Certificate and key in PEM: TLS with ALPN (h2, http/1.1). */
  tls?: TlsKeys;
  connections: Connections;
  /**
   * Every connection starts with a PROXY protocol header whose source address is the client's;
   * only peers in `from` may send one, others are closed.
   */
  proxyProtocol?: { from: IpSet };
  /** Answer for a handler that threw. */
  onError: (error: unknown) => Response | Promise<Response>;
  log: Logger;
}

/**
 * Errors of an accept call about one client, not the listener: it left the queue (ECONNABORTED,
 * EPROTO), or reset before the runtime asked for its address (ECONNRESET, ENOTCONN: Deno reads
 * the peer's address as part of accepting). The next connection is accepted at once.
 */
const clientGone = (e: unknown) =>
  e instanceof Deno.errors.ConnectionAborted || e instanceof Deno.errors.ConnectionReset ||
  e instanceof Deno.errors.NotConnected ||
  /\(os error (103|71|104|107)\)/.test((e as Error)?.message ?? "");

/**
 * Errors of an accept call that leave the listener usable: {@link clientGone}, out of
 * descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), or EPERM, EINTR, EAGAIN; wait, then
 * accept again. Any other (EINVAL: the socket no longer listens) ends it.
 */
const passing = (e: unknown) =>
  clientGone(e) || /\(os error (24|23|105|12|1|4|11)\)/.test((e as Error)?.message ?? "");

export const close = (resource: { close(): void }) => {
  try {
    resource.close();
  } catch { /* already closed */ }
};

/** Says an accept failure at most once a second. */
export function acceptFailures(addr: Deno.NetAddr, log: Logger, table: Connections) {
  const due = oncePer(1000);
  return (e: unknown) => {
    table.stats.acceptErrors++;
    if (!due()) return;
    log.warn(
      `accepting a connection on ${addr.hostname}:${addr.port} failed ` +
        `(${String((e as Error)?.message ?? e).split("\n")[0]}); retrying`,
    );
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * How one of our accept loops ends: stopped on purpose (`stopping`, then `done`), or lost, when
 * an accept fails for good: `finished` then rejects with why.
 */
export class ListenerEnd {
  stopping = false;
  /** Listeners closed on purpose (shutdown, a certificate swap): their accept loops just end. */
  readonly retired = new WeakSet<object>();
  readonly #ended = Promise.withResolvers<void>();
  readonly finished = this.#ended.promise;

  constructor() {
    this.finished.catch(() => {});
  }

  readonly lost = (reason: unknown) => {
    if (!this.stopping) this.#ended.reject(reason ?? new Error("the listener closed"));
  };

  /** Closes `listener` on purpose. */
  retire(listener: Deno.Listener) {
    this.retired.add(listener);
    close(listener);
  }

  done() {
    this.#ended.resolve();
  }
}

/** The connections a listener is serving, each until its `serve` settles. */
export class Serving<C> {
  readonly live = new Set<C>();
  readonly #done = new Set<Promise<void>>();

  add(connection: C, serve: Promise<void>) {
    this.live.add(connection);
    const done = serve.finally(() => {
      this.live.delete(connection);
      this.#done.delete(done);
    });
    this.#done.add(done);
  }

  /** Settles when every connection served so far has been. */
  settled(): Promise<unknown> {
    return Promise.all(this.#done);
  }
}

/**
 * Accepts connections from `from` and hands each to `take`, until the listener is retired
 * (closed on purpose) or fails for good (then `lost`). An accept error that leaves the listener
 * usable is told to `failed` and retried after a back-off.
 */
export async function acceptEach<C extends Deno.Conn>(
  from: Deno.Listener<C>,
  end: ListenerEnd,
  failed: (e: unknown) => void,
  take: (conn: C) => void,
) {
  for (let backoff = 5;;) {
    let conn: C;
    try {
      conn = await from.accept();
      backoff = 5;
    } catch (e) {
      if (end.retired.has(from)) return;
      if (clientGone(e)) continue;
      if (!passing(e)) return end.lost(e);
      failed(e);
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 100);
      continue;
    }
    take(conn);
  }
}
