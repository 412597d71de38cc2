/**
 * `forward_auth`: an auth service (Authelia, Authentik, oauth2-proxy) is asked about each request
 * before it goes on, as Caddy's `forward_auth` and nginx's `auth_request` do.
 *
 * The service gets a GET without a body, carrying the client's headers (cookies and
 * `Authorization` among them) and what the request was: `X-Forwarded-Method`, `-Proto`, `-Host`,
 * `-Uri` and `-For` (the client's address as denoserve found it), and `X-Original-Method` and
 * `X-Original-URL` for services that read nginx's convention; the client's own values of those
 * are replaced. A 2xx answer lets the request go on with the answer's `copy_headers`; any other
 * answer (a 302 to the login page, 401, 403) goes back to the client as the service sent it.
 * The client's own headers of the `copy_headers` names are always removed first, so that nobody
 * can forge an identity. A service that cannot be reached gives 502, one that does not answer in
 * time 504; both are logged and nothing is let through.
 *
 * @module
 */
import { createHash } from "node:crypto";
import * as v from "valibot";
import { type ForwardAuth, ProxyRule } from "../config/schema.ts";
import type { Logger } from "../log/logger.ts";
import type { ErrorResponder, Handler, RequestContext } from "../http/types.ts";
import { openConnections } from "../proxy/connections.ts";
import { BUFFERED_BODY, describeError } from "../proxy/forward.ts";
import { clientHost, withoutNamed } from "../proxy/forwarded_headers.ts";
import { HOP_BY_HOP } from "../http/headers.ts";
import { BackendError, ConnectError, TimeoutError } from "../proxy/http1.ts";
import { compileRule } from "../proxy/rules.ts";
import { addressText, type ClientAddress } from "./client_address.ts";

/** Options of {@link createForwardAuth}. */
export interface ForwardAuthOptions {
  log: Logger;
  errorResponse: ErrorResponder;
  /** The client's address, as IP filtering finds it. */
  client: ClientAddress;
}

/** Asks the auth service about a request, then answers it with `next` or the service's answer. */
export interface ForwardAuthGate extends Disposable {
  (request: Request, ctx: RequestContext, next: Handler): Promise<Response>;
}

/** Cached answers kept at most per gate; the oldest goes first. */
const CACHE_MAX = 1024;

/** Never sent to the auth service: the request has no body there, and these are set here. */
const NOT_SENT = new Set([
  ...HOP_BY_HOP,
  "host",
  "content-length",
  "content-type",
  "content-encoding",
  "expect",
  "x-forwarded-for",
  "x-forwarded-host",
  "x-forwarded-method",
  "x-forwarded-proto",
  "x-forwarded-uri",
  "x-original-method",
  "x-original-url",
  "x-real-ip",
]);

/**
 * The gate of one `forward_auth` block; `where` names it in logs (`server.locations./app`).
 * Dispose it to close its connections.
 */
