/**
 * `denoserve permissions`: the printed `deno run` line starts the server for each kind of
 * configuration (plain, HTTPS with files, the local CA, a proxy, Redis, ACME with pebble) and it
 * serves; without any one of its `--allow-*` flags the start fails with one line naming that flag.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { autheliaBackend, serveBackend } from "./support/backends.ts";
import { makeCerts } from "./support/certs.ts";
import { curl, runCli, spawnCli } from "./support/cli.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { HAVE_PEBBLE, startPebble } from "./support/pebble.ts";
import { REDIS_SERVER, startRedis } from "./support/redis.ts";
import { freePort } from "./support/servers.ts";

/** Shell words of `text` (single quotes and backslash-newlines as `sh` reads them). */
function words(text: string): string[] {
  const out: string[] = [];
  for (const m of text.replaceAll("\\\n", " ").matchAll(/'([^']*)'|(\S+)/g)) {
    out.push(m[1] ?? m[2]);
  }
  return out;
}

/** The printed line, split: the flags between `run` and main.ts, and the arguments after it. */
async function printed(args: string[], env: Record<string, string>) {
  const r = await runCli(["permissions", ...args], { env });
  assert.equal(r.code, 0, r.stderr);
  const argv = words(r.stdout.trim());
  assert.deepEqual(argv.slice(0, 2), ["deno", "run"], r.stdout);
  const main = argv.findIndex((w) => w.endsWith("main.ts"));
  return { flags: argv.slice(2, main), args: argv.slice(main + 1), text: r.stdout };
}

/**
 * Starts main.ts with exactly `flags`; resolves to the server, or to its one-line refusal when
 * it exits instead of serving.
 */
async function start(flags: string[], args: string[], env: Record<string, string>) {
  const server = await spawnCli(args, { env, permissions: flags, waitServing: false });
  const serving = / on (https?:\/\/\S+?)\/? /;
  const exited = server.process.status.then(() => "exited" as const);
  const listening = server.waitFor(serving, 60_000).then(() => "serving" as const);
  const how = await Promise.race([exited, listening.catch(() => "exited" as const)]);
  return { server, how };
}

interface Case {
  config: string;
  env?: Record<string, string>;
  /** Checks that the running server serves. */
  serves(url: string): Promise<void>;
  /** Without its `--allow-ffi` the server does not start (instead of starting slower). */
  needsFfi?: boolean;
}

/** Starts `c` with the printed flags, checks it serves, then takes out each flag in turn. */
async function check(dir: string, c: Case) {
  await Deno.writeTextFile(`${dir}/config.yaml`, c.config);
  const env = c.env ?? {};
  const line = await printed(["-c", `${dir}/config.yaml`], env);
  {
    const { server, how } = await start(line.flags, line.args, env);
    await using _ = server;
    assert.equal(how, "serving", `${line.text}\n${server.output()}`);
    await c.serves(server.url);
    assert.doesNotMatch(server.output(), /permission|WARNING/i, server.output());
  }
  const allows = line.flags.filter((f) => f.startsWith("--allow-"));
  assert.ok(allows.some((f) => f.startsWith("--allow-net")), line.text);
  for (const flag of allows) {
    const [kind, values = ""] = flag.replace(/^--allow-/, "").split("=");
    const { server, how } = await start(line.flags.filter((f) => f !== flag), line.args, env);
    await using _ = server;
    if (kind === "ffi" && !c.needsFfi) {
      // libc for TCP_NODELAY and the handshake timeout: without it the server runs slower and says
      // so in one warning naming the flag.
      assert.equal(how, "serving");
      await server.waitFor(flag);
      continue;
    }
    assert.equal(how, "exited", `still serving without ${flag}:\n${server.output()}`);
    // Lines logged before the refusal (the proxy rules) may come first; the refusal is one line.
    const lines = server.output().split("\n").filter((l) => l.startsWith("denoserve: "));
    assert.equal(lines.length, 1, `without ${flag}, expected one line:\n${server.output()}`);
    assert.doesNotMatch(server.output(), /^\s+at /m);
    const named = new RegExp(`--allow-${kind}(=(\\S+))?`).exec(lines[0]);
    assert.ok(named, `without ${flag}: ${lines[0]}`);
    // The flag it names asks for something the removed flag granted.
    const asked = (named[2] ?? "").split(",")[0];
    const granted = values.split(",");
    assert.ok(
      asked === "" || values === "" || granted.some((g) =>
        asked === g || asked.startsWith(`${g}/`) ||
        (g.endsWith("*") && asked.startsWith(g.slice(0, -1)))
      ) ||
        (kind === "net" && granted.includes(asked.replace(/:\d+$/, ""))),
      `without ${flag}: ${lines[0]}`,
    );
    assert.notEqual(
      await server.process.status.then((s) =>
        s.code
      ),
      0,
    );
  }
}

const site = async () => {
  const dir = await tempDir();
  await writeFiles(dir.path, { "static/index.html": "served with the printed permissions" });
  return dir;
};

