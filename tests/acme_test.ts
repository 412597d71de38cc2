/**
 * Automatic HTTPS against Debian's `pebble` (Let's Encrypt's test CA) and
 * `pebble-challtestsrv` (its DNS server), both started on loopback (support/pebble.ts).
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { validate } from "../src/config/load.ts";
import {
  type AcmeConfig,
  type AcmeManager,
  acmeManagerFor,
  createAcmeManager,
} from "../src/tls/acme/mod.ts";
import { AcmeError, explainAcmeError } from "../src/tls/acme/problems.ts";
import { type ChallengeListener, listenForChallenges } from "../src/server/challenge_listener.ts";
import { createRenewalScheduler } from "../src/tls/acme/renewal.ts";
import { servedFingerprint } from "./support/certs.ts";
import { curl, spawnCli } from "./support/cli.ts";
import { closedWithin, migrates } from "./support/clients.ts";
import { tempDir } from "./support/files.ts";
import { HAVE_PEBBLE, type Pebble, startPebble } from "./support/pebble.ts";
import { type CapturedLog, captureLogger, freePort, startTestServer } from "./support/servers.ts";

function acmeConfig(pebble: Pebble, storage: string, extra: Record<string, unknown> = {}) {
  const { config } = validate({
    ssl: {
      acme: {
        email: "admin@example.com",
        domains: ["example.test", "www.example.test"],
        directory_url: pebble.directoryUrl,
        ca_file: pebble.caFile,
        storage,
        http_port: pebble.httpPort,
        ...extra,
      },
    },
  });
  return config.ssl.acme as AcmeConfig;
}

interface Managed extends AsyncDisposable {
  manager: AcmeManager;
  /** The listener on `http_port` answering the CA, unless `listen: false` was asked. */
  port80?: ChallengeListener;
  log: CapturedLog;
  /** Certificates handed over, in order. */
  certs: { certPem: string; keyPem: string }[];
  /** Settles when `n` certificates have been handed over. */
  waitCerts(n: number, timeoutMs?: number): Promise<void>;
  /** Settles when an issuance attempt has failed. */
  waitError(timeoutMs?: number): Promise<AcmeError>;
}

