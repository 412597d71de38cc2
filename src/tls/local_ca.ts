/**
 * The local certificate authority behind `--ssl` without certificate files: a root and an
 * intermediate made once in a per-user folder, and short-lived leaf certificates for the names a
 * developer's server answers on (`localhost`, `127.0.0.1`, `::1`, the configured host, the LAN
 * addresses and host name). `denoserve trust` puts the root into the trust stores, after which
 * browsers and curl accept every leaf without a warning.
 *
 * Certificates are made with `@peculiar/x509` on WebCrypto (ECDSA P-256, as Caddy's local CA).
 * The leaf is kept in files beside the CA, so that the server loads, watches and hot-reloads it
 * as it does any certificate file, and workers read the same pair.
 *
 * @module
 */
import * as x509 from "@peculiar/x509";
import { join } from "node:path";

x509.cryptoProvider.set(crypto);

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY = 86_400_000;
/** The root lasts ten years (it is what people trust; making another means trusting again). */
const ROOT_DAYS = 3650;
/** The intermediate lasts a year and is made again from the root a month before it ends. */
const INTERMEDIATE_DAYS = 365;
const INTERMEDIATE_RENEW_DAYS = 30;
/** A leaf starts this long in the past, for clocks a little behind. */
const BACKDATE_MS = 60_000;

/** Default lifetime of a leaf certificate, in seconds (Caddy's local CA: 12 hours too). */
export const LEAF_LIFETIME = 12 * 3600;

/** The files of a local CA in `folder`. */
export interface LocalCaFiles {
  folder: string;
  /** The root certificate (PEM): what `denoserve trust` installs. */
  root: string;
  rootKey: string;
  intermediate: string;
  intermediateKey: string;
}

/** The files of the local CA kept in `folder`. */
export function caFiles(folder: string): LocalCaFiles {
  return {
    folder,
    root: join(folder, "root.pem"),
    rootKey: join(folder, "root-key.pem"),
    intermediate: join(folder, "intermediate.pem"),
    intermediateKey: join(folder, "intermediate-key.pem"),
  };
}

/**
 * Where the local CA lives: `$DENOSERVE_CA_DIR` when set, else the per-user data folder
 * (`$XDG_DATA_HOME/denoserve/ca` or `~/.local/share/denoserve/ca` on Linux,
 * `~/Library/Application Support/denoserve/ca` on macOS, `%LOCALAPPDATA%\denoserve\ca` on
 * Windows). `env` reads a variable; the names it asks for are the `--allow-env` a start needs.
 */
export function localCaFolder(
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
  os: typeof Deno.build.os = Deno.build.os,
): string {
  const set = (name: string) => {
    const value = env(name);
    return value === undefined || value === "" ? undefined : value;
  };
  const own = set("DENOSERVE_CA_DIR");
  if (own) return own;
  const home = () => {
    const h = set(os === "windows" ? "USERPROFILE" : "HOME");
    if (!h) throw new Error("cannot find the home folder for the local CA; set DENOSERVE_CA_DIR");
    return h;
  };
  if (os === "windows") {
    return join(set("LOCALAPPDATA") ?? join(home(), "AppData", "Local"), "denoserve", "ca");
  }
  if (os === "darwin") return join(home(), "Library", "Application Support", "denoserve", "ca");
  return join(set("XDG_DATA_HOME") ?? join(home(), ".local", "share"), "denoserve", "ca");
}

/** The environment variables {@link localCaFolder} reads with the environment as it is now. */
export function localCaEnvNames(
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
  os: typeof Deno.build.os = Deno.build.os,
): string[] {
  const names: string[] = [];
  localCaFolder((n) => {
    names.push(n);
    return env(n);
  }, os);
  return names;
}

/** A certificate and its key, as PEM. */
interface Pair {
  cert: x509.X509Certificate;
  keys: CryptoKeyPair;
}

const pem = (label: string, der: ArrayBuffer) =>
  x509.PemConverter.encode(der, label).replace(/\r?\n?$/, "\n");

async function exportKey(key: CryptoKey): Promise<string> {
  return pem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", key));
}

