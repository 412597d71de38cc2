/**
 * The shapes every route shares.
 *
 * @module
 */

/** What the server learned about a request before routing it. */
export interface RequestContext {
  /** URL path, still percent-encoded. */
  path: string;
  /** The query string with its "?", or "". */
  query: string;
  /** The client's address. */
  remote: Deno.NetAddr;
  /** Whether the client connected over TLS. */
  secure: boolean;
  /**
   * `HTTP/3` or `HTTP/2` where the connection says so (QUIC, or TLS with ALPN h2); undefined
   * where the server does not learn the version (plain HTTP, HTTP/1.x over TLS).
   */
  readonly protocol?: string;
  /**
   * Ends the connection at once, answering nothing (nginx's `return 444`); what the handler
   * then returns is not sent. Absent for a handler called directly.
   */
  close?(): void;
  /**
   * The server name the client asked for in its TLS hello, where the server read it (with
   * several sites that have certificates of their own); undefined otherwise.
   */
  readonly sni?: string;
  /** {@link Route.name} of the route that took the request (`static` for the files); metrics read it. */
  route?: string;
  /** With `sites`: the first name of the site that answers (`default` for the default site). */
  site?: string;
  /** The request's id when access logging is on; pass the context to log calls to tag lines. */
  requestId?: string;
  /**
   * Set by the handler that upgraded the connection to a WebSocket. From then on the runtime
   * must be handed exactly `upgrade.response` (anything else ends the listener), and the access
   * line waits for the session to end.
   */
  upgrade?: Upgrade;
  /**
   * The authority the client named: its `Host`, or the `:authority` of an HTTP/2 request (which
   * Deno puts in the URL); null when it named none (HTTP/1.0 without `Host`, whose URL Deno fills
   * with a made-up `localhost:PORT`). Absent for a handler called directly: the URL's counts then.
   */
  readonly authority?: string | null;
}

/** A connection upgraded to a WebSocket (see {@link RequestContext.upgrade}). */
export interface Upgrade {
  /** The 101 answer `Deno.upgradeWebSocket` made. */
  response: Response;
  /** The client's side, closed when something fails after the upgrade. */
  socket: WebSocket;
  /** Settles when the session has ended on both sides. */
  ended: Promise<void>;
}

/** Builds an error answer; `details` replaces the default explanation. */
export type ErrorResponder = (
  status: number,
  request: Request,
  headers?: HeadersInit,
  details?: string,
) => Response;

/** Answers a request. */
export type Handler = (request: Request, ctx: RequestContext) => Response | Promise<Response>;

/** A cross-cutting concern: takes the handler it wraps, returns the wrapped one. */
export type Wrapper = (next: Handler) => Handler;

/**
 * A precompiled matcher and what to do on a match. What `match` found (a rule, a location and
 * its groups) is handed to `handle`, so that nothing is kept between the two calls and nothing
 * is looked up twice.
 */
export interface Route<M = unknown> {
  /** For debug logs. */
  name: string;
  /** What the route found for the request, or undefined when it does not take it. */
  match(ctx: RequestContext): M | undefined;
  /** Answers a request `match` took, with what it found. */
  handle(request: Request, ctx: RequestContext, match: M): Response | Promise<Response>;
}

/** Splits a request URL into its path and query without building a URL object. */
export function splitUrl(url: string): { path: string; query: string } {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start < 0) return { path: "/", query: "" };
  const q = url.indexOf("?", start);
  return q < 0
    ? { path: url.slice(start), query: "" }
    : { path: url.slice(start, q), query: url.slice(q) };
}

/** The authority part of a request URL (`host[:port]`). */
export function urlAuthority(url: string): string {
  const start = url.indexOf("//") + 2;
  const end = url.indexOf("/", start);
  return end < 0 ? url.slice(start) : url.slice(start, end);
}

/** Whether `path` is `prefix` or lies below it on a segment boundary. */
export function underPrefix(path: string, prefix: string): boolean {
  if (prefix === "/") return true;
  return path.startsWith(prefix) &&
    (path.length === prefix.length || path[prefix.length] === "/" || prefix.endsWith("/"));
}

/** Counts of what the connection layer did, for `-d` and the metrics. */
export interface ConnectionStats {
  open: number;
  accepted: number;
  /** Closed at once because `max_connections` or `max_connections_per_ip` was reached. */
  refused: { total: number; perIp: number };
  /** Closed because a stage (`handshake`, `header`, `idle`, `body`) took too long. */
  timedOut: { handshake: number; header: number; idle: number; body: number };
  /** Accept calls that failed (EMFILE and the like) and were retried. */
  acceptErrors: number;
}