function manage(
  acme: AcmeConfig,
  extra: { listen?: boolean; retryMinMs?: number; requestTimeoutMs?: number } = {},
): Managed {
  const log = captureLogger();
  const certs: { certPem: string; keyPem: string }[] = [];
  const { listen = true, ...options } = extra;
  const manager = createAcmeManager({
    acme,
    log,
    retryMinMs: 60_000,
    ...options,
    onCertificate: (certPem, keyPem) => void certs.push({ certPem, keyPem }),
  });
  // As a start does: the server's listener on http_port, the manager's handler mounted on it.
  const port80 = listen
    ? listenForChallenges({
      hostname: "127.0.0.1",
      port: acme.http_port,
      challenges: manager.handleChallenge,
    })
    : undefined;
  const until = async (ok: () => boolean, what: string, timeoutMs: number) => {
    const end = Date.now() + timeoutMs;
    while (!ok()) {
      if (Date.now() > end) {
        throw new Error(`timed out waiting for ${what}\n${log.lines.join("\n")}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  return {
    manager,
    port80,
    log,
    certs,
    waitCerts: (n, timeoutMs = 10_000) => until(() => certs.length >= n, `${n} certs`, timeoutMs),
    async waitError(timeoutMs = 10_000) {
      await until(() => manager.lastError !== undefined, "an error", timeoutMs);
      return manager.lastError!;
    },
    async [Symbol.asyncDispose]() {
      await manager.stop();
      await port80?.shutdown();
    },
  };
}

/** Serves `cert` over TLS and checks it with openssl against pebble's root for example.test. */
async function verifyChain(pebble: Pebble, cert: { certPem: string; keyPem: string }, dir: string) {
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(pebble.caFile)] });
  const root = await (await fetch(`${pebble.managementUrl}/roots/0`, { client })).text();
  client.close();
  await Deno.writeTextFile(`${dir}/root.pem`, root);
  const tls = Deno.serve(
    { hostname: "127.0.0.1", port: 0, cert: cert.certPem, key: cert.keyPem, onListen() {} },
    () => new Response("ok"),
  );
  try {
    const out = await new Deno.Command("openssl", {
      args: [
        "s_client",
        "-connect",
        `127.0.0.1:${tls.addr.port}`,
        "-servername",
        "www.example.test",
        "-CAfile",
        `${dir}/root.pem`,
        "-verify_return_error",
        "-verify_hostname",
        "www.example.test",
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.match(text, /Verify return code: 0 \(ok\)/, new TextDecoder().decode(out.stderr));
  } finally {
    await tls.shutdown();
  }
}

const names = (pem: string) =>
  (new X509Certificate(pem).subjectAltName ?? "").split(", ").map((s) => s.replace("DNS:", ""));
const mode = async (path: string) => (await Deno.stat(path)).mode! & 0o777;

Deno.test({
  name: "acme: first issuance through a real http-01 validation; a restart reuses the stored one",
  ignore: !HAVE_PEBBLE,
  async fn() {
    await using storage = await tempDir();
    await using site = await startTestServer({});
    let acme: AcmeConfig;
    let first: string;
    {
      await using pebble = await startPebble();
      // Kept beyond pebble's life: the restart below reads it too.
      await Deno.copyFile(pebble.caFile, `${storage.path}/ca.pem`);
      acme = { ...acmeConfig(pebble, `${storage.path}/acme`), ca_file: `${storage.path}/ca.pem` };
      await using m = manage(acme);
      const started = performance.now();
      await m.manager.start();
      // The server answers while the certificate is being ordered.
      const during = await fetch(site.url + "/");
      await during.body?.cancel();
      assert.equal(during.status, 200);
      await m.waitCerts(1);
      console.log(`first issuance: ${Math.round(performance.now() - started)} ms`);
      first = m.certs[0].certPem;
      assert.deepEqual(names(first).sort(), ["example.test", "www.example.test"]);
      assert.ok(m.log.lines.some((l) => l.includes("example.test validated (http-01)")));
      // pebble's VA really fetched the token from our listener.
      assert.ok(m.log.lines.some((l) => l.includes("http-01 request for token")));
      assert.match(pebble.output(), /Issued certificate serial/i);
      for (const f of ["account.key", "cert.pem", "key.pem", "cert.json"]) {
        assert.equal(await mode(`${acme.storage}/${f}`), 0o600, f);
      }
      assert.equal(await Deno.readTextFile(m.manager.certFile!), first);
      // The chain is complete: a TLS server with it verifies against pebble's root.
      await verifyChain(pebble, m.certs[0], storage.path);
      // Everything else on the challenge port is sent to HTTPS.
      const other = await fetch(`http://127.0.0.1:${pebble.httpPort}/a?b`, { redirect: "manual" });
      assert.equal(other.status, 308);
      assert.equal(other.headers.get("location"), "https://127.0.0.1/a?b");
      assert.ok(m.manager.nextAttempt! > Date.now() + 1000 * 86400, "renewal planned far ahead");
    }
    // pebble is gone: the restart must not need the CA at all.
    await using m = manage(acme);
    await m.manager.start();
    assert.equal(m.certs.length, 1, "stored certificate handed over during start()");
    assert.equal(m.certs[0].certPem, first);
    assert.ok(!m.log.lines.some((l) => l.includes("requesting a certificate")));
    assert.ok(m.log.lines.some((l) => l.includes("using stored certificate")));
  },
});

Deno.test({
  name: "acme: renewal at two thirds of a short lifetime; the server keeps answering",
  ignore: !HAVE_PEBBLE,
  async fn() {
    await using storage = await tempDir();
    await using site = await startTestServer({});
    await using pebble = await startPebble({ validity: 6 });
    await using m = manage(acmeConfig(pebble, storage.path));
    await m.manager.start();
    await m.waitCerts(1);
    const a = new X509Certificate(m.certs[0].certPem);
    const renewAt = m.manager.nextAttempt!;
    const life = Date.parse(a.validTo) - Date.parse(a.validFrom);
    assert.ok(
      Math.abs(renewAt - (Date.parse(a.validFrom) + life * 2 / 3)) < 5,
      "renewal planned at two thirds of the lifetime",
    );
    let requests = 0, failures = 0;
    let going = true;
    const loop = (async () => {
      while (going) {
        try {
          const r = await fetch(site.url + "/");
          await r.body?.cancel();
          if (r.status !== 200) failures++;
        } catch {
          failures++;
        }
        requests++;
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await m.waitCerts(2, 15_000);
    going = false;
    await loop;
    const b = new X509Certificate(m.certs[1].certPem);
    assert.notEqual(a.serialNumber, b.serialNumber);
    assert.ok(Date.now() >= renewAt, "renewed no earlier than planned");
    assert.ok(Date.now() < Date.parse(a.validTo) + 1000, "renewed before the old one expired");
    assert.equal(await Deno.readTextFile(m.manager.certFile!), m.certs[1].certPem);
    assert.notEqual(m.certs[1].keyPem, m.certs[0].keyPem, "a new key with each certificate");
    console.log(`renewal: ${requests} requests during it, ${failures} failed`);
    assert.equal(failures, 0);
  },
});

Deno.test({
  name:
    "acme: a stored certificate past two thirds is served at once and renewed; an expired one is not served",
  ignore: !HAVE_PEBBLE,
  async fn() {
    await using storage = await tempDir();
    await using pebble = await startPebble({ validity: 3 });
    const acme = acmeConfig(pebble, storage.path);
    let stored: X509Certificate;
    {
      await using m = manage(acme);
      await m.manager.start();
      await m.waitCerts(1);
      stored = new X509Certificate(m.certs[0].certPem);
    }
    const from = Date.parse(stored.validFrom), to = Date.parse(stored.validTo);
    // Past the renewal time, still valid: restart serves it, then replaces it.
    await new Promise((r) =>
      setTimeout(r, Math.max(0, from + (to - from) * 2 / 3 - Date.now() + 50))
    );
    assert.ok(Date.now() < to);
    {
      await using m = manage(acme);
      await m.manager.start();
      assert.equal(new X509Certificate(m.certs[0].certPem).serialNumber, stored.serialNumber);
      await m.waitCerts(2);
      stored = new X509Certificate(m.certs[1].certPem);
    }
    // Expired: restart hands nothing over until a new one is issued.
    await new Promise((r) =>
      setTimeout(r, Math.max(0, Date.parse(stored.validTo) - Date.now() + 50))
    );
    await using m = manage(acme);
    await m.manager.start();
    assert.equal(m.certs.length, 0);
    await m.waitCerts(1);
    assert.notEqual(new X509Certificate(m.certs[0].certPem).serialNumber, stored.serialNumber);
  },
});

Deno.test({
  name: "acme: PEBBLE_VA_ALWAYS_VALID issues without a reachable responder",
  ignore: !HAVE_PEBBLE,
  async fn() {
    await using storage = await tempDir();
    await using pebble = await startPebble({ alwaysValid: true });
    await using m = manage(acmeConfig(pebble, storage.path), { listen: false });
    await m.manager.start();
    await m.waitCerts(1);
    assert.equal(m.port80, undefined);
  },
});

Deno.test({
  name: "acme: unreachable directory is one clear line and is retried with back-off",
  async fn() {
    await using storage = await tempDir();
    const port = freePort();
    const { config } = validate({
      ssl: {
        acme: {
          email: "admin@example.com",
          domains: ["example.test"],
          directory_url: `https://127.0.0.1:${port}/dir`,
          storage: storage.path,
          http_port: 0,
        },
      },
    });
    await using m = manage(config.ssl.acme as AcmeConfig, { retryMinMs: 200 });
    await m.manager.start();
    const e = await m.waitError();
    console.log(`  ${e.kind}: ${e.message}`);
    assert.equal(e.kind, "directory");
    assert.match(e.message, new RegExp(`ACME directory https://127.0.0.1:${port}/dir unreachable`));
    assert.match(e.message, /ssl\.acme\.directory_url/);
    const line = m.log.lines.find((l) => l.startsWith("ERROR acme:"))!;
    assert.ok(!line.includes("\n"), "one line");
    assert.match(line, /attempt 1, no certificate yet, next try in 0 s/);
    assert.ok(m.manager.nextAttempt! > Date.now() - 50, "a retry is planned");
    assert.equal(m.certs.length, 0);
  },
});

Deno.test({
  name: "acme: a CA whose certificate is not trusted (no ca_file) is reported as unreachable",
  ignore: !HAVE_PEBBLE,
  async fn() {
    await using storage = await tempDir();
    await using pebble = await startPebble();
    const acme = { ...acmeConfig(pebble, storage.path), ca_file: undefined };
    await using m = manage(acme);
    await m.manager.start();
    const e = await m.waitError();
    console.log(`  ${e.kind}: ${e.message}`);
    assert.equal(e.kind, "directory");
    assert.match(e.message, /ssl\.acme\.ca_file/);
  },
});

Deno.test({
  name: "acme: a rejected challenge reports the CA's reason and keeps no certificate",
  ignore: !HAVE_PEBBLE,
  async fn() {
    await using storage = await tempDir();
    await using pebble = await startPebble();
    // Another program holds the port the CA validates on and knows nothing of our tokens.
    const other = Deno.serve(
      { hostname: "127.0.0.1", port: pebble.httpPort, onListen() {} },
      () => new Response("not the key authorization", { status: 200 }),
    );
    try {
      await using m = manage(acmeConfig(pebble, storage.path), { listen: false });
      await m.manager.start();
      const e = await m.waitError();
      console.log(`  ${e.kind}: ${e.message}`);
      assert.equal(e.kind, "challenge");
      assert.match(e.message, /ACME validation of (www\.)?example\.test rejected by the CA/);
      assert.match(e.message, /unauthorized|key authorization/i, "the CA's own reason");
      assert.equal(m.certs.length, 0);
    } finally {
      await other.shutdown();
    }
  },
});

Deno.test({
  name: "acme: a domain that does not point here is named with the fix",
  ignore: !HAVE_PEBBLE,
  async fn() {
    await using storage = await tempDir();
    // Every name resolves to 127.0.0.2, where nothing listens on the validation port.
    await using pebble = await startPebble({ address: "127.0.0.2" });
    await using m = manage(acmeConfig(pebble, storage.path));
    await m.manager.start();
    const e = await m.waitError();
    console.log(`  ${e.kind}: ${e.message}`);
    assert.equal(e.kind, "dns");
    assert.match(e.message, /make (www\.)?example\.test point to this server/);
    assert.match(e.message, /connection refused/i);
  },
});

Deno.test({
  name: "acme: a rate limit from the CA is one line and waits the CA's Retry-After",
  ignore: !HAVE_PEBBLE,
  async fn() {
    await using storage = await tempDir();
    await using pebble = await startPebble();
    // pebble 2.4 has no rate limits: a front server passes the directory through with newOrder
    // pointing to itself, and answers that with Let's Encrypt's problem document and a 429.
    const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(pebble.caFile)] });
    const front = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      if (new URL(req.url).pathname === "/dir") {
        const dir = await (await fetch(pebble.directoryUrl, { client })).json();
        dir.newOrder = `http://127.0.0.1:${front.addr.port}/new-order`;
        return Response.json(dir);
      }
      await req.body?.cancel();
      return Response.json({
        type: "urn:ietf:params:acme:error:rateLimited",
        detail: "too many certificates (5) already issued for this exact set of domains",
        status: 429,
      }, {
        status: 429,
        headers: { "content-type": "application/problem+json", "retry-after": "7200" },
      });
    });
    try {
      const acme = {
        ...acmeConfig(pebble, storage.path),
        directory_url: `http://127.0.0.1:${front.addr.port}/dir`,
      };
      await using m = manage(acme);
      await m.manager.start();
      const e = await m.waitError();
      console.log(`  ${e.kind}: ${e.message}`);
      assert.equal(e.kind, "rate-limit");
      assert.equal(e.retryAfter, 7200);
      assert.match(e.message, /too many certificates \(5\) already issued/);
      assert.ok(m.log.lines.some((l) => /next try in 7200 s/.test(l)), m.log.lines.join("\n"));
      assert.ok(m.manager.nextAttempt! >= Date.now() + 7_100_000);
    } finally {
      await front.shutdown();
      client.close();
    }
  },
});

