/**
 * `denoserve permissions [-c FILE] [flags] [--systemd]`: the least-privilege `deno run` line for
 * a configuration, every `--allow-*` it needs and nothing else (and `--systemd`: a unit that runs
 * it with the same limits, the file system read-only but for the folders it writes).
 *
 * @module
 */
import { dirname, isAbsolute, relative } from "node:path";
import { parse } from "yaml";
import { ConfigError } from "../config/config_error.ts";
import { loadConfig, type LoadedConfig } from "../config/load.ts";
import {
  cachingConfig,
  type Config,
  isRedisStorage,
  routingConfig,
  securityConfig,
} from "../config/schema.ts";
import { siteConfigs } from "../config/sites.ts";
import { ENV_ALLOWED, explainError } from "../http/errors.ts";
import { NEEDED as FFI_FOR_SOCKETS } from "../server/sockets.ts";
import { localCaEnvNames, localCaFolder } from "../tls/local_ca.ts";
import { isWildcard } from "./addresses.ts";
import type { Flags } from "./flags.ts";
import { usesLocalCa } from "./local_https.ts";
import { UNSTABLE } from "./deno_flags.ts";

/** What a configuration needs of Deno, kind by kind. */
export interface Needed {
  net: string[];
  read: string[];
  write: string[];
  /** Variable names, or "all" where a library lists the whole environment (ACME). */
  env: string[] | "all";
  sys: string[];
  ffi: string[];
  /** What the line cannot cover, said beside it. */
  notes: string[];
}

const hostPort = (host: string, port: number) =>
  `${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${port}`;

const exists = (path: string) => {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
};

/** `host:port` of a URL (its scheme's port when none is written). */
function urlHostPort(url: string, defaultPort?: number): string {
  const u = new URL(url);
  const port = u.port ? Number(u.port) : defaultPort ??
    (u.protocol === "https:" || u.protocol === "wss:" || u.protocol === "rediss:" ? 443 : 80);
  return hostPort(u.hostname.replace(/^\[(.*)\]$/, "$1"), port);
}

/** The `${VAR}` names the configuration file uses (in values, not in comments). */
async function variablesOf(file: string | undefined): Promise<string[]> {
  if (!file) return [];
  const names = new Set<string>();
  const walk = (value: unknown) => {
    if (typeof value === "string") {
      for (const m of value.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)) names.add(m[1]);
    } else if (Array.isArray(value)) value.forEach(walk);
    else if (typeof value === "object" && value !== null) Object.values(value).forEach(walk);
  };
  walk(parse(await Deno.readTextFile(file)));
  return [...names];
}

const coveredEnv = (name: string) =>
  ENV_ALLOWED.some((n) => n.endsWith("*") ? name.startsWith(n.slice(0, -1)) : n === name);

/** Keeps the paths not inside another path of the list. */
function outermost(paths: string[]): string[] {
  const unique = [...new Set(paths)];
  return unique.filter((p) =>
    !unique.some((q) => q !== p && (p.startsWith(q.endsWith("/") ? q : `${q}/`)))
  );
}

