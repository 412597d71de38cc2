/**
 * The single executable: the exact compile command and permissions, the built-in assets reached
 * through module imports (so they are inside the binary) from any working directory, the systemd
 * unit, and, where a `denort` base is available, a real build that is run.
 */
import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import {
  baseFor,
  compileArgs,
  ENV_ALLOWED,
  ffiFor,
  INCLUDES,
  outputFor,
  PERMISSIONS,
  runFor,
  TARGETS,
  UNSTABLE,
} from "../scripts/compile.ts";
import { ENV_NAMES } from "../src/config/load.ts";
import { page, welcomePage } from "../src/pages/html.ts";
import { runCli, spawnCli } from "./support/cli.ts";
import { ROOT, tempDir, writeFiles } from "./support/files.ts";

const ENV_FLAG = "--allow-env=DENOSERVE_*,PYSERVE_*,NO_COLOR,LOG_TOKENS,LOG_STREAM";
const dec = new TextDecoder();

Deno.test("the compile command is exactly this", () => {
  assert.deepEqual(compileArgs(), [
    "compile",
    "--unstable-net",
    "--unstable-no-legacy-abort",
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    "--allow-sys=hostname,networkInterfaces",
    "--no-prompt",
    ...ffiFor(Deno.build.target),
    ...runFor(Deno.build.target),
    "--include",
    "src/app/worker_main.ts",
    "--output",
    "dist/denoserve",
    "main.ts",
  ]);
  // FFI for libc alone, on Linux only.
  assert.deepEqual(ffiFor("x86_64-unknown-linux-gnu"), [
    "--allow-ffi=/lib/x86_64-linux-gnu/libc.so.6",
  ]);
  assert.deepEqual(ffiFor("aarch64-unknown-linux-gnu"), [
    "--allow-ffi=/lib/aarch64-linux-gnu/libc.so.6",
  ]);
  assert.deepEqual(ffiFor("x86_64-pc-windows-msvc"), []);
  assert.deepEqual(compileArgs({ target: "aarch64-apple-darwin", output: "/x/y" }), [
    "compile",
    ...UNSTABLE,
    ...PERMISSIONS,
    "--allow-run=security",
    "--target",
    "aarch64-apple-darwin",
    "--include",
    "src/app/worker_main.ts",
    "--output",
    "/x/y",
    "main.ts",
  ]);
  assert.equal(
    denoJson.tasks.compile,
    "deno run --allow-run '--allow-env=DENORT_BIN*' scripts/compile.ts",
  );
  assert.equal(denoJson.tasks["compile:all"], `${denoJson.tasks.compile} --all`);
});

Deno.test("compile:all builds Linux x86_64/aarch64, macOS and Windows", () => {
  assert.deepEqual(TARGETS, [
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-apple-darwin",
    "aarch64-apple-darwin",
    "x86_64-pc-windows-msvc",
  ]);
  assert.equal(outputFor("x86_64-pc-windows-msvc"), "dist/denoserve-x86_64-pc-windows-msvc.exe");
  assert.equal(outputFor("aarch64-unknown-linux-gnu"), "dist/denoserve-aarch64-unknown-linux-gnu");
});

Deno.test("DENORT_BIN is used for this machine's target only; others name their own", () => {
  const host = Deno.build.target;
  const other = host === "aarch64-apple-darwin" ? "x86_64-apple-darwin" : "aarch64-apple-darwin";
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assert.equal(baseFor(host, env({})), undefined);
  assert.equal(baseFor(host, env({ DENORT_BIN: "/b/denort" })), "/b/denort");
  assert.equal(baseFor(other, env({})), undefined);
  assert.throws(
    () => baseFor(other, env({ DENORT_BIN: "/b/denort" })),
    /DENORT_BIN is a base for .*; set DENORT_BIN_[A-Z0-9_]+=/,
  );
  const own = `DENORT_BIN_${other.replaceAll("-", "_").toUpperCase()}`;
  assert.equal(baseFor(other, env({ DENORT_BIN: "/b/denort", [own]: "/o/denort" })), "/o/denort");
});

Deno.test("scripts/compile.ts --print shows the commands it would run", async () => {
  const print = async (...args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "scripts/compile.ts", "--print", ...args],
      cwd: ROOT,
    }).output();
    assert.equal(out.code, 0, dec.decode(out.stderr));
    return dec.decode(out.stdout).trim().split("\n");
  };
  assert.deepEqual(await print(), [`deno ${compileArgs().join(" ")}`]);
  const all = await print("--all");
  assert.equal(all.length, TARGETS.length);
  for (const [i, target] of TARGETS.entries()) {
    assert.equal(all[i], `deno ${compileArgs({ target, output: outputFor(target) }).join(" ")}`);
  }
});

