/**
 * `--test configuration` is a start without listening: for every configuration of README (each
 * ```yaml block), the shipped config.yaml and one configuration per kind of warning the tests
 * meet, it prints exactly the warnings a start of the same file logs (or prints beside the
 * reasons it refuses to start), no more and no fewer.
 *
 * Each configuration is made safe to start here first: its listen address becomes 127.0.0.1 on a
 * free port, other hosts become 127.0.0.1, the ACME directory a closed loopback port, Redis a
 * throwaway redis-server, and its certificate files exist (a fresh test certificate).
 */
import assert from "node:assert/strict";
import { parse, stringify } from "yaml";
import { makeCerts } from "./support/certs.ts";
import { MAIN, runCli } from "./support/cli.ts";
import { ROOT, tempDir, writeFiles } from "./support/files.ts";
import { REDIS_SERVER, type RedisServer, startRedis } from "./support/redis.ts";
import { freePort } from "./support/servers.ts";

const ENV = {
  ADMIN_PASS: "admin-password",
  CSRF_SECRET: "a-csrf-secret-of-32-characters!!",
  DENOSERVE_ACME_KEY: "an-acme-storage-key-of-32-chars!",
};

/** A configuration to try, and the warnings it must give (at least), when the test knows them. */
interface Case {
  name: string;
  yaml: string;
  /** Warnings (substrings) that must be among those printed, so that equal is not "both none". */
  expect?: string[];
  /** Prepares the folder beside the written config.yaml. */
  setup?: (dir: string) => Promise<void>;
}

/** The ```yaml blocks of README.md, named by their line. */
function readmeCases(): Case[] {
  const text = Deno.readTextFileSync(`${ROOT}/README.md`);
  const cases: Case[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== "```yaml") continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && lines[end].trim() !== "```") end++;
    cases.push({ name: `README.md:${start}`, yaml: lines.slice(start, end).join("\n") });
    i = end;
  }
  return cases;
}

const dead = freePort();
const CASES: Case[] = [
  ...readmeCases(),
  { name: "config.yaml (shipped)", yaml: Deno.readTextFileSync(`${ROOT}/config.yaml`) },
  {
    // The configuration of the issue that made --test and a start agree.
    name: "ssl keys and a plain password while HTTPS is off",
    yaml: `server:
  locations:
    /admin:
      auth: { type: basic, username: admin, password: secret }
ssl:
  enabled: false
  hsts: "max-age=60"
  redirect_http: 8080
  http3: true
`,
    expect: [
      "server.locations./admin.auth has a plain password and ssl is off",
      "ssl.hsts is ignored while ssl.enabled is false",
      "ssl.redirect_http is ignored while ssl.enabled is false",
      "ssl.http3 is ignored while ssl.enabled is false",
    ],
  },
  {
    name: "unknown and repeated keys, proxy rules",
    yaml: `server:
  prot: 8080
  reverse_proxy:
    - path: /a
      host: 127.0.0.1
      port: ${dead}
    - path: /a
      host: 127.0.0.1
      port: ${dead}
    - path: /tls
      host: 127.0.0.1
      port: ${dead}
      ssl: true
      insecure_skip_verify: true
http:
  static_dir: ./static
  static_dir: ./site
`,
    expect: [
      "server.prot",
      "is also server.reverse_proxy[0].path; only the first is used",
      "insecure_skip_verify is on",
      `backend 127.0.0.1:${dead} for /a is not reachable now`,
      "does not exist; serving a welcome page at /",
    ],
  },
  {
    name: "extensions without version 2, health check names denoserve lacks",
    yaml: `extensions:
  - type: monitoring
    config:
      health_checks:
        - path: /health
          checks: [database]
`,
    expect: ['extensions without "version: 2"'],
  },
  {
    name: "a certificate about to expire, its key readable by others",
    yaml: `ssl:
  enabled: true
  cert_file: ./ssl/cert.pem
  key_file: ./ssl/key.pem
`,
    expect: ["expires on", "renew it soon", "readable by"],
    async setup(dir) {
      await writeCerts(dir, new Date(Date.now() + 3 * 86400_000));
      await Deno.chmod(`${dir}/ssl/key.pem`, 0o644);
    },
  },
];

/** A test certificate as ./ssl/cert.pem and ./ssl/key.pem. */
async function writeCerts(dir: string, notAfter?: Date) {
  await Deno.mkdir(`${dir}/ssl`, { recursive: true });
  const certs = await makeCerts(`${dir}/ssl`, { notAfter });
  await Deno.rename(certs.cert, `${dir}/ssl/cert.pem`);
  await Deno.rename(certs.key, `${dir}/ssl/key.pem`);
}

type Raw = Record<string, Record<string, unknown>>;

