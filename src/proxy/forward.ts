/**
 * Forwarding one HTTP request to a backend over the HTTP/1.1 client of src/proxy/http1.ts and
 * passing the answer back.
 *
 * `connect_timeout` bounds the TCP (and TLS) connect; a backend that cannot be reached is marked
 * down and an idempotent request goes to another backend once. `response_timeout` bounds the wait
 * for response headers of requests without a body or with a small one (read first, up to
 * 64 KiB); a streamed upload is not timed, since it may rightly take longer. Timeouts never cut an
 * idle streaming response body. A client that goes away closes the backend connection.
 *
 * @module
 */
import { bodyFailureStatus } from "../http/errors.ts";
import type { Logger } from "../log/logger.ts";
import type { ErrorResponder, Handler, RequestContext } from "../http/types.ts";
import { clientHost, forwardHeaders, relocate } from "./forwarded_headers.ts";
import {
  BackendError,
  BrokenBodyError,
  ClientBodyError,
  ConnectError,
  IDEMPOTENT,
  TimeoutError,
} from "./http1.ts";
import { compileHeaderRules } from "./header_rules.ts";
import { type Backend, backendUp, type Pool } from "./pool.ts";
import type { CompiledRule } from "./rules.ts";
import { backendPath } from "./rules.ts";

/** Request and response bodies up to this size (with a Content-Length) are read whole first. */
export const BUFFERED_BODY = 64 * 1024;

/**
 * The body to send for `request`: null, the bytes when it has a Content-Length up to
 * {@link BUFFERED_BODY} (read first, as nginx does: one write to the backend, and a retry stays
 * possible), else the stream. Rejects when the client goes away while sending.
 */
export async function readPayload(
  request: Request,
): Promise<Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> | null> {
  const body = request.body;
  if (body === null) return null;
  const length = request.headers.get("content-length");
  return length !== null && Number(length) <= BUFFERED_BODY ? await request.bytes() : body;
}

/** The length of a streamed body when the client gave one (else it is sent on chunked). */
export function streamLength(request: Request): number | undefined {
  const length = request.headers.get("content-length");
  return length === null ? undefined : Number(length);
}

/**
 * The status of a request whose exchange with a backend failed with `e`, for `server.reverse_proxy`
 * and `proxy_pass` alike: the client's own body failing is its fault (400, or 408 when it
 * stalled, 413 when it grew past max_body_size); no response headers in time, or no connection in
 * time, is 504; anything else 502.
 */
export function failureStatus(e: unknown): 400 | 408 | 413 | 502 | 504 {
  if (e instanceof ClientBodyError || bodyFailureStatus(e) !== 400) return bodyFailureStatus(e);
  return e instanceof TimeoutError || (e instanceof ConnectError && e.timedOut) ? 504 : 502;
}

/** One line for a failure, with its cause (where the useful part is) unless it says the same. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error && !error.message.includes(error.cause.message)
    ? `: ${error.cause.message}`
    : "";
  return (error.message + cause).split("\n")[0];
}

/** Whether a failure happened while connecting (nothing reached the backend). */
export function isConnectError(error: unknown): boolean {
  return error instanceof ConnectError ||
    /\(Connect\)|tcp connect error|Connection refused|dns error|unreachable|No route/i
      .test(describeError(error));
}

/** Waits `ms`; false when `signal` fires first (the client went away). */
export function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      signal.removeEventListener("abort", abort);
      resolve(ok);
    };
    const abort = () => done(false);
    const timer = setTimeout(() => done(true), ms);
    signal.addEventListener("abort", abort);
  });
}

/** Options of {@link createForwarder}. */
export interface ForwarderOptions {
  rule: CompiledRule;
  pool: Pool;
  log: Logger;
  errorResponse: ErrorResponder;
}

