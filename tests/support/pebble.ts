/**
 * Debian's `pebble` (Let's Encrypt's test CA) and `pebble-challtestsrv` (its DNS server), both
 * started on loopback with fresh ports and a fresh TLS certificate.
 *
 * @module
 */
import { makeCerts } from "./certs.ts";
import { tempDir } from "./files.ts";
import { freePort } from "./servers.ts";

const have = (tool: string) => {
  try {
    return new Deno.Command(tool, { args: ["-h"], stdout: "null", stderr: "null" }).outputSync()
      .code !== 127;
  } catch {
    return false;
  }
};
export const HAVE_PEBBLE = have("pebble") && have("pebble-challtestsrv") && have("openssl");
if (!HAVE_PEBBLE) {
  console.warn(
    "pebble, pebble-challtestsrv or openssl missing; install the Debian package pebble",
  );
}

export interface Pebble extends AsyncDisposable {
  directoryUrl: string;
  /** The CA of pebble's own HTTPS (for ssl.acme.ca_file). */
  caFile: string;
  /** Port pebble's VA connects to for http-01. */
  httpPort: number;
  /** pebble's management interface (issuing roots at /roots/0). */
  managementUrl: string;
  dir: string;
  /** Pebble's output so far. */
  output(): string;
  /** Sends `signal` to pebble (SIGSTOP/SIGCONT to hold every answer of the CA). */
  signal(signal: Deno.Signal): void;
}

export interface PebbleOptions {
  /** Lifetime of issued certificates, in seconds. */
  validity?: number;
  /** PEBBLE_VA_ALWAYS_VALID: accept every challenge without looking. */
  alwaysValid?: boolean;
  /** Address every domain resolves to. Default 127.0.0.1. */
  address?: string;
}

/** Starts challtestsrv (DNS) and pebble with fresh ports and a fresh TLS certificate. */
export async function startPebble(options: PebbleOptions = {}): Promise<Pebble> {
  const tmp = await tempDir();
  const dir = tmp.path;
  const srv = await makeCerts(dir, { name: "srv" });
  const [acmePort, mgmtPort, httpPort, tlsPort, dnsPort, dnsMgmt] = Array.from(
    { length: 6 },
    freePort,
  );
  await Deno.writeTextFile(
    `${dir}/pebble.json`,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${mgmtPort}`,
        certificate: srv.cert,
        privateKey: srv.key,
        httpPort,
        tlsPort,
        ocspResponderURL: "",
        externalAccountBindingRequired: false,
        ...(options.validity ? { certificateValidityPeriod: options.validity } : {}),
      },
    }),
  );
  const dns = new Deno.Command("pebble-challtestsrv", {
    args: [
      "-management",
      `127.0.0.1:${dnsMgmt}`,
      "-dns01",
      `127.0.0.1:${dnsPort}`,
      "-http01",
      "",
      "-https01",
      "",
      "-tlsalpn01",
      "",
      "-defaultIPv4",
      options.address ?? "127.0.0.1",
      "-defaultIPv6",
      "",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const chunks: Uint8Array[] = [];
  const pebble = new Deno.Command("pebble", {
    args: ["-config", `${dir}/pebble.json`, "-dnsserver", `127.0.0.1:${dnsPort}`],
    env: {
      PEBBLE_VA_NOSLEEP: "1",
      PEBBLE_WFE_NONCEREJECT: "0",
      PEBBLE_AUTHZREUSE: "0",
      PEBBLE_VA_ALWAYS_VALID: options.alwaysValid ? "1" : "0",
    },
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reading = pebble.stdout.pipeTo(
    new WritableStream({ write: (c) => void chunks.push(c) }),
  ).catch(() => {});
  const stop = async () => {
    for (const p of [pebble, dns]) {
      try {
        p.kill();
        p.kill("SIGCONT"); // a stopped pebble ends only once it runs again
      } catch { /* already gone */ }
      await p.status;
    }
    await reading;
    await tmp[Symbol.asyncDispose]();
  };
  const output = () => new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
  const directoryUrl = `https://127.0.0.1:${acmePort}/dir`;
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(`${dir}/ca.pem`)] });
  try {
    for (let i = 0;; i++) {
      try {
        const r = await fetch(directoryUrl, { client });
        await r.body?.cancel();
        if (r.ok) break;
      } catch (e) {
        if (i > 100) throw new Error(`pebble did not start: ${e}\n${output()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (e) {
    client.close();
    await stop();
    throw e;
  }
  client.close();
  return {
    directoryUrl,
    caFile: `${dir}/ca.pem`,
    httpPort,
    managementUrl: `https://127.0.0.1:${mgmtPort}`,
    dir,
    output,
    signal: (sig) => pebble.kill(sig),
    [Symbol.asyncDispose]: stop,
  };
}
