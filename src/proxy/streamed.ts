/**
 * Requests whose body streams (larger than the proxy reads first, or of unknown length) go
 * through fetch, which copies the body inside the runtime: copying it through JavaScript is
 * several times slower, since Deno hands a request body over in small pieces. fetch has no
 * connect timeout, so a TCP connect within `connect_timeout` is tried first.
 *
 * @module
 */
import { fetchedHeaders } from "./headers.ts";
import { dial, type UpstreamResponse } from "./http1.ts";

const NULL_BODY = new Set([204, 205, 304]);

/** Where a streamed request goes. */
export interface StreamedTarget {
  /** The full URL. */
  url: string;
  /** The HTTP client to use (CA certificates, Host handling); fetch's default when absent. */
  client?: Deno.HttpClient;
  /** The backend's address, for the connect check. */
  hostname: string;
  port: number;
}

/** A streamed request to send. */
export interface StreamedRequest {
  method: string;
  headers: [string, string][];
  body: ReadableStream<Uint8Array>;
  signal: AbortSignal;
  connectTimeoutMs: number;
}

/** Sends `req` to `to` with fetch; the answer in the shape of src/proxy/http1.ts. */
export async function sendStreamed(
  to: StreamedTarget,
  req: StreamedRequest,
): Promise<UpstreamResponse> {
  const probe = { hostname: to.hostname, port: to.port, tls: false };
  (await dial({ ...probe, connectTimeoutMs: req.connectTimeoutMs })).close();
  const response = await fetch(to.url, {
    method: req.method,
    headers: req.headers,
    body: req.body,
    client: to.client,
    redirect: "manual",
    signal: req.signal,
  });
  let settle!: (error?: unknown) => void;
  const done = new Promise<unknown>((r) => settle = r);
  const source = NULL_BODY.has(response.status) ? null : response.body;
  if (source === null) settle();
  return {
    status: response.status,
    statusText: response.statusText,
    headers: fetchedHeaders(response.headers),
    body: source === null ? null : watchBody(source, settle),
    done,
  };
}

/**
 * Wraps a body so that its end, failure or cancellation is seen; `highWaterMark: 0` keeps it
 * from reading ahead of the client.
 */
function watchBody(
  body: ReadableStream<Uint8Array>,
  done: (error?: unknown) => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        done(e);
        controller.error(e);
        return;
      }
      if (chunk.done) {
        done();
        controller.close();
      } else controller.enqueue(chunk.value);
    },
    cancel(reason) {
      done();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
