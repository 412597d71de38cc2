/**
 * Turns a validated {@link Config} into the ordered route table, once per (re)load.
 *
 * @module
 */
import type { Config } from "../config/schema.ts";
import type { Logger } from "../log/logger.ts";
import { errorPage } from "../pages/html.ts";
import { createProxy } from "../proxy/proxy.ts";
import { createFileServer } from "../static/file_server.ts";
import type { Handler, Route } from "./types.ts";

/** Everything the server needs to answer requests under one configuration. */
export interface App {
  handle: Handler;
  /** Stops timers and watchers this configuration started. */
  close(): void;
}

/** The built-in error answer. */
export function errorResponse(status: number, request: Request, headers?: HeadersInit): Response {
  const h = new Headers(headers);
  h.set("content-type", "text/html; charset=utf-8");
  return new Response(request.method === "HEAD" ? null : errorPage(status), { status, headers: h });
}

/** Builds the route table for `config`. */
export function buildApp(config: Config, log: Logger): App {
  const files = createFileServer({
    root: config.http.static_dir,
    listing: config.http.directory_listing,
    dotfiles: config.http.serve_dotfiles,
    ttlMs: config.http.file_cache_ttl_ms,
    maxFileSize: config.http.file_cache_max_file_size,
    maxBytes: config.http.file_cache_max_bytes,
    errorResponse,
  });
  const routes: Route[] = [];
  // Proxy rules are checked before static files.
  const proxy = createProxy(config.server.reverse_proxy, log, errorResponse);
  if (proxy.route) routes.push(proxy.route);
  const fallback: Handler = (request, ctx) => files(request, ctx.path, ctx.query);
  const handle: Handler = routes.length === 0 ? fallback : (request, ctx) => {
    for (const route of routes) if (route.match(ctx)) return route.handle(request, ctx);
    return fallback(request, ctx);
  };
  return {
    handle,
    close() {
      proxy.close();
    },
  };
}

/** Configuration this build cannot serve yet, named so that it is never silently ignored. */
export function unsupported(config: Config): string[] {
  const found: string[] = [];
  if (config.server.redirect_instructions.length) found.push("server.redirect_instructions");
  if (Object.keys(config.server.locations).length) found.push("server.locations");
  if (config.extensions.length) found.push("extensions");
  if (config.ssl.enabled) found.push("ssl.enabled");
  if (config.logging.log_file) found.push("logging.log_file");
  if (config.server.workers !== 1) found.push("server.workers");
  return found;
}