/** Everything `config` (loaded from `loaded.file`) needs of Deno to start and serve. */
export async function neededPermissions(loaded: LoadedConfig): Promise<Needed> {
  const { config } = loaded;
  const { server, ssl, logging } = config;
  const net: string[] = [hostPort(server.host, server.port)];
  const read: string[] = [];
  const write: string[] = [];
  const env: string[] = [...ENV_ALLOWED];
  const sys: string[] = [];
  const ffi: string[] = [];
  const notes: string[] = [];
  let allEnv = false;
  if (loaded.file) read.push(loaded.file);
  if (logging.log_file) {
    // Opened for appending, rotated by renaming in its folder.
    read.push(dirname(logging.log_file));
    write.push(dirname(logging.log_file));
  }
  for (const name of await variablesOf(loaded.file)) if (!coveredEnv(name)) env.push(name);

  if (ssl.enabled) {
    if (ssl.redirect_http) net.push(hostPort(server.host, ssl.redirect_http));
    if (Deno.build.os === "linux") ffi.push(FFI_FOR_SOCKETS.replace(/^--allow-ffi=/, ""));
  }
  if (ssl.enabled && ssl.acme) {
    const acme = ssl.acme;
    // The ACME client library lists the whole environment when it loads.
    allEnv = true;
    net.push(urlHostPort(acme.directory_url));
    if (acme.http_port) net.push(hostPort(server.host, acme.http_port));
    if (acme.ca_file) read.push(acme.ca_file);
    if (isRedisStorage(acme.storage)) net.push(urlHostPort(acme.storage, 6379));
    else {
      read.push(acme.storage);
      write.push(acme.storage);
    }
  }
  if (usesLocalCa(config)) {
    const folder = localCaFolder();
    read.push(folder);
    write.push(folder);
    for (const name of localCaEnvNames()) if (!coveredEnv(name)) env.push(name);
    if (isWildcard(server.host)) sys.push("hostname", "networkInterfaces");
  }
  // The start banner lists the machine's addresses when it listens on all of them.
  if (isWildcard(server.host)) sys.push("networkInterfaces");

  const authService = (auth: { url: string; ca_file?: string } | undefined) => {
    if (!auth) return;
    net.push(urlHostPort(auth.url));
    if (auth.ca_file) read.push(auth.ca_file);
  };
  /** What a site reads and reaches: the default site (the top level) and each of `sites`. */
  const site = (c: Config) => {
    read.push(c.http.static_dir);
    // Optional: without it the built-in error pages are used (said once at start).
    if (exists(c.http.templates_dir)) read.push(c.http.templates_dir);
    if (c.ssl.enabled && c.ssl.cert_file) read.push(c.ssl.cert_file);
    if (c.ssl.enabled && c.ssl.key_file) read.push(c.ssl.key_file);
    for (const rule of c.server.reverse_proxy) {
      if (rule.upstreams) net.push(...rule.upstreams);
      else net.push(hostPort(rule.host, rule.port));
      if (rule.ca_file) read.push(rule.ca_file);
      authService(rule.forward_auth);
    }
    for (const location of Object.values(c.server.locations)) {
      if (location.auth?.htpasswd_file) read.push(location.auth.htpasswd_file);
      authService(location.forward_auth);
    }
    const routing = routingConfig(c);
    for (const [pattern, location] of Object.entries(routing?.regex_locations ?? {})) {
      if (location.root) read.push(location.root);
      if (location.proxy_pass) {
        if (/^[a-z]+:\/\/[^/]*\{/i.test(location.proxy_pass)) {
          notes.push(
            `${pattern}: proxy_pass ${location.proxy_pass} chooses its host per request; add ` +
              "each host:port it can name to --allow-net",
          );
        } else net.push(urlHostPort(location.proxy_pass));
      }
    }
    for (const e of c.extensions) if (e.source) read.push(e.source);
    const security = securityConfig(c);
    if (security?.rate_limiting?.backend === "redis" && security.rate_limiting.url) {
      net.push(urlHostPort(security.rate_limiting.url, 6379));
    }
    const caching = cachingConfig(c);
    if (caching?.backend === "redis" && caching.url) net.push(urlHostPort(caching.url, 6379));
  };
  site(config);
  for (const { config: own } of siteConfigs(config)) site(own);

  const loopbackAnyPort = net.includes("127.0.0.1");
  return {
    net: [...new Set(net)].filter((n) => !(loopbackAnyPort && n.startsWith("127.0.0.1:"))),
    read: outermost(read),
    write: outermost(write),
    env: allEnv ? "all" : [...new Set(env)],
    sys: [...new Set(sys)],
    ffi,
    notes,
  };
}

/** The `--allow-*` flags for `needed`, in a fixed order. */
export function permissionFlags(needed: Needed): string[] {
  const flag = (kind: string, values: string[]) =>
    values.length ? [`--allow-${kind}=${values.join(",")}`] : [];
  return [
    ...flag("net", needed.net),
    ...flag("read", needed.read),
    ...flag("write", needed.write),
    ...(needed.env === "all" ? ["--allow-env"] : flag("env", needed.env)),
    ...flag("sys", needed.sys),
    ...flag("ffi", needed.ffi),
  ];
}

const shellWord = (w: string) => /^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replaceAll("'", "'\\''")}'`;

