/**
 * `ip_filtering` (`extensions: security`): CIDR matching (IPv4, IPv6, mapped addresses), the
 * client address behind trusted proxies, 403 from a real server, bad lists refused at start.
 */
import assert from "node:assert/strict";
import { inRange, IpSet, parseCidr, parseIp } from "../src/http/ip.ts";
import { clientAddress } from "../src/routes/client_address.ts";
import { get, rawRequest } from "./support/clients.ts";
import { assertCheckRefuses, configError } from "./support/config.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { bootRaw, captureLogger, startTestServer } from "./support/servers.ts";
import type { RequestContext } from "../src/http/types.ts";

const ctxFrom = (hostname: string): RequestContext => ({
  path: "/",
  query: "",
  remote: { transport: "tcp", hostname, port: 40000 },
  secure: false,
});

Deno.test("ip: addresses parse in every IPv4 and IPv6 spelling, and nothing else does", () => {
  assert.deepEqual(parseIp("10.0.0.1"), { v6: false, value: 0x0a000001n });
  assert.deepEqual(parseIp("::1"), { v6: true, value: 1n });
  assert.deepEqual(parseIp("[2001:db8::1]"), { v6: true, value: (0x20010db8n << 96n) | 1n });
  assert.deepEqual(parseIp("fe80::1%eth0"), { v6: true, value: (0xfe80n << 112n) | 1n });
  assert.deepEqual(parseIp("1:2:3:4:5:6:7:8")?.value, 0x00010002000300040005000600070008n);
  // IPv4-mapped IPv6, dotted or in hex, is the IPv4 address.
  assert.deepEqual(parseIp("::ffff:10.0.0.1"), { v6: false, value: 0x0a000001n });
  assert.deepEqual(parseIp("::FFFF:a00:1"), { v6: false, value: 0x0a000001n });
  for (
    const bad of [
      "",
      "10.0.0",
      "10.0.0.256",
      "01.0.0.1",
      "1:2:3:4:5:6:7",
      "1::2::3",
      "12345::",
      "g::1",
      "::ffff:10.0.0.300",
      "localhost",
      "1:2:3:4:5:6:7:8:9",
    ]
  ) {
    assert.equal(parseIp(bad), undefined, bad);
  }
});

Deno.test("ip: CIDR ranges match on their prefix bits, per family, mapped ranges as IPv4", () => {
  const net = parseCidr("192.168.1.0/24")!;
  assert.ok(inRange(parseIp("192.168.1.200")!, net));
  assert.ok(!inRange(parseIp("192.168.2.1")!, net));
  assert.deepEqual(parseCidr("192.168.1.77/24"), net, "host bits are masked off");
  assert.ok(inRange(parseIp("::ffff:192.168.1.9")!, net), "a mapped client is in an IPv4 range");
  const v6 = parseCidr("2001:db8::/32")!;
  assert.ok(inRange(parseIp("2001:db8:ffff::1")!, v6));
  assert.ok(!inRange(parseIp("2001:db9::1")!, v6));
  assert.ok(!inRange(parseIp("32.1.13.184")!, v6), "families never mix");
  assert.deepEqual(parseCidr("::ffff:10.0.0.0/104"), parseCidr("10.0.0.0/8"));
  assert.ok(inRange(parseIp("1.2.3.4")!, parseCidr("0.0.0.0/0")!));
  assert.ok(inRange(parseIp("::2")!, parseCidr("::/0")!));
  assert.ok(!inRange(parseIp("::2")!, parseCidr("::1")!));
  for (const bad of ["10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x", "10/8", "a/8"]) {
    assert.equal(parseCidr(bad), undefined, bad);
  }
  const set = new IpSet(["127.0.0.1", "10.0.0.0/8", "fd00::/8"]);
  assert.ok(set.has("10.9.9.9") && set.has("127.0.0.1") && set.has("fd12::5"));
  assert.ok(set.has("::ffff:127.0.0.1"));
  assert.ok(!set.has("127.0.0.2") && !set.has("fe80::1") && !set.has("nonsense"));
});

Deno.test("ip: X-Forwarded-For counts only from trusted proxies, read from the right", () => {
  const req = (xff?: string) =>
    new Request("http://x/", { headers: xff ? { "x-forwarded-for": xff } : {} });
  const none = clientAddress([]);
  assert.deepEqual(none(req("203.0.113.5"), ctxFrom("127.0.0.1")), parseIp("127.0.0.1"));
  const trusting = clientAddress(["127.0.0.1", "10.0.0.0/8"]);
  assert.deepEqual(trusting(req("203.0.113.5"), ctxFrom("127.0.0.1")), parseIp("203.0.113.5"));
  assert.deepEqual(
    trusting(req("198.51.100.1, 203.0.113.5, 10.1.1.1"), ctxFrom("::ffff:127.0.0.1")),
    parseIp("203.0.113.5"),
    "the hop left of the trusted ones; what the client wrote further left is ignored",
  );
  assert.deepEqual(
    trusting(req("203.0.113.5"), ctxFrom("192.0.2.1")),
    parseIp("192.0.2.1"),
    "an untrusted peer's header is ignored",
  );
  assert.deepEqual(trusting(req("junk, 10.2.2.2"), ctxFrom("127.0.0.1")), parseIp("10.2.2.2"));
  assert.deepEqual(trusting(req(), ctxFrom("127.0.0.1")), parseIp("127.0.0.1"));
});

