/**
 * Reload without downtime: SIGHUP re-reads the configuration; a valid one takes over for new
 * requests, an invalid one is reported and the running one stays; a new listen address opens
 * before the old one closes.
 */
import assert from "node:assert/strict";
import { validate } from "../src/config/load.ts";
import type { App } from "../src/routes/build.ts";
import { applyReload } from "../src/app/reload.ts";
import { makeCerts } from "./support/certs.ts";
import { spawnCli } from "./support/cli.ts";
import { clientLoop } from "./support/clients.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { listeningSockets } from "./support/proc.ts";
import { bootRaw, freePort, startTestServer } from "./support/servers.ts";
import { eventually } from "./support/wait.ts";

const config = (port: number | string, dir: string) =>
  `# reload test\nserver:\n  host: 127.0.0.1\n  port: ${port}\nhttp:\n  static_dir: ./${dir}\n`;

const text = async (url: string) => {
  const res = await fetch(url);
  return `${res.status} ${await res.text()}`;
};

Deno.test("reload: SIGHUP takes a valid new config for new requests, no request fails", async () => {
  await using tmp = await tempDir();
  await writeFiles(tmp.path, {
    "one/a.txt": "one",
    "two/a.txt": "two",
    "config.yaml": config(0, "one"),
  });
  await using cli = await spawnCli(["-c", "config.yaml"], { cwd: tmp.path });
  const port = new URL(cli.url).port;
  assert.equal(await text(`${cli.url}/a.txt`), "200 one");

  const keepAlive = clientLoop(`${cli.url}/a.txt`, undefined, false);
  const fresh = clientLoop(`${cli.url}/a.txt`, undefined, true);
  // Both clients keep asking across the reload: some answers before it, some after.
  const answered = (n: number) => eventually(() => keepAlive.ok >= n && fresh.ok >= n, 10_000);
  assert.ok(await answered(5), `${keepAlive.ok} / ${fresh.ok} requests before the reload`);
  // Port 0 again: the address is unchanged, so the listener stays.
  await Deno.writeTextFile(`${tmp.path}/config.yaml`, config(0, "two"));
  cli.process.kill("SIGHUP");
  await cli.waitFor("reloaded configuration");
  const atReload = Math.max(keepAlive.ok, fresh.ok);
  assert.ok(await answered(atReload + 5), `${keepAlive.ok} / ${fresh.ok} requests after it`);
  await keepAlive.stop();
  await fresh.stop();

  assert.deepEqual(
    [...keepAlive.failures, ...keepAlive.resets, ...fresh.failures, ...fresh.resets],
    [],
  );
  assert.equal(new URL(cli.url).port, port);
  assert.equal(await text(`${cli.url}/a.txt`), "200 two");
  assert.match(
    cli.output(),
    /INFO reloaded configuration; serving on http:\/\/127\.0\.0\.1:\d+\/\n/,
  );
});

Deno.test("reload: an invalid config is reported in one line and the running one stays", async () => {
  await using tmp = await tempDir();
  await writeFiles(tmp.path, { "one/a.txt": "one", "config.yaml": config(0, "one") });
  await using cli = await spawnCli(["-c", "config.yaml"], { cwd: tmp.path });

  const cases: [string, RegExp][] = [
    [config(70000, "one"), /config\.yaml:4:9: server\.port must be 0–65535, got 70000$/m],
    ["server:\n  port: [1\n", /config\.yaml:\d+:\d+: invalid YAML/],
    [
      config(0, "one") + "ssl:\n  enabled: true\n",
      /HTTPS without certificate files or ACME uses the local CA, .*restart denoserve/,
    ],
  ];
  for (const [bad, message] of cases) {
    await Deno.writeTextFile(`${tmp.path}/config.yaml`, bad);
    const before = cli.output().length;
    cli.process.kill("SIGHUP");
    // This reload's own line, complete: output from `before` on.
    const added = () => cli.output().slice(before);
    assert.ok(
      await eventually(
        () => /reload failed, still serving the previous configuration: .*\n/.test(added()),
        10_000,
      ),
      `no reload failure after SIGHUP:\n${added()}`,
    );
    const failed = added().split("\n").filter((l) => l.includes("reload failed"));
    assert.equal(failed.length, 1, added());
    assert.match(failed[0], message);
    assert.equal(await text(`${cli.url}/a.txt`), "200 one");
  }
});

