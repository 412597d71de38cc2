/**
 * Test helpers: real servers on port 0, the real CLI as a child process, temp folders, and
 * certificates made with openssl.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { validate } from "../src/config/load.ts";
import type { Config } from "../src/config/schema.ts";
import { createLogger, type Logger } from "../src/log/logger.ts";
import { buildApp } from "../src/routes/build.ts";
import { type RunningServer, startServer } from "../src/server/server.ts";

/** The repository's root folder. */
export const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
/** main.ts, for child-process runs. */
export const MAIN = `${ROOT}/main.ts`;

/** A fresh temp folder, removed by the returned disposer. */
export async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "denoserve-test-" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** Writes `files` (relative path → content) below `dir`, making folders as needed. */
export async function writeFiles(dir: string, files: Record<string, string | Uint8Array>) {
  for (const [name, content] of Object.entries(files)) {
    const path = `${dir}/${name}`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    if (typeof content === "string") await Deno.writeTextFile(path, content);
    else await Deno.writeFile(path, content);
  }
}

/** Lines a test logger collected. */
export interface CapturedLog extends Logger {
  lines: string[];
}

/**
 * A logger that keeps lines in memory instead of printing them. Access lines (on, as shipped)
 * are formatted by the real logger and kept as `ACCESS <line>` once it flushes them.
 */
export function captureLogger(level: Config["logging"]["level"] = "DEBUG"): CapturedLog {
  const lines: string[] = [];
  const base = createLogger({
    level,
    forward: (text) => {
      for (const line of text.split("\n")) if (line) lines.push(`ACCESS ${line}`);
    },
  });
  const keep = (lvl: string) => (m: string) => {
    if (base.enabled(lvl as Config["logging"]["level"])) lines.push(`${lvl} ${m}`);
  };
  return {
    ...base,
    lines,
    debug: keep("DEBUG"),
    info: keep("INFO"),
    warn: keep("WARNING"),
    error: keep("ERROR"),
  };
}

/** A server started in this process on 127.0.0.1 and a free port. */
export interface TestServer extends AsyncDisposable {
  url: string;
  server: RunningServer;
  config: Config;
  log: CapturedLog;
}

/**
 * Starts the real server with `raw` configuration merged over port 0 on 127.0.0.1, otherwise on
 * the shipped defaults (access log on, to the test's logger); dispose it to stop it.
 */
export async function startTestServer(raw: Record<string, unknown>): Promise<TestServer> {
  const merged = structuredClone(raw) as Record<string, Record<string, unknown>>;
  merged.server = { host: "127.0.0.1", port: 0, ...merged.server };
  const { config } = validate(merged);
  const log = captureLogger(config.logging.level);
  const server = await startServer(config, log, buildApp(config, log));
  return {
    url: server.url.replace(/\/$/, ""),
    server,
    config,
    log,
    async [Symbol.asyncDispose]() {
      await server.shutdown(2000);
    },
  };
}

/** Output of a finished CLI run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `main.ts` with `args` (all permissions unless `permissions` is given). */
export async function runCli(
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; permissions?: string[] } = {},
): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--unstable-net", ...(options.permissions ?? ["-A"]), MAIN, ...args],
    cwd: options.cwd ?? ROOT,
    env: { NO_COLOR: "1", ...options.env },
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A CLI server running as a child process. */
export interface CliServer extends AsyncDisposable {
  url: string;
  process: Deno.ChildProcess;
  /** Everything it wrote to stderr so far. */
  output(): string;
  /** Waits until its stderr contains `text` (or fails after `ms`). */
  waitFor(text: string | RegExp, ms?: number): Promise<void>;
  /** Sends a signal and waits for the exit status. */
  stop(signal?: Deno.Signal): Promise<number>;
}

/**
 * Starts `main.ts` with `args` as a child process and waits for its "serving … on URL" line.
 * Pass `-p 0` in `args` to get a free port.
 */
