/**
 * The server name read from a ClientHello (`server/client_hello.ts`), on hellos a real TLS client
 * sends: whole, cut at every length, without a name, and bytes that are no hello.
 */
import assert from "node:assert/strict";
import { readClientHello } from "../src/server/client_hello.ts";

/** The first bytes a TLS client connecting for `hostname` sends. */
async function helloFor(hostname: string): Promise<Uint8Array> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const client = Deno.startTls(tcp, { hostname }).then((c) => c.handshake()).catch(() => {});
  const conn = await listener.accept();
  const buf = new Uint8Array(64 * 1024);
  let filled = 0;
  // A hello is one record: its length is in its first 5 bytes.
  while (filled < 5 || filled < 5 + ((buf[3] << 8) | buf[4])) {
    const n = await conn.read(buf.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  conn.close();
  await client;
  return buf.slice(0, filled);
}

Deno.test("client hello: the name a real client sends, in lower case; every cut is partial or that name", async () => {
  const hello = await helloFor("Www.Example.TEST");
  assert.deepEqual(readClientHello(hello), { kind: "hello", name: "www.example.test" });
  for (let n = 0; n < hello.length; n++) {
    const read = readClientHello(hello.subarray(0, n));
    if (read.kind === "partial") continue;
    assert.deepEqual(read, { kind: "hello", name: "www.example.test" }, `cut at ${n}`);
  }
  // Bytes after the hello (a TLS 1.3 client's next records) change nothing.
  const more = new Uint8Array([...hello, 20, 3, 3, 0, 1, 1]);
  assert.deepEqual(readClientHello(more), { kind: "hello", name: "www.example.test" });
});

Deno.test("client hello: a client connecting by address sends no name; plain HTTP and garbage are no hello", async () => {
  assert.deepEqual(readClientHello(await helloFor("127.0.0.1")), { kind: "hello" });
  const enc = new TextEncoder();
  assert.deepEqual(readClientHello(enc.encode("GET / HTTP/1.1\r\n")), { kind: "other" });
  assert.deepEqual(readClientHello(new Uint8Array([22, 9])), { kind: "other" });
  // A handshake record that is not a ClientHello (a ServerHello, 2).
  assert.deepEqual(readClientHello(new Uint8Array([22, 3, 1, 0, 4, 2, 0, 0, 0])), {
    kind: "other",
  });
  assert.deepEqual(readClientHello(new Uint8Array([22, 3, 1])), { kind: "partial" });
});
