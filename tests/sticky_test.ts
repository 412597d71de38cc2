/**
 * Sticky balancing (`lb: ip_hash`, `cookie`, `header`, `uri_hash`) through the real server to
 * three real backends, over many clients: client addresses come from PROXY protocol headers, so
 * that one loopback test machine can be hundreds of IPv4 and IPv6 clients.
 */
import assert from "node:assert/strict";
import { type Backend, echoBackend } from "./support/backends.ts";
import { configError } from "./support/config.ts";
import { startTestServer, type TestServer } from "./support/servers.ts";

const enc = new TextEncoder();

/** Three echo backends named b0, b1, b2. */
function three(): Backend[] & AsyncDisposable {
  const list = [echoBackend("b0"), echoBackend("b1"), echoBackend("b2")];
  return Object.assign(list, {
    async [Symbol.asyncDispose]() {
      await Promise.all(list.map((b) => b[Symbol.asyncDispose]()));
    },
  });
}

async function sticky(
  backends: Backend[],
  rule: Record<string, unknown>,
  server: Record<string, unknown> = {},
): Promise<TestServer & AsyncDisposable> {
  const dir = await Deno.makeTempDir();
  const s = await startTestServer({
    http: { static_dir: dir },
    server: {
      ...server,
      reverse_proxy: [{
        path: "/",
        upstreams: backends.map((b) => `127.0.0.1:${b.port}`),
        ...rule,
      }],
    },
  });
  const stop = s[Symbol.asyncDispose].bind(s);
  return Object.assign(s, {
    async [Symbol.asyncDispose]() {
      await stop();
      await Deno.remove(dir, { recursive: true });
    },
  });
}

/** The backend that answered a request from `client` (sent in a PROXY protocol v1 header). */
async function fromClient(port: number, client: string, path = "/"): Promise<string> {
  const family = client.includes(":") ? "TCP6" : "TCP4";
  const to = client.includes(":") ? "::1" : "127.0.0.1";
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(enc.encode(
    `PROXY ${family} ${client} ${to} 40000 ${port}\r\n` +
      `GET ${path} HTTP/1.1\r\nHost: sticky.test\r\nConnection: close\r\n\r\n`,
  ));
  const text = await new Response(conn.readable).text();
  const m = /^x-backend: (\S+)/im.exec(text);
  assert.ok(m, text);
  return m[1];
}

Deno.test("ip_hash: a client's /24 (IPv4) or /64 (IPv6) keeps its backend; clients spread; a backend going down moves only its own clients", async () => {
  await using backends = three();
  await using s = await sticky(backends, { lb: "ip_hash" }, {
    proxy_protocol: true,
    proxy_protocol_from: ["127.0.0.0/8"],
  });
  const port = s.server.addr.port;
  const seen = new Map<string, string>();
  for (let i = 0; i < 120; i++) {
    const net = `10.${i % 7}.${i}`;
    const a = await fromClient(port, `${net}.1`);
    assert.equal(await fromClient(port, `${net}.254`), a, `${net}.0/24 stays together`);
    seen.set(net, a);
  }
  const counts = [...seen.values()].reduce(
    (m, b) => m.set(b, (m.get(b) ?? 0) + 1),
    new Map<string, number>(),
  );
  assert.deepEqual([...counts.keys()].sort(), ["b0", "b1", "b2"]);
  for (const n of counts.values()) assert.ok(n >= 20, `spread: ${[...counts]}`);
  // IPv6: the /64 counts.
  const six = new Set<string>();
  for (let i = 0; i < 40; i++) {
    const a = await fromClient(port, `2001:db8:${i.toString(16)}::1`);
    assert.equal(await fromClient(port, `2001:db8:${i.toString(16)}::ffff:1234`), a);
    six.add(a);
  }
  assert.equal(six.size, 3);
  // b1 stops: its clients move, every other client stays where it was.
  await backends[1][Symbol.asyncDispose]();
  for (const [net, was] of [...seen].slice(0, 60)) {
    const now = await fromClient(port, `${net}.9`);
    if (was === "b1") assert.notEqual(now, "b1");
    else assert.equal(now, was, `${net} moved from ${was} to ${now}`);
  }
});

