/**
 * Forwarding one HTTP request to a backend with fetch and streaming the answer back.
 *
 * Timeouts cover only the time before response headers, so an idle streaming response body is
 * never cut. fetch has no separate connect timeout: when no headers have come after half of
 * `connect_timeout`, a TCP probe (given the other half) asks whether the backend accepts
 * connections at all; if it does not, the request ends with 504 and the backend is marked down. `response_timeout` bounds the
 * wait for headers of requests without a body or with a small one (read first, up to 64 KiB);
 * a streamed upload is not timed, since it may rightly take longer and its end cannot be seen
 * without copying it through JavaScript. A client that goes away aborts the backend request.
 *
 * @module
 */
import type { Logger } from "../log/logger.ts";
import type { Handler, RequestContext } from "../routes/types.ts";
import type { Link } from "./client.ts";
import { clientHost, forwardHeaders, responseHeaders } from "./headers.ts";
import type { Member, Pool } from "./pool.ts";
import type { CompiledRule } from "./rules.ts";
import { upstreamPath } from "./rules.ts";

/** Answers built by the proxy itself (502, 504). */
export type ErrorResponse = (status: number, request: Request) => Response;

/** Request bodies up to this size (with a Content-Length) are read before forwarding. */
const BUFFERED_BODY = 64 * 1024;
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);
const NULL_BODY = new Set([101, 103, 204, 205, 304]);
/** A small answer whose body the backend broke off (already logged). */
const BROKEN_BODY = new Error("the backend broke off the response body");

const CLIENT_GONE = "client went away";
const TIMED_OUT = "timed out";
const CONNECT_TIMED_OUT = "connect timed out";

/** One line for a fetch failure, with its cause (where the useful part is). */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : "";
  return (error.message + cause).split("\n")[0];
}

/** Whether a fetch failure happened while connecting (nothing reached the backend). */
export function isConnectError(error: unknown): boolean {
  return /\(Connect\)|tcp connect error|Connection refused|dns error|unreachable|No route/i
    .test(describeError(error));
}

