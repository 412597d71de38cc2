/**
 * TLS material: reads the certificate chain and private key, checks that they can serve, and
 * explains in one line why they cannot.
 *
 * @module
 */
import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { ConfigError } from "../config/config_error.ts";
import { explainError } from "../http/errors.ts";

/** Days before expiry from which a certificate starts with a warning. */
export const EXPIRY_WARNING_DAYS = 14;

/** Certificate or key files that cannot be served; the message is the one line a person reads. */
export class TlsError extends Error {
  /** Exit status when this stops the server. */
  code = 1;
  constructor(
    /** The file the problem is about. */
    readonly path: string,
    /** Why it cannot be used. */
    readonly reason: string,
  ) {
    super(`Error loading SSL certificates: ${path}: ${reason}`);
    this.name = "TlsError";
  }
}

/** What the leaf certificate says about itself, for logs and checks. */
export interface CertInfo {
  subject: string;
  issuer: string;
  /** Subject alternative names as written in the certificate (`DNS:localhost`, `IP Address:…`). */
  sans: string[];
  notBefore: Date;
  notAfter: Date;
  /** SHA-256 fingerprint, colon-separated hex. */
  fingerprint256: string;
  /** Certificates in the file: the leaf and its intermediates. */
  chainLength: number;
}

/** A certificate chain and its key, checked and ready for `Deno.serve`. */
export interface TlsMaterial {
  certFile: string;
  keyFile: string;
  /** The chain as PEM text (sent whole). */
  cert: string;
  /** The private key as PEM text. */
  key: string;
  info: CertInfo;
  /** Problems that do not stop the server (near expiry, key readable by others). */
  warnings: string[];
  /**
   * With `sites`: the certificates of the sites that have their own, chosen by SNI (`sni.ts`);
   * this one is the default site's.
   */
  sites?: readonly { names: readonly string[]; tls: TlsMaterial }[];
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n[\s\S]*?-----END \1-----/g;

/** Reads `path` as text, turning every failure into a {@link TlsError} that says what to do. */
async function readPem(path: string, what: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new TlsError(path, `the ${what} file does not exist`);
    }
    if (e instanceof Deno.errors.NotCapable) {
      throw new TlsError(
        path,
        `cannot be read: Deno has no read permission for it; run with --allow-read=${path}`,
      );
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new TlsError(
        path,
        "cannot be read: the operating system denies access; check its owner and mode (ls -l)",
      );
    }
    if (e instanceof Deno.errors.IsADirectory) {
      throw new TlsError(path, `is a folder; name the ${what} file itself`);
    }
    throw new TlsError(path, `cannot be read: ${(e as Error).message.split("\n")[0]}`);
  }
}

function blocks(text: string): { label: string; pem: string }[] {
  return [...text.matchAll(PEM_BLOCK)].map((m) => ({ label: m[1], pem: m[0] }));
}

const firstLine = (e: unknown) => (e instanceof Error ? e.message : String(e)).split("\n")[0];

/** Parses the chain in `text` (from `path`); the first certificate is the leaf. */
export function parseChain(path: string, text: string): X509Certificate[] {
  const found = blocks(text);
  if (found.length === 0) {
    throw new TlsError(
      path,
      "is not PEM (expected a -----BEGIN CERTIFICATE----- block; convert DER with " +
        "openssl x509 -inform der -in FILE -out cert.pem)",
    );
  }
  const certs = found.filter((b) => b.label === "CERTIFICATE");
  if (certs.length === 0) {
    const labels = [...new Set(found.map((b) => b.label))].join(", ");
    throw new TlsError(path, `holds no certificate (found ${labels}); is it the key file?`);
  }
  return certs.map((b, i) => {
    try {
      return new X509Certificate(b.pem);
    } catch (e) {
      throw new TlsError(path, `certificate ${i + 1} cannot be parsed: ${firstLine(e)}`);
    }
  });
}

/**
 * The PEM text of a CA file that a backend's certificate must chain to, checked as `parseChain`
 * checks certificates; a {@link ConfigError} naming `key` when it is missing or holds none.
 */
export function readCaFile(key: string, file: string): string {
  let text: string;
  try {
    text = Deno.readTextFileSync(file);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "does not exist" : explainError(e);
    throw new ConfigError(`${key}: ${file} ${why}; point it at a PEM file with the backend's CA`);
  }
  try {
    parseChain(file, text);
  } catch (e) {
    if (!(e instanceof TlsError)) throw e;
    throw new ConfigError(`${key}: ${file} ${e.reason}`);
  }
  return text;
}

