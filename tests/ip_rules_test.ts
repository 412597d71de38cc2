/**
 * `ip_rules` (nginx's `allow` / `deny`) for the site and per location: order and first match,
 * CIDR ranges of both families, which rules apply where (and beside `ip_filtering`), the client
 * address from IPv4 and IPv6 loopback, trusted `X-Forwarded-For`, the PROXY protocol (raw
 * headers and a real HAProxy), and configuration errors.
 */
import assert from "node:assert/strict";
import { autheliaBackend, echoBackend } from "./support/backends.ts";
import { testApp } from "./support/app.ts";
import { get, rawRequest } from "./support/clients.ts";
import { assertCheckRefuses, configError } from "./support/config.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { HAPROXY, startHaproxy } from "./support/haproxy.ts";
import { startTestServer } from "./support/servers.ts";

const SITE = {
  "index.html": "home",
  "admin/index.html": "admin",
  "admin/help/index.html": "help",
  "public/index.html": "public",
};

/** The in-process app of `server` settings over {@link SITE}; requests come from 127.0.0.1. */
async function siteApp(server: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const dir = await tempDir();
  await writeFiles(dir.path, SITE);
  const app = await testApp({ http: { static_dir: dir.path }, server, ...extra });
  return {
    app,
    status: async (path: string, init?: RequestInit) => (await app.get(path, init)).status,
    async [Symbol.asyncDispose]() {
      app[Symbol.dispose]();
      await dir[Symbol.asyncDispose]();
    },
  };
}

Deno.test("ip_rules: read in order, the first match decides, no match lets in", async () => {
  const cases: [string[], number][] = [
    [["deny 127.0.0.1", "allow all"], 403],
    [["allow 127.0.0.0/8", "deny all"], 200],
    [["allow 127.0.0.1", "deny 127.0.0.0/8"], 200],
    [["deny 127.0.0.0/8", "allow 127.0.0.1"], 403],
    [["allow 10.0.0.0/8", "deny all"], 403],
    [["deny 10.0.0.0/8", "deny ::1"], 200],
    [["allow ::ffff:127.0.0.0/104", "deny all"], 200],
    [["deny all"], 403],
  ];
  for (const [rules, expected] of cases) {
    await using t = await siteApp({ ip_rules: rules });
    assert.equal(await t.status("/"), expected, rules.join(", "));
  }
  await using t = await siteApp({ ip_rules: ["deny 127.0.0.1"] });
  const r = await t.app.get("/");
  assert.equal(r.status, 403);
  assert.match(r.body, /Your address is not allowed here\./);
  assert.ok(
    t.app.log.lines.includes(
      'INFO ip rules: 127.0.0.1 refused on / by "deny 127.0.0.1" of server.ip_rules',
    ),
    t.app.log.lines.join("\n"),
  );
});

Deno.test("ip_rules: a location's rules replace the site's below it; the nearest location with rules counts", async () => {
  await using t = await siteApp({
    ip_rules: ["deny all"],
    locations: {
      "/public": { ip_rules: ["allow all"] },
      "/admin": { ip_rules: ["allow 10.0.0.0/8", "deny all"] },
      // Basic auth only: /admin's rules still apply below it.
      "/admin/help": { auth: { type: "basic", username: "u", password: "p" } },
    },
  });
  assert.equal(await t.status("/"), 403, "the site's rules");
  assert.equal(await t.status("/public/"), 200, "the location's rules replace the site's");
  assert.equal(await t.status("/publications"), 403, "segment boundaries");
  for (const path of ["/admin/", "/admin/help/", "/%61dmin/", "/x/../admin/", "/static/admin/"]) {
    assert.equal(await t.status(path), 403, path);
  }
  assert.equal(await t.status("/admin%ff/"), 400, "a path that cannot be decoded");
});

Deno.test("ip_rules: the security extension's ip_filtering refuses first; trusted X-Forwarded-For names the client", async () => {
  const security = (config: Record<string, unknown>) => ({
    version: 2,
    extensions: [{ type: "security", config }],
  });
  {
    await using t = await siteApp(
      { locations: { "/public": { ip_rules: ["allow all"] } } },
      security({ ip_filtering: { blacklist: ["127.0.0.1"] } }),
    );
    assert.equal(await t.status("/public/"), 403, "ip_filtering beats a location's allow");
  }
  await using t = await siteApp(
    { locations: { "/admin": { ip_rules: ["deny 203.0.113.0/24", "allow 2001:db8::/32"] } } },
    security({ trusted_proxies: ["127.0.0.1"] }),
  );
  const via = (xff: string) => ({ headers: { "x-forwarded-for": xff } });
  assert.equal(await t.status("/admin/", via("203.0.113.7")), 403);
  assert.equal(await t.status("/admin/", via("198.51.100.1")), 200);
  assert.equal(await t.status("/admin/", via("203.0.113.7, 2001:db8::5")), 200);
  await using untrusted = await siteApp({
    locations: { "/admin": { ip_rules: ["deny 203.0.113.0/24"] } },
  });
  assert.equal(
    await untrusted.status("/admin/", via("203.0.113.7")),
    200,
    "without trusted_proxies the header is the client's word and does not count",
  );
});

