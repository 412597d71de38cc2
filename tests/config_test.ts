import { strict as assert } from "node:assert";
import { ConfigError } from "../src/config/config_error.ts";
import { loadConfig } from "../src/config/load.ts";
import { tempDir, writeFiles } from "./support/files.ts";

async function load(yaml: string | null, flags = {}, env: Record<string, string> = {}) {
  await using dir = await tempDir();
  const file = `${dir.path}/config.yaml`;
  if (yaml !== null) await Deno.writeTextFile(file, yaml);
  return { ...(await loadConfig({ config: file, ...flags }, (n) => env[n])), dir: dir.path };
}

async function loadError(yaml: string, flags = {}, env: Record<string, string> = {}) {
  try {
    await load(yaml, flags, env);
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.message;
  }
  assert.fail("expected a configuration error");
}

Deno.test("defaults: a PyServe file with only some keys fills the rest", async () => {
  const { config, dir } = await load("server:\n  port: 9000\n");
  assert.equal(config.server.host, "127.0.0.1");
  assert.equal(config.server.port, 9000);
  assert.equal(config.http.static_dir, `${dir}/static`, "relative to the file's folder");
  assert.equal(config.http.templates_dir, `${dir}/templates`);
  assert.equal(config.ssl.enabled, false);
  assert.equal(config.logging.level, "INFO");
  assert.ok(Object.isFrozen(config.server), "the config is immutable");
});

Deno.test("PyServe's full layout loads", async () => {
  const { config, warnings } = await load(`
server:
  host: 0.0.0.0
  port: 8080
  backlog: 10
  redirect_instructions:
    - /old: /new
  reverse_proxy:
    - path: /api
      host: localhost
      port: 3000
http:
  static_dir: ./public
  templates_dir: ./tpl
ssl:
  enabled: true
  cert_file: ./ssl/cert.pem
  key_file: ./ssl/key.pem
logging:
  level: debug
  log_file: ./logs/server.log
  console_output: true
  use_colors: false
  use_rotation: true
  max_log_size: 1048576
  backup_count: 3
  structured_logs: true
`);
  assert.deepEqual(warnings, []);
  assert.equal(config.server.reverse_proxy[0].port, 3000);
  assert.equal(config.server.reverse_proxy[0].ssl, false);
  assert.equal(config.logging.level, "DEBUG");
  assert.equal(config.ssl.enabled, true);
});

Deno.test("invalid YAML names file, line and column", async () => {
  const message = await loadError("server:\n  port: 8000\n   host: x\n");
  assert.match(message, /config\.yaml:\d+:\d+: invalid YAML: /);
  const flow = await loadError("server: { port: 1\n");
  assert.match(flow, /config\.yaml:\d+:\d+: invalid YAML: /);
});

Deno.test("a wrong value names the key path, the position and what was expected", async () => {
  let m = await loadError("server:\n  port: 70000\n");
  assert.match(m, /config\.yaml:2:9: server\.port must be 0–65535, got 70000/);
  m = await loadError("server:\n  port: eighty\n");
  assert.match(m, /server\.port must be a whole number 0–65535, got "eighty"/);
  m = await loadError("http:\n  directory_listing: maybe\n");
  assert.match(m, /http\.directory_listing must be true or false, got "maybe"/);
  m = await loadError("logging:\n  level: LOUD\n");
  assert.match(m, /logging\.level must be DEBUG, INFO, WARNING, ERROR or CRITICAL/);
  m = await loadError("server:\n  reverse_proxy:\n    - path: api\n");
  assert.match(m, /server\.reverse_proxy\[0\]\.path must start with "\/"/);
  m = await loadError("ssl:\n  enabled: true\n  key_file: ./key.pem\n");
  assert.match(m, /ssl\.cert_file is required with ssl\.key_file/);
  m = await loadError("- just\n- a list\n");
  assert.match(m, /must be a mapping/);
});

