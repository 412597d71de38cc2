/**
 * HTTPS: certificates, handshakes (HTTP/2, TLS 1.2+), certificate errors, HSTS, the HTTP→HTTPS
 * redirect listener, --ssl-config, permission-scoped runs and certificate reload.
 */
import assert from "node:assert/strict";
import { loadTlsMaterial, TlsError } from "../src/tls/certs.ts";
import { rewriteSslSection } from "../src/cli/ssl_config.ts";
import { watchReload } from "../src/app/reload.ts";
import { makeCerts, makeSpecCert, servedFingerprint } from "./support/certs.ts";
import { curl, runCli, spawnCli } from "./support/cli.ts";
import { clientLoop } from "./support/clients.ts";
import { ROOT, tempDir, writeFiles } from "./support/files.ts";
import { startTestServer } from "./support/servers.ts";
import { eventually } from "./support/wait.ts";

const hasCurl = await new Deno.Command("curl", { args: ["--version"], stdout: "null" }).output()
  .then((o) => o.success, () => false);
if (!hasCurl) console.log("curl is not installed: the curl tests are ignored");

/** A static site and a CA-signed localhost certificate in a temp folder. */
async function site(dir: string) {
  await writeFiles(dir, { "site/index.html": "<h1>secure</h1>", "site/a.txt": "A" });
  return await makeCerts(dir);
}

const tlsConfig = (dir: string, certs: { cert: string; key: string }, ssl = {}) => ({
  http: { static_dir: `${dir}/site` },
  ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key, ...ssl },
});

Deno.test("https: static files over TLS, verified by fetch with the test CA", async () => {
  await using tmp = await tempDir();
  const certs = await site(tmp.path);
  await using srv = await startTestServer(tlsConfig(tmp.path, certs));
  assert.match(srv.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  const res = await fetch(`${srv.url.replace("127.0.0.1", "localhost")}/a.txt`, { client });
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "A");
  assert.equal(res.headers.get("strict-transport-security"), null, "HSTS is off by default");
  // Without the CA the same certificate is not trusted.
  await assert.rejects(fetch(`${srv.url}/a.txt`));
});

Deno.test({
  name: "https: curl --cacert gets HTTP/2 via ALPN, HTTP/1.1 on request, TLS 1.1 is refused",
  ignore: !hasCurl,
  async fn() {
    await using tmp = await tempDir();
    const certs = await site(tmp.path);
    await using srv = await startTestServer(tlsConfig(tmp.path, certs));
    const url = `${srv.url}/a.txt`;
    const h2 = await curl(["--cacert", certs.ca, "--http2", "-w", "\n%{http_version}", url]);
    assert.equal(h2.code, 0, h2.stderr);
    assert.equal(h2.stdout, "A\n2");
    const h1 = await curl(["--cacert", certs.ca, "--http1.1", "-w", "\n%{http_version}", url]);
    assert.equal(h1.stdout, "A\n1.1");
    const tls12 = await curl(["--cacert", certs.ca, "--tlsv1.2", "--tls-max", "1.2", url]);
    assert.equal(tls12.code, 0, tls12.stderr);
    const tls11 = await curl(["--cacert", certs.ca, "--tlsv1.1", "--tls-max", "1.1", url]);
    assert.notEqual(tls11.code, 0, "a TLS 1.1 client must be refused");
    assert.match(tls11.stderr, /SSL|TLS|handshake|alert/i);
  },
});

