/**
 * Several denoserve instances as one site: three instances behind a real HAProxy share their ACME
 * state through one real redis-server (`ssl.acme.storage: redis://…`), with pebble as the CA.
 * pebble's http-01 requests go through HAProxy (round robin) to any instance. Every wait is on an
 * event (a log line, a served certificate); the deadlines are only a safety net.
 */
import assert from "node:assert/strict";
import { validate } from "../src/config/load.ts";
import { redisKeys } from "../src/tls/acme/redis_storage.ts";
import { createSealer, SealError } from "../src/tls/acme/seal.ts";
import { servedCertificate, servedFingerprint } from "./support/certs.ts";
import { type CliServer, curl, runCli, spawnCli } from "./support/cli.ts";
import { tempDir } from "./support/files.ts";
import { HAPROXY, type Haproxy, startHaproxy } from "./support/haproxy.ts";
import { HAVE_PEBBLE, type Pebble, startPebble } from "./support/pebble.ts";
import { REDIS_SERVER, respConnect, startRedis } from "./support/redis.ts";
import { freePort } from "./support/servers.ts";

const missing = [
  !HAVE_PEBBLE && "pebble",
  !HAPROXY && "haproxy",
  !REDIS_SERVER && "redis-server",
].filter(Boolean);
if (missing.length) {
  console.warn(`acme_cluster_test: ${missing.join(", ")} missing; install the Debian packages`);
}
const ignore = missing.length > 0;

const STORAGE_KEY = "correct horse battery staple, twice over";
/** Safety net for one wait; events normally come within a few seconds. */
const DEADLINE = 60_000;

/** One instance's ports and folder. */
interface Slot {
  name: string;
  https: number;
  http: number;
  dir: string;
}

interface Cluster extends AsyncDisposable {
  pebble: Pebble;
  redisUrl: string;
  haproxy: Haproxy;
  /** HAProxy's HTTPS port (TCP mode, round robin to the instances). */
  front: number;
  slots: Slot[];
  /** Starts the instance of `slot` (not waiting for it to serve). */
  start(slot: Slot): Promise<CliServer>;
  running: CliServer[];
}

/**
 * pebble, HAProxy (http-01 on pebble's validation port to the instances' `ssl.acme.http_port`,
 * round robin; HTTPS in TCP mode to their HTTPS ports) and the instances' configurations.
 */
async function cluster(
  redisUrl: string,
  options: {
    validity?: number;
    lockTimeout?: number;
    pollInterval?: number;
    /** How many of the three instances HAProxy sends to (the first n). Default 3. */
    behind?: number;
    /** Lines appended to every instance's config.yaml (a `sites:` list). */
    extra?: string[];
  } = {},
): Promise<Cluster> {
  const pebble = await startPebble({ validity: options.validity });
  const root = await tempDir();
  const slots: Slot[] = ["a", "b", "c"].map((name) => ({
    name,
    https: freePort(),
    http: freePort(),
    dir: `${root.path}/${name}`,
  }));
  const front = freePort();
  const haproxy = await startHaproxy(
    [
      "defaults",
      "  timeout connect 1s",
      "  timeout client 10s",
      "  timeout server 10s",
      // An instance that is down (killed on purpose) is skipped for the next one.
      "  retries 3",
      "  option redispatch 1",
      "frontend acme_http",
      "  mode http",
      `  bind 127.0.0.1:${pebble.httpPort}`,
      "  default_backend instances_http",
      "backend instances_http",
      "  mode http",
      "  balance roundrobin",
      ...slots.slice(0, options.behind ?? 3).map((s) => `  server ${s.name} 127.0.0.1:${s.http}`),
      "frontend site_https",
      "  mode tcp",
      `  bind 127.0.0.1:${front}`,
      "  default_backend instances_https",
      "backend instances_https",
      "  mode tcp",
      "  balance roundrobin",
      ...slots.slice(0, options.behind ?? 3).map((s) => `  server ${s.name} 127.0.0.1:${s.https}`),
      "",
    ].join("\n"),
    [pebble.httpPort, front],
  );
  for (const s of slots) {
    await Deno.mkdir(s.dir);
    await Deno.writeTextFile(`${s.dir}/index.html`, `instance ${s.name}`);
    await Deno.writeTextFile(
      `${s.dir}/config.yaml`,
      [
        "server:",
        "  host: 127.0.0.1",
        `  port: ${s.https}`,
        "http:",
        "  static_dir: .",
        "logging:",
        "  level: DEBUG",
        "ssl:",
        "  enabled: true",
        "  acme:",
        "    email: admin@example.com",
        "    domains: [example.test, www.example.test]",
        `    directory_url: ${pebble.directoryUrl}`,
        `    ca_file: ${pebble.caFile}`,
        `    storage: ${redisUrl}`,
        "    storage_key: ${ACME_STORAGE_KEY}",
        `    http_port: ${s.http}`,
        `    lock_timeout: ${options.lockTimeout ?? 4}`,
        `    poll_interval: ${options.pollInterval ?? 30}`,
        ...options.extra ?? [],
        "",
      ].join("\n"),
    );
  }
  const running: CliServer[] = [];
  return {
    pebble,
    redisUrl,
    haproxy,
    front,
    slots,
    running,
    async start(slot) {
      const server = await spawnCli(["-c", `${slot.dir}/config.yaml`], {
        env: { ACME_STORAGE_KEY: STORAGE_KEY },
        waitServing: false,
      });
      running.push(server);
      return server;
    },
    async [Symbol.asyncDispose]() {
      await Promise.all(running.map((r) => r.stop("SIGKILL")));
      await haproxy.stop();
      await pebble[Symbol.asyncDispose]();
      await root[Symbol.asyncDispose]();
    },
  };
}