Deno.test("uri_hash and header: the same URI or header value keeps its backend; many values spread", async () => {
  await using backends = three();
  await using byUri = await sticky(backends, { lb: "uri_hash" });
  await using byHeader = await sticky(backends, { lb: "header", lb_header: "X-User" });
  const backendOf = async (url: string, init?: RequestInit) => {
    const r = await fetch(url, init);
    await r.body?.cancel();
    return r.headers.get("x-backend")!;
  };
  const uris = new Map<string, string>();
  const users = new Map<string, string>();
  for (let i = 0; i < 60; i++) {
    uris.set(`/item/${i}?v=1`, await backendOf(`${byUri.url}/item/${i}?v=1`));
    users.set(`user${i}`, await backendOf(byHeader.url, { headers: { "x-user": `user${i}` } }));
  }
  for (const [uri, b] of uris) assert.equal(await backendOf(byUri.url + uri), b, uri);
  for (const [user, b] of users) {
    assert.equal(await backendOf(byHeader.url, { headers: { "x-user": user } }), b, user);
  }
  assert.equal(new Set(uris.values()).size, 3);
  assert.equal(new Set(users.values()).size, 3);
  // Without the header: round-robin.
  const plain = [];
  for (let i = 0; i < 3; i++) plain.push(await backendOf(byHeader.url));
  assert.deepEqual(plain.sort(), ["b0", "b1", "b2"]);
});

Deno.test("cookie: denoserve sets a signed cookie; it keeps the client on its backend while that is up; a forged one is replaced", async () => {
  await using backends = three();
  await using s = await sticky(backends, {
    lb: "cookie",
    lb_cookie_secret: "0123456789abcdef0123",
  });
  const clients: { cookie: string; backend: string }[] = [];
  for (let i = 0; i < 30; i++) {
    const r = await fetch(`${s.url}/login`);
    await r.body?.cancel();
    const set = r.headers.get("set-cookie")!;
    assert.match(set, /^denoserve_lb=[0-9a-f]{32}; Path=\/; HttpOnly; SameSite=Lax$/);
    assert.ok(!set.includes(String(backends[0].port)), "the cookie does not show the backend");
    clients.push({ cookie: set.split(";")[0], backend: r.headers.get("x-backend")! });
  }
  assert.equal(new Set(clients.map((c) => c.backend)).size, 3);
  for (const c of clients) {
    for (let k = 0; k < 3; k++) {
      const r = await fetch(`${s.url}/page${k}`, { headers: { cookie: `a=1; ${c.cookie}` } });
      await r.body?.cancel();
      assert.equal(r.headers.get("x-backend"), c.backend);
      assert.equal(r.headers.get("set-cookie"), null, "a valid cookie is not set again");
    }
  }
  // A forged value is not honoured: the client is given a backend and a real cookie.
  const forged = await fetch(s.url, { headers: { cookie: "denoserve_lb=0000" } });
  await forged.body?.cancel();
  assert.match(forged.headers.get("set-cookie")!, /^denoserve_lb=[0-9a-f]{32};/);
  // The backend of a cookie stops: its clients move and get a new cookie; the others stay.
  await backends[2][Symbol.asyncDispose]();
  for (const c of clients) {
    const r = await fetch(s.url, { headers: { cookie: c.cookie } });
    await r.body?.cancel();
    if (c.backend === "b2") {
      assert.notEqual(r.headers.get("x-backend"), "b2");
      assert.match(r.headers.get("set-cookie") ?? "", /^denoserve_lb=/);
    } else assert.equal(r.headers.get("x-backend"), c.backend);
  }
});

Deno.test("sticky policies: keys are checked against lb", () => {
  const rule = (more: Record<string, unknown>) => ({
    server: { reverse_proxy: [{ path: "/", upstreams: ["a:1", "b:2"], ...more }] },
  });
  assert.match(
    configError(rule({ lb: "header" })),
    /server\.reverse_proxy\[0\]\.lb_header is needed by lb: header/,
  );
  assert.match(configError(rule({ lb_header: "X-A" })), /lb_header needs lb: header/);
  assert.match(
    configError(rule({ lb: "hash" })),
    /lb must be "round_robin", "least_conn", "ip_hash", "uri_hash", "header" or "cookie", got "hash"/,
  );
});