Deno.test("reload: a new address opens before the old closes; in-flight requests finish", async () => {
  await using tmp = await tempDir();
  await writeFiles(tmp.path, { "one/a.txt": "one" });
  await using srv = await startTestServer({ http: { static_dir: `${tmp.path}/one` } });
  const oldUrl = srv.url;

  // A request held open on the old listener across the move.
  const { promise: release, resolve: letGo } = Promise.withResolvers<void>();
  const { promise: arrived, resolve: arrive } = Promise.withResolvers<void>();
  const slow: App = {
    async handle(_request, ctx) {
      if (ctx.path === "/slow") {
        arrive();
        await release;
      }
      return new Response(`moved ${ctx.path}`);
    },
    errorResponse: (status) => new Response(null, { status }),
    close() {},
  };
  srv.server.swap(slow);
  const inFlight = fetch(`${oldUrl}/slow`).then((r) => r.text());
  await arrived;

  const port = freePort();
  const { config: next } = validate({
    server: { host: "127.0.0.1", port },
    http: { static_dir: `${tmp.path}/one` },
  });
  const result = await srv.server.reload(next);
  assert.deepEqual(result, { listenersReplaced: true });
  assert.equal(srv.server.addr.port, port);
  // The new listener answers while the old one still holds the in-flight request.
  assert.equal(await text(`http://127.0.0.1:${port}/x`), "200 moved /x");
  letGo();
  assert.equal(await inFlight, "moved /slow");
  // Then the old one closes.
  const deadline = Date.now() + 5000;
  while (true) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(oldUrl).port) })
      .catch((e) => e);
    if (conn instanceof Error) break;
    conn.close();
    assert.ok(Date.now() < deadline, "the old listener is still open");
    await new Promise((r) => setTimeout(r, 50));
  }

  // An address that cannot be taken is refused and the running listener stays.
  using blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const busy = validate({
    server: { host: "127.0.0.1", port: (blocker.addr as Deno.NetAddr).port },
  }).config;
  await assert.rejects(srv.server.reload(busy), Deno.errors.AddrInUse);
  assert.equal(srv.server.addr.port, port);
  assert.equal(await text(`http://127.0.0.1:${port}/y`), "200 moved /y");
});

Deno.test("reload: switching the same port from HTTP to HTTPS and back", async () => {
  await using tmp = await tempDir();
  await writeFiles(tmp.path, { "one/a.txt": "one" });
  const certs = await makeCerts(tmp.path);
  await using srv = await startTestServer({ http: { static_dir: `${tmp.path}/one` } });
  const port = srv.server.addr.port;
  const base = { host: "127.0.0.1", port };
  await applyReload(srv.server, () =>
    bootRaw({
      server: base,
      http: { static_dir: `${tmp.path}/one` },
      ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key, hsts: "max-age=60" },
    }, srv.log));
  assert.equal(srv.server.url, `https://127.0.0.1:${port}/`);
  using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  const res = await fetch(`https://localhost:${port}/a.txt`, { client });
  assert.equal(await res.text(), "one");
  assert.equal(res.headers.get("strict-transport-security"), "max-age=60");

  await applyReload(srv.server, () =>
    bootRaw({
      server: base,
      http: { static_dir: `${tmp.path}/one` },
    }, srv.log));
  assert.equal(srv.server.url, `http://127.0.0.1:${port}/`);
  // A connection made in the instant the old listener closes can be reset unless
  // net.ipv4.tcp_migrate_req=1 (README, HTTPS): wait until the old one has closed.
  assert.ok(await eventually(() => listeningSockets(port) === 1, 10_000), "the old listener stays");
  const back = await fetch(`http://127.0.0.1:${port}/a.txt`);
  assert.equal(await back.text(), "one");
  assert.equal(back.headers.get("strict-transport-security"), null);
});
