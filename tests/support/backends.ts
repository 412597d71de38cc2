/**
 * Backends on 127.0.0.1 and a free port for the proxy to talk to. Two bases: {@link serveBackend}
 * (a `Deno.serve` handler, every request recorded) and {@link tcpBackend} (raw bytes per
 * connection, connections counted). The others are made of them: an echo, a WebSocket echo, a
 * scripted keep-alive peer, a recorder of header lines as sent, and peers that misbehave.
 *
 * @module
 */

const enc = new TextEncoder();

/** A request a backend received. */
export interface SeenRequest {
  method: string;
  /** The request's full URL. */
  url: string;
  /** Path and query, as the backend got them. */
  path: string;
  headers: Headers;
  /** Body bytes, once the echo has read them. */
  bytes?: number;
}

/** A backend listening on 127.0.0.1; dispose it to stop it (twice is harmless). */
export interface Backend extends AsyncDisposable {
  port: number;
  url: string;
  /** Requests seen, newest last (recorded on arrival; empty for raw TCP backends). */
  seen: SeenRequest[];
}

/** TLS material (PEM texts) for an HTTPS backend. */
export interface BackendTls {
  cert: string;
  key: string;
}

/** The part of a URL after its authority. */
const pathOf = (url: string) => url.slice(url.indexOf("/", url.indexOf("//") + 2));

/**
 * A `Deno.serve` backend answering with `handler`, which is also handed the record of the
 * request (see {@link Backend.seen}). An exception in the handler is answered with 500.
 */
export function serveBackend(
  handler: (request: Request, seen: SeenRequest) => Response | Promise<Response>,
  tls?: BackendTls,
): Backend {
  const seen: SeenRequest[] = [];
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
    onError: () => new Response("backend error", { status: 500 }),
    ...(tls ?? {}),
  }, (request) => {
    const entry: SeenRequest = {
      method: request.method,
      url: request.url,
      path: pathOf(request.url),
      headers: new Headers(request.headers),
    };
    seen.push(entry);
    return handler(request, entry);
  });
  const port = server.addr.port;
  let stopped: Promise<void> | undefined;
  return {
    port,
    url: `${tls ? "https" : "http"}://127.0.0.1:${port}`,
    seen,
    [Symbol.asyncDispose]() {
      return stopped ??= server.shutdown();
    },
  };
}

/** What the {@link echoBackend} answers, as JSON. */
export interface Echo {
  /** The backend's name (also sent as `X-Backend`). */
  name: string;
  method: string;
  /** Path and query as received. */
  path: string;
  /** Request headers, lowercased names. */
  headers: Record<string, string>;
  /** Body bytes received. */
  bytes: number;
  /** The body as text when it has at most {@link ECHOED_BODY} bytes, else null; null without one. */
  body: string | null;
}

/** Bodies up to this size are echoed back; larger ones are only counted. */
export const ECHOED_BODY = 64 * 1024;

/**
 * A backend that answers with an {@link Echo} of what it received and `X-Backend: <name>`;
 * the body is counted (and echoed when small), and the count is added to its record in `seen`.
 */
export function echoBackend(name = "echo", tls?: BackendTls): Backend {
  return serveBackend(async (request, seen) => {
    let bytes = 0;
    const kept: Uint8Array<ArrayBuffer>[] = [];
    if (request.body) {
      for await (const chunk of request.body) {
        bytes += chunk.byteLength;
        if (bytes <= ECHOED_BODY) kept.push(chunk);
      }
    }
    seen.bytes = bytes;
    const echo: Echo = {
      name,
      method: request.method,
      path: pathOf(request.url),
      headers: Object.fromEntries(request.headers),
      bytes,
      body: request.body && bytes <= ECHOED_BODY ? await new Blob(kept).text() : null,
    };
    return Response.json(echo, { headers: { "x-backend": name } });
  }, tls);
}

/** A WebSocket session's end as the backend saw it. */
export interface BackendClose {
  code: number;
  reason: string;
}

/**
 * A WebSocket echo backend: sends every message back, except `close-me` (closes with 4001
 * "asked to") and `who` (answers with the request's Cookie); picks the `chat` subprotocol when
 * offered; answers "plain" to a request that is no upgrade. `closes` lists the sessions' ends.
 */
export function webSocketBackend(tls?: BackendTls): Backend & { closes: BackendClose[] } {
  const closes: BackendClose[] = [];
  const backend = serveBackend((request) => {
    if (request.headers.get("upgrade") !== "websocket") return new Response("plain");
    const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(/,\s*/);
    const cookie = request.headers.get("cookie") ?? "no cookie";
    const { socket, response } = Deno.upgradeWebSocket(request, {
      protocol: offered.includes("chat") ? "chat" : undefined,
    });
    socket.onmessage = (e) => {
      if (e.data === "close-me") socket.close(4001, "asked to");
      else if (e.data === "who") socket.send(cookie);
      else socket.send(e.data);
    };
    socket.onclose = (e) => closes.push({ code: e.code, reason: e.reason });
    return response;
  }, tls);
  return Object.assign(backend, { closes });
}

