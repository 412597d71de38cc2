/**
 * The `caching` extension: the Cache-Control rules as pure functions, the memory cache with an
 * injected clock, and the real server in front of a backend that counts its requests.
 */
import assert from "node:assert/strict";
import { parse } from "yaml";
import * as v from "valibot";
import { validate } from "../src/config/load.ts";
import { CachingConfig } from "../src/config/schema.ts";
import { unsupported } from "../src/app/validate.ts";
import { createCache, MemoryCache } from "../src/routes/cache.ts";
import {
  currentAge,
  isFresh,
  notModified,
  parseCacheControl,
  requestPolicy,
  storeDecision,
  varyNames,
} from "../src/routes/cache_policy.ts";
import type { RequestContext } from "../src/http/types.ts";
import { serveBackend } from "./support/backends.ts";
import { get } from "./support/clients.ts";
import { assertCheckRefuses, configError } from "./support/config.ts";
import { ROOT, tempDir, writeFiles } from "./support/files.ts";
import { startTestServer } from "./support/servers.ts";

const h = (init: Record<string, string> = {}) => new Headers(init);
const answer = (status: number, headers: Record<string, string> = {}) => ({
  status,
  headers: h(headers),
});

Deno.test("cache policy: Cache-Control parsing, quoted values, first of a name wins", () => {
  const d = parseCacheControl(
    'Public, max-age=60, s-maxage="120", no-cache="Set-Cookie", max-age=5',
  );
  assert.equal(d.get("public"), true);
  assert.equal(d.get("max-age"), "60");
  assert.equal(d.get("s-maxage"), "120");
  assert.equal(d.get("no-cache"), "Set-Cookie");
  assert.equal(parseCacheControl(null).size, 0);
  assert.deepEqual(varyNames("Accept-Language, accept-encoding"), [
    "accept-encoding",
    "accept-language",
  ]);
  assert.deepEqual(varyNames("Accept, *"), ["*"]);
});

Deno.test("cache policy: what is stored and for how long", () => {
  const req = h();
  const ttl = (r: ReturnType<typeof storeDecision>) => r.store ? r.ttlSeconds : r.reason;
  assert.equal(ttl(storeDecision(req, answer(200), 30)), 30);
  assert.equal(ttl(storeDecision(req, answer(200, { "cache-control": "max-age=10" }), 30)), 10);
  assert.equal(
    ttl(storeDecision(req, answer(200, { "cache-control": "max-age=10, s-maxage=99" }), 30)),
    99,
  );
  assert.equal(
    ttl(storeDecision(req, answer(200, { "cache-control": "max-age=0" }), 30)),
    "not fresh",
  );
  for (const cc of ["no-store", "private", "no-cache", "public, no-store"]) {
    assert.equal(storeDecision(req, answer(200, { "cache-control": cc }), 30).store, false, cc);
  }
  assert.equal(ttl(storeDecision(req, answer(200, { "set-cookie": "a=1" }), 30)), "set-cookie");
  assert.equal(ttl(storeDecision(req, answer(200, { vary: "*" }), 30)), "vary *");
  assert.equal(ttl(storeDecision(req, answer(404), 30)), "status 404");
  assert.equal(ttl(storeDecision(req, answer(206), 30)), "status 206");
  const auth = h({ authorization: "Basic eDp5" });
  assert.equal(ttl(storeDecision(auth, answer(200), 30)), "authorization");
  assert.equal(ttl(storeDecision(auth, answer(200, { "cache-control": "public" }), 30)), 30);
  assert.equal(ttl(storeDecision(auth, answer(200, { "cache-control": "s-maxage=5" }), 30)), 5);
  const aged = storeDecision(req, answer(200, { "cache-control": "max-age=60", age: "20" }), 30);
  assert.ok(aged.store && aged.initialAge === 20);
});

