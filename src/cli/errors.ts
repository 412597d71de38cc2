/**
 * Turns failures into the one line a person reads.
 *
 * @module
 */

/**
 * One line for an error: a missing Deno permission names the flag to add; other errors give
 * their message (the stack only when `debug`).
 */
export function explainError(error: unknown, debug = false): string {
  if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
    const m = /Requires (\w+) access to "?([^",]*)"?/.exec(error.message);
    if (m) {
      const [, kind, target] = m;
      const flag = target ? `--allow-${kind}=${target}` : `--allow-${kind}`;
      return `permission denied: ${kind} access to ${target || "this resource"}; run with ${flag}`;
    }
    return `permission denied: ${error.message.split("\n")[0]}`;
  }
  if (error instanceof Error) {
    return debug && error.stack ? error.stack : error.message.split("\n")[0];
  }
  return String(error);
}
