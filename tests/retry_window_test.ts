/**
 * `try_duration` / `try_interval`: a single backend stopped and started again on its port while
 * clients keep sending requests; with the window, none of them gets a 502.
 */
import assert from "node:assert/strict";
import { configError } from "./support/config.ts";
import { freePort, startProxyServer } from "./support/servers.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `test` holds (checked every 10 ms). */
async function until(test: () => boolean) {
  while (!test()) await sleep(10);
}

/** A backend on `port` (0: any) answering "ok", counting requests. */
function backendOn(port: number) {
  let served = 0;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port, onListen() {} },
    async (req) => {
      await req.body?.cancel();
      served++;
      return new Response("ok");
    },
  );
  return { server, served: () => served };
}

Deno.test("try_duration: requests during a backend restart wait for it instead of getting 502", async () => {
  let backend = backendOn(0);
  const port = backend.server.addr.port;
  await using s = await startProxyServer(port, { try_duration: 30, try_interval: 0.05 });
  const statuses: number[] = [];
  let stop = false;
  const client = async (i: number) => {
    for (let n = 0; !stop; n++) {
      // GETs and PUTs with a small body alike. (A POST written on a kept-alive connection just as
      // the stopping backend closes it may have reached it, so it is not sent again: 502, as in
      // nginx. The window is about connections that cannot be made.)
      const r = n % 2
        ? await fetch(`${s.url}/c${i}`, { method: "PUT", body: "payload" })
        : await fetch(`${s.url}/c${i}`);
      await r.text();
      statuses.push(r.status);
    }
  };
  const clients = [0, 1, 2, 3].map(client);
  try {
    await until(() => statuses.length >= 20);
    await backend.server.shutdown();
    // Requests are now failing to connect and waiting in the window.
    await until(() => s.log.lines.some((l) => /is down for/.test(l)));
    const before = statuses.length;
    backend = backendOn(port);
    await until(() => backend.served() >= 20);
    assert.ok(statuses.length >= before, "the burst went on");
  } finally {
    stop = true;
    await Promise.all(clients);
    await backend.server.shutdown();
  }
  assert.deepEqual(statuses.filter((st) => st !== 200), [], `of ${statuses.length}`);
});

Deno.test("try_duration and try_interval are checked with their key", () => {
  const rule = (more: Record<string, unknown>) => ({
    server: { reverse_proxy: [{ path: "/", port: 3000, ...more }] },
  });
  assert.match(
    configError(rule({ try_duration: -1 })),
    /server\.reverse_proxy\[0\]\.try_duration must be a number of seconds ≥ 0, got -1/,
  );
  assert.match(
    configError(rule({ try_interval: 0 })),
    /server\.reverse_proxy\[0\]\.try_interval must be a positive number of seconds, got 0/,
  );
});

Deno.test("try_duration: a WebSocket upgrade waits for a backend that comes up within the window", async () => {
  const port = freePort();
  await using s = await startProxyServer(port, { try_duration: 30, try_interval: 0.05 });
  const ws = new WebSocket(s.url.replace("http", "ws") + "/socket");
  const opened = new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error("the WebSocket failed"));
  });
  opened.catch(() => {}); // awaited below, once the backend is up
  // The upgrade is waiting: the backend has been found down.
  await until(() => s.log.lines.some((l) => /is down for/.test(l)));
  const backend = Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(`echo ${e.data}`);
    return response;
  });
  try {
    await opened;
    const reply = new Promise<string>((resolve) => ws.onmessage = (e) => resolve(e.data));
    ws.send("hi");
    assert.equal(await reply, "echo hi");
    const closed = new Promise((r) => ws.onclose = r);
    ws.close();
    await closed;
  } finally {
    await backend.shutdown();
  }
});
