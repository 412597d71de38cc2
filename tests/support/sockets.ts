/** The server's end of a connection, seen through libc: for checks of socket options. */
import assert from "node:assert/strict";
import { HeldSocket } from "../../src/server/sockets.ts";

const libc = Deno.dlopen(`/lib/${Deno.build.arch}-linux-gnu/libc.so.6`, {
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
});

/**
 * Whether the server at `url` (in this process) answers a request over a connection that has
 * TCP_NODELAY on its end; over TLS when `ca` (a CA's PEM) is given.
 */
export async function servedWithNoDelay(url: string, ca?: string): Promise<boolean> {
  const port = Number(new URL(url).port);
  const client = ca
    ? await Deno.connectTls({ hostname: "localhost", port, caCerts: [ca] })
    : await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await client.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    const got = new Uint8Array(1024);
    assert.match(new TextDecoder().decode(got.subarray(0, (await client.read(got))!)), /200 OK/);
    // The server's end: its local address is the client's remote one, and the other way round.
    const socket = HeldSocket.of(
      client.remoteAddr as Deno.NetAddr,
      client.localAddr as Deno.NetAddr,
    );
    assert.ok(socket, "the server's socket is found");
    const value = new Int32Array(1);
    // IPPROTO_TCP = 6, TCP_NODELAY = 1.
    assert.equal(libc.symbols.getsockopt(socket.fd, 6, 1, value, new Uint32Array([4])), 0);
    return value[0] !== 0;
  } finally {
    client.close();
  }
}