Deno.test("https: requests see the client's own address, over HTTP/1.1 and HTTP/2", async () => {
  await using tmp = await tempDir();
  const certs = await site(tmp.path);
  await using srv = await startTestServer(tlsConfig(tmp.path, certs));
  srv.server.swap({
    handle: (_request, ctx) =>
      new Response(`${ctx.remote.hostname} ${ctx.remote.port} ${ctx.secure}`),
    errorResponse: (status) => new Response(null, { status }),
    close() {},
  });
  const port = srv.server.addr.port;
  for (const alpn of ["http/1.1", "h2"]) {
    const conn = await Deno.connectTls({
      hostname: "localhost",
      port,
      caCerts: [certs.caPem],
      alpnProtocols: [alpn],
    });
    const { alpnProtocol } = await conn.handshake();
    assert.equal(alpnProtocol, alpn);
    conn.close();
  }
  // A raw HTTP/1.1 request on a connection whose local port we know.
  const conn = await Deno.connectTls({ hostname: "localhost", port, caCerts: [certs.caPem] });
  await conn.write(
    new TextEncoder().encode("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
  );
  let text = "";
  for await (const chunk of conn.readable.pipeThrough(new TextDecoderStream())) text += chunk;
  assert.match(text, /^HTTP\/1\.1 200/);
  assert.ok(
    text.endsWith(`127.0.0.1 ${conn.localAddr.port} true`),
    `the app saw ${text.split("\r\n\r\n")[1]}, the client is port ${conn.localAddr.port}`,
  );
});

Deno.test("https: a full chain with an intermediate is sent whole", async () => {
  await using tmp = await tempDir();
  await writeFiles(tmp.path, { "site/a.txt": "A" });
  const certs = await makeCerts(tmp.path, { intermediate: true });
  assert.equal((await Deno.readTextFile(certs.cert)).match(/BEGIN CERTIFICATE/g)?.length, 2);
  await using srv = await startTestServer(tlsConfig(tmp.path, certs));
  // The client trusts only the root: verification needs the intermediate from the server.
  using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  const res = await fetch(`${srv.url}/a.txt`, { client });
  assert.equal(await res.text(), "A");
  assert.equal(srv.server.tls?.info.chainLength, 2);
});

Deno.test({
  name: "https: the spec's self-signed certificate and the flags serve, fetched with curl -k",
  ignore: !hasCurl,
  async fn() {
    await using tmp = await tempDir();
    await writeFiles(tmp.path, { "site/index.html": "spec" });
    const spec = await makeSpecCert(tmp.path);
    await using cli = await spawnCli([
      "-p",
      "0",
      "-s",
      "site",
      "--ssl",
      "--cert",
      "cert.pem",
      "--key",
      "key.pem",
    ], { cwd: tmp.path });
    assert.match(cli.url, /^https:/);
    const res = await curl(["-k", `${cli.url}/`]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout, "spec");
    assert.ok(spec.cert);
  },
});

Deno.test("https: flags beat the file's ssl section", async () => {
  await using tmp = await tempDir();
  const certs = await site(tmp.path);
  await writeFiles(tmp.path, {
    "config.yaml":
      "ssl:\n  enabled: false\n  cert_file: ./missing.pem\n  key_file: ./missing.pem\n",
  });
  await using cli = await spawnCli([
    "-p",
    "0",
    "-s",
    "site",
    "--ssl",
    "--cert",
    certs.cert,
    "--key",
    certs.key,
  ], { cwd: tmp.path });
  using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  assert.equal(await (await fetch(`${cli.url}/a.txt`, { client })).text(), "A");
});

/** Runs the CLI with TLS on `cert`/`key` and returns its result (it must not start). */
async function failingStart(cwd: string, cert: string, key: string, permissions?: string[]) {
  const r = await runCli(["-p", "0", "--ssl", "--cert", cert, "--key", key], {
    cwd,
    permissions,
  });
  assert.notEqual(r.code, 0, `must not start:\n${r.stderr}`);
  const lines = r.stderr.trim().split("\n");
  const line = lines.find((l) => l.includes("Error loading SSL certificates:"));
  assert.ok(line, `no 'Error loading SSL certificates' line:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  assert.doesNotMatch(r.stderr, / on https?:/);
  return line;
}

Deno.test("https: certificate errors stop the start with one line naming path and reason", async (t) => {
  await using tmp = await tempDir();
  const d = tmp.path;
  const good = await makeCerts(d);
  const other = await makeCerts(d, { name: "other" });
  await writeFiles(d, { "garbage.pem": "not a certificate\n", "empty.pem": "" });

  await t.step("the file does not exist", async () => {
    const line = await failingStart(d, "nope.pem", good.key);
    assert.match(line, /nope\.pem: the certificate file does not exist/);
  });
  await t.step("the key file does not exist", async () => {
    const line = await failingStart(d, good.cert, "nokey.pem");
    assert.match(line, /nokey\.pem: the key file does not exist/);
  });
  await t.step("not PEM", async () => {
    assert.match(await failingStart(d, "garbage.pem", good.key), /garbage\.pem: is not PEM/);
    assert.match(await failingStart(d, good.cert, "empty.pem"), /empty\.pem: is not PEM/);
  });
  await t.step("no certificate in the certificate file", async () => {
    assert.match(await failingStart(d, good.key, good.key), /holds no certificate/);
  });
  await t.step("no private key in the key file", async () => {
    assert.match(await failingStart(d, good.cert, good.cert), /holds no private key/);
  });
  await t.step("the key does not match the certificate", async () => {
    const line = await failingStart(d, good.cert, other.key);
    assert.match(line, /other-key\.pem: the private key does not match the certificate/);
  });
  await t.step("a missing Deno read permission names the flag", async () => {
    const line = await failingStart(d, good.cert, good.key, [
      "--allow-net",
      "--allow-env",
      `--allow-read=${d}/server.pem,${d}/config.yaml,${d}/static`,
    ]);
    assert.ok(line.includes(`server-key.pem: cannot be read`), line);
    assert.ok(line.includes(`--allow-read=${good.key}`), line);
  });
  await t.step("expired", async () => {
    const old = await makeCerts(d, {
      name: "expired",
      notBefore: new Date("2020-01-01T00:00:00Z"),
      notAfter: new Date("2021-01-01T00:00:00Z"),
    });
    const line = await failingStart(d, old.cert, old.key);
    assert.match(line, /expired\.pem: the certificate expired on 2021-01-01/);
  });
  await t.step("not yet valid", async () => {
    const future = await makeCerts(d, {
      name: "future",
      notBefore: new Date(Date.now() + 86400_000),
      notAfter: new Date(Date.now() + 10 * 86400_000),
    });
    assert.match(await failingStart(d, future.cert, future.key), /is not valid before/);
  });
});

Deno.test({
  name: "https: a key the operating system will not let us read is reported, not a crash",
  ignore: Deno.uid() === 0,
  async fn() {
    await using tmp = await tempDir();
    const certs = await makeCerts(tmp.path);
    await Deno.chmod(certs.key, 0o000);
    const line = await failingStart(tmp.path, certs.cert, certs.key);
    assert.match(line, /operating system denies access/);
  },
});
if (Deno.uid() === 0) {
  console.log("running as root: file modes do not stop reads, the OS permission test is ignored");
}

Deno.test("https: warnings for a certificate near expiry and a key readable by others", async () => {
  await using tmp = await tempDir();
  const soon = await makeCerts(tmp.path, {
    name: "soon",
    notAfter: new Date(Date.now() + 5 * 86400_000),
  });
  await Deno.chmod(soon.key, 0o644);
  await using cli = await spawnCli(["-p", "0", "--ssl", "--cert", soon.cert, "--key", soon.key], {
    cwd: tmp.path,
  });
  const out = cli.output();
  assert.match(out, /WARNING certificate .*soon\.pem expires on \d{4}-\d\d-\d\d \(in [45] days\)/);
  assert.match(
    out,
    /WARNING key file .*soon-key\.pem is readable by group and others \(mode 0644\); restrict it with chmod 400/,
  );

  const month = await makeCerts(tmp.path, { name: "month" });
  assert.deepEqual((await loadTlsMaterial(month.cert, month.key)).warnings, []);
  await Deno.chmod(soon.key, 0o600);
  const strict = await loadTlsMaterial(soon.cert, soon.key);
  assert.equal(strict.warnings.filter((w) => w.includes("readable")).length, 0);
  await assert.rejects(
    loadTlsMaterial(soon.cert, soon.key, new Date(Date.now() + 6 * 86400_000)),
    (e) => e instanceof TlsError && /expired/.test(e.message),
  );
});

Deno.test("https: -d logs the certificate at start and each connection", async () => {
  await using tmp = await tempDir();
  const certs = await site(tmp.path);
  await using cli = await spawnCli([
    "-p",
    "0",
    "-s",
    "site",
    "-d",
    "--ssl",
    "--cert",
    certs.cert,
    "--key",
    certs.key,
  ], { cwd: tmp.path });
  const out = cli.output();
  assert.match(
    out,
    /DEBUG certificate .*server\.pem: subject CN=localhost; issuer CN=denoserve test CA/,
  );
  assert.match(
    out,
    /DEBUG certificate SANs: DNS:localhost, IP Address:127\.0\.0\.1, IP Address:::1/,
  );
  assert.match(out, /DEBUG certificate valid \S+ to \S+; chain of 1; SHA-256 [0-9A-F:]{95}/);
  using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  await (await fetch(`${cli.url}/a.txt`, { client })).text();
  await cli.waitFor(
    /DEBUG connection from 127\.0\.0\.1:\d+ over TLS, ALPN h2, first request GET \/a\.txt/,
  );
});

Deno.test("https: ssl.hsts adds Strict-Transport-Security", async () => {
  await using tmp = await tempDir();
  const certs = await site(tmp.path);
  const hsts = "max-age=31536000; includeSubDomains";
  await using srv = await startTestServer(tlsConfig(tmp.path, certs, { hsts }));
  using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  for (const path of ["/a.txt", "/missing"]) {
    const res = await fetch(`${srv.url}${path}`, { client });
    await res.body?.cancel();
    assert.equal(res.headers.get("strict-transport-security"), hsts, path);
  }
});

Deno.test("https: ssl.redirect_http answers plain HTTP with 308 to the HTTPS URL", async () => {
  await using tmp = await tempDir();
  const certs = await site(tmp.path);
  await using srv = await startTestServer(tlsConfig(tmp.path, certs, { redirect_http: 0 }));
  const plain = srv.server.redirectAddr;
  assert.ok(plain);
  const httpsPort = srv.server.addr.port;
  const res = await fetch(`http://127.0.0.1:${plain.port}/a%20b/c.txt?x=1&y=2`, {
    redirect: "manual",
  });
  await res.body?.cancel();
  assert.equal(res.status, 308);
  assert.equal(
    res.headers.get("location"),
    `https://127.0.0.1:${httpsPort}/a%20b/c.txt?x=1&y=2`,
  );
  // The host comes from the request; a raw request shows it and the method does not matter.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: plain.port });
  await conn.write(
    new TextEncoder().encode(
      "POST /p HTTP/1.1\r\nHost: example.test:8080\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ),
  );
  const raw = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
  assert.match(raw, /^HTTP\/1\.1 308/);
  assert.match(raw, new RegExp(`\r\nlocation: https://example\\.test:${httpsPort}/p\r\n`, "i"));
  // Following it reaches the file over HTTPS.
  using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  const followed = await fetch(`http://127.0.0.1:${plain.port}/a.txt`, { client });
  assert.equal(await followed.text(), "A");
  assert.ok(followed.url.startsWith("https://"));
});

