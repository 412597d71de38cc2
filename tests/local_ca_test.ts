/**
 * HTTPS on a developer's machine: `--ssl` without certificate files serves a leaf from the local
 * CA (kept in a throwaway `DENOSERVE_CA_DIR`), curl and Chromium accept it once the root is
 * trusted, the running server renews the leaf, and `trust`/`untrust` change a throwaway system
 * store (`DENOSERVE_TRUST_ROOT`) and NSS database (under a throwaway `HOME`).
 */
import assert from "node:assert/strict";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { parseChain } from "../src/tls/certs.ts";
import { curl, DENO_DIR, hasCommand, runCli, spawnCli } from "./support/cli.ts";
import { makeCerts } from "./support/certs.ts";
import { ROOT, tempDir, writeFiles } from "./support/files.ts";

const chromium = hasCommand("chromium") ?? hasCommand("chromium-browser");
const certutil = hasCommand("certutil");
const updateCa = hasCommand("update-ca-certificates");
if (!chromium || !certutil) {
  console.log(
    "local CA browser test ignored: needs chromium and certutil (apt-get install chromium " +
      "libnss3-tools; .ci/run does)",
  );
}
if (!updateCa) console.log("trust test ignored: no update-ca-certificates (ca-certificates)");

/** A site folder with a page, a config on port 0 (plus `extra` YAML), and a CA folder. */
async function site(extra = "") {
  const dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": `server:\n  host: 127.0.0.1\n  port: 0\n${extra}`,
    "static/index.html": "<title>denoserve</title><p id=mark>served over the local CA</p>",
  });
  return { dir, ca: `${dir.path}/ca`, env: { DENOSERVE_CA_DIR: `${dir.path}/ca` } };
}

const portOf = (url: string) => Number(new URL(url).port);

/** Polls `check` every 250 ms until it holds; fails naming `what` after `ms`. */
async function until(check: () => boolean | Promise<boolean>, what: string, ms: number) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The certificate a server at 127.0.0.1:`port` presents, read with openssl s_client. */
async function servedLeaf(port: number): Promise<X509Certificate> {
  const out = await new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "localhost"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(
    new TextDecoder().decode(out.stdout),
  );
  if (!pem) throw new Error(`no certificate from 127.0.0.1:${port}`);
  return new X509Certificate(pem[0]);
}

