/**
 * V2 locations (`extensions: routing`): matching order, named groups, `return`, `root` and SPA
 * fallback, errors, `source:`, and the README example.
 */
import assert from "node:assert/strict";
import { ConfigError } from "../src/config/config_error.ts";
import { loadConfig, validate } from "../src/config/load.ts";
import { unsupported } from "../src/app/validate.ts";
import { bootLoaded } from "../src/app/boot.ts";
import { startServer } from "../src/server/server.ts";
import { testApp } from "./support/app.ts";
import { echoBackend } from "./support/backends.ts";
import { runCli } from "./support/cli.ts";
import { get } from "./support/clients.ts";
import { configError } from "./support/config.ts";
import { ROOT, tempDir, writeFiles } from "./support/files.ts";
import { captureLogger, startTestServer } from "./support/servers.ts";

Deno.test("V2: priority order exact > regex (file order) > longest prefix > __default__", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "index.html": "home" });
  using app = await testApp({
    version: 2,
    http: { static_dir: dir.path },
    extensions: [{
      type: "routing",
      config: {
        regex_locations: {
          "__default__": { return: "200 default" },
          "^~/static/": { return: "200 prefix-static" },
          "^~/static/img/": { return: "200 prefix-img" },
          "/plain": { return: "200 plain-prefix" },
          "~^/static/.*\\.png$": { return: "200 regex-png" },
          "~*\\.PNG$": { return: "200 regex-any-png" },
          "=/static/exact.png": { return: "200 exact" },
        },
      },
    }],
  });
  const body = async (path: string) => (await app.get(path)).body;
  assert.equal(await body("/static/exact.png"), "exact");
  assert.equal(await body("/static/img/a.png"), "regex-png"); // regex beats ^~ (PyServe order)
  assert.equal(await body("/other/a.PNG"), "regex-any-png");
  assert.equal(await body("/other/a.png"), "regex-any-png"); // ~* ignores case
  assert.equal(await body("/static/img/a.gif"), "prefix-img"); // longest prefix
  assert.equal(await body("/static/a.gif"), "prefix-static");
  assert.equal(await body("/plain/x"), "plain-prefix");
  assert.equal(await body("/anything"), "default");
  assert.equal(await body("/%73tatic/exact.png"), "exact"); // matched decoded
});

Deno.test("V2: named groups fill headers, return and proxy_pass; return with content_type", async () => {
  await using backend = echoBackend();
  await using dir = await tempDir();
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: dir.path },
    extensions: [{
      type: "routing",
      config: {
        regex_locations: {
          "~^/api/v(?P<version>\\d+)/users/(?P<id>\\d+)$": {
            proxy_pass: `${backend.url}/internal/{version}/user/{id}`,
            headers: ["API-Version: {version}", "User-ID: {id}", "X-Client: $remote_addr"],
          },
          "~^/api/v(?P<version>\\d+)/": {
            proxy_pass: backend.url,
            headers: ["API-Version: {version}", "X-Literal: {nope} $nothing"],
          },
          "~^/hello/(?P<name>[a-z]+)$": {
            return: "200 <p>{name}</p>",
            content_type: "text/html; charset=utf-8",
          },
          "~^/go/(?P<to>\\w+)$": { return: "302 https://example.com/{to}" },
          "=/health": { return: "200 OK", content_type: "text/plain" },
        },
      },
    }],
  });
  let r = await get(`${s.url}/api/v3/users/42?full=1`);
  assert.equal(r.status, 200);
  let echo = JSON.parse(r.body);
  assert.equal(echo.path, "/internal/3/user/42?full=1");
  assert.equal(echo.headers["x-forwarded-for"], "127.0.0.1");
  assert.equal(r.headers.get("api-version"), "3");
  assert.equal(r.headers.get("user-id"), "42");
  assert.equal(r.headers.get("x-client"), "127.0.0.1");
  assert.equal(r.headers.get("x-backend"), "echo");

  r = await get(`${s.url}/api/v2/orders?x=1`, { method: "POST", body: "payload" });
  echo = JSON.parse(r.body);
  assert.deepEqual([echo.method, echo.path, echo.body], ["POST", "/api/v2/orders?x=1", "payload"]);
  assert.equal(r.headers.get("api-version"), "2");
  assert.equal(r.headers.get("x-literal"), "{nope} $nothing");

  r = await get(`${s.url}/hello/world`);
  assert.equal(r.body, "<p>world</p>");
  assert.equal(r.headers.get("content-type"), "text/html; charset=utf-8");
  r = await get(`${s.url}/go/there`);
  assert.equal(r.status, 302);
  assert.equal(r.headers.get("location"), "https://example.com/there");
  r = await get(`${s.url}/health`);
  assert.deepEqual([r.status, r.body, r.headers.get("content-type")], [200, "OK", "text/plain"]);
  r = await get(`${s.url}/health`, { method: "HEAD" });
  assert.equal(r.body, "");
});

