/**
 * Passwords of basic authentication: htpasswd files and the hashes `htpasswd` writes.
 *
 * Verified with maintained code, never hand-written crypto: bcrypt with bcryptjs, Apache MD5
 * (`$apr1$`, and MD5-crypt `$1$`) with apache-md5, SHA-1 (`{SHA}`) and plain passwords with
 * node:crypto. Every comparison is of equal-length digests with `timingSafeEqual`, so the time
 * taken does not depend on where a guess goes wrong. Plain-text (`htpasswd -p`) and DES crypt
 * (`htpasswd -d`, which reads only 8 characters) entries of a file are refused, as are the
 * SHA-crypt hashes (`-2`, `-5`) no maintained JavaScript package verifies.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash, timingSafeEqual } from "node:crypto";
import { PASSWORD_HASHES } from "../config/schema.ts";
import { explainError } from "../http/errors.ts";

/** How one user's password is checked. */
export type Credential =
  | { kind: "plain"; digest: Uint8Array }
  | { kind: "sha1"; digest: Uint8Array }
  | { kind: "md5"; hash: string; digest: Uint8Array }
  | { kind: "bcrypt"; hash: string };

/** The users of one guard: name → credential. */
export type Users = Map<string, Credential>;

const sha256 = (text: string) => createHash("sha256").update(text).digest();

/** Equal-time comparison of `given` with an expected SHA-256 digest. */
export function sameSecret(given: string, expected: Uint8Array): boolean {
  return timingSafeEqual(sha256(given), expected);
}

/** The credential of a plain password. */
export const plainCredential = (password: string): Credential => ({
  kind: "plain",
  digest: sha256(password),
});

/**
 * The credential of a hash {@link PASSWORD_HASHES} accepts, or why `hash` is refused (without
 * showing it: a refused entry may be a plain password).
 */
export function hashCredential(hash: string): Credential | string {
  if (PASSWORD_HASHES.bcrypt.test(hash)) return { kind: "bcrypt", hash };
  if (PASSWORD_HASHES.md5.test(hash)) return { kind: "md5", hash, digest: sha256(hash) };
  if (PASSWORD_HASHES.sha1.test(hash)) {
    return { kind: "sha1", digest: Buffer.from(hash.slice(5), "base64") };
  }
  if (/^\$[56]\$/.test(hash)) {
    return "has a SHA-crypt hash (htpasswd -2 or -5), which denoserve cannot verify; " +
      "recreate it with htpasswd -B (bcrypt)";
  }
  if (/^[./0-9A-Za-z]{13}$/.test(hash)) {
    return "has a DES crypt hash (htpasswd -d), which checks only 8 characters, or a plain " +
      "password; refused: recreate it with htpasswd -B (bcrypt)";
  }
  return "has a plain-text password (htpasswd -p) or a hash denoserve does not know; refused: " +
    "recreate it with htpasswd -B (bcrypt), -m or -s";
}

/** The bytes of `text` in UTF-8, one character per byte (what apache-md5 hashes). */
const utf8Binary = (text: string) =>
  Array.from(new TextEncoder().encode(text), (b) => String.fromCharCode(b)).join("");

/** Whether `password` is the one of `credential`; async for the costly hashes. */
export function verify(credential: Credential, password: string): boolean | Promise<boolean> {
  switch (credential.kind) {
    case "plain":
      return sameSecret(password, credential.digest);
    case "sha1":
      return timingSafeEqual(createHash("sha1").update(password).digest(), credential.digest);
    case "md5":
      // Loaded on first use: only configurations with such hashes pay for it.
      return import("apache-md5").then((module) => {
        // A CommonJS function export, which its declaration file types as a namespace.
        const md5 = module.default as unknown as (password: string, salt: string) => string;
        return sameSecret(md5(utf8Binary(password), credential.hash), credential.digest);
      });
    case "bcrypt":
      return import("bcryptjs").then(({ default: bcrypt }) =>
        bcrypt.compare(password, credential.hash)
      );
  }
}

/** An htpasswd file that cannot be used: `message` is `FILE:LINE: what`. */
export class HtpasswdError extends Error {}

/**
 * The users of an htpasswd file's text: `user:hash` lines (an nginx-style `:comment` after the
 * hash is allowed), blank lines and `#` comments skipped. A malformed line, a user given twice and
 * a refused hash are errors naming `file:line`.
 */
export function parseHtpasswd(text: string, file: string): Users {
  const users: Users = new Map();
  const lines = new Map<string, number>();
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    const at = `${file}:${i + 1}: `;
    if (line === "" || line.startsWith("#")) return;
    const colon = line.indexOf(":");
    if (colon <= 0) {
      problems.push(`${at}expected "user:hash" (as htpasswd writes it)`);
      return;
    }
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1).split(":")[0];
    const shown = JSON.stringify(user);
    const first = lines.get(user);
    if (first !== undefined) {
      problems.push(`${at}user ${shown} is also on line ${first}; remove one`);
      return;
    }
    lines.set(user, i + 1);
    const credential = hashCredential(hash);
    if (typeof credential === "string") problems.push(`${at}user ${shown} ${credential}`);
    else users.set(user, credential);
  });
  if (problems.length) throw new HtpasswdError(problems.join("\n"));
  if (users.size === 0) throw new HtpasswdError(`${file}:1: has no users`);
  return users;
}

/** {@link parseHtpasswd} of the file `file`; read errors are {@link HtpasswdError}s too. */
export function readHtpasswd(file: string): Users {
  let text: string;
  try {
    text = Deno.readTextFileSync(file);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "not found" : explainError(e);
    throw new HtpasswdError(`${file}: cannot be read: ${why}`);
  }
  return parseHtpasswd(text, file);
}
