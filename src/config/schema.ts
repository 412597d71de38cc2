/**
 * The one schema of denoserve's configuration. Keys keep PyServe's snake_case names so that a
 * PyServe `config.yaml` loads unchanged; everything beyond PyServe is optional with a default.
 *
 * @module
 */
import { z } from "zod";

const shown = (v: unknown) => JSON.stringify(v) ?? String(v);

/** A TCP port; 0 asks the system for a free one (tests use it). */
export const port = () =>
  z.int({ error: (i) => `must be a whole number 0–65535, got ${shown(i.input)}` })
    .min(0, { error: (i) => `must be 0–65535, got ${shown(i.input)}` })
    .max(65535, { error: (i) => `must be 0–65535, got ${shown(i.input)}` });

const positive = (what: string) =>
  z.number({ error: (i) => `must be ${what}, got ${shown(i.input)}` })
    .positive({ error: (i) => `must be ${what}, got ${shown(i.input)}` });

const nonEmpty = z.string({ error: (i) => `must be a string, got ${shown(i.input)}` })
  .min(1, "must not be empty");

const bool = z.boolean({ error: (i) => `must be true or false, got ${shown(i.input)}` });

/** `host:port`, as written in `upstreams`. */
const hostPort = nonEmpty.regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):\d{1,5}$/, {
  error: (i) => `must be host:port, got ${shown(i.input)}`,
});

const urlPath = nonEmpty.refine((p) => p.startsWith("/"), {
  error: (i) => `must start with "/", got ${shown(i.input)}`,
});

export const ProxyRule = z.strictObject({
  /** Public path prefix, matched on segment boundaries. */
  path: urlPath.default("/"),
  /** Backend host (PyServe's form). */
  host: nonEmpty.default("localhost"),
  /** Backend port (PyServe's form). */
  port: port().default(80),
  /** https to the backend. */
  ssl: bool.default(false),
  /** Remove the matched prefix before forwarding (PyServe does). */
  strip_prefix: bool.default(true),
  /** Send the client's Host to the backend instead of the backend's own. */
  preserve_host: bool.default(false),
  /** Extra CA (PEM) to trust for an https backend. */
  ca_file: nonEmpty.optional(),
  /** Accept any backend certificate (warned about loudly). */
  insecure_skip_verify: bool.default(false),
  /** Several backends as host:port; replaces host/port when given. */
  upstreams: z.array(hostPort).min(1, "must list at least one host:port").optional(),
  /** How to pick among upstreams. */
  lb: z.enum(["round_robin", "least_conn"]).default("round_robin"),
  /** Path probed by the active health check; no active check when absent. */
  health_path: urlPath.optional(),
  /** Seconds between active health checks. */
  health_interval: positive("a positive number of seconds").default(10),
  /** Seconds a failed backend stays marked down. */
  fail_timeout: positive("a positive number of seconds").default(10),
  /** Seconds to establish the backend connection. */
  connect_timeout: positive("a positive number of seconds").default(10),
  /** Seconds to wait for the backend's response headers. */
  response_timeout: positive("a positive number of seconds").default(30),
});
export type ProxyRule = z.infer<typeof ProxyRule>;

const Auth = z.strictObject({
  type: z.literal("basic", { error: (i) => `must be "basic", got ${shown(i.input)}` }),
  username: nonEmpty,
  password: nonEmpty.optional(),
  password_hash: nonEmpty.optional(),
  realm: nonEmpty.default("Restricted"),
}).refine((a) => (a.password === undefined) !== (a.password_hash === undefined), {
  error: "needs exactly one of password or password_hash",
});

const Location = z.strictObject({ auth: Auth.optional() });

/** `- /from: /to` (PyServe) or `{ from, to, status }`. */
const Redirect = z.union([
  z.record(urlPath, nonEmpty).refine((r) => Object.keys(r).length === 1, {
    error: "must be a single `/from: /to` pair",
  }),
  z.strictObject({
    from: urlPath,
    to: nonEmpty,
    status: z.union([z.literal(301), z.literal(302), z.literal(307), z.literal(308)], {
      error: (i) => `must be 301, 302, 307 or 308, got ${shown(i.input)}`,
    }).default(302),
  }),
], { error: "must be `/from: /to` or { from, to, status }" });

const Server = z.strictObject({
  /** Address to listen on. */
  host: nonEmpty.default("127.0.0.1"),
  /** Port to listen on. */
  port: port().default(8000),
  /** Accepted for PyServe files; the runtime sizes the listen queue itself. */
  backlog: z.int().positive().default(5),
  /** Worker processes sharing the port; "auto" = one per core. */
  workers: z.union([z.int().min(1).max(256), z.literal("auto")], {
    error: (i) => `must be a whole number ≥ 1 or "auto", got ${shown(i.input)}`,
  }).default(1),
  /** Seconds in-flight requests get to finish on SIGINT/SIGTERM. */
  shutdown_timeout: positive("a positive number of seconds").default(10),
  reverse_proxy: z.array(ProxyRule).default([]),
  redirect_instructions: z.array(Redirect).default([]),
  locations: z.record(urlPath, Location).default({}),
});