/** Creates the handler that forwards requests matching `rule`. */
export function createForwarder(options: ForwarderOptions): Handler {
  const { rule, pool, log, errorResponse } = options;
  const where = `server.reverse_proxy[${rule.index}]`;
  const strippedPrefix = rule.rule.strip_prefix ? rule.prefix : "";
  const up = compileHeaderRules(rule.rule.request_headers);
  const down = compileHeaderRules(rule.rule.response_headers);
  const preserveHost = rule.rule.preserve_host || (up?.setsHost ?? false);

  /** One attempt against `backend`; rejects with the reason on failure. */
  const attempt = async (
    backend: Backend,
    request: Request,
    ctx: RequestContext,
    target: string,
    headers: [string, string][],
    body: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> | null,
  ): Promise<Response> => {
    backend.active++;
    let answer;
    try {
      const streamed = body instanceof ReadableStream;
      answer = await backend.connections.client.request({
        method: request.method,
        target,
        headers,
        body,
        bodyLength: streamed ? streamLength(request) : undefined,
        responseTimeoutMs: streamed ? 0 : rule.responseTimeoutMs,
        signal: request.signal,
        bufferLimit: BUFFERED_BODY,
      }, preserveHost);
    } catch (e) {
      backend.active--;
      throw e;
    }
    answer.done.then((error) => {
      backend.active--;
      if (error !== undefined && !request.signal.aborted) {
        log.error(
          `${where}: ${backend.address.origin} broke off the response to ${request.method} ` +
            `${ctx.path}: ${describeError(error)}; client connection aborted`,
        );
      }
    });
    const sticky = pool.cookie?.(backend, request, ctx);
    if (sticky !== undefined) answer.headers.push(["set-cookie", sticky]);
    return new Response(answer.body, {
      status: answer.status,
      statusText: answer.statusText,
      headers: relocate(
        down ? down.apply(answer.headers, request, ctx) : answer.headers,
        backend.address.locationOrigins,
        () => `${ctx.secure ? "https" : "http"}://${clientHost(request)}`,
        strippedPrefix,
      ),
    });
  };

  return async (request, ctx) => {
    const target = backendPath(rule, ctx.path) + ctx.query;
    const forwarded = forwardHeaders(request, ctx);
    const headers = up ? up.apply(forwarded, request, ctx) : forwarded;
    let payload: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> | null;
    try {
      payload = await readPayload(request);
    } catch (e) {
      log.debug(`${where}: ${request.method} ${ctx.path}: the request body failed: ${e}`);
      return errorResponse(bodyFailureStatus(e), request);
    }
    const started = performance.now();
    let backend = pool.pick(request, ctx);
    const retryable = !(payload instanceof ReadableStream) && IDEMPOTENT.has(request.method);
    for (let tries = 0; backend !== undefined; tries++) {
      try {
        return await attempt(backend, request, ctx, target, headers, payload);
      } catch (e) {
        if (request.signal.aborted) {
          log.debug(`${where}: client went away during ${request.method} ${ctx.path}`);
          return errorResponse(502, request);
        }
        const status = failureStatus(e);
        if (e instanceof TimeoutError) {
          log.warn(
            `${where}: ${backend.address.origin} sent no response headers within ` +
              `${rule.rule.response_timeout}s for ${request.method} ${ctx.path}`,
          );
          return errorResponse(status, request);
        }
        if (e instanceof ClientBodyError) {
          log.debug(`${where}: ${request.method} ${ctx.path}: ${describeError(e)}`);
          return errorResponse(status, request);
        }
        const reason = describeError(e);
        if (e instanceof BrokenBodyError) {
          log.error(
            `${where}: ${backend.address.origin} broke off the response to ${request.method} ` +
              `${ctx.path}: ${reason}`,
          );
          return errorResponse(status, request);
        }
        if (e instanceof BackendError) {
          log.error(
            `${where}: ${backend.address.origin} answered ${request.method} ${ctx.path} ` +
              `with an invalid response: ${reason}`,
          );
          return errorResponse(status, request);
        }
        if (!isConnectError(e)) {
          log.warn(
            `${where}: ${request.method} ${ctx.path} to ${backend.address.origin}: ${reason}`,
          );
          return errorResponse(status, request);
        }
        pool.fail(backend, reason);
        // Nothing reached the backend: within `try_duration` the request is tried again, after
        // `try_interval` unless another backend is up, as long as its body can still be sent.
        const resendable = !(payload instanceof ReadableStream) || !payload.locked;
        if (resendable && performance.now() - started < rule.tryDurationMs) {
          const other = pool.pick(request, ctx, backend);
          if (other !== undefined && backendUp(other)) {
            backend = other;
            continue;
          }
          if (!(await pause(rule.tryIntervalMs, request.signal))) {
            return errorResponse(502, request);
          }
          backend = pool.pick(request, ctx);
          continue;
        }
        if (e instanceof ConnectError && e.timedOut) return errorResponse(status, request);
        const other = retryable && tries === 0 ? pool.pick(request, ctx, backend) : undefined;
        if (other === undefined) {
          log.warn(`${where}: cannot reach ${backend.address.origin} for ${ctx.path}: ${reason}`);
          return errorResponse(status, request);
        }
        log.debug(`${where}: retrying ${request.method} ${ctx.path} on ${other.address.origin}`);
        backend = other;
      }
    }
    return errorResponse(502, request);
  };
}
