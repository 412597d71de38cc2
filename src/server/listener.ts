/**
 * Listeners: plain HTTP through `Deno.serve`, HTTPS through accept loops of our own.
 *
 * **HTTPS.** Connections are accepted by `Deno.listenTls` here, counted against
 * `server.max_connections(_per_ip)` and timed through their stages. Where ALPN chose h2, the
 * connection is served by the runtime's server for one connection (the one `Deno.serve` runs on
 * each connection it accepts, kept by Deno 2 as `Deno[Deno.internal].serveHttpOnConnection`):
 * HTTP/2 only, as RFC 9113 §3.3 asks. HTTP/1.x connections are relayed to an inner `Deno.serve`
 * on loopback instead: that server's per-connection twin closes a WebSocket the moment the
 * upgrade completes (Deno 2.9.6), and the relay follows the request heads
 * (`request_heads.ts`) for the header and idle timeouts and for HTTP/1.1 without Host.
 * TCP_NODELAY is set once on the listening socket (`sockets.ts`), which Linux hands to every
 * accepted connection: `Deno.TlsConn` has no `setNoDelay`, and Nagle's algorithm would make each
 * answer written in pieces wait for the client's delayed ACK (about 40 ms).
 *
 * An accept error (EMFILE when a flood of idle clients uses up the open-files limit) is logged at
 * most once a second and retried after a short back-off; the listener goes on.
 *
 * **Plain HTTP** is `Deno.serve`, whose accept loop is its own: when it fails (EMFILE) the
 * listener is opened again on the same port after a back-off, so the server refuses clients
 * while flooded and serves again once the flood is over. It has no limits and no timeouts.
 *
 * **PROXY protocol** (`server.proxy_protocol`): the port is a plain TCP accept loop of our own
 * that takes connections only from trusted peers, reads each one's header (`proxy_protocol.ts`)
 * within the header timeout, and relays the bytes after it to one of the listeners above, opened
 * on a loopback port of its own. That listener serves the relay as usual, TLS handshake included
 * (the header comes in clear before the ClientHello, and Deno cannot start server-side TLS on an
 * accepted TCP connection), with the header's source as the client address: the relay's local
 * port names it in {@link ProxiedClients}. Without the setting none of this is in the path.
 *
 * @module
 */
import { BodyTimeout } from "../http/errors.ts";
import type { ConnectionStats } from "../http/types.ts";
import type { IpSet } from "../http/ip.ts";
import { type Logger, oncePer } from "../log/logger.ts";
import { readProxyHeader, V2_MAX_BODY } from "./proxy_protocol.ts";
import { RequestHeads } from "./request_heads.ts";
import { NEEDED, setListenerNoDelay, shutdownSockets } from "./sockets.ts";

/**
 * Certificate and key in PEM, and `sni`, when given, choosing them by the name each client sends
 * (the runtime asks once per name and listener, and keeps the answer).
 */
export interface TlsKeys {
  cert: string;
  key: string;
  sni?: (name: string) => { cert: string; key: string };
}

/** `Deno.listenTls`'s option for a certificate per SNI name (Deno 2.9). */
const SNI_RESOLVER: symbol = (Deno as unknown as Record<symbol, { resolverSymbol: symbol }>)[
  (Deno as unknown as { internal: symbol }).internal
]?.resolverSymbol;

/** What a handler learns of the connection a request came on. */
export interface Exchange {
  readonly remoteAddr: Deno.NetAddr;
  /** The protocol ALPN chose on a TLS connection (`h2`, `http/1.1`), or null. */
  readonly alpn: string | null;
  /**
   * What the runtime puts in the URL of a request that names no authority (`localhost:PORT`),
   * or undefined where a request always names one (HTTP/2).
   */
  readonly madeUp?: string;
  /**
   * Told by the handler that upgraded the connection (a WebSocket): it counts as open until
   * `ended` settles.
   */
  upgraded(ended: Promise<unknown>): void;
}

