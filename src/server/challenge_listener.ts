/**
 * The plain-HTTP listener on `ssl.acme.http_port` (port 80): ACME's http-01 challenge handler
 * mounted first, the HTTPS redirect for everything else. It opens before the first certificate
 * is ordered (the CA fetches the answer here) and stays for the life of the process; when
 * `ssl.redirect_http` names the same port it is that listener too, and the server opens none
 * there.
 *
 * It is a listener of the same native kind as the others (`direct_listener.ts`), with a
 * connection table of its own: the server's timeouts and per-address limit (a reload hands it
 * the new ones: {@link ChallengeListener.retime}), and no total limit.
 *
 * @module
 */
import { ConfigError } from "../config/config_error.ts";
import { createLogger, type Logger } from "../log/logger.ts";
import { redirectToHttps } from "../routes/https_redirect.ts";
import { Connections, type Timeouts } from "./connections.ts";
import { listenDirect } from "./direct_listener.ts";

/** Options of {@link listenForChallenges}. */
export interface ChallengeListenerOptions {
  /** Address to bind (`server.host`). */
  hostname: string;
  /** Port to bind (`ssl.acme.http_port`). */
  port: number;
  /** Answers a challenge request; null for any other request (then redirected to HTTPS). */
  challenges: (request: Request) => Response | Promise<Response> | null;
  /**
   * Port of the HTTPS listener, for the redirect, until {@link ChallengeListener.redirectTo}
   * names the real one. Default 443.
   */
  httpsPort?: number;
  /** The server's timeouts (ms) and per-address limit; defaults: nginx-like 60 s, no limit. */
  timeouts?: Timeouts;
  maxPerIp?: number;
  /** Where accept errors are told; default: the console at WARNING. */
  log?: Logger;
}

/** A running challenge listener. */
export interface ChallengeListener {
  readonly addr: Deno.NetAddr;
  /**
   * From now on requests that are not challenges are redirected to HTTPS on `httpsPort` (the
   * port the HTTPS listener really took, after start and after a reload).
   */
  redirectTo(httpsPort: number): void;
  /**
   * Takes new timeouts (ms) and a new per-address limit (a reload): each connection's next stage
   * is timed by them, as on every listener.
   */
  retime(timeouts: Timeouts, maxPerIp: number): void;
  shutdown(): Promise<void>;
}

/**
 * Opens the listener. Throws {@link ConfigError} naming `ssl.acme.http_port` when the port
 * cannot be bound.
 */
export function listenForChallenges(options: ChallengeListenerOptions): ChallengeListener {
  const { hostname, port, challenges } = options;
  // Used when a request has no usable Host header.
  const fallbackHost = hostname.includes(":") ? `[${hostname}]` : hostname;
  let others = redirectToHttps(options.httpsPort ?? 443, fallbackHost);
  const connections = new Connections();
  connections.timeouts = options.timeouts ??
    { handshake: 0, header: 60_000, idle: 75_000, body: 60_000 };
  connections.maxPerIp = options.maxPerIp ?? 0;
  const log = options.log ?? createLogger({ level: "WARNING", access: false });
  let server: ReturnType<typeof listenDirect>;
  try {
    server = listenDirect({
      hostname,
      port,
      reusePort: false,
      tcpBacklog: 511,
      connections,
      log,
      onError: () => new Response(null, { status: 500 }),
    }, (request) => challenges(request) ?? others(request));
  } catch (e) {
    const why = e instanceof Deno.errors.AddrInUse
      ? "already in use"
      : e instanceof Deno.errors.PermissionDenied
      ? "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
      : e instanceof Error
      ? e.message
      : String(e);
    throw new ConfigError(`ssl.acme.http_port: cannot listen on ${hostname}:${port}: ${why}`);
  }
  return {
    addr: server.addr,
    redirectTo(httpsPort) {
      others = redirectToHttps(httpsPort, fallbackHost);
    },
    retime(timeouts, maxPerIp) {
      connections.retime(timeouts);
      connections.maxPerIp = maxPerIp;
    },
    shutdown: () => server.shutdown(),
  };
}
