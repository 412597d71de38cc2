/**
 * The one schema of denoserve's configuration. Keys keep PyServe's snake_case names so that a
 * PyServe `config.yaml` loads unchanged; everything beyond PyServe is optional with a default.
 *
 * @module
 */
import { z } from "zod";
import { parseCidr } from "../http/ip.ts";

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
  /**
   * Bridge `Upgrade: websocket` requests to the backend (PyServe's key). When false the upgrade
   * is not offered: the request goes on as plain HTTP without `Upgrade`, as nginx does when it
   * is not told to pass upgrades on.
   */
  websocket: bool.default(true),
});
export type ProxyRule = z.infer<typeof ProxyRule>;

/** A bcrypt hash as written by htpasswd -B, bcryptjs or Python's bcrypt. */
const BCRYPT = /^\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}$/;

const Auth = z.strictObject({
  type: z.literal("basic", { error: (i) => `must be "basic", got ${shown(i.input)}` }),
  username: nonEmpty,
  /** Plain password (PyServe's form); compared in constant time. */
  password: nonEmpty.optional(),
  /** bcrypt hash of the password. */
  password_hash: nonEmpty.regex(BCRYPT, {
    error: "must be a bcrypt hash ($2b$10$… as made by htpasswd -B or bcryptjs)",
  }).optional(),
  /** Realm shown by the browser's login dialog. */
  realm: nonEmpty.default("Restricted Area"),
}).refine((a) => (a.password === undefined) !== (a.password_hash === undefined), {
  error: "needs exactly one of password or password_hash",
});

const Location = z.strictObject({ auth: Auth.optional() });

const redirectStatus = z.union(
  [z.literal(301), z.literal(302), z.literal(307), z.literal(308)],
  { error: (i) => `must be 301, 302, 307 or 308, got ${shown(i.input)}` },
);

/** Where a redirect may point: a path on this server or an absolute http(s) URL. */
const redirectTarget = nonEmpty.refine((t) => t.startsWith("/") || /^https?:\/\/[^/]/i.test(t), {
  error: (i) => `must be a path starting with "/" or an http(s):// URL, got ${shown(i.input)}`,
});

/** `- /from: /to` (PyServe) or `{ from, to, status }`. */
const Redirect = z.union([
  z.record(urlPath, redirectTarget).refine((r) => Object.keys(r).length === 1, {
    error: "must be a single `/from: /to` pair",
  }),
  z.strictObject({
    from: urlPath,
    to: redirectTarget,
    status: redirectStatus.default(302),
  }),
], { error: "must be `/from: /to` or { from, to, status }" });
type Redirect = z.infer<typeof Redirect>;

/** A redirect rule in one shape. */
export interface RedirectRule {
  from: string;
  to: string;
  status: 301 | 302 | 307 | 308;
}

/** The rule of a `redirect_instructions` entry, whichever way it was written. */
export function redirectRule(r: Redirect): RedirectRule {
  if ("from" in r && "to" in r && typeof r.status === "number") {
    return { from: r.from as string, to: r.to as string, status: r.status };
  }
  const [from, to] = Object.entries(r)[0] as [string, string];
  return { from, to, status: 302 };
}

/** The local path a redirect target points to, or null for an external URL. */
const localTarget = (to: string) => to.startsWith("/") ? to.replace(/[?#].*$/, "") : null;

/** Rejects repeated sources, rules that point at themselves and chains that loop. */
function checkRedirects(rules: Redirect[], ctx: z.RefinementCtx) {
  const byFrom = new Map<string, number>();
  const list = rules.map(redirectRule);
  list.forEach((r, i) => {
    const first = byFrom.get(r.from);
    if (first !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: [i],
        message: `repeats ${r.from}, already redirected by redirect_instructions[${first}]`,
      });
    } else byFrom.set(r.from, i);
  });
  const reported = new Set<number>();
  list.forEach((r, i) => {
    if (reported.has(i)) return;
    const seen = [r.from];
    let next = localTarget(r.to);
    while (next !== null) {
      if (next === r.from) {
        ctx.addIssue({
          code: "custom",
          path: [i],
          message: seen.length === 1
            ? `redirects ${r.from} to itself; remove the rule or point it elsewhere`
            : `makes a redirect loop: ${[...seen, r.from].join(" → ")}; break the chain`,
        });
        for (const p of seen) reported.add(byFrom.get(p)!);
        return;
      }
      const j = byFrom.get(next);
      if (j === undefined || seen.includes(next)) return;
      seen.push(next);
      next = localTarget(list[j].to);
    }
  });
}