/** A plain request's exchange: the address is asked of the runtime only when read (it costs). */
class PlainExchange implements Exchange {
  readonly alpn = null;
  constructor(
    private readonly info: Deno.ServeHandlerInfo<Deno.NetAddr>,
    readonly madeUp: string,
  ) {}
  get remoteAddr() {
    return this.info.remoteAddr;
  }
  upgraded() {}
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

type Stage = keyof Timeouts;

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
interface Timed {
  /** When it expires (ms since the epoch), or 0. */
  deadline: number;
  stage: Stage;
  /**
   * Ends what took too long; returns the local and remote address of a socket that could not be
   * closed from here (a TLS handshake in progress).
   */
  expire(): Deno.NetAddr[] | undefined;
}

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
   * TLS only: new connections get this certificate from now on. A new TLS listener takes the
   * port (SO_REUSEPORT) before the old one closes; open connections keep theirs and go on.
   */
  replaceCertificate?(cert: string, key: string, sni?: TlsKeys["sni"]): void;
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
  /**
   * Internal: the listener serves the relays of a PROXY protocol front (the client address of
   * each is in this table under the relay's port, and the front counts the connection).
   */
  behind?: ProxiedClients;
  /** Answer for a handler that threw. */
  onError: (error: unknown) => Response | Promise<Response>;
  log: Logger;
}

/** What the runtime's server for one connection returns. */
interface HttpConnection {
  /** Settles when the connection has closed. */
  finished: Promise<void>;
  /** Stops taking requests, lets in-flight ones finish, then closes. */
  shutdown(): Promise<void>;
}

type ServeOnConnection = (
  conn: Deno.Conn,
  signal: AbortSignal,
  handler: (
    request: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ) => Response | Promise<Response>,
  onError: (error: unknown) => Response | Promise<Response>,
  onListen: () => void,
) => HttpConnection;

const internals = (Deno as unknown as Record<symbol, Record<string, unknown> | undefined>)[
  (Deno as unknown as { internal: symbol }).internal
];
/** `Deno.serve`'s server for one accepted connection (Deno 2.9 keeps it among its internals). */
const serveOnConnection = internals?.serveHttpOnConnection as ServeOnConnection | undefined;

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

const close = (resource: { close(): void }) => {
  try {
    resource.close();
  } catch { /* already closed */ }
};

/** Where the inner servers of the HTTPS and PROXY protocol listeners listen, on a port of 0. */
const INNER_HOST = "127.0.0.1";

/**
 * `open()`'s listener on {@link INNER_HOST}; without the permission, an error that names the
 * flag for any port there (Deno's own would name port 0, which is not enough).
 */
function openInner<T>(open: () => T): T {
  try {
    return open();
  } catch (e) {
    if (!(e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied)) {
      throw e;
    }
    throw new Deno.errors.NotCapable(
      `net access to ${INNER_HOST} on a port the system picks, where HTTPS and the PROXY ` +
        `protocol hand connections to an inner server; run with --allow-net=${INNER_HOST} ` +
        "beside your own address",
    );
  }
}

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

/**
 * Bytes relayed per read: one TLS record holds at most 16 KiB. A relay starts with a small
 * buffer and takes the large one the first time a read fills it: an idle kept-alive connection
 * waits in a read, and two 16 KiB buffers each were most of its memory.
 */
const CHUNK = 16 * 1024;
const FIRST_CHUNK = 2 * 1024;

/**
 * Copies bytes from `from` to `to` until `from` ends or fails, then half-closes `to`. With
 * `through`, each read goes through it first: it returns what to write, or undefined to stop
 * at once (without the half-close: the caller has closed the connection).
 */
async function pipe(
  from: Deno.Conn,
  to: Deno.Conn,
  through?: (bytes: Uint8Array) => readonly Uint8Array[] | undefined,
) {
  let buf = new Uint8Array(FIRST_CHUNK);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      const bytes = buf.subarray(0, n);
      if (through === undefined) await writeAll(to, bytes);
      else {
        const parts = through(bytes);
        if (parts === undefined) return;
        for (const part of parts) await writeAll(to, part);
      }
      if (n === buf.length && n < CHUNK) buf = new Uint8Array(CHUNK);
    }
  } catch { /* reset or closed: the other direction ends too */ }
  try {
    await to.closeWrite();
  } catch { /* already closed */ }
}

async function writeAll(to: Deno.Conn, bytes: Uint8Array) {
  let off = 0;
  while (off < bytes.length) off += await to.write(bytes.subarray(off));
}

/**
 * `request` with its body on the body clock: when no part of it arrives for `ms`, reading it
 * fails with a {@link BodyTimeout} (the handler answers 408) and it counts as a body timeout.
 * For HTTP/2, where a stream stopping cannot close the connection its neighbours share.
 */