const COMMENTED = `# denoserve configuration, hand-written
server:
  host: 0.0.0.0 # every interface
  port: 8443

# TLS goes here
ssl:
  enabled: false # off for now
  cert_file: ./old/cert.pem
  hsts: "max-age=60" # keep me

http:
  # the site
  static_dir: ./public
  directory_listing: true

logging: {level: INFO, console_output: true}
`;

Deno.test("https: --ssl-config rewrites only the ssl section of a commented file", async () => {
  await using tmp = await tempDir();
  const file = `${tmp.path}/config.yaml`;
  await writeFiles(tmp.path, { "config.yaml": COMMENTED });
  const r = await runCli(
    ["--ssl-config", "--ssl", "--cert", "./ssl/cert.pem", "--key", "./ssl/key.pem"],
    { cwd: tmp.path },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /updated .*config\.yaml/);
  assert.match(
    r.stderr,
    /warning: Error loading SSL certificates: .*ssl\/cert\.pem: the certificate file does not exist/,
  );
  const after = await Deno.readTextFile(file);
  const expected = COMMENTED.replace(
    '  enabled: false # off for now\n  cert_file: ./old/cert.pem\n  hsts: "max-age=60" # keep me\n',
    '  enabled: true\n  cert_file: ./ssl/cert.pem\n  hsts: "max-age=60" # keep me\n  key_file: ./ssl/key.pem\n',
  );
  assert.equal(after, expected);
  // Running it again changes nothing.
  const again = await runCli(
    ["--ssl-config", "--ssl", "--cert", "./ssl/cert.pem", "--key", "./ssl/key.pem"],
    { cwd: tmp.path },
  );
  assert.equal(again.code, 0);
  assert.equal(await Deno.readTextFile(file), expected);
});

