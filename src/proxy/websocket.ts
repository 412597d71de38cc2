/**
 * WebSocket bridging: the client's upgrade is accepted with `Deno.upgradeWebSocket` only after a
 * WebSocket to the backend is open (src/proxy/ws_client.ts, over a connection of the backend's
 * HTTP/1.1 client, so the backend gets the client's headers and no others), so the subprotocol
 * the backend chose is the one the client gets. Frames pass both ways unchanged (text stays text, binary stays binary), close codes and
 * reasons are passed on, and a side that reads slower than the other writes is disconnected once
 * more than {@link MAX_BUFFERED} bytes wait for it (the WebSocket API offers no back-pressure).
 *
 * @module
 */
import type { Logger } from "../log/logger.ts";
import type { RequestContext } from "../http/types.ts";
import type { BackendClient } from "./http1.ts";
import { forwardHeaders } from "./forwarded_headers.ts";
import type { HeaderRules } from "./header_rules.ts";
import { type BackendSocket, HandshakeError, openWebSocket } from "./ws_client.ts";

/** Bytes allowed to wait for a slow side before the bridge is closed. */
export const MAX_BUFFERED = 16 * 1024 * 1024;

/** Whether `request` asks for a WebSocket upgrade. */
export function isWebSocketUpgrade(request: Request): boolean {
  // RFC 6455 §4.1: the opening handshake is a GET; anything else is forwarded as plain HTTP.
  if (request.method !== "GET") return false;
  const upgrade = request.headers.get("upgrade");
  return upgrade !== null && upgrade.toLowerCase() === "websocket";
}

/** Handshake headers, made anew for the backend (extensions are not offered to it). */
const HANDSHAKE = new Set([
  "host",
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-extensions",
  "sec-websocket-protocol",
  "sec-websocket-accept",
]);

/** Codes a WebSocket client may send (others are refused by the WebSocket API). */
const clientSendable = (code: number) => code === 1000 || (code >= 3000 && code <= 4999);
/** Codes that never travel in a close frame. */
const reserved = (code: number) => code === 1005 || code === 1006 || code === 1015;

/** Closes `ws` with `code` when the API allows it, plainly otherwise; never throws. */
function closeQuietly(ws: WebSocket | BackendSocket, code?: number, reason?: string): void {
  try {
    ws.close(code, reason);
  } catch {
    try {
      ws.close();
    } catch { /* already closed or not open yet */ }
  }
}

/** What the bridge needs to know about where it connects. */
export interface BridgeOptions {
  /** The backend's HTTP/1.1 client, whose connection carries the WebSocket. */
  backendClient: BackendClient;
  target: string;
  preserveHost: boolean;
  /** Milliseconds to wait for the backend's handshake. */
  timeoutMs: number;
  log: Logger;
  where: string;
  /** Called once when the bridge has closed (both sides). */
  onClose?: () => void;
  /** The rule's `request_headers`, applied to the handshake as to any request. */
  requestHeaders?: HeaderRules;
}

/** Why a backend WebSocket could not be opened. */
export class BackendUnavailable extends Error {
  constructor(message: string, readonly timedOut: boolean) {
    super(message);
  }
}

async function openBackend(
  client: BackendClient,
  handshake: Parameters<typeof openWebSocket>[1],
  timeoutMs: number,
  clientSignal: AbortSignal,
): Promise<BackendSocket> {
  let conn: Deno.Conn | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  // Both end the wait by closing the connection; the handshake then fails and says why here.
  let why: BackendUnavailable | undefined;
  const stop = (reason: BackendUnavailable) => {
    why ??= reason;
    try {
      conn?.close();
    } catch { /* closed */ }
  };
  try {
    conn = await client.open();
    if (clientSignal.aborted) throw new BackendUnavailable("client went away", false);
    timer = setTimeout(
      () =>
        stop(new BackendUnavailable(`no WebSocket handshake within ${timeoutMs / 1000}s`, true)),
      timeoutMs,
    );
    onAbort = () => stop(new BackendUnavailable("client went away", false));
    clientSignal.addEventListener("abort", onAbort, { once: true });
    return await openWebSocket(conn, handshake);
  } catch (e) {
    if (conn === undefined) throw e; // not connected: a ConnectError, which marks it down
    stop(new BackendUnavailable(describe(e), false));
    throw e instanceof BackendUnavailable ? e : why ?? e;
  } finally {
    clearTimeout(timer);
    if (onAbort) clientSignal.removeEventListener("abort", onAbort);
  }
}

