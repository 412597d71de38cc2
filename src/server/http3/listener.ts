/**
 * The HTTP/3 listener: a QUIC endpoint on the HTTPS port's number over UDP, ALPN `h3`, with the
 * HTTPS certificate. Its connections count against `server.max_connections(_per_ip)` with the
 * TCP ones.
 *
 * **A new certificate** (hot reload, ACME renewal) is taken by listening again on the same
 * endpoint: Deno's `QuicEndpoint.listen` replaces the endpoint's server configuration, so new
 * connections get the new certificate while the socket stays. Open connections are sent GOAWAY:
 * they finish what is in flight, and the client's next connection gets the new certificate.
 * Every listener object is kept as long as the endpoint lives, because when one is collected
 * Deno clears the endpoint's server configuration, whichever listener set it.
 *
 * @module
 */
import type { Logger } from "../../log/logger.ts";
import type { Connections, Exchange, ExchangeHandler } from "../connections.ts";
import type { Listening } from "../listener.ts";
import { Http3Connection, type Http3Limits } from "./connection.ts";
import { H3, type H3Error } from "./frames.ts";

/** Options of {@link listenHttp3}. */
export interface Http3ListenOptions {
  hostname: string;
  /** The UDP port: the HTTPS listener's port number. */
  port: number;
  /** Certificate chain and key in PEM. */
  tls: { cert: string; key: string };
  connections: Connections;
  limits: Http3Limits;
  /** Most requests in flight at once on one connection (QUIC's stream limit). */
  maxConcurrentStreams: number;
  onError: (error: unknown) => Response | Promise<Response>;
  refuse: (status: number, request: Request) => Response | Promise<Response>;
  log: Logger;
}

/** Listens for HTTP/3 and serves with `handler`. */
export function listenHttp3(options: Http3ListenOptions, handler: ExchangeHandler): Listening {
  const { connections: table, limits, log } = options;
  const endpoint = new Deno.QuicEndpoint({ hostname: options.hostname, port: options.port });
  const addr = endpoint.addr;
  // The transport's own idle limit is for a peer that vanished; the HTTP/3 one, closing a
  // connection with no request in flight after `idle_timeout`, is in Http3Connection.
  // Keep-alives keep a connection with a slow request in flight from timing out underneath it.
  const transportIdle = Math.max(limits.idleTimeoutMs, 30_000);
  const listenWith = (cert: string, key: string) =>
    endpoint.listen({
      alpnProtocols: ["h3"],
      cert,
      key,
      maxIdleTimeout: transportIdle,
      keepAliveInterval: 10_000,
      maxConcurrentBidirectionalStreams: options.maxConcurrentStreams,
      maxConcurrentUnidirectionalStreams: 16,
    });
  let listener: Deno.QuicListener;
  try {
    listener = listenWith(options.tls.cert, options.tls.key);
  } catch (e) {
    endpoint.close();
    throw e;
  }
  const kept: Deno.QuicListener[] = [listener];
  const live = new Set<Http3Connection>();
  const serving = new Set<Promise<void>>();
  let stopping = false;
  const ended = Promise.withResolvers<void>();
  ended.promise.catch(() => {});
  const madeUp = `localhost:${addr.port}`;
  const debug = log.enabled("DEBUG");

  const serve = async (incoming: Deno.QuicIncoming) => {
    let quic: Deno.QuicConn;
    try {
      quic = await incoming.accept();
    } catch {
      return; // the handshake failed or timed out
    }
    const remoteAddr = quic.remoteAddr;
    if (stopping || !table.admit(remoteAddr.hostname)) {
      try {
        quic.close({ closeCode: H3.EXCESSIVE_LOAD, reason: "too many connections" });
      } catch { /* gone */ }
      return;
    }
    const exchange: Exchange = {
      remoteAddr,
      alpn: "h3",
      madeUp,
      upgraded() {},
      close() {
        try {
          quic.close({ closeCode: H3.NO_ERROR, reason: "" });
        } catch { /* gone */ }
      },
    };
    const connection = new Http3Connection(quic, exchange, {
      handler,
      onError: options.onError,
      refuse: options.refuse,
      limits,
      timedOut: (stage) => table.stats.timedOut[stage]++,
      onProtocolError: debug
        ? (e: H3Error) =>
          log.debug(
            `HTTP/3 connection from ${remoteAddr.hostname}:${remoteAddr.port} closed with ` +
              `0x${e.code.toString(16)}: ${e.message}`,
          )
        : undefined,
    });
    live.add(connection);
    try {
      await connection.serve();
    } finally {
      live.delete(connection);
      table.release(remoteAddr.hostname);
    }
  };

  const accept = async () => {
    for (;;) {
      let incoming: Deno.QuicIncoming;
      try {
        incoming = await listener.incoming();
      } catch (e) {
        if (!stopping) ended.reject(e);
        return;
      }
      // Nothing of `incoming` is read before accept(): its getters consume it (Deno 2.9).
      if (stopping) {
        incoming.refuse();
        continue;
      }
      const done = serve(incoming).catch(() => {}).finally(() => serving.delete(done));
      serving.add(done);
    }
  };
  const accepting = accept();
  // A reload's new idle and header timeouts reach the connections waiting for a request.
  const retimed = () => {
    for (const c of live) c.retime();
  };
  table.retimed.add(retimed);

  return {
    addr,
    finished: ended.promise,
    replaceCertificate(cert, key) {
      listener = listenWith(cert, key);
      kept.push(listener);
      for (const c of live) void c.goaway();
    },
    async shutdown() {
      if (stopping) return await ended.promise.catch(() => {});
      stopping = true;
      table.retimed.delete(retimed);
      await Promise.all([...live].map((c) => c.goaway()));
      await Promise.all(serving);
      endpoint.close({ closeCode: H3.NO_ERROR, reason: "shutting down" });
      await accepting;
      kept.length = 0;
      ended.resolve();
    },
  };
}