function timedBody(request: Request, table: Connections, ms: number): Request {
  const reader = request.body!.getReader();
  const clock: Timed = {
    deadline: table.now + ms,
    stage: "body",
    expire() {
      body.error(new BodyTimeout(ms / 1000));
      reader.cancel().catch(() => {});
      table.unwatch(clock);
      return undefined;
    },
  };
  let body!: ReadableStreamDefaultController<Uint8Array>;
  table.watch(clock);
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      body = controller;
    },
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (clock.deadline === 0) return; // expired meanwhile: already errored
        if (done) {
          table.unwatch(clock);
          controller.close();
        } else {
          clock.deadline = table.now + ms;
          controller.enqueue(value);
        }
      } catch (e) {
        table.unwatch(clock);
        controller.error(e);
      }
    },
    cancel(reason) {
      table.unwatch(clock);
      return reader.cancel(reason);
    },
  });
  return new Request(request, { body: stream, duplex: "half" } as RequestInit);
}

/** One accepted TLS connection from accept to close. */
class Connection implements Timed {
  deadline = 0;
  stage: Stage = "handshake";
  alpn: string | null = null;
  inFlight = 0;
  ended = false;
  /** Set when a WebSocket took the connection; it counts as open until this settles. */
  session?: Promise<unknown>;
  private http?: HttpConnection;
  private up?: Deno.TcpConn;
  private heads?: RequestHeads;
  private served?: Exchange;
  private readonly cut = new AbortController();
  private handshaking = false;
  /** The client's address from a PROXY protocol header, when the connection came through one. */
  private source?: Deno.NetAddr;
  readonly ip: string;

  constructor(
    readonly conn: Deno.TlsConn,
    readonly table: Connections,
    private readonly behind?: ProxiedClients,
  ) {
    this.ip = (conn.remoteAddr as Deno.NetAddr).hostname;
  }

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
    this.cut.abort();
    if (this.up) close(this.up);
    if (!this.http) close(this.conn);
  }

  async serve(handler: ExchangeHandler, relayTo: Relay, onError: ListenOptions["onError"]) {
    const table = this.table;
    table.watch(this);
    try {
      this.arm("handshake");
      this.handshaking = true;
      this.alpn = (await this.conn.handshake()).alpnProtocol;
      this.handshaking = false;
      // The front registers a relay before sending its first byte, so before this handshake ends;
      // a loopback client that is no relay is not served.
      if (this.behind) {
        this.source = this.behind.get((this.conn.remoteAddr as Deno.NetAddr).port);
        if (!this.source) this.close();
      }
      if (!this.ended) {
        this.arm("header");
        if (this.alpn === "h2") await this.serveH2(handler, onError);
        else await this.relay(relayTo);
      }
    } catch { /* a failed handshake (TLS 1.1, plain HTTP) or a reset: the connection is done */ }
    if (this.session) {
      this.deadline = 0;
      await this.session.catch(() => {});
    }
    this.ended = true;
    table.unwatch(this);
    if (this.up) close(this.up);
    if (!this.http) close(this.conn);
    if (!this.behind) table.release(this.ip);
  }

  private serveH2(handler: ExchangeHandler, onError: ListenOptions["onError"]) {
    const exchange = this.exchange();
    this.http = serveOnConnection!(
      this.conn,
      this.cut.signal,
      (request, info) => {
        this.deadline = 0;
        this.inFlight++;
        // `completed` rejects when the answer was not sent whole (its body broke off): handled
        // here, since an unhandled rejection would end the process.
        const done = () => {
          if (--this.inFlight === 0 && !this.ended) this.arm("idle");
        };
        info.completed.then(done, done);
        const ms = this.table.timeouts.body;
        return handler(
          request.body && ms > 0 ? timedBody(request, this.table, ms) : request,
          exchange,
        );
      },
      onError,
      () => {},
    );
    return this.http.finished;
  }

  /**
   * HTTP/1.x: bytes both ways between the client and the inner server. The request heads are
   * followed: the header clock runs until a head is whole, the idle clock while no request is
   * open, and a request that is not HTTP/1.x on a connection ALPN made HTTP/1.1 ends it.
   */
  private async relay(to: Relay) {
    const up = this.up = await Deno.connect({ hostname: INNER_HOST, port: to.port });
    up.setNoDelay(true);
    const port = up.localAddr.port;
    to.clients.set(port, this);
    const heads = this.heads = new RequestHeads(
      () => {
        this.deadline = 0;
        this.inFlight++;
      },
      this.alpn === "http/1.1",
    );
    try {
      await Promise.all([this.copy(this.conn, up, heads), pipe(up, this.conn)]);
    } finally {
      to.clients.delete(port);
    }
  }

  /**
   * The clock after bytes from the client: a body must keep coming (`body`); a head that has
   * begun must end in time (`header`, started once, so that dripping bytes gains nothing);
   * otherwise a request is open and waits for its answer, or the connection is idle.
   */
  private follow(heads: RequestHeads) {
    if (heads.inBody) this.arm("body");
    else if (heads.partial) {
      if (this.stage !== "header" || this.deadline === 0) this.arm("header");
    } else if (this.inFlight > 0) this.deadline = 0;
  }

  /**
   * What every request of this connection tells its handler; `madeUp` is the inner server's
   * authority for a request without one (HTTP/1.x through the relay).
   */
  exchange(madeUp?: string): Exchange {
    return this.served ??= {
      remoteAddr: this.source ?? this.conn.remoteAddr as Deno.NetAddr,
      alpn: this.alpn,
      madeUp,
      upgraded: (ended) => {
        this.session = ended;
        this.deadline = 0;
      },
    };
  }

  /** Called by the inner server when it has answered a relayed request. */
  answered() {
    if (--this.inFlight <= 0 && !this.ended && !this.session) {
      this.inFlight = 0;
      // Answered before its body came whole: the client still owes the rest.
      this.arm(this.heads?.inBody ? "body" : "idle");
    }
  }

  /** Client to inner server: {@link pipe} with the request heads followed. */
  private copy(from: Deno.Conn, to: Deno.Conn, heads: RequestHeads) {
    return pipe(from, to, (bytes) => {
      const parts = heads.feed(bytes);
      if (heads.refused) {
        this.close();
        return undefined;
      }
      this.follow(heads);
      return parts;
    });
  }

  /** Stops taking requests and lets in-flight ones finish (a graceful stop). */
  drain(): Promise<void> {
    if (this.http && !this.ended) return this.http.shutdown().catch(() => {});
    if (this.inFlight === 0 && !this.session) this.close();
    return Promise.resolve();
  }
}

