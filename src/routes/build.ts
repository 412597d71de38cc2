/**
 * Turns a validated {@link Config} into the ordered route table, once per (re)load.
 *
 * The pipeline, outermost first:
 *
 * 0. The error guard (a throw becomes a 500), the access log and `X-Request-Id`, metrics
 *    (`monitoring` extension), `server.response_headers`, `server.compression`, the guard
 *    again (`security_headers` on every answer sit between the two), HSTS on answers over TLS; then, from the `security` extension, `ip_filtering`
 *    (403 before anything else); then the site's and locations' `ip_rules` (403); then 400 for
 *    an empty Host; then `max_body_size` (413); then `rate_limiting` (429).
 * 1. CORS (`security` extension): answers preflights, adds headers to every answer below; then
 *    `csrf_protection` (its cookie on safe requests, 403 for unsafe ones without the token).
 * 2. The metrics endpoint and health paths (`monitoring` extension), then redirects
 *    (`server.redirect_instructions`): exact paths, before anything else.
 * 3. Basic auth and `forward_auth` (`server.locations`, proxy rules): guards prefixes; what
 *    passes goes on to 4–6.
 * 4. Reverse proxy rules (`server.reverse_proxy`), longest prefix first.
 * 5. V2 locations (`routing` extension): exact, regex, prefix, `__default__`.
 *    The `caching` extension wraps the handlers of 4 and of `proxy_pass` in 5.
 * 6. Static files from `http.static_dir` for everything else.
 *
 * Every error answer comes from {@link App.errorResponse}, which uses the templates folder.
 *
 * @module
 */
import {
  cachingConfig,
  type Config,
  monitoringConfig,
  routingConfig,
  securityConfig,
} from "../config/schema.ts";
import type { Logger } from "../log/logger.ts";
import { createProxy } from "../proxy/proxy.ts";
import { createFileServer } from "../static/file_server.ts";
import { fileServerOptions } from "./static_files.ts";
import { createAuthRoute } from "./auth.ts";
import { withAccessLog } from "./access_log.ts";
import { createCache } from "./cache.ts";
import { withCors } from "./cors.ts";
import { withCsrf } from "./csrf.ts";
import { createErrorPages } from "./error_pages.ts";
import type { ErrorResponder, Handler, Route } from "../http/types.ts";
import { createProxyForward } from "../proxy/proxy_pass.ts";
import { withErrorGuard } from "./guard.ts";
import { withHostRequired } from "./host.ts";
import { withResponseHeaders } from "./response_headers.ts";
import { withCompression } from "./compression.ts";
import { withBodyLimit } from "./body_limit.ts";
import { withHsts } from "./hsts.ts";
import { clientAddress, clientKey } from "./client_address.ts";
import { createHealthRoute } from "./health.ts";
import { withIpFilter } from "./ip_filter.ts";
import { withIpRules } from "./ip_rules.ts";
import { withRateLimit } from "./rate_limit.ts";
import { type RedisLink, redisLink } from "../redis/link.ts";
import { securityHeaderPairs, withSecurityHeaders } from "./security_headers.ts";
import { createLocationRoute } from "./locations.ts";
import { addBackendSource, createMetricsRoute, withMetrics } from "./metrics.ts";
import { createRedirectRoute } from "./redirects.ts";

/** Everything the server needs to answer requests under one configuration. */
export interface App {
  handle: Handler;
  /** Error answers of this configuration (templates folder, then built-in pages). */
  errorResponse: ErrorResponder;
  /** Stops timers and watchers this configuration started. */
  close(): void;
}

/** `ssl.hsts`, when TLS is on. */
const hstsValue = (config: Config) => config.ssl.enabled ? config.ssl.hsts : undefined;

/** Tries `routes` in order; the first whose matcher accepts answers, else `fallback`. */
export function dispatch(routes: Route[], fallback: Handler): Handler {
  if (routes.length === 0) return fallback;
  return (request, ctx) => {
    for (const route of routes) {
      const match = route.match(ctx);
      if (match !== undefined) {
        ctx.route = route.name;
        return route.handle(request, ctx, match);
      }
    }
    return fallback(request, ctx);
  };
}

