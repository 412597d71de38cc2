/**
 * `backend: redis` for the caching extension and rate_limiting: two servers sharing one real
 * `redis-server` on a free loopback port, through an outage and a restart, in this process and as
 * two CLI processes.
 */
import assert from "node:assert/strict";
import { parse } from "yaml";
import { validate } from "../src/config/load.ts";
import { unsupported } from "../src/app/validate.ts";
import { REDIS_CACHE_PREFIX } from "../src/routes/cache.ts";
import { serveBackend } from "./support/backends.ts";
import { rawRequest } from "./support/clients.ts";
import { type CliServer, runCli, spawnCli } from "./support/cli.ts";
import { ROOT, tempDir, writeFiles } from "./support/files.ts";
import { freePort, startTestServer, type TestServer } from "./support/servers.ts";
import { REDIS_SERVER, startRedis, watchKeys } from "./support/redis.ts";
import { eventually } from "./support/wait.ts";

if (!REDIS_SERVER) console.log("redis_test: ignored, redis-server is not on PATH");

/**
 * GET `path` from the server at `base` with `Host: site.test`, the one name two servers behind a
 * load balancer are reached by, so that they share cache keys (fetch cannot set Host).
 */
async function getSite(base: string, path: string) {
  const port = Number(new URL(base).port);
  const answer = await rawRequest(
    port,
    `GET ${path} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n`,
    5000,
  );
  const headers = new Map(answer.headers);
  return {
    status: answer.status,
    cache: headers.get("x-cache") ?? null,
    limit: headers.get("ratelimit-limit") ?? null,
    body: answer.text.slice(answer.text.indexOf("\r\n\r\n") + 4),
  };
}

/** Lines of `s`'s log matching `re`. */
const logged = (s: TestServer, re: RegExp) => s.log.lines.filter((l) => re.test(l)).length;

Deno.test({
  name:
    "redis backend: two servers share cached answers and limits, fail open while Redis is down, recover",
  ignore: !REDIS_SERVER,
  async fn() {
    const port = freePort();
    let redis = await startRedis(port);
    try {
      let hits = 0;
      await using b = serveBackend(() => {
        hits++;
        return new Response("from backend", { headers: { "cache-control": "max-age=60" } });
      });
      const url = `redis://127.0.0.1:${port}/0`;
      const config = {
        version: 2,
        server: { reverse_proxy: [{ path: "/", host: "127.0.0.1", port: b.port }] },
        extensions: [
          { type: "caching", config: { backend: "redis", url } },
          {
            type: "security",
            config: {
              rate_limiting: {
                backend: "redis",
                url,
                requests_per_minute: 6000,
                burst: 1000,
                rules: { "/limited": { requests_per_minute: 1, burst: 3 } },
              },
            },
          },
        ],
      };
      await using one = await startTestServer(config);
      await using two = await startTestServer(config);
      const connected = (s: TestServer) => logged(s, /^INFO redis .*: connected$/);
      assert.ok(await eventually(() => connected(one) === 1 && connected(two) === 1, 10_000));

      const get = async (s: TestServer, path: string) => {
        const { status, cache, body } = await getSite(s.url, path);
        return { status, cache, body };
      };

      // Cached through one, a HIT through the other (the store goes on in the background: the
      // key's SET is waited for).
      {
        await using writes = await watchKeys(port, `${REDIS_CACHE_PREFIX}*`);
        assert.equal((await get(one, "/page")).cache, "MISS");
        assert.equal(await writes.written(), `${REDIS_CACHE_PREFIX}http://site.test/page`);
      }
      let seen = await get(two, "/page");
      assert.deepEqual(seen, { status: 200, cache: "HIT", body: "from backend" });
      const backendHits = hits;

      // A client alternating between the two spends one bucket: 3 answers, then 429 from both.
      const statuses = [];
      for (let i = 0; i < 6; i++) statuses.push((await get(i % 2 ? two : one, "/limited")).status);
      assert.deepEqual(statuses, [200, 200, 200, 429, 429, 429]);

      // Redis stopped: answers go on (no cache, limits allow), one warning per server.
      await redis.stop();
      for (let i = 0; i < 6; i++) {
        const s = i % 2 ? two : one;
        assert.equal((await get(s, "/page")).status, 200);
        assert.equal((await get(s, "/limited")).status, 200);
      }
      assert.ok(hits > backendHits, "without Redis the backend answers");
      const warned = (s: TestServer) => logged(s, /^WARNING redis /);
      assert.ok(await eventually(() => warned(one) === 1 && warned(two) === 1, 5000));
      assert.equal(logged(one, /^ERROR/) + logged(two, /^ERROR/), 0);

      // Restarted: both reconnect by themselves, and caching and limits work again.
      redis = await startRedis(port);
      assert.ok(await eventually(() => connected(one) === 2 && connected(two) === 2, 10_000));
      {
        await using writes = await watchKeys(port, `${REDIS_CACHE_PREFIX}*`);
        assert.equal((await get(two, "/again")).cache, "MISS");
        await writes.written();
      }
      seen = await get(one, "/again");
      assert.equal(seen.cache, "HIT");
      const after = [];
      for (let i = 0; i < 4; i++) after.push((await get(i % 2 ? one : two, "/limited")).status);
      assert.deepEqual(after, [200, 200, 200, 429]);
      assert.equal(warned(one) + warned(two), 2, "no more warnings within the minute");
    } finally {
      await redis.stop();
    }
  },
});

