/**
 * The native connection layer (src/server/native_http.ts) against real listeners: the fast path
 * is taken on the Deno this project ships for, WebSockets live on plain and TLS listeners, many
 * at once and in both directions, and connections that end abruptly leave no resource behind.
 */
import assert from "node:assert/strict";
import { webSocketBackend } from "./support/backends.ts";
import { makeCerts, type TestCerts } from "./support/certs.ts";
import { hasCommand, spawnCli } from "./support/cli.ts";
import { HAPROXY, HAPROXY_HOST, startTcpFrontends } from "./support/haproxy.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { freePort, startTestServer, type TestServer } from "./support/servers.ts";
import { validate } from "../src/config/load.ts";
import { eventually } from "./support/wait.ts";
import { fastPath } from "../src/server/native_http.ts";

const core = (Deno as unknown as Record<symbol, { core: { resources(): Record<string, string> } }>)[
  (Deno as unknown as { internal: symbol }).internal
].core;
/** The runtime's per-connection HTTP servers still open in this process. */
const httpResources = () => Object.values(core.resources()).filter((n) => n === "http").length;
const BOUND = 15_000;

/** Whether `p` settles within {@link BOUND}. */
async function within(p: Promise<unknown>): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<boolean>((r) => timer = setTimeout(() => r(false), BOUND));
  try {
    return await Promise.race([p.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A server proxying /ws/ to a WebSocket echo backend, over TLS when `certs`. */
async function wsServer(dir: string, backendPort: number, certs?: TestCerts) {
  await writeFiles(dir, { "site/index.html": "home" });
  return await startTestServer({
    server: {
      reverse_proxy: [{ path: "/ws", host: "127.0.0.1", port: backendPort, websocket: true }],
    },
    http: { static_dir: `${dir}/site` },
    ...(certs ? { ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key } } : {}),
  });
}

/** Opens `n` WebSockets to `url` at once; resolves when every one is open. */
async function openSockets(url: string, n: number, client?: Deno.HttpClient) {
  return await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(url, client ? { client } as unknown as string[] : undefined);
        ws.onopen = () => resolve(ws);
        ws.onerror = (e) => reject(new Error(`a WebSocket failed: ${(e as ErrorEvent).message}`));
      })),
  );
}

/** Each socket sends `tag` + its index and must get it back. */
async function echoRound(sockets: WebSocket[], tag: string) {
  await Promise.all(sockets.map((ws, i) =>
    new Promise<void>((resolve, reject) => {
      ws.onmessage = (e) => e.data === `${tag}${i}` ? resolve() : reject(new Error(e.data));
      ws.onclose = (e) => reject(new Error(`closed ${e.code} before the echo of ${tag}${i}`));
      ws.send(`${tag}${i}`);
    })
  ));
}

async function closeAll(sockets: WebSocket[]) {
  await Promise.all(sockets.map((ws) =>
    new Promise<void>((resolve) => {
      if (ws.readyState === WebSocket.CLOSED) return resolve();
      ws.onclose = () => resolve();
      ws.onerror = () => {};
      ws.close();
    })
  ));
}

Deno.test("native connections: the fast path (WebSockets kept) is taken on Deno 2.9.6", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/index.html": "home" });
  await using srv = await startTestServer({ http: { static_dir: `${dir.path}/site` } });
  // The first connections confirm what the start-up check could not prove alone.
  for (let i = 0; i < 4; i++) assert.equal(await (await fetch(srv.url)).text(), "home");
  if (Deno.version.deno === "2.9.6") {
    assert.ok(fastPath(), "the native fast path is off on Deno 2.9.6: WebSockets would die");
  } else console.log(`Deno ${Deno.version.deno}: fast path ${fastPath() ? "on" : "off"}`);
  assert.ok(!srv.log.lines.some((l) => /cannot keep WebSockets/.test(l)), srv.log.lines.join("\n"));
});