Deno.test("https: --ssl-config appends or creates the section, paths relative to the file", () => {
  const file = `${Deno.cwd()}/conf/config.yaml`;
  const s = { certFile: "ssl/c.pem", keyFile: "/etc/k.pem" };
  assert.equal(
    rewriteSslSection("# only a comment\nserver:\n  port: 1\n", file, s),
    "# only a comment\nserver:\n  port: 1\n\nssl:\n  enabled: true\n  cert_file: ../ssl/c.pem\n  key_file: /etc/k.pem\n"
      .replace("../ssl/c.pem", `${Deno.cwd()}/ssl/c.pem`),
  );
  const inFolder = `${Deno.cwd()}/config.yaml`;
  assert.equal(
    rewriteSslSection("", inFolder, s),
    "ssl:\n  enabled: true\n  cert_file: ./ssl/c.pem\n  key_file: /etc/k.pem\n",
  );
  assert.equal(
    rewriteSslSection("a: 1\nssl:\nb: 2\n", inFolder, s),
    "a: 1\nssl:\n  enabled: true\n  cert_file: ./ssl/c.pem\n  key_file: /etc/k.pem\nb: 2\n",
  );
});

Deno.test("https: --ssl-config creates the file, and names what is missing", async () => {
  await using tmp = await tempDir();
  const certs = await makeCerts(tmp.path);
  const r = await runCli([
    "-c",
    "new.yaml",
    "--ssl-config",
    "--ssl",
    "--cert",
    "server.pem",
    "--key",
    "server-key.pem",
  ], { cwd: tmp.path });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /created .*new\.yaml/);
  assert.equal(r.stderr, "");
  assert.equal(
    await Deno.readTextFile(`${tmp.path}/new.yaml`),
    "ssl:\n  enabled: true\n  cert_file: ./server.pem\n  key_file: ./server-key.pem\n",
  );
  // The saved file serves.
  await using cli = await spawnCli(["-c", "new.yaml", "-p", "0"], { cwd: tmp.path });
  using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  const res = await fetch(`${cli.url}/`, { client });
  await res.body?.cancel();
  assert.ok(res.status > 0);

  for (
    const [args, missing] of [
      [["--ssl-config"], "missing --ssl, --cert FILE, --key FILE"],
      [["--ssl-config", "--ssl", "--cert", "c.pem"], "missing --key FILE"],
      [["--ssl-config", "--cert", "c.pem", "--key", "k.pem"], "missing --ssl"],
    ] as const
  ) {
    const bad = await runCli([...args], { cwd: tmp.path });
    assert.equal(bad.code, 1, bad.stderr);
    assert.ok(bad.stderr.includes(missing), bad.stderr);
  }
  await assert.rejects(Deno.stat(`${tmp.path}/config.yaml`), Deno.errors.NotFound);
});