Deno.test("acme: rate-limit answers are classified and Retry-After stretches the back-off", async () => {
  // A message without a problem type, as acme-client reports some errors.
  const e = explainAcmeError(
    new Error("Error creating new order :: too many certificates already issued"),
    "https://ca.example/dir",
  );
  assert.equal(e.kind, "rate-limit");
  assert.equal(e.retryAfter, 3600, "an unknown wait is taken as an hour");
  const delays: number[] = [];
  let calls = 0;
  const done = Promise.withResolvers<void>();
  const s = createRenewalScheduler({
    retryMinMs: 10,
    retryMaxMs: 40,
    run() {
      calls++;
      if (calls === 5) done.resolve();
      return Promise.reject(
        calls === 4 ? new AcmeError("rate-limit", "slow down", 0.1) : new Error("x"),
      );
    },
    onFailure: (_e, _n, delay) => void delays.push(delay),
  });
  s.at(Date.now());
  await done.promise;
  s.stop();
  assert.deepEqual(delays.slice(0, 4), [10, 20, 40, 100]);
});

Deno.test("acme: the challenge handler answers only its own path", async () => {
  const log = captureLogger();
  const m = createAcmeManager({
    acme: acmeConfigFor("x"),
    log,
    onCertificate() {},
  });
  assert.equal(m.handleChallenge(new Request("http://example.test/index.html")), null);
  const r = await m.handleChallenge(
    new Request("http://example.test/.well-known/acme-challenge/abc"),
  );
  assert.equal(r?.status, 404);
  const deeper = new Request("http://example.test/x/.well-known/acme-challenge/abc");
  assert.equal(m.handleChallenge(deeper), null);
});