Deno.test({
  name:
    "redis backend: two CLI processes on one Redis limit a client spread over both once, and one serves what the other cached",
  ignore: !REDIS_SERVER,
  async fn() {
    await using redis = await startRedis(freePort());
    const backendSaw: string[] = [];
    await using backend = serveBackend((request) => {
      const path = new URL(request.url).pathname;
      backendSaw.push(path);
      return new Response(`from backend ${path}`, { headers: { "cache-control": "max-age=60" } });
    });
    // Each process has its own folder and config file; they share the Redis server.
    const config = `version: 2
server:
  host: 127.0.0.1
  port: 0
  reverse_proxy:
    - path: /
      host: 127.0.0.1
      port: ${backend.port}
extensions:
  - type: caching
    config:
      backend: redis
      url: ${redis.url}
  - type: security
    config:
      rate_limiting:
        backend: redis
        url: ${redis.url}
        requests_per_minute: 6000
        burst: 1000
        rules:
          "/limited": { requests_per_minute: 1, burst: 4 }
`;
    await using dir = await tempDir();
    await writeFiles(dir.path, {
      "a/config.yaml": config,
      "a/static/index.html": "a",
      "b/config.yaml": config,
      "b/static/index.html": "b",
    });
    const cli = (name: string) =>
      spawnCli(["-c", `${dir.path}/${name}/config.yaml`], { cwd: `${dir.path}/${name}` });
    await using a = await cli("a");
    await using b = await cli("b");
    // The first requests would go on without Redis if it were not connected yet (fail open).
    await Promise.all([a, b].map((p) => p.waitFor(/INFO redis \S+: connected/)));

    const get = (p: CliServer, path: string) => getSite(p.url, path);

    // Alternating a, b, a, b: four pass, the fifth (a) and sixth (b) are over the one limit.
    const limited = [];
    for (let i = 0; i < 6; i++) limited.push(await get(i % 2 ? b : a, "/limited"));
    assert.deepEqual(limited.map((r) => r.status), [200, 200, 200, 200, 429, 429]);
    assert.deepEqual(limited.slice(4).map((r) => r.limit), ["4", "4"]);

    // Fetched through a: a MISS, stored in the background (its SET is waited for); then b
    // answers it from Redis without asking the backend.
    {
      await using writes = await watchKeys(redis.port, `${REDIS_CACHE_PREFIX}*`);
      const first = await get(a, "/page");
      assert.deepEqual([first.status, first.cache, first.body], [
        200,
        "MISS",
        "from backend /page",
      ]);
      assert.equal(await writes.written(), `${REDIS_CACHE_PREFIX}http://site.test/page`);
    }
    const second = await get(b, "/page");
    assert.deepEqual([second.status, second.cache, second.body], [
      200,
      "HIT",
      "from backend /page",
    ]);
    assert.equal(backendSaw.filter((p) => p === "/page").length, 1);

    for (const p of [a, b]) {
      assert.equal(await p.stop("SIGTERM"), 0, p.output());
      assert.doesNotMatch(p.output(), /^\S+ (WARNING|ERROR) /m, p.output());
    }
  },
});