Deno.test("https: permission-scoped runs and the Let's Encrypt symlink layout", async () => {
  await using tmp = await tempDir();
  const d = tmp.path;
  await writeFiles(d, { "site/a.txt": "A" });
  // live/<domain>/*.pem are symlinks into ../../archive/<domain>/, as certbot writes them.
  await Deno.mkdir(`${d}/le/archive/example.test`, { recursive: true });
  await Deno.mkdir(`${d}/le/live/example.test`, { recursive: true });
  const certs = await makeCerts(`${d}/le/archive/example.test`, { name: "cert1" });
  await Deno.rename(certs.cert, `${d}/le/archive/example.test/fullchain1.pem`);
  await Deno.rename(certs.key, `${d}/le/archive/example.test/privkey1.pem`);
  await Deno.symlink(
    "../../archive/example.test/fullchain1.pem",
    `${d}/le/live/example.test/fullchain.pem`,
  );
  await Deno.symlink(
    "../../archive/example.test/privkey1.pem",
    `${d}/le/live/example.test/privkey.pem`,
  );
  const live = `${d}/le/live/example.test`;

  const config = `${d}/config.yaml`;
  await writeFiles(d, {
    "config.yaml": "# scoped\nserver:\n  port: 0\nhttp:\n  static_dir: ./site\n",
  });
  const saved = await runCli([
    "-c",
    config,
    "--ssl-config",
    "--ssl",
    "--cert",
    `${live}/fullchain.pem`,
    "--key",
    `${live}/privkey.pem`,
  ], {
    cwd: d,
    permissions: [`--allow-read=${config},${live}`, `--allow-write=${config}`, "--allow-env"],
  });
  assert.equal(saved.code, 0, saved.stderr);
  assert.match(
    await Deno.readTextFile(config),
    /cert_file: \.\/le\/live\/example\.test\/fullchain\.pem/,
  );

  const read = [config, `${d}/site`, `${live}/fullchain.pem`, `${live}/privkey.pem`];
  await using cli = await spawnCli(["-c", config], {
    cwd: d,
    permissions: ["--allow-net=127.0.0.1", "--allow-env", `--allow-read=${read.join(",")}`],
  });
  using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  assert.equal(await (await fetch(`${cli.url}/a.txt`, { client })).text(), "A");

  // Without read access to the key, the error names the flag to add.
  const denied = await failingStart(d, `${live}/fullchain.pem`, `${live}/privkey.pem`, [
    "--allow-net",
    "--allow-env",
    `--allow-read=${d}/config.yaml,${d}/site,${live}/fullchain.pem`,
  ]);
  assert.ok(denied.includes(`--allow-read=${live}/privkey.pem`), denied);
  // A denied write is reported naming the flag.
  const noWrite = await runCli(
    ["-c", config, "--ssl-config", "--ssl", "--cert", "c", "--key", "k"],
    {
      cwd: d,
      permissions: [`--allow-read=${config}`, "--allow-env"],
    },
  );
  assert.equal(noWrite.code, 1);
  assert.ok(noWrite.stderr.includes(`--allow-write=${config}`), noWrite.stderr);
});