Deno.test("cache policy: requests that bypass or revalidate, freshness, conditionals", () => {
  const r = (method: string, headers: Record<string, string> = {}) =>
    requestPolicy(new Request("http://x/", { method, headers }));
  assert.deepEqual(r("GET"), { bypass: false, revalidate: false });
  assert.equal(r("HEAD").bypass, false);
  assert.equal(r("POST").bypass, true);
  assert.equal(r("GET", { range: "bytes=0-1" }).bypass, true);
  assert.equal(r("GET", { upgrade: "websocket" }).bypass, true);
  assert.equal(r("GET", { "cache-control": "no-store" }).bypass, true);
  assert.equal(r("GET", { "cache-control": "no-cache" }).revalidate, true);
  assert.equal(r("GET", { "cache-control": "max-age=0" }).revalidate, true);
  assert.equal(r("GET", { pragma: "no-cache" }).revalidate, true);

  const e = { storedAtMs: 10_000, initialAge: 2, ttlSeconds: 10 };
  assert.ok(isFresh(e, 10_000));
  assert.ok(isFresh(e, 17_999));
  assert.ok(!isFresh(e, 18_000));
  assert.equal(currentAge(e.storedAtMs, e.initialAge, 15_500), 7);

  const lm = "Wed, 21 Oct 2015 07:28:00 GMT";
  assert.ok(notModified(h({ "if-none-match": 'W/"a", "b"' }), '"b"', null));
  assert.ok(notModified(h({ "if-none-match": '"a"' }), 'W/"a"', null));
  assert.ok(!notModified(h({ "if-none-match": '"c"' }), '"b"', lm));
  assert.ok(notModified(h({ "if-modified-since": lm }), null, lm));
  assert.ok(!notModified(h({ "if-modified-since": "Wed, 21 Oct 2015 07:27:59 GMT" }), null, lm));
  assert.ok(!notModified(h({ "if-modified-since": lm }), null, null));
});

Deno.test("memory cache: least recently used entries go first when over max_bytes", () => {
  const cache = new MemoryCache(300);
  const entry = (n: number) => ({
    status: 200,
    statusText: "",
    headers: [],
    body: new Uint8Array(n),
    storedAtMs: 0,
    initialAge: 0,
    ttlSeconds: 60,
    vary: [],
    varyValues: [],
    bytes: n,
  });
  cache.set("a", entry(100));
  cache.set("b", entry(100));
  cache.set("c", entry(100));
  assert.ok(cache.get("a", h())); // a is now the most recently used
  cache.set("d", entry(100));
  assert.equal(cache.get("b", h()), undefined);
  assert.ok(cache.get("a", h()) && cache.get("c", h()) && cache.get("d", h()));
  assert.equal(cache.bytes, 300);
  cache.set("a", entry(50)); // replaced, not added
  assert.equal(cache.bytes, 250);
});

/** A proxied handler that counts its calls and answers with `headers`. */
function counting(headers: Record<string, string> = {}, body = "hello") {
  const calls = { n: 0 };
  const handler = (request: Request, _ctx: RequestContext) => {
    calls.n++;
    return new Response(request.method === "HEAD" ? null : `${body} ${calls.n}`, { headers });
  };
  return { calls, handler };
}
const ctxOf = (url: string): RequestContext => {
  const u = new URL(url);
  return {
    path: u.pathname,
    query: u.search,
    remote: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
    secure: false,
  };
};
const call = (
  h: (r: Request, c: RequestContext) => Promise<Response>,
  url: string,
  init?: RequestInit,
) => h(new Request(url, init), ctxOf(url));

Deno.test("cache: TTL expiry, rules, Age and conditionals, with an injected clock", async () => {
  let now = 1_000_000;
  const config = v.parse(CachingConfig, {
    default_ttl: 60,
    rules: { "~*\\.css$": 600, "~^/live/": 0 },
  });
  const cache = createCache(config, { now: () => now });
  const { calls, handler } = counting({ etag: '"v1"' });
  const wrapped = cache.wrap(handler);

  let r = await call(wrapped, "http://site/a");
  assert.equal(r.headers.get("x-cache"), "MISS");
  assert.equal(await r.text(), "hello 1");
  now += 59_000;
  r = await call(wrapped, "http://site/a");
  assert.equal(r.headers.get("x-cache"), "HIT");
  assert.equal(r.headers.get("age"), "59");
  assert.equal(await r.text(), "hello 1");
  r = await call(wrapped, "http://site/a", { method: "HEAD" });
  assert.equal(r.headers.get("x-cache"), "HIT");
  assert.equal(await r.text(), "");
  r = await call(wrapped, "http://site/a", { headers: { "if-none-match": '"v1"' } });
  assert.equal(r.status, 304);
  assert.equal(r.headers.get("etag"), '"v1"');
  assert.equal(calls.n, 1);
  now += 1_000; // 60 s: stale
  r = await call(wrapped, "http://site/a");
  assert.equal(r.headers.get("x-cache"), "MISS");
  assert.equal(await r.text(), "hello 2");

  // Query is part of the key; a rule's TTL applies; a rule of 0 never caches.
  assert.equal(await (await call(wrapped, "http://site/a?x=1")).text(), "hello 3");
  await call(wrapped, "http://site/s/App.CSS");
  now += 599_000;
  assert.equal((await call(wrapped, "http://site/s/App.CSS")).headers.get("x-cache"), "HIT");
  await call(wrapped, "http://site/live/x");
  assert.equal((await call(wrapped, "http://site/live/x")).headers.get("x-cache"), "MISS");
  // Another host is another entry.
  assert.equal((await call(wrapped, "http://other/s/App.CSS")).headers.get("x-cache"), "MISS");

  // A successful unsafe request drops what was stored for its URL.
  const n = calls.n;
  await call(wrapped, "http://site/s/App.CSS", { method: "POST" });
  assert.equal((await call(wrapped, "http://site/s/App.CSS")).headers.get("x-cache"), "MISS");
  assert.equal(calls.n, n + 2);
});

