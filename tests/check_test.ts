import assert from "node:assert/strict";
import { validate } from "../src/config/load.ts";
import { badHost, checkProxyTargets, checkTls } from "../src/app/validate.ts";
import { formatResult } from "../src/cli/test_command.ts";
import { makeCerts } from "./support/certs.ts";
import { runCli } from "./support/cli.ts";
import { tempDir, writeFiles } from "./support/files.ts";

const hasOpenssl = (() => {
  try {
    return new Deno.Command("openssl", { args: ["version"] }).outputSync().success;
  } catch {
    return false;
  }
})();
if (!hasOpenssl) console.log("certificate checks skipped: openssl is not installed");

/** A certificate for localhost valid from `start` to `end`, its key at `<name>.key`. */
async function certificate(dir: string, name: string, start: Date, end: Date) {
  const made = await makeCerts(dir, { name, notBefore: start, notAfter: end });
  const key = `${dir}/${name}.key`;
  await Deno.rename(made.key, key);
  return { cert: made.cert, key };
}

const DAY = 86_400_000;

/** Runs `--test` in `dir` and splits stdout into lines. */
async function test(dir: string, args: string[]) {
  const out = await runCli(["--test", ...args], { cwd: dir });
  return { ...out, lines: out.stdout.split("\n").filter((l) => l !== "") };
}

Deno.test("--test all: 0 when every check passes, one OK line per check", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": "http:\n  static_dir: ./site\n  templates_dir: ./tpl\n",
    "site/index.html": "hi",
    "tpl/404.html": "gone",
  });
  const out = await test(dir.path, ["all"]);
  assert.equal(out.code, 0, out.stdout + out.stderr);
  assert.deepEqual(out.lines.slice(0, -1).map((l) => l.slice(0, 5)), [
    "OK   ",
    "OK   ",
    "OK   ",
    "OK   ",
  ]);
  assert.match(out.stdout, /^OK {3}configuration: .*config\.yaml is valid$/m);
  assert.match(out.stdout, /^OK {3}http\.static_dir: .*site exists and is readable$/m);
  assert.match(out.lines[out.lines.length - 1], /^4 ok, 0 warning\(s\), 0 failing: all checks/);
});

Deno.test("--test directories: 1 for a missing templates folder, 2 for a missing static folder, nothing created", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "site/index.html": "hi" });
  await writeFiles(dir.path, { "config.yaml": "http:\n  static_dir: ./site\n" });
  let out = await test(dir.path, ["directories"]);
  assert.equal(out.code, 1, out.stdout);
  assert.match(out.stdout, /^WARN http\.templates_dir: .*templates does not exist; the built-in/m);
  assert.doesNotMatch(out.stdout, /configuration:/, "only directories were checked");

  await writeFiles(dir.path, { "config.yaml": "http:\n  static_dir: ./gone\n" });
  out = await test(dir.path, ["directories"]);
  assert.equal(out.code, 2, out.stdout);
  assert.match(out.stdout, /^FAIL http\.static_dir: .*gone does not exist; create it or set/m);
  const names = [...Deno.readDirSync(dir.path)].map((e) => e.name).sort();
  assert.deepEqual(names, ["config.yaml", "site"], "missing folders are reported, not created");
});

Deno.test("--test directories: a static path that is a file fails", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "config.yaml": "http:\n  static_dir: ./f\n", f: "x" });
  const out = await test(dir.path, ["directories"]);
  assert.equal(out.code, 2);
  assert.match(out.stdout, /FAIL http\.static_dir: .*\/f is not a folder/);
});

Deno.test("--test checks the log file's folder", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": "logging:\n  log_file: ./logs/d.log\n",
    "static/a": "a",
    "templates/b": "b",
  });
  let out = await test(dir.path, ["directories"]);
  assert.equal(out.code, 1);
  assert.match(
    out.stdout,
    /^WARN logging\.log_file: .*logs does not exist; it is created at start$/m,
  );
  await Deno.mkdir(`${dir.path}/logs`);
  out = await test(dir.path, ["directories"]);
  assert.equal(out.code, 0, out.stdout);
  assert.match(
    out.stdout,
    /^OK {3}logging\.log_file: .*logs exists; .*d\.log is created at start$/m,
  );
  assert.deepEqual([...Deno.readDirSync(`${dir.path}/logs`)], [], "no log file was created");
});

Deno.test("--test configuration: schema errors are failed checks naming the key (exit 2)", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": "server:\n  port: 70000\nlogging:\n  level: LOUD\n",
  });
  const out = await test(dir.path, ["configuration"]);
  assert.equal(out.code, 2);
  assert.match(
    out.stdout,
    /^FAIL configuration: .*config\.yaml:2:9: server\.port must be 0–65535/m,
  );
  assert.match(out.stdout, /^FAIL configuration: .*logging\.level must be DEBUG/m);
});