Deno.test("https: SIGHUP loads a new certificate; clients see the new one and no failed request", async () => {
  await using tmp = await tempDir();
  const d = tmp.path;
  await writeFiles(d, { "site/a.txt": "A" });
  const first = await makeCerts(d, { name: "first" });
  await Deno.copyFile(first.cert, `${d}/cert.pem`);
  await Deno.copyFile(first.key, `${d}/key.pem`);
  await writeFiles(d, {
    "config.yaml":
      "server:\n  port: 0\nhttp:\n  static_dir: ./site\nssl:\n  enabled: true\n  cert_file: ./cert.pem\n  key_file: ./key.pem\n",
  });
  await using cli = await spawnCli(["-c", "config.yaml"], { cwd: d });
  const port = Number(new URL(cli.url).port);
  const before = await servedFingerprint(port);

  const keepAlive = clientLoop(`${cli.url}/a.txt`, first.caPem, false);
  const fresh = clientLoop(`${cli.url}/a.txt`, first.caPem, true);
  // Both clients keep asking across the reload: some answers before it, some after.
  const answered = (n: number) => eventually(() => keepAlive.ok >= n && fresh.ok >= n, 10_000);
  assert.ok(await answered(5), `${keepAlive.ok} / ${fresh.ok} requests before the reload`);
  const second = await makeCerts(d, { name: "second" });
  await Deno.copyFile(second.cert, `${d}/cert.pem`);
  await Deno.copyFile(second.key, `${d}/key.pem`);
  cli.process.kill("SIGHUP");
  await cli.waitFor("reloaded configuration");
  const atReload = Math.max(keepAlive.ok, fresh.ok);
  assert.ok(await answered(atReload + 5), `${keepAlive.ok} / ${fresh.ok} requests after it`);
  await keepAlive.stop();
  await fresh.stop();
  const after = await servedFingerprint(port);

  assert.notEqual(before, after);
  const { X509Certificate } = await import("node:crypto");
  assert.equal(after, new X509Certificate(await Deno.readTextFile(second.cert)).fingerprint256);
  assert.deepEqual([...keepAlive.failures, ...fresh.failures], []);

  // A bad pair on SIGHUP is refused with the error, the running certificate stays.
  const other = await makeCerts(d, { name: "other" });
  await Deno.copyFile(other.key, `${d}/key.pem`);
  cli.process.kill("SIGHUP");
  await cli.waitFor(
    /reload failed, still serving the previous configuration: Error loading SSL certificates: .*key\.pem: the private key does not match/,
  );
  assert.equal(await servedFingerprint(port), after);
  using client = Deno.createHttpClient({ caCerts: [first.caPem] });
  assert.equal(await (await fetch(`${cli.url}/a.txt`, { client })).text(), "A");
});

