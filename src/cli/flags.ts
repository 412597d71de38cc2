/**
 * Command-line flags, with PyServe's letters.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { Overrides } from "../config/overrides.ts";

/** What the command line asked for, already checked for form. */
export interface Flags extends Overrides {
  debug: boolean;
  version: boolean;
  help: boolean;
  ssl: boolean;
  sslConfig: boolean;
  /** Each `--proxy host:port/path`, parsed. */
  proxy: { host: string; port: number; path: string }[];
  skipProxyCheck: boolean;
  /** `--test all|configuration|directories`. */
  test?: "all" | "configuration" | "directories";
  /** A command word before or among the options: `trust`, `untrust`, `permissions`. */
  command?: Command;
  /** The folder given as an argument (`denoserve ./dist`), also in `static`. */
  folder?: string;
  /** `permissions --systemd`: a systemd unit instead of the command line. */
  systemd: boolean;
}

/** The commands besides serving. */
export const COMMANDS = ["trust", "untrust", "permissions"] as const;
export type Command = typeof COMMANDS[number];

/** A command line that cannot be understood; exit 2 with usage. */
export class UsageError extends Error {}

export const USAGE = `Usage: denoserve [options] [FOLDER]
       denoserve trust | untrust
       denoserve permissions [options] [--systemd]

Serves FOLDER (default ./static, or http.static_dir of the config file).

Commands:
  trust                    install the local CA's root (used by --ssl without --cert/--key)
                           into the system's trust store and the browsers' NSS databases
  untrust                  remove it again
  permissions              print the least-privilege deno run line for the configuration
                           (--systemd: a systemd unit with the same limits)

Options:
  -c, --config PATH        configuration file (default ./config.yaml)
  -H, --host HOST          address to listen on (default 127.0.0.1)
  -p, --port PORT          port to listen on (default 8000)
  -s, --static DIR         folder of static files (default ./static)
  -t, --templates DIR      folder of error page templates (default ./templates)
      --ssl                serve HTTPS (without --cert/--key: a certificate from the local CA)
      --cert FILE          certificate chain (PEM) for --ssl
      --key FILE           private key (PEM) for --ssl
      --ssl-config         save --ssl --cert --key into the config file and exit
      --spa                unknown paths answer index.html (single-page apps)
      --cors               allow cross-origin requests from any origin
      --proxy HOST:PORT/PATH
                           forward PATH to a backend (repeatable)
      --skip-proxy-check   do not probe backends at start
      --test WHAT          check all | configuration | directories and exit
  -d, --debug              debug logging, stack traces on errors
  -v, --version            print the version and exit
  -h, --help               print this help and exit
`;

function parsePort(value: string, flag: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) {
    throw new UsageError(`${flag} must be a port number 0–65535, got "${value}"`);
  }
  return Number(value);
}

function parseProxy(value: string): Flags["proxy"][number] {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):(\d{1,5})(\/.*)?$/.exec(value);
  if (!m) throw new UsageError(`--proxy must be HOST:PORT/PATH, got "${value}"`);
  return { host: m[1], port: parsePort(m[2], "--proxy port"), path: m[3] ?? "/" };
}

/** Parses `args`; throws {@link UsageError} for anything it cannot accept. */
export function parseFlags(args: string[]): Flags {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: true,
      options: {
        config: { type: "string", short: "c" },
        port: { type: "string", short: "p" },
        host: { type: "string", short: "H" },
        static: { type: "string", short: "s" },
        templates: { type: "string", short: "t" },
        debug: { type: "boolean", short: "d", default: false },
        version: { type: "boolean", short: "v", default: false },
        help: { type: "boolean", short: "h", default: false },
        ssl: { type: "boolean", default: false },
        cert: { type: "string" },
        key: { type: "string" },
        "ssl-config": { type: "boolean", default: false },
        proxy: { type: "string", multiple: true, default: [] },
        "skip-proxy-check": { type: "boolean", default: false },
        test: { type: "string" },
        systemd: { type: "boolean", default: false },
        spa: { type: "boolean", default: false },
        cors: { type: "boolean", default: false },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify.*$/s, ""));
  }
  const v = parsed.values;
  for (const name of ["config", "host", "static", "templates", "cert", "key"] as const) {
    if (v[name] === "") throw new UsageError(`--${name} needs a value`);
  }
  const positionals = [...parsed.positionals];
  const command = COMMANDS.find((c) => c === positionals[0]);
  if (command) positionals.shift();
  if (positionals.length > 1 || (command && command !== "permissions" && positionals.length)) {
    throw new UsageError(`unexpected argument "${positionals.at(-1)}"`);
  }
  if (positionals.length && v.static !== undefined) {
    throw new UsageError(`give the folder once: "${positionals[0]}" or --static ${v.static}`);
  }
  if (v.systemd && command !== "permissions") {
    throw new UsageError("--systemd goes with the permissions command");
  }
  const folder = positionals[0];
  const test = v.test;
  if (test !== undefined && !["all", "configuration", "directories"].includes(test)) {
    throw new UsageError(`--test must be all, configuration or directories, got "${test}"`);
  }
  return {
    config: v.config,
    port: v.port === undefined ? undefined : parsePort(v.port, "--port"),
    host: v.host,
    static: v.static ?? folder,
    templates: v.templates,
    debug: v.debug,
    version: v.version,
    help: v.help,
    ssl: v.ssl,
    cert: v.cert,
    key: v.key,
    sslConfig: v["ssl-config"],
    proxy: v.proxy.map(parseProxy),
    skipProxyCheck: v["skip-proxy-check"],
    test: test as Flags["test"],
    spa: v.spa || undefined,
    cors: v.cors || undefined,
    command,
    folder,
    systemd: v.systemd,
  };
}