Deno.test("acme: acmeManagerFor only with ssl.enabled and ssl.acme", () => {
  const log = captureLogger();
  const acme = { email: "a@example.com", domains: ["example.test"], storage: "/nonexistent" };
  const off = validate({ ssl: { acme } }).config;
  assert.equal(acmeManagerFor(off, log, () => {}), undefined);
  const on = validate({ ssl: { enabled: true, acme } }).config;
  assert.ok(acmeManagerFor(on, log, () => {}));
});

function acmeConfigFor(storage: string): AcmeConfig {
  const { config } = validate({
    ssl: { acme: { email: "a@example.com", domains: ["example.test"], storage } },
  });
  return config.ssl.acme as AcmeConfig;
}

/**
 * A site whose index.html says `text`, and a config.yaml that gets its certificate from `pebble`
 * (with `ssl.redirect_http` when `redirectHttp` is given).
 */
async function writeAcmeSite(dir: string, pebble: Pebble, text: string, redirectHttp?: number) {
  await Deno.writeTextFile(`${dir}/index.html`, text);
  await Deno.writeTextFile(
    `${dir}/config.yaml`,
    `server:\n  port: 0\nhttp:\n  static_dir: .\nssl:\n  enabled: true\n` +
      (redirectHttp === undefined ? "" : `  redirect_http: ${redirectHttp}\n`) +
      `  acme:\n    email: admin@example.com\n    domains: [example.test]\n` +
      `    directory_url: ${pebble.directoryUrl}\n    ca_file: ${pebble.caFile}\n` +
      `    storage: ./acme\n    http_port: ${pebble.httpPort}\n`,
  );
}