function describe(e: unknown): string {
  if (e instanceof HandshakeError) return `WebSocket handshake failed: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

/**
 * Bridges `request` (an upgrade) to the backend; resolves to the 101 response, or rejects with
 * {@link BackendUnavailable} when the backend cannot be reached.
 */
export async function bridgeWebSocket(
  request: Request,
  ctx: RequestContext,
  options: BridgeOptions,
): Promise<Response> {
  const { target, log, where } = options;
  const up = options.requestHeaders;
  const own = forwardHeaders(request, ctx);
  const forwarded = up ? up.apply(own, request, ctx) : own;
  const clientHost = forwarded.find(([name]) => name === "host")?.[1];
  const backend = await openBackend(
    options.backendClient,
    {
      target,
      host: (options.preserveHost || up?.setsHost) && clientHost !== undefined
        ? clientHost
        : options.backendClient.authority,
      headers: forwarded.filter(([name]) => !HANDSHAKE.has(name)),
      protocols: request.headers.get("sec-websocket-protocol"),
    },
    options.timeoutMs,
    request.signal,
  );
  let upgrade: Deno.WebSocketUpgrade;
  try {
    upgrade = Deno.upgradeWebSocket(request, { protocol: backend.protocol || undefined });
  } catch (e) {
    closeQuietly(backend);
    throw e;
  }
  const client = upgrade.socket;
  client.binaryType = "arraybuffer";
  const sessionEnded = Promise.withResolvers<void>();
  ctx.upgrade = { response: upgrade.response, socket: client, ended: sessionEnded.promise };

  // Frames from the backend that arrive before the client side is open wait here.
  let early: (string | ArrayBuffer)[] | null = [];
  let earlyBytes = 0;
  let closed = false;
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    // The runtime keeps a client socket that went away without a close frame until its ping
    // timer fires (up to 30 s): it keeps nothing of the bridge.
    client.onopen =
      client.onmessage =
      client.onclose =
      client.onerror =
        null;
    backend.onmessage = backend.onclose = () => {};
    options.onClose?.();
    sessionEnded.resolve();
  };

  const overflow = (slow: string) => {
    if (closed) return;
    closed = true;
    log.warn(`${where}: WebSocket ${ctx.path} closed: the ${slow} reads too slowly`);
    closeQuietly(client, 1013, "peer too slow");
    closeQuietly(backend, 4013, "peer too slow");
  };
  const size = (d: string | ArrayBuffer) => typeof d === "string" ? d.length : d.byteLength;

  backend.onmessage = (data) => {
    if (early !== null) {
      early.push(data);
      earlyBytes += size(data);
      if (earlyBytes > MAX_BUFFERED) overflow("client");
      return;
    }
    if (client.readyState !== WebSocket.OPEN) return;
    client.send(data);
    if (client.bufferedAmount > MAX_BUFFERED) overflow("client");
  };
  client.onopen = () => {
    const queued = early ?? [];
    early = null;
    for (const d of queued) client.send(d);
  };
  client.onmessage = (e: MessageEvent<string | ArrayBuffer>) => {
    if (backend.readyState !== WebSocket.OPEN) return;
    backend.send(e.data);
    if (backend.bufferedAmount > MAX_BUFFERED) overflow("backend");
  };
  backend.onclose = (code, reason) => {
    closed = true;
    if (client.readyState === WebSocket.CLOSED) end();
    if (client.readyState === WebSocket.CLOSED || client.readyState === WebSocket.CLOSING) return;
    if (reserved(code)) closeQuietly(client, code === 1006 ? 1011 : 1000, reason);
    else closeQuietly(client, code, reason);
  };
  client.onclose = (e) => {
    closed = true;
    if (backend.readyState === WebSocket.CLOSED) end();
    if (backend.readyState === WebSocket.CLOSED || backend.readyState === WebSocket.CLOSING) {
      return;
    }
    if (clientSendable(e.code)) closeQuietly(backend, e.code, e.reason);
    else if (reserved(e.code)) closeQuietly(backend);
    else closeQuietly(backend, 1000, e.reason || `client closed with ${e.code}`);
  };
  client.onerror = () => {};
  backend.start();
  return upgrade.response;
}
