/**
 * Finding this process's sockets through libc (src/server/sockets.ts): after thousands of
 * connections closed in a block, the ones above them are still found, to be shut down (a flood's
 * stalled TLS handshakes) or read from (PROXY protocol headers, ClientHellos).
 */
import assert from "node:assert/strict";
import { HeldSocket, holdListenerReads, shutdownSockets } from "../src/server/sockets.ts";
import { makeCerts } from "./support/certs.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { startTestServer } from "./support/servers.ts";
import { servedWithNoDelay } from "./support/sockets.ts";

/** `n` accepted connections on `listener`, with the clients' ends. */
async function pairs(listener: Deno.TcpListener, n: number) {
  const out: { client: Deno.TcpConn; server: Deno.TcpConn }[] = [];
  for (let i = 0; i < n; i++) {
    const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    out.push({ client, server: await listener.accept() });
  }
  return out;
}

Deno.test("sockets: connections above 3,000 closed descriptors are found, shut down and held", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const below = await pairs(listener, 1500);
  const above = await pairs(listener, 3);
  // 3,000 descriptors (both ends of 1,500 connections) closed in one block below the others.
  for (const { client, server } of below) {
    client.close();
    server.close();
  }
  try {
    const [first, second, third] = above;
    const addrs = (c: Deno.Conn) => [c.localAddr as Deno.NetAddr, c.remoteAddr as Deno.NetAddr];
    assert.ok(HeldSocket.of(...addrs(first.server) as [Deno.NetAddr, Deno.NetAddr]));
    assert.equal(shutdownSockets([addrs(second.server), addrs(third.server)]), 2);
    // Shut down both ways: each client reads the end.
    assert.equal(await second.client.read(new Uint8Array(8)), null);
    assert.equal(await third.client.read(new Uint8Array(8)), null);
  } finally {
    for (const { client, server } of above) {
      client.close();
      server.close();
    }
  }
});

Deno.test("sockets: a connection accepted from a listener that holds reads holds them until released", async () => {
  using held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  using plain = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  assert.equal(holdListenerReads(held.addr.port), 1);
  const socketOf = async (listener: Deno.TcpListener) => {
    const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const server = await listener.accept();
    const socket = HeldSocket.of(server.localAddr, server.remoteAddr)!;
    return { client, server, socket };
  };
  const a = await socketOf(held);
  const b = await socketOf(plain);
  try {
    assert.equal(a.socket.holds(), true);
    assert.equal(b.socket.holds(), false);
    // Sent, peeked, then handed on: the runtime reads it all after the release.
    await a.client.write(new TextEncoder().encode("hello"));
    const peeked = new Uint8Array(16);
    let n = -1;
    while ((n = a.socket.peek(peeked)) < 5) await new Promise((r) => setTimeout(r, 5));
    assert.equal(new TextDecoder().decode(peeked.subarray(0, n)), "hello");
    assert.equal(a.socket.release(2), true);
    assert.equal(a.socket.holds(), false);
    const read = new Uint8Array(16);
    const got = await a.server.read(read);
    assert.equal(new TextDecoder().decode(read.subarray(0, got!)), "llo");
  } finally {
    for (const { client, server } of [a, b]) {
      client.close();
      server.close();
    }
  }
});

Deno.test("sockets: the server's plain and TLS connections have TCP_NODELAY (answers never wait for a delayed ACK)", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/index.html": "home" });
  const certs = await makeCerts(dir.path);
  for (const secure of [false, true]) {
    await using server = await startTestServer({
      http: { static_dir: `${dir.path}/site` },
      ...(secure ? { ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key } } : {}),
    });
    assert.equal(
      await servedWithNoDelay(server.url, secure ? certs.caPem : undefined),
      true,
      secure ? "TLS" : "plain",
    );
  }
});
