/**
 * Listeners over TCP: plain HTTP, HTTPS, and either behind the PROXY protocol. Every one is an
 * accept loop of our own; each connection it accepts is counted against
 * `server.max_connections(_per_ip)` in the connection table (`connections.ts`), timed through
 * its stages, and served by the runtime's own HTTP/1.1 and HTTP/2 server for one connection
 * (`native_http.ts`): no bytes pass through JavaScript and no inner server listens.
 *
 * Stages: the TLS handshake (`handshake_timeout`), from then (or from accept, for plain HTTP)
 * to the first request reaching the handler (`header_timeout`), between requests
 * (`idle_timeout`), and a request body that stops arriving (`body_timeout`: the handler answers
 * 408). A WebSocket that took the connection counts as open until it ends.
 *
 * HTTP/2 is spoken where ALPN chose h2 and, as `Deno.serve` does, on a TLS connection that
 * negotiated no ALPN and starts with the HTTP/2 preface (the runtime decides; see README, Limits).
 *
 * TCP_NODELAY: plain connections get it as they are accepted; `Deno.TlsConn` has no
 * `setNoDelay`, so it is set once on the TLS listening socket (`sockets.ts`), which Linux hands
 * to every accepted connection. Without it an answer written in pieces waits for the client's
 * delayed ACK (about 40 ms).
 *
 * An accept error (EMFILE when a flood uses up the open-files limit) is logged at most once a
 * second and retried after a short back-off; the listener goes on and no open connection is
 * closed to make room.
 *
 * **PROXY protocol** (`server.proxy_protocol`): connections are taken only from trusted peers and
 * their header (`proxy_protocol.ts`) is read, byte by byte so that nothing after it is consumed,
 * within the header timeout. A plain connection is then served natively with the header's source
 * as the client address. Deno cannot start server-side TLS on an accepted TCP connection, so a
 * TLS one is relayed to an inner TLS listener on loopback ({@link openTlsRelay}).
 *
 * @module
 */
import type { IpSet } from "../http/ip.ts";
import { type Logger, oncePer } from "../log/logger.ts";
import {
  type Connections,
  type Exchange,
  type ExchangeHandler,
  type Stage,
  type Timed,
  timedBody,
} from "./connections.ts";
import { type HttpConnection, serveConnection } from "./native_http.ts";
import { readProxyHeader, V2_MAX_BODY } from "./proxy_protocol.ts";
import { NEEDED, setListenerNoDelay } from "./sockets.ts";

export { Connections, type Exchange, type ExchangeHandler, type Timeouts } from "./connections.ts";

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
  replaceCertificate?(cert: string, key: string): void;
}

/** Options of {@link listen}. */
export interface ListenOptions {
  hostname: string;
  port: number;
  reusePort: boolean;
  /** Listen queue length. */
  tcpBacklog: number;
  /** Certificate and key in PEM: TLS with ALPN (h2, http/1.1). */
  tls?: { cert: string; key: string };
  connections: Connections;
  /**
   * Every connection starts with a PROXY protocol header whose source address is the client's;
   * only peers in `from` may send one, others are closed.
   */
  proxyProtocol?: { from: IpSet };
  /**
   * Internal: the listener serves the relays of a PROXY protocol front (the client address of
   * each is in this table under the relay's port, and the front counts the connection).
   */
  behind?: ProxiedClients;
  /** Answer for a handler that threw. */
  onError: (error: unknown) => Response | Promise<Response>;
  log: Logger;
}

/**
 * The client addresses of the relays a PROXY protocol front keeps open, under the local port of
 * each relay's connection to the inner listener.
 */