Deno.test("--ssl without --cert/--key: a local CA leaf that curl accepts over IPv4 and IPv6", async () => {
  const s = await site();
  await using _dir = s.dir;
  await using server = await spawnCli(
    ["-c", `${s.dir.path}/config.yaml`, "--ssl", "-H", "::"],
    { env: s.env },
  );
  assert.match(server.url, /^https:/);
  const port = portOf(server.url);
  const root = `${s.ca}/root.pem`;
  // The banner says where the root is and how to trust it, and lists every URL.
  await server.waitFor("denoserve trust");
  const out = server.output();
  assert.ok(out.includes(`local CA root: ${root}`), out);
  assert.match(
    out,
    new RegExp(`local: https://localhost:${port}/ +https://127\\.0\\.0\\.1:${port}/`),
  );
  assert.match(out, /network: https:\/\/\d+\.\d+\.\d+\.\d+:\d+\//);
  for (const host of ["localhost", "127.0.0.1", "[::1]"]) {
    const r = await curl(["--cacert", root, `https://${host}:${port}/`]);
    assert.equal(r.code, 0, `${host}: ${r.stderr}`);
    assert.match(r.stdout, /served over the local CA/);
  }
  // Without the root, curl refuses it: the certificate is the CA's, not one curl knows.
  const refused = await curl([`https://localhost:${port}/`]);
  assert.equal(refused.code, 60, refused.stderr);
  // The leaf names what the listener answers on; the root key is the user's alone.
  const leaf = await servedLeaf(port);
  assert.match(leaf.subjectAltName ?? "", /DNS:localhost/);
  assert.match(leaf.subjectAltName ?? "", /IP Address:127\.0\.0\.1/);
  assert.match(leaf.subjectAltName ?? "", /IP Address:(::1|0:0:0:0:0:0:0:1)(,|$)/);
  assert.match(leaf.issuer, /denoserve local CA \w+ intermediate/);
  assert.equal((await Deno.stat(`${s.ca}/root-key.pem`)).mode! & 0o777, 0o600);
  assert.equal((await Deno.stat(s.ca)).mode! & 0o077, 0);
  assert.doesNotMatch(out, /WARNING/);
});

Deno.test("the root and intermediate are made once; a second start reuses them", async () => {
  const s = await site();
  await using _dir = s.dir;
  const start = async () => {
    await using server = await spawnCli(["-c", `${s.dir.path}/config.yaml`, "--ssl"], {
      env: s.env,
    });
    return await servedLeaf(portOf(server.url));
  };
  const first = await start();
  const rootBefore = await Deno.readTextFile(`${s.ca}/root.pem`);
  const second = await start();
  assert.equal(await Deno.readTextFile(`${s.ca}/root.pem`), rootBefore);
  // The leaf in its files is still current, so it is served again.
  assert.equal(second.fingerprint256, first.fingerprint256);
});

Deno.test("a leaf near its end is renewed while the server runs and served without a restart", async () => {
  // ssl.leaf_lifetime: a new leaf two thirds into each one's life (here after about 20 s).
  const s = await site("ssl:\n  enabled: true\n  leaf_lifetime: 30\n");
  await using _dir = s.dir;
  await using server = await spawnCli(["-c", `${s.dir.path}/config.yaml`], { env: s.env });
  const port = portOf(server.url);
  const first = await servedLeaf(port);
  const life = new Date(first.validTo).getTime() - new Date(first.validFrom).getTime();
  // 30 s ahead, and started a minute back for clocks a little behind.
  assert.ok(life >= 89_000 && life <= 91_000, `leaf lifetime ${life} ms`);
  let next = first;
  await until(
    async () => {
      next = await servedLeaf(port);
      return next.fingerprint256 !== first.fingerprint256;
    },
    "a new leaf served",
    120_000,
  );
  assert.ok(new Date(next.validTo) > new Date(first.validTo));
  await until(() => Date.now() > new Date(first.validTo).getTime(), "the first leaf's end", 60_000);
  const r = await curl(["--cacert", `${s.ca}/root.pem`, `https://localhost:${port}/`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(server.output(), /local CA: new certificate for localhost/);
  // A leaf of hours is no "expires soon" case: the renewal speaks for itself.
  assert.doesNotMatch(server.output(), /expires on|renew it soon|ERROR/);
});

Deno.test("with server.workers, every worker serves the renewed leaf", async () => {
  const s = await site("  workers: 2\nssl:\n  enabled: true\n  leaf_lifetime: 30\n");
  await using _dir = s.dir;
  await using server = await spawnCli(["-c", `${s.dir.path}/config.yaml`], { env: s.env });
  assert.match(server.output(), /with 2 workers/);
  const port = portOf(server.url);
  const first = await servedLeaf(port);
  await until(() => server.output().includes("local CA: new certificate"), "a renewal", 120_000);
  await until(() => server.output().includes("certificate reloaded"), "the main thread", 60_000);
  await until(
    () => server.output().includes("reloaded configuration in 1 workers"),
    "workers",
    60_000,
  );
  // New connections land on either thread (SO_REUSEPORT): each one gets the new leaf.
  for (let i = 0; i < 8; i++) {
    const leaf = await servedLeaf(port);
    assert.notEqual(leaf.fingerprint256, first.fingerprint256, `connection ${i}`);
  }
});

Deno.test("certificate files or ACME configured: no local CA is made", async () => {
  const s = await site();
  await using _dir = s.dir;
  const certs = await makeCerts(s.dir.path);
  await using server = await spawnCli(
    ["-c", `${s.dir.path}/config.yaml`, "--ssl", "--cert", certs.cert, "--key", certs.key],
    { env: s.env },
  );
  assert.match(server.url, /^https:/);
  assert.doesNotMatch(server.output(), /local CA/);
  assert.equal(await Deno.stat(s.ca).then(() => true, () => false), false);
});

Deno.test("--test configuration: HTTPS without files is fine; one file without the other is not", async () => {
  const s = await site("ssl:\n  enabled: true\n");
  await using _dir = s.dir;
  const ok = await runCli(["-c", `${s.dir.path}/config.yaml`, "--test", "configuration"], {
    env: s.env,
  });
  assert.equal(ok.code, 0, ok.stdout);
  assert.match(ok.stdout, /ssl: .*local CA/);
  await writeFiles(s.dir.path, {
    "config.yaml": "ssl:\n  enabled: true\n  cert_file: ./cert.pem\n",
  });
  const bad = await runCli(["-c", `${s.dir.path}/config.yaml`], { env: s.env });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /config\.yaml:\d+:\d+: ssl\.key_file is required with ssl\.cert_file/);
});

/** A throwaway root for `trust`: the Debian store's folders, and a HOME for the NSS database. */
async function throwawayRoot(dir: string) {
  const root = `${dir}/root`;
  for (
    const d of ["usr/local/share/ca-certificates", "usr/share/ca-certificates", "etc/ssl/certs"]
  ) {
    await Deno.mkdir(`${root}/${d}`, { recursive: true });
  }
  await Deno.mkdir(`${dir}/home`);
  // Another CA already in the store, as on any system (the bundle is rewritten only with one).
  const other = await makeCerts(`${dir}/home`, { name: "other" });
  await Deno.copyFile(other.ca, `${root}/usr/local/share/ca-certificates/other.crt`);
  return {
    other: other.caPem.trim(),
    bundle: `${root}/etc/ssl/certs/ca-certificates.crt`,
    nssdb: `${dir}/home/.pki/nssdb`,
    env: { DENOSERVE_TRUST_ROOT: root, HOME: `${dir}/home`, DENO_DIR },
  };
}

async function nssNicknames(db: string): Promise<string> {
  const out = await new Deno.Command("certutil", { args: ["-L", "-d", `sql:${db}`] }).output();
  return new TextDecoder().decode(out.stdout);
}

/** Headless Chromium (HOME's NSS database, no --ignore-certificate-errors): the page's DOM. */
async function chromiumDom(home: string, url: string): Promise<string> {
  await using profile = await tempDir();
  const out = await new Deno.Command(chromium!, {
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
      `--user-data-dir=${profile.path}`,
      "--dump-dom",
      url,
    ],
    env: { HOME: home },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return dec.decode(out.stdout) +
    dec.decode(out.stderr).split("\n").filter((l) => /ERR_|Page load failed/.test(l)).join("\n");
}

Deno.test({
  name:
    "trust: curl with the system bundle and Chromium with the NSS database accept the leaf; untrust removes it",
  ignore: !updateCa || !certutil || !chromium,
  async fn() {
    const s = await site();
    await using _dir = s.dir;
    const t = await throwawayRoot(s.dir.path);
    const env = { ...s.env, ...t.env };
    const trusted = await runCli(["trust"], { env });
    assert.equal(trusted.code, 0, trusted.stdout + trusted.stderr);
    assert.match(trusted.stdout, /system store .*: wrote .*denoserve-\w+\.crt/);
    assert.match(trusted.stdout, /ran update-ca-certificates/);
    assert.match(
      trusted.stdout,
      /NSS database .*nssdb \(Chromium\): added "denoserve local CA \w+"/,
    );
    assert.ok((await Deno.readTextFile(t.bundle)).includes(
      (await Deno.readTextFile(`${s.ca}/root.pem`)).trim(),
    ));
    assert.match(await nssNicknames(t.nssdb), /denoserve local CA \w+\s+C,,/);
    // A second trust changes nothing and says so.
    const again = await runCli(["trust"], { env });
    assert.equal(again.code, 0);
    assert.match(again.stdout, /already has "denoserve local CA/);

    await using server = await spawnCli(["-c", `${s.dir.path}/config.yaml`, "--ssl"], {
      env: s.env,
    });
    const port = portOf(server.url);
    for (const host of ["localhost", "127.0.0.1"]) {
      const r = await curl(["--cacert", t.bundle, `https://${host}:${port}/`]);
      assert.equal(r.code, 0, `${host}: ${r.stderr}`);
      const dom = await chromiumDom(t.env.HOME, `https://${host}:${port}/`);
      assert.match(dom, /served over the local CA/, `${host}: ${dom}`);
    }

    const untrusted = await runCli(["untrust"], { env });
    assert.equal(untrusted.code, 0, untrusted.stdout + untrusted.stderr);
    assert.match(untrusted.stdout, /removed .*denoserve-\w+\.crt/);
    assert.match(untrusted.stdout, /removed "denoserve local CA \w+"/);
    const bundle = await Deno.readTextFile(t.bundle);
    assert.ok(bundle.includes(t.other), "the other CA stays");
    assert.ok(!bundle.includes((await Deno.readTextFile(`${s.ca}/root.pem`)).trim()));
    assert.doesNotMatch(await nssNicknames(t.nssdb), /denoserve/);
    const refused = await chromiumDom(t.env.HOME, `https://localhost:${port}/`);
    assert.doesNotMatch(refused, /served over the local CA/);
    assert.match(refused, /ERR_CERT_AUTHORITY_INVALID/);
  },
});

const setpriv = hasCommand("setpriv");

Deno.test({
  name: "trust without the rights to the system store: the commands to run by hand, which work",
  ignore: !updateCa || (Deno.uid() === 0 && !setpriv),
  async fn() {
    const s = await site();
    await using _dir = s.dir;
    const t = await throwawayRoot(s.dir.path);
    const store = `${t.env.DENOSERVE_TRUST_ROOT}/usr/local/share/ca-certificates`;
    await Deno.chmod(store, 0o555);
    // Root writes anywhere; without its capabilities it is held to the folder's mode as anyone.
    const argv = [Deno.execPath(), "run", "-A", `${ROOT}/main.ts`, "trust"];
    const asUser = Deno.uid() === 0
      ? [setpriv!, "--bounding-set=-all", "--inh-caps=-all", ...argv]
      : argv;
    const r = await new Deno.Command(asUser[0], {
      args: asUser.slice(1),
      env: { ...s.env, ...t.env, NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 1, out);
    assert.match(out, /no rights to change .*denoserve-\w+\.crt; run by hand:/);
    assert.match(out, /1 step\(s\) above are left to do by hand/);
    // The NSS database is the user's own: that step was done.
    assert.match(out, /added "denoserve local CA \w+"/);
    // The printed commands, run with the rights (here: as root, without sudo), install it.
    const byHand = out.split("\n").filter((l) => l.startsWith("  sudo ")).map((l) => l.slice(7));
    assert.equal(byHand.length, 2, out);
    await Deno.chmod(store, 0o755);
    for (const line of byHand) {
      const done = await new Deno.Command("sh", { args: ["-c", line], stdout: "null" }).output();
      assert.ok(done.success, line);
    }
    assert.ok((await Deno.readTextFile(t.bundle)).includes(
      (await Deno.readTextFile(`${s.ca}/root.pem`)).trim(),
    ));
  },
});

Deno.test("two starts making the CA at the same moment end with one root", async () => {
  await using dir = await tempDir();
  const { LocalCa } = await import("../src/tls/local_ca.ts");
  const opened = await Promise.all([1, 2, 3].map(() => LocalCa.open(`${dir.path}/ca`)));
  const roots = new Set(opened.map((ca) => ca.rootPem));
  assert.equal(roots.size, 1);
  assert.equal(await Deno.readTextFile(`${dir.path}/ca/root.pem`), opened[0].rootPem);
  // Their leaves for the same names, made at the same moment, are one pair in the files, and it
  // chains to that root.
  const leaves = await Promise.all(opened.map((ca) => ca.leaf(["localhost", "127.0.0.1"], 3600)));
  const leaf = leaves[0];
  const chain = parseChain(leaf.cert, await Deno.readTextFile(leaf.cert));
  assert.ok(chain[0].checkPrivateKey(createPrivateKey(await Deno.readTextFile(leaf.key))));
  const verify = await new Deno.Command("openssl", {
    args: ["verify", "-CAfile", `${dir.path}/ca/root.pem`, "-untrusted", leaf.cert, leaf.cert],
  }).output();
  assert.ok(verify.success, new TextDecoder().decode(verify.stderr));
});