Deno.test("a misspelt key of an extensions entry is a warning with a suggestion", async () => {
  const { warnings } = await load("version: 2\nextensions:\n  - type: routing\n    confg: {}\n");
  assert.deepEqual(warnings.map((w) => w.replace(/^.*config\.yaml:/, "")), [
    '4:5: unknown key extensions[0].confg is ignored (did you mean "config"?)',
  ]);
});

Deno.test("keys named __proto__, constructor or prototype are warnings naming them, and ignored", async () => {
  const { config, warnings } = await load(
    "server:\n  constructor: 1\n  __proto__: { port: 9 }\n" +
      "version: 2\nextensions:\n  - type: security\n    config:\n      security_headers:\n" +
      "        headers:\n          prototype: x\n          X-Frame-Options: DENY\n",
  );
  assert.deepEqual(warnings.map((w) => w.replace(/^.*config\.yaml:/, "")), [
    "2:3: key server.constructor is ignored: the name is reserved",
    "3:3: key server.__proto__ is ignored: the name is reserved",
    "10:11: key extensions[0].config.security_headers.headers.prototype is ignored: " +
    "the name is reserved",
  ]);
  assert.equal(config.server.port, 8000);
  const security = config.extensions[0].config as { security_headers: { headers: object } };
  assert.deepEqual(security.security_headers.headers, { "X-Frame-Options": "DENY" });
});

Deno.test("unknown keys are warnings naming them, with a suggestion", async () => {
  const { config, warnings } = await load("http:\n  static_dri: ./x\nservr:\n  port: 1\n");
  assert.equal(config.http.static_dir.endsWith("/static"), true);
  assert.equal(warnings.length, 2);
  assert.match(
    warnings.join("\n"),
    /2:3: unknown key http\.static_dri is ignored \(did you mean "static_dir"\?\)/,
  );
  assert.match(warnings.join("\n"), /unknown key servr is ignored \(did you mean "server"\?\)/);
});

Deno.test("scalars are read as PyYAML reads them (YAML 1.1), as PyServe did", async () => {
  const { config, warnings } = await load([
    "server:",
    "  backlog: 1_024", // PyYAML: 1024
    "  shutdown_timeout: 1:30", // sexagesimal: 90
    "  default_root: Yes",
    "http:",
    "  directory_listing: on",
    "  serve_dotfiles: OFF",
    "base: &quiet",
    "  console_output: false",
    "logging:",
    "  <<: *quiet", // PyYAML merges the anchored mapping
    "  use_colors: no",
    "",
  ].join("\n"));
  assert.equal(config.server.backlog, 1024);
  assert.equal(config.server.shutdown_timeout, 90);
  assert.equal(config.server.default_root, true);
  assert.equal(config.http.directory_listing, true);
  assert.equal(config.http.serve_dotfiles, false);
  assert.equal(config.logging.use_colors, false);
  assert.equal(config.logging.console_output, false);
  assert.deepEqual(warnings.map((w) => w.replace(/^.*?:\d+:\d+: /, "")), [
    "unknown key base is ignored",
  ]);
  // A lone y or n, and 0o17, are strings to PyYAML: errors, as PyServe would have choked on them.
  assert.match(
    await loadError("http:\n  directory_listing: y\n"),
    /must be true or false, got "y"/,
  );
  assert.match(await loadError("server:\n  port: 0o17\n"), /server\.port must be .*got "0o17"/);
  // The yaml package's 1.1 schema reads more as numbers than PyYAML does: `.` (the current
  // folder), `08` and `1e3` are strings to PyYAML, and so here.
  const dot = await load("http:\n  static_dir: .\n  templates_dir: 08\nssl:\n  cert_file: 1e3\n");
  assert.equal(dot.config.http.static_dir, dot.dir);
  assert.equal(dot.config.http.templates_dir, `${dot.dir}/08`);
  assert.equal(dot.config.ssl.cert_file, `${dot.dir}/1e3`);
  // A date stays the text it was (PyYAML would make it a date, which no key takes).
  const dated = await load("http:\n  static_dir: ./2025-01-01\n  templates_dir: 2025-01-01\n");
  assert.equal(dated.config.http.templates_dir.endsWith("/2025-01-01"), true);
});

