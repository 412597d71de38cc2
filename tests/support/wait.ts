/**
 * Waiting for a condition that another process or task makes true.
 *
 * @module
 */

/** Waits until `check` holds, polling every 50 ms for up to `ms`; returns whether it did. */
export async function eventually(check: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}