/**
 * A raw TCP backend: `serve` handles each connection, which is closed after it (disposing the
 * backend closes those still open); `connections` counts the connections accepted.
 */
export function tcpBackend(
  serve: (conn: Deno.Conn) => Promise<void>,
): Backend & { connections: number } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  let connections = 0;
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      connections++;
      serve(conn).catch(() => {}).finally(() => {
        conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed */ }
      });
    }
  })().catch(() => {});
  const port = (listener.addr as Deno.NetAddr).port;
  let stopped = false;
  return {
    get connections() {
      return connections;
    },
    port,
    url: `http://127.0.0.1:${port}`,
    seen: [],
    async [Symbol.asyncDispose]() {
      if (stopped) return;
      stopped = true;
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await accepting;
    },
  };
}

/** What a {@link scriptedBackend} sends for one request head. */
export interface ScriptedAnswer {
  bytes: string | Uint8Array;
  /** Close the connection after sending. */
  close?: boolean;
  /** Close the connection this long after sending (an idle keep-alive connection dropped). */
  closeAfterMs?: number;
}

/**
 * A raw keep-alive backend: reads each request (head, and a Content-Length body) on a
 * connection and sends what `answer(head)` says, as is; counts connections.
 */
export function scriptedBackend(
  answer: (head: string) => ScriptedAnswer,
): Backend & { connections: number } {
  return tcpBackend(async (conn) => {
    const buf = new Uint8Array(65536);
    let text = "";
    for (;;) {
      const end = text.indexOf("\r\n\r\n");
      if (end < 0) {
        const n = await conn.read(buf).catch(() => null);
        if (n === null) break;
        text += new TextDecoder().decode(buf.subarray(0, n));
        continue;
      }
      const head = text.slice(0, end);
      const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
      while (text.length < end + 4 + length) {
        const n = await conn.read(buf).catch(() => null);
        if (n === null) break;
        text += new TextDecoder().decode(buf.subarray(0, n));
      }
      text = text.slice(end + 4 + length);
      const a = answer(head);
      await conn.write(typeof a.bytes === "string" ? enc.encode(a.bytes) : a.bytes);
      if (a.close) break;
      if (a.closeAfterMs !== undefined) {
        setTimeout(() => {
          try {
            conn.close();
          } catch { /* closed */ }
        }, a.closeAfterMs);
      }
    }
  });
}

/**
 * A raw TCP backend that records the header lines of each request as they arrived (names as
 * sent), reads the body (Content-Length or chunked), and answers with the body's length; an
 * upgrade to WebSocket gets its 101 and the connection is held until the proxy closes it.
 */
