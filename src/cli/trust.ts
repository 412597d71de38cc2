/**
 * `denoserve trust` and `denoserve untrust`: the local CA's root into (or out of) the system's
 * trust store and, where `certutil` is installed, the NSS databases that Chromium and Firefox read
 * on Linux. Every step prints what it did, or the command to run by hand when it lacks the rights;
 * nothing is changed without a line saying so.
 *
 * `DENOSERVE_TRUST_ROOT` puts every system path under another folder (a throwaway root for
 * tests); the NSS databases are found under `$HOME`.
 *
 * @module
 */
import { join } from "node:path";
import { explainError, permissionProblem } from "../http/errors.ts";
import { LocalCa, localCaFolder } from "../tls/local_ca.ts";

/** What a step printed and whether it was done. */
interface Step {
  done: boolean;
  lines: string[];
}

/** A command to run: the program and its arguments. */
type Argv = [string, ...string[]];

const shellWord = (w: string) => /^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replaceAll("'", "'\\''")}'`;
const shown = (argv: Argv) => argv.map(shellWord).join(" ");

/**
 * Whether `program` can be run: tried once with `--help` (found on PATH by the system, and
 * allowed by `--allow-run`), its answer ignored.
 */
function hasProgram(program: string): boolean {
  try {
    new Deno.Command(program, { args: ["--help"], stdin: "null", stdout: "null", stderr: "null" })
      .outputSync();
    return true;
  } catch {
    return false;
  }
}

const isDir = (path: string) => {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
};

async function exec(argv: Argv): Promise<{ ok: boolean; output: string }> {
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  const output = (dec.decode(out.stdout) + dec.decode(out.stderr)).trim();
  return { ok: out.success, output };
}

/** Whether `e` says the operating system refused (no rights), as opposed to a Deno permission. */
const refusedByOs = (e: unknown) =>
  e instanceof Deno.errors.PermissionDenied && permissionProblem(e) === undefined;

/** The trust store of this system, as denoserve knows how to change it. */
interface SystemStore {
  name: string;
  /** The file the root goes into. */
  file: string;
  /** Brings the store's bundle up to date after the file was added or removed. */
  update?: Argv;
  /** What to run by hand for `install` (true) or `remove` (false). */
  byHand(install: boolean, root: string): string[];
  /** Instead of a file: add or remove with commands (macOS, Windows). */
  commands?(install: boolean, root: string): Argv[];
}

/** The system trust store under `prefix` (empty: the real one), or undefined when none is known. */
export function systemStore(id: string, prefix: string): SystemStore | undefined {
  const at = (path: string) => prefix ? join(prefix, path) : path;
  const name = `denoserve-${id}`;
  if (Deno.build.os === "darwin") {
    const keychain = "/Library/Keychains/System.keychain";
    const commands = (install: boolean, root: string): Argv[] =>
      install
        ? [["security", "add-trusted-cert", "-d", "-r", "trustRoot", "-k", keychain, root]]
        : [["security", "remove-trusted-cert", "-d", root], [
          "security",
          "delete-certificate",
          "-c",
          `denoserve local CA ${id} root`,
          keychain,
        ]];
    return {
      name: "the macOS System keychain",
      file: keychain,
      commands,
      byHand: (install, root) => commands(install, root).map((c) => `sudo ${shown(c)}`),
    };
  }
  if (Deno.build.os === "windows") {
    const commands = (install: boolean, root: string): Argv[] =>
      install
        ? [["certutil", "-addstore", "-f", "ROOT", root]]
        : [["certutil", "-delstore", "ROOT", `denoserve local CA ${id} root`]];
    return {
      name: "the Windows certificate store (Trusted Root Certification Authorities)",
      file: "ROOT",
      commands,
      byHand: (install, root) =>
        commands(install, root).map((c) => `${shown(c)}   (in an Administrator prompt)`),
    };
  }
  const debian = at("/usr/local/share/ca-certificates");
  if (isDir(debian) && hasProgram("update-ca-certificates")) {
    const update: Argv = prefix
      ? [
        "update-ca-certificates",
        "--localcertsdir",
        debian,
        "--certsdir",
        at("/usr/share/ca-certificates"),
        "--etccertsdir",
        at("/etc/ssl/certs"),
        "--certsconf",
        at("/etc/ca-certificates.conf"),
        "--hooksdir",
        at("/etc/ca-certificates/update.d"),
      ]
      : ["update-ca-certificates"];
    const file = join(debian, `${name}.crt`);
    return {
      name: `the system store (${debian}, update-ca-certificates)`,
      file,
      update,
      byHand: (install, root) => [
        install ? `sudo cp ${shellWord(root)} ${shellWord(file)}` : `sudo rm ${shellWord(file)}`,
        `sudo ${install ? shown(update) : shown([...update, "--fresh"] as Argv)}`,
      ],
    };
  }
  const fedora = at("/etc/pki/ca-trust/source/anchors");
  if (isDir(fedora) && hasProgram("update-ca-trust")) {
    const file = join(fedora, `${name}.pem`);
    return {
      name: `the system store (${fedora}, update-ca-trust)`,
      file,
      // update-ca-trust has no options for another root: under one, it is left to the person.
      update: prefix ? undefined : ["update-ca-trust", "extract"],
      byHand: (install, root) => [
        install ? `sudo cp ${shellWord(root)} ${shellWord(file)}` : `sudo rm ${shellWord(file)}`,
        "sudo update-ca-trust extract",
      ],
    };
  }
  return undefined;
}

