/**
 * The proxy route: compiles `server.reverse_proxy` into one matcher and a forwarder per rule.
 *
 * @module
 */
import type { ProxyRule } from "../config/schema.ts";
import type { Logger } from "../log/logger.ts";
import type { ErrorResponder, Handler, RequestContext, Route } from "../http/types.ts";
import { openConnections, type RuleConnections } from "./connections.ts";
import { createForwarder, describeError, isConnectError, pause } from "./forward.ts";
import { compileHeaderRules } from "./header_rules.ts";
import { createPool, type Pool } from "./pool.ts";
import { backendPath, compileMatcher, compileRule } from "./rules.ts";
import { BackendUnavailable, bridgeWebSocket, isWebSocketUpgrade } from "./websocket.ts";

/** What one WebSocket try answers when it is to be tried again. */
const RETRY = Symbol("retry");

/** The proxy part of an app. */
export interface Proxy {
  /** Undefined when no rule is configured; a match is the handler of the rule. */
  route?: Route<Handler>;
  /** The pool of each rule, in rule order, for metrics and health answers. */
  pools: readonly RulePool[];
  /** Stops health checks and closes backend connections. */
  close(): void;
}

/** A rule's pool with what names it. */
export interface RulePool {
  /** Position in `server.reverse_proxy`. */
  index: number;
  /** The rule's `path`. */
  path: string;
  pool: Pool;
}

/** Builds the proxy route for `rules`; throws ConfigError for a rule that cannot be used. */
export function createProxy(
  rules: readonly ProxyRule[],
  log: Logger,
  errorResponse: ErrorResponder,
): Proxy {
  if (rules.length === 0) return { pools: [], close() {} };
  const compiled = rules.map(compileRule);
  const opened: RuleConnections[] = [];
  const pools: Pool[] = [];
  const close = () => {
    for (const p of pools) p.close();
    for (const c of opened) c[Symbol.dispose]();
  };
  const handlers: Handler[] = [];
  try {
    for (const rule of compiled) {
      const where = `server.reverse_proxy[${rule.index}]`;
      // insecure_skip_verify is warned about by the checks (app/validate.ts).
      log.info(
        `proxy ${rule.rule.path} → ${rule.backends.map((b) => b.origin).join(", ")}` +
          (rule.rule.strip_prefix && rule.prefix ? " (prefix stripped)" : ""),
      );
      const connections = openConnections(rule);
      opened.push(connections);
      const pool = createPool(
        rule,
        connections.backends,
        log,
        (backend, signal) =>
          fetch(backend.connections.healthBase + rule.rule.health_path, {
            client: backend.connections.healthClient,
            redirect: "manual",
            signal,
          }),
      );
      pools.push(pool);
      const forward = createForwarder({ rule, pool, log, errorResponse });
      const requestHeaders = compileHeaderRules(rule.rule.request_headers);
      /** One try: the answer, or RETRY when the backend could not be connected to in the window. */
      const bridgeOnce = async (
        request: Request,
        ctx: RequestContext,
        started: number,
      ): Promise<Response | typeof RETRY> => {
        const backend = pool.pick(request, ctx);
        if (backend === undefined) return errorResponse(502, request);
        backend.active++;
        let open = true;
        const release = () => {
          if (open) backend.active--;
          open = false;
        };
        try {
          return await bridgeWebSocket(request, ctx, {
            onClose: release,
            backendClient: backend.connections.client,
            target: backendPath(rule, ctx.path) + ctx.query,
            preserveHost: rule.rule.preserve_host,
            requestHeaders,
            timeoutMs: rule.responseTimeoutMs,
            log,
            where,
          });
        } catch (e) {
          release();
          const reason = describeError(e);
          if (e instanceof BackendUnavailable && e.timedOut) {
            log.warn(`${where}: WebSocket ${ctx.path} to ${backend.address.origin}: ${reason}`);
            return errorResponse(504, request);
          }
          if (isConnectError(e)) {
            pool.fail(backend, reason);
            // The retry window (`try_duration`), as for any request: nothing reached the backend.
            if (
              performance.now() - started < rule.tryDurationMs &&
              await pause(rule.tryIntervalMs, request.signal)
            ) return RETRY;
          }
          log.warn(`${where}: WebSocket ${ctx.path} to ${backend.address.origin}: ${reason}`);
          return errorResponse(502, request);
        }
      };
      const websocket = async (request: Request, ctx: RequestContext): Promise<Response> => {
        const started = performance.now();
        for (;;) {
          const answer = await bridgeOnce(request, ctx, started);
          if (answer !== RETRY) return answer;
        }
      };
      // With `websocket: false` an upgrade is forwarded as a plain request: Upgrade and
      // Connection are hop-by-hop, so the backend sees an ordinary GET.
      handlers.push(
        rule.rule.websocket
          ? (request, ctx) =>
            isWebSocketUpgrade(request) ? websocket(request, ctx) : forward(request, ctx)
          : forward,
      );
    }
  } catch (e) {
    close();
    throw e;
  }
  const match = compileMatcher(compiled.map((r) => r.prefix));
  const route: Route<Handler> = {
    name: "proxy",
    // No rule is index -1, which reads undefined: the request goes on to the next route.
    match: (ctx) => handlers[match(ctx.path)],
    handle: (request, ctx, handler) => handler(request, ctx),
  };
  const named = pools.map((pool, i) => ({ index: i, path: rules[i].path, pool }));
  return { route, pools: named, close };
}
