/**
 * Builds the single executable with `deno compile`, and is the one place that lists the
 * permissions baked into it.
 *
 * ```sh
 * deno task compile                      # dist/denoserve for this machine
 * deno task compile:all                  # dist/denoserve-<target>[.exe] for every target
 * deno run -A scripts/compile.ts --print # print the commands without running them
 * deno run -A scripts/compile.ts --output /tmp/denoserve
 * ```
 *
 * `deno compile` downloads its runtime base (`denort`) unless `DENORT_BIN=/path/to/denort` is set
 * (for other targets: `DENORT_BIN_AARCH64_APPLE_DARWIN=…`, see {@link baseFor}).
 *
 * @module
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { ENV_ALLOWED } from "../src/http/errors.ts";
import { UNSTABLE } from "../src/cli/deno_flags.ts";

export { ENV_ALLOWED, UNSTABLE };

/**
 * Permissions baked into the binary. Network, reading and writing are not narrowed to paths or
 * hosts: the address, the folders, the certificates, the log file and the config file that
 * `--ssl-config` rewrites are all chosen at run time, after the binary is built. Confine them
 * with the operating system instead (see scripts/denoserve.service). The environment is not
 * narrowed either: the ACME client library (`ssl.acme`) lists every variable when it loads.
 * `--allow-sys` only for the host name and network addresses (the local CA's certificate and the
 * start banner on 0.0.0.0 or ::), `--allow-run` only for the trust-store tools of `denoserve
 * trust` on each system ({@link runFor}); no `--allow-import`. `--allow-ffi` only for libc on
 * Linux ({@link ffiFor}).
 */
export const PERMISSIONS: readonly string[] = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys=hostname,networkInterfaces",
  "--no-prompt",
];

/** The targets `compile:all` builds. */
export const TARGETS: readonly string[] = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
];

/** Modules loaded as workers (`server.workers`): compile adds them only when named. */

export const INCLUDES: readonly string[] = ["src/app/worker_main.ts"];

/** Where `target` is written by `compile:all`. */
export function outputFor(target: string): string {
  return `dist/denoserve-${target}${target.includes("windows") ? ".exe" : ""}`;
}

/**
 * On Linux, FFI for libc alone: TCP_NODELAY on the TLS listening socket, shutting down sockets
 * the runtime cannot close, and the open-files limit (`src/server/sockets.ts`).
 */
export function ffiFor(target: string): string[] {
  const linux = /^(x86_64|aarch64)-unknown-linux-gnu$/.exec(target);
  return linux ? [`--allow-ffi=/lib/${linux[1]}-linux-gnu/libc.so.6`] : [];
}

/**
 * The programs `denoserve trust` and `untrust` run on `target`'s system: Debian's and Fedora's
 * trust-store updates and NSS's certutil on Linux, `security` on macOS, `certutil` on Windows.
 */
export function runFor(target: string): string[] {
  if (target.includes("linux")) {
    return ["--allow-run=update-ca-certificates,update-ca-trust,certutil"];
  }
  if (target.includes("apple")) return ["--allow-run=security"];
  if (target.includes("windows")) return ["--allow-run=certutil"];
  return [];
}

/** The `deno` arguments that build the binary (`target` undefined: this machine). */
export function compileArgs(
  options: { output?: string; target?: string } = {},
): string[] {
  return [
    "compile",
    ...UNSTABLE,
    ...PERMISSIONS,
    ...ffiFor(options.target ?? Deno.build.target),
    ...runFor(options.target ?? Deno.build.target),
    ...(options.target ? ["--target", options.target] : []),
    ...INCLUDES.flatMap((file) => ["--include", file]),
    "--output",
    options.output ?? "dist/denoserve",
    "main.ts",
  ];
}

/**
 * The `denort` base for `target`: `DENORT_BIN_<TARGET>` (upper case, dashes as underscores), else
 * `DENORT_BIN` when `target` is this machine's; undefined lets `deno compile` download it. A
 * `DENORT_BIN` that would be used for another target is refused: it would build a binary for the
 * wrong system.
 */