/** Installs (or removes) `root` in the system store. */
async function changeSystemStore(
  install: boolean,
  id: string,
  root: string,
  prefix: string,
): Promise<Step> {
  const store = systemStore(id, prefix);
  if (!store) {
    return {
      done: false,
      lines: [
        `system store: none that denoserve knows how to change was found (Debian/Ubuntu ` +
        `update-ca-certificates, Fedora update-ca-trust); ${
          install ? "add" : "remove"
        } ${root} with your system's own tool`,
      ],
    };
  }
  const byHand = (why: string): Step => ({
    done: false,
    lines: [
      `${store.name}: ${why}; run by hand:`,
      ...store.byHand(install, root).map((l) => `  ${l}`),
    ],
  });
  if (store.commands) {
    for (const argv of store.commands(install, root)) {
      let result;
      try {
        result = await exec(argv);
      } catch (e) {
        return byHand(`${argv[0]} could not be run (${explainError(e)})`);
      }
      if (!result.ok) return byHand(`${shown(argv)} failed: ${result.output.split("\n")[0]}`);
    }
    return {
      done: true,
      lines: [`${store.name}: ${install ? "installed" : "removed"} the root (${root})`],
    };
  }
  const present = await Deno.stat(store.file).then(() => true, () => false);
  try {
    if (install) {
      const text = await Deno.readTextFile(root);
      if (present && (await Deno.readTextFile(store.file)) === text) {
        // Still brought up to date below: a bundle made before may lack it.
      } else await Deno.writeTextFile(store.file, text, { mode: 0o644 });
    } else if (present) await Deno.remove(store.file);
    else {
      return {
        done: true,
        lines: [`${store.name}: the root was not installed; nothing to remove`],
      };
    }
  } catch (e) {
    if (refusedByOs(e)) return byHand(`no rights to change ${store.file}`);
    throw e;
  }
  const lines = [
    `${store.name}: ${install ? (present ? "kept" : "wrote") : "removed"} ${store.file}`,
  ];
  if (store.update) {
    // A removed file leaves its link behind unless update-ca-certificates starts afresh.
    const update: Argv = install || store.update[0] !== "update-ca-certificates"
      ? store.update
      : [...store.update, "--fresh"];
    let result;
    try {
      result = await exec(update);
    } catch (e) {
      return {
        done: false,
        lines: [...lines, `could not run ${shown(update)}: ${explainError(e)}`],
      };
    }
    if (!result.ok) {
      return {
        done: false,
        lines: [...lines, `${shown(update)} failed: ${result.output.split("\n").at(-1)}`],
      };
    }
    lines.push(`ran ${shown(update)}`);
  } else {
    lines.push(`bring the bundle up to date by hand: ${store.byHand(install, root).at(-1)}`);
    return { done: false, lines };
  }
  return { done: true, lines };
}

/**
 * The NSS databases of this user: Chromium's (`~/.pki/nssdb`, also under snap) and each
 * Firefox profile's. Chromium's is created when absent, so that a browser not yet started finds
 * the root too.
 */
