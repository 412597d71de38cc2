/**
 * The import rules of src/ (README, "Where things live"), read from the code itself. The folders
 * stand in layers, and a file may import only from a folder in a lower layer than its own (or its
 * own folder): so nothing imports `cli/`; `config/` and `http/` import nothing above them; `app/`
 * is above `server/`, `routes/`, `proxy/`, `static/` and `tls/`, and nothing below it imports it;
 * and no two folders import each other, directly or round a loop. A Web Worker's module, named by
 * `new URL("…", import.meta.url)`, counts as an import. Only `server/` opens sockets for clients.
 *
 * Run alone: `deno test --allow-read tests/layout_test.ts`.
 */
import { strict as assert } from "node:assert";
import { relative, resolve } from "node:path";
import { ROOT } from "./support/files.ts";

const SRC = `${ROOT}/src`;

/** Top to bottom; folders in one layer do not import each other. */
const LAYERS: string[][] = [
  ["cli"],
  ["app"],
  ["server"],
  ["routes"],
  ["proxy", "static"],
  ["tls"],
  ["redis", "log", "pages"],
  ["config"],
  ["http"],
];
const RANK = new Map(LAYERS.flatMap((layer, i) => layer.map((f) => [f, LAYERS.length - i])));

/** Lower folders a folder still may not import, and why. */
const NEVER: Record<string, Record<string, string>> = {
  // The file server is a library taking plain options, as std's serveDir does; routes/ adapts.
  static: { config: "static/ takes options, not Config (routes/static_files.ts adapts)" },
};

/** Calls that open a socket clients connect to: listeners belong in `server/`. */
const LISTENS = /\bDeno\.(serve|listen|listenTls|listenDatagram)\s*\(|\bnew\s+Deno\.QuicEndpoint\b/;

/**
 * Files outside `server/` allowed to open a listening socket, and why: none serves clients.
 */
const LISTENERS_ALLOWED: Record<string, string> = {
  // A loopback-only bridge to a TLS backend whose certificate is not checked (Deno's TLS clients
  // have no switch for that); only this process connects to it.
  "proxy/connections.ts": "the insecure_skip_verify bridge on 127.0.0.1",
};

/** Every .ts file below src/, with its text, by path relative to src/. */
function sources(dir = SRC, found = new Map<string, string>()): Map<string, string> {
  for (const entry of Deno.readDirSync(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) sources(path, found);
    else if (entry.name.endsWith(".ts")) {
      found.set(relative(SRC, path), Deno.readTextFileSync(path));
    }
  }
  return found;
}

/**
 * The src/ files `text` (the file `file`) imports, as paths relative to src/: static and dynamic
 * relative imports, re-exports, and modules named by `new URL("./x.ts", import.meta.url)`.
 */
function importsOf(file: string, text: string): string[] {
  const found: string[] = [];
  const patterns = [
    /(?:from|import)\s*\(?\s*["'](\.{1,2}\/[^"']+)["']/g,
    /new\s+URL\(\s*["'](\.{1,2}\/[^"']+\.ts)["']\s*,\s*import\.meta\.url/g,
  ];
  for (const pattern of patterns) {
    for (const m of text.matchAll(pattern)) {
      const target = relative(SRC, resolve(`${SRC}/${file}`, "..", m[1]));
      if (!target.startsWith("..")) found.push(target); // deno.json and the like: not src/
    }
  }
  return found;
}

const folder = (path: string) => path.includes("/") ? path.slice(0, path.indexOf("/")) : "";

/** Every broken rule in `files` (path relative to src/ → text), one line each. */
function violations(files: Map<string, string>): string[] {
  const problems: string[] = [];
  for (const [file, text] of files) {
    const from = folder(file);
    const rank = RANK.get(from);
    if (rank === undefined) {
      problems.push(`${file}: folder "${from}/" has no layer; add it to LAYERS`);
      continue;
    }
    for (const target of importsOf(file, text)) {
      const to = folder(target);
      if (to === from) continue;
      const toRank = RANK.get(to);
      if (toRank === undefined) {
        problems.push(`${file} imports ${target}: folder "${to}/" has no layer`);
      } else if (toRank >= rank) {
        problems.push(
          `${file} imports ${target}: ${to}/ is ${toRank > rank ? "above" : "beside"} ${from}/`,
        );
      } else if (NEVER[from]?.[to]) problems.push(`${file} imports ${target}: ${NEVER[from][to]}`);
    }
    if (from !== "server" && !(file in LISTENERS_ALLOWED)) {
      const line = text.split("\n").findIndex((l) => LISTENS.test(l) && !/^\s*(\*|\/\/)/.test(l));
      if (line >= 0) problems.push(`${file}:${line + 1}: opens a listener; only server/ does`);
    }
  }
  return problems;
}

Deno.test("layout: every import runs down the layers, and only server/ listens", () => {
  const files = sources();
  assert.ok(files.size > 40, `found only ${files.size} source files`);
  assert.deepEqual(violations(files), []);
});

Deno.test("layout: the rule check sees imports (it would catch an upward one)", () => {
  // The check above reads what this finds; an import it cannot see would make it pass vacuously.
  const files = sources();
  const of = (file: string) => importsOf(file, files.get(file)!);
  assert.ok(of("cli/run.ts").includes("app/boot.ts"));
  assert.ok(of("routes/build.ts").some((t) => t.startsWith("http/")));
  assert.ok(of("app/workers.ts").includes("app/worker_main.ts"), "a Worker's module");
  // A dynamic import.
  assert.ok(of("cli/run.ts").includes("tls/acme/mod.ts"));
});

Deno.test("layout: each kind of violation is caught", () => {
  const check = (extra: Record<string, string>) => {
    const files = sources();
    for (const [path, text] of Object.entries(extra)) files.set(path, text);
    return violations(files);
  };
  const one = (extra: Record<string, string>, expected: RegExp) => {
    const found = check(extra);
    assert.equal(found.length, 1, found.join("\n"));
    assert.match(found[0], expected);
  };
  one({ "server/x.ts": 'import { boot } from "../app/boot.ts";' }, /app\/ is above server\//);
  one({ "config/x.ts": 'import type { App } from "../routes/build.ts";' }, /above config\//);
  one({ "http/x.ts": 'export { x } from "../log/logger.ts";' }, /above http\//);
  one({ "routes/x.ts": 'import { run } from "../cli/run.ts";' }, /cli\/ is above routes\//);
  one({ "static/x.ts": 'await import("../proxy/proxy.ts");' }, /proxy\/ is beside static\//);
  one(
    { "tls/x.ts": 'new Worker(new URL("../server/w.ts", import.meta.url));' },
    /server\/ is above tls\//,
  );
  one({ "tls/x.ts": "Deno.serve({ port: 80 }, handler);" }, /tls\/x\.ts:1: opens a listener/);
  one({ "routes/x.ts": "const l = Deno.listen({ port: 0 });" }, /opens a listener/);
  one({ "extra/x.ts": "" }, /no layer/);
  one({ "static/x.ts": 'import type { Config } from "../config/schema.ts";' }, /takes options/);
  // A loop needs an arrow that does not point down: it is one of these.
  assert.equal(
    check({
      "proxy/x.ts": 'import "../tls/y.ts";',
      "tls/y.ts": 'import "../proxy/x.ts";',
    }).length,
    1,
  );
  // Comments that name a listener are not one; server/ may listen.
  assert.deepEqual(check({ "tls/x.ts": " * Deno.serve({ cert, key }, handler);" }), []);
  assert.deepEqual(check({ "server/x.ts": "Deno.serve({ port: 0 }, handler);" }), []);
});