/** An address or a CIDR range, IPv4 or IPv6. */
const cidr = nonEmpty.refine((c) => parseCidr(c) !== undefined, {
  error: (i) =>
    `must be an IP address or CIDR like 192.168.1.0/24 or 2001:db8::/32, got ${shown(i.input)}`,
});

const cidrList = z.array(cidr, {
  error: (i) => `must be a list of addresses, got ${shown(i.input)}`,
});

const Server = z.strictObject({
  /** Address to listen on. */
  host: nonEmpty.default("127.0.0.1"),
  /** Port to listen on. */
  port: port().default(8000),
  /** Length of the listen queue (PyServe's key; the operating system may round it). */
  backlog: z.int().positive().default(511),
  /** Worker processes sharing the port; "auto" = one per core. */
  workers: z.union([z.int().min(1).max(256), z.literal("auto")], {
    error: (i) => `must be a whole number ≥ 1 or "auto", got ${shown(i.input)}`,
  }).default(1),
  /** Seconds in-flight requests get to finish on SIGINT/SIGTERM. */
  shutdown_timeout: positive("a positive number of seconds").default(10),
  /** Seconds a TLS client has to finish its handshake (nginx's ssl_handshake_timeout). */
  handshake_timeout: positive("a positive number of seconds").default(60),
  /**
   * Seconds a client has, once connected (over TLS: once its handshake is done), to send its
   * first request (nginx's client_header_timeout).
   */
  header_timeout: positive("a positive number of seconds").default(60),
  /**
   * Seconds a kept-alive connection may wait for its next request before it is closed
   * (nginx's keepalive_timeout).
   */
  idle_timeout: positive("a positive number of seconds").default(75),
  /**
   * Seconds a request body may send nothing before the request is given up and the connection
   * closed (nginx's client_body_timeout); over HTTP/2 the stream is answered 408 instead.
   */
  body_timeout: positive("a positive number of seconds").default(60),
  /**
   * Most connections open at once in the whole process; beyond it new ones are closed at once.
   * Default: the open-files limit less a tenth of it (at least 128).
   */
  max_connections: z.int().positive().optional(),
  /** Most connections open at once from one client address; 0 = no limit. */
  max_connections_per_ip: z.int().min(0).default(0),
  /**
   * The listener on `port` (plain or TLS) expects a PROXY protocol header (v1 or v2, as HAProxy's
   * `send-proxy` and `send-proxy-v2` write it) at the start of every connection, and takes its
   * source address as the client's: in the access log, `X-Forwarded-For`, `X-Real-IP`, rate
   * limits, IP filtering, connection limits and `$remote_addr`. A connection without a valid
   * header within `header_timeout` is closed unanswered. The `ssl.redirect_http` and ACME
   * listeners take plain connections either way.
   */
  proxy_protocol: bool.default(false),
  /**
   * Peers allowed to send a PROXY protocol header (addresses or CIDRs): the load balancers.
   * A connection from any other address is closed.
   */
  proxy_protocol_from: cidrList.default(["127.0.0.0/8", "::1/128"]),
  /**
   * PyServe's switch for its welcome page at `/`. Here, when true and the static folder has no
   * index.html, `/` shows the built-in welcome page (instead of a listing or 404); a site's own
   * index.html always wins.
   */
  default_root: bool.default(false),
  /** Proxy rules; an empty `reverse_proxy:` (YAML null) is no rules, as in PyServe. */
  reverse_proxy: z.preprocess((v) => v ?? [], z.array(ProxyRule)).default([]),
  redirect_instructions: z.array(Redirect).default([]).superRefine(checkRedirects),
  locations: z.record(urlPath, Location).default({}),
}).superRefine((s, ctx) => {
  if (s.proxy_protocol && s.proxy_protocol_from.length === 0) {
    ctx.addIssue({
      code: "custom",
      path: ["proxy_protocol_from"],
      message: "must list at least one address while server.proxy_protocol is true: " +
        "every connection would be closed",
    });
  }
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

/** A URL scheme in front of the rest (`redis://…`), as opposed to a folder. */
const URL_SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

/** Whether `storage` (the `ssl.acme.storage` value) names a Redis server rather than a folder. */
export const isRedisStorage = (storage: string): boolean => /^rediss?:\/\//i.test(storage);

const Acme = z.strictObject({
  email: nonEmpty,
  domains: z.array(nonEmpty).min(1, "must list at least one domain"),
  directory_url: nonEmpty.default("https://acme-v02.api.letsencrypt.org/directory"),
  ca_file: nonEmpty.optional(),
  /**
   * Where the account key, the certificate and its key are kept: a folder (one instance), or
   * `redis://[user:password@]host[:port][/db]` (or `rediss://`) shared by several instances,
   * which then order one at a time and answer each other's http-01 challenges.
   * @default "./ssl/acme"
   */
  storage: nonEmpty.default("./ssl/acme"),
  /**
   * With Redis storage, required: the secret the private keys are encrypted with in Redis
   * (AES-256-GCM, the key derived with scrypt); the same on every instance, at least 16
   * characters. Write it as `${VAR}` to keep it out of the file. @default none
   */
  storage_key: nonEmpty.min(16, "must be at least 16 characters (openssl rand -base64 32)")
    .optional(),
  /**
   * With Redis storage: seconds the order lock lasts without renewal, so an instance that dies
   * while ordering holds the others up this long at most. Renewed every third of it. @default 30
   */
  lock_timeout: positive("a positive number of seconds").default(30),
  /**
   * With Redis storage: seconds between looks at the stored certificate, in case a
   * notification of a new one was missed (Redis away, a reconnect). @default 30
   */
  poll_interval: positive("a positive number of seconds").default(30),
  challenge: z.enum(["http-01", "tls-alpn-01"]).default("http-01"),
  http_port: port().default(80),
}).superRefine((a, ctx) => {
  if (!URL_SCHEME.test(a.storage)) return;
  const checked = redisUrl.safeParse(a.storage);
  if (!checked.success) {
    ctx.addIssue({
      code: "custom",
      path: ["storage"],
      message: `must be a folder or redis://host:port/db (or rediss://), got ${shown(a.storage)}`,
    });
  } else if (a.storage_key === undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["storage_key"],
      message: "is required with Redis storage (the private keys are encrypted with it); " +
        "set it on every instance, e.g. storage_key: ${DENOSERVE_ACME_KEY}",
    });
  }
});