/**
 * `yaml` made safe to start on this machine (see the module comment); the listen address is
 * given by flags. Rewritten through the YAML library only where the ports of `ssl` must change,
 * so that the text (its repeated keys, its lines) stays as written elsewhere.
 */
function sandboxed(yaml: string, redis: string | undefined): string {
  let text = yaml.replace(/10\.0\.0\.\d+/g, "127.0.0.1").replace(/app\.internal/g, "127.0.0.1")
    .replace(/\/var\/log\/denoserve\//g, "./logs/");
  if (redis) text = text.replace(/redis:\/\/127\.0\.0\.1:6379\/0/g, redis);
  if (!/redirect_http|acme:/.test(text)) return text;
  const raw = (parse(text) ?? {}) as Raw;
  const ssl = raw.ssl as Raw[string] | undefined;
  if (typeof ssl?.redirect_http === "number" && ssl.redirect_http !== 0) {
    ssl.redirect_http = freePort();
  }
  const acme = ssl?.acme as Record<string, unknown> | undefined;
  if (acme) {
    acme.directory_url = "https://127.0.0.1:1/directory";
    acme.http_port = freePort();
  }
  return stringify(raw);
}

/** The flags of both runs: the file, and a free port on 127.0.0.1. */
const flagsFor = (dir: string, port: number) => [
  "-c",
  `${dir}/config.yaml`,
  "-H",
  "127.0.0.1",
  "-p",
  String(port),
];

/** The warnings `--test configuration` prints (WARN lines), without the key in front. */
async function testWarnings(
  flags: string[],
  dir: string,
): Promise<{ warnings: string[]; out: string }> {
  const r = await runCli([...flags, "--test", "configuration"], { cwd: dir, env: ENV });
  const out = r.stdout + r.stderr;
  const warnings = r.stdout.split("\n").flatMap((l) => {
    const m = /^WARN [^ ]+: (.*)$/.exec(l);
    return m ? [m[1]] : [];
  });
  return { warnings, out };
}

/**
 * The warnings a start of the same file says before it serves, waits for its first certificate,
 * or gives up: WARNING lines of the log and "warning:" lines of a refusal.
 */
async function startWarnings(
  flags: string[],
  dir: string,
): Promise<{ warnings: string[]; out: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--unstable-net", "-A", MAIN, ...flags],
    cwd: dir,
    env: { NO_COLOR: "1", ...ENV },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  const started = Promise.withResolvers<void>();
  const settled = /\bserving .* on https?:|waiting for the first certificate/;
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      out += chunk;
      if (settled.test(out)) started.resolve();
    }
  };
  const pumping = Promise.all([pump(child.stdout), pump(child.stderr)]);
  await Promise.race([started.promise, child.status]);
  try {
    child.kill("SIGTERM");
  } catch { /* it ended by itself */ }
  await child.status;
  await pumping;
  // Up to the line that says it serves: what comes later is about traffic, not configuration.
  const until = out.search(settled);
  const warnings = (until < 0 ? out : out.slice(0, until)).split("\n").flatMap((l) => {
    const m = /^\S+ WARNING (.*)$/.exec(l) ?? /^denoserve: warning: (.*)$/.exec(l);
    return m ? [m[1]] : [];
  });
  return { warnings, out };
}

let redis: RedisServer | undefined;

for (const c of CASES) {
  Deno.test({
    name: `--test configuration warns as a start does: ${c.name}`,
    // The Redis blocks of README need a redis-server; the others do not.
    ignore: c.yaml.includes("redis://") && !REDIS_SERVER,
    sanitizeResources: false,
    async fn() {
      if (c.yaml.includes("redis://")) redis ??= await startRedis(freePort());
      await using dir = await tempDir();
      await writeCerts(dir.path);
      await c.setup?.(dir.path);
      await writeFiles(dir.path, { "config.yaml": sandboxed(c.yaml, redis?.url) });
      const flags = flagsFor(dir.path, freePort());
      const test = await testWarnings(flags, dir.path);
      const start = await startWarnings(flags, dir.path);
      const detail = `--test printed:\n${test.out}\na start printed:\n${start.out}`;
      assert.deepEqual(start.warnings.toSorted(), test.warnings.toSorted(), detail);
      for (const e of c.expect ?? []) {
        assert.ok(test.warnings.some((w) => w.includes(e)), `"${e}" missing\n${detail}`);
      }
    },
  });
}

Deno.test({
  name: "--test configuration warns as a start does: (stop the Redis server)",
  sanitizeResources: false,
  async fn() {
    await redis?.stop();
  },
});

if (!REDIS_SERVER) {
  console.log("redis-server is not installed: the README blocks with Redis are ignored");
}