Deno.test("V2: root, index_file, cache_control only on success, SPA fallback and exclusions", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "site/index.html": "main index",
    "app/shell.html": "spa shell",
    "app/main.js": "console.log(1)",
    "app/assets/logo.svg": "<svg/>",
    "assets/x.css": "body{}",
  });
  await using s = await startTestServer({
    version: 2,
    http: { static_dir: `${dir.path}/site` },
    extensions: [{
      type: "routing",
      config: {
        regex_locations: {
          "~*\\.(js|css|svg)$": {
            root: `${dir.path}/app`,
            cache_control: "public, max-age=31536000",
          },
          "=/": { root: `${dir.path}/app`, index_file: "shell.html" },
          "__default__": {
            spa_fallback: true,
            root: `${dir.path}/app`,
            index_file: "shell.html",
            exclude_patterns: ["/api/", "/assets/"],
          },
        },
      },
    }],
  });
  let r = await get(`${s.url}/main.js`);
  assert.equal(r.body, "console.log(1)");
  assert.equal(r.headers.get("cache-control"), "public, max-age=31536000");
  r = await get(`${s.url}/MAIN.JS`);
  assert.equal(r.status, 404);
  assert.equal(r.headers.get("cache-control"), null, "no long cache on an error");
  r = await get(`${s.url}/`);
  assert.equal(r.body, "spa shell");
  for (const path of ["/dashboard", "/users/42/edit", "/assets-like/route"]) {
    r = await get(`${s.url}${path}`);
    assert.equal(r.status, 200, path);
    assert.equal(r.body, "spa shell", path);
  }
  r = await get(`${s.url}/assets/logo.svg`); // matched by the regex location, served from app/
  assert.equal(r.body, "<svg/>");
  for (const path of ["/api/users", "/assets/missing", "/missing.txt", "/deep/file.json"]) {
    r = await get(`${s.url}${path}`);
    assert.equal(r.status, 404, path);
  }
  r = await get(`${s.url}/dashboard`, { method: "POST" });
  assert.equal(r.status, 405);
});

Deno.test("V2: invalid regex, bad pattern or conflicting location keys are errors", () => {
  const routing = (regex_locations: Record<string, unknown>) => ({
    version: 2,
    extensions: [{ type: "routing", config: { regex_locations } }],
  });
  let m = configError(routing({ "~^/api/(": { return: "200 x" } }));
  assert.match(
    m,
    /extensions\[0\]\.config\.regex_locations\["~\^\/api\/\("\] is not a valid regular expression/,
  );
  m = configError(routing({ "api/": { return: "200 x" } }));
  assert.match(m, /regex_locations\["api\/"\] is not a location pattern/);
  m = configError(routing({ "=/x": { return: "200 x", root: "/tmp" } }));
  assert.match(m, /regex_locations\["=\/x"\]\.root cannot be used with return/);
  m = configError(routing({ "=/x": { return: "OK" } }));
  assert.match(m, /return must be "STATUS \[text\]"/);
  m = configError(routing({ "=/x": { proxy_pass: "backend:3000" } }));
  assert.match(m, /proxy_pass must be an http:\/\/ or https:\/\/ URL/);
  m = configError(routing({ "=/x": { headers: ["no colon here"] } }));
  assert.match(m, /headers\[0\] must be "Name: value"/);
  m = configError({
    version: 2,
    extensions: [{ type: "routing", config: {} }, { type: "routing", config: {} }],
  });
  assert.match(m, /extensions\[1\] repeats type routing/);
});