async function readPair(certFile: string, keyFile: string): Promise<Pair | undefined> {
  let certText: string, keyText: string;
  try {
    [certText, keyText] = await Promise.all([
      Deno.readTextFile(certFile),
      Deno.readTextFile(keyFile),
    ]);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  const cert = new x509.X509Certificate(certText);
  const privateKey = await crypto.subtle.importKey(
    "pkcs8",
    x509.PemConverter.decodeFirst(keyText),
    ALGORITHM,
    true,
    ["sign"],
  );
  const publicKey = await cert.publicKey.export(ALGORITHM, ["verify"], crypto);
  // A key that is not the certificate's (a pair caught between its two writes) is no pair.
  const probe = new Uint8Array([1]);
  const signature = await crypto.subtle.sign(ALGORITHM, privateKey, probe);
  if (!await crypto.subtle.verify(ALGORITHM, publicKey, signature, probe)) return undefined;
  return { cert, keys: { privateKey, publicKey } };
}

/** Writes `text` to `path` whole (through a file beside it and a rename), with `mode`. */
async function writeWhole(path: string, text: string, mode: number): Promise<void> {
  const temporary = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  await Deno.writeTextFile(temporary, text, { mode });
  if (Deno.build.os !== "windows") await Deno.chmod(temporary, mode);
  await Deno.rename(temporary, path);
}

const serial = () => {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] &= 0x7f; // positive
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
};

/** A name for the CA, unique enough to tell two machines' roots apart in a trust store. */
const caName = (what: string, id: string) => `CN=denoserve local CA ${id} ${what}, O=denoserve`;

async function makeRoot(now: Date): Promise<Pair> {
  const keys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const id = serial().slice(0, 8);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: caName("root", id),
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + ROOT_DAYS * DAY),
    signingAlgorithm: ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys };
}

async function makeIntermediate(root: Pair, now: Date): Promise<Pair> {
  const keys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const id = /denoserve local CA (\w+)/.exec(root.cert.subject)?.[1] ?? serial().slice(0, 8);
  const notAfter = Math.min(now.getTime() + INTERMEDIATE_DAYS * DAY, root.cert.notAfter.getTime());
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: caName("intermediate", id),
    issuer: root.cert.subject,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(notAfter),
    signingAlgorithm: ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: root.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(root.keys.publicKey),
    ],
  });
  return { cert, keys };
}

/** A leaf certificate in its files, as {@link LocalCa.leaf} keeps it. */
export interface Leaf {
  /** The chain file: the leaf, then the intermediate. */
  cert: string;
  /** The leaf's private key file (mode 0600). */
  key: string;
  /** The names it is for. */
  names: string[];
  notAfter: Date;
  /** From when {@link LocalCa.leaf} makes a new one: two thirds into its life. */
  renewAt: Date;
}

const isIp = (name: string) => /^[\d.]+$/.test(name) || name.includes(":");

/**
 * The local CA in `folder`: the root and intermediate, made on first use. The folder is made
 * readable by its owner only; so are the keys.
 */
export class LocalCa {
  private constructor(
    readonly files: LocalCaFiles,
    private root: Pair,
    private intermediate: Pair,
  ) {}

  /** Opens the CA kept in `folder`, making the root and the intermediate when absent or due. */
  static async open(folder: string, now: Date = new Date()): Promise<LocalCa> {
    const files = caFiles(folder);
    await Deno.mkdir(folder, { recursive: true, mode: 0o700 });
    const root = await readPair(files.root, files.rootKey) ??
      await LocalCa.makeRootOnce(files, now);
    return new LocalCa(files, root, await LocalCa.intermediateFor(files, root, now));
  }