Deno.test("ip_filtering: refused clients get the 403 page before CORS and redirects", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "index.html": "home",
    "error_403.html": "custom 403: {{error_details}}",
  });
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path, templates_dir: dir.path },
    server: { redirect_instructions: [{ "/old": "/new" }] },
    extensions: [{
      type: "security",
      config: {
        cors: { origins: ["*"] },
        ip_filtering: { blacklist: ["127.0.0.0/8", "::1"] },
      },
    }],
  });
  let r = await get(`${s.url}/`, { headers: { origin: "https://a.example" } });
  assert.equal(r.status, 403);
  assert.equal(r.body, "custom 403: Your address is not allowed to use this site.");
  assert.equal(r.headers.get("access-control-allow-origin"), null);
  r = await get(`${s.url}/old`);
  assert.equal(r.status, 403, "before redirects");
  const raw = await rawRequest(
    s.server.addr.port,
    "OPTIONS /x HTTP/1.1\r\nHost: a\r\nOrigin: https://a.example\r\n" +
      "Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n",
  );
  assert.equal(raw.status, 403, "preflights too");
  s.log.flush();
  assert.ok(s.log.lines.some((l) => l.startsWith("ACCESS ") && / 403 /.test(l)), "logged");
});

Deno.test("ip_filtering: a whitelist lets only its ranges in; trusted proxies name the client", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "index.html": "home" });
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path },
    extensions: [{
      type: "security",
      config: {
        trusted_proxies: ["127.0.0.1"],
        ip_filtering: {
          whitelist: ["192.168.1.0/24", "2001:db8::/32"],
          blacklist: ["192.168.1.66"],
        },
      },
    }],
  });
  let r = await get(`${s.url}/`);
  assert.equal(r.status, 403, "127.0.0.1 itself is not listed");
  r = await get(`${s.url}/`, { headers: { "x-forwarded-for": "192.168.1.5" } });
  assert.equal(r.status, 200);
  assert.equal(r.body, "home");
  r = await get(`${s.url}/`, { headers: { "x-forwarded-for": "2001:db8::7" } });
  assert.equal(r.status, 200);
  r = await get(`${s.url}/`, { headers: { "x-forwarded-for": "192.168.1.66" } });
  assert.equal(r.status, 403, "the blacklist wins");
  r = await get(`${s.url}/`, { headers: { "x-forwarded-for": "192.168.1.5, 10.0.0.1" } });
  assert.equal(r.status, 403, "10.0.0.1 is not a trusted proxy, so it is the client");
});

Deno.test("ip_filtering: over IPv6 the socket's address counts; off when enabled is false", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "index.html": "home" });
  const raw = (filter: Record<string, unknown>) => ({
    version: 2,
    server: { host: "::1" },
    http: { static_dir: dir.path },
    extensions: [{ type: "security", config: { ip_filtering: filter } }],
  });
  {
    await using s = await startTestServer(raw({ whitelist: ["::1/128"] }));
    assert.equal((await get(`${s.url}/`)).status, 200);
  }
  {
    await using s = await startTestServer(raw({ blacklist: ["::/0"] }));
    assert.equal((await get(`${s.url}/`)).status, 403);
  }
  {
    await using s = await startTestServer(raw({ enabled: false, blacklist: ["::/0"] }));
    assert.equal((await get(`${s.url}/`)).status, 200);
  }
});

Deno.test("ip_filtering: a mapped IPv6 peer matches IPv4 ranges (in process)", async () => {
  const log = captureLogger();
  const { app } = await bootRaw({
    version: 2,
    extensions: [{ type: "security", config: { ip_filtering: { blacklist: ["10.0.0.0/8"] } } }],
  }, log);
  try {
    const ask = async (peer: string) => {
      const res = await app.handle(new Request("http://localhost/"), ctxFrom(peer));
      await res.body?.cancel();
      return res.status;
    };
    assert.equal(await ask("::ffff:10.1.2.3"), 403);
    assert.equal(await ask("10.1.2.3"), 403);
    assert.notEqual(await ask("::ffff:11.1.2.3"), 403);
  } finally {
    app.close();
    log.flush();
  }
});

Deno.test("ip_filtering: bad entries are configuration errors naming the key; --test exits 2", async () => {
  const sec = (config: Record<string, unknown>) => ({
    version: 2,
    extensions: [{ type: "security", config }],
  });
  assert.match(
    configError(sec({ ip_filtering: { whitelist: ["10.0.0.0/33"] } })),
    /extensions\[0\]\.config\.ip_filtering\.whitelist\[0\] must be an IP address or CIDR/,
  );
  assert.match(
    configError(sec({ ip_filtering: { blacklist: "10.0.0.1" } })),
    /ip_filtering\.blacklist must be a list/,
  );
  assert.match(
    configError(sec({ trusted_proxies: ["proxy.local"] })),
    /trusted_proxies\[0\] must be an IP address or CIDR/,
  );
  assert.match(
    configError(sec({ ip_filtering: { enabled: "yes" } })),
    /enabled must be true or false/,
  );
  await assertCheckRefuses(
    "version: 2\nextensions:\n  - type: security\n    config:\n" +
      "      ip_filtering:\n        blacklist: [1.2.3.4/40]\n",
    /config\.yaml:6:21: .*ip_filtering\.blacklist\[0\] must be an IP/,
  );
});
