/**
 * The runtime's own HTTP/1.1 and HTTP/2 server on a connection we accepted, with WebSockets kept.
 *
 * `Deno.serve` serves each connection it accepts with a per-connection server, which Deno 2.9
 * keeps among its internals as `Deno[Deno.internal].serveHttpOnConnection`. Used as it is, it
 * closes every WebSocket of the connection the moment the upgrade ends the HTTP exchange: its
 * loop (`serveHttpOn` in ext/http/00_serve.ts) resumes after `await op_http_wait(rid)` and calls
 * `op_http_close(rid, false)`, whose forced branch shuts down the WebSockets registered on that
 * server. It also leaves that `"http"` resource open when `op_http_wait` rejects (a TLS peer
 * gone without close_notify), and its abort listener throws an uncaught `BadResource` when the
 * signal is aborted after the connection has finished.
 *
 * All three go away when our own reaction to the `op_http_wait` promise runs before the loop's,
 * and closes the `"http"` resource: `op_http_close` then throws `BadResource`, which the loop
 * swallows, the WebSocket lives, nothing is left behind, and from then on the signal is never
 * aborted. The reaction is registered ahead of the loop's `await` like this: during the
 * synchronous call, a getter on `Promise.prototype.constructor` is watching. V8's `await` reads
 * `.constructor` of the promise it awaits (PromiseResolve), so the getter sees the
 * `op_http_wait` promise (an op promise, marked with `core.promiseIdSymbol`) before the `await`
 * subscribes, and subscribes first. The getter is installed once, on first use, and stays: while
 * no call is being watched it returns `Promise` at once. Putting the data property back after each
 * call instead would give `Promise.prototype` a new shape twice per connection, which costs every
 * connection about 900 bytes of garbage and the caches of code that touches promises.
 * A connection that ended normally with no WebSocket is left to the loop's own close: the early
 * close costs an exception the loop then swallows (about 10 µs of each connection's time).
 *
 * The resource's id is learnt without listing resources (which costs about 1 ms per call with
 * 5,000 open): ids are handed out in sequence, and `op_http_serve_on` makes the `"http"`
 * resource just before it calls `onListen`, so a cancel handle made there has the next id.
 *
 * {@link nativeCheck} proves at start-up, without any permission, what can be proved without a
 * connection (the internals are there, `await` reads the getter, ids come in sequence); the first
 * connections served confirm the rest (the getter saw an op promise, the id is an `"http"`
 * resource). When either fails, one warning names the cause, and from then on connections are
 * served by the runtime's older per-connection server, `Deno.serveHttp` ({@link serveLegacy}):
 * slower, but WebSockets live there too. It takes a request with both Content-Length and
 * Transfer-Encoding by the latter and drops the former, where the newer server answers 400; since
 * that cannot be told from the request it hands on, a connection there ends after any request
 * with a Transfer-Encoding, so that nothing sent after such a body is read as a request (RFC 9112
 * §6.1: a server that takes such a request must close the connection). Where it is missing too, the
 * newer server is used without the early close: WebSockets are then closed at their upgrade.
 *
 * @module
 */

/** What the runtime's server for one connection returns. */
export interface HttpConnection {
  /** Settles when the connection has closed; never rejects. */
  readonly finished: Promise<void>;
  /** Stops taking requests, lets in-flight ones finish, then closes. */
  shutdown(): Promise<void>;
  /** Ends the connection now (a no-op once it has finished). */
  cut(): void;
}

