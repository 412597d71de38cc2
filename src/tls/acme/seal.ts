/**
 * Private keys at rest in shared storage: AES-256-GCM (WebCrypto) under a key derived from
 * `ssl.acme.storage_key` with scrypt, so a copy of the Redis data (a dump, a replica, a backup)
 * holds no usable key. Each value has its own random IV and is bound to its name (the GCM
 * additional data), so a sealed value moved to another name does not open.
 *
 * Sealed form: `denoserve-sealed:v1:<iv, base64>:<ciphertext and tag, base64>`.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { scrypt } from "node:crypto";

const PREFIX = "denoserve-sealed:v1:";
/** Fixed salt: every instance must derive the same key from the same secret. */
const SALT = "denoserve acme storage v1";
/** scrypt cost: about 50 ms and 16 MiB once per start. */
const SCRYPT = { N: 2 ** 14, r: 8, p: 1 };

/** A value that does not open with this key: another `storage_key`, or damaged data. */
export class SealError extends Error {}

/** Seals and opens values under one key. */
export interface Sealer {
  seal(name: string, plaintext: string): Promise<string>;
  /** Throws {@link SealError} when `sealed` was not sealed under this key and `name`. */
  open(name: string, sealed: string): Promise<string>;
}

/** Whether `value` is in sealed form (and so not a key in clear). */
export const isSealed = (value: string): boolean => value.startsWith(PREFIX);

/** The AES-256-GCM key for `secret`. */
async function deriveKey(secret: string): Promise<CryptoKey> {
  const raw = await new Promise<Buffer>((resolve, reject) =>
    scrypt(secret, SALT, 32, SCRYPT, (e, key) => e ? reject(e) : resolve(key))
  );
  return await crypto.subtle.importKey("raw", new Uint8Array(raw), "AES-GCM", false, [
    "encrypt",
    "decrypt",
  ]);
}

/** A sealer for `secret` (`ssl.acme.storage_key`). */
export async function createSealer(secret: string): Promise<Sealer> {
  const key = await deriveKey(secret);
  const enc = new TextEncoder();
  const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");
  return {
    async seal(name, plaintext) {
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const data = await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: enc.encode(name) },
        key,
        enc.encode(plaintext),
      );
      return `${PREFIX}${b64(iv)}:${b64(new Uint8Array(data))}`;
    },
    async open(name, sealed) {
      if (!isSealed(sealed)) throw new SealError(`${name} is not sealed`);
      const [iv, data] = sealed.slice(PREFIX.length).split(":");
      try {
        const plain = await crypto.subtle.decrypt(
          {
            name: "AES-GCM",
            iv: new Uint8Array(Buffer.from(iv ?? "", "base64")),
            additionalData: enc.encode(name),
          },
          key,
          new Uint8Array(Buffer.from(data ?? "", "base64")),
        );
        return new TextDecoder().decode(plain);
      } catch {
        throw new SealError(
          `${name} does not decrypt with ssl.acme.storage_key (another key, or damaged data)`,
        );
      }
    },
  };
}
