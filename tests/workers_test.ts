import { strict as assert } from "node:assert";
import { spawnCli } from "./support/cli.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { listeningSockets } from "./support/proc.ts";
import { eventually } from "./support/wait.ts";

Deno.test("server.workers: several event loops share the port, reload together, stop cleanly", async () => {
  await using dir = await tempDir();
  const yaml = (root: string) => `server:\n  workers: 3\nhttp:\n  static_dir: ./${root}\n`;
  await writeFiles(dir.path, {
    "one/a.txt": "one",
    "two/a.txt": "two",
    "one.yaml": yaml("one"),
  });
  await using server = await spawnCli(["-p", "0", "-c", `${dir.path}/one.yaml`]);
  assert.match(server.output(), /with 3 workers/);
  const port = Number(new URL(server.url).port);
  // The main thread and two workers each hold a listener on the port.
  assert.equal(listeningSockets(port), 3, `listeners on port ${port}`);

  // The kernel hands each new connection to one of the three listeners (by a hash of its
  // addresses), so 60 of them reach every listener but for a chance of 3·(2/3)^60. A listener
  // whose loop did not serve would leave its share unanswered; each fetch is bounded so that
  // shows as a failure rather than a hang.
  const fresh = async () => {
    const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
    try {
      const response = await fetch(`${server.url}/a.txt`, {
        client,
        signal: AbortSignal.timeout(10_000),
      });
      return await response.text();
    } finally {
      client.close();
    }
  };
  const served = async () => new Set(await Promise.all(Array.from({ length: 60 }, fresh)));
  assert.deepEqual(await served(), new Set(["one"]));

  // Their log lines reach the main thread's console.
  const logged = () => server.output().match(/"GET \/a\.txt" 200 3/g)?.length ?? 0;
  assert.ok(await eventually(() => logged() >= 60, 10_000), `${logged()} access lines`);
  assert.equal(logged(), 60, "one access line per request");

  // SIGHUP: the main thread and every worker take the new configuration; the pool says so once
  // all workers have answered, and from then on every listener serves it.
  await Deno.writeTextFile(`${dir.path}/one.yaml`, yaml("two"));
  server.process.kill("SIGHUP");
  await server.waitFor("reloaded configuration; serving on");
  await server.waitFor("reloaded configuration in 2 workers beside the main thread");
  assert.deepEqual(await served(), new Set(["two"]));

  // A configuration that cannot be read is refused by each worker, named in one line, and all
  // of them keep serving the previous one.
  await Deno.writeTextFile(`${dir.path}/one.yaml`, "http:\n  static_dir: [./one\n");
  server.process.kill("SIGHUP");
  await server.waitFor(
    "reload failed in workers denoserve-worker-1, denoserve-worker-2, still serving the previous",
  );
  await server.waitFor("reload failed, still serving the previous configuration");
  assert.equal(server.output().match(/reloaded configuration in/g)?.length, 1);
  assert.deepEqual(await served(), new Set(["two"]));

  // A configuration that loads but that the main thread refuses (a section this build does not
  // serve) is refused by every worker too: they run the same checks.
  const before = server.output().length;
  await Deno.writeTextFile(
    `${dir.path}/one.yaml`,
    "version: 2\n" + yaml("one") +
      "extensions:\n  - type: custom\n    config: {}\n",
  );
  server.process.kill("SIGHUP");
  const after = () => server.output().slice(before);
  assert.ok(
    await eventually(
      () => /reload failed in workers denoserve-worker-1, denoserve-worker-2/.test(after()),
      10_000,
    ),
    after(),
  );
  assert.match(after(), /not supported by this build: extensions\[0\] \(type custom\)/);
  assert.doesNotMatch(after(), /reloaded configuration in/);
  assert.deepEqual(await served(), new Set(["two"]));

  assert.equal(await server.stop("SIGTERM"), 0);
});