export type NativeHandler = (
  request: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Response | Promise<Response>;

type ServeOnConnection = (
  conn: Deno.Conn,
  signal: AbortSignal,
  handler: NativeHandler,
  onError: (error: unknown) => Response | Promise<Response>,
  onListen: () => void,
) => { finished: Promise<void>; shutdown(): Promise<void> };

interface Core {
  resources(): Record<string, string>;
  tryClose(rid: number): void;
  createCancelHandle(): number;
  promiseIdSymbol: symbol;
}

const internals = (Deno as unknown as Record<symbol, Record<string, unknown> | undefined>)[
  (Deno as unknown as { internal: symbol }).internal
];
const serveOn = internals?.serveHttpOnConnection as ServeOnConnection | undefined;
const core = internals?.core as Core | undefined;

/**
 * Told each promise an `await` (or `.then`) reads `.constructor` of, until it returns true.
 */
let hook: ((promise: Promise<unknown>) => boolean) | undefined;
const spy: PropertyDescriptor = {
  configurable: true,
  get(this: Promise<unknown>) {
    const h = hook;
    if (h === undefined) return Promise;
    hook = undefined; // `then` in `h` reads `.constructor` again
    if (!h(this)) hook = h;
    return Promise;
  },
};

let spyInstalled = false;

/** Calls `run` with `seen` told of each promise whose constructor is read ({@link spy}). */
function spying<T>(seen: (promise: Promise<unknown>) => boolean, run: () => T): T {
  if (!spyInstalled) {
    Object.defineProperty(Promise.prototype, "constructor", spy);
    spyInstalled = true;
  }
  hook = seen;
  try {
    return run();
  } finally {
    hook = undefined;
  }
}

/** Why the fast path cannot be used on this runtime, or undefined when it can. */
function check(): string | undefined {
  if (typeof serveOn !== "function") {
    return "Deno[Deno.internal].serveHttpOnConnection is missing";
  }
  if (
    !core || typeof core.resources !== "function" || typeof core.tryClose !== "function" ||
    typeof core.createCancelHandle !== "function" || typeof core.promiseIdSymbol !== "symbol"
  ) return "the runtime core lacks resources, tryClose, createCancelHandle or promiseIdSymbol";
  const awaited = Promise.resolve();
  let saw: unknown;
  spying((p) => (saw = p) === awaited, () => {
    (async () => await awaited)();
  });
  if (saw !== awaited) return "`await` no longer reads the awaited promise's constructor";
  const a = core.createCancelHandle();
  const b = core.createCancelHandle();
  core.tryClose(a);
  core.tryClose(b);
  if (b !== a + 1) return "resource ids are not handed out in sequence";
  return undefined;
}

/** Why the fast path is off (undefined while it is on). */
let off: string | undefined = check();
/** Connections still to confirm by listing the resources. */
let toConfirm = 3;
let warn: (line: string) => void = (line) => console.warn(line);
let warned = false;

function turnOff(why: string) {
  off ??= why;
  if (warned) return;
  warned = true;
  warn(
    `the runtime's HTTP server cannot keep WebSockets on this Deno (${Deno.version.deno}): ` +
      `${off}; ` +
      (serveHttp
        ? "connections are served by its older server (Deno.serveHttp) instead, which is slower"
        : `WebSockets are closed as soon as they open, and an "http" resource may be left ` +
          "behind by a connection that fails"),
  );
}

/**
 * Serves connections as when the start-up check fails, from now on (the next start says why):
 * for tests of that path.
 */
export function useFallback(why: string) {
  off ??= why;
}

/**
 * Whether connections are served with WebSockets kept, or why not. Tells `log` (once) when the
 * start-up check failed.
 */
export function nativeCheck(log?: (line: string) => void): string | undefined {
  if (log) warn = log;
  if (off !== undefined) turnOff(off);
  return off;
}

/** Whether the fast path is on (for tests: it must be on Deno 2.9.6). */
export function fastPath(): boolean {
  return off === undefined;
}

/**
 * Serves `conn` (plain TCP, or TLS after its handshake: h2 where ALPN chose it) with the runtime's
 * server for one connection.
 */
export function serveConnection(
  conn: Deno.Conn,
  handler: NativeHandler,
  onError: (error: unknown) => Response | Promise<Response>,
  upgraded: () => boolean,
): HttpConnection {
  if (off !== undefined && serveHttp) return serveLegacy(conn, handler, onError);
  if (!serveOn) throw new Error(`Deno ${Deno.version.deno}: ${off}`);
  const fast = off === undefined;
  // On the fast path a connection is cut by closing its "http" resource (which cancels it, as
  // the signal would): an idle connection then holds no AbortController. The first connections,
  // which may still turn the fast path off, keep one.
  const abort = !fast || toConfirm > 0 ? new AbortController() : undefined;
  let done = false;
  let rid = -1;
  const finish = () => {
    done = true;
    if (rid >= 0 && upgraded()) core!.tryClose(rid);
  };
  const failed = () => {
    done = true;
    if (rid >= 0) core!.tryClose(rid);
  };
  let seen = false;
  const onListen = fast
    ? () => {
      const next = core!.createCancelHandle();
      core!.tryClose(next);
      rid = next - 1;
    }
    : () => {};
  const call = () => serveOn(conn, abort?.signal as AbortSignal, handler, onError, onListen);
  const served = fast
    ? spying((p) => {
      // The first op promise: before it, the runtime's code makes a promise of its own.
      if ((p as unknown as Record<symbol, unknown>)[core!.promiseIdSymbol] === undefined) {
        return false;
      }
      seen = true;
      Promise.prototype.then.call(p, finish, failed);
      return true;
    }, call)
    : call();
  if (fast && toConfirm > 0) {
    toConfirm--;
    if (!seen) turnOff("the per-connection server awaits no op promise first");
    else if (core!.resources()[rid] !== "http") {
      turnOff(`the id after op_http_serve_on's is not its "http" resource`);
      rid = -1;
    }
  }
  const finished = served.finished.then(() => {
    done = true;
  }, () => {
    done = true;
  });
  return {
    finished,
    shutdown: () => done ? Promise.resolve() : served.shutdown().catch(() => {}),
    cut() {
      if (done) return;
      if (abort) abort.abort();
      else core!.tryClose(rid);
    },
  };
}

/** The older per-connection server: `Deno.serveHttp`, there at run time, not in the types. */
interface LegacyHttpConn {
  nextRequest(): Promise<
    { request: Request; respondWith(r: Response | Promise<Response>): Promise<void> } | null
  >;
  close(): void;
}
const serveHttp = (Deno as unknown as { serveHttp?: (conn: Deno.Conn) => LegacyHttpConn })
  .serveHttp;

/** Serves `conn` with `Deno.serveHttp`, when the fast path is off. */
function serveLegacy(
  conn: Deno.Conn,
  handler: NativeHandler,
  onError: (error: unknown) => Response | Promise<Response>,
): HttpConnection {
  // The newer server sets TCP_NODELAY on a plain connection itself; this one does not.
  if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  const http = serveHttp!(conn);
  const remoteAddr = conn.remoteAddr as Deno.NetAddr;
  const answering = new Set<Promise<unknown>>();
  /** The answers from now on end the connection (`Connection: close`): a stop, or see below. */
  let last = false;
  let done = false;
  const end = () => {
    done = true;
    try {
      http.close();
    } catch { /* closed */ }
  };
  const answer = async (
    event: NonNullable<Awaited<ReturnType<LegacyHttpConn["nextRequest"]>>>,
    completed: PromiseWithResolvers<void>,
  ) => {
    // It may have carried a Content-Length too: the last request of its connection.
    if (event.request.headers.has("transfer-encoding")) last = true;
    let response: Response;
    try {
      response = await handler(event.request, { remoteAddr, completed: completed.promise });
    } catch (e) {
      response = await onError(e);
    }
    if (last && response.status !== 101) {
      const headers = new Headers(response.headers);
      headers.set("connection", "close");
      const { status, statusText } = response;
      response = new Response(response.body, { status, statusText, headers });
    }
    await event.respondWith(response);
  };
  const serve = async () => {
    try {
      // Ends when the server closes the connection: the client's doing, or an answer's
      // `Connection: close`.
      for (;;) {
        const event = await http.nextRequest();
        if (event === null) break;
        const completed = Promise.withResolvers<void>();
        const answered = answer(event, completed).then(completed.resolve, completed.reject);
        answering.add(answered);
        answered.finally(() => answering.delete(answered));
      }
    } catch { /* the connection failed */ }
    await Promise.allSettled(answering);
    end();
  };
  const finished = serve();
  return {
    finished,
    async shutdown() {
      last = true;
      // Idle: nothing to finish. Otherwise the answers say `Connection: close` and the server
      // closes after the last (one already on its way when the stop came keeps the connection
      // open until the stop's time is up and it is cut).
      if (answering.size === 0) end();
      await finished;
    },
    cut() {
      if (done) return;
      end();
      try {
        conn.close();
      } catch { /* taken by the server */ }
    },
  };
}