const Ssl = z.strictObject({
  enabled: bool.default(false),
  cert_file: nonEmpty.optional(),
  key_file: nonEmpty.optional(),
  /** Value of Strict-Transport-Security on HTTPS answers; none when absent. */
  hsts: nonEmpty.optional(),
  /** Also listen for plain HTTP on this port and redirect it to HTTPS. */
  redirect_http: port().optional(),
  /**
   * Also serve HTTP/3 (QUIC) on the HTTPS port's number over UDP, with the same certificate, and
   * announce it with `Alt-Svc` on HTTPS answers. Only the main thread serves it (not `workers`).
   */
  http3: bool.default(false),
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

/** Python's regex dialect, as PyServe files write it, turned into JavaScript's. */
export function pythonRegex(source: string): { source: string; flags: string } {
  let flags = "";
  const inline = /^\(\?([aiLmsux]+)\)/.exec(source);
  if (inline) {
    source = source.slice(inline[0].length);
    if (inline[1].includes("i")) flags += "i";
    if (inline[1].includes("m")) flags += "m";
    if (inline[1].includes("s")) flags += "s";
  }
  source = source.replace(/\(\?P<([A-Za-z_]\w*)>/g, "(?<$1>")
    .replace(/\(\?P=([A-Za-z_]\w*)\)/g, "\\k<$1>")
    .replace(/\\A/g, "^").replace(/\\Z/g, "$");
  return { source, flags };
}

/** What a `regex_locations` key says, parsed. */
export type LocationPattern =
  | { kind: "exact"; path: string }
  | { kind: "regex"; source: string; flags: string; groups: string[] }
  | { kind: "prefix"; path: string }
  | { kind: "default" };

/** Parses a `regex_locations` key; throws an Error whose message says what is wrong. */
export function parseLocationPattern(key: string): LocationPattern {
  if (key === "__default__") return { kind: "default" };
  if (key.startsWith("=")) {
    const path = key.slice(1).trimStart();
    if (!path.startsWith("/")) throw new Error(`must be "=/path", got ${shown(key)}`);
    return { kind: "exact", path };
  }
  if (key.startsWith("^~")) {
    const path = key.slice(2).trimStart();
    if (!path.startsWith("/")) throw new Error(`must be "^~/prefix", got ${shown(key)}`);
    return { kind: "prefix", path };
  }
  if (key.startsWith("~")) {
    const insensitive = key.startsWith("~*");
    const raw = key.slice(insensitive ? 2 : 1).trimStart();
    if (raw === "") throw new Error("has an empty regular expression");
    const { source, flags } = pythonRegex(raw);
    const all = insensitive && !flags.includes("i") ? flags + "i" : flags;
    try {
      new RegExp(source, all);
    } catch (e) {
      const reason = (e as Error).message.replace(/^Invalid regular expression: \/.*\/\w*: /, "");
      throw new Error(`is not a valid regular expression: ${reason}`);
    }
    const groups = [...source.matchAll(/\(\?<([A-Za-z_]\w*)>/g)].map((m) => m[1]);
    return { kind: "regex", source, flags: all, groups };
  }
  if (key.startsWith("/")) return { kind: "prefix", path: key };
  throw new Error(
    `is not a location pattern; use "=/exact", "^~/prefix", "/prefix", "~regex", "~*regex" ` +
      `or "__default__"`,
  );
}

/** `Name: value` as written in a location's `headers`. */
const headerLine = nonEmpty.regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+:\s*\S/, {
  error: (i) => `must be "Name: value", got ${shown(i.input)}`,
});

/** `return: "200 OK"`: a status and an optional body (or Location, for 3xx). */
const returnSpec = nonEmpty.regex(/^[1-5]\d\d(\s|$)/, {
  error: (i) => `must be "STATUS [text]" such as "200 OK", got ${shown(i.input)}`,
});

/** The keys a V2 location understands; anything else is an error naming it. */
export const RoutingLocation = z.strictObject({
  /** Forward to this backend (`{group}` allowed); a path in it replaces the request's. */
  proxy_pass: nonEmpty.regex(/^https?:\/\/[^/\s]+/i, {
    error: (i) => `must be an http:// or https:// URL, got ${shown(i.input)}`,
  }).optional(),
  /** Serve files from this folder instead of http.static_dir. */
  root: nonEmpty.optional(),
  /** File that answers a folder (and the SPA page). Default index.html. */
  index_file: nonEmpty.regex(/^[^/\\]+$/, { error: "must be a file name without slashes" })
    .optional(),
  /** Cache-Control on successful answers. */
  cache_control: nonEmpty.optional(),
  /** Extra response headers, `Name: value` with `{group}` and `$remote_addr`-style variables. */
  headers: z.array(headerLine).default([]),
  /** Answer directly with `STATUS [text]`. */
  return: returnSpec.optional(),
  /** Content-Type of a `return` answer. Default text/plain. */
  content_type: nonEmpty.optional(),
  /** Missing paths that do not look like files get the index_file (single-page apps). */
  spa_fallback: bool.default(false),
  /** Path prefixes that never get the SPA page. */
  exclude_patterns: z.array(urlPath).default([]),
}).superRefine((l, ctx) => {
  const what = l.return !== undefined ? "return" : l.proxy_pass !== undefined ? "proxy_pass" : "";
  if (l.return !== undefined && l.proxy_pass !== undefined) {
    ctx.addIssue({ code: "custom", path: ["proxy_pass"], message: "cannot be used with return" });
  }
  if (what) {
    for (const key of ["root", "index_file", "exclude_patterns"] as const) {
      const v = l[key];
      if (v !== undefined && !(Array.isArray(v) && v.length === 0)) {
        ctx.addIssue({ code: "custom", path: [key], message: `cannot be used with ${what}` });
      }
    }
    if (l.spa_fallback) {
      ctx.addIssue({
        code: "custom",
        path: ["spa_fallback"],
        message: `cannot be used with ${what}`,
      });
    }
  }
  if (l.content_type !== undefined && l.return === undefined) {
    ctx.addIssue({ code: "custom", path: ["content_type"], message: "needs return" });
  }
});
export type RoutingLocation = z.infer<typeof RoutingLocation>;

/** `extensions: [{ type: routing, config: … }]`. */
export const RoutingConfig = z.strictObject({
  regex_locations: z.record(z.string(), RoutingLocation).default({}),
}).superRefine((c, ctx) => {
  for (const key of Object.keys(c.regex_locations)) {
    try {
      parseLocationPattern(key);
    } catch (e) {
      ctx.addIssue({
        code: "custom",
        path: ["regex_locations", key],
        message: (e as Error).message,
      });
    }
  }
});
export type RoutingConfig = z.infer<typeof RoutingConfig>;

const word = nonEmpty.regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, {
  error: (i) => `must be a header or method name, got ${shown(i.input)}`,
});

export const Cors = z.strictObject({
  /** Whether CORS headers are sent at all. */
  enabled: bool.default(true),
  /** Allowed origins, exact (`https://app.example`) or `*`. */
  origins: z.array(
    nonEmpty.refine((o) => o === "*" || /^[a-z][a-z0-9+.-]*:\/\/[^/\s]+$/i.test(o), {
      error: (i) => `must be "*" or an origin like https://app.example, got ${shown(i.input)}`,
    }),
  ).default(["*"]),
  /** Methods a preflight allows. */
  methods: z.array(word).default(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
  /** Request headers a preflight allows (`*` = any). */
  headers: z.array(word.or(z.literal("*"))).default(["Content-Type", "Authorization"]),
  /** Response headers scripts may read. */
  expose_headers: z.array(word).default([]),
  /** Allow cookies and HTTP authentication. */
  credentials: bool.default(false),
  /** Seconds a browser may cache a preflight answer. */
  max_age: z.int().min(0).optional(),
});
export type Cors = z.infer<typeof Cors>;

const wholeAtLeast = (min: number) =>
  z.int({ error: (i) => `must be a whole number ≥ ${min}, got ${shown(i.input)}` })
    .min(min, { error: (i) => `must be a whole number ≥ ${min}, got ${shown(i.input)}` });

/** `ip_filtering:` addresses refused, or the only ones let in. */
export const IpFiltering = z.strictObject({
  /** Whether the filter applies. */
  enabled: bool.default(true),
  /** When not empty, only these addresses and ranges are served. */
  whitelist: cidrList.default([]),
  /** These addresses and ranges are refused (even when also whitelisted). */
  blacklist: cidrList.default([]),
});
export type IpFiltering = z.infer<typeof IpFiltering>;

const headerValue = z.string({ error: (i) => `must be a string, got ${shown(i.input)}` })
  .refine((v) => !/[\r\n\0]/.test(v), "must not contain line breaks");

/** `security_headers:` headers added to every answer. */
export const SecurityHeaders = z.strictObject({
  enabled: bool.default(true),
  /** Header name → value. */
  headers: z.record(z.string(), headerValue).superRefine((h, ctx) => {
    for (const name of Object.keys(h)) {
      if (!word.safeParse(name).success) {
        ctx.addIssue({ code: "custom", path: [name], message: "is not a valid header name" });
      }
    }
  }).default({
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
  }),
});
export type SecurityHeaders = z.infer<typeof SecurityHeaders>;

const RateLimit = z.strictObject({
  /** Tokens added per minute. */
  requests_per_minute: wholeAtLeast(1).default(60),
  /** Bucket size: requests a client may send at once. */
  burst: wholeAtLeast(1).default(10),
});

/** `redis://[user:password@]host[:port][/db]` (or `rediss://`), checked where it is written. */
export const redisUrl = z.string().superRefine((v, ctx) => {
  let u: URL | undefined;
  try {
    u = new URL(v);
  } catch { /* reported below */ }
  const db = u?.pathname.replace(/^\//, "") ?? "";
  if (
    !u || (u.protocol !== "redis:" && u.protocol !== "rediss:") || u.hostname === "" ||
    !/^\d*$/.test(db) || u.search !== "" || u.hash !== ""
  ) {
    ctx.addIssue({
      code: "custom",
      message: `must be redis://host:port/db (or rediss://), got ${shown(v)}`,
    });
  }
});

/** A redis `backend` needs its `url`. */
function redisNeedsUrl(c: { backend: string; url?: string }, ctx: z.RefinementCtx) {
  if (c.backend === "redis" && c.url === undefined) {
    ctx.addIssue({ code: "custom", path: ["url"], message: "is required with backend: redis" });
  }
}

/** `rate_limiting:` a token bucket per client address (and per rule). */
export const RateLimiting = z.strictObject({
  enabled: bool.default(true),
  requests_per_minute: wholeAtLeast(1).default(60),
  burst: wholeAtLeast(1).default(10),
  /** Path prefix → its own limit, longest prefix first; requests under it count only there. */
  rules: z.record(z.string(), RateLimit).superRefine((rules, ctx) => {
    for (const prefix of Object.keys(rules)) {
      if (!prefix.startsWith("/")) {
        ctx.addIssue({ code: "custom", path: [prefix], message: 'must start with "/"' });
      }
    }
  }).default({}),
  /** Buckets kept at most; the least recently used idle ones go first. */
  max_clients: wholeAtLeast(1).default(10000),
  /** Where the buckets live: this process's memory, or Redis shared by several processes. */
  backend: z.enum(["memory", "redis"], {
    error: (i) => `must be "memory" or "redis", got ${shown(i.input)}`,
  }).default("memory"),
  /** The Redis server of `backend: redis`. */
  url: redisUrl.optional(),
}).superRefine(redisNeedsUrl);
export type RateLimiting = z.infer<typeof RateLimiting>;

/** `csrf_protection:` a double-submit cookie with an HMAC-signed token. */
export const CsrfProtection = z.strictObject({
  enabled: bool.default(true),
  /** The HMAC key; required (use `${VAR}` to keep it out of the file). */
  secret: nonEmpty.min(16, "must be at least 16 characters").optional(),
  cookie_name: word.default("csrf_token"),
  header_name: word.default("X-CSRF-Token"),
  /** Path prefixes whose unsafe requests are not checked. */
  exempt_paths: z.array(urlPath).default([]),
}).superRefine((c, ctx) => {
  if (c.enabled && c.secret === undefined) {
    ctx.addIssue({ code: "custom", path: ["secret"], message: "is required when enabled" });
  }
});
export type CsrfProtection = z.infer<typeof CsrfProtection>;

/** `extensions: [{ type: security, config: … }]`. */
export const SecurityConfig = z.strictObject({
  cors: Cors.optional(),
  rate_limiting: RateLimiting.optional(),
  csrf_protection: CsrfProtection.optional(),
  security_headers: SecurityHeaders.optional(),
  ip_filtering: IpFiltering.optional(),
  /**
   * Peers whose `X-Forwarded-For` names the client, for `ip_filtering` and `rate_limiting`;
   * by default none, and the socket's address counts.
   */
  trusted_proxies: cidrList.default([]),
});
export type SecurityConfig = z.infer<typeof SecurityConfig>;

/** Health check names denoserve answers for; any other name is reported as "unknown". */
export const KNOWN_HEALTH_CHECKS: readonly string[] = ["server", "reverse_proxy"];

const HealthCheck = z.strictObject({
  /** Exact path the JSON answer is served at. */
  path: urlPath,
  /**
   * Names of extra checks. The server itself and every `server.reverse_proxy` pool are always
   * reported; a name outside {@link KNOWN_HEALTH_CHECKS} is warned about and answered "unknown".
   */
  checks: z.array(nonEmpty).default([]),
});

/** `extensions: [{ type: monitoring, config: … }]`. */
export const MonitoringConfig = z.strictObject({
  metrics: z.strictObject({
    /** Serve Prometheus metrics. */
    enabled: bool.default(true),
    /** Exact path of the metrics. */
    endpoint: urlPath.default("/metrics"),
  }).optional(),
  health_checks: z.array(HealthCheck).default([]),
}).superRefine((c, ctx) => {
  const seen = new Map<string, number>();
  c.health_checks.forEach((h, i) => {
    const first = seen.get(h.path);
    if (first !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["health_checks", i, "path"],
        message: `repeats ${h.path} of health_checks[${first}]; merge the two`,
      });
    } else seen.set(h.path, i);
  });
  const metrics = c.metrics;
  if (metrics?.enabled && seen.has(metrics.endpoint)) {
    ctx.addIssue({
      code: "custom",
      path: ["metrics", "endpoint"],
      message: `${metrics.endpoint} is also health_checks[${
        seen.get(metrics.endpoint)
      }].path; give the metrics and the health check different paths`,
    });
  }
});
export type MonitoringConfig = z.infer<typeof MonitoringConfig>;

/** Cache backends PyServe names. */
export const CACHE_BACKENDS = ["memory", "redis"] as const;

const seconds = wholeAtLeast(0);

/** `extensions: [{ type: caching, config: … }]`: answers of proxied routes kept in memory. */
export const CachingConfig = z.strictObject({
  /** Where entries live: this process's memory, or Redis shared by several processes. */
  backend: z.enum(CACHE_BACKENDS, {
    error: (i) => `must be "memory" or "redis", got ${shown(i.input)}`,
  }).default("memory"),
  /** The Redis server of `backend: redis`. */
  url: redisUrl.optional(),
  /** Seconds an answer is fresh when neither the backend nor a rule says otherwise. */
  default_ttl: seconds.default(300),
  /**
   * `~regex` / `~*regex` (as in V2 locations) → seconds; the first that matches the path
   * decides, `0` = do not cache.
   */
  rules: z.record(z.string(), seconds).superRefine((rules, ctx) => {
    for (const key of Object.keys(rules)) {
      try {
        const p = parseLocationPattern(key);
        if (p.kind !== "regex") throw new Error(`must be "~regex" or "~*regex", got ${shown(key)}`);
      } catch (e) {
        ctx.addIssue({ code: "custom", path: [key], message: (e as Error).message });
      }
    }
  }).default({}),
  /** Bytes of bodies and headers kept at most; the least recently used entries go first. */
  max_bytes: wholeAtLeast(1).default(64 * 1024 * 1024),
  /** Bytes one answer may have to be kept; larger ones pass through uncached. */
  max_entry_bytes: wholeAtLeast(1).default(1024 * 1024),
}).superRefine((c, ctx) => {
  if (c.max_entry_bytes > c.max_bytes) {
    ctx.addIssue({
      code: "custom",
      path: ["max_entry_bytes"],
      message: `must not exceed max_bytes (${c.max_bytes})`,
    });
  }
  redisNeedsUrl(c, ctx);
});
export type CachingConfig = z.infer<typeof CachingConfig>;

/** The schema of each extension type's `config`. */
export const EXTENSION_SCHEMAS: Record<string, z.ZodType> = {
  routing: RoutingConfig,
  security: SecurityConfig,
  monitoring: MonitoringConfig,
  caching: CachingConfig,
};

/**
 * An `extensions` entry; `config` of known types is validated. Unknown keys in it (a location's
 * `vibe_serving`, say) stay `unrecognized_keys` issues, which loading turns into warnings, as
 * PyServe ignores them.
 */
const Extension = z.strictObject({
  type: nonEmpty,
  config: z.record(z.string(), z.unknown()).default({}),
  source: nonEmpty.optional(),
}).transform((ext, ctx) => {
  const schema = EXTENSION_SCHEMAS[ext.type];
  if (!schema) return ext as { type: string; config: Record<string, unknown>; source?: string };
  const result = schema.safeParse(ext.config);
  if (result.success) return { ...ext, config: result.data as Record<string, unknown> };
  for (const issue of result.error.issues) {
    // deno-lint-ignore no-explicit-any
    ctx.addIssue({ ...issue, path: ["config", ...issue.path] } as any);
  }
  return z.NEVER;
});

/** The routing extension's validated config, when there is one. */
export function routingConfig(config: Config): RoutingConfig | undefined {
  return config.extensions.find((e) => e.type === "routing")?.config as RoutingConfig | undefined;
}

/** The security extension's validated config, when there is one. */
export function securityConfig(config: Config): SecurityConfig | undefined {
  return config.extensions.find((e) => e.type === "security")?.config as
    | SecurityConfig
    | undefined;
}

/** The monitoring extension's validated config, when there is one. */
export function monitoringConfig(config: Config): MonitoringConfig | undefined {
  return config.extensions.find((e) => e.type === "monitoring")?.config as
    | MonitoringConfig
    | undefined;
}

/** The caching extension's validated config, when there is one. */
export function cachingConfig(config: Config): CachingConfig | undefined {
  return config.extensions.find((e) => e.type === "caching")?.config as
    | CachingConfig
    | undefined;
}

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
  // `extensions` without `version: 2` is a warning (see load.ts): PyServe applies them too.
  const firstOfType = new Map<string, number>();
  c.extensions.forEach((e, i) => {
    const first = firstOfType.get(e.type);
    if (first === undefined) firstOfType.set(e.type, i);
    else if (e.type in EXTENSION_SCHEMAS) {
      ctx.addIssue({
        code: "custom",
        path: ["extensions", i],
        message: `repeats type ${e.type} of extensions[${first}]; merge the two into one`,
      });
    }
  });
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
  ["extensions", "*", "config", "regex_locations", "*", "root"],
];
