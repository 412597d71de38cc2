/**
 * A listener behind the PROXY protocol (`server.proxy_protocol`): connections are taken only from
 * trusted peers and their header (`proxy_protocol.ts`) is read, and nothing after it, within the
 * header timeout. Each is then served natively, as on a direct listener, with the header's source
 * as the client address.
 *
 * Plain connections are read byte by byte up to the header's end. Deno cannot start server-side
 * TLS on an accepted TCP connection, so for TLS the listener is a TLS listener whose sockets hold
 * their first bytes back from the runtime's TLS server (`sockets.ts`, {@link holdListenerReads}):
 * the header is peeked at in the kernel, taken alone, and the ClientHello after it is then read
 * by the runtime as on any TLS listener. That takes libc through FFI (Linux): without it the
 * listener does not open, and says which permission to grant.
 *
 * @module
 */
import type { IpSet } from "../http/ip.ts";
import { type Logger, oncePer } from "../log/logger.ts";
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
import type { ExchangeHandler, Stage, Timed } from "./connections.ts";
import { Connection, openListener } from "./direct_listener.ts";
import { HELLO_MAX, readClientHello } from "./client_hello.ts";
import { readProxyHeader, V2_MAX_BODY } from "./proxy_protocol.ts";
import { HeldSocket, holdListenerReads, libcMissing, NEEDED } from "./sockets.ts";

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
  /** A TLS connection's socket, whose bytes the runtime has not seen yet. */
  socket?: HeldSocket;
  constructor(readonly conn: Deno.Conn) {}
  expire(): undefined {
    this.close();
  }
  close() {
    if (this.ended) return;
    this.ended = true;
    // The runtime's TLS server waits for bytes it is not shown: ended only by a shutdown.
    this.socket?.shutdown();
    close(this.conn);
  }
}

/**
 * Reads the PROXY protocol header at the start of a TLS connection from the kernel, where its
 * socket holds its bytes back from the runtime, and says its length: the caller takes it off
 * ({@link HeldSocket.release}) once the connection is admitted. With `readsName`, the server
 * name of the ClientHello after it is read too. Answers as {@link readHeader}.
 */
async function peekHeader(
  clock: HeaderClock,
  readsName: boolean,
): Promise<{ source?: Deno.NetAddr; length: number; sni?: string } | string> {
  const { conn } = clock;
  const socket = HeldSocket.of(conn.localAddr as Deno.NetAddr, conn.remoteAddr as Deno.NetAddr);
  if (!socket) return "its socket was not found among this process's descriptors";
  clock.socket = socket;
  const buf = new Uint8Array(16 + V2_MAX_BODY + (readsName ? HELLO_MAX : 0));
  // The balancer writes the header as it connects: it is there at once, or soon after.
  for (let wait = 1; !clock.ended; wait = Math.min(2 * wait, 64)) {
    const n = socket.peek(buf);
    if (n === 0) return "";
    if (n > 0) {
      const header = readProxyHeader(buf.subarray(0, n));
      if (header.kind === "bad") return header.reason;
      if (header.kind === "header") {
        const { source, length } = header;
        if (!readsName) return { source, length };
        const hello = readClientHello(buf.subarray(length, n));
        if (hello.kind === "hello") return { source, length, sni: hello.name };
        if (hello.kind === "other" || n === buf.length) return { source, length };
      } else if (n === buf.length) return "the PROXY protocol header is too long";
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
  return "";
}

/**
 * Reads a PROXY protocol header from `conn` and nothing after it: the rest of the connection
 * goes to the runtime's server. Returns the header's source (undefined: it names none), or why
 * the connection is to be closed ("" when the client left, or a timeout or stop closed it).
 */
async function readHeader(
  conn: Deno.Conn,
): Promise<{ source?: Deno.NetAddr; length: number } | string> {
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
    if (header.kind === "header") return { source: header.source, length: header.length };
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
 * A listener whose connections start with a PROXY protocol header: accepted from peers in
 * `from`, each header read, then served with the header's source as the client address.
 */
export function listenProxied(
  options: ListenOptions,
  from: IpSet,
  handler: ExchangeHandler,
): Listening {
  const { connections: table, log, onError, tls } = options;
  const missing = tls ? libcMissing() : undefined;
  if (missing) {
    throw new Deno.errors.NotCapable(
      `TLS behind the PROXY protocol reads each connection's header before TLS starts, with ` +
        `libc (${missing}); run with ${NEEDED}`,
    );
  }
  const held = tls;
  /** Several certificates: the server name of each ClientHello is read too (for 421). */
  let readsNames = held?.sni !== undefined;
  const open = (keys = held, port = options.port) => {
    const opened = openListener(options, port, keys);
    const bound = (opened.addr as Deno.NetAddr).port;
    const holding = keys ? holdListenerReads(bound) : 0;
    if (typeof holding === "string") {
      close(opened);
      throw new Error(
        `the first bytes of TLS connections on port ${bound} cannot be held: ${holding}`,
      );
    }
    return opened;
  };
  let listener = open();
  const addr = listener.addr as Deno.NetAddr;
  const madeUp = `localhost:${addr.port}`;
  const refused = proxyRefusals(addr, log);
  const failed = acceptFailures(addr, log, table);
  const reading = new Set<HeaderClock>();
  const serving = new Serving<Connection>();
  const end = new ListenerEnd();

  const take = async (conn: Deno.Conn) => {
    const clock = new HeaderClock(conn);
    reading.add(clock);
    table.watch(clock);
    const ms = table.timeouts.header;
    clock.deadline = ms > 0 ? table.now + ms : 0;
    let header: Awaited<ReturnType<typeof peekHeader>>;
    try {
      header = held ? await peekHeader(clock, readsNames) : await readHeader(conn);
    } catch {
      header = "";
    } finally {
      table.unwatch(clock);
      reading.delete(clock);
    }
    if (typeof header === "string" || clock.ended) {
      if (typeof header === "string" && header) refused(conn.remoteAddr as Deno.NetAddr, header);
      return clock.close();
    }
    const source = header.source ?? conn.remoteAddr as Deno.NetAddr;
    if (!table.admit(source.hostname)) return clock.close();
    if (clock.socket) {
      const taken = clock.socket.release(header.length);
      clock.socket = undefined;
      if (!taken) {
        table.release(source.hostname);
        return refuse(conn);
      }
    }
    const connection = new Connection(conn, table, source.hostname, source);
    if ("sni" in header) connection.sni = header.sni;
    serving.add(connection, connection.serve(handler, onError, madeUp));
  };

  /** Closes a connection not to be served; a TLS one's waiting handshake is shut down too. */
  const refuse = (conn: Deno.Conn) => {
    close(conn);
    if (held) table.shutDownLater(conn);
  };
  const accept = (from_: Deno.Listener) =>
    acceptEach(from_, end, failed, (conn) => {
      if (end.stopping) return refuse(conn);
      const peer = conn.remoteAddr as Deno.NetAddr;
      if (!from.has(peer.hostname)) {
        refuse(conn);
        return refused(peer, "its address is not in server.proxy_protocol_from");
      }
      take(conn);
    });
  const accepting = new Set([accept(listener)]);

  return {
    addr,
    ...(held
      ? {
        replaceCertificate(cert: string, key: string, sni?: TlsKeys["sni"]) {
          const next = open({ cert, key, sni }, addr.port);
          readsNames = sni !== undefined;
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
      // Connections still without a header are closed; the others finish as on any listener.
      for (const c of reading) c.close();
      await Promise.all([...serving.live].map((c) => c.drain()));
      await serving.settled();
      end.done();
    },
  };
}