Deno.test("V2: extensions without version: 2 are a warning naming the line, and apply", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": "server:\n  port: 0\nextensions:\n  - type: routing\n    config:\n" +
      '      regex_locations:\n        "=/health":\n          return: "200 OK"\n',
  });
  const loaded = await loadConfig({ config: `${dir.path}/config.yaml` });
  const { warnings } = loaded;
  assert.equal(warnings.length, 1, warnings.join("\n"));
  assert.match(
    warnings[0],
    /config\.yaml:3:1: extensions without "version: 2" at the top of the file; PyServe ignores them, denoserve applies them/,
  );
  const log = captureLogger();
  const { app } = await bootLoaded(loaded, log);
  try {
    const res = await app.handle(new Request("http://localhost/health"), {
      path: "/health",
      query: "",
      remote: { transport: "tcp", hostname: "127.0.0.1", port: 40000 },
      secure: false,
    });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "OK");
  } finally {
    app.close();
  }
});

Deno.test("V2: unknown location keys PyServe ignores are warnings naming the key", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": [
      "version: 2",
      "extensions:",
      "  - type: routing",
      "    config:",
      "      regex_locations:",
      '        "=/health":',
      '          return: "200 OK"',
      "          vibe_serving: true",
      '        "=/typo":',
      '          retrun: "200 OK"',
      "",
    ].join("\n"),
  });
  const { config, warnings } = await loadConfig({ config: `${dir.path}/config.yaml` });
  assert.equal(warnings.length, 2, warnings.join("\n"));
  assert.match(
    warnings[0],
    /config\.yaml:8:11: unknown key extensions\[0\]\.config\.regex_locations\["=\/health"\]\.vibe_serving is ignored$/,
  );
  assert.match(
    warnings[1],
    /config\.yaml:10:11: unknown key .*\["=\/typo"\]\.retrun is ignored \(did you mean "return"\?\)/,
  );
  using app = await testApp({ version: 2, extensions: structuredClone(config.extensions) });
  assert.deepEqual([(await app.get("/health")).status, (await app.get("/health")).body], [
    200,
    "OK",
  ]);
});

Deno.test("V2: errors from the CLI name the key and exit 2", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": [
      "version: 2",
      "extensions:",
      "  - type: routing",
      "    config:",
      "      regex_locations:",
      '        "=/health":',
      '          retrun: "200 OK"',
      '        "~^/api/(":',
      "          proxy_pass: http://127.0.0.1:1",
      "",
    ].join("\n"),
  });
  const r = await runCli(["-c", `${dir.path}/config.yaml`, "-p", "0"]);
  assert.equal(r.code, 2, r.stderr);
  assert.ok(!r.stderr.includes("    at "), "no stack trace");
  assert.doesNotMatch(r.stderr, /retrun/, "an unknown location key is no refusal");
  assert.match(
    r.stderr,
    /config\.yaml:8:9: extensions\[0\]\.config\.regex_locations\["~\^\/api\/\("\] is not a valid regular expression: /,
  );
});

Deno.test("V2: `source:` loads an extension from another file, errors point into it", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": "version: 2\nextensions:\n  - type: routing\n    source: ./ext/routing.yaml\n" +
      "  - type: security\n    source: ./ext/security.yaml\n    config:\n" +
      "      cors: { origins: ['https://inline.example'] }\n",
    "ext/routing.yaml": "type: routing\nconfig:\n  regex_locations:\n" +
      '    "=/health":\n      return: "200 from source"\n' +
      '    "^~/files/":\n      root: ./static\n',
    "ext/security.yaml": "cors:\n  origins: ['https://ignored.example']\n  max_age: 60\n",
  });
  const { config } = await loadConfig({ config: `${dir.path}/config.yaml` });
  const routing = config.extensions[0].config as { regex_locations: Record<string, unknown> };
  assert.equal(
    (routing.regex_locations["=/health"] as { return: string }).return,
    "200 from source",
  );
  assert.equal(
    (routing.regex_locations["^~/files/"] as { root: string }).root,
    `${dir.path}/static`,
    "relative roots resolve against the main config file's folder",
  );
  const cors = (config.extensions[1].config as { cors: { origins: string[]; max_age: number } })
    .cors;
  assert.deepEqual(cors.origins, ["https://inline.example"], "inline keys win");

  await writeFiles(dir.path, {
    "ext/routing.yaml": 'type: routing\nconfig:\n  regex_locations:\n    "~(":\n      root: x\n',
  });
  await assert.rejects(
    () => loadConfig({ config: `${dir.path}/config.yaml` }),
    (e: Error) =>
      e instanceof ConfigError && e.message.includes("ext/routing.yaml:4:5: ") &&
      e.message.includes('regex_locations["~("] is not a valid regular expression'),
  );
  await writeFiles(dir.path, {
    "config.yaml": "version: 2\nextensions:\n  - type: routing\n    source: ./nope.yaml\n",
  });
  await assert.rejects(
    () => loadConfig({ config: `${dir.path}/config.yaml` }),
    (e: Error) =>
      e instanceof ConfigError && /config\.yaml:4:13: .*nope\.yaml not found/.test(e.message),
  );
});

