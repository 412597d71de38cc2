/**
 * WebSocket bridging: the client's upgrade is accepted with `Deno.upgradeWebSocket` only after a
 * WebSocket to the backend is open, so the subprotocol the backend chose is the one the client
 * gets. Frames pass both ways unchanged (text stays text, binary stays binary), close codes and
 * reasons are passed on, and a side that reads slower than the other writes is disconnected once
 * more than {@link MAX_BUFFERED} bytes wait for it (the WebSocket API offers no back-pressure).
 *
 * @module
 */
import type { Logger } from "../log/logger.ts";
import type { RequestContext } from "../routes/types.ts";
import type { Link } from "./client.ts";
import { forwardHeaders } from "./headers.ts";

/** Bytes allowed to wait for a slow side before the bridge is closed. */
export const MAX_BUFFERED = 16 * 1024 * 1024;

/** Whether `request` asks for a WebSocket upgrade. */
export function isWebSocketUpgrade(request: Request): boolean {
  // RFC 6455 §4.1: the opening handshake is a GET; anything else is forwarded as plain HTTP.
  if (request.method !== "GET") return false;
  const upgrade = request.headers.get("upgrade");
  return upgrade !== null && upgrade.toLowerCase() === "websocket";
}

const HANDSHAKE_HEADERS = [
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-extensions",
  "sec-websocket-protocol",
  "sec-websocket-accept",
];

/** Codes a WebSocket client may send (others are refused by the WebSocket API). */
const clientSendable = (code: number) => code === 1000 || (code >= 3000 && code <= 4999);
/** Codes that never travel in a close frame. */
const reserved = (code: number) => code === 1005 || code === 1006 || code === 1015;

/** Closes `ws` with `code` when the API allows it, plainly otherwise; never throws. */
function closeQuietly(ws: WebSocket, code?: number, reason?: string): void {
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
  link: Link;
  target: string;
  preserveHost: boolean;
  /** Milliseconds to wait for the backend's handshake. */
  timeoutMs: number;
  log: Logger;
  where: string;
  /** Called once when the bridge has closed (both sides). */
  onClose?: () => void;
}

/** Why a backend WebSocket could not be opened. */
export class BackendUnavailable extends Error {
  constructor(message: string, readonly timedOut: boolean) {
    super(message);
  }
}

function openBackend(
  url: string,
  protocols: string[],
  headers: Headers,
  client: Deno.HttpClient,
  timeoutMs: number,
  clientSignal: AbortSignal,
): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { protocols, headers, client });
    ws.binaryType = "arraybuffer";
    const timer = setTimeout(() => {
      cleanup();
      ws.close();
      reject(new BackendUnavailable(`no WebSocket handshake within ${timeoutMs / 1000}s`, true));
    }, timeoutMs);
    const onAbort = () => {
      cleanup();
      ws.close();
      reject(new BackendUnavailable("client went away", false));
    };
    const cleanup = () => {
      clearTimeout(timer);
      clientSignal.removeEventListener("abort", onAbort);
      ws.onopen = ws.onclose = ws.onerror = null;
    };
    clientSignal.addEventListener("abort", onAbort, { once: true });
    ws.onopen = () => {
      cleanup();
      resolve(ws);
    };
    ws.onerror = (e) => {
      cleanup();
      const message = (e as ErrorEvent).message || "WebSocket handshake failed";
      reject(new BackendUnavailable(message, false));
    };
    ws.onclose = (e) => {
      cleanup();
      reject(new BackendUnavailable(`backend closed during handshake (${e.code})`, false));
    };
  });
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
  const { link, target, log, where } = options;
  const headers = new Headers(forwardHeaders(request, ctx));
  for (const name of HANDSHAKE_HEADERS) headers.delete(name);
  if (!options.preserveHost) headers.delete("host");
  const offered = request.headers.get("sec-websocket-protocol");
  const protocols = offered === null
    ? []
    : offered.split(",").map((p) => p.trim()).filter((p) => p.length > 0);

  const backend = await openBackend(
    link.wsBase + target,
    protocols,
    headers,
    link.client,
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

  backend.onmessage = (e: MessageEvent<string | ArrayBuffer>) => {
    if (early !== null) {
      early.push(e.data);
      earlyBytes += size(e.data);
      if (earlyBytes > MAX_BUFFERED) overflow("client");
      return;
    }
    if (client.readyState !== WebSocket.OPEN) return;
    client.send(e.data);
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
  backend.onclose = (e) => {
    closed = true;
    if (client.readyState === WebSocket.CLOSED) end();
    if (client.readyState === WebSocket.CLOSED || client.readyState === WebSocket.CLOSING) return;
    if (reserved(e.code)) closeQuietly(client, e.code === 1006 ? 1011 : 1000, e.reason);
    else closeQuietly(client, e.code, e.reason);
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
  backend.onerror = () => {};
  client.onerror = () => {};
  return upgrade.response;
}
