/**
 * ACME state on disk: the account key and the current certificate with its key, each written
 * atomically (temporary file, then rename) with mode 0600 so that a crash never leaves half a key
 * and a file watcher never sees half a certificate.
 *
 * Layout under `ssl.acme.storage`:
 * - `account.key`: the account's private key (PEM).
 * - `cert.pem`: the certificate chain, leaf first (PEM).
 * - `key.pem`: the certificate's private key (PEM).
 * - `cert.json`: what the certificate was ordered for (`directory_url`, `domains`).
 *
 * @module
 */
import { X509Certificate } from "node:crypto";

/** A certificate with its key, as stored. */
export interface StoredCertificate {
  /** Certificate chain in PEM, leaf first. */
  certPem: string;
  /** Private key in PEM. */
  keyPem: string;
  /** Start of validity of the leaf. */
  notBefore: Date;
  /** End of validity of the leaf. */
  notAfter: Date;
  /** Names the leaf covers (subject alternative names). */
  domains: string[];
  /** Directory the certificate came from. */
  directoryUrl: string;
}

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
export function readAccountKey(paths: StoragePaths): Promise<string | undefined> {
  return readOptional(paths.accountKey);
}

/** Validity and names of the first (leaf) certificate in `certPem`. */
export function inspectCertificate(
  certPem: string,
): { notBefore: Date; notAfter: Date; domains: string[] } {
  const leaf = new X509Certificate(certPem);
  const domains = (leaf.subjectAltName ?? "").split(",").map((s) => s.trim())
    .filter((s) => s.startsWith("DNS:")).map((s) => s.slice(4).toLowerCase());
  return { notBefore: new Date(leaf.validFrom), notAfter: new Date(leaf.validTo), domains };
}

/** The stored certificate, or undefined when there is none or it cannot be read. */
export async function readCertificate(
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
export async function writeCertificate(
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

/**
 * Whether `stored` can be served for `domains` from `directoryUrl` at `now`: it covers every
 * domain, came from the same CA, and has not reached its renewal time.
 */
export function isUsable(
  stored: StoredCertificate,
  domains: readonly string[],
  directoryUrl: string,
  now: number = Date.now(),
): boolean {
  if (stored.directoryUrl && stored.directoryUrl !== directoryUrl) return false;
  const names = new Set(stored.domains);
  if (!domains.every((d) => names.has(d.toLowerCase()))) return false;
  return now < stored.notAfter.getTime();
}

/** The moment two thirds of the certificate's lifetime have passed. */
export function renewalTime(cert: { notBefore: Date; notAfter: Date }): number {
  const start = cert.notBefore.getTime();
  return start + (cert.notAfter.getTime() - start) * 2 / 3;
}
