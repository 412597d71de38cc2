/**
 * HTTPS in front of a plain `Deno.serve` on loopback.
 *
 * `Deno.serve({ cert, key })` leaves Nagle's algorithm on and writes a response in more than one
 * TLS record, so on a kept-alive connection every small answer waits for the client's delayed
 * ACK: about 40 ms each (measured with Deno 2.9.6: 1,100 requests/s against 35,000 this way).
 * Here TLS is terminated by `Deno.listenTls` and the bytes are relayed to an inner `Deno.serve`
 * on 127.0.0.1 with TCP_NODELAY set. ALPN still offers h2 and http/1.1; the inner server tells
 * the two apart by the HTTP/2 preface. On HTTP/1.x connections the relay follows the request
 * heads (`request_heads.ts`): for the header timeout, and to mark an HTTP/1.1 request that has
 * no Host. The client's real address is found again by the local
 * port of the relay's inner connection; a connection to the inner port that does not come from
 * the relay is refused.
 *
 * @module
 */

import { RequestHeads } from "./request_heads.ts";

/** What the server needs of a listener: where it listens, and a graceful stop. */
export interface Listening {
  readonly addr: Deno.NetAddr;
  /** Where the requests are parsed, when not at `addr` (the inner server behind TLS). */
  readonly httpPort?: number;
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
  replaceCertificate?(cert: string, key: string): void;
}

/** Options of {@link serveTls}. */
export interface TlsFrontOptions {
  hostname: string;
  port: number;
  reusePort: boolean;
  /** Listen queue length. */
  tcpBacklog: number;
  /** Time for the first HTTP/1.1 request head, in ms. */
  headerTimeoutMs: number;
  cert: string;
  key: string;
  onError: (error: unknown) => Response | Promise<Response>;
}

/** Bytes relayed per read: one TLS record holds at most 16 KiB. */
const CHUNK = 16 * 1024;

async function relay(
  from: Deno.Conn,
  to: Deno.Conn,
  heads?: RequestHeads,
): Promise<void> {
  const buf = new Uint8Array(CHUNK);
  const write = async (bytes: Uint8Array) => {
    let off = 0;
    while (off < bytes.length) off += await to.write(bytes.subarray(off));
  };
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      if (heads) { for (const part of heads.feed(buf.subarray(0, n))) await write(part); }
      else await write(buf.subarray(0, n));
    }
  } catch { /* reset or closed: the other direction ends too */ }
  try {
    await to.closeWrite();
  } catch { /* already closed */ }
}

const close = (conn: Deno.Conn) => {
  try {
    conn.close();
  } catch { /* already closed */ }
};

/** Serves `handler` over TLS on `hostname:port` (HTTP/2 and HTTP/1.1 by ALPN). */
export function serveTls(
  options: TlsFrontOptions,
  handler: Deno.ServeHandler<Deno.NetAddr>,
): Listening {
  const clients = new Map<number, Deno.NetAddr>();
  const inner = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
    onError: options.onError,
  }, (request, info) => {
    const remoteAddr = clients.get(info.remoteAddr.port);
    if (remoteAddr === undefined) return new Response(null, { status: 421 });
    return handler(request, { ...info, remoteAddr } as Deno.ServeHandlerInfo<Deno.NetAddr>);
  });
  const listen = (cert: string, key: string, port: number) =>
    Deno.listenTls(
      {
        hostname: options.hostname,
        port,
        cert,
        key,
        alpnProtocols: ["h2", "http/1.1"],
        ...(options.reusePort ? { reusePort: true } : {}),
      } as Deno.ListenTlsOptions & Deno.TlsCertifiedKeyPem,
    );
  let listener = listen(options.cert, options.key, options.port);
  const open = new Set<Promise<void>>();

  const serveConnection = async (conn: Deno.TlsConn) => {
    let up: Deno.TcpConn | undefined;
    // A client that does not send its first request head in time (slowloris) is closed. HTTP/2
    // connections are let go of once negotiated. A handshake that never finishes cannot be cut
    // short: Deno's TLS listener keeps such a socket open until the client goes.
    const timer = setTimeout(() => {
      close(conn);
      if (up) close(up);
    }, options.headerTimeoutMs);
    let heads: RequestHeads | undefined;
    try {
      const { alpnProtocol } = await conn.handshake();
      if (alpnProtocol === "h2") clearTimeout(timer);
      else heads = new RequestHeads(() => clearTimeout(timer));
      up = await Deno.connect({ hostname: "127.0.0.1", port: inner.addr.port });
      up.setNoDelay(true);
      const port = up.localAddr.port;
      clients.set(port, conn.remoteAddr);
      try {
        await Promise.all([relay(conn, up, heads), relay(up, conn)]);
      } finally {
        clients.delete(port);
      }
    } catch { /* a failed handshake (TLS 1.1, plain HTTP) or a reset: drop the connection */ }
    clearTimeout(timer);
    if (up) close(up);
    close(conn);
  };

  // Listeners this code closed on purpose (shutdown, a certificate swap); any other end of an
  // accept loop, or of the inner server, means the listener is gone.
  const retired = new WeakSet<Deno.TlsListener>();
  let stopping = false;
  const ended = Promise.withResolvers<void>();
  const lost = (reason: unknown) => {
    if (!stopping) ended.reject(reason ?? new Error("the listener closed"));
  };
  inner.finished.then(() => lost(new Error("the inner HTTP server stopped")), lost);

  const accept = async (from: Deno.TlsListener) => {
    try {
      for await (const conn of from) {
        const done = serveConnection(conn).finally(() => open.delete(done));
        open.add(done);
      }
      if (!retired.has(from)) lost(new Error("the listener closed"));
    } catch (e) {
      if (!retired.has(from)) lost(e);
    }
  };
  const accepting = new Set([accept(listener)]);
  const addr = listener.addr as Deno.NetAddr;

  return {
    addr,
    httpPort: inner.addr.port,
    replaceCertificate(cert, key) {
      const next = listen(cert, key, addr.port);
      const old = listener;
      listener = next;
      accepting.add(accept(next));
      retired.add(old);
      try {
        old.close();
      } catch { /* already closed */ }
    },
    finished: ended.promise,
    async shutdown() {
      stopping = true;
      retired.add(listener);
      try {
        listener.close();
      } catch { /* already closed */ }
      await Promise.all(accepting);
      // The inner server finishes in-flight requests and closes idle connections; each relay
      // then sees its inner side end and closes the client's connection.
      await inner.shutdown();
      await Promise.all(open);
      ended.resolve();
    },
  };
}