for (const secure of [false, true]) {
  const kind = secure ? "TLS" : "plain";
  Deno.test(`WebSockets over ${kind}: 300 at once through the proxy, messages both ways, counted as open, nothing left behind`, async () => {
    await using dir = await tempDir();
    const certs = secure ? await makeCerts(dir.path) : undefined;
    await using backend = webSocketBackend();
    const before = httpResources();
    const srv: TestServer = await wsServer(dir.path, backend.port, certs);
    const client = Deno.createHttpClient(certs ? { caCerts: [certs.caPem] } : {});
    const port = srv.server.addr.port;
    const url = `${secure ? "wss" : "ws"}://localhost:${port}/ws/echo`;
    const sockets = await openSockets(url, 300, secure ? client : undefined);
    try {
      await echoRound(sockets, "a");
      // Still open after their upgrade was long done: a second round.
      await new Promise((r) => setTimeout(r, 200));
      await echoRound(sockets, "b");
      assert.ok(srv.server.connections.stats.open >= 300, "each WebSocket counts as open");
      assert.equal(backend.closes.length, 0, JSON.stringify(backend.closes.slice(0, 3)));
      // Other clients are served meanwhile.
      assert.equal(
        await (await fetch(`${secure ? "https" : "http"}://localhost:${port}/`, { client })).text(),
        "home",
      );
    } finally {
      await closeAll(sockets);
      client.close(); // its kept-alive connection
    }
    assert.ok(
      await eventually(() => srv.server.connections.stats.open === 0, BOUND),
      `${srv.server.connections.stats.open} still open`,
    );
    await srv[Symbol.asyncDispose]();
    assert.ok(
      await eventually(() => httpResources() <= before, BOUND),
      `${httpResources()} "http" resources left`,
    );
  });
}

const tools = hasCommand("h2load") && hasCommand("wrk");
Deno.test({
  name: "connections ended abruptly leave no resource behind: plain, TLS without close_notify, h2",
  ignore: !tools,
  async fn() {
    await using dir = await tempDir();
    await writeFiles(dir.path, { "site/index.html": "home", "site/big.txt": "x".repeat(1 << 20) });
    const certs = await makeCerts(dir.path);
    const plain = await startTestServer({ http: { static_dir: `${dir.path}/site` } });
    const tls = await startTestServer({
      http: { static_dir: `${dir.path}/site` },
      ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key },
    });
    const idle = Object.keys(core.resources()).length;
    const enc = new TextEncoder();
    // Plain: a request sent, the connection closed without reading the answer.
    for (let round = 0; round < 4; round++) {
      await Promise.all(Array.from({ length: 250 }, async () => {
        const c = await Deno.connect({ hostname: "127.0.0.1", port: plain.server.addr.port });
        await c.write(enc.encode("GET / HTTP/1.1\r\nHost: a\r\n\r\n")).catch(() => {});
        c.close();
      }));
    }
    // TLS: a process killed in the middle (no close_notify), h2 and HTTP/1.1.
    const h2load = (extra: string[]) =>
      new Deno.Command("h2load", {
        args: ["-n", "1000", "-c", "100", ...extra, `https://127.0.0.1:${tls.server.addr.port}/`],
        stdout: "null",
        stderr: "null",
      }).output();
    await h2load([]);
    await h2load(["--h1"]);
    // wrk ends its TLS connections without close_notify.
    await new Deno.Command("wrk", {
      args: ["-t1", "-c100", "-d1s", `https://127.0.0.1:${tls.server.addr.port}/`],
      stdout: "null",
      stderr: "null",
    }).output();
    try {
      const settled = await eventually(
        () =>
          plain.server.connections.stats.open === 0 && tls.server.connections.stats.open === 0 &&
          Object.keys(core.resources()).length <= idle,
        BOUND,
      );
      const now = core.resources();
      assert.ok(
        settled,
        `resources: ${Object.keys(now).length}, idle ${idle}; http: ${httpResources()}`,
      );
    } finally {
      await plain[Symbol.asyncDispose]();
      await tls[Symbol.asyncDispose]();
    }
  },
});

Deno.test("WebSockets across a reload that moves the listener: the old ones are closed with 1001 after shutdown_timeout, new ones work; shutdown does the same", async () => {
  await using dir = await tempDir();
  await using backend = webSocketBackend();
  await writeFiles(dir.path, { "site/index.html": "home" });
  const raw = (port: number) => ({
    server: {
      host: "127.0.0.1",
      port,
      shutdown_timeout: 3,
      reverse_proxy: [{ path: "/ws", host: "127.0.0.1", port: backend.port, websocket: true }],
    },
    http: { static_dir: `${dir.path}/site` },
  });
  const srv = await startTestServer(raw(0));
  const closes: number[] = [];
  const watch = (sockets: WebSocket[]) =>
    sockets.map((ws) =>
      new Promise<void>((resolve) => {
        ws.addEventListener("close", (e) => {
          closes.push(e.code);
          resolve();
        });
      })
    );
  try {
    const old = await openSockets(`ws://127.0.0.1:${srv.server.addr.port}/ws/echo`, 50);
    await echoRound(old, "a");
    const closed = watch(old);
    const port = freePort();
    const { config } = validate(raw(port));
    assert.deepEqual(await srv.server.reload(config), { listenersReplaced: true });
    // New WebSockets on the new listener exchange messages while the old ones are still open
    // (for shutdown_timeout).
    const fresh = await openSockets(`ws://127.0.0.1:${port}/ws/echo`, 50);
    await echoRound(fresh, "b");
    await echoRound(old, "c");
    assert.ok(await within(Promise.all(closed)), "the old WebSockets were closed");
    assert.deepEqual([...new Set(closes)], [1001], "the old WebSockets are told 1001");
    closes.length = 0;
    const stopping = watch(fresh);
    await srv.server.shutdown(1000);
    assert.ok(await within(Promise.all(stopping)), "shutdown closed the WebSockets");
    assert.deepEqual([...new Set(closes)], [1001]);
  } finally {
    await srv[Symbol.asyncDispose]();
  }
});

