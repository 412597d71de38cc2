/**
 * Certificates made with openssl for tests: a test CA and leaves signed by it, the
 * self-signed certificate of the PyServe documentation, and the fingerprint a server presents.
 *
 * @module
 */

/** Files of a certificate made by {@link makeCerts}. */
export interface TestCerts {
  /** The root CA certificate (PEM file) clients trust. */
  ca: string;
  /** Its PEM text, for `Deno.createHttpClient({ caCerts })`. */
  caPem: string;
  /** The served chain: the leaf, then the intermediate when there is one. */
  cert: string;
  /** The leaf's key (mode 0600). */
  key: string;
}

/** Options of {@link makeCerts}. */
export interface MakeCertsOptions {
  /** File name stem; several certificates can share a folder and its CA. Default "server". */
  name?: string;
  /** Subject common name. Default "localhost". */
  cn?: string;
  /** Validity; default one hour ago to 30 days ahead. */
  notBefore?: Date;
  notAfter?: Date;
  /** Sign the leaf with an intermediate CA and put it in the chain. Default false. */
  intermediate?: boolean;
  /** DNS names of the leaf (wildcards allowed) instead of localhost, 127.0.0.1 and ::1. */
  names?: string[];
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdin: "null" }).output();
  if (!out.success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

const asn1Time = (d: Date) => d.toISOString().replace(/[-:T]/g, "").slice(0, 14) + "Z";

/**
 * Makes a certificate for localhost (SANs localhost, 127.0.0.1, ::1) signed by a test CA in
 * `dir` (made on first use), with ECDSA P-256 keys for speed. Clients trust `caPem`.
 */
export async function makeCerts(dir: string, options: MakeCertsOptions = {}): Promise<TestCerts> {
  const name = options.name ?? "server";
  const ca = `${dir}/ca.pem`;
  const work = `${dir}/.ca`;
  await Deno.mkdir(work, { recursive: true });
  const exists = await Deno.stat(ca).then(() => true, () => false);
  const genKey = (out: string) =>
    openssl(
      ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", out],
      work,
    );
  const caExt = [
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ];
  if (!exists) {
    await genKey("ca-key.pem");
    await openssl([
      "req",
      "-x509",
      "-new",
      "-key",
      "ca-key.pem",
      "-days",
      "30",
      "-subj",
      "/CN=denoserve test CA",
      ...caExt,
      "-out",
      ca,
    ], work);
    await Deno.writeTextFile(
      `${work}/ca.cnf`,
      [
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial",
        "default_md = sha256\npolicy = p\nunique_subject = no\ncopy_extensions = none",
        "[p]\ncommonName = supplied",
        "[leaf]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature",
        "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1",
        "[inter]\nbasicConstraints = critical,CA:TRUE,pathlen:0\nkeyUsage = critical,keyCertSign,cRLSign\n",
      ].join("\n"),
    );
    await Deno.writeTextFile(`${work}/index.txt`, "");
    await Deno.writeTextFile(`${work}/serial`, "1000\n");
  }
  const sign = async (
    csr: string,
    out: string,
    ext: string,
    issuer: string,
    from: Date,
    to: Date,
  ) => {
    await openssl([
      "ca",
      "-batch",
      "-config",
      "ca.cnf",
      "-extensions",
      ext,
      "-notext",
      "-cert",
      `${issuer}.pem`,
      "-keyfile",
      `${issuer}-key.pem`,
      "-in",
      csr,
      "-out",
      out,
      "-startdate",
      asn1Time(from),
      "-enddate",
      asn1Time(to),
    ], work);
  };
  if (!exists) await Deno.copyFile(ca, `${work}/root.pem`);
  if (!exists) await Deno.copyFile(`${work}/ca-key.pem`, `${work}/root-key.pem`);
  const from = options.notBefore ?? new Date(Date.now() - 3600_000);
  const to = options.notAfter ?? new Date(Date.now() + 30 * 86400_000);
  let issuer = "root";
  let chain = "";
  if (options.intermediate) {
    await genKey(`${name}-inter-key.pem`);
    await openssl([
      "req",
      "-new",
      "-key",
      `${name}-inter-key.pem`,
      "-subj",
      `/CN=${name} intermediate`,
      "-out",
      `${name}-inter.csr`,
    ], work);
    await sign(
      `${name}-inter.csr`,
      `${name}-inter.pem`,
      "inter",
      "root",
      new Date(Date.now() - 3600_000),
      new Date(Date.now() + 30 * 86400_000),
    );
    issuer = `${name}-inter`;
    chain = await Deno.readTextFile(`${work}/${name}-inter.pem`);
  }
  const key = `${dir}/${name}-key.pem`;
  await genKey(`${name}-leaf-key.pem`);
  await openssl([
    "req",
    "-new",
    "-key",
    `${name}-leaf-key.pem`,
    "-subj",
    `/CN=${options.cn ?? "localhost"}`,
    "-out",
    `${name}.csr`,
  ], work);
  let section = "leaf";
  if (options.names) {
    section = `leaf_${name.replace(/\W/g, "_")}`;
    await Deno.writeTextFile(
      `${work}/ca.cnf`,
      `\n[${section}]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n` +
        `extendedKeyUsage = serverAuth\nsubjectAltName = ${
          options.names.map((n) => `DNS:${n}`).join(",")
        }\n`,
      { append: true },
    );
  }
  await sign(`${name}.csr`, `${name}-leaf.pem`, section, issuer, from, to);
  const cert = `${dir}/${name}.pem`;
  await Deno.writeTextFile(cert, (await Deno.readTextFile(`${work}/${name}-leaf.pem`)) + chain);
  await Deno.copyFile(`${work}/${name}-leaf-key.pem`, key);
  await Deno.chmod(key, 0o600);
  return { ca, caPem: await Deno.readTextFile(ca), cert, key };
}

/**
 * The self-signed certificate the PyServe documentation makes with
 * `openssl req -x509 -newkey rsa:4096 -keyout key.pem -out cert.pem -days 365 -nodes`, with a
 * 2048-bit key for speed. It is marked as a CA, which Deno's own TLS client refuses as a server
 * certificate; curl -k and browsers accept it.
 */
export async function makeSpecCert(dir: string): Promise<{ cert: string; key: string }> {
  await openssl([
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-keyout",
    "key.pem",
    "-out",
    "cert.pem",
    "-days",
    "365",
    "-nodes",
    "-subj",
    "/CN=localhost",
  ], dir);
  return { cert: `${dir}/cert.pem`, key: `${dir}/key.pem` };
}

/**
 * The leaf certificate a server at `port` presents to openssl s_client for SNI `servername`
 * (`null`: no SNI at all).
 */
export async function servedCertificate(
  port: number,
  servername: string | null = "localhost",
): Promise<import("node:crypto").X509Certificate> {
  const sni = servername === null ? ["-noservername"] : ["-servername", servername];
  const hello = await new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, ...sni],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(
    new TextDecoder().decode(hello.stdout),
  );
  if (!pem) throw new Error(`no certificate from 127.0.0.1:${port} for ${servername}`);
  const { X509Certificate } = await import("node:crypto");
  return new X509Certificate(pem[0]);
}

/** SHA-256 fingerprint of the certificate a server at `port` presents, read with openssl s_client. */
export async function servedFingerprint(port: number): Promise<string> {
  return (await servedCertificate(port)).fingerprint256;
}

/**
 * {@link makeCerts} for a `Deno.serve` backend: the CA's file, and the leaf's certificate and key
 * as PEM texts.
 */
export async function makeBackendCerts(
  dir: string,
): Promise<{ ca: string; cert: string; key: string }> {
  const made = await makeCerts(dir);
  return {
    ca: made.ca,
    cert: await Deno.readTextFile(made.cert),
    key: await Deno.readTextFile(made.key),
  };
}