/** Builds the route table for `config`. */
export function buildApp(config: Config, log: Logger): App {
  const monitoring = monitoringConfig(config);
  const metrics = monitoring?.metrics?.enabled ? monitoring.metrics : undefined;
  // Whether something reads the answers' Content-Length: the access log and the byte counter.
  const contentLength = log.accessEnabled || metrics !== undefined;
  const security = securityConfig(config);
  // The cached file answers carry the security headers already, so adding them finds them there;
  // with compression on they are marked as files, which it leaves as they are.
  const answers = {
    contentLength,
    headers: securityHeaderPairs(security?.security_headers),
    markFiles: config.server.compression.enabled,
  };
  const { errorResponse } = createErrorPages({
    templatesDir: config.http.templates_dir,
    ttlMs: config.http.file_cache_ttl_ms,
    log,
  });
  const files = createFileServer({
    ...fileServerOptions(config.http, answers),
    welcome: config.server.default_root,
    errorResponse,
  });
  const fallback: Handler = (request, ctx) => {
    ctx.route = "static";
    return files(request, ctx.path, ctx.query);
  };
  // The forwarder behind `proxy_pass`.
  const forward = createProxyForward({ errorResponse, log });
  // The `caching` extension sits in front of the proxied handlers only, behind authentication.
  const caching = cachingConfig(config);
  // One Redis connection per server URL for the caching extension and rate_limiting.
  const links = new Map<string, RedisLink>();
  const linkTo = (url: string | undefined) => {
    if (url === undefined) return undefined;
    let link = links.get(url);
    if (!link) {
      links.set(
        url,
        link = redisLink(url, { warn: (m) => log.warn(m), info: (m) => log.info(m) }),
      );
    }
    return link;
  };
  const cache = caching &&
    createCache(caching, { redis: caching.backend === "redis" ? linkTo(caching.url) : undefined });
  const cachedForward = cache
    ? Object.assign(cache.wrap(forward), { [Symbol.dispose]: () => forward[Symbol.dispose]() })
    : forward;

  // Behind authentication: `server.reverse_proxy` rules, then V2 locations, then static files.
  const guarded: Route[] = [];
  const proxy = createProxy(config.server.reverse_proxy, log, errorResponse);
  if (proxy.route) {
    guarded.push(cache ? { ...proxy.route, handle: cache.wrap(proxy.route.handle) } : proxy.route);
  }
  const locations = createLocationRoute(routingConfig(config), {
    config,
    answers,
    errorResponse,
    forward: cachedForward,
    staticFiles: files,
  });
  if (locations) guarded.push(locations);
  const inner = dispatch(guarded, fallback);

  const routes: Route[] = [];
  if (metrics) routes.push(createMetricsRoute(metrics.endpoint));
  const health = createHealthRoute(monitoring?.health_checks ?? [], () => proxy.pools);
  if (health) routes.push(health);
  const removeBackends = metrics ? addBackendSource(() => proxy.pools) : () => {};
  const redirects = createRedirectRoute(config.server.redirect_instructions);
  if (redirects) routes.push(redirects);
  const client = clientAddress(security?.trusted_proxies ?? []);
  const auth = createAuthRoute(config.server.locations, {
    log,
    errorResponse,
    next: inner,
    rules: config.server.reverse_proxy,
    client,
  });
  if (auth) routes.push(auth);

  let handle = dispatch(routes, inner);
  if (security?.csrf_protection) handle = withCsrf(security.csrf_protection, errorResponse)(handle);
  if (security?.cors) handle = withCors(security.cors, handle);
  if (security?.rate_limiting) {
    const rl = security.rate_limiting;
    const redis = rl.enabled && rl.backend === "redis" ? linkTo(rl.url) : undefined;
    const key = clientKey(security?.trusted_proxies ?? []);
    handle = withRateLimit(rl, { key, errorResponse, redis })(handle);
  }
  handle = withBodyLimit(config, errorResponse)(handle);
  handle = withHostRequired(errorResponse)(handle);
  // The site's and the locations' `ip_rules`, behind the server-wide filter.
  handle = withIpRules(config, client, errorResponse, log)(handle);
  if (security?.ip_filtering) {
    handle = withIpFilter(security.ip_filtering, client, errorResponse)(handle);
  }
  // A throw in a route or in HSTS is answered with 500 and still logged; a throw in the access
  // log itself is caught by the outer guard.
  const guard = withErrorGuard(log, errorResponse);
  handle = guard(withHsts(hstsValue(config))(handle));
  // Outside the inner guard, so that its 500 carries them too.
  handle = withSecurityHeaders(answers.headers)(handle);
  handle = withCompression(config.server.compression)(handle);
  // Outside the security headers, so that a rule can replace or drop one of them.
  handle = withResponseHeaders(config.server.response_headers)(handle);
  if (metrics) handle = withMetrics(handle);
  handle = guard(withAccessLog(log)(handle));
  const close = () => {
    removeBackends();
    auth?.[Symbol.dispose]();
    proxy.close();
    forward[Symbol.dispose]();
    for (const link of links.values()) link.close();
  };
  return { handle, errorResponse, close };
}