/** Writes pebble's issuing root to `path`, for clients that verify what the server got. */
async function writePebbleRoot(pebble: Pebble, path: string) {
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(pebble.caFile)] });
  try {
    await Deno.writeTextFile(
      path,
      await (await fetch(`${pebble.managementUrl}/roots/0`, { client })).text(),
    );
  } finally {
    client.close();
  }
}

/** Checks that `plain` (an http:// origin) answers with a redirect to the same path on `httpsPort`. */
async function assertRedirects(plain: string, httpsPort: string | number) {
  const r = await fetch(`${plain}/a/b?c=d`, { redirect: "manual" });
  await r.body?.cancel();
  assert.ok(r.status === 301 || r.status === 308, `${plain}: status ${r.status}`);
  assert.equal(r.headers.get("location"), `https://127.0.0.1:${httpsPort}/a/b?c=d`, plain);
}

/** Checks that `plain` answers http-01 requests itself: an unknown token is 404, not a redirect. */
async function assertAnswersChallenges(plain: string) {
  const r = await fetch(`${plain}/.well-known/acme-challenge/no-such-token`, {
    redirect: "manual",
  });
  assert.equal(r.status, 404, plain);
  assert.equal(await r.text(), "unknown challenge token\n", plain);
}

Deno.test({
  name: "acme: the CLI gets its first certificate, then serves HTTPS with it and keeps it",
  ignore: !HAVE_PEBBLE,
  async fn() {
    await using pebble = await startPebble();
    await using dir = await tempDir();
    await writeAcmeSite(dir.path, pebble, "automatic");
    await writePebbleRoot(pebble, `${dir.path}/root.pem`);
    for (const run of ["ordered", "stored"]) {
      await using server = await spawnCli(["-c", `${dir.path}/config.yaml`]);
      assert.match(server.url, /^https:/, run);
      if (run === "ordered") assert.match(server.output(), /waiting for the first certificate/);
      else assert.doesNotMatch(server.output(), /requesting a certificate/);
      const port = new URL(server.url).port;
      const out = await new Deno.Command("curl", {
        args: [
          "-sS",
          "--cacert",
          `${dir.path}/root.pem`,
          "--resolve",
          `example.test:${port}:127.0.0.1`,
          `https://example.test:${port}/index.html`,
        ],
      }).output();
      assert.equal(new TextDecoder().decode(out.stdout), "automatic", run);
      assert.equal(await server.stop(), 0);
    }
    assert.equal((await Deno.stat(`${dir.path}/acme/key.pem`)).mode! & 0o777, 0o600);
  },
});