Deno.test("the baked-in permissions are no wider than the server needs", () => {
  assert.deepEqual(PERMISSIONS, [
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    "--allow-sys=hostname,networkInterfaces",
    "--no-prompt",
  ]);
  for (const p of PERMISSIONS) {
    assert.doesNotMatch(p, /^(-A|--allow-all|--allow-(run|ffi|import|hrtime))/);
    assert.doesNotMatch(p, /^--allow-sys$/, "sys only for the host name and addresses");
  }
  // Running programs: only the trust-store tools of `denoserve trust`, named.
  assert.deepEqual(runFor("x86_64-unknown-linux-gnu"), [
    "--allow-run=update-ca-certificates,update-ca-trust,certutil",
  ]);
  assert.deepEqual(runFor("x86_64-pc-windows-msvc"), ["--allow-run=certutil"]);
  assert.deepEqual(ENV_ALLOWED, [
    "DENOSERVE_*",
    "PYSERVE_*",
    "NO_COLOR",
    "LOG_TOKENS",
    "LOG_STREAM",
  ]);
  // Every variable the configuration reads falls under DENOSERVE_* or PyServe's PYSERVE_*.
  for (const name of ENV_NAMES) assert.match(name, /^(DENOSERVE|PYSERVE)_/);
});

Deno.test("every environment variable named in src/ is inside the granted list", async () => {
  const granted = (name: string) =>
    ENV_ALLOWED.some((n) => n.endsWith("*") ? name.startsWith(n.slice(0, -1)) : n === name);
  const named = new Set<string>();
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory) await walk(path);
      else if (e.name.endsWith(".ts")) {
        const text = await Deno.readTextFile(path);
        for (
          const m of text.matchAll(/(?:Deno\.env\.get|process\.env\.?\[?)\(?"?([A-Z_][A-Z0-9_]*)/g)
        ) {
          named.add(m[1]);
        }
      }
    }
  };
  await walk(`${ROOT}/src`);
  for (const name of ENV_NAMES) named.add(name);
  assert.ok(named.has("NO_COLOR"));
  // Read by `denoserve trust`/`untrust` only (cli/trust.ts: the browsers' databases under HOME),
  // never by the server.
  const trustOnly = ["HOME"];
  assert.deepEqual([...named].filter((n) => !granted(n) && !trustOnly.includes(n)), []);
});

Deno.test("no source file reads files next to itself (they would be missing in the binary)", async () => {
  // A worker module is the one file loaded by URL; compile includes it by name.
  const worker = /new Worker\(new URL\("\.\/([\w.]+)", import\.meta\.url\)/g;
  const offenders: string[] = [];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory) await walk(path);
      else if (e.name.endsWith(".ts")) {
        let text = await Deno.readTextFile(path);
        for (const m of text.matchAll(worker)) {
          const file = `${path.slice(ROOT.length + 1, path.lastIndexOf("/"))}/${m[1]}`;
          assert.ok(INCLUDES.includes(file), `${file} is loaded as a worker but not included`);
        }
        text = text.replace(worker, "");
        if (/import\.meta\.(url|dirname|filename)|fileURLToPath|fromFileUrl/.test(text)) {
          offenders.push(path.slice(ROOT.length + 1));
        }
      }
    }
  };
  await walk(`${ROOT}/src`);
  assert.deepEqual(offenders, []);
});

Deno.test("--version prints deno.json's version from any working directory", async () => {
  await using cwd = await tempDir();
  const r = await runCli(["--version"], { cwd: cwd.path, permissions: ["--no-prompt"] });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), `denoserve ${denoJson.version}`);
});