/** Whether this machine has IPv6 loopback. */
const HAS_V6 = (() => {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "ip_rules: from 127.0.0.1 and from ::1, over real sockets",
  ignore: !HAS_V6 && (console.log("no IPv6 loopback on this machine"), true),
  async fn() {
    await using dir = await tempDir();
    await writeFiles(dir.path, SITE);
    const server = (host: string) =>
      startTestServer({
        http: { static_dir: dir.path },
        server: {
          host,
          ip_rules: ["allow 127.0.0.0/8"],
          locations: { "/admin": { ip_rules: ["allow ::1/128", "deny all"] } },
        },
      });
    {
      await using s = await server("127.0.0.1");
      assert.equal((await get(`${s.url}/`)).status, 200);
      assert.equal((await get(`${s.url}/admin/`)).status, 403);
    }
    await using s = await server("::1");
    assert.equal((await get(`${s.url}/admin/`)).status, 200);
    assert.equal((await get(`${s.url}/admin/`)).body, "admin");
    // The site's rules name only 127.0.0.0/8, and no rule matched ::1: let in, as nginx does.
    assert.equal((await get(`${s.url}/`)).status, 200);
  },
});

const GET = (path: string) => `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;

Deno.test("ip_rules: behind the PROXY protocol the header's source is the client, for rules and auth services", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, SITE);
  await using auth = autheliaBackend({ ok: { user: "alice" } });
  await using backend = echoBackend();
  await using s = await startTestServer({
    http: { static_dir: dir.path },
    server: {
      proxy_protocol: true,
      ip_rules: ["deny 203.0.113.0/24", "deny 2001:db8:bad::/48"],
      reverse_proxy: [{ path: "/app", host: "127.0.0.1", port: backend.port }],
      locations: {
        "/admin": { ip_rules: ["allow 198.51.100.0/24", "allow 2001:db8::/32", "deny all"] },
        "/app": { forward_auth: { url: `http://127.0.0.1:${auth.port}/verify` } },
      },
    },
  });
  const port = s.server.addr.port;
  const ask = async (header: string, path: string) =>
    (await rawRequest(port, header + GET(path))).status;
  const v4 = (ip: string) => `PROXY TCP4 ${ip} 127.0.0.1 50000 443\r\n`;
  const v6 = (ip: string) => `PROXY TCP6 ${ip} ::1 50000 443\r\n`;
  assert.equal(await ask(v4("203.0.113.7"), "/"), 403);
  assert.equal(await ask(v4("192.0.2.1"), "/"), 200);
  assert.equal(await ask(v4("198.51.100.9"), "/admin/"), 200);
  assert.equal(await ask(v4("192.0.2.1"), "/admin/"), 403);
  assert.equal(await ask(v4("127.0.0.1"), "/admin/"), 403);
  assert.equal(await ask(v6("2001:db8::1"), "/admin/"), 200);
  assert.equal(await ask(v6("2001:db8:bad::1"), "/"), 403);
  assert.equal(await ask(v6("2001:db8:bad::1"), "/admin/"), 200, "the location's rules count");

  const r = await rawRequest(
    port,
    v6("2001:db8::77") +
      "GET /app/ HTTP/1.1\r\nHost: x\r\nCookie: authelia_session=ok\r\nConnection: close\r\n\r\n",
  );
  assert.equal(r.status, 200);
  assert.equal(auth.seen.at(-1)!.headers.get("x-forwarded-for"), "2001:db8::77");
});

Deno.test({
  name:
    "ip_rules: through a real HAProxy (send-proxy-v2) an IPv6 client is refused by its own address",
  ignore: (!HAPROXY || !HAS_V6) && (console.log("haproxy or IPv6 loopback missing"), true),
  async fn() {
    await using dir = await tempDir();
    await writeFiles(dir.path, SITE);
    await using s = await startTestServer({
      http: { static_dir: dir.path },
      server: {
        proxy_protocol: true,
        locations: { "/admin": { ip_rules: ["deny ::1", "allow all"] } },
      },
    });
    const l = Deno.listen({ hostname: "::1", port: 0 });
    const front = (l.addr as Deno.NetAddr).port;
    l.close();
    await using _haproxy = await startHaproxy(
      "defaults\n  mode tcp\n  timeout connect 10s\n  timeout client 60s\n  timeout server 60s\n" +
        `frontend f\n  bind [::1]:${front}\n  default_backend b\n` +
        `backend b\n  server s 127.0.0.1:${s.server.addr.port} send-proxy-v2\n`,
      [front],
      "::1",
    );
    // The server's peer is HAProxy on 127.0.0.1; the client it names is ::1.
    assert.equal((await get(`http://[::1]:${front}/`)).status, 200);
    assert.equal((await get(`http://[::1]:${front}/admin/`)).status, 403);
  },
});

Deno.test("ip_rules: bad rules are configuration errors naming the key; --test shows file:line", async () => {
  assert.match(
    configError({ server: { ip_rules: ["allow 10.0.0.0/33"] } }),
    /server\.ip_rules\[0\] must be "allow ADDRESS" or "deny ADDRESS"/,
  );
  assert.match(
    configError({ server: { locations: { "/a": { ip_rules: ["permit all"] } } } }),
    /server\.locations\.\/a\.ip_rules\[0\] must be "allow ADDRESS" or "deny ADDRESS"/,
  );
  assert.match(
    configError({ server: { ip_rules: "deny all" } }),
    /server\.ip_rules must be a list like \["allow 10\.0\.0\.0\/8", "deny all"\]/,
  );
  await assertCheckRefuses(
    "server:\n  locations:\n    /admin:\n      ip_rules:\n        - allow 10.0.0.0/8\n" +
      "        - deny everyone\n",
    /config\.yaml:6:11: server\.locations\.\/admin\.ip_rules\[1\] must be/,
  );
});
