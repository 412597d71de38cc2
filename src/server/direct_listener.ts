/**
 * Plain and TLS listeners whose connections come straight from clients: each connection is
 * counted against
 * `server.max_connections(_per_ip)` in the connection table (`connections.ts`), timed through its
 * stages, and served by the runtime's own HTTP/1.1 and HTTP/2 server for one connection
 * (`native_http.ts`): no bytes pass through JavaScript and no inner server listens.
 *
 * Stages: the TLS handshake (`handshake_timeout`), from then (or from accept, for plain HTTP)
 * to the first request reaching the handler (`header_timeout`), between requests
 * (`idle_timeout`), and a request body that stops arriving (`body_timeout`: the handler answers
 * 408). A WebSocket that took the connection counts as open until it ends; after a graceful stop
 * took too long it is closed with 1001.
 *
 * HTTP/2 is spoken where ALPN chose h2 and, as `Deno.serve` does, on a TLS connection that
 * negotiated no ALPN and starts with the HTTP/2 preface (the runtime decides; see README, Limits).
 *
 * With several sites that have certificates of their own, the listener's sockets hold their first
 * bytes back from the runtime (`sockets.ts`) until the server name of the ClientHello has been
 * read (`client_hello.ts`): a request whose Host belongs to a site with another certificate is
 * answered 421 (`routes/sites.ts`). Without libc the name is not read, and one warning says so.
 *
 * TCP_NODELAY: the runtime's HTTP server sets it on a plain connection it is given; `Deno.TlsConn`
 * has no `setNoDelay`, so it is set once on the TLS listening socket (`sockets.ts`), which Linux
 * hands to every accepted connection. Without it an answer written in pieces waits for the
 * client's delayed ACK (about 40 ms).
 *
 * @module
 */
import type { Logger } from "../log/logger.ts";
import {
  acceptEach,
  acceptFailures,
  close,
  ListenerEnd,
  type Listening,
  type ListenOptions,
  Serving,
  type TlsKeys,
} from "./accept_loop.ts";
import {
  type Connections,
  type Exchange,
  type ExchangeHandler,
  type Stage,
  type Timed,
  timedBody,
} from "./connections.ts";
import { HELLO_MAX, readClientHello } from "./client_hello.ts";
import { type HttpConnection, serveConnection } from "./native_http.ts";
import { HeldSocket, holdListenerReads, NEEDED, setListenerNoDelay } from "./sockets.ts";

/** One accepted connection (plain or TLS) from accept to close. */
export class Connection implements Timed {
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
  /** The socket while its first bytes are held back from the runtime. */
  private held?: HeldSocket;
  /**
   * The server name the client asked for in its ClientHello; read before the handshake when
   * `readsName` is set.
   */
  sni?: string;
  readsName = false;

