/**
 * The real CLI on the bundled config.yaml (access log on, level INFO, console output), plus one
 * feature at a time, driven the way a client would; after each, the server still answers. The
 * only change to the bundled file is `server.port: 0`, so that tests can run side by side.
 */
import { strict as assert } from "node:assert";
import { parse, stringify } from "yaml";
import { serveBackend } from "./support/backends.ts";
import { makeCerts } from "./support/certs.ts";
import { spawnCli } from "./support/cli.ts";
import { ROOT, tempDir, writeFiles } from "./support/files.ts";

type Raw = Record<string, unknown>;

function merge(base: Raw, extra: Raw): Raw {
  const out: Raw = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    const old = out[k];
    out[k] = typeof v === "object" && v !== null && !Array.isArray(v) &&
        typeof old === "object" && old !== null && !Array.isArray(old)
      ? merge(old as Raw, v as Raw)
      : v;
  }
  return out;
}

/** Starts the CLI in a temp folder holding the bundled config.yaml merged with `extra`. */
async function shipped(extra: Raw = {}, files: Record<string, string> = {}) {
  const dir = await tempDir();
  const bundled = parse(await Deno.readTextFile(`${ROOT}/config.yaml`)) as Raw;
  const config = merge(merge(bundled, { server: { port: 0 } }), extra);
  await writeFiles(dir.path, {
    "config.yaml": stringify(config),
    "static/index.html": "<h1>home</h1>",
    "static/docs/a.txt": "a",
    ...files,
  });
  const cli = await spawnCli([], { cwd: dir.path });
  return {
    cli,
    dir: dir.path,
    url: cli.url.replace(/\/$/, ""),
    /** Access lines printed so far. */
    accessLines: () => cli.output().split("\n").filter((l) => /" \d{3} (\d+|-)/.test(l)),
    async [Symbol.asyncDispose]() {
      assert.equal(await cli.stop("SIGTERM"), 0, cli.output());
      await dir[Symbol.asyncDispose]();
    },
  };
}

async function status(url: string, init?: RequestInit & { client?: Deno.HttpClient }) {
  const res = await fetch(url, init);
  await res.body?.cancel();
  return res.status;
}

/** Waits, bounded, until `check` holds. */
async function until(check: () => boolean, what: string, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test("shipped: the bundled config.yaml serves, logs one access line per request, stops with 0", async () => {
  await using s = await shipped();
  for (let i = 0; i < 5; i++) assert.equal(await status(`${s.url}/`), 200);
  assert.equal(await status(`${s.url}/missing`), 404);
  await until(() => s.accessLines().length >= 6, "six access lines");
  assert.match(s.accessLines().at(-1)!, /"GET \/missing" 404 (\d+|-) id=\S+ ms=\d/);
});

/** One echo session over `url`: sends `text`, resolves with what came back (10 s at most). */
function echoOnce(url: string, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    let got = "";
    const timer = setTimeout(() => {
      reject(new Error(`no echo within 10 s (readyState ${ws.readyState})`));
      ws.close();
    }, 10_000);
    ws.onopen = () => ws.send(text);
    ws.onmessage = (e) => {
      got = String(e.data);
      ws.close(1000);
    };
    ws.onclose = (e) => {
      clearTimeout(timer);
      if (e.code === 1000) resolve(got);
      else reject(new Error(`closed ${e.code}`));
    };
    ws.onerror = () => {};
  });
}

Deno.test("shipped: WebSocket through reverse_proxy with the access log on, 1,000 sessions in a row and 100 at once", async () => {
  await using backend = serveBackend((request) => {
    if (request.headers.get("upgrade") !== "websocket") return new Response("backend");
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onmessage = (e) => socket.send(`echo ${e.data}`);
    return response;
  });
  await using s = await shipped({
    server: { reverse_proxy: [{ path: "/ws", host: "127.0.0.1", port: backend.port }] },
  });
  const ws = `${s.url.replace("http", "ws")}/ws/chat`;
  for (let i = 0; i < 1000; i++) assert.equal(await echoOnce(ws, `m${i}`), `echo m${i}`);
  const together = await Promise.all(
    Array.from({ length: 100 }, (_, i) => echoOnce(ws, `c${i}`)),
  );
  assert.deepEqual(together, Array.from({ length: 100 }, (_, i) => `echo c${i}`));
  assert.equal(await status(`${s.url}/`), 200, "still serving files");
  assert.equal(await status(`${s.url}/ws/plain`), 200, "still proxying");
  const sessions = () => s.accessLines().filter((l) => l.includes('"GET /ws/chat" 101'));
  await until(() => sessions().length === 1100, "1,100 session lines");
  assert.match(sessions()[0], /"GET \/ws\/chat" 101 - id=\S+ ms=\d+\.\d/);
  assert.doesNotMatch(s.cli.output(), /ERROR|Upgrade response was not returned/);
});

Deno.test("shipped: HTTPS with the bundled file's ssl section turned on", async () => {
  await using tmp = await tempDir();
  const certs = await makeCerts(tmp.path);
  await using s = await shipped({
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key },
  });
  assert.match(s.url, /^https:/);
  using client = Deno.createHttpClient({ caCerts: [certs.caPem] });
  const url = s.url.replace("127.0.0.1", "localhost");
  assert.equal(await status(`${url}/`, { client }), 200);
  assert.equal(await status(`${url}/nope`, { client }), 404);
  await until(() => s.accessLines().length >= 2, "two access lines");
});

Deno.test("shipped: basic auth on a location", async () => {
  await using s = await shipped({
    server: { locations: { "/docs": { auth: { type: "basic", username: "u", password: "p" } } } },
  });
  assert.equal(await status(`${s.url}/docs/a.txt`), 401);
  const authorization = `Basic ${btoa("u:p")}`;
  assert.equal(await status(`${s.url}/docs/a.txt`, { headers: { authorization } }), 200);
  assert.equal(await status(`${s.url}/`), 200);
});

Deno.test("shipped: V2 locations", async () => {
  await using s = await shipped({
    version: 2,
    extensions: [{
      type: "routing",
      config: { regex_locations: { "=/health": { return: "200 fine" }, "__default__": {} } },
    }],
  });
  const res = await fetch(`${s.url}/health`);
  assert.equal(await res.text(), "fine");
  assert.equal(await status(`${s.url}/`), 200);
});

Deno.test("shipped: server.workers: 2", async () => {
  await using s = await shipped({ server: { workers: 2 } });
  assert.match(s.cli.output(), /with 2 workers/);
  const fresh = async () => {
    using client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
    return await status(`${s.url}/`, { client });
  };
  const got = await Promise.all(Array.from({ length: 20 }, fresh));
  assert.deepEqual(new Set(got), new Set([200]));
  await until(() => s.accessLines().length >= 20, "twenty access lines");
});

Deno.test("shipped: directory listing and an error template", async () => {
  await using s = await shipped({ http: { directory_listing: true } }, {
    "templates/error_404.html": "<p>custom {{status_code}}: {{error_details}}</p>",
  });
  const listing = await fetch(`${s.url}/docs/`);
  assert.match(await listing.text(), /a\.txt/);
  const missing = await fetch(`${s.url}/nothing-here`);
  assert.equal(missing.status, 404);
  assert.match(await missing.text(), /custom 404: The requested URL \/nothing-here was not found/);
});