const count = (text: string, pattern: RegExp) => text.match(new RegExp(pattern, "g"))?.length ?? 0;
const ORDERED = /acme: requesting a certificate/;
const OBTAINED = /acme: certificate for \S+ \S+ obtained/;
const ISSUED = /Issued certificate serial/i;
const seconds = (since: number) => `${((performance.now() - since) / 1000).toFixed(1)} s`;

/** Waits until `check` resolves true, trying again after each failure; fails after `ms`. */
async function until(what: string, check: () => Promise<boolean>, ms = DEADLINE) {
  const end = Date.now() + ms;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The fingerprints the instances serve on their own HTTPS ports. */
const fingerprints = (slots: Slot[]) => Promise.all(slots.map((s) => servedFingerprint(s.https)));

Deno.test({
  name:
    "acme cluster: three instances behind HAProxy place one order, serve the same certificate, and all take the renewal",
  ignore,
  async fn() {
    await using redis = await startRedis(freePort());
    // 12 s certificates: renewal at 8 s, two thirds of the lifetime.
    await using c = await cluster(redis.url, { validity: 12 });
    const started = performance.now();
    const servers = await Promise.all(c.slots.map((s) => c.start(s)));
    await Promise.all(servers.map((s) => s.waitFor(/ serving .* on https:/, DEADLINE)));
    const all = () => servers.map((s) => s.output()).join("\n");
    const [first, ...others] = await fingerprints(c.slots);
    console.log(`  three instances serving one certificate after ${seconds(started)}`);
    for (const f of others) assert.equal(f, first, "every instance serves the same certificate");
    assert.equal(count(all(), ORDERED), 1, `one order placed:\n${all()}`);
    assert.equal(count(c.pebble.output(), ISSUED), 1, "pebble issued one certificate");
    const orderer = servers.findIndex((s) => ORDERED.test(s.output()));
    // pebble's requests went round robin: an instance that did not order answered one.
    assert.ok(
      servers.some((s, i) =>
        i !== orderer && /http-01 request for token \S+ \(known\)/.test(s.output())
      ),
      `an instance that did not order answered a challenge:\n${all()}`,
    );
    // The others took the stored certificate (announced by the orderer).
    servers.forEach((s, i) => {
      if (i !== orderer) assert.match(s.output(), /acme: took the certificate for .* stored in/);
    });
    // Through HAProxy's TCP front too: one connection to each instance in turn, one certificate.
    const pages = new Set<string>();
    for (let i = 0; i < 3; i++) {
      pages.add((await curl(["-k", `https://127.0.0.1:${c.front}/`])).stdout);
      assert.equal(await servedFingerprint(c.front), first);
    }
    assert.equal(pages.size >= 2, true, `HAProxy spread the requests: ${[...pages]}`);
    // The private keys are in Redis, sealed, never in clear.
    const keys = await redisKeys(c.pebble.directoryUrl, ["example.test", "www.example.test"]);
    const resp = await respConnect(redis.port);
    try {
      const hash = await resp.command("HGETALL", keys.cert) as string[];
      const fields = Object.fromEntries(
        hash.flatMap((v, i, a) => i % 2 ? [] : [[v, a[i + 1]]]),
      );
      assert.match(fields.cert, /BEGIN CERTIFICATE/);
      assert.match(fields.key, /^denoserve-sealed:v1:/);
      const account = await resp.command("GET", keys.account) as string;
      assert.match(account, /^denoserve-sealed:v1:/);
      // Every value of every key, one command at a time on this plain connection.
      let dump = "";
      for (const k of (await resp.command("KEYS", "*")) as string[]) {
        const type = await resp.command("TYPE", k);
        if (type === "string") dump += await resp.command("GET", k);
        if (type === "hash") dump += JSON.stringify(await resp.command("HGETALL", k));
      }
      assert.ok(!/PRIVATE KEY/.test(dump), "no private key in clear anywhere in Redis");
    } finally {
      resp.close();
    }

    // Renewal: one instance orders (same lock), every instance swaps the new one in.
    const renewing = performance.now();
    await until("all three serving a renewed certificate", async () => {
      const now = await fingerprints(c.slots);
      return now.every((f) => f === now[0]) && now[0] !== first;
    });
    console.log(`  renewal reached all three ${seconds(renewing)} after the first was served`);
    // A server takes the new certificate before it logs so: the line may trail the answers.
    for (const s of servers) await s.waitFor(/certificate reloaded: SHA-256/, DEADLINE);
    // From the renewal's "obtained" line to the last other instance's swap, by their log times.
    const at = (line: string) => Date.parse(line.slice(0, 24));
    const lines = servers.map((s) => s.output().split("\n"));
    const renewer = lines.findIndex((ls) =>
      ls.filter((l) => OBTAINED.test(l)).length > 0 &&
      ls.some((l) =>
        OBTAINED.test(l) &&
        at(l) > Date.parse(lines[orderer].find((x) => OBTAINED.test(x))!.slice(0, 24))
      )
    );
    if (renewer >= 0) {
      const obtained = at(lines[renewer].filter((l) => OBTAINED.test(l)).at(-1)!);
      const swaps = lines.filter((_, i) => i !== renewer).map((ls) =>
        at(ls.find((l) => /certificate reloaded/.test(l) && at(l) >= obtained) ?? "")
      );
      console.log(
        `  renewal: in service on the other two ${
          Math.max(...swaps) - obtained
        } ms after it was obtained`,
      );
    }
    await Promise.all(servers.map((s) => s.stop("SIGTERM")));
    // Every round was ordered once: as many orders as certificates, none failed or repeated.
    const orders = count(all(), ORDERED);
    assert.ok(orders >= 2, `a renewal was ordered:\n${all()}`);
    assert.equal(count(all(), OBTAINED), orders, "every order completed");
    assert.equal(count(c.pebble.output(), ISSUED), orders, "one certificate per order");
  },
});

/** The DNS names of the certificate served on `port` for SNI `name`. */
async function servedNames(port: number, name: string): Promise<string[]> {
  return ((await servedCertificate(port, name)).subjectAltName ?? "").split(", ").sort();
}

Deno.test({
  name:
    "acme cluster: with sites, two instances place one order for every site's names and serve it by SNI",
  ignore,
  async fn() {
    await using redis = await startRedis(freePort());
    await using c = await cluster(redis.url, {
      behind: 2,
      extra: ["sites:", "  - names: [other.test]", "    http: { static_dir: . }"],
    });
    const servers = await Promise.all(c.slots.slice(0, 2).map((s) => c.start(s)));
    await Promise.all(servers.map((s) => s.waitFor(/ serving .* on https:/, DEADLINE)));
    const all = () => servers.map((s) => s.output()).join("\n");
    assert.equal(count(all(), ORDERED), 1, `one order placed:\n${all()}`);
    for (const slot of c.slots.slice(0, 2)) {
      for (const name of ["other.test", "example.test"]) {
        assert.deepEqual(
          await servedNames(slot.https, name),
          ["DNS:example.test", "DNS:other.test", "DNS:www.example.test"],
          `${slot.name} for ${name}`,
        );
      }
    }
  },
});

Deno.test({
  name: "acme cluster: the instance holding the order lock is killed; another completes the order",
  ignore,
  async fn() {
    await using redis = await startRedis(freePort());
    await using c = await cluster(redis.url, { lockTimeout: 3 });
    const [a, b, cc] = c.slots;
    // The CA holds every answer: the first instance takes the lock and cannot finish.
    c.pebble.signal("SIGSTOP");
    const holder = await c.start(a);
    await holder.waitFor("acme: holding the order lock", DEADLINE);
    await holder.stop("SIGKILL");
    // Taken out of HAProxy as a health check would, so that no validation waits on it.
    for (const backend of ["instances_http", "instances_https"]) {
      await c.haproxy.admin(`disable server ${backend}/a`);
    }
    c.pebble.signal("SIGCONT");
    const killed = performance.now();
    const servers = await Promise.all([b, cc].map((s) => c.start(s)));
    await Promise.all(servers.map((s) => s.waitFor(/ serving .* on https:/, DEADLINE)));
    console.log(`  lock holder killed; the others served a certificate ${seconds(killed)} later`);
    const all = servers.map((s) => s.output()).join("\n");
    assert.ok(!OBTAINED.test(holder.output()), "the killed instance obtained nothing");
    assert.equal(count(all, OBTAINED), 1, `one of the others completed the order:\n${all}`);
    const [fb, fc] = await fingerprints([b, cc]);
    assert.equal(fb, fc);
  },
});

Deno.test({
  name:
    "acme cluster: Redis down keeps the certificate in service, one line per retry, reconnects; a restarted Redis lost nothing",
  ignore,
  async fn() {
    await using data = await tempDir();
    const port = freePort();
    let redis = await startRedis(port, { persistIn: data.path });
    try {
      // HAProxy sends the CA to the first instance only: the second starts after the order.
      await using c = await cluster(redis.url, { pollInterval: 1, behind: 1 });
      const [a, b] = c.slots;
      const one = await c.start(a);
      await one.waitFor(/ serving .* on https:/, DEADLINE);
      const served = await servedFingerprint(a.https);
      const down = performance.now();
      await redis.stop();
      // Each look at the storage fails once per attempt, with a growing wait.
      await one.waitFor(
        /Redis unreachable .*attempt 2, keeping the certificate valid until/,
        DEADLINE,
      );
      const lines = one.output().split("\n").filter((l) => l.includes("Redis unreachable"));
      assert.match(lines[0], /attempt 1, .*next try in 1 s\)$/);
      assert.match(lines[1], /attempt 2, .*next try in 2 s\)$/);
      assert.equal(lines.length, 2, "one line per attempt");
      assert.equal(await servedFingerprint(a.https), served, "still serving its certificate");
      const page = await curl(["-k", `https://127.0.0.1:${a.https}/`]);
      assert.equal(page.stdout, "instance a", "and answering");
      redis = await startRedis(port, { persistIn: data.path });
      await one.waitFor(/acme: redis:\/\/\S+ reachable again after \d+ failed attempts/, DEADLINE);
      console.log(`  Redis down and back: reconnected ${seconds(down)} after it stopped`);
      // A new instance finds the certificate in the restarted Redis: nothing was lost.
      const two = await c.start(b);
      await two.waitFor(/ serving .* on https:/, DEADLINE);
      assert.match(two.output(), /acme: using stored certificate/);
      assert.ok(!ORDERED.test(two.output()), "no second order");
      assert.equal(await servedFingerprint(b.https), served);
      assert.equal(count(c.pebble.output(), ISSUED), 1);
    } finally {
      await redis.stop();
    }
  },
});

