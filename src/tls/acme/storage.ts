/**
 * Where ACME state lives, behind one small interface: the account key, the current certificate
 * with its key, the http-01 answers being validated, and a lock so that one instance orders at a
 * time. Two kinds: a folder (`folder_storage.ts`, one instance) and Redis (`redis_storage.ts`,
 * shared by every instance naming the same server). The manager sees only {@link AcmeStorage}.
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

/** Validity and names of the first (leaf) certificate in `certPem`. */
export function inspectCertificate(
  certPem: string,
): { notBefore: Date; notAfter: Date; domains: string[] } {
  const leaf = new X509Certificate(certPem);
  const domains = (leaf.subjectAltName ?? "").split(",").map((s) => s.trim())
    .filter((s) => s.startsWith("DNS:")).map((s) => s.slice(4).toLowerCase());
  return { notBefore: new Date(leaf.validFrom), notAfter: new Date(leaf.validTo), domains };
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

/** A certificate to store: the chain, its key, and what it was ordered for. */
export interface NewCertificate {
  certPem: string;
  keyPem: string;
  directoryUrl: string;
  domains: string[];
}

/** The order lock while held; see {@link AcmeStorage.tryLock}. */
export interface StorageLock {
  /** False once the lock was found taken over (it expired while we held it). */
  readonly held: boolean;
  /** Gives it up (only if still ours). */
  release(): Promise<void>;
}

/** The http-01 answers being validated, where every instance can read them. */
export interface ChallengeStore {
  put(token: string, keyAuthorization: string): Promise<void>;
  get(token: string): string | undefined | Promise<string | undefined>;
  delete(token: string): Promise<void>;
}

/** ACME state: a folder or a Redis server. */
export interface AcmeStorage {
  /** Where, for messages: the folder, or the Redis URL without its password. */
  readonly where: string;
  /** Whether other instances share it (they may store a certificate at any time). */
  readonly shared: boolean;
  /** The certificate and key files, when the storage is a folder (watched by the reloader). */
  readonly files?: { cert: string; key: string };
  /** Prepares it (creates the folder); throws ConfigError when it cannot be used. */
  open(): Promise<void>;
  readAccountKey(): Promise<string | undefined>;
  /** Stores `pem` unless an account key is there already; resolves to the key to use. */
  writeAccountKey(pem: string): Promise<string>;
  /** The stored certificate, or undefined when there is none or it cannot be read. */
  readCertificate(): Promise<StoredCertificate | undefined>;
  /** Stores a new certificate and its key as one pair and tells the other instances. */
  writeCertificate(cert: NewCertificate): Promise<void>;
  readonly challenges: ChallengeStore;
  /** The order lock, or undefined when another instance holds it. */
  tryLock(): Promise<StorageLock | undefined>;
  /** Calls `changed` when another instance may have stored a certificate; returns a stop. */
  watch(changed: () => void): () => void;
  close(): void;
}

export { isRedisStorage } from "../../config/schema.ts";
