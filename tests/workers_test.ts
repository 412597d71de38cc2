import { strict as assert } from "node:assert";
import { spawnCli, tempDir, writeFiles } from "./helpers.ts";

const threads = async (pid: number) =>
  Number(/Threads:\s+(\d+)/.exec(await Deno.readTextFile(`/proc/${pid}/status`))![1]);

Deno.test("server.workers: several event loops share the port, reload together, stop cleanly", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "one/a.txt": "one",
    "two/a.txt": "two",
    "one.yaml": "server:\n  workers: 3\nhttp:\n  static_dir: ./one\n",
  });
  await using single = await spawnCli(["-p", "0", "-s", `${dir.path}/one`]);
  await using server = await spawnCli(["-p", "0", "-c", `${dir.path}/one.yaml`]);
  assert.match(server.output(), /with 3 workers/);
  const extra = (await threads(server.process.pid)) - (await threads(single.process.pid));
  assert.ok(extra >= 2, `expected two more isolate threads, found ${extra}`);

  // New connections land on any of the listeners; every one answers.
  const fresh = async () => {
    const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
    try {
      return await (await fetch(`${server.url}/a.txt`, { client })).text();
    } finally {
      client.close();
    }
  };
  const before = await Promise.all(Array.from({ length: 60 }, fresh));
  assert.deepEqual(new Set(before), new Set(["one"]));

  // Their log lines reach the main thread's console.
  const logged = () => server.output().match(/"GET \/a\.txt" 200 3/g)?.length ?? 0;
  for (let i = 0; i < 50 && logged() < 60; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(logged(), 60, "one access line per request");

  // SIGHUP: every worker takes the new configuration.
  await Deno.writeTextFile(
    `${dir.path}/one.yaml`,
    "server:\n  workers: 3\nhttp:\n  static_dir: ./two\n",
  );
  server.process.kill("SIGHUP");
  await server.waitFor("reloaded configuration");
  await new Promise((r) => setTimeout(r, 300));
  const after = await Promise.all(Array.from({ length: 60 }, fresh));
  assert.deepEqual(new Set(after), new Set(["two"]));

  assert.equal(await server.stop("SIGTERM"), 0);
});