export async function spawnCli(
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; permissions?: string[] } = {},
): Promise<CliServer> {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "--unstable-net", ...(options.permissions ?? ["-A"]), MAIN, ...args],
    cwd: options.cwd ?? ROOT,
    env: { NO_COLOR: "1", ...options.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const waiters: (() => void)[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      for (const w of waiters.splice(0)) w();
    }
  };
  const pumping = Promise.all([pump(process.stdout), pump(process.stderr)]);
  let exited: number | null = null;
  const status = process.status.then((s) => {
    exited = s.code;
    return s.code;
  });
  const waitFor = async (pattern: string | RegExp, ms = 10_000) => {
    const deadline = Date.now() + ms;
    const found = () => typeof pattern === "string" ? text.includes(pattern) : pattern.test(text);
    while (!found()) {
      if (exited !== null) {
        await pumping;
        if (found()) return;
        throw new Error(`process exited (${exited}) before printing ${pattern}:\n${text}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${pattern}:\n${text}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  };
  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    if (exited === null) {
      try {
        process.kill(signal);
      } catch { /* already gone */ }
    }
    const code = await status;
    await pumping;
    return code;
  };
  try {
    await waitFor(/ on (https?:\/\/\S+?)\/? /);
  } catch (e) {
    await stop("SIGKILL");
    throw e;
  }
  const url = / on (https?:\/\/\S+?)\/? /.exec(text)![1];
  return {
    url,
    process,
    output: () => text,
    waitFor,
    stop,
    async [Symbol.asyncDispose]() {
      await stop("SIGKILL");
    },
  };
}

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
  await sign(`${name}.csr`, `${name}-leaf.pem`, "leaf", issuer, from, to);
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

/** SHA-256 fingerprint of the certificate a server at `port` presents, read with openssl s_client. */
export async function servedFingerprint(port: number): Promise<string> {
  const hello = await new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "localhost"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(
    new TextDecoder().decode(hello.stdout),
  );
  if (!pem) throw new Error(`no certificate from 127.0.0.1:${port}`);
  const { X509Certificate } = await import("node:crypto");
  return new X509Certificate(pem[0]).fingerprint256;
}

/** Runs curl with `args`; resolves to its exit code and output. */
export async function curl(args: string[]): Promise<CliResult> {
  const out = await new Deno.Command("curl", { args: ["-sS", ...args], stdin: "null" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/**
 * Whether Linux hands connections queued on a closing SO_REUSEPORT listener to the one that
 * stays; without it a connection arriving in that instant is reset (see README, HTTPS).
 */
export const migrates = (() => {
  try {
    return Deno.readTextFileSync("/proc/sys/net/ipv4/tcp_migrate_req").trim() === "1";
  } catch {
    return false;
  }
})();

/**
 * Fetches `url` in a loop until stopped. With `fresh`, every request opens a new connection.
 * New connections reset while still in a closing listener's accept queue (possible only when
 * net.ipv4.tcp_migrate_req is 0, see README) are counted in `resets`, apart from `failures`.
 */
export function clientLoop(url: string, caPem: string | undefined, fresh: boolean) {
  let stop = false;
  const failures: string[] = [];
  const resets: string[] = [];
  let ok = 0;
  const shared = Deno.createHttpClient({ caCerts: caPem ? [caPem] : [] });
  const done = (async () => {
    while (!stop) {
      const client = fresh ? Deno.createHttpClient({ caCerts: caPem ? [caPem] : [] }) : shared;
      try {
        const res = await fetch(url, { client });
        const text = await res.text();
        if (res.status === 200) ok++;
        else failures.push(`${res.status} ${text.slice(0, 80)}`);
      } catch (e) {
        const why = `${e} ${(e as Error).cause ?? ""}`.split("\n")[0];
        if (!migrates && /\(Connect\): (tcp connect error: )?Connection reset by peer/.test(why)) {
          resets.push(why);
        } else failures.push(why);
      } finally {
        if (fresh) client.close();
      }
    }
    shared.close();
  })();
  return {
    get ok() {
      return ok;
    },
    failures,
    resets,
    async stop() {
      stop = true;
      await done;
      if (resets.length) {
        console.log(
          `${resets.length} new connection(s) reset in a closing listener's accept queue (net.ipv4.tcp_migrate_req=0)`,
        );
      }
    },
  };
}