const servesHome = async (url: string, extra: string[] = []) => {
  const r = await curl([...extra, `${url}/`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "served with the printed permissions");
};

Deno.test("permissions: plain HTTP", async () => {
  await using dir = await site();
  await check(dir.path, {
    config: "server:\n  host: 127.0.0.1\n  port: 0\n",
    serves: (url) => servesHome(url),
  });
});

Deno.test("permissions: HTTPS with certificate files, a log file and a ${VAR}", async () => {
  await using dir = await site();
  const certs = await makeCerts(dir.path);
  await check(dir.path, {
    config: `server:\n  host: 127.0.0.1\n  port: 0\nssl:\n  enabled: true\n` +
      `  cert_file: ${certs.cert}\n  key_file: ${certs.key}\n` +
      "logging:\n  level: ${LEVEL_OF_LOG}\n  log_file: ./logs/denoserve.log\n",
    env: { LEVEL_OF_LOG: "INFO" },
    serves: (url) => servesHome(url.replace("127.0.0.1", "localhost"), ["--cacert", certs.ca]),
  });
});

Deno.test("permissions: HTTPS behind the PROXY protocol needs its own address and libc, no loopback port", async () => {
  await using dir = await site();
  const certs = await makeCerts(dir.path);
  await check(dir.path, {
    // A port of its own: `--allow-net=127.0.0.1:0` would grant every loopback port.
    config: `server:\n  host: 127.0.0.1\n  port: ${freePort()}\n  proxy_protocol: true\nssl:\n` +
      `  enabled: true\n  cert_file: ${certs.cert}\n  key_file: ${certs.key}\n`,
    serves: (url) =>
      servesHome(url.replace("127.0.0.1", "localhost"), [
        "--cacert",
        certs.ca,
        "--haproxy-protocol",
      ]),
    needsFfi: true,
  });
});

Deno.test("permissions: several sites: each site's folder and certificate files", async () => {
  await using dir = await site();
  await writeFiles(dir.path, { "a/index.html": "site a" });
  const main = await makeCerts(dir.path, { name: "main", names: ["localhost"] });
  const a = await makeCerts(dir.path, { name: "a", names: ["a.test"] });
  await check(dir.path, {
    config: `server:\n  host: 127.0.0.1\n  port: 0\nssl:\n  enabled: true\n` +
      `  cert_file: ${main.cert}\n  key_file: ${main.key}\n` +
      `sites:\n  - names: [a.test]\n    http: { static_dir: ./a }\n` +
      `    ssl: { cert_file: ${a.cert}, key_file: ${a.key} }\n`,
    serves: async (url) => {
      await servesHome(url.replace("127.0.0.1", "localhost"), ["--cacert", main.ca]);
      const port = new URL(url).port;
      const r = await curl([
        "--cacert",
        a.ca,
        "--resolve",
        `a.test:${port}:127.0.0.1`,
        `https://a.test:${port}/`,
      ]);
      assert.equal(r.stdout, "site a", r.stderr);
    },
  });
});

Deno.test("permissions: HTTPS from the local CA", async () => {
  await using dir = await site();
  await check(dir.path, {
    config: "server:\n  host: 127.0.0.1\n  port: 0\nssl:\n  enabled: true\n",
    env: { DENOSERVE_CA_DIR: `${dir.path}/ca` },
    serves: (url) => servesHome(url, ["--cacert", `${dir.path}/ca/root.pem`]),
  });
});

Deno.test("permissions: HTTPS from the local CA on 0.0.0.0 (the LAN names need --allow-sys)", async () => {
  await using dir = await site();
  await check(dir.path, {
    config: "server:\n  host: 0.0.0.0\n  port: 0\nssl:\n  enabled: true\n",
    env: { DENOSERVE_CA_DIR: `${dir.path}/ca` },
    async serves(url) {
      const port = new URL(url).port;
      await servesHome(`https://localhost:${port}`, ["--cacert", `${dir.path}/ca/root.pem`]);
    },
  });
  const line = await printed(["-c", `${dir.path}/config.yaml`], {});
  assert.ok(line.flags.includes("--allow-sys=hostname,networkInterfaces"), line.text);
});

Deno.test("permissions: a reverse proxy", async () => {
  await using dir = await site();
  await using backend = serveBackend(() => new Response("from the backend"));
  await check(dir.path, {
    config: `server:\n  host: 127.0.0.1\n  port: 0\n  reverse_proxy:\n` +
      `    - path: /api\n      host: 127.0.0.1\n      port: ${backend.port}\n`,
    async serves(url) {
      await servesHome(url);
      const r = await curl([`${url}/api/x`]);
      assert.equal(r.stdout, "from the backend");
    },
  });
});

Deno.test("permissions: basic auth from an htpasswd file, and an auth service", async () => {
  await using dir = await site();
  await using authelia = autheliaBackend({ good: { user: "ana" } });
  const sha1 = createHash("sha1").update("secret").digest("base64");
  await Deno.writeTextFile(`${dir.path}/users.htpasswd`, `ana:{SHA}${sha1}\n`);
  await check(dir.path, {
    config: `server:\n  host: 127.0.0.1\n  port: 0\n  locations:\n` +
      `    /private:\n      auth:\n        type: basic\n        htpasswd_file: ./users.htpasswd\n` +
      `    /:\n      forward_auth:\n        url: ${authelia.url}/api/authz/forward-auth\n`,
    async serves(url) {
      await servesHome(url, ["-H", "Cookie: authelia_session=good"]);
      const r = await curl(["-o", "/dev/null", "-w", "%{http_code}", `${url}/`]);
      assert.equal(r.stdout, "302");
    },
  });
});

Deno.test({
  name: "permissions: caching and rate limiting in Redis",
  ignore: !REDIS_SERVER,
  async fn() {
    await using dir = await site();
    await using redis = await startRedis(freePort());
    await using backend = serveBackend(() => new Response("cached"));
    await check(dir.path, {
      config: `version: 2\nserver:\n  host: 127.0.0.1\n  port: 0\n  reverse_proxy:\n` +
        `    - path: /api\n      host: 127.0.0.1\n      port: ${backend.port}\n` +
        `extensions:\n  - type: caching\n    config:\n      backend: redis\n      url: ${redis.url}\n` +
        `  - type: security\n    config:\n      rate_limiting:\n        backend: redis\n` +
        `        url: ${redis.url}\n`,
      async serves(url) {
        await servesHome(url);
        const r = await curl([`${url}/api/x`]);
        assert.equal(r.stdout, "cached");
      },
    });
  },
});

Deno.test({
  name: "permissions: ACME with pebble",
  ignore: !HAVE_PEBBLE,
  async fn() {
    await using dir = await site();
    await using pebble = await startPebble();
    await check(dir.path, {
      config: `server:\n  host: 127.0.0.1\n  port: 0\nssl:\n  enabled: true\n` +
        `  acme:\n    email: admin@example.com\n    domains: [example.test]\n` +
        `    directory_url: ${pebble.directoryUrl}\n    ca_file: ${pebble.caFile}\n` +
        `    storage: ./acme\n    http_port: ${pebble.httpPort}\n`,
      env: { DENOSERVE_CA_DIR: `${dir.path}/ca` },
      async serves(url) {
        // The certificate is ACME's: no local CA is made beside it.
        assert.equal(await Deno.stat(`${dir.path}/ca`).then(() => true, () => false), false);
        const port = new URL(url).port;
        await servesHome(`https://example.test:${port}`, [
          "-k",
          "--resolve",
          `example.test:${port}:127.0.0.1`,
        ]);
      },
    });
  },
});

Deno.test("permissions --systemd: a unit running the same line, writable only where it writes", async () => {
  await using dir = await site();
  await Deno.writeTextFile(
    `${dir.path}/config.yaml`,
    "server:\n  port: 0\nlogging:\n  log_file: ./logs/denoserve.log\n",
  );
  const line = await printed(["-c", `${dir.path}/config.yaml`], {});
  const r = await runCli(["permissions", "-c", `${dir.path}/config.yaml`, "--systemd"]);
  assert.equal(r.code, 0, r.stderr);
  const exec = /^ExecStart=(.*)$/m.exec(r.stdout)?.[1] ?? "";
  const argv = words(exec);
  assert.equal(argv[0], Deno.execPath());
  for (const flag of line.flags) assert.ok(argv.includes(flag), `${flag} in ${exec}`);
  assert.equal(
    argv.filter((a) => a.startsWith("--allow-")).length,
    line.flags.filter((f) => f.startsWith("--allow-")).length,
  );
  assert.match(r.stdout, /^ProtectSystem=strict$/m);
  assert.match(r.stdout, new RegExp(`^ReadWritePaths=${dir.path}/logs$`, "m"));
  assert.match(r.stdout, /^NoNewPrivileges=true$/m);
  // The configuration lives under /tmp here: a private /tmp would hide it.
  assert.match(r.stdout, /^PrivateTmp=false$/m);
  const analyze = await new Deno.Command("systemd-analyze", { args: ["--version"] }).output()
    .then((o) => o.success, () => false);
  if (!analyze) {
    console.log("systemd-analyze verify of the printed unit skipped: no systemd-analyze");
    return;
  }
  await Deno.mkdir(`${dir.path}/logs`);
  await Deno.writeTextFile(`${dir.path}/denoserve.service`, r.stdout);
  const verify = await new Deno.Command("systemd-analyze", {
    args: ["verify", `${dir.path}/denoserve.service`],
    env: { SYSTEMD_LOG_COLOR: "0" },
  }).output();
  const dec = new TextDecoder();
  assert.equal((dec.decode(verify.stdout) + dec.decode(verify.stderr)).trim(), "");
  assert.equal(verify.code, 0);
});