export function baseFor(
  target: string,
  env: (name: string) => string | undefined,
): string | undefined {
  const own = env(`DENORT_BIN_${target.replaceAll("-", "_").toUpperCase()}`);
  if (own) return own;
  const base = env("DENORT_BIN");
  if (base && target !== Deno.build.target) {
    throw new Error(
      `DENORT_BIN is a base for ${Deno.build.target}, not ${target}; set ` +
        `DENORT_BIN_${target.replaceAll("-", "_").toUpperCase()}=/path/to/denort for it`,
    );
  }
  return base || undefined;
}

/** `deno task start`: what the bundled config.yaml needs and no more. */
export const START_PERMISSIONS: readonly string[] = [
  "--allow-net=127.0.0.1:8000",
  "--allow-read=./config.yaml,./static,./templates,./ssl",
  `--allow-env=${ENV_ALLOWED.join(",")}`,
  "--no-prompt",
];

/**
 * The local CA's folder in `deno task https` and `deno task trust`, the same on every system so
 * that the two tasks and their permissions agree (the binary's own default is the system's usual
 * place; on Linux without XDG_DATA_HOME, this one).
 */
export const TASK_CA_DIR = "$HOME/.local/share/denoserve/ca";

/** `deno task https`: the start task's, plus reading and writing the local CA's folder. */
export const HTTPS_PERMISSIONS: readonly string[] = [
  "--allow-net=127.0.0.1:8000",
  `--allow-read=./config.yaml,./static,./templates,./ssl,${TASK_CA_DIR}`,
  `--allow-write=${TASK_CA_DIR}`,
  `--allow-env=${ENV_ALLOWED.join(",")}`,
  "--no-prompt",
];

/**
 * `deno task trust` (and `untrust`): the local CA, the system stores of Debian and Fedora, and
 * the NSS databases under HOME; the trust-store tools.
 */
export const TRUST_PERMISSIONS: readonly string[] = [
  `--allow-read=${TASK_CA_DIR},/usr/local/share/ca-certificates,/etc/pki/ca-trust/source/anchors,` +
  "$HOME/.pki,$HOME/.mozilla,$HOME/snap",
  `--allow-write=${TASK_CA_DIR},/usr/local/share/ca-certificates,/etc/pki/ca-trust/source/anchors,` +
  "$HOME/.pki",
  "--allow-env=DENOSERVE_*,HOME",
  "--allow-run=update-ca-certificates,update-ca-trust,certutil,security",
  "--no-prompt",
];

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      all: { type: "boolean", default: false },
      print: { type: "boolean", default: false },
      output: { type: "string" },
      target: { type: "string" },
    },
  });
  const builds = values.all
    ? TARGETS.map((target) => ({
      target,
      deno: compileArgs({ target, output: outputFor(target) }),
    }))
    : [{
      target: values.target ?? Deno.build.target,
      deno: compileArgs({
        output: values.output === undefined ? undefined : resolve(values.output),
        target: values.target,
      }),
    }];
  const root = new URL("..", import.meta.url);
  for (const { target, deno } of builds) {
    console.log(`deno ${deno.join(" ")}`);
    if (values.print) continue;
    let base;
    try {
      base = baseFor(target, (name) => Deno.env.get(name));
    } catch (e) {
      console.error(`compile: ${(e as Error).message}`);
      return 2;
    }
    const { code } = await new Deno.Command(Deno.execPath(), {
      args: deno,
      cwd: root,
      env: base ? { DENORT_BIN: base } : {},
    }).spawn().status;
    if (code !== 0) {
      console.error(
        `compile: deno compile failed for ${target}; if it could not download its runtime base, ` +
          `set DENORT_BIN=/path/to/denort (DENORT_BIN_<TARGET> for another target) to a denort ` +
          `of Deno ${Deno.version.deno} for that target`,
      );
      return code;
    }
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