Deno.test({
  name: "acme: the CLI renews a short-lived certificate and serves the new one, no failed request",
  ignore: !HAVE_PEBBLE,
  async fn() {
    await using pebble = await startPebble({ validity: 6 });
    await using dir = await tempDir();
    // Renewal goes through the listener that also redirects, as in production.
    await writeAcmeSite(dir.path, pebble, "renewed", pebble.httpPort);
    await using server = await spawnCli(["-c", `${dir.path}/config.yaml`]);
    const port = Number(new URL(server.url).port);
    const first = await servedFingerprint(port);
    let served = 0;
    // A new connection in the closing listener's queue is reset unless tcp_migrate_req is 1.
    let resets = 0;
    const failures: string[] = [];
    let fingerprint = first;
    const deadline = Date.now() + 20_000;
    while (fingerprint === first && Date.now() < deadline) {
      const r = await curl([
        "-k",
        "--resolve",
        `example.test:${port}:127.0.0.1`,
        `https://example.test:${port}/index.html`,
      ]);
      if (r.stdout === "renewed") served++;
      else if (!migrates && /reset by peer/.test(r.stderr)) resets++;
      else failures.push(r.stderr);
      try {
        fingerprint = await servedFingerprint(port);
      } catch (e) {
        if (migrates) throw e;
        resets++;
      }
    }
    assert.notEqual(fingerprint, first, `no renewal within 20 s:\n${server.output()}`);
    assert.deepEqual(failures, []);
    assert.ok(served > 0);
    assert.ok(resets <= 2, `${resets} connections reset`);
    await server.waitFor(/certificate reloaded/);
    const plain = `http://127.0.0.1:${pebble.httpPort}`;
    await assertRedirects(plain, port);
    await assertAnswersChallenges(plain);
  },
});