Deno.test("--test configuration: unknown keys warn (exit 1), unsupported features fail (exit 2)", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "config.yaml": "http:\n  static_dri: ./x\n" });
  let out = await test(dir.path, ["configuration"]);
  assert.equal(out.code, 1, out.stdout);
  assert.match(out.stdout, /^WARN configuration: .*unknown key http\.static_dri .*"static_dir"/m);

  await writeFiles(dir.path, {
    "config.yaml": "version: 2\nextensions:\n  - type: caching\n" +
      "    config:\n      backend: redis\n",
  });
  out = await test(dir.path, ["configuration"]);
  assert.equal(out.code, 2, out.stdout);
  assert.match(
    out.stdout,
    /^FAIL configuration: .*extensions\[0\]\.config\.url is required with backend: redis/m,
  );

  await writeFiles(dir.path, {
    "config.yaml": "version: 2\nextensions:\n  - type: custom\n    config: {}\n",
  });
  out = await test(dir.path, ["configuration"]);
  assert.equal(out.code, 2, out.stdout);
  assert.match(
    out.stdout,
    /^FAIL configuration: not supported by this build: extensions\[0\] \(type custom\)/m,
  );
});

Deno.test("--test: 3 when the configuration cannot be loaded", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "bad.yaml": "server:\n  port: [1,\n" });
  let out = await test(dir.path, ["all", "-c", "bad.yaml"]);
  assert.equal(out.code, 3);
  assert.match(
    out.stdout,
    /^FAIL configuration: cannot be loaded: .*bad\.yaml:\d+:\d+: invalid YAML/m,
  );
  out = await test(dir.path, ["directories", "-c", "missing.yaml"]);
  assert.equal(out.code, 3);
  assert.match(out.stdout, /cannot be loaded: missing\.yaml: configuration file not found/);
  out = await test(dir.path, ["bogus"]);
  assert.equal(out.code, 2, "an unknown scope is a usage error");
});

Deno.test("--test without a config file checks the built-in defaults", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "static/a": "a", "templates/b": "b" });
  const out = await test(dir.path, ["all"]);
  assert.equal(out.code, 0, out.stdout);
  assert.match(out.stdout, /^OK {3}configuration: built-in defaults \(no config\.yaml\)$/m);
});

Deno.test("check lines use ✅ ⚠️ ❌ on a terminal", () => {
  assert.equal(formatResult({ status: "ok", name: "a", message: "b" }, true), "✅ a: b");
  assert.match(formatResult({ status: "warn", name: "a", message: "b" }, true), /^⚠️ +a: b$/);
  assert.equal(formatResult({ status: "fail", name: "a", message: "b" }, true), "❌ a: b");
  assert.equal(formatResult({ status: "fail", name: "a", message: "b" }, false), "FAIL a: b");
});

Deno.test("proxy targets: host names, addresses and ports a backend can have", () => {
  for (const good of ["localhost", "api.example.com", "10.0.0.1", "[::1]", "::1", "svc_1"]) {
    assert.equal(badHost(good), undefined, good);
  }
  for (const bad of ["http://x", "a b", "300.1.1.1", "-x.com", "x..y", "[zz::1]"]) {
    assert.ok(badHost(bad), bad);
  }
  const { config } = validate({
    server: {
      reverse_proxy: [
        { path: "/api", host: "127.0.0.1", port: 3000 },
        { path: "/bad", host: "https://backend", port: 0 },
        { path: "/lb", upstreams: ["a.local:8080", "b.local:0"] },
        { path: "/api", host: "localhost", port: 3001 },
        { path: "/ca", host: "localhost", port: 443, ssl: true, ca_file: "/nonexistent/ca.pem" },
      ],
    },
  });
  const results = checkProxyTargets(config);
  const by = (name: string) => results.filter((r) => r.name === name);
  assert.equal(by("server.reverse_proxy[0]")[0].status, "ok");
  const bad = by("server.reverse_proxy[1]")[0];
  assert.equal(bad.status, "fail");
  assert.match(bad.message, /\.host must be a host name without a scheme/);
  assert.match(bad.message, /\.port must be 1–65535 for a backend, got 0/);
  assert.match(by("server.reverse_proxy[2]")[0].message, /upstreams\[1\] port must be 1–65535/);
  assert.equal(by("server.reverse_proxy[3].path")[0].status, "warn");
  assert.match(
    by("server.reverse_proxy[4]")[0].message,
    /ca_file: \/nonexistent\/ca\.pem does not exist/,
  );
});