Deno.test({
  name:
    "redis backend: with server.workers: 2 each loop connects, and a client on new connections is limited once",
  ignore: !REDIS_SERVER,
  async fn() {
    await using redis = await startRedis(freePort());
    await using dir = await tempDir();
    await writeFiles(dir.path, {
      "config.yaml": `version: 2
server:
  port: 0
  workers: 2
extensions:
  - type: security
    config:
      rate_limiting:
        backend: redis
        url: ${redis.url}
        requests_per_minute: 1
        burst: 4
`,
      "static/index.html": "home",
    });
    await using p = await spawnCli([], { cwd: dir.path });
    assert.match(p.output(), /with 2 workers/);
    await p.waitFor(/(INFO redis \S+: connected[\s\S]*){2}/);
    const port = Number(new URL(p.url).port);
    const statuses = [];
    for (let i = 0; i < 24; i++) {
      statuses.push(
        (await rawRequest(port, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")).status,
      );
    }
    assert.deepEqual(statuses, [200, 200, 200, 200, ...Array(20).fill(429)]);
    // Each loop numbers its requests under its own prefix; the kernel spread the 24 connections
    // over both (all on one: a chance of 2·2⁻²⁴).
    await p.waitFor(/(" (200|429) [\s\S]*){24}/);
    const loops = new Set(p.output().match(/ id=\w+-/g));
    assert.equal(loops.size, 2, p.output());
    assert.equal(await p.stop("SIGTERM"), 0, p.output());
  },
});

Deno.test({
  name: "redis backend: a stalled Redis (SIGSTOP) still lets requests through, with one warning",
  ignore: !REDIS_SERVER,
  async fn() {
    const port = freePort();
    await using redis = await startRedis(port);
    await using b = serveBackend(() =>
      new Response("ok", { headers: { "cache-control": "max-age=60" } })
    );
    const url = `redis://127.0.0.1:${port}/0`;
    await using s = await startTestServer({
      version: 2,
      server: { reverse_proxy: [{ path: "/", host: "127.0.0.1", port: b.port }] },
      extensions: [
        { type: "caching", config: { backend: "redis", url } },
        { type: "security", config: { rate_limiting: { backend: "redis", url, burst: 1000 } } },
      ],
    });
    assert.ok(await eventually(() => logged(s, /^INFO redis .*: connected$/) === 1, 10_000));
    // Stopped, not dead: the connection stays open and nothing answers on it.
    redis.signal("SIGSTOP");
    try {
      for (let i = 0; i < 5; i++) {
        const r = await fetch(`${s.url}/slow${i}`);
        assert.equal(r.status, 200);
        assert.equal(await r.text(), "ok");
      }
      assert.equal(logged(s, /^WARNING redis .*no answer in 150 ms/), 1);
    } finally {
      redis.signal("SIGCONT");
    }
  },
});

Deno.test("redis backend: no url or a bad one is a configuration error naming the key, exit 2", async () => {
  await using dir = await tempDir();
  const cases: [string, RegExp][] = [
    [
      "  - type: security\n    config:\n      rate_limiting: { backend: redis }\n",
      /rate_limiting\.url is required with backend: redis/,
    ],
    [
      '  - type: caching\n    config: { backend: redis, url: "http://127.0.0.1:6379" }\n',
      /config\.url must be redis:\/\/host:port\/db .*got "http:\/\/127\.0\.0\.1:6379"/,
    ],
  ];
  for (const [ext, re] of cases) {
    await writeFiles(dir.path, { "config.yaml": `version: 2\nextensions:\n${ext}` });
    const test = await runCli(["--test", "configuration"], { cwd: dir.path });
    assert.equal(test.code, 2, test.stdout);
    assert.match(test.stdout, re);
    const start = await runCli(["-p", "0"], { cwd: dir.path });
    assert.equal(start.code, 2, start.stderr);
    assert.match(start.stderr, re);
  }
});

Deno.test("README: the Redis backend example loads without warnings", async () => {
  const readme = await Deno.readTextFile(`${ROOT}/README.md`);
  const start = readme.indexOf("### Redis backend");
  assert.ok(start > 0, "README has the Redis backend section");
  const block = /```yaml\n([\s\S]*?)```/.exec(readme.slice(start));
  assert.ok(block);
  const { config, warnings } = validate({ version: 2, ...parse(block[1]) });
  assert.deepEqual(warnings, []);
  assert.deepEqual(unsupported(config), []);
  const [caching, security] = config.extensions.map((e) => e.config) as [
    { backend: string; url: string },
    { rate_limiting: { backend: string; url: string } },
  ];
  assert.deepEqual([caching.backend, caching.url], ["redis", "redis://127.0.0.1:6379/0"]);
  assert.deepEqual(
    [security.rate_limiting.backend, security.rate_limiting.url],
    ["redis", "redis://127.0.0.1:6379/0"],
  );
});