Deno.test({
  name:
    "acme: ssl.redirect_http on ssl.acme.http_port: one listener answers the CA and redirects the rest, through reloads",
  ignore: !HAVE_PEBBLE,
  async fn() {
    await using pebble = await startPebble();
    await using dir = await tempDir();
    // The production file: both on one port (80 there; pebble's validation port here).
    await writeAcmeSite(dir.path, pebble, "shared", pebble.httpPort);
    await writePebbleRoot(pebble, `${dir.path}/root.pem`);
    // pebble validates for real, through the listener on the shared port, before HTTPS opens.
    await using server = await spawnCli(["-c", `${dir.path}/config.yaml`]);
    assert.match(server.output(), /waiting for the first certificate/);
    assert.match(server.output(), /example\.test validated \(http-01\)/);
    const port = new URL(server.url).port;
    const out = await curl([
      "--cacert",
      `${dir.path}/root.pem`,
      "--resolve",
      `example.test:${port}:127.0.0.1`,
      `https://example.test:${port}/index.html`,
    ]);
    assert.equal(out.stdout, "shared", out.stderr);
    const shared = `http://127.0.0.1:${pebble.httpPort}`;
    await assertRedirects(shared, port);
    await assertAnswersChallenges(shared);

    // SIGHUP with redirect_http moved elsewhere, then back: each reload opens a new HTTPS
    // listener; the shared port keeps its one listener throughout.
    let reloads = 0;
    const reload = async (redirectHttp: number) => {
      await writeAcmeSite(dir.path, pebble, "shared", redirectHttp);
      server.process.kill("SIGHUP");
      reloads++;
      await server.waitFor(
        new RegExp(`(?:(?:reloaded configuration|reload failed)[^]*){${reloads}}`),
      );
      assert.doesNotMatch(server.output(), /reload failed|already in use|AddrInUse/);
      assert.equal(server.output().match(/\(new listeners\)/g)?.length, reloads);
    };
    const elsewhere = freePort();
    await reload(elsewhere);
    await assertRedirects(`http://127.0.0.1:${elsewhere}`, port);
    await assertRedirects(shared, port);
    await assertAnswersChallenges(shared);
    await reload(pebble.httpPort);
    await assertRedirects(shared, port);
    await assertAnswersChallenges(shared);
    assert.equal((await curl(["-k", `https://127.0.0.1:${port}/index.html`])).stdout, "shared");
    assert.equal(await server.stop(), 0);
  },
});

Deno.test("acme: a reload's timeouts reach the port-80 challenge listener", async () => {
  const listener = listenForChallenges({
    hostname: "127.0.0.1",
    port: 0,
    challenges: () => null,
    timeouts: { handshake: 0, header: 600_000, idle: 600_000, body: 600_000 },
  });
  // What `denoserve` does after a SIGHUP that lowered server.header_timeout: connections from
  // then on are timed by the new value.
  listener.retime({ handshake: 0, header: 1000, idle: 1000, body: 1000 }, 0);
  const slow = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  try {
    await slow.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: a\r\nX-a: "));
    assert.ok(await closedWithin(slow, 15_000), "closed by the new header timeout");
  } finally {
    slow.close();
    await listener.shutdown();
  }
});

Deno.test("acme: the port-80 challenge listener has the server's header timeout (a slowloris there is closed) and still answers and redirects", async () => {
  const listener = listenForChallenges({
    hostname: "127.0.0.1",
    port: 0,
    challenges: (r) =>
      new URL(r.url).pathname === "/.well-known/acme-challenge/t" ? new Response("key") : null,
    httpsPort: 8443,
    timeouts: { handshake: 0, header: 1000, idle: 1000, body: 1000 },
  });
  const port = listener.addr.port;
  const slow = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await slow.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: a\r\nX-a: "));
    using client = Deno.createHttpClient({});
    const challenge = await fetch(`http://127.0.0.1:${port}/.well-known/acme-challenge/t`, {
      client,
    });
    assert.equal(await challenge.text(), "key");
    const other = await fetch(`http://localhost:${port}/x`, { client, redirect: "manual" });
    await other.body?.cancel();
    assert.equal(other.status, 308);
    assert.equal(other.headers.get("location"), "https://localhost:8443/x");
    assert.ok(
      await closedWithin(slow, 15_000),
      "the half-sent head was closed by the header timeout",
    );
  } finally {
    slow.close();
    await listener.shutdown();
  }
});