Deno.test("cache: answers over max_entry_bytes pass through whole and are not kept", async () => {
  const config = v.parse(CachingConfig, { max_entry_bytes: 10, max_bytes: 1000 });
  const cache = createCache(config, { now: () => 0 });
  const { calls, handler } = counting({}, "a body longer than ten bytes");
  const wrapped = cache.wrap((req, ctx) => {
    const res = handler(req, ctx);
    // A streamed body, without Content-Length.
    return new Response(res.body!.pipeThrough(new TransformStream()), { headers: res.headers });
  });
  for (let i = 1; i <= 2; i++) {
    const r = await call(wrapped, "http://site/big");
    assert.equal(r.headers.get("x-cache"), "MISS");
    assert.equal(await r.text(), `a body longer than ten bytes ${i}`);
  }
  assert.equal(calls.n, 2);
  assert.equal((cache.store as MemoryCache).bytes, 0);
});

Deno.test("caching config: wrong types, negative TTLs, bad regexes and redis without a good url name the key", async () => {
  const ext = (config: unknown) => ({ version: 2, extensions: [{ type: "caching", config }] });
  assert.match(configError(ext({ default_ttl: -1 })), /default_ttl must be a whole number ≥ 0/);
  assert.match(configError(ext({ default_ttl: "60" })), /default_ttl must be a whole number/);
  assert.match(
    configError(ext({ rules: { "~\\.css$": -5 } })),
    /rules\["~\\\\\.css\$"\] must be a whole number ≥ 0, got -5/,
  );
  assert.match(
    configError(ext({ rules: { "~(": 5 } })),
    /rules\["~\("\] is not a valid regular expression/,
  );
  assert.match(configError(ext({ rules: { "/api": 5 } })), /rules\.\/api must be "~regex"/);
  assert.match(configError(ext({ max_bytes: 0 })), /max_bytes must be a whole number ≥ 1/);
  assert.match(configError(ext({ backend: "disk" })), /backend must be "memory" or "redis"/);
  assert.match(
    configError(ext({ max_bytes: 5, max_entry_bytes: 10 })),
    /max_entry_bytes must not exceed max_bytes \(5\)/,
  );
  const { config } = validate(ext({}));
  assert.deepEqual(config.extensions[0].config, {
    backend: "memory",
    default_ttl: 300,
    rules: {},
    max_bytes: 64 * 1024 * 1024,
    max_entry_bytes: 1024 * 1024,
  });
  assert.deepEqual(unsupported(config), []);
  assert.match(
    configError(ext({ backend: "redis" })),
    /config\.url is required with backend: redis/,
  );
  for (const url of ["http://127.0.0.1:6379", "redis://127.0.0.1:6379/x", "redis://", "nope"]) {
    assert.match(
      configError(ext({ backend: "redis", url })),
      /config\.url must be redis:\/\/host:port\/db/,
    );
  }
  assert.deepEqual(
    unsupported(validate(ext({ backend: "redis", url: "redis://127.0.0.1:6379/0" })).config),
    [],
  );

  await assertCheckRefuses(
    "version: 2\nextensions:\n  - type: caching\n    config:\n" +
      "      default_ttl: -1\n",
    /config\.yaml:5:20: .*default_ttl must be a whole number ≥ 0/,
  );
});

/** A backend answering each path with the headers the test gives it, counting hits per path. */
function backend(headersFor: (path: string, request: Request) => Record<string, string>) {
  const hits = new Map<string, number>();
  const b = serveBackend((request, seen) => {
    const n = (hits.get(seen.path) ?? 0) + 1;
    hits.set(seen.path, n);
    // fetch sends `Accept-Language: *` unless told otherwise.
    const lang = request.headers.get("accept-language") ?? "-";
    return new Response(`${seen.path} #${n} ${lang}`, { headers: headersFor(seen.path, request) });
  });
  return Object.assign(b, { hits: (path: string) => hits.get(path) ?? 0 });
}