Deno.test("built-in pages come from imports, not files: served with read access to the site only", async () => {
  await using site = await tempDir();
  await writeFiles(site.path, { "files/sub/a.txt": "a" });
  const permissions = [
    "--no-prompt",
    "--allow-net=127.0.0.1",
    ENV_FLAG,
    `--allow-read=${site.path}`,
  ];
  {
    // No static folder: the welcome page, exactly as the module the test imports renders it.
    await using server = await spawnCli(["-p", "0", "-s", "./nothing"], {
      cwd: site.path,
      permissions,
    });
    const home = await fetch(`${server.url}/`);
    assert.equal(await home.text(), welcomePage(`${site.path}/nothing`));
    const missing = await fetch(`${server.url}/x`);
    assert.equal(missing.status, 404);
    assert.match(await missing.text(), /<h1>404 Not Found<\/h1>/);
  }
  await writeFiles(site.path, { "config.yaml": "http:\n  directory_listing: true\n" });
  await using server = await spawnCli(["-p", "0", "-s", "./files"], {
    cwd: site.path,
    permissions,
  });
  const listing = await (await fetch(`${server.url}/sub/`)).text();
  const style = /<style>.*<\/style>/.exec(page("", ""))![0];
  assert.ok(listing.includes(style), "listing without the built-in styles");
  assert.match(listing, /a\.txt/);
  assert.doesNotMatch(server.output(), /permission denied/);
});

// --- the real build -------------------------------------------------------------------------

/** Why the real build cannot run here, or undefined when a denort base is available. */
async function noBase(): Promise<string | undefined> {
  if (baseFor(Deno.build.target, (name) => Deno.env.get(name))) return undefined;
  const info = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"] }).output();
  const denoDir = JSON.parse(dec.decode(info.stdout)).denoDir as string;
  const cached = `${denoDir}/dl/release/v${Deno.version.deno}/denort-${Deno.build.target}.zip`;
  try {
    await Deno.stat(cached);
    return undefined;
  } catch {
    return `no denort base: DENORT_BIN is unset and ${cached} was never downloaded (Deno's ` +
      `download host is not reachable from here). Set DENORT_BIN=/path/to/denort ` +
      `(Deno ${Deno.version.deno}, ${Deno.build.target}) to build and run the binary.`;
  }
}

const skipBuild = await noBase();
if (skipBuild) console.log(`binary_test: the compile test is ignored: ${skipBuild}`);

Deno.test({
  name: "deno compile builds a binary that runs from anywhere with its own assets",
  ignore: skipBuild !== undefined,
  async fn() {
    await using out = await tempDir();
    const bin = `${out.path}/denoserve`;
    const build = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "scripts/compile.ts", "--output", bin],
      cwd: ROOT,
    }).output();
    assert.equal(build.code, 0, dec.decode(build.stderr));
    assert.ok((await Deno.stat(bin)).isFile);

    await using cwd = await tempDir();
    const version = await new Deno.Command(bin, { args: ["--version"], cwd: cwd.path }).output();
    assert.equal(
      dec.decode(version.stdout).trim(),
      `denoserve ${denoJson.version}`,
      "the binary does not behave as denoserve: is DENORT_BIN the denort runtime (not deno)?",
    );

    const server = new Deno.Command(bin, {
      args: ["-p", "0", "-s", "./nothing"],
      cwd: cwd.path,
      env: { NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      let text = "";
      const reader = server.stderr.pipeThrough(new TextDecoderStream()).getReader();
      while (!/ on (http:\/\/\S+?)\/? /.test(text)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`binary exited before serving:\n${text}`);
        text += value;
      }
      const url = / on (http:\/\/\S+?)\/? /.exec(text)![1];
      assert.equal(await (await fetch(`${url}/`)).text(), welcomePage(`${cwd.path}/nothing`));
      const missing = await fetch(`${url}/x`);
      assert.equal(missing.status, 404);
      assert.match(await missing.text(), /<h1>404 Not Found<\/h1>/);
      reader.releaseLock();
    } finally {
      server.kill("SIGTERM");
      await server.status;
      await server.stderr.cancel().catch(() => {});
    }

    // Only DENOSERVE_* variables are readable inside the binary.
    await writeFiles(cwd.path, { "config.yaml": "server:\n  host: ${BIND_ADDRESS}\n" });
    const denied = await new Deno.Command(bin, {
      args: ["--test", "configuration"],
      cwd: cwd.path,
      env: { NO_COLOR: "1", BIND_ADDRESS: "127.0.0.1" },
    }).output();
    const said = dec.decode(denied.stdout) + dec.decode(denied.stderr);
    assert.notEqual(denied.code, 0);
    assert.match(said, /\$\{BIND_ADDRESS\}.*DENOSERVE_/);
  },
});

// --- the systemd unit -----------------------------------------------------------------------

const UNIT = `${ROOT}/scripts/denoserve.service`;