Deno.test("https: a certificate changed on disk is taken without a signal", async () => {
  await using tmp = await tempDir();
  const d = tmp.path;
  await writeFiles(d, { "site/a.txt": "A" });
  const first = await makeCerts(d, { name: "first" });
  const second = await makeCerts(d, { name: "second" });
  await Deno.copyFile(first.cert, `${d}/cert.pem`);
  await Deno.copyFile(first.key, `${d}/key.pem`);
  await using srv = await startTestServer(
    tlsConfig(d, { cert: `${d}/cert.pem`, key: `${d}/key.pem` }),
  );
  using reloader = watchReload({
    server: srv.server,
    log: srv.log,
    certCheckMs: 50,
    signal: null,
    prepare: () => Promise.reject(new Error("not used")),
  });
  const before = srv.server.tls!.info.fingerprint256;
  assert.equal(await servedFingerprint(srv.server.addr.port), before);
  await reloader.watching;
  const loop = clientLoop(`${srv.url}/a.txt`, first.caPem, true);

  // A bad key first: refused, the old pair stays.
  await Deno.copyFile(second.key, `${d}/key.pem`);
  const refused = () =>
    srv.log.lines.some((l) => l.includes("still serving the previous certificate"));
  assert.ok(await eventually(refused, 10_000), srv.log.lines.join("\n"));
  assert.equal(srv.server.tls!.info.fingerprint256, before);
  // Then the matching certificate: taken, and the client keeps being answered after the swap.
  await Deno.copyFile(second.cert, `${d}/cert.pem`);
  const taken = () => srv.server.tls!.info.fingerprint256 !== before;
  assert.ok(await eventually(taken, 10_000), srv.log.lines.join("\n"));
  const atSwap = loop.ok;
  assert.ok(await eventually(() => loop.ok >= atSwap + 5, 10_000), `${loop.ok} requests`);
  await loop.stop();
  assert.deepEqual(loop.failures, []);
  assert.notEqual(await servedFingerprint(srv.server.addr.port), before);
});

Deno.test("https: a port in use is reported, not shared through SO_REUSEPORT", async () => {
  await using tmp = await tempDir();
  const certs = await makeCerts(tmp.path);
  await using first = await spawnCli(
    ["-p", "0", "--ssl", "--cert", certs.cert, "--key", certs.key],
    {
      cwd: tmp.path,
    },
  );
  const port = new URL(first.url).port;
  const second = await runCli(["-p", port, "--ssl", "--cert", certs.cert, "--key", certs.key], {
    cwd: tmp.path,
  });
  assert.equal(second.code, 1);
  assert.match(
    second.stderr,
    new RegExp(`cannot listen: 127\\.0\\.0\\.1:${port} is already in use`),
  );
});

Deno.test("https: a renewal that repoints Let's Encrypt symlinks is picked up", async () => {
  await using tmp = await tempDir();
  const d = tmp.path;
  await writeFiles(d, { "site/a.txt": "A" });
  const first = await makeCerts(d, { name: "cert1" });
  const second = await makeCerts(d, { name: "cert2" });
  await Deno.mkdir(`${d}/live`);
  await Deno.symlink("../cert1.pem", `${d}/live/fullchain.pem`);
  await Deno.symlink("../cert1-key.pem", `${d}/live/privkey.pem`);
  await using srv = await startTestServer(
    tlsConfig(d, { cert: `${d}/live/fullchain.pem`, key: `${d}/live/privkey.pem` }),
  );
  using reloader = watchReload({
    server: srv.server,
    log: srv.log,
    certCheckMs: 50,
    signal: null,
    prepare: () => Promise.reject(new Error("not used")),
  });
  const before = srv.server.tls!.info.fingerprint256;
  await reloader.watching;
  // certbot renew: new archive files, then the live symlinks are replaced by rename.
  for (
    const [name, target] of [["fullchain.pem", "../cert2.pem"], ["privkey.pem", "../cert2-key.pem"]]
  ) {
    await Deno.symlink(target, `${d}/live/.${name}.new`);
    await Deno.rename(`${d}/live/.${name}.new`, `${d}/live/${name}`);
  }
  const taken = () => srv.server.tls!.info.fingerprint256 !== before;
  assert.ok(await eventually(taken, 10_000), srv.log.lines.join("\n"));
  assert.equal(await servedFingerprint(srv.server.addr.port), srv.server.tls!.info.fingerprint256);
  using client = Deno.createHttpClient({ caCerts: [first.caPem] });
  assert.equal(await (await fetch(`${srv.url}/a.txt`, { client })).text(), "A");
  assert.ok(second.cert);
});