export type ProxiedClients = Map<number, Deno.NetAddr>;

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
function acceptFailures(addr: Deno.NetAddr, log: Logger, table: Connections) {
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

/** One accepted connection (plain or TLS) from accept to close. */
class Connection implements Timed {
  deadline = 0;
  stage: Stage = "header";
  alpn: string | null = null;
  inFlight = 0;
  ended = false;
  /** Set when a WebSocket took the connection; it counts as open until this settles. */
  session?: Promise<unknown>;
  /** The client's side of the WebSocket that took the connection. */
  private socket?: WebSocket;
  private http?: HttpConnection;
  private handshaking = false;
  private served?: Exchange;

  /**
   * `source`: the client's address from a PROXY protocol header; `counted`: the connection was
   * admitted under `ip` and is released when it ends.
   */
  constructor(
    readonly conn: Deno.Conn,
    readonly table: Connections,
    readonly ip: string,
    private readonly counted: boolean,
    private source?: Deno.NetAddr,
    private readonly behind?: ProxiedClients,
  ) {}

  /** Starts the clock of `stage`. */
  arm(stage: Stage) {
    const ms = this.table.timeouts[stage];
    this.stage = stage;
    this.deadline = ms > 0 ? this.table.now + ms : 0;
  }

  expire(): Deno.NetAddr[] | undefined {
    const handshaking = this.handshaking;
    this.close();
    if (handshaking) {
      return [this.conn.localAddr as Deno.NetAddr, this.conn.remoteAddr as Deno.NetAddr];
    }
  }

  /** Ends the connection now, whatever is in flight. */
  close() {
    if (this.ended) return;
    this.ended = true;
    if (this.http) this.http.cut();
    else close(this.conn);
  }

  async serve(handler: ExchangeHandler, onError: ListenOptions["onError"], madeUp: string) {
    const table = this.table;
    table.watch(this);
    try {
      if ("handshake" in this.conn) {
        this.arm("handshake");
        this.handshaking = true;
        this.alpn = (await (this.conn as Deno.TlsConn).handshake()).alpnProtocol;
        this.handshaking = false;
        // The front registers a relay before sending its first byte, so before this handshake
        // ends; a loopback client that is no relay is not served.
        if (this.behind) {
          this.source = this.behind.get((this.conn.remoteAddr as Deno.NetAddr).port);
          if (!this.source) this.close();
        }
      }
      if (!this.ended) {
        if (this.stage !== "header" || this.deadline === 0) this.arm("header");
        const exchange = this.exchange(madeUp);
        this.http = serveConnection(
          this.conn,
          (request, info) => this.request(request, info, exchange, handler),
          onError,
        );
        await this.http.finished;
      }
    } catch { /* a failed handshake (TLS 1.1, plain HTTP) or a reset: the connection is done */ }
    if (this.session) {
      this.deadline = 0;
      await this.session.catch(() => {});
    }
    this.ended = true;
    table.unwatch(this);
    if (!this.http) close(this.conn);
    if (this.counted) table.release(this.ip);
  }

  private request(
    request: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
    exchange: Exchange,
    handler: ExchangeHandler,
  ) {
    this.deadline = 0;
    this.inFlight++;
    info.completed.finally(() => {
      if (--this.inFlight === 0 && !this.ended && !this.session) this.arm("idle");
    });
    const ms = this.table.timeouts.body;
    return handler(
      request.body && ms > 0 ? timedBody(request, this.table, ms) : request,
      exchange,
    );
  }

  /** What every request of this connection tells its handler. */
  private exchange(madeUp: string): Exchange {
    return this.served ??= {
      remoteAddr: this.source ?? this.conn.remoteAddr as Deno.NetAddr,
      alpn: this.alpn,
      madeUp: this.alpn === "h2" ? undefined : madeUp,
      upgraded: (ended, socket) => {
        this.session = ended;
        this.socket = socket;
        this.deadline = 0;
      },
    };
  }

  /** After a graceful stop took too long: a WebSocket is closed with 1001, anything else cut. */
  abort() {
    if (this.socket && this.socket.readyState < WebSocket.CLOSING) {
      try {
        this.socket.close(1001, "the server is going away");
      } catch { /* closed meanwhile */ }
    } else this.close();
  }

  /** Stops taking requests and lets in-flight ones finish (a graceful stop). */
  drain(): Promise<void> {
    if (this.http && !this.ended) return this.http.shutdown();
    if (this.inFlight === 0 && !this.session) this.close();
    return Promise.resolve();
  }
}

/**
 * How one of our accept loops ends: stopped on purpose (`stopping`, then `done`), or lost, when
 * an accept fails for good or an inner listener stops: `finished` then rejects with why.
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

/** Listens on `hostname:port` (over TLS when `options.tls`) and serves with `handler`. */
export function listen(options: ListenOptions, handler: ExchangeHandler): Listening {
  if (options.proxyProtocol) return listenProxied(options, options.proxyProtocol.from, handler);
  return listenDirect(options, handler);
}

/** Opens the listening socket of `options` on `port` (TLS with ALPN when `tls`). */
function openListener(
  options: ListenOptions,
  port: number,
  tls?: { cert: string; key: string },
): Deno.Listener {
  const common = {
    hostname: options.hostname,
    port,
    tcpBacklog: options.tcpBacklog,
    ...(options.reusePort ? { reusePort: true } : {}),
  };
  if (!tls) return Deno.listen(common as Deno.TcpListenOptions);
  const listener = Deno.listenTls(
    { ...common, ...tls, alpnProtocols: ["h2", "http/1.1"] } as
      & Deno.ListenTlsOptions
      & Deno.TlsCertifiedKeyPem,
  );
  noDelay((listener.addr as Deno.NetAddr).port, options.log);
  return listener;
}

/** A plain or TLS listener whose connections come straight from clients. */
function listenDirect(options: ListenOptions, handler: ExchangeHandler): Listening {
  const { connections: table, log, tls, behind, onError } = options;
  let listener = openListener(options, options.port, tls);
  const addr = listener.addr as Deno.NetAddr;
  const madeUp = `localhost:${addr.port}`;
  const serving = new Serving<Connection>();
  const failed = acceptFailures(addr, log, table);
  const end = new ListenerEnd();

  const accept = (from: Deno.Listener) =>
    acceptEach(from, end, failed, (conn) => {
      const ip = (conn.remoteAddr as Deno.NetAddr).hostname;
      // Relays of a PROXY protocol front were counted there, under the client's address.
      if (end.stopping || (!behind && !table.admit(ip))) {
        close(conn);
        // A TLS connection closed before its handshake keeps its socket until the client
        // sends something.
        if (tls) table.shutDownLater(conn);
        return;
      }
      if (!tls) (conn as Deno.TcpConn).setNoDelay(true);
      const connection = new Connection(conn, table, ip, !behind, undefined, behind);
      serving.add(connection, connection.serve(handler, onError, madeUp));
    });
  const accepting = new Set([accept(listener)]);

  return {
    addr,
    ...(tls
      ? {
        replaceCertificate(cert: string, key: string) {
          const next = openListener(options, addr.port, { cert, key });
          const old = listener;
          listener = next;
          accepting.add(accept(next));
          end.retire(old);
        },
      }
      : {}),
    finished: end.finished,
    abort() {
      for (const c of serving.live) c.abort();
    },
    async shutdown() {
      end.stopping = true;
      end.retire(listener);
      await Promise.all(accepting);
      await Promise.all([...serving.live].map((c) => c.drain()));
      await serving.settled();
      end.done();
    },
  };
}

/** Says refused PROXY protocol connections at most once every 10 s (a balancer set up wrong). */
function proxyRefusals(addr: Deno.NetAddr, log: Logger) {
  const due = oncePer(10_000);
  return (peer: Deno.NetAddr, why: string) => {
    const line = `closed a connection to ${addr.hostname}:${addr.port} from ` +
      `${peer.hostname}:${peer.port}: ${why}`;
    if (!due()) return log.debug(line);
    log.warn(`${line} (said once per 10 s; the rest at debug level)`);
  };
}

/** The header clock of a PROXY protocol connection whose header is being read. */
class HeaderClock implements Timed {
  deadline = 0;
  readonly stage: Stage = "header";
  ended = false;
  constructor(readonly conn: Deno.TcpConn) {}
  expire(): undefined {
    this.close();
  }
  close() {
    if (this.ended) return;
    this.ended = true;
    close(this.conn);
  }
}

/**
 * Reads a PROXY protocol header from `conn` and nothing after it: the rest of the connection
 * goes to the runtime's server. Returns the header's source (undefined: it names none), or why
 * the connection is to be closed ("" when the client left, or a timeout or stop closed it).
 */
async function readHeader(
  conn: Deno.TcpConn,
): Promise<{ source?: Deno.NetAddr } | string> {
  const buf = new Uint8Array(16 + V2_MAX_BODY);
  let filled = 0;
  // Version 1 is at least 15 bytes ("PROXY UNKNOWN\r\n"), version 2 at least 16.
  let want = 15;
  while (filled < buf.length) {
    const n = await conn.read(buf.subarray(filled, want));
    if (n === null) return filled === 0 ? "" : "the PROXY protocol header was cut short";
    filled += n;
    if (filled < want) continue;
    const header = readProxyHeader(buf.subarray(0, filled));
    if (header.kind === "bad") return `${header.reason}`;
    if (header.kind === "header") return { source: header.source };
    if (buf[0] === 0x0d) {
      // Version 2: the 16 fixed bytes say how many follow.
      want = filled < 16 ? 16 : 16 + ((buf[14] << 8) | buf[15]);
    } else {
      // Version 1 ends with CR LF: never read past a LF that may be the end.
      want = filled + (buf[filled - 1] === 0x0d ? 1 : 2);
    }
  }
  return "the PROXY protocol header is too long";
}

/**
 * A listener whose connections start with a PROXY protocol header: accepted as plain TCP from
 * peers in `from`, each header read, then served with the header's source as the client address:
 * plain ones here, TLS ones by an inner TLS listener on loopback they are relayed to.
 */
function listenProxied(options: ListenOptions, from: IpSet, handler: ExchangeHandler): Listening {
  const { connections: table, log, onError } = options;
  const relay = options.tls ? openTlsRelay(options, handler) : undefined;
  let listener: Deno.TcpListener;
  try {
    listener = openListener(options, options.port) as Deno.TcpListener;
  } catch (e) {
    relay?.inner.shutdown();
    throw e;
  }
  const addr = listener.addr;
  const madeUp = `localhost:${addr.port}`;
  const refused = proxyRefusals(addr, log);
  const failed = acceptFailures(addr, log, table);
  const reading = new Set<HeaderClock>();
  const serving = new Serving<Connection>();
  const relaying = new Set<Promise<void>>();
  const end = new ListenerEnd();
  relay?.inner.finished.then(() => end.lost(new Error("the inner listener stopped")), end.lost);

  const take = async (conn: Deno.TcpConn) => {
    const clock = new HeaderClock(conn);
    reading.add(clock);
    table.watch(clock);
    const ms = table.timeouts.header;
    clock.deadline = ms > 0 ? table.now + ms : 0;
    let header: Awaited<ReturnType<typeof readHeader>>;
    try {
      header = await readHeader(conn);
    } catch {
      header = "";
    } finally {
      table.unwatch(clock);
      reading.delete(clock);
    }
    if (typeof header === "string" || clock.ended) {
      if (typeof header === "string" && header) refused(conn.remoteAddr, header);
      return clock.close();
    }
    const source = header.source ?? conn.remoteAddr;
    if (!table.admit(source.hostname)) return close(conn);
    if (relay) {
      const relayed = relay.pass(conn, source).finally(() => {
        table.release(source.hostname);
        relaying.delete(relayed);
      });
      relaying.add(relayed);
      return;
    }
    const connection = new Connection(conn, table, source.hostname, true, source);
    serving.add(connection, connection.serve(handler, onError, madeUp));
  };

  const accepting = acceptEach(listener, end, failed, (conn) => {
    if (end.stopping) return close(conn);
    if (!from.has(conn.remoteAddr.hostname)) {
      close(conn);
      return refused(conn.remoteAddr, "its address is not in server.proxy_protocol_from");
    }
    conn.setNoDelay(true);
    take(conn);
  });

  return {
    addr,
    ...(relay
      ? {
        replaceCertificate: (cert: string, key: string) =>
          relay.inner.replaceCertificate!(cert, key),
      }
      : {}),
    finished: end.finished,
    abort() {
      for (const c of serving.live) c.abort();
      relay?.inner.abort?.();
    },
    async shutdown() {
      end.stopping = true;
      end.retire(listener);
      await accepting;
      // Connections still without a header are closed; the others finish as on any listener.
      for (const c of reading) c.close();
      await Promise.all([...serving.live].map((c) => c.drain()));
      await relay?.inner.shutdown();
      await Promise.all([serving.settled(), ...relaying]);
      end.done();
    },
  };
}

/** Where the inner TLS listener of a PROXY protocol front listens, on a port of 0. */
const INNER_HOST = "127.0.0.1";

/**
 * The inner TLS listener a PROXY protocol front relays TLS connections to, since Deno cannot
 * start server-side TLS on an accepted TCP connection: it serves each relay as a direct TLS
 * connection (natively), with the header's source as the client address, which it finds under
 * the relay's local port.
 */
function openTlsRelay(options: ListenOptions, handler: ExchangeHandler) {
  const clients: ProxiedClients = new Map();
  let inner: Listening;
  try {
    inner = listenDirect({
      ...options,
      hostname: INNER_HOST,
      port: 0,
      proxyProtocol: undefined,
      behind: clients,
    }, handler);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied)) {
      throw e;
    }
    throw new Deno.errors.NotCapable(
      `net access to ${INNER_HOST} on a port the system picks, where TLS connections behind ` +
        `the PROXY protocol are handed to an inner listener; run with --allow-net=${INNER_HOST} ` +
        "beside your own address",
    );
  }
  return {
    inner,
    /** Relays `conn` (its header read) to the inner listener until either side ends. */
    async pass(conn: Deno.TcpConn, source: Deno.NetAddr) {
      let up: Deno.TcpConn | undefined;
      let local = -1;
      try {
        up = await Deno.connect({ hostname: INNER_HOST, port: inner.addr.port });
        up.setNoDelay(true);
        local = up.localAddr.port;
        clients.set(local, source);
        const forth = pipe(conn, up);
        // The inner side ended: whatever the client still sends has no one to answer it.
        await pipe(up, conn);
        close(conn);
        await forth;
      } catch {
        /* reset, or closed by a stop */
      } finally {
        if (clients.get(local) === source) clients.delete(local);
        close(conn);
        if (up) close(up);
      }
    },
  };
}

/**
 * Copies bytes from `from` to `to` until `from` ends or fails, then half-closes `to`. A relay
 * starts with a small buffer and takes a large one (a TLS record's 16 KiB) the first time a read
 * fills it: an idle kept-alive connection waits in a read.
 */
async function pipe(from: Deno.Conn, to: Deno.Conn) {
  let buf = new Uint8Array(2 * 1024);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      for (let off = 0; off < n;) off += await to.write(buf.subarray(off, n));
      if (n === buf.length && n < 16 * 1024) buf = new Uint8Array(16 * 1024);
    }
  } catch { /* reset or closed: the other direction ends too */ }
  try {
    await to.closeWrite();
  } catch { /* already closed */ }
}

let noDelayWarned = false;
function noDelay(port: number, log: Logger) {
  const result = setListenerNoDelay(port);
  if (typeof result === "number" || noDelayWarned) return;
  noDelayWarned = true;
  log.warn(
    `TCP_NODELAY could not be set on the TLS listener (${result}): answers over TLS may ` +
      `wait up to 40 ms for the client's ACK, and a TLS handshake that never starts is not ` +
      `cut off by handshake_timeout; grant ${NEEDED}`,
  );
}