export function createForwardAuth(
  settings: ForwardAuth,
  where: string,
  options: ForwardAuthOptions,
): ForwardAuthGate {
  const { log, errorResponse, client } = options;
  const url = new URL(settings.url);
  const ssl = url.protocol === "https:";
  // The proxy's own client, so the service is reached with the proxy's TLS options.
  const rule = compileRule(
    v.parse(ProxyRule, {
      host: url.hostname,
      port: Number(url.port) || (ssl ? 443 : 80),
      ssl,
      ca_file: settings.ca_file,
      insecure_skip_verify: settings.insecure_skip_verify,
      connect_timeout: settings.timeout,
      response_timeout: settings.timeout,
    }),
    -1,
  );
  const connections = openConnections(rule);
  const backend = connections.backends[0].client;
  const target = url.pathname + url.search;
  const origin = rule.backends[0].origin;
  const timeoutMs = settings.timeout * 1000;
  const copiedSet = new Set(settings.copy_headers.map((h) => h.toLowerCase()));
  const cache = new Map<string, { until: number; pairs: [string, string][] }>();
  const ttlMs = settings.cache_ttl * 1000;

  /** The request that goes on: the client's, without its copied-name headers, plus `pairs`. */
  const passOn = (request: Request, pairs: readonly [string, string][]) => {
    const headers = new Headers();
    for (const [name, value] of request.headers) {
      if (!copiedSet.has(name)) headers.append(name, value);
    }
    for (const [name, value] of pairs) headers.append(name, value);
    // The same request with other headers: a copy (`new Request`) would lose what ties it to
    // its connection, and a WebSocket upgrade could no longer be accepted.
    return Object.defineProperty(request, "headers", { value: headers });
  };

  const ask = (request: Request, ctx: RequestContext, ip: string): [string, string][] => {
    let list: [string, string][] = [];
    let connection: string | null = null;
    for (const pair of request.headers) {
      if (pair[0] === "connection") connection = pair[1];
      if (!NOT_SENT.has(pair[0])) list.push(pair);
    }
    if (connection !== null) list = withoutNamed(list, connection);
    const proto = ctx.secure ? "https" : "http";
    const host = ctx.authority ?? clientHost(request);
    const uri = ctx.path + ctx.query;
    list.push(
      ["x-forwarded-method", request.method],
      ["x-forwarded-proto", proto],
      ["x-forwarded-host", host],
      ["x-forwarded-uri", uri],
      ["x-forwarded-for", ip],
      ["x-original-method", request.method],
      ["x-original-url", `${proto}://${host}${uri}`],
    );
    return list;
  };

  /** The cache key: the credentials and everything about the request the service may judge. */
  const keyOf = (request: Request, ctx: RequestContext, ip: string) => {
    const cookie = request.headers.get("cookie");
    const authorization = request.headers.get("authorization");
    if (cookie === null && authorization === null) return undefined;
    return createHash("sha256").update(
      JSON.stringify([
        cookie,
        authorization,
        request.method,
        ctx.authority ?? clientHost(request),
        ctx.path + ctx.query,
        ip,
      ]),
    ).digest("base64");
  };

  const gate = async (request: Request, ctx: RequestContext, next: Handler) => {
    const address = client(request, ctx);
    const ip = address ? addressText(address) : ctx.remote.hostname;
    const key = ttlMs > 0 ? keyOf(request, ctx, ip) : undefined;
    if (key !== undefined) {
      const hit = cache.get(key);
      if (hit && hit.until > Date.now()) return next(passOn(request, hit.pairs), ctx);
      if (hit) cache.delete(key);
    }
    let answer;
    try {
      answer = await backend.request({
        method: "GET",
        target,
        headers: ask(request, ctx, ip),
        body: null,
        responseTimeoutMs: timeoutMs,
        signal: request.signal,
        bufferLimit: BUFFERED_BODY,
      }, false);
    } catch (e) {
      const what = `${request.method} ${ctx.path}`;
      if (request.signal.aborted) {
        log.debug(`forward_auth ${where}: ${what}: ${describeError(e)}`, ctx);
        return errorResponse(502, request);
      }
      const late = e instanceof TimeoutError || (e instanceof ConnectError && e.timedOut);
      const why = e instanceof TimeoutError
        ? `sent no answer within ${settings.timeout}s`
        : e instanceof ConnectError
        ? (e.timedOut ? `no connection within ${settings.timeout}s` : describeError(e))
        : e instanceof BackendError
        ? `answered with something that is not HTTP: ${describeError(e)}`
        : describeError(e);
      log.warn(
        `forward_auth ${where}: cannot ask ${origin} about ${what}, refused with ` +
          `${late ? 504 : 502}: ${why}`,
        ctx,
      );
      return errorResponse(late ? 504 : 502, request);
    }
    if (answer.status < 200 || answer.status > 299) {
      log.debug(`forward_auth ${where}: ${origin} answered ${answer.status} for ${ctx.path}`, ctx);
      const empty = request.method === "HEAD" || answer.status === 304 || answer.status === 204;
      if (empty && answer.body instanceof ReadableStream) await answer.body.cancel();
      return new Response(empty ? null : answer.body, {
        status: answer.status,
        statusText: answer.statusText,
        headers: answer.headers,
      });
    }
    if (answer.body instanceof ReadableStream) await answer.body.cancel();
    const pairs: [string, string][] = [];
    for (const [name, value] of answer.headers) {
      if (copiedSet.has(name)) pairs.push([name, value]);
    }
    if (key !== undefined) {
      if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value!);
      cache.set(key, { until: Date.now() + ttlMs, pairs });
    }
    return next(passOn(request, pairs), ctx);
  };
  return Object.assign(gate, {
    [Symbol.dispose]() {
      connections[Symbol.dispose]();
      cache.clear();
    },
  });
}