Deno.test("extensions: unimplemented types are reported as unsupported, served security blocks not", () => {
  const { config, warnings } = validate({
    version: 2,
    extensions: [
      { type: "routing", config: {} },
      {
        type: "security",
        config: {
          cors: { origins: ["*"], orgins: ["x"] },
          rate_limiting: { enabled: true, requests_per_minute: 60 },
          ip_filtering: { enabled: false },
        },
      },
      { type: "monitoring", config: { metrics: { enabled: true } } },
      { type: "custom", config: {} },
    ],
  });
  assert.deepEqual(unsupported(config), [
    "extensions[3] (type custom)",
  ]);
  assert.equal(warnings.length, 1);
  assert.match(
    warnings[0],
    /unknown key extensions\[1\]\.config\.cors\.orgins is ignored/,
  );
});

Deno.test("README: the PyServe V2 example loads and behaves as described", async () => {
  const readme = await Deno.readTextFile(`${ROOT}/README.md`);
  const start = readme.indexOf("### Example: a PyServe V2 file");
  assert.ok(start > 0, "README has the V2 example");
  const block = /```yaml\n([\s\S]*?)```/.exec(readme.slice(start))![1];
  assert.match(block, /version: 2/);

  await using backend = echoBackend();
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "config.yaml": block.replace("http://127.0.0.1:3000", backend.url),
    "static/index.html": "index page",
    "static/docs.html": "docs page",
    "static/app.js": "let app;",
  });
  const loaded = await loadConfig({ config: `${dir.path}/config.yaml`, port: 0 });
  assert.deepEqual(loaded.warnings, []);
  const log = captureLogger();
  const { config, app } = await bootLoaded(loaded, log);
  const server = await startServer(config, log, app);
  try {
    const url = server.url.replace(/\/$/, "");
    let r = await get(`${url}/health`);
    assert.deepEqual([r.status, r.body, r.headers.get("content-type")], [200, "OK", "text/plain"]);

    r = await get(`${url}/api/v2/users?id=7`);
    const echo = JSON.parse(r.body);
    assert.equal(echo.path, "/api/v2/users?id=7");
    assert.equal(r.headers.get("api-version"), "2");
    assert.equal(r.headers.get("x-forwarded-for"), "127.0.0.1");

    r = await get(`${url}/app.js`);
    assert.equal(r.body, "let app;");
    assert.equal(r.headers.get("cache-control"), "public, max-age=31536000");
    assert.equal(r.headers.get("access-control-allow-origin"), "*");
    r = await get(`${url}/logo.png`);
    assert.equal(r.status, 404);
    assert.equal(r.headers.get("cache-control"), null);

    r = await get(`${url}/`);
    assert.equal(r.body, "index page");
    r = await get(`${url}/docs`);
    assert.equal(r.status, 302);
    assert.equal(r.headers.get("location"), "/docs.html");
    r = await get(`${url}/dashboard/settings`);
    assert.deepEqual([r.status, r.body], [200, "docs page"]);
    for (const path of ["/api/unknown", "/admin/x", "/assets/missing", "/missing.txt"]) {
      r = await get(`${url}${path}`);
      assert.equal(r.status, 404, path);
    }
  } finally {
    await server.shutdown(2000);
  }
});