/** main.ts, as the command line names it: relative when under the working folder. */
function mainModule(): string {
  // The module Deno runs: main.ts (under `deno compile`, inside the binary; the line is for
  // `deno run` from a checkout).
  const main = decodeURIComponent(new URL(Deno.mainModule).pathname);
  const rel = relative(Deno.cwd(), main);
  return rel && !rel.startsWith("..") && !isAbsolute(rel) ? rel : main;
}

/** The `deno run` arguments for `needed`, ending with main.ts and `args`. */
export function runArgs(needed: Needed, args: string[]): string[] {
  return [
    "run",
    ...UNSTABLE,
    "--no-prompt",
    ...permissionFlags(needed),
    mainModule(),
    ...args,
  ];
}

/** A systemd unit that runs `deno` with `argv`, the file system read-only but what it writes. */
function systemdUnit(config: Config, file: string | undefined, argv: string[], needed: Needed) {
  const deno = Deno.execPath();
  const lowPorts = [config.server.port, config.ssl.redirect_http, config.ssl.acme?.http_port]
    .some((p) => p !== undefined && p > 0 && p < 1024);
  const paths = [...needed.read, ...needed.write];
  const home = paths.some((p) => /^\/(home|root)(\/|$)/.test(p));
  // A private /tmp would hide files the configuration names there.
  const tmp = paths.some((p) => /^\/(var\/)?tmp(\/|$)/.test(p));
  return [
    "[Unit]",
    `Description=denoserve${file ? ` (${file})` : ""}`,
    "Wants=network-online.target",
    "After=network-online.target",
    "",
    "[Service]",
    "Type=simple",
    `WorkingDirectory=${Deno.cwd()}`,
    `ExecStart=${[deno, ...argv].map(shellWord).join(" ")}`,
    "ExecReload=/bin/kill -HUP $MAINPID",
    "Environment=NO_COLOR=1",
    "Restart=on-failure",
    "RestartSec=2",
    "# Status 2 is a bad configuration or command line: restarting would not fix it.",
    "RestartPreventExitStatus=2",
    ...(lowPorts
      ? [
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
      ]
      : ["CapabilityBoundingSet="]),
    "NoNewPrivileges=true",
    "# The file system is read-only but for the folders the server writes (make them before",
    "# the first start: systemd needs them to exist).",
    "ProtectSystem=strict",
    ...(needed.write.length ? [`ReadWritePaths=${needed.write.map(shellWord).join(" ")}`] : []),
    `ProtectHome=${home ? "read-only" : "true"}`,
    `PrivateTmp=${tmp ? "false" : "true"}`,
    "PrivateDevices=true",
    "ProtectKernelTunables=true",
    "ProtectKernelModules=true",
    "ProtectControlGroups=true",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces=true",
    "LockPersonality=true",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
  ];
}

/**
 * The `permissions` command: loads the configuration as a start would (`args` are the start's
 * own, less the command word and `--systemd`) and prints the line or the unit.
 */
export async function runPermissions(
  flags: Flags,
  args: string[],
  print: (line: string) => void = console.log,
): Promise<number> {
  let loaded: LoadedConfig;
  try {
    loaded = await loadConfig(flags);
  } catch (e) {
    if (!(e instanceof ConfigError)) {
      console.error(`denoserve: ${explainError(e, flags.debug)}`);
      return 1;
    }
    for (const line of e.message.split("\n")) console.error(`denoserve: ${line}`);
    return e.code;
  }
  const needed = await neededPermissions(loaded);
  const rest = args.filter((a, i) => !(a === "permissions" && args.indexOf(a) === i))
    .filter((a) => a !== "--systemd");
  const argv = runArgs(needed, rest);
  if (flags.systemd) {
    for (const line of systemdUnit(loaded.config, loaded.file, argv, needed)) print(line);
  } else {
    // One flag a line, so that each is easy to read and to take out.
    const words = ["deno", ...argv].map(shellWord);
    const first = words.findIndex((w) => /^'?--allow-/.test(w));
    const main = words.indexOf(shellWord(mainModule()));
    print(
      [words.slice(0, first).join(" "), ...words.slice(first, main), words.slice(main).join(" ")]
        .join(" \\\n  "),
    );
  }
  for (const note of needed.notes) console.error(`denoserve: note: ${note}`);
  return 0;
}