const canUnshare = Deno.build.os === "linux" && Deno.uid() === 0 &&
  await new Deno.Command("unshare", { args: ["-n", "ip", "link", "set", "lo", "up"] }).output()
    .then((o) => o.success, () => false);
if (!canUnshare) {
  console.log("needs root, unshare and ip: the tcp_migrate_req certificate swap test is ignored");
}

Deno.test({
  name: "https: with tcp_migrate_req=1 no new connection fails across certificate swaps",
  ignore: !canUnshare,
  async fn() {
    await using tmp = await tempDir();
    await makeCerts(tmp.path, { name: "a" });
    await makeCerts(tmp.path, { name: "b" });
    // A private network namespace: its sysctl and loopback belong to this test alone.
    const script = [
      "ip link set lo up",
      "echo 1 > /proc/sys/net/ipv4/tcp_migrate_req",
      `exec "${Deno.execPath()}" run --unstable-net -A "${ROOT}/tests/fixtures/swap_probe.ts" "${tmp.path}" 15`,
    ].join(" && ");
    const out = await new Deno.Command("unshare", { args: ["-n", "sh", "-c", script] }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const { ok, failures } = JSON.parse(text.trim().split("\n").pop()!);
    assert.deepEqual(failures, []);
    assert.ok(ok > 50, `${ok} requests`);
  },
});

Deno.test("https: scripts/make_certs.sh makes a CA and a localhost certificate every client trusts", async () => {
  await using tmp = await tempDir();
  const out = await new Deno.Command("bash", {
    args: [`${ROOT}/scripts/make_certs.sh`, `${tmp.path}/ssl`, "extra.test"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const ssl = `${tmp.path}/ssl`;
  for (const key of ["key.pem", "ca-key.pem"]) {
    assert.equal((await Deno.stat(`${ssl}/${key}`)).mode! & 0o777, 0o600, key);
  }
  const tls = await loadTlsMaterial(`${ssl}/cert.pem`, `${ssl}/key.pem`);
  assert.deepEqual(tls.warnings, []);
  assert.deepEqual(tls.info.sans, [
    "DNS:localhost",
    "IP Address:127.0.0.1",
    "IP Address:::1",
    "DNS:extra.test",
  ]);
  await writeFiles(tmp.path, { "site/a.txt": "A" });
  await using srv = await startTestServer(
    tlsConfig(tmp.path, { cert: `${ssl}/cert.pem`, key: `${ssl}/key.pem` }),
  );
  using client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(`${ssl}/ca.pem`)] });
  for (const host of ["localhost", "127.0.0.1"]) {
    const res = await fetch(`${srv.url.replace("127.0.0.1", host)}/a.txt`, { client });
    assert.equal(await res.text(), "A", host);
  }
  if (hasCurl) {
    const r = await curl([
      "--cacert",
      `${ssl}/ca.pem`,
      `${srv.url.replace("127.0.0.1", "localhost")}/a.txt`,
    ]);
    assert.equal(r.stdout, "A", r.stderr);
  }
});

Deno.test("https: ssl.redirect_http on the HTTPS port is a config error naming the key", async () => {
  await using tmp = await tempDir();
  const certs = await makeCerts(tmp.path);
  await writeFiles(tmp.path, {
    "config.yaml":
      `server:\n  port: 8443\nssl:\n  enabled: true\n  cert_file: ${certs.cert}\n  key_file: ${certs.key}\n  redirect_http: 8443\n`,
  });
  const r = await runCli([], { cwd: tmp.path });
  assert.equal(r.code, 2);
  assert.match(
    r.stderr,
    /config\.yaml:7:18: ssl\.redirect_http must differ from server\.port \(8443\), which serves HTTPS/,
  );
});