/** The inner server HTTP/1.x over TLS is relayed to, and whose connection each port is. */
interface Relay {
  port: number;
  clients: Map<number, Connection>;
}

/**
 * How one of our accept loops ends: stopped on purpose (`stopping`, then `done`), or lost, when
 * an accept fails for good or the inner server stops: `finished` then rejects with why.
 */
class ListenerEnd {
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
class Serving<C> {
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
async function acceptEach<C extends Deno.Conn>(
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
  return options.tls ? listenTls(options, options.tls, handler) : listenPlain(options, handler);
}

function listenPlain(options: ListenOptions, handler: ExchangeHandler): Listening {
  const { hostname, reusePort, tcpBacklog, onError, log } = options;
  let madeUp = "";
  const serve = (port: number) =>
    Deno.serve(
      { hostname, port, reusePort, tcpBacklog, onListen() {}, onError },
      (request, info) => handler(request, new PlainExchange(info, madeUp)),
    );
  let server = serve(options.port);
  const addr = server.addr;
  madeUp = `localhost:${addr.port}`;
  const end = new ListenerEnd();
  const failed = acceptFailures(addr, log, options.connections);
  // Deno.serve's accept loop ends at its first accept error. What could pass (EMFILE) opens
  // the port again after a back-off; anything else is the end of the listener.
  const watch = (s: Deno.HttpServer<Deno.NetAddr>): void => {
    s.finished.then(
      () => end.lost(new Error("it closed")),
      async (e) => {
        if (end.stopping) return;
        if (!passing(e) && !passing((e as Error)?.cause)) return end.lost(e);
        failed(e);
        await s.shutdown().catch(() => {});
        for (let backoff = 5; !end.stopping; backoff = Math.min(backoff * 2, 100)) {
          await sleep(backoff);
          try {
            server = serve(addr.port);
            return watch(server);
          } catch (again) {
            if (!passing(again)) return end.lost(again);
            failed(again);
          }
        }
      },
    );
  };
  watch(server);
  return {
    addr,
    finished: end.finished,
    async shutdown() {
      end.stopping = true;
      await server.shutdown().catch(() => {});
      end.done();
    },
  };
}

function listenTls(
  options: ListenOptions,
  tls: TlsKeys,
  handler: ExchangeHandler,
): Listening {
  if (!serveOnConnection) {
    throw new Error(
      `Deno ${Deno.version.deno} has no per-connection HTTP server ` +
        "(Deno[Deno.internal].serveHttpOnConnection) for HTTP/2; run denoserve on Deno 2.9",
    );
  }
  const { connections: table, log } = options;
  const relay: Relay = { port: 0, clients: new Map() };
  let madeUp = "";
  const inner = openInner(() =>
    Deno.serve({
      hostname: INNER_HOST,
      port: 0,
      onListen() {},
      onError: options.onError,
    }, (request, info) => {
      const connection = relay.clients.get(info.remoteAddr.port);
      if (connection === undefined) return new Response(null, { status: 421 });
      // Rejects when the answer broke off: handled, or the process would end.
      const answered = () => connection.answered();
      info.completed.then(answered, answered);
      return handler(request, connection.exchange(madeUp));
    })
  );
  relay.port = inner.addr.port;
  madeUp = `localhost:${inner.addr.port}`;
  const open = ({ cert, key, sni }: TlsKeys, port: number) => {
    const listener = Deno.listenTls(
      {
        hostname: options.hostname,
        port,
        cert,
        key,
        ...(sni ? { [SNI_RESOLVER]: sni } : {}),
        tcpBacklog: options.tcpBacklog,
        alpnProtocols: ["h2", "http/1.1"],
        ...(options.reusePort ? { reusePort: true } : {}),
      } as Deno.ListenTlsOptions & Deno.TlsCertifiedKeyPem,
    );
    noDelay((listener.addr as Deno.NetAddr).port, log);
    return listener;
  };
  let listener = open(tls, options.port);
  const addr = listener.addr as Deno.NetAddr;
  const serving = new Serving<Connection>();
  const failed = acceptFailures(addr, log, table);

  const end = new ListenerEnd();
  inner.finished.then(() => end.lost(new Error("the inner HTTP server stopped")), end.lost);

  const behind = options.behind;
  const accept = (from: Deno.TlsListener) =>
    acceptEach(from, end, failed, (conn) => {
      // Relays of a PROXY protocol front were counted there, under the client's address.
      if (end.stopping || (!behind && !table.admit((conn.remoteAddr as Deno.NetAddr).hostname))) {
        close(conn);
        table.shutDownLater(conn);
        return;
      }
      const connection = new Connection(conn, table, behind);
      serving.add(connection, connection.serve(handler, relay, options.onError));
    });
  const accepting = new Set([accept(listener)]);

  return {
    addr,
    replaceCertificate(cert, key, sni) {
      const next = open({ cert, key, sni }, addr.port);
      const old = listener;
      listener = next;
      accepting.add(accept(next));
      end.retire(old);
    },
    finished: end.finished,
    async shutdown() {
      end.stopping = true;
      end.retire(listener);
      await Promise.all(accepting);
      // The inner server finishes in-flight requests and closes idle connections; each relay
      // then sees its inner side end and closes the client's connection.
      await Promise.all([inner.shutdown(), ...[...serving.live].map((c) => c.drain())]);
      await serving.settled();
      end.done();
    },
  };
}

/**
 * The client addresses of the relays a PROXY protocol front keeps open, under the local port of
 * each relay's connection to the inner listener.
 */
export type ProxiedClients = Map<number, Deno.NetAddr>;

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

/**
 * One connection to a PROXY protocol listener: its header is read (within `header_timeout`),
 * then its bytes are relayed to the inner listener on loopback, which serves it as if it came
 * from the header's source.
 */
class ProxiedConnection implements Timed {
  deadline = 0;
  readonly stage: Stage = "header";
  ended = false;
  private up?: Deno.TcpConn;