Deno.test({
  name:
    "acme cluster: a start with no certificate and Redis down waits and says why, then orders once Redis is there",
  ignore,
  async fn() {
    const port = freePort();
    await using c = await cluster(`redis://127.0.0.1:${port}/0`, { behind: 1 });
    const one = await c.start(c.slots[0]);
    await one.waitFor(/Redis unreachable .*attempt 1, no certificate yet/, DEADLINE);
    await one.waitFor("waiting for the first certificate", DEADLINE);
    await using _redis = await startRedis(port);
    await one.waitFor(/ serving .* on https:/, DEADLINE);
    assert.equal(count(one.output(), OBTAINED), 1);
  },
});

Deno.test("acme cluster: a bad Redis URL or a missing storage_key is a configuration error naming the key", async () => {
  await using dir = await tempDir();
  const cases: [string, string, RegExp][] = [
    [
      "storage: redis://127.0.0.1:6379/0",
      "",
      /ssl\.acme\.storage_key.*is required with Redis storage/,
    ],
    [
      "storage: redis://127.0.0.1:6379/x",
      "    storage_key: 0123456789abcdef\n",
      /ssl\.acme\.storage.*must be a folder or redis:\/\/host:port\/db/,
    ],
    [
      "storage: http://127.0.0.1:6379/0",
      "    storage_key: 0123456789abcdef\n",
      /ssl\.acme\.storage.*must be a folder or redis:\/\//,
    ],
    [
      "storage: redis://127.0.0.1:6379/0",
      "    storage_key: short\n",
      /ssl\.acme\.storage_key.*at least 16 characters/,
    ],
  ];
  for (const [storage, key, expected] of cases) {
    await Deno.writeTextFile(
      `${dir.path}/config.yaml`,
      `ssl:\n  enabled: true\n  acme:\n    email: a@example.com\n    domains: [example.test]\n    ${storage}\n${key}`,
    );
    for (const args of [["--test", "configuration"], []]) {
      const r = await runCli(["-c", `${dir.path}/config.yaml`, ...args]);
      assert.equal(r.code, 2, `${storage} ${key} ${args}: ${r.stdout}${r.stderr}`);
      assert.match(r.stdout + r.stderr, expected);
    }
  }
  // workers > 1 cannot share a certificate that lives in the main thread's memory.
  await Deno.writeTextFile(
    `${dir.path}/config.yaml`,
    "server:\n  workers: 2\nssl:\n  enabled: true\n  acme:\n    email: a@example.com\n" +
      "    domains: [example.test]\n    storage: redis://127.0.0.1:6379/0\n" +
      "    storage_key: ${KEY}\n",
  );
  const r = await runCli(["-c", `${dir.path}/config.yaml`, "--test", "configuration"], {
    env: { KEY: "0123456789abcdef0123" },
  });
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(r.stdout + r.stderr, /server\.workers: must be 1 with ssl\.acme\.storage/);
  // A folder stays a folder, resolved against the config file.
  const { config } = validate({
    ssl: {
      acme: {
        email: "a@example.com",
        domains: ["x.test"],
        storage: "redis://r:1/2",
        storage_key: "k".repeat(16),
      },
    },
  });
  assert.equal(config.ssl.acme?.storage, "redis://r:1/2");
  assert.equal(config.ssl.cert_file, undefined, "no files with Redis storage");
});

Deno.test("acme cluster: sealed keys open only with the same storage_key and name", async () => {
  const a = await createSealer("a secret of sixteen+ characters");
  const b = await createSealer("another secret, just as long");
  const sealed = await a.seal("cert:key", "-----BEGIN PRIVATE KEY-----\nxyz\n");
  assert.ok(!sealed.includes("PRIVATE KEY"));
  assert.notEqual(sealed, await a.seal("cert:key", "-----BEGIN PRIVATE KEY-----\nxyz\n"));
  assert.equal(await a.open("cert:key", sealed), "-----BEGIN PRIVATE KEY-----\nxyz\n");
  await assert.rejects(() => b.open("cert:key", sealed), SealError);
  await assert.rejects(() => a.open("account", sealed), SealError);
  const tampered = sealed.slice(0, -4) + (sealed.endsWith("AAAA") ? "BBBB" : "AAAA");
  await assert.rejects(() => a.open("cert:key", tampered), SealError);
});
