/**
 * `--test configuration` with the proxy and answer settings of issue 29: what a file turned on is
 * shown, a wrong value names file, line and key (exit 2).
 */
import assert from "node:assert/strict";
import { runCli } from "./support/cli.ts";
import { assertCheckRefuses } from "./support/config.ts";
import { tempDir, writeFiles } from "./support/files.ts";

Deno.test("--test configuration shows body limits, compression, header rules, lb and the retry window", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "site/index.html": "hi",
    "config.yaml": [
      "server:",
      "  workers: 2",
      "  max_body_size: 10m",
      "  locations: { /upload: { max_body_size: 1g } }",
      "  compression: { enabled: true }",
      "  response_headers: { remove: [Server], set: { X-Frame-Options: DENY } }",
      "  reverse_proxy:",
      "    - path: /api",
      '      upstreams: ["127.0.0.1:9", "127.0.0.1:10"]',
      "      lb: cookie",
      "      try_duration: 5",
      '      request_headers: { set: { X-Client: "{client_ip}" }, remove: [Cookie] }',
      "http: { static_dir: ./site }",
      "",
    ].join("\n"),
  });
  const out = await runCli(["--test", "configuration", "--skip-proxy-check"], { cwd: dir.path });
  assert.equal(out.code, 1, out.stdout + out.stderr);
  const lines = out.stdout.split("\n");
  const has = (re: RegExp) => assert.ok(lines.some((l) => re.test(l)), `${re}\n${out.stdout}`);
  has(
    /^OK {3}server\.max_body_size: request bodies over 10 MiB get 413; locations: \/upload: 1 GiB$/,
  );
  has(
    /^OK {3}server\.compression: zstd 3, gzip 5 for answers made on the fly of 256 bytes or more$/,
  );
  has(/^OK {3}server\.response_headers: remove 1, set 1 on every answer$/);
  has(
    /^OK {3}server\.reverse_proxy\[0\]: \/api → .* \(lb cookie denoserve_lb; retried for 5s every 0\.25s; request headers: remove 1, set 1\)$/,
  );
  has(/^WARN server\.reverse_proxy\[0\]\.lb_cookie_secret: .*set lb_cookie_secret$/);
});

Deno.test("--test configuration refuses wrong values with file:line and key", async () => {
  await assertCheckRefuses(
    "server:\n  compression:\n    gzip_level: 12\n",
    /config\.yaml:3:17: server\.compression\.gzip_level must be 1–9, got 12/,
  );
  await assertCheckRefuses(
    "server:\n  max_body_size: lots\n",
    /config\.yaml:2:18: server\.max_body_size must be a number of bytes/,
  );
  await assertCheckRefuses(
    "server:\n  reverse_proxy:\n    - path: /\n      port: 3000\n      response_headers:\n        set: { X-A: '{nope}' }\n",
    /config\.yaml:6:\d+: server\.reverse_proxy\[0\]\.response_headers\.set\.X-A uses \{nope\}/,
  );
  await assertCheckRefuses(
    "server:\n  reverse_proxy:\n    - path: /\n      upstreams: ['a:1']\n      lb: header\n",
    /config\.yaml:\d+:\d+: server\.reverse_proxy\[0\]\.lb_header is needed by lb: header/,
  );
});