Deno.test("a key written under the wrong section names the section it belongs to", async () => {
  // PyServe's older documentation: `static_dir` under `server` (PyServe ignored it there too).
  const { config, warnings } = await load(
    'server:\n  host: "0.0.0.0"\n  static_dir: "./public"\nhttp:\n  port: 8001\n',
  );
  assert.equal(config.http.static_dir.endsWith("/static"), true, "the default stays");
  assert.equal(config.server.port, 8000);
  assert.deepEqual(warnings.map((w) => w.replace(/^.*?:(\d+:\d+: )/, "$1")), [
    '3:3: unknown key server.static_dir is ignored (did you mean "http.static_dir"?)',
    '5:3: unknown key http.port is ignored (did you mean "server.port"?)',
  ]);
});

Deno.test("precedence: flags > environment > file > defaults", async () => {
  const yaml = "server:\n  host: 10.0.0.1\n  port: 7000\nhttp:\n  static_dir: ./fromfile\n";
  let r = await load(yaml);
  assert.equal(r.config.server.port, 7000);
  r = await load(yaml, {}, { DENOSERVE_PORT: "7100", DENOSERVE_STATIC_DIR: "envdir" });
  assert.equal(r.config.server.port, 7100);
  assert.equal(r.config.http.static_dir, `${Deno.cwd()}/envdir`, "env paths resolve against cwd");
  assert.equal(r.config.server.host, "10.0.0.1");
  r = await load(yaml, { port: 7200, host: "::1" }, { DENOSERVE_PORT: "7100" });
  assert.equal(r.config.server.port, 7200);
  assert.equal(r.config.server.host, "::1");
  r = await load(yaml, { debug: true }, { DENOSERVE_LOG_LEVEL: "ERROR" });
  assert.equal(r.config.logging.level, "DEBUG");
  r = await load(null, {}, { DENOSERVE_SSL_ENABLED: "false", DENOSERVE_LOG_LEVEL: "warning" })
    .catch((e) => e);
  assert.ok(r instanceof ConfigError, "a missing -c file is an error");
  const m = await loadError(yaml, {}, { DENOSERVE_PORT: "x80" });
  assert.match(m, /DENOSERVE_PORT must be a port number/);
  const m2 = await loadError(yaml, {}, { DENOSERVE_SSL_ENABLED: "true", DENOSERVE_SSL_KEY: "k" });
  assert.match(m2, /ssl\.cert_file is required with ssl\.key_file/);
  // HTTPS with neither file is the local CA's case (cli/local_https.ts).
  r = await load(yaml, {}, { DENOSERVE_SSL_ENABLED: "true" });
  assert.equal(r.config.ssl.enabled, true);
  assert.equal(r.config.ssl.cert_file, undefined);
});