export function recordingBackend(): Backend & { heads: string[][] } {
  const heads: string[][] = [];
  const backend = tcpBackend(async (conn) => {
    const buf = new Uint8Array(65536);
    let text = "";
    const more = async () => {
      const n = await conn.read(buf);
      if (n === null) throw new Error("closed");
      text += new TextDecoder("latin1").decode(buf.subarray(0, n));
    };
    while (!text.includes("\r\n\r\n")) await more();
    const end = text.indexOf("\r\n\r\n");
    const lines = text.slice(0, end).split("\r\n").slice(1);
    heads.push(lines);
    text = text.slice(end + 4);
    const value = (name: string) =>
      lines.find((l) => l.toLowerCase().startsWith(name + ":"))?.slice(name.length + 1).trim();
    const key = value("sec-websocket-key");
    if (key !== undefined) {
      const digest = await crypto.subtle.digest(
        "SHA-1",
        enc.encode(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"),
      );
      const accept = btoa(String.fromCharCode(...new Uint8Array(digest)));
      await conn.write(enc.encode(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
      ));
      while ((await conn.read(buf)) !== null) { /* until the proxy closes */ }
      return;
    }
    let bytes = 0;
    const length = value("content-length");
    if (length !== undefined) {
      while (text.length < Number(length)) await more();
      bytes = Number(length);
    } else if (value("transfer-encoding") === "chunked") {
      // The test bodies hold no digits, so the last chunk cannot be mistaken.
      while (!text.endsWith("\r\n0\r\n\r\n")) await more();
      for (let at = 0;;) {
        const eol = text.indexOf("\r\n", at);
        const size = parseInt(text.slice(at, eol), 16);
        if (size === 0) break;
        bytes += size;
        at = eol + 2 + size + 2;
      }
    }
    await conn.write(enc.encode(
      `HTTP/1.1 200 OK\r\nContent-Length: ${String(bytes).length}\r\nConnection: close\r\n\r\n` +
        bytes,
    ));
  });
  return Object.assign(backend, { heads });
}

/** How a {@link brokenBackend} misbehaves. */
export type Breakage = "reset" | "close" | "garbage" | "mid-body" | "hang";

/**
 * A raw TCP backend that misbehaves as `mode` says: resets the connection, closes it without a
 * word, answers with something that is not HTTP, breaks off a body, or says nothing and holds the
 * connection until disposed. `connections` counts the connections accepted.
 */
export function brokenBackend(mode: Breakage): Backend & { connections: number } {
  return tcpBackend(async (conn) => {
    const buf = new Uint8Array(16 * 1024);
    if (mode === "reset") {
      // Closing with unread bytes in the receive buffer makes Linux send RST.
      await new Promise((r) => setTimeout(r, 20));
      return;
    }
    await conn.read(buf);
    if (mode === "garbage") {
      await conn.write(enc.encode("SSH-2.0-OpenSSH_9.2\r\n\x00\xff garbage\r\n\r\n"));
    } else if (mode === "mid-body") {
      await conn.write(
        enc.encode(
          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n" +
            "x".repeat(1000),
        ),
      );
      await new Promise((r) => setTimeout(r, 50));
    } else if (mode === "hang") {
      // Say nothing; the connection ends when the proxy or the disposer closes it.
      while ((await conn.read(buf)) !== null) { /* the proxy's bytes, if any */ }
    }
  });
}

/**
 * A listener that never accepts and whose queue is full, so that connecting to it hangs (held by
 * a python3 child: Deno listens with a backlog it chooses).
 */
export async function blackhole(): Promise<{ port: number } & AsyncDisposable> {
  const child = new Deno.Command("python3", {
    args: [
      "-c",
      "import socket,sys\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\n" +
      "print(s.getsockname()[1],flush=True)\nsys.stdin.read()",
    ],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const port = Number((await reader.read()).value!.trim());
  reader.releaseLock();
  // Fill the accept queue (room for one with backlog 0); later SYNs are dropped.
  const fillers: Deno.Conn[] = [];
  for (let i = 0; i < 2; i++) {
    const attempt = Deno.connect({ hostname: "127.0.0.1", port });
    const c = await Promise.race([
      attempt,
      new Promise<null>((r) => setTimeout(() => r(null), 300)),
    ]);
    if (c === null) {
      attempt.then((late) => late.close(), () => {});
      break;
    }
    fillers.push(c);
  }
  return {
    port,
    async [Symbol.asyncDispose]() {
      for (const c of fillers) c.close();
      await child.stdin.close();
      await child.stdout.cancel().catch(() => {});
      await child.status;
    },
  };
}

/** A signed-in user of an {@link autheliaBackend}. */
export interface AutheliaUser {
  user: string;
  /** Sent as `Remote-Groups` when given. */
  groups?: string;
  /** Answer 403 (a policy that denies this user) instead of 200. */
  denied?: boolean;
}

/**
 * An auth service playing Authelia's forward-auth protocol: the `authelia_session` cookie names
 * a session in `sessions`; a known one gets 200 with `Remote-User`, `Remote-Groups` (when set),
 * `Remote-Name` and `Remote-Email` (and `X-Not-Copied`, which no proxy should pass on), a denied
 * one 403; anything else is sent to `login` with a 302 whose `rd` is the URL asked for
 * (from `X-Forwarded-Proto`, `-Host` and `-Uri`), or gets 401 for a method other than GET/HEAD.
 */
export function autheliaBackend(
  sessions: Record<string, AutheliaUser>,
  login = "https://auth.example.com/",
  tls?: BackendTls,
): Backend {
  return serveBackend((request) => {
    const cookie = request.headers.get("cookie") ?? "";
    const id = /(?:^|;\s*)authelia_session=([^;]+)/.exec(cookie)?.[1];
    const session = id === undefined ? undefined : sessions[id];
    if (session?.denied) return new Response("403 Forbidden by policy", { status: 403 });
    if (session) {
      const headers = new Headers({
        "remote-user": session.user,
        "remote-name": session.user.toUpperCase(),
        "remote-email": `${session.user}@example.com`,
        "x-not-copied": "secret",
      });
      if (session.groups !== undefined) headers.set("remote-groups", session.groups);
      return new Response(null, { status: 200, headers });
    }
    const h = request.headers;
    const rd = `${h.get("x-forwarded-proto")}://${h.get("x-forwarded-host")}` +
      h.get("x-forwarded-uri");
    const method = h.get("x-forwarded-method");
    if (method !== "GET" && method !== "HEAD") {
      return new Response("401 Unauthorized", { status: 401 });
    }
    return new Response(`<a href="${login}">302 Found</a>`, {
      status: 302,
      headers: {
        location: `${login}?rd=${encodeURIComponent(rd)}&rm=${method}`,
        "content-type": "text/html; charset=utf-8",
        "set-cookie": "authelia_flow=1; Path=/",
      },
    });
  }, tls);
}
