/**
 * ACME state in a folder, for one instance: files written atomically (temporary file, then
 * rename) with mode 0600, so that a crash never leaves half a key and a file watcher never sees
 * half a certificate. The lock is always granted and the challenge answers live in this
 * process's memory: nothing else orders for this folder.
 *
 * Layout under `ssl.acme.storage`:
 * - `account.key`: the account's private key (PEM).
 * - `cert.pem`: the certificate chain, leaf first (PEM).
 * - `key.pem`: the certificate's private key (PEM).
 * - `cert.json`: what the certificate was ordered for (`directory_url`, `domains`).
 *
 * @module
 */
import { ConfigError } from "../../config/config_error.ts";
import {
  type AcmeStorage,
  type ChallengeStore,
  inspectCertificate,
  type NewCertificate,
  type StoredCertificate,
} from "./storage.ts";

/** Paths of the files in a storage folder. */
export interface StoragePaths {
  accountKey: string;
  cert: string;
  key: string;
  meta: string;
}

/** The files of the storage folder `dir`. */
export function storagePaths(dir: string): StoragePaths {
  return {
    accountKey: `${dir}/account.key`,
    cert: `${dir}/cert.pem`,
    key: `${dir}/key.pem`,
    meta: `${dir}/cert.json`,
  };
}

/** Writes `data` to `path` with mode 0600, replacing the file in one step. */
export async function writePrivate(path: string, data: string): Promise<void> {
  const tmp = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    await Deno.writeTextFile(tmp, data, { mode: 0o600 });
    await Deno.chmod(tmp, 0o600); // mode above is filtered by the umask
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** Creates the storage folder (mode 0700) when missing. */
export async function ensureStorage(dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** The stored account key, or undefined when there is none yet. */
function readAccountKey(paths: StoragePaths): Promise<string | undefined> {
  return readOptional(paths.accountKey);
}

/** The stored certificate, or undefined when there is none or it cannot be read. */
async function readCertificate(
  paths: StoragePaths,
): Promise<StoredCertificate | undefined> {
  const [certPem, keyPem, meta] = await Promise.all([
    readOptional(paths.cert),
    readOptional(paths.key),
    readOptional(paths.meta),
  ]);
  if (!certPem || !keyPem) return undefined;
  let directoryUrl = "";
  try {
    directoryUrl = meta ? String(JSON.parse(meta).directory_url ?? "") : "";
  } catch { /* an unreadable note only means the origin is unknown */ }
  try {
    return { certPem, keyPem, directoryUrl, ...inspectCertificate(certPem) };
  } catch {
    return undefined;
  }
}

/** Stores a new certificate and its key (key first, so a pair on disk always matches). */
async function writeCertificate(
  paths: StoragePaths,
  cert: { certPem: string; keyPem: string; directoryUrl: string; domains: string[] },
): Promise<void> {
  await writePrivate(paths.key + ".new", cert.keyPem);
  await writePrivate(paths.cert + ".new", cert.certPem);
  await Deno.rename(paths.key + ".new", paths.key);
  await Deno.rename(paths.cert + ".new", paths.cert);
  await writePrivate(
    paths.meta,
    JSON.stringify({ directory_url: cert.directoryUrl, domains: cert.domains }, null, 2) + "\n",
  );
}

/** Answers kept in this process's memory. */
export function memoryChallenges(): ChallengeStore {
  const tokens = new Map<string, string>();
  return {
    put: (token, keyAuthorization) => Promise.resolve(void tokens.set(token, keyAuthorization)),
    get: (token) => tokens.get(token),
    delete: (token) => Promise.resolve(void tokens.delete(token)),
  };
}

/** The storage folder `dir`. */
export function folderStorage(dir: string): AcmeStorage {
  const paths = storagePaths(dir);
  return {
    where: dir,
    shared: false,
    files: { cert: paths.cert, key: paths.key },
    async open() {
      try {
        await ensureStorage(dir);
      } catch (e) {
        throw new ConfigError(
          `ssl.acme.storage: cannot create ${dir}: ${e instanceof Error ? e.message : e}`,
        );
      }
    },
    readAccountKey: () => readAccountKey(paths),
    async writeAccountKey(pem) {
      await writePrivate(paths.accountKey, pem);
      return pem;
    },
    readCertificate: () => readCertificate(paths),
    writeCertificate: (cert: NewCertificate) => writeCertificate(paths, cert),
    challenges: memoryChallenges(),
    tryLock: () => Promise.resolve({ held: true, release: () => Promise.resolve() }),
    watch: () => () => {},
    close() {},
  };
}