/** Whether the backend at `hostname:port` accepts a TCP connection within `ms`. */
export async function tcpReachable(hostname: string, port: number, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), ms));
  const attempt = Deno.connect({ hostname, port });
  try {
    const result = await Promise.race([attempt, timeout]);
    if (result === "timeout") {
      attempt.then((c) => c.close(), () => {});
      return false;
    }
    result.close();
    return true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/** Options of {@link createForwarder}. */
export interface ForwarderOptions {
  rule: CompiledRule;
  pool: Pool;
  links: Link[];
  log: Logger;
  errorResponse: ErrorResponse;
  /** Watch response bodies (needed for least_conn counts and to log a backend dying mid-body). */
  watchBodies: boolean;
}

/**
 * Wraps a backend body so that its end, failure or cancellation is seen; `highWaterMark: 0`
 * keeps it from reading ahead of the client.
 */
function watchBody(
  body: ReadableStream<Uint8Array>,
  done: (error?: unknown) => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let finished = false;
  const finish = (error?: unknown) => {
    if (finished) return;
    finished = true;
    done(error);
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        finish(e);
        controller.error(e);
        return;
      }
      if (chunk.done) {
        finish();
        controller.close();
      } else controller.enqueue(chunk.value);
    },
    cancel(reason) {
      finish();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/** Creates the handler that forwards requests matching `rule`. */
export function createForwarder(options: ForwarderOptions): Handler {
  const { rule, pool, links, log, errorResponse, watchBodies } = options;
  const where = `server.reverse_proxy[${rule.index}]`;
  const connectMs = rule.connectTimeoutMs;
  const responseMs = rule.responseTimeoutMs;
  const probeFirst = connectMs < responseMs;
  const strippedPrefix = rule.rule.strip_prefix ? rule.prefix : "";

  /** One attempt against `member`; rejects with the reason on failure. */
  const attempt = async (
    member: Member,
    request: Request,
    ctx: RequestContext,
    target: string,
    headers: [string, string][],
    payload: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> | null,
  ): Promise<Response> => {
    const link = links[member.index];
    const controller = new AbortController();
    const clientSignal = request.signal;
    const onClientGone = () => controller.abort(CLIENT_GONE);
    if (clientSignal.aborted) throw CLIENT_GONE;
    clientSignal.addEventListener("abort", onClientGone, { once: true });
    // One timer per request: the connect probe first (when it comes before the header deadline),
    // then the rest of response_timeout. A streamed upload may rightly take longer than
    // response_timeout and its end cannot be seen without copying it through JavaScript, so only
    // the connect check covers it.
    const timed = !(payload instanceof ReadableStream);
    const started = Date.now();
    let headersIn = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = () => controller.abort(TIMED_OUT);
    if (probeFirst) {
      // Half the budget waits, half probes: a busy event loop must not pass for a dead backend.
      timer = setTimeout(async () => {
        const up = await tcpReachable(member.backend.host, member.backend.port, connectMs / 2);
        if (headersIn || controller.signal.aborted) return;
        if (!up) controller.abort(CONNECT_TIMED_OUT);
        else if (timed) timer = setTimeout(deadline, responseMs - (Date.now() - started));
      }, connectMs / 2);
    } else if (timed) {
      timer = setTimeout(deadline, responseMs);
    }
    member.active++;
    let response: Response;
    try {
      response = await fetch(link.base + target, {
        method: request.method,
        headers,
        body: payload,
        client: link.client,
        redirect: "manual",
        signal: controller.signal,
      });
    } catch (e) {
      member.active--;
      clientSignal.removeEventListener("abort", onClientGone);
      throw controller.signal.aborted ? controller.signal.reason : e;
    } finally {
      headersIn = true;
      clearTimeout(timer);
    }

    let out: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null =
      NULL_BODY.has(response.status) ? null : response.body;
    const length = out === null ? null : response.headers.get("content-length");
    if (length !== null && Number(length) <= BUFFERED_BODY) {
      // A small answer is read whole first, as nginx buffers: it costs less than relaying a
      // stream, frees the backend connection at once, and a backend that breaks off mid-body
      // gets the client a 502 instead of a cut connection.
      try {
        out = await response.bytes();
      } catch (e) {
        log.error(
          `${where}: ${member.backend.origin} broke off the response to ${request.method} ` +
            `${ctx.path}: ${(e as Error).message ?? e}`,
        );
        throw BROKEN_BODY;
      } finally {
        member.active--;
        clientSignal.removeEventListener("abort", onClientGone);
      }
    } else if (out === null || !watchBodies) {
      member.active--;
    } else {
      out = watchBody(out, (error) => {
        member.active--;
        clientSignal.removeEventListener("abort", onClientGone);
        if (error !== undefined && !clientSignal.aborted) {
          log.error(
            `${where}: ${member.backend.origin} broke off the response to ${request.method} ` +
              `${ctx.path}: ${(error as Error).message ?? error}; client connection aborted`,
          );
        }
      });
    }
    const headersOut = responseHeaders(
      response.headers,
      member.backend.locationOrigins,
      () => `${ctx.secure ? "https" : "http"}://${clientHost(request)}`,
      strippedPrefix,
    );
    if (out === response.body && headersOut === null) return response;
    return new Response(out, {
      status: response.status,
      statusText: response.statusText,
      headers: headersOut ?? response.headers,
    });
  };

  return async (request, ctx) => {
    const target = upstreamPath(rule, ctx.path) + ctx.query;
    const headers = forwardHeaders(request, ctx);
    let payload: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> | null = request.body;
    if (payload !== null) {
      // Small bodies are read first (as nginx does): one write to the backend, and a retry
      // stays possible. Others stream.
      const length = request.headers.get("content-length");
      if (length !== null && Number(length) <= BUFFERED_BODY) {
        try {
          payload = await request.bytes();
        } catch {
          log.debug(`${where}: client went away while sending ${request.method} ${ctx.path}`);
          return errorResponse(400, request);
        }
      }
    }
    let member = pool.pick();
    const retryable = !(payload instanceof ReadableStream) && IDEMPOTENT.has(request.method);
    for (let tries = 0; member !== undefined; tries++) {
      try {
        return await attempt(member, request, ctx, target, headers, payload);
      } catch (e) {
        if (e === BROKEN_BODY) return errorResponse(502, request);
        if (e === CLIENT_GONE) {
          log.debug(`${where}: client went away during ${request.method} ${ctx.path}`);
          return errorResponse(502, request);
        }
        if (e === TIMED_OUT) {
          log.warn(
            `${where}: ${member.backend.origin} sent no response headers within ` +
              `${rule.rule.response_timeout}s for ${request.method} ${ctx.path}`,
          );
          return errorResponse(504, request);
        }
        if (e === CONNECT_TIMED_OUT) {
          pool.fail(member, `no connection within ${rule.rule.connect_timeout}s`);
          return errorResponse(504, request);
        }
        const reason = describeError(e);
        if (!isConnectError(e)) {
          log.warn(
            `${where}: ${request.method} ${ctx.path} to ${member.backend.origin}: ${reason}`,
          );
          return errorResponse(502, request);
        }
        pool.fail(member, reason);
        const other = retryable && tries === 0 ? pool.pick(member) : undefined;
        if (other === undefined) {
          log.warn(`${where}: cannot reach ${member.backend.origin} for ${ctx.path}: ${reason}`);
          return errorResponse(502, request);
        }
        log.debug(`${where}: retrying ${request.method} ${ctx.path} on ${other.backend.origin}`);
        member = other;
      }
    }
    return errorResponse(502, request);
  };
}
