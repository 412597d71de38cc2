/**
 * Configuration checks for tests.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/config_error.ts";
import { validate } from "../../src/config/load.ts";

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
