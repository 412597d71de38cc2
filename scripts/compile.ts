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
 * `deno compile` downloads its runtime base (`denort`) unless `DENORT_BIN=/path/to/denort` is set.
 *
 * @module
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { ENV_ALLOWED } from "../src/cli/errors.ts";

export { ENV_ALLOWED };

/**
 * Permissions baked into the binary. Network, reading and writing are not narrowed to paths or
 * hosts: the address, the folders, the certificates, the log file and the config file that
 * `--ssl-config` rewrites are all chosen at run time, after the binary is built. Confine them
 * with the operating system instead (see scripts/denoserve.service). No `--allow-run`,
 * `--allow-ffi`, `--allow-sys` or `--allow-import`: the server needs none of them.
 */
export const PERMISSIONS: readonly string[] = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  `--allow-env=${ENV_ALLOWED.join(",")}`,
  "--no-prompt",
];

/** Unstable APIs used: `reusePort` on TLS listeners. */
export const UNSTABLE: readonly string[] = ["--unstable-net"];

/** The targets `compile:all` builds. */
export const TARGETS: readonly string[] = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
];

/** Where `target` is written by `compile:all`. */
export function outputFor(target: string): string {
  return `dist/denoserve-${target}${target.includes("windows") ? ".exe" : ""}`;
}

/** The `deno` arguments that build the binary (`target` undefined: this machine). */
export function compileArgs(
  options: { output?: string; target?: string } = {},
): string[] {
  return [
    "compile",
    ...UNSTABLE,
    ...PERMISSIONS,
    ...(options.target ? ["--target", options.target] : []),
    "--output",
    options.output ?? "dist/denoserve",
    "main.ts",
  ];
}

/** `deno task start`: what the bundled config.yaml needs and no more. */
export const START_PERMISSIONS: readonly string[] = [
  "--allow-net=127.0.0.1:8000",
  "--allow-read=./config.yaml,./static,./templates",
  `--allow-env=${ENV_ALLOWED.join(",")}`,
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
    ? TARGETS.map((target) => compileArgs({ target, output: outputFor(target) }))
    : [compileArgs({
      output: values.output === undefined ? undefined : resolve(values.output),
      target: values.target,
    })];
  const root = new URL("..", import.meta.url);
  for (const deno of builds) {
    console.log(`deno ${deno.join(" ")}`);
    if (values.print) continue;
    const { code } = await new Deno.Command(Deno.execPath(), { args: deno, cwd: root })
      .spawn().status;
    if (code !== 0) {
      console.error(
        "compile: deno compile failed; if it could not download its runtime base, set " +
          "DENORT_BIN=/path/to/denort (the denort of the same Deno version and target)",
      );
      return code;
    }
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