Deno.test("PyServe's PYSERVE_* variables are read; a DENOSERVE_* one of the same meaning wins", async () => {
  const yaml = "server:\n  host: 10.0.0.1\n  port: 7000\n";
  let r = await load(yaml, {}, {
    PYSERVE_HOST: "10.0.0.2",
    PYSERVE_PORT: "7300",
    PYSERVE_STATIC_DIR: "pydir",
    PYSERVE_TEMPLATES_DIR: "pytemplates",
    PYSERVE_LOG_LEVEL: "WARNING",
    PYSERVE_LOG_FILE: "py.log",
  });
  assert.equal(r.config.server.host, "10.0.0.2");
  assert.equal(r.config.server.port, 7300);
  assert.equal(r.config.http.static_dir, `${Deno.cwd()}/pydir`);
  assert.equal(r.config.http.templates_dir, `${Deno.cwd()}/pytemplates`);
  assert.equal(r.config.logging.level, "WARNING");
  assert.equal(r.config.logging.log_file, `${Deno.cwd()}/py.log`);
  r = await load(yaml, {}, {
    PYSERVE_SSL_ENABLED: "true",
    PYSERVE_SSL_CERT: "py-cert.pem",
    PYSERVE_SSL_KEY: "py-key.pem",
  });
  assert.equal(r.config.ssl.enabled, true);
  assert.equal(r.config.ssl.cert_file, `${Deno.cwd()}/py-cert.pem`);
  assert.equal(r.config.ssl.key_file, `${Deno.cwd()}/py-key.pem`);
  r = await load(yaml, {}, { PYSERVE_PORT: "7300", DENOSERVE_PORT: "7100", PYSERVE_HOST: "" });
  assert.equal(r.config.server.port, 7100, "DENOSERVE_PORT wins over PYSERVE_PORT");
  assert.equal(r.config.server.host, "10.0.0.1", "an empty value counts as unset");
  r = await load(yaml, { port: 7200 }, { PYSERVE_PORT: "7300" });
  assert.equal(r.config.server.port, 7200, "flags still win");
  const m = await loadError(yaml, {}, { PYSERVE_PORT: "x80" });
  assert.match(m, /PYSERVE_PORT must be a port number/);
});

Deno.test("an empty reverse_proxy: is no rules; a rule's websocket key defaults to true", async () => {
  let r = await load("server:\n  port: 7000\n  reverse_proxy:\n");
  assert.deepEqual(r.config.server.reverse_proxy, []);
  assert.deepEqual(r.warnings, []);
  r = await load("server:\n  reverse_proxy:\n", { proxy: [{ host: "b", port: 2, path: "/b" }] });
  assert.deepEqual(r.config.server.reverse_proxy.map((p) => p.path), ["/b"]);
  r = await load(
    "server:\n  reverse_proxy:\n    - path: /a\n      port: 1\n      websocket: false\n" +
      "    - path: /b\n      port: 2\n",
  );
  assert.deepEqual(r.warnings, []);
  assert.deepEqual(r.config.server.reverse_proxy.map((p) => p.websocket), [false, true]);
  const m = await loadError("server:\n  reverse_proxy:\n    - port: 1\n      websocket: maybe\n");
  assert.match(m, /config\.yaml:4:18: server\.reverse_proxy\[0\]\.websocket/);
});

Deno.test("a key given twice is a warning naming both lines; the last one wins (PyYAML's rule)", async () => {
  const yaml = [
    "server:", //                   1
    "  port: 7000", //              2
    "  host: 10.0.0.1", //          3
    "  port: 7001", //              4
    "http:", //                     5
    "  static_dir: ./a", //         6
    "http:", //                     7
    "  static_dir: ./b", //         8
    "  directory_listing: sure", // 9 (not a boolean: the error must point here)
    "",
  ].join("\n");
  let m = await loadError(yaml);
  assert.match(m, /config\.yaml:9:22: http\.directory_listing/);
  const { config, warnings, dir } = await load(yaml.replace("sure", "true"));
  assert.equal(config.server.port, 7001);
  assert.equal(config.server.host, "10.0.0.1");
  assert.equal(config.http.static_dir, `${dir}/b`);
  assert.equal(config.http.directory_listing, true);
  assert.equal(warnings.length, 2, warnings.join("\n"));
  assert.match(
    warnings[0],
    /config\.yaml:2:3: server\.port is given twice, on lines 2 and 4; the one on line 4 is used/,
  );
  assert.match(warnings[1], /config\.yaml:5:1: http is given twice, on lines 5 and 7;/);
  m = await loadError("server:\n  port: 1\n  port: [\n");
  assert.match(m, /invalid YAML/);
});