Deno.test("an invalid regular expression in routing locations fails the check", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": "version: 2\nextensions:\n  - type: routing\n    config:\n" +
      '      regex_locations:\n        "~^/ok/(?P<v>\\\\d+)": { return: "200 OK" }\n' +
      '        "~^/broken(": { return: "200 OK" }\n',
  });
  const r = await runCli(["-c", `${dir.path}/config.yaml`, "--test", "configuration"]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(r.stdout + r.stderr, /\^\/broken\(/);
  assert.doesNotMatch(r.stdout + r.stderr, /ok\/\(\?P/);
});

Deno.test({
  name: "certificates: loadable, matching key, within their dates",
  ignore: !hasOpenssl,
  async fn() {
    await using dir = await tempDir();
    const now = Date.now();
    const good = await certificate(
      dir.path,
      "good",
      new Date(now - DAY),
      new Date(now + 400 * DAY),
    );
    const expired = await certificate(
      dir.path,
      "old",
      new Date("2020-01-01T00:00:00Z"),
      new Date("2020-02-01T00:00:00Z"),
    );
    const soon = await certificate(dir.path, "soon", new Date(now - DAY), new Date(now + 5 * DAY));
    const future = await certificate(
      dir.path,
      "future",
      new Date(now + 10 * DAY),
      new Date(now + 20 * DAY),
    );
    await writeFiles(dir.path, { "junk.pem": "not a certificate" });
    const tls = (cert: string, key: string) =>
      checkTls(validate({ ssl: { enabled: true, cert_file: cert, key_file: key } }).config);

    let [r] = await tls(good.cert, good.key);
    assert.equal(r.status, "ok", r.message);
    assert.match(r.message, /CN=localhost, key matches, valid until/);
    [r] = await tls(good.cert, expired.key);
    assert.equal(r.status, "fail");
    assert.match(
      r.message,
      /old\.key: the private key does not match the certificate in .*good\.pem/,
    );
    [r] = await tls(expired.cert, expired.key);
    assert.equal(r.status, "fail");
    assert.match(r.message, /expired on 2020-02-01/);
    [r] = await tls(soon.cert, soon.key);
    assert.equal(r.status, "warn");
    assert.match(r.message, /expires on .*in [45] days/);
    [r] = await tls(future.cert, future.key);
    assert.equal(r.status, "fail");
    assert.match(r.message, /is not valid before/);
    [r] = await tls(`${dir.path}/junk.pem`, good.key);
    assert.equal(r.status, "fail");
    assert.match(r.message, /junk\.pem: is not PEM/);
    [r] = await tls(good.cert, `${dir.path}/missing.key`);
    assert.equal(r.status, "fail");
    assert.match(r.message, /missing\.key: the key file does not exist/);
    [r] = await checkTls(validate({}).config);
    assert.deepEqual(r, { status: "ok", name: "ssl", message: "HTTPS is off" });
  },
});

/**
 * `--test configuration` and a real start on the same file: both must refuse it as a
 * configuration error (exit 2) naming `expected`, and the start must not serve.
 */
async function bothRefuse(dir: string, expected: RegExp, permissions?: string[]) {
  const checked = await runCli(["--test", "configuration", "-c", `${dir}/config.yaml`], {
    cwd: dir,
    permissions,
  });
  assert.equal(checked.code, 2, checked.stdout + checked.stderr);
  assert.match(checked.stdout, expected);
  const started = await runCli(["-c", `${dir}/config.yaml`, "-p", "0"], { cwd: dir, permissions });
  assert.equal(started.code, 2, started.stderr);
  assert.match(started.stderr, expected);
  assert.doesNotMatch(started.stderr, / serving /);
}

Deno.test("--test and a start agree: a server.host with a scheme is a configuration error", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "config.yaml": "server:\n  host: http://x\n", "static/a": "a" });
  await bothRefuse(dir.path, /server\.host must be an address without a scheme, got "http:\/\/x"/);
});

Deno.test("--test and a start agree: a reverse_proxy ca_file that holds no certificate", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": "server:\n  reverse_proxy:\n    - path: /api\n      host: 127.0.0.1\n" +
      "      port: 9\n      ssl: true\n      ca_file: ./ca.pem\n",
    "ca.pem": "not a certificate\n",
    "static/a": "a",
  });
  await bothRefuse(dir.path, /server\.reverse_proxy\[0\]\.ca_file: .*ca\.pem is not PEM/);
});

Deno.test("--test and a start agree: ACME storage without write permission, and tls-alpn-01", async () => {
  await using dir = await tempDir();
  const acme = (challenge: string) =>
    `ssl:\n  enabled: true\n  acme:\n    email: a@example.com\n    domains: [example.test]\n` +
    `    storage: ./acme\n    challenge: ${challenge}\n    http_port: 0\n`;
  await writeFiles(dir.path, { "config.yaml": acme("http-01"), "static/a": "a" });
  // Everything but writing the storage folder.
  const permissions = [
    "--allow-read",
    "--allow-net",
    "--allow-env",
    `--allow-write=${dir.path}/elsewhere`,
  ];
  await bothRefuse(dir.path, /ssl\.acme\.storage: no write permission for .*acme/, permissions);
  await writeFiles(dir.path, { "config.yaml": acme("tls-alpn-01") });
  await bothRefuse(dir.path, /ssl\.acme\.challenge: tls-alpn-01 is not supported/);
});
