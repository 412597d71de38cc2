/**
 * Turns failures into the one line a person reads.
 *
 * @module
 */

/**
 * Environment variables denoserve reads: its own `DENOSERVE_*` settings and PyServe's `PYSERVE_*`
 * names for them, `NO_COLOR`, and the two debug switches the `yaml` package looks up each time it
 * parses (`LOG_TOKENS`, `LOG_STREAM`).
 * The compiled binary and `deno task start` grant exactly these.
 */
export const ENV_ALLOWED: readonly string[] = [
  "DENOSERVE_*",
  "PYSERVE_*",
  "NO_COLOR",
  "LOG_TOKENS",
  "LOG_STREAM",
];

const knownEnv = (name: string) =>
  ENV_ALLOWED.some((n) => n.endsWith("*") ? name.startsWith(n.slice(0, -1)) : n === name);

/** A missing Deno permission: the kind (`read`, `net`, …) and what was asked for. */
export interface PermissionProblem {
  kind: string;
  target: string;
}

/** The permission `error` reports as missing, or undefined when it is no permission error. */
export function permissionProblem(error: unknown): PermissionProblem | undefined {
  if (!(error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied)) {
    return undefined;
  }
  const m = /Requires (\w+) access to "?([^",]*)"?/.exec(error.message);
  return m ? { kind: m[1], target: m[2] } : undefined;
}

/**
 * How to grant `kind` access to `target`: the flag to add to `deno run`, or, in the compiled
 * binary (whose permissions are fixed when it is built), what to do instead.
 */
export function permissionHint(kind: string, target: string): string {
  if (kind === "env") {
    // One flag for everything denoserve reads, so that a person adds it once, not name by name.
    const flag = knownEnv(target) ? ENV_ALLOWED.join(",") : target;
    if (Deno.build.standalone) {
      return knownEnv(target)
        ? "the binary was built without it; rebuild it with scripts/compile.ts"
        : `the binary reads only ${ENV_ALLOWED.join(", ")}; ` +
          `use a name starting with DENOSERVE_ instead of ${target}`;
    }
    return `run with --allow-env=${flag}`;
  }
  const flag = target ? `--allow-${kind}=${target}` : `--allow-${kind}`;
  if (Deno.build.standalone) {
    return `the binary was built without ${flag}; rebuild it with scripts/compile.ts`;
  }
  return `run with ${flag}`;
}

/**
 * One line for an error: a missing Deno permission names the flag to add; other errors give
 * their message (the stack only when `debug`).
 */
export function explainError(error: unknown, debug = false): string {
  const problem = permissionProblem(error);
  if (problem) {
    const { kind, target } = problem;
    return `permission denied: ${kind} access to ${target || "this resource"}; ${
      permissionHint(kind, target)
    }`;
  }
  if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
    return `permission denied: ${error.message.split("\n")[0]}`;
  }
  if (error instanceof Error) {
    return debug && error.stack ? error.stack : error.message.split("\n")[0];
  }
  return String(error);
}

/** A request body that stopped arriving for longer than `server.body_timeout`. */
export class BodyTimeout extends Error {
  constructor(seconds: number) {
    super(`the request body stopped arriving for ${seconds}s (server.body_timeout)`);
  }
}

/** A request body that grew past the `max_body_size` that applies to its path. */
export class BodyTooLarge extends Error {
  constructor(limit: number, where: string) {
    super(`the request body grew past ${limit} bytes (${where})`);
  }
}

/**
 * The status for a request whose body could not be read: 408 when it stopped arriving (nginx's
 * `client_body_timeout`), 413 when it grew past `max_body_size`, else 400 (the client broke it
 * off or sent it malformed).
 */
export function bodyFailureStatus(error: unknown): 400 | 408 | 413 {
  for (let e = error; e instanceof Error; e = e.cause) {
    if (e instanceof BodyTimeout) return 408;
    if (e instanceof BodyTooLarge) return 413;
  }
  return 400;
}
