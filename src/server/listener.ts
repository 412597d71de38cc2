/**
 * Listeners over TCP: plain HTTP, HTTPS, and either behind the PROXY protocol. Every one is an
 * accept loop of our own (`accept_loop.ts`) whose connections are served by the runtime's own
 * HTTP server on each connection (`native_http.ts`): straight from clients
 * (`direct_listener.ts`), or after a PROXY protocol header (`proxied_listener.ts`). The connection
 * table they share is `connections.ts`.
 *
 * @module
 */
import type { Listening, ListenOptions } from "./accept_loop.ts";
import type { ExchangeHandler } from "./connections.ts";
import { listenDirect } from "./direct_listener.ts";
import { listenProxied } from "./proxied_listener.ts";

export type { Listening, ListenOptions } from "./accept_loop.ts";
export { Connections, type Exchange, type ExchangeHandler, type Timeouts } from "./connections.ts";

/** Listens on `hostname:port` (over TLS when `options.tls`) and serves with `handler`. */
export function listen(options: ListenOptions, handler: ExchangeHandler): Listening {
  if (options.proxyProtocol) return listenProxied(options, options.proxyProtocol.from, handler);
  return listenDirect(options, handler);
}