/** Parses the private key in `text` (from `path`). */
export function parseKey(path: string, text: string): KeyObject {
  const found = blocks(text);
  if (found.length === 0) {
    throw new TlsError(path, "is not PEM (expected a -----BEGIN PRIVATE KEY----- block)");
  }
  if (
    found.some((b) => b.label === "ENCRYPTED PRIVATE KEY") || /Proc-Type: 4,ENCRYPTED/.test(text)
  ) {
    throw new TlsError(
      path,
      "the private key is protected by a passphrase; write an unprotected copy with " +
        "openssl pkey -in FILE -out key.pem",
    );
  }
  const key = found.find((b) => /^(|RSA |EC )PRIVATE KEY$/.test(b.label));
  if (!key) {
    const labels = [...new Set(found.map((b) => b.label))].join(", ");
    throw new TlsError(path, `holds no private key (found ${labels}); is it the certificate?`);
  }
  try {
    return createPrivateKey(key.pem);
  } catch (e) {
    throw new TlsError(path, `the private key cannot be parsed: ${firstLine(e)}`);
  }
}

/** Describes the leaf of a parsed chain. */
export function describeChain(chain: X509Certificate[]): CertInfo {
  const leaf = chain[0];
  return {
    subject: leaf.subject.replaceAll("\n", ", "),
    issuer: leaf.issuer.replaceAll("\n", ", "),
    sans: leaf.subjectAltName ? leaf.subjectAltName.split(/,\s*/) : [],
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    fingerprint256: leaf.fingerprint256,
    chainLength: chain.length,
  };
}

const day = (d: Date) => d.toISOString().slice(0, 10);

/**
 * The checks of {@link loadTlsMaterial} on PEM already in memory (a certificate from shared ACME
 * storage); `certFile` and `keyFile` name where it came from, for messages.
 */
export function tlsMaterialFromPem(
  certFile: string,
  cert: string,
  keyFile: string,
  keyText: string,
  now: Date = new Date(),
): TlsMaterial {
  const chain = parseChain(certFile, cert);
  const key = parseKey(keyFile, keyText);
  const leaf = chain[0];
  let matches = false;
  try {
    matches = leaf.checkPrivateKey(key);
  } catch { /* a key of another type does not match */ }
  if (!matches) {
    throw new TlsError(
      keyFile,
      `the private key does not match the certificate in ${certFile}; use the key the ` +
        "certificate was issued for",
    );
  }
  const info = describeChain(chain);
  if (now < info.notBefore) {
    throw new TlsError(
      certFile,
      `the certificate is not valid before ${info.notBefore.toISOString()}`,
    );
  }
  if (now > info.notAfter) {
    throw new TlsError(
      certFile,
      `the certificate expired on ${info.notAfter.toISOString()}; renew it (certbot renew)`,
    );
  }
  const warnings: string[] = [];
  const daysLeft = (info.notAfter.getTime() - now.getTime()) / 86_400_000;
  // The local CA's leaves last hours by design, and the server that renews them reports a
  // renewal that fails itself (cli/local_https.ts).
  if (daysLeft < EXPIRY_WARNING_DAYS && !/denoserve local CA/.test(info.issuer)) {
    warnings.push(
      `certificate ${certFile} expires on ${day(info.notAfter)} (in ${
        Math.max(0, Math.floor(daysLeft))
      } days); renew it soon`,
    );
  }
  return { certFile, keyFile, cert, key: keyText, info, warnings };
}

/**
 * Loads and checks a certificate chain and its key: both readable PEM, the key matching the
 * leaf, the leaf valid now. Throws {@link TlsError} with the one-line reason otherwise.
 *
 * @example
 * ```ts
 * const tls = await loadTlsMaterial("./ssl/cert.pem", "./ssl/key.pem");
 * Deno.serve({ cert: tls.cert, key: tls.key }, handler);
 * ```
 */
export async function loadTlsMaterial(
  certFile: string,
  keyFile: string,
  now: Date = new Date(),
): Promise<TlsMaterial> {
  const cert = await readPem(certFile, "certificate");
  const keyText = await readPem(keyFile, "key");
  const material = tlsMaterialFromPem(certFile, cert, keyFile, keyText, now);
  const { warnings } = material;
  const mode = await keyMode(keyFile);
  if (mode !== null && (mode & 0o044) !== 0) {
    warnings.push(
      `key file ${keyFile} is readable by ${
        (mode & 0o040) && (mode & 0o004) ? "group and others" : mode & 0o040 ? "group" : "others"
      } (mode ${
        (mode & 0o777).toString(8).padStart(4, "0")
      }); restrict it with chmod 400 ${keyFile}`,
    );
  }
  return material;
}

async function keyMode(path: string): Promise<number | null> {
  try {
    return (await Deno.stat(path)).mode;
  } catch {
    return null;
  }
}

/** The lines `-d` logs about a certificate at start and on reload. */
export function describeMaterial(tls: TlsMaterial): string[] {
  const { info } = tls;
  return [
    `certificate ${tls.certFile}: subject ${info.subject}; issuer ${info.issuer}`,
    `certificate SANs: ${info.sans.length ? info.sans.join(", ") : "(none)"}`,
    `certificate valid ${info.notBefore.toISOString()} to ${info.notAfter.toISOString()}; ` +
    `chain of ${info.chainLength}; SHA-256 ${info.fingerprint256}`,
  ];
}