Deno.test("the systemd unit is hardened and reloads with SIGHUP", async () => {
  const unit = await Deno.readTextFile(UNIT);
  const has = (line: string) => assert.ok(unit.split("\n").includes(line), `missing: ${line}`);
  has("User=denoserve");
  has("ProtectSystem=strict");
  has("ReadOnlyPaths=/etc/denoserve /srv/denoserve");
  has("ExecReload=/bin/kill -HUP $MAINPID");
  has("NoNewPrivileges=true");
  has("AmbientCapabilities=CAP_NET_BIND_SERVICE");
  has("CapabilityBoundingSet=CAP_NET_BIND_SERVICE");
  has("ExecStart=/usr/local/bin/denoserve -c /etc/denoserve/config.yaml");
});

const analyze = await (async () => {
  try {
    const out = await new Deno.Command("systemd-analyze", { args: ["--version"] }).output();
    return out.success ? undefined : "systemd-analyze --version failed";
  } catch {
    return "systemd-analyze is not installed (Debian package systemd)";
  }
})();
if (analyze) console.log(`binary_test: the systemd-analyze test is ignored: ${analyze}`);

Deno.test({
  name: "the systemd unit passes systemd-analyze verify",
  ignore: analyze !== undefined,
  async fn() {
    await using dir = await tempDir();
    // verify insists that ExecStart exists: point it at a stand-in executable.
    const stand = `${dir.path}/denoserve`;
    await Deno.writeTextFile(stand, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    const unit = (await Deno.readTextFile(UNIT))
      .replace("ExecStart=/usr/local/bin/denoserve", `ExecStart=${stand}`);
    await Deno.writeTextFile(`${dir.path}/denoserve.service`, unit);
    const out = await new Deno.Command("systemd-analyze", {
      args: ["verify", `${dir.path}/denoserve.service`],
      env: { SYSTEMD_LOG_COLOR: "0" },
    }).output();
    const said = (dec.decode(out.stdout) + dec.decode(out.stderr)).trim();
    // Unknown or malformed settings are only warnings to verify: none may be printed.
    assert.equal(said, "");
    assert.equal(out.code, 0);
  },
});

const strace = await (async () => {
  if (analyze) return analyze;
  try {
    const out = await new Deno.Command("strace", { args: ["-V"] }).output();
    return out.success ? undefined : "strace -V failed";
  } catch {
    return "strace is not installed (Debian package strace)";
  }
})();
if (strace) console.log(`binary_test: the system call test is ignored: ${strace}`);

/** Every system call in a systemd filter set, groups expanded. */
async function filterSet(names: string[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (const name of names) {
    if (!name.startsWith("@")) {
      out.add(name);
      continue;
    }
    const r = await new Deno.Command("systemd-analyze", { args: ["syscall-filter", name] })
      .output();
    const members = dec.decode(r.stdout).split("\n").slice(1).map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"));
    for (const s of await filterSet(members)) out.add(s);
  }
  return out;
}

Deno.test({
  name: "the server's system calls are all allowed by the unit's SystemCallFilter",
  ignore: strace !== undefined,
  async fn() {
    const unit = await Deno.readTextFile(UNIT);
    const filter = /^SystemCallFilter=(.*)$/m.exec(unit)![1].split(/\s+/);
    const allowed = await filterSet(filter);
    await using dir = await tempDir();
    await writeFiles(dir.path, { "static/a.txt": "a" });
    const trace = `${dir.path}/trace`;
    const child = new Deno.Command("strace", {
      args: ["-f", "-qq", "-o", trace, Deno.execPath(), "run", "-A", `${ROOT}/main.ts`, "-p", "0"],
      cwd: dir.path,
      env: { NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    let pid = 0;
    try {
      let text = "";
      const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
      while (!/ on (http:\/\/\S+?)\/? /.test(text)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`server exited before serving:\n${text}`);
        text += value;
      }
      reader.releaseLock();
      const url = / on (http:\/\/\S+?)\/? /.exec(text)![1];
      for (const path of ["/a.txt", "/missing", "/"]) {
        await (await fetch(url + path)).body?.cancel();
      }
      pid = Number(/^(\d+)/.exec(await Deno.readTextFile(trace))![1]);
      Deno.kill(pid, "SIGTERM");
    } finally {
      if (!pid) child.kill("SIGKILL");
      await child.status;
      await child.stderr.cancel().catch(() => {});
    }
    const used = new Set<string>();
    for (const line of (await Deno.readTextFile(trace)).split("\n")) {
      const m = /^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]/.exec(line);
      if (m) used.add(m[1]);
    }
    assert.ok(used.has("accept4") || used.has("accept"), "the trace saw no connection");
    assert.deepEqual([...used].filter((s) => !allowed.has(s)).sort(), []);
  },
});
