/**
 * Configuration checks for tests.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/config_error.ts";
import { validate } from "../../src/config/load.ts";
import { runCli } from "./cli.ts";
import { tempDir, writeFiles } from "./files.ts";

/** The message of the configuration error `raw` must raise (fails the test when it is valid). */
export function configError(raw: Record<string, unknown>): string {
  try {
    validate(structuredClone(raw));
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    return e.message;
  }
  assert.fail("expected a configuration error");
}

/** Runs `--test configuration` on `yaml` (as config.yaml); it must exit 2 with `expected`. */
export async function assertCheckRefuses(yaml: string, expected: RegExp): Promise<void> {
  await using dir = await tempDir();
  await writeFiles(dir.path, { "config.yaml": yaml });
  const out = await runCli(["--test", "configuration"], { cwd: dir.path });
  assert.equal(out.code, 2, out.stdout);
  assert.match(out.stdout, expected);
}