  constructor(readonly conn: Deno.TcpConn, readonly table: Connections) {}

  expire(): undefined {
    this.close();
  }

  close() {
    if (this.ended) return;
    this.ended = true;
    close(this.conn);
    if (this.up) close(this.up);
  }

  /** Whether the header has been read (the connection now only relays). */
  get relaying(): boolean {
    return this.up !== undefined;
  }

  /**
   * Reads the header, then relays to `port` on loopback, entering the client in `clients` for
   * as long. When `count`, the connection is counted against the limits as the client's.
   */
  async serve(
    clients: ProxiedClients,
    port: number,
    count: boolean,
    refused: (peer: Deno.NetAddr, why: string) => void,
  ) {
    const table = this.table;
    const peer = this.conn.remoteAddr;
    let admitted: string | undefined;
    table.watch(this);
    const ms = table.timeouts.header;
    this.deadline = ms > 0 ? table.now + ms : 0;
    try {
      const header = await this.readHeader();
      table.unwatch(this);
      if (typeof header === "string") {
        if (header) refused(peer, header);
        return;
      }
      const source = header.source ?? peer;
      if (count) {
        if (!table.admit(source.hostname)) return;
        admitted = source.hostname;
      }
      const up = this.up = await Deno.connect({ hostname: INNER_HOST, port });
      if (this.ended) return;
      up.setNoDelay(true);
      const local = up.localAddr.port;
      clients.set(local, source);
      try {
        await writeAll(up, header.rest);
        const forth = pipe(this.conn, up);
        // The inner side ended: whatever the client still sends has no one to answer it.
        await pipe(up, this.conn);
        this.close();
        await forth;
      } finally {
        if (clients.get(local) === source) clients.delete(local);
      }
    } catch {
      /* reset, or closed by a timeout or a stop */
    } finally {
      table.unwatch(this);
      this.close();
      if (admitted !== undefined) table.release(admitted);
    }
  }

