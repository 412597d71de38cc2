/**
 * denoserve: an HTTPS file server and reverse proxy.
 *
 * @module
 */
import { explainError } from "./src/http/errors.ts";
import { run } from "./src/cli/run.ts";

if (import.meta.main) {
  try {
    Deno.exit(await run(Deno.args));
  } catch (e) {
    console.error(
      `denoserve: ${explainError(e, Deno.args.includes("-d") || Deno.args.includes("--debug"))}`,
    );
    Deno.exit(1);
  }
}