  /**
   * `ip`: the address the connection was admitted under, released when it ends; `source`: the
   * client's address from a PROXY protocol header.
   */
  constructor(
    readonly conn: Deno.Conn,
    readonly table: Connections,
    readonly ip: string,
    private source?: Deno.NetAddr,
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
    // The runtime's TLS server waits for bytes it is not shown: ended only by a shutdown.
    this.held?.shutdown();
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
        if (this.readsName) await this.readName();
        this.alpn = (await (this.conn as Deno.TlsConn).handshake()).alpnProtocol;
        this.handshaking = false;
      }
      if (!this.ended) {
        if (this.stage !== "header" || this.deadline === 0) this.arm("header");
        const exchange = this.exchange(madeUp);
        this.http = serveConnection(
          this.conn,
          (request, info) => this.request(request, info, exchange, handler),
          onError,
          () => this.session !== undefined,
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
    table.release(this.ip);
  }

  /**
   * Reads the server name of the ClientHello from the kernel, where the socket holds it back,
   * then hands every byte to the runtime's TLS server.
   */
  private async readName() {
    const conn = this.conn;
    const socket = HeldSocket.of(conn.localAddr as Deno.NetAddr, conn.remoteAddr as Deno.NetAddr);
    if (!socket) {
      // Not found: only a walk at the next tick can shut it down.
      this.table.shutDownLater(conn);
      return this.close();
    }
    // Accepted by a listener that was not holding when it took the connection (a reload that
    // turned reading names on): the runtime reads this one itself.
    if (!socket.holds()) return;
    this.held = socket;
    // Most clients send the hello with the handshake's last ACK: it is there at once.
    for (let wait = 1; !this.ended; wait = Math.min(2 * wait, 64)) {
      const n = socket.peek(hello);
      if (n === 0) break;
      if (n > 0) {
        const read = readClientHello(hello.subarray(0, n));
        if (read.kind === "hello") this.sni = read.name;
        if (read.kind !== "partial" || n === hello.length) break;
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
    if (this.ended) return;
    this.held = undefined;
    socket.release(0);
  }

  private request(
    request: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
    exchange: Exchange,
    handler: ExchangeHandler,
  ) {
    this.deadline = 0;
    this.inFlight++;
    // `completed` rejects when the answer was not sent whole (its body broke off): handled
    // here, since an unhandled rejection would end the process.
    const done = () => {
      if (--this.inFlight === 0 && !this.ended && !this.session) this.arm("idle");
    };
    info.completed.then(done, done);
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
      sni: this.sni,
      close: () => this.close(),
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

/** Where a ClientHello is peeked at: one at a time, each read whole before the next. */
const hello = new Uint8Array(HELLO_MAX);

/** `Deno.listenTls`'s option for a certificate per SNI name (Deno 2.9). */
const SNI_RESOLVER: symbol = (Deno as unknown as Record<symbol, { resolverSymbol: symbol }>)[
  (Deno as unknown as { internal: symbol }).internal
]?.resolverSymbol;

/** Opens the listening socket of `options` on `port` (TLS with ALPN when `tls`). */
export function openListener(
  options: ListenOptions,
  port: number,
  tls?: TlsKeys,
): Deno.Listener {
  const common = {
    hostname: options.hostname,
    port,
    tcpBacklog: options.tcpBacklog,
    ...(options.reusePort ? { reusePort: true } : {}),
  };
  if (!tls) return Deno.listen(common as Deno.TcpListenOptions);
  const { cert, key, sni } = tls;
  const listener = Deno.listenTls(
    {
      ...common,
      cert,
      key,
      ...(sni ? { [SNI_RESOLVER]: sni } : {}),
      alpnProtocols: ["h2", "http/1.1"],
    } as
      & Deno.ListenTlsOptions
      & Deno.TlsCertifiedKeyPem,
  );
  noDelay((listener.addr as Deno.NetAddr).port, options.log);
  return listener;
}

/** A plain or TLS listener whose connections come straight from clients. */
export function listenDirect(options: ListenOptions, handler: ExchangeHandler): Listening {
  const { connections: table, log, tls, onError } = options;
  /**
   * Opens a listener; with several certificates its sockets hold their first bytes back, and
   * each connection's server name is read, for the 421 of a request whose Host has another one.
   */
  // Holding is set on every listening socket of the port, the one a new certificate retires too:
  // from the first that holds, every accept loop of the port looks (`Connection.readName`).
  let holding = false;
  const open = (keys: TlsKeys | undefined, port: number) => {
    const opened = openListener(options, port, keys);
    if (keys?.sni === undefined) return { listener: opened };
    const held = holdListenerReads((opened.addr as Deno.NetAddr).port);
    if (typeof held === "string") {
      if (!namesWarned) {
        namesWarned = true;
        log.warn(
          `the server name of TLS connections cannot be read (${held}): a request whose Host ` +
            `names a site with another certificate than the connection's is served instead of ` +
            `answered 421; grant ${NEEDED}`,
        );
      }
      return { listener: opened };
    }
    holding = true;
    return { listener: opened };
  };
  const first = open(tls, options.port);
  let listener = first.listener;
  const addr = listener.addr as Deno.NetAddr;
  const madeUp = `localhost:${addr.port}`;
  const serving = new Serving<Connection>();
  const failed = acceptFailures(addr, log, table);
  const end = new ListenerEnd();

  const accept = ({ listener: from }: ReturnType<typeof open>) =>
    acceptEach(from, end, failed, (conn) => {
      const ip = (conn.remoteAddr as Deno.NetAddr).hostname;
      if (end.stopping || !table.admit(ip)) {
        close(conn);
        // A TLS connection closed before its handshake keeps its socket until the client
        // sends something.
        if (tls) table.shutDownLater(conn);
        return;
      }
      const connection = new Connection(conn, table, ip);
      connection.readsName = holding;
      serving.add(connection, connection.serve(handler, onError, madeUp));
    });
  const accepting = new Set([accept(first)]);

  return {
    addr,
    ...(tls
      ? {
        replaceCertificate(cert: string, key: string, sni?: TlsKeys["sni"]) {
          const next = open({ cert, key, sni }, addr.port);
          const old = listener;
          listener = next.listener;
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

let noDelayWarned = false;
let namesWarned = false;
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