Deno.test("--proxy flags add rules after the file's", async () => {
  const { config } = await load("server:\n  reverse_proxy:\n    - path: /a\n      port: 1\n", {
    proxy: [{ host: "b", port: 2, path: "/b" }],
  });
  assert.deepEqual(config.server.reverse_proxy.map((r) => [r.path, r.host, r.port]), [
    ["/a", "localhost", 1],
    ["/b", "b", 2],
  ]);
});

Deno.test("${VAR} is replaced from the environment; an unset one is an error naming it", async () => {
  const { config } = await load("server:\n  host: ${DENOSERVE_TEST_HOST}\n", {}, {
    DENOSERVE_TEST_HOST: "192.0.2.1",
  });
  assert.equal(config.server.host, "192.0.2.1");
  const m = await loadError("server:\n  host: ${DENOSERVE_TEST_UNSET_VAR}\n");
  assert.match(m, /server\.host uses \$\{DENOSERVE_TEST_UNSET_VAR\}.*not set/);
});

Deno.test("${VAR} in a number or boolean key reads as the literal would; a bad value names key and variable", async () => {
  const yaml = "server:\n  port: ${PORT}\n  shutdown_timeout: ${GRACE}\n" +
    "http:\n  directory_listing: ${LISTING}\n  static_dir: ./${PORT}\n";
  const { config } = await load(yaml, {}, { PORT: "8123", GRACE: "2.5", LISTING: "true" });
  assert.equal(config.server.port, 8123);
  assert.equal(config.server.shutdown_timeout, 2.5);
  assert.equal(config.http.directory_listing, true);
  assert.match(config.http.static_dir, /\/8123$/, "a string key stays a string");
  const off = await load(yaml, {}, { PORT: "1", GRACE: "1", LISTING: "off" });
  assert.equal(off.config.http.directory_listing, false, "off is a boolean, as PyYAML reads it");
  let m = await loadError(yaml, {}, { PORT: "eighty", GRACE: "1", LISTING: "false" });
  assert.match(m, /config\.yaml:2:9: server\.port must be .*"eighty" \(from \$\{PORT\}\)/);
  m = await loadError(yaml, {}, { PORT: "80", GRACE: "1", LISTING: "maybe" });
  assert.match(m, /http\.directory_listing must be true or false.*\(from \$\{LISTING\}\)/);
});

Deno.test("without a default config.yaml the built-in defaults apply", async () => {
  await using dir = await tempDir();
  const cwd = Deno.cwd();
  Deno.chdir(dir.path);
  try {
    const { config, file } = await loadConfig({}, () => undefined);
    assert.equal(file, undefined);
    assert.equal(config.server.port, 8000);
    assert.equal(config.http.static_dir, `${await Deno.realPath(dir.path)}/static`);
  } finally {
    Deno.chdir(cwd);
  }
});

Deno.test("${VAR} in config values comes from the environment; unset is an error naming it", async () => {
  await using dir = await tempDir();
  const name = `DENOSERVE_TEST_PASS_${crypto.randomUUID().replaceAll("-", "")}`;
  const file = `${dir.path}/config.yaml`;
  await writeFiles(dir.path, {
    "config.yaml": `server:\n  locations:\n    /admin:\n      auth: { type: basic, ` +
      `username: admin, password: "pre-\${${name}}" }\n`,
  });
  await assert.rejects(
    () => loadConfig({ config: file }),
    (e: Error) =>
      e instanceof ConfigError && e.message.includes(`\${${name}}`) &&
      e.message.includes("server.locations./admin.auth.password") &&
      e.message.includes(`${name} is not set`),
  );
  Deno.env.set(name, "from-env");
  try {
    const { config } = await loadConfig({ config: file });
    assert.equal(config.server.locations["/admin"].auth?.password, "pre-from-env");
  } finally {
    Deno.env.delete(name);
  }
});