Deno.test({
  name: "WebSockets behind the PROXY protocol (HAProxy send-proxy-v2): 100 at once, both ways",
  ignore: !HAPROXY,
  async fn() {
    await using dir = await tempDir();
    await using backend = webSocketBackend();
    await writeFiles(dir.path, { "site/index.html": "home" });
    await using srv = await startTestServer({
      server: {
        proxy_protocol: true,
        proxy_protocol_from: ["127.0.0.0/8"],
        reverse_proxy: [{ path: "/ws", host: "127.0.0.1", port: backend.port, websocket: true }],
      },
      http: { static_dir: `${dir.path}/site` },
    });
    await using haproxy = await startTcpFrontends([
      { to: srv.server.addr.port, server: "send-proxy-v2" },
    ]);
    const sockets = await openSockets(`ws://${HAPROXY_HOST}:${haproxy.ports[0]}/ws/echo`, 100);
    try {
      await echoRound(sockets, "a");
      await new Promise((r) => setTimeout(r, 200));
      await echoRound(sockets, "b");
      assert.ok(srv.server.connections.stats.open >= 100);
    } finally {
      await closeAll(sockets);
    }
    assert.ok(await eventually(() => srv.server.connections.stats.open === 0, BOUND));
  },
});

Deno.test("WebSockets with server.workers: 2 (the CLI): 200 at once, both ways", async () => {
  await using dir = await tempDir();
  await using backend = webSocketBackend();
  await writeFiles(dir.path, {
    "site/index.html": "home",
    "config.yaml": JSON.stringify({
      server: {
        workers: 2,
        reverse_proxy: [{ path: "/ws", host: "127.0.0.1", port: backend.port, websocket: true }],
      },
      http: { static_dir: "./site" },
    }),
  });
  await using cli = await spawnCli(["-c", `${dir.path}/config.yaml`, "-p", "0"], { cwd: dir.path });
  const port = Number(new URL(cli.url).port);
  const sockets = await openSockets(`ws://127.0.0.1:${port}/ws/echo`, 200);
  try {
    await echoRound(sockets, "a");
    await new Promise((r) => setTimeout(r, 200));
    await echoRound(sockets, "b");
  } finally {
    await closeAll(sockets);
  }
  assert.equal(backend.closes.filter((c) => c.code !== 1000 && c.code !== 1005).length, 0);
});

Deno.test({
  name: "WebSockets while wrk loads the same listener, plain and TLS: 200 at once, both ways",
  ignore: !hasCommand("wrk"),
  async fn() {
    for (const secure of [false, true]) {
      await using dir = await tempDir();
      const certs = secure ? await makeCerts(dir.path) : undefined;
      await using backend = webSocketBackend();
      await using srv = await wsServer(dir.path, backend.port, certs);
      const port = srv.server.addr.port;
      const load = new Deno.Command("wrk", {
        args: ["-t1", "-c20", "-d3s", `${secure ? "https" : "http"}://127.0.0.1:${port}/`],
        stdout: "piped",
        stderr: "null",
      }).output();
      const client = Deno.createHttpClient(certs ? { caCerts: [certs.caPem] } : {});
      try {
        const url = `${secure ? "wss" : "ws"}://localhost:${port}/ws/echo`;
        const sockets = await openSockets(url, 200, secure ? client : undefined);
        try {
          await echoRound(sockets, "a");
          await echoRound(sockets, "b");
        } finally {
          await closeAll(sockets);
        }
      } finally {
        const done = new TextDecoder().decode((await load).stdout);
        client.close();
        assert.match(done, /Requests\/sec/, done);
      }
    }
  },
});
