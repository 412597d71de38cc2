/**
 * Header rules: `request_headers` and `response_headers` of a proxy rule and of a V2 location
 * with `proxy_pass`, and `server.response_headers` on every answer; the backend records the
 * header lines exactly as they arrived.
 */
import assert from "node:assert/strict";
import { recordingBackend, serveBackend } from "./support/backends.ts";
import { configError } from "./support/config.ts";
import { tempDir } from "./support/files.ts";
import { startProxyServer, startTestServer } from "./support/servers.ts";

const enc = new TextEncoder();

Deno.test("request_headers: remove, set and add towards the backend, with variables; the rules win over X-Forwarded-*", async () => {
  await using b = recordingBackend();
  await using s = await startProxyServer(b.port, {
    request_headers: {
      remove: ["Cookie", "X-Secret"],
      set: {
        "X-Forwarded-Proto": "{scheme}-set",
        "X-Client": "{client_ip}",
        "X-Host": "{host}",
        "X-Id": "[{request_id}]",
        "X-Agent": "agent={header.User-Agent}",
        "X-What": "{method} {uri}",
        "X-Empty": "{header.Missing}",
        "Host": "inside.example",
      },
      add: { Via: "1.1 denoserve" },
    },
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: s.server.addr.port });
  await conn.write(enc.encode(
    "GET /p?q=1 HTTP/1.1\r\nHost: public.example\r\nUser-Agent: ua/1\r\nCookie: a=1\r\n" +
      "X-Secret: s\r\nVia: 1.0 edge\r\nX-Request-Id: abc-123\r\nConnection: close\r\n\r\n",
  ));
  const answer = await new Response(conn.readable).text();
  assert.match(answer, /^HTTP\/1\.1 200/);
  const lines = b.heads[0];
  const all = lines.join("\n");
  assert.ok(!lines.some((l) => /^(cookie|x-secret|x-empty):/i.test(l)), all);
  assert.ok(lines.includes("x-forwarded-proto: http-set"), all);
  assert.equal(lines.filter((l) => /^x-forwarded-proto:/i.test(l)).length, 1, all);
  assert.ok(lines.includes("x-client: 127.0.0.1"), all);
  assert.ok(lines.includes("x-host: public.example"), all);
  assert.ok(lines.includes("x-id: [abc-123]"), all);
  assert.ok(lines.includes("x-agent: agent=ua/1"), all);
  assert.ok(lines.includes("x-what: GET /p?q=1"), all);
  assert.ok(lines.includes("host: inside.example"), all);
  assert.equal(lines.filter((l) => /^host:/i.test(l)).length, 1, all);
  // Added beside the client's own.
  assert.deepEqual(lines.filter((l) => /^via:/i.test(l)), ["via: 1.0 edge", "via: 1.1 denoserve"]);
  assert.ok(lines.includes("x-forwarded-for: 127.0.0.1"), all);
});

Deno.test("response_headers of a rule and of a location, and server.response_headers on every answer", async () => {
  await using b = serveBackend((req) =>
    new Response(`seen ${req.headers.get("x-loc") ?? "-"}`, {
      headers: {
        server: "gunicorn",
        "x-powered-by": "PHP/8",
        "x-keep": "1",
        "cache-control": "max-age=60",
      },
    })
  );
  await using dir = await tempDir();
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path },
    server: {
      response_headers: { remove: ["Server"], set: { "X-Frame-Options": "DENY" } },
      reverse_proxy: [{
        path: "/rp",
        host: "127.0.0.1",
        port: b.port,
        response_headers: {
          remove: ["X-Powered-By"],
          set: { "Cache-Control": "no-store" },
          add: { "X-Served-For": "{client_ip}" },
        },
      }],
    },
    extensions: [{
      type: "routing",
      config: {
        regex_locations: {
          "^~/loc/": {
            proxy_pass: b.url,
            request_headers: { set: { "X-Loc": "{uri}" } },
            response_headers: { remove: ["X-Keep"] },
          },
        },
      },
    }],
  });
  let r = await fetch(`${s.url}/rp/x`);
  assert.equal(await r.text(), "seen -");
  assert.equal(r.headers.get("server"), null);
  assert.equal(r.headers.get("x-powered-by"), null);
  assert.equal(r.headers.get("cache-control"), "no-store");
  assert.equal(r.headers.get("x-keep"), "1");
  assert.equal(r.headers.get("x-served-for"), "127.0.0.1");
  assert.equal(r.headers.get("x-frame-options"), "DENY");

  r = await fetch(`${s.url}/loc/y?z=1`);
  assert.equal(await r.text(), "seen /loc/y?z=1");
  assert.equal(r.headers.get("x-keep"), null);
  assert.equal(r.headers.get("x-powered-by"), "PHP/8");
  assert.equal(r.headers.get("server"), null);

  // A file server's 404 gets the server-wide rules too.
  r = await fetch(`${s.url}/missing`);
  await r.body?.cancel();
  assert.equal(r.status, 404);
  assert.equal(r.headers.get("x-frame-options"), "DENY");
});

Deno.test("header rules: names the server owns, unknown variables and rules without proxy_pass are refused with their key", () => {
  const rule = (request_headers: unknown) => ({
    server: { reverse_proxy: [{ path: "/", port: 3000, request_headers }] },
  });
  assert.match(
    configError(rule({ set: { Connection: "close" } })),
    /server\.reverse_proxy\[0\]\.request_headers\.set\.Connection must be a header name \(hop-by-hop/,
  );
  assert.match(
    configError(rule({ remove: ["Transfer-Encoding"] })),
    /request_headers\.remove\[0\] must not be one of connection/,
  );
  assert.match(
    configError(rule({ set: { "X-A": "{client_addr}" } })),
    /request_headers\.set\.X-A uses \{client_addr\}; the variables are \{client_ip\}, \{host\}/,
  );
  assert.match(
    configError({
      version: 2,
      extensions: [{
        type: "routing",
        config: { regex_locations: { "/a": { root: "/x", response_headers: { remove: ["a"] } } } },
      }],
    }),
    /regex_locations\.\/a\.response_headers needs proxy_pass/,
  );
});

Deno.test("request_headers apply to a WebSocket handshake too", async () => {
  await using b = recordingBackend();
  await using s = await startProxyServer(b.port, {
    request_headers: { set: { "X-Client": "{client_ip}" }, remove: ["Cookie"] },
  });
  const ws = new WebSocket(s.url.replace("http", "ws") + "/socket", {
    headers: { cookie: "a=1" },
  } as unknown as string[]);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  ws.close();
  const lines = b.heads[0];
  assert.ok(lines.includes("x-client: 127.0.0.1"), lines.join("\n"));
  assert.ok(!lines.some((l) => /^cookie:/i.test(l)), lines.join("\n"));
  assert.ok(lines.some((l) => /^sec-websocket-key:/i.test(l)), lines.join("\n"));
});