const Http = z.strictObject({
  /** Folder served as the site root and under /static/. */
  static_dir: nonEmpty.default("./static"),
  /** Folder of error page templates. */
  templates_dir: nonEmpty.default("./templates"),
  /** HTML listing for folders without index.html. */
  directory_listing: bool.default(false),
  /** Serve files and folders whose name starts with a dot. */
  serve_dotfiles: bool.default(false),
  /** How long a cached file's metadata is trusted before it is checked again (ms; 0 = always). */
  file_cache_ttl_ms: z.int().min(0).default(1000),
  /** Files up to this size are kept in memory (bytes; 0 = never). */
  file_cache_max_file_size: z.int().min(0).default(1024 * 1024),
  /** Memory for cached file bodies in all (bytes). */
  file_cache_max_bytes: z.int().min(0).default(64 * 1024 * 1024),
});

const Acme = z.strictObject({
  email: nonEmpty,
  domains: z.array(nonEmpty).min(1, "must list at least one domain"),
  directory_url: nonEmpty.default("https://acme-v02.api.letsencrypt.org/directory"),
  ca_file: nonEmpty.optional(),
  storage: nonEmpty.default("./ssl/acme"),
  challenge: z.enum(["http-01", "tls-alpn-01"]).default("http-01"),
  http_port: port().default(80),
});

const Ssl = z.strictObject({
  enabled: bool.default(false),
  cert_file: nonEmpty.optional(),
  key_file: nonEmpty.optional(),
  /** Value of Strict-Transport-Security on HTTPS answers; none when absent. */
  hsts: nonEmpty.optional(),
  /** Also listen for plain HTTP on this port and redirect it to HTTPS. */
  redirect_http: port().optional(),
  acme: Acme.optional(),
});

export const LogLevel = z.enum(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], {
  error: (i) => `must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got ${shown(i.input)}`,
});
export type LogLevel = z.infer<typeof LogLevel>;

const Logging = z.strictObject({
  level: z.preprocess((v) => typeof v === "string" ? v.toUpperCase() : v, LogLevel).default(
    "INFO",
  ),
  log_file: nonEmpty.optional(),
  console_output: bool.default(true),
  use_colors: bool.default(true),
  use_rotation: bool.default(false),
  max_log_size: z.int().positive().default(10 * 1024 * 1024),
  backup_count: z.int().min(0).default(5),
  structured_logs: bool.default(false),
  /** One line per request. */
  access_log: bool.default(true),
  access_format: z.enum(["common", "combined", "json"]).default("common"),
});

const Extension = z.strictObject({
  type: nonEmpty,
  config: z.record(z.string(), z.unknown()).default({}),
  source: nonEmpty.optional(),
});

export const Config = z.strictObject({
  version: z.union([z.literal(1), z.literal(2)], {
    error: (i) => `must be 1 or 2, got ${shown(i.input)}`,
  }).default(1),
  server: Server.prefault({}),
  http: Http.prefault({}),
  ssl: Ssl.prefault({}),
  logging: Logging.prefault({}),
  extensions: z.array(Extension).default([]),
}).superRefine((c, ctx) => {
  const redirect = c.ssl.redirect_http;
  if (c.ssl.enabled && redirect !== undefined && redirect !== 0 && redirect === c.server.port) {
    ctx.addIssue({
      code: "custom",
      path: ["ssl", "redirect_http"],
      message: `must differ from server.port (${redirect}), which serves HTTPS`,
    });
  }
  if (c.ssl.enabled && !c.ssl.acme) {
    for (const key of ["cert_file", "key_file"] as const) {
      if (!c.ssl[key]) {
        ctx.addIssue({
          code: "custom",
          path: ["ssl", key],
          message: "is required when ssl.enabled is true (or configure ssl.acme)",
        });
      }
    }
  }
});

/** The validated configuration every other module reads. */
export type Config = z.infer<typeof Config>;

/** Config keys that hold file system paths, resolved against the config file's folder. */
export const PATH_KEYS: readonly (readonly string[])[] = [
  ["http", "static_dir"],
  ["http", "templates_dir"],
  ["ssl", "cert_file"],
  ["ssl", "key_file"],
  ["ssl", "acme", "ca_file"],
  ["ssl", "acme", "storage"],
  ["logging", "log_file"],
  ["server", "reverse_proxy", "*", "ca_file"],
  ["extensions", "*", "source"],
];
