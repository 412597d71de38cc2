/**
 * `rate_limiting` (`extensions: security`): the token bucket with an injected clock, eviction
 * that keeps memory bounded, and 429 from a real server (limits small enough that it shows at
 * once; nothing here waits for time to pass).
 */
import assert from "node:assert/strict";
import { TokenBuckets } from "../src/routes/token_bucket.ts";
import { get } from "./support/clients.ts";
import { assertCheckRefuses, configError } from "./support/config.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { startTestServer } from "./support/servers.ts";

Deno.test("token bucket: burst at once, then refill at the rate, never above the burst", () => {
  let now = 1_000;
  const buckets = new TokenBuckets(100, () => now);
  const limit = { perMinute: 60, burst: 3 }; // one token a second
  for (let i = 2; i >= 0; i--) {
    const t = buckets.take("a", limit);
    assert.ok(t.allowed);
    assert.equal(t.remaining, i);
  }
  let t = buckets.take("a", limit);
  assert.ok(!t.allowed);
  assert.equal(t.remaining, 0);
  assert.equal(t.retryAfterMs, 1000);
  assert.equal(t.resetMs, 3000);
  assert.ok(buckets.take("b", limit).allowed, "another key has its own bucket");
  now += 500;
  assert.ok(!buckets.take("a", limit).allowed, "half a token is not enough");
  now += 500;
  t = buckets.take("a", limit);
  assert.ok(t.allowed, "one token after a second");
  assert.equal(t.remaining, 0);
  now += 60_000;
  t = buckets.take("a", limit);
  assert.equal(t.remaining, 2, "a long pause fills the bucket to the burst, not beyond");
  now -= 10_000;
  assert.ok(buckets.take("a", limit).allowed, "a clock going back adds nothing and breaks nothing");
});

Deno.test("token bucket: memory stays bounded; least recently used buckets go first", () => {
  let now = 0;
  const buckets = new TokenBuckets(3, () => now);
  const limit = { perMinute: 1, burst: 1 };
  for (const k of ["a", "b", "c"]) assert.ok(buckets.take(k, limit).allowed);
  assert.ok(!buckets.take("a", limit).allowed, "a is now the most recently used");
  assert.ok(buckets.take("d", limit).allowed);
  assert.equal(buckets.size, 3);
  assert.ok(buckets.take("b", limit).allowed, "b was evicted, so it starts full");
  assert.ok(!buckets.take("a", limit).allowed, "a was kept");
  for (let i = 0; i < 10_000; i++) buckets.take(`k${i}`, limit);
  assert.ok(buckets.size <= 3);
  now += 120_000;
  for (let i = 0; i < 50; i++) buckets.take(`n${i}`, limit);
  assert.ok(buckets.size <= 3);
});

Deno.test("rate_limiting: 429 with Retry-After and RateLimit-* at once; rules and clients count apart", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "index.html": "home",
    "error_429.html": "slow down: {{error_details}}",
  });
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path, templates_dir: dir.path },
    extensions: [{
      type: "security",
      config: {
        trusted_proxies: ["127.0.0.1"],
        rate_limiting: {
          requests_per_minute: 1,
          burst: 2,
          rules: { "/api/": { requests_per_minute: 1, burst: 1 } },
        },
      },
    }],
  });
  assert.equal((await get(`${s.url}/`)).status, 200);
  assert.equal((await get(`${s.url}/missing`)).status, 404, "every answer counts");
  let r = await get(`${s.url}/`);
  assert.equal(r.status, 429);
  assert.match(r.body, /^slow down: Too many requests/);
  assert.ok(Number(r.headers.get("retry-after")) >= 1);
  assert.ok(Number(r.headers.get("retry-after")) <= 60);
  assert.equal(r.headers.get("ratelimit-limit"), "2");
  assert.equal(r.headers.get("ratelimit-remaining"), "0");
  assert.ok(Number(r.headers.get("ratelimit-reset")) >= Number(r.headers.get("retry-after")));

  r = await get(`${s.url}/api/x`);
  assert.equal(r.status, 404, "/api/ has a bucket of its own");
  r = await get(`${s.url}/api/y`);
  assert.equal(r.status, 429);
  assert.equal(r.headers.get("ratelimit-limit"), "1");

  r = await get(`${s.url}/`, { headers: { "x-forwarded-for": "198.51.100.7" } });
  assert.equal(r.status, 200, "a client behind the trusted proxy has its own bucket");
  s.log.flush();
  assert.ok(s.log.lines.some((l) => l.startsWith("ACCESS ") && / 429 /.test(l)), "logged");
});

Deno.test("rate_limiting: enabled: false serves everything", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "index.html": "home" });
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path },
    extensions: [{ type: "security", config: { rate_limiting: { enabled: false, burst: 1 } } }],
  });
  for (let i = 0; i < 3; i++) assert.equal((await get(`${s.url}/`)).status, 200);
});

Deno.test("rate_limiting: negative or fractional rates and bad rules are errors naming the key; --test exits 2", async () => {
  const sec = (rate_limiting: unknown) => ({
    version: 2,
    extensions: [{ type: "security", config: { rate_limiting } }],
  });
  assert.match(
    configError(sec({ requests_per_minute: -5 })),
    /rate_limiting\.requests_per_minute must be a whole number ≥ 1, got -5/,
  );
  assert.match(configError(sec({ burst: 1.5 })), /rate_limiting\.burst must be a whole number/);
  assert.match(configError(sec({ burst: "10" })), /rate_limiting\.burst must be a whole number/);
  assert.match(
    configError(sec({ rules: { "/api/": { requests_per_minute: 0 } } })),
    /rate_limiting\.rules\.\/api\/\.requests_per_minute must be a whole number ≥ 1, got 0/,
  );
  assert.match(configError(sec({ rules: { "api": {} } })), /rate_limiting\.rules.*must start with/);
  await assertCheckRefuses(
    "version: 2\nextensions:\n  - type: security\n    config:\n" +
      "      rate_limiting:\n        requests_per_minute: -1\n",
    /config\.yaml:6:30: .*requests_per_minute must be a whole number ≥ 1/,
  );
});