  /**
   * Runs `make` alone among the processes using this folder: the folder `.making` is the lock
   * (mkdir is atomic). Another holder is waited for, up to 10 s.
   */
  private static async alone<T>(files: LocalCaFiles, make: () => Promise<T>): Promise<T> {
    const lock = join(files.folder, ".making");
    for (let i = 0;; i++) {
      try {
        await Deno.mkdir(lock);
        break;
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
        if (i === 100) {
          throw new Error(
            `the local CA in ${files.folder} is being changed by another process for 10 s; ` +
              `remove ${lock} if none is running`,
          );
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    try {
      return await make();
    } finally {
      await Deno.remove(lock).catch(() => {});
    }
  }

  /** The root, made when absent (once, whoever else starts at the same moment). */
  private static async makeRootOnce(files: LocalCaFiles, now: Date): Promise<Pair> {
    return await LocalCa.alone(files, async () => {
      const found = await readPair(files.root, files.rootKey);
      if (found) return found;
      const root = await makeRoot(now);
      await writeWhole(files.rootKey, await exportKey(root.keys.privateKey), 0o600);
      await writeWhole(files.root, root.cert.toString("pem") + "\n", 0o644);
      return root;
    });
  }

  /** The intermediate in its files while current, else a new one (made by one process). */
  private static async intermediateFor(files: LocalCaFiles, root: Pair, now: Date) {
    const current = async () => {
      const found = await readPair(files.intermediate, files.intermediateKey).catch(() =>
        undefined
      );
      const ok = found && found.cert.issuer === root.cert.subject &&
        await found.cert.verify({ publicKey: root.keys.publicKey, signatureOnly: true }) &&
        found.cert.notAfter.getTime() - now.getTime() >= INTERMEDIATE_RENEW_DAYS * DAY;
      return ok ? found : undefined;
    };
    return await current() ?? await LocalCa.alone(files, async () => {
      const again = await current();
      if (again) return again;
      const made = await makeIntermediate(root, now);
      await writeWhole(files.intermediateKey, await exportKey(made.keys.privateKey), 0o600);
      await writeWhole(files.intermediate, made.cert.toString("pem") + "\n", 0o644);
      return made;
    });
  }

  /** The root's short id (in its name): tells this root from another machine's. */
  get id(): string {
    return /denoserve local CA (\w+)/.exec(this.root.cert.subject)?.[1] ?? "root";
  }

  /** The root certificate as PEM. */
  get rootPem(): string {
    return this.root.cert.toString("pem") + "\n";
  }

  /** The root's SHA-256 fingerprint, colon-separated upper-case hex (as openssl shows it). */
  async rootFingerprint(): Promise<string> {
    const digest = new Uint8Array(await this.root.cert.getThumbprint("SHA-256", crypto));
    return Array.from(digest, (b) => b.toString(16).padStart(2, "0").toUpperCase()).join(":");
  }

  /**
   * The leaf for `names` in its files: the one on disk while it is current (same names, issued
   * by this intermediate, before its renewal time), else a new one valid for `lifetime` seconds.
   */
  async leaf(names: string[], lifetime: number = LEAF_LIFETIME, now = new Date()): Promise<Leaf> {
    const unique = [...new Set(names.map((n) => n.toLowerCase()))];
    const id = Array.from(
      new Uint8Array(
        await crypto.subtle.digest("SHA-256", new TextEncoder().encode(unique.join(","))),
      ).slice(0, 6),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    const cert = join(this.files.folder, "leaves", `${id}.pem`);
    const key = join(this.files.folder, "leaves", `${id}-key.pem`);
    const renewAt = (c: x509.X509Certificate) => {
      const life = c.notAfter.getTime() - c.notBefore.getTime() - BACKDATE_MS;
      return new Date(c.notAfter.getTime() - life / 3);
    };
    this.intermediate = await LocalCa.intermediateFor(this.files, this.root, now);
    const intermediate = this.intermediate;
    const current = async (): Promise<Leaf | undefined> => {
      const found = await readPair(cert, key).catch(() => undefined);
      const ok = found && found.cert.issuer === intermediate.cert.subject &&
        await found.cert.verify({ publicKey: intermediate.keys.publicKey, signatureOnly: true }) &&
        now < renewAt(found.cert) && now >= found.cert.notBefore &&
        found.cert.notAfter.getTime() - found.cert.notBefore.getTime() <=
          lifetime * 1000 + BACKDATE_MS;
      return ok
        ? { cert, key, names: unique, notAfter: found.cert.notAfter, renewAt: renewAt(found.cert) }
        : undefined;
    };
    const issue = async (): Promise<Leaf> => {
      const keys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
      const made = await x509.X509CertificateGenerator.create({
        serialNumber: serial(),
        subject: `CN=${unique[0]}`,
        issuer: this.intermediate.cert.subject,
        notBefore: new Date(now.getTime() - BACKDATE_MS),
        notAfter: new Date(
          Math.min(now.getTime() + lifetime * 1000, this.intermediate.cert.notAfter.getTime()),
        ),
        signingAlgorithm: ALGORITHM,
        publicKey: keys.publicKey,
        signingKey: this.intermediate.keys.privateKey,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
          new x509.SubjectAlternativeNameExtension(
            unique.map((n) => ({ type: isIp(n) ? "ip" as const : "dns" as const, value: n })),
          ),
          await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
          await x509.AuthorityKeyIdentifierExtension.create(this.intermediate.keys.publicKey),
        ],
      });
      await Deno.mkdir(join(this.files.folder, "leaves"), { recursive: true, mode: 0o700 });
      // The key first: the server takes a new pair once both files have stopped changing.
      await writeWhole(key, await exportKey(keys.privateKey), 0o600);
      await writeWhole(
        cert,
        made.toString("pem") + "\n" + this.intermediate.cert.toString("pem") + "\n",
        0o644,
      );
      return { cert, key, names: unique, notAfter: made.notAfter, renewAt: renewAt(made) };
    };
    // Servers with the same names share the files: one of them makes the next pair.
    return await current() ??
      await LocalCa.alone(this.files, async () => await current() ?? await issue());
  }
}

/** The names a leaf is for: localhost, the loopback addresses, `host`, and `extra`. */
export function leafNames(host: string, extra: string[] = []): string[] {
  const bare = host.replace(/^\[(.*)\]$/, "$1");
  const wildcard = bare === "0.0.0.0" || bare === "::" || bare === "";
  return [
    ...new Set(["localhost", "127.0.0.1", "::1", ...(wildcard ? [] : [bare]), ...extra]),
  ];
}