function nssDatabases(home: string): { dir: string; what: string; create: boolean }[] {
  const found: { dir: string; what: string; create: boolean }[] = [
    { dir: join(home, ".pki", "nssdb"), what: "Chromium", create: true },
  ];
  const chromiumSnap = join(home, "snap", "chromium", "current", ".pki", "nssdb");
  if (isDir(chromiumSnap)) {
    found.push({ dir: chromiumSnap, what: "Chromium (snap)", create: false });
  }
  for (
    const profiles of [
      join(home, ".mozilla", "firefox"),
      join(home, "snap", "firefox", "common", ".mozilla", "firefox"),
    ]
  ) {
    if (!isDir(profiles)) continue;
    for (const entry of Deno.readDirSync(profiles)) {
      const dir = join(profiles, entry.name);
      if (entry.isDirectory && existsFile(join(dir, "cert9.db"))) {
        found.push({ dir, what: `Firefox profile ${entry.name}`, create: false });
      }
    }
  }
  return found;
}

const existsFile = (path: string) => {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
};

/** Adds (or removes) `root` as `nickname` in each NSS database. */
async function changeNss(install: boolean, nickname: string, root: string): Promise<Step[]> {
  if (Deno.build.os !== "linux") return [];
  const home = Deno.env.get("HOME");
  if (!home) return [{ done: false, lines: ["NSS databases: HOME is not set; skipped"] }];
  if (!hasProgram("certutil")) {
    return [{
      done: true,
      lines: [
        "NSS databases (Chromium, Firefox): certutil is not installed, skipped; install " +
        "libnss3-tools (Debian/Ubuntu) or nss-tools (Fedora) and run this again for browsers",
      ],
    }];
  }
  const steps: Step[] = [];
  for (const db of nssDatabases(home)) {
    const d = `sql:${db.dir}`;
    const listed = (await exec(["certutil", "-L", "-d", d, "-n", nickname])).ok;
    const argv: Argv = install
      ? ["certutil", "-A", "-d", d, "-t", "C,,", "-n", nickname, "-i", root]
      : ["certutil", "-D", "-d", d, "-n", nickname];
    const where = `NSS database ${db.dir} (${db.what})`;
    if (install && listed) {
      steps.push({ done: true, lines: [`${where}: already has "${nickname}"`] });
      continue;
    }
    if (!install && !listed) {
      steps.push({ done: true, lines: [`${where}: has no "${nickname}"; nothing to remove`] });
      continue;
    }
    const lines: string[] = [];
    if (install && !isDir(db.dir)) {
      if (!db.create) continue;
      await Deno.mkdir(db.dir, { recursive: true, mode: 0o700 });
      const made = await exec(["certutil", "-N", "-d", d, "--empty-password"]);
      if (!made.ok) {
        steps.push({ done: false, lines: [`${where}: cannot create it: ${made.output}`] });
        continue;
      }
      lines.push(`${where}: created it`);
    }
    const result = await exec(argv);
    steps.push(
      result.ok
        ? {
          done: true,
          lines: [...lines, `${where}: ${install ? "added" : "removed"} "${nickname}"`],
        }
        : {
          done: false,
          lines: [...lines, `${where}: ${shown(argv)} failed: ${result.output}; run it by hand`],
        },
    );
  }
  return steps;
}

/**
 * The `trust` (install) and `untrust` commands: prints a line per step and resolves to 0 when
 * every step was done, 1 when one is left to do by hand.
 */
export async function runTrust(
  install: boolean,
  print: (line: string) => void = console.log,
): Promise<number> {
  const folder = localCaFolder();
  const files = { root: join(folder, "root.pem") };
  if (!install && !existsFile(files.root)) {
    print(`denoserve: no local CA root at ${files.root}; nothing to remove`);
    return 0;
  }
  const ca = await LocalCa.open(folder);
  const id = ca.id;
  const nickname = `denoserve local CA ${id}`;
  print(
    `denoserve: local CA root ${ca.files.root} (SHA-256 ${await ca.rootFingerprint()})`,
  );
  const prefix = Deno.env.get("DENOSERVE_TRUST_ROOT") ?? "";
  const steps = [
    await changeSystemStore(install, id, ca.files.root, prefix),
    ...await changeNss(install, nickname, ca.files.root),
  ];
  for (const step of steps) for (const line of step.lines) print(line);
  const left = steps.filter((s) => !s.done).length;
  print(
    left === 0
      ? `denoserve: ${install ? "trusted" : "no longer trusted"}${
        install ? "; restart running browsers to pick it up" : ""
      }`
      : `denoserve: ${left} step(s) above are left to do by hand`,
  );
  return left === 0 ? 0 : 1;
}