Deno.test("caching through the server: HIT skips the backend; no-store, private, Set-Cookie, Authorization are not kept; Vary keys", async () => {
  await using b = backend((path): Record<string, string> => {
    if (path.startsWith("/nostore")) return { "cache-control": "no-store" };
    if (path.startsWith("/private")) return { "cache-control": "private, max-age=60" };
    if (path.startsWith("/cookie")) return { "set-cookie": "s=1" };
    if (path.startsWith("/public")) return { "cache-control": "public, max-age=60" };
    if (path.startsWith("/lang")) return { vary: "Accept-Language" };
    return { etag: '"e1"', "last-modified": "Wed, 21 Oct 2015 07:28:00 GMT" };
  });
  await using s = await startTestServer({
    version: 2,
    server: { reverse_proxy: [{ path: "/", host: "127.0.0.1", port: b.port }] },
    extensions: [{ type: "caching", config: { default_ttl: 60 } }],
  });

  let r = await get(`${s.url}/page?q=1`);
  assert.equal(r.headers.get("x-cache"), "MISS");
  r = await get(`${s.url}/page?q=1`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("x-cache"), "HIT");
  assert.match(r.headers.get("age") ?? "", /^\d+$/);
  assert.equal(r.body, "/page?q=1 #1 *");
  assert.equal(b.hits("/page?q=1"), 1);
  r = await get(`${s.url}/page?q=1`, { headers: { "if-none-match": '"e1"' } });
  assert.equal(r.status, 304);
  r = await get(`${s.url}/page?q=1`, {
    headers: { "if-modified-since": "Wed, 21 Oct 2015 07:28:00 GMT" },
  });
  assert.equal(r.status, 304);
  assert.equal(b.hits("/page?q=1"), 1);

  for (const path of ["/nostore", "/private", "/cookie"]) {
    await get(`${s.url}${path}`);
    r = await get(`${s.url}${path}`);
    assert.equal(r.headers.get("x-cache"), "MISS", path);
    assert.equal(b.hits(path), 2, path);
  }
  const auth = { headers: { authorization: "Bearer t" } };
  await get(`${s.url}/page2`, auth);
  assert.equal((await get(`${s.url}/page2`, auth)).headers.get("x-cache"), "MISS");
  assert.equal(b.hits("/page2"), 2);
  await get(`${s.url}/public`, auth);
  assert.equal((await get(`${s.url}/public`, auth)).headers.get("x-cache"), "HIT");
  assert.equal(b.hits("/public"), 1);

  const lang = (l: string) => get(`${s.url}/lang`, { headers: { "accept-language": l } });
  assert.equal((await lang("fr")).body, "/lang #1 fr");
  assert.equal((await lang("de")).body, "/lang #2 de");
  r = await lang("fr");
  assert.equal(r.headers.get("x-cache"), "HIT");
  assert.equal(r.body, "/lang #1 fr");
  assert.equal((await lang("de")).body, "/lang #2 de");
  assert.equal(b.hits("/lang"), 2);

  // POST is never served from the cache.
  await get(`${s.url}/page?q=1`, { method: "POST", body: "x" });
  assert.equal(b.hits("/page?q=1"), 2);
  // Answers from the cache are logged like any other.
  s.log.flush();
  const logged = s.log.lines.filter((l) => l.startsWith("ACCESS ") && l.includes("GET /page?q=1"));
  assert.equal(logged.filter((l) => /" 200 /.test(l)).length, 2, logged.join("\n"));
  assert.equal(logged.filter((l) => /" 304 /.test(l)).length, 2, logged.join("\n"));
});

Deno.test("caching through the server: V2 proxy_pass locations are cached, static files are not", async () => {
  await using b = backend(() => ({}));
  await using dir = await tempDir();
  await writeFiles(dir.path, { "index.html": "home" });
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path },
    extensions: [
      {
        type: "routing",
        config: { regex_locations: { "~^/api/": { proxy_pass: `http://127.0.0.1:${b.port}` } } },
      },
      { type: "caching", config: {} },
    ],
  });
  await get(`${s.url}/api/x`);
  const r = await get(`${s.url}/api/x`);
  assert.equal(r.headers.get("x-cache"), "HIT");
  assert.equal(b.hits("/api/x"), 1);
  const f = await get(`${s.url}/`);
  assert.equal(f.body, "home");
  assert.equal(f.headers.get("x-cache"), null);
});

Deno.test("README: the caching example loads without warnings, its rules as written", async () => {
  const readme = await Deno.readTextFile(`${ROOT}/README.md`);
  const start = readme.indexOf("## Caching");
  assert.ok(start > 0, "README has the caching section");
  const block = /```yaml\n([\s\S]*?)```/.exec(readme.slice(start));
  assert.ok(block);
  const { config, warnings } = validate(parse(block[1]) as Record<string, unknown>);
  assert.deepEqual(warnings, []);
  assert.deepEqual(unsupported(config), []);
  const caching = config.extensions[1].config as CachingConfig;
  assert.deepEqual(caching.rules, { "~*\\.(css|js|png|svg)$": 86400, "~^/api/live/": 0 });
  assert.equal(caching.max_bytes, 64 * 1024 * 1024);
});