  /**
   * The header's source (undefined: the header names none) and the bytes read after it; or why
   * the connection is to be closed ("" when the client left, or a timeout or stop closed it).
   */
  private async readHeader(): Promise<{ source?: Deno.NetAddr; rest: Uint8Array } | string> {
    const buf = new Uint8Array(16 + V2_MAX_BODY);
    let filled = 0;
    while (filled < buf.length) {
      const n = await this.conn.read(buf.subarray(filled));
      if (n === null) return filled === 0 ? "" : "the PROXY protocol header was cut short";
      filled += n;
      const header = readProxyHeader(buf.subarray(0, filled));
      if (header.kind === "bad") return `${header.reason}`;
      if (header.kind === "header") {
        return { source: header.source, rest: buf.subarray(header.length, filled) };
      }
    }
    return "the PROXY protocol header is too long";
  }
}

/**
 * A listener whose connections start with a PROXY protocol header: accepted as plain TCP from
 * peers in `from`, each header read and its bytes relayed to an inner listener of the same kind
 * (plain or TLS) on loopback, which serves them as usual, with the header's source as the client
 * address. The TLS handshake therefore happens in the inner listener, after the header, which
 * arrives in clear before the ClientHello.
 */
function listenProxied(options: ListenOptions, from: IpSet, handler: ExchangeHandler): Listening {
  const { connections: table, log } = options;
  const clients: ProxiedClients = new Map();
  const innerOptions: ListenOptions = {
    ...options,
    hostname: INNER_HOST,
    port: 0,
    proxyProtocol: undefined,
    behind: clients,
  };
  const inner = openInner(() =>
    options.tls
      ? listenTls(innerOptions, options.tls, handler)
      : listenPlain(innerOptions, (request, exchange) => {
        const source = clients.get(exchange.remoteAddr.port);
        if (source === undefined) return new Response(null, { status: 421 });
        return handler(request, {
          remoteAddr: source,
          alpn: null,
          madeUp: exchange.madeUp,
          upgraded() {},
        });
      })
  );
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({
      hostname: options.hostname,
      port: options.port,
      tcpBacklog: options.tcpBacklog,
      ...(options.reusePort ? { reusePort: true } : {}),
    } as Deno.TcpListenOptions);
  } catch (e) {
    inner.shutdown();
    throw e;
  }
  const addr = listener.addr;
  const refused = proxyRefusals(addr, log);
  const failed = acceptFailures(addr, log, table);
  const serving = new Serving<ProxiedConnection>();
  const end = new ListenerEnd();
  inner.finished.then(() => end.lost(new Error("the inner listener stopped")), end.lost);

  const accepting = acceptEach(listener, end, failed, (conn) => {
    if (end.stopping) return close(conn);
    if (!from.has(conn.remoteAddr.hostname)) {
      close(conn);
      return refused(conn.remoteAddr, "its address is not in server.proxy_protocol_from");
    }
    conn.setNoDelay(true);
    const connection = new ProxiedConnection(conn, table);
    serving.add(
      connection,
      connection.serve(clients, inner.addr.port, options.tls !== undefined, refused),
    );
  });

  return {
    addr,
    ...(inner.replaceCertificate
      ? {
        replaceCertificate: (cert: string, key: string, sni?: TlsKeys["sni"]) =>
          inner.replaceCertificate!(cert, key, sni),
      }
      : {}),
    finished: end.finished,
    async shutdown() {
      end.stopping = true;
      end.retire(listener);
      await accepting;
      // Connections still without a header are closed; relays end when the inner listener,
      // stopping gracefully, closes their other side.
      for (const c of serving.live) if (!c.relaying) c.close();
      await inner.shutdown();
      await serving.settled();
      end.done();
    },
  };
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
