/**
 * The one schema of denoserve's configuration. Keys keep PyServe's snake_case names so that a
 * PyServe `config.yaml` loads unchanged; everything beyond PyServe is optional with a default.
 *
 * @module
 */
import * as v from "valibot";
import { parseCidr } from "../http/ip.ts";
import { HOP_BY_HOP, TCHAR, TOKEN } from "../http/headers.ts";

const shown = (value: unknown) => JSON.stringify(value) ?? String(value);

type Issue = v.BaseIssue<unknown>;

/** `${text}, got 8.5`: a message that shows the value refused. */
const got = (text: string) => (issue: Issue) => `${text}, got ${shown(issue.input)}`;

const isObject = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && !Array.isArray(x);

const isPlainObject = (x: unknown): x is Record<string, unknown> =>
  isObject(x) && [Object.prototype, null].includes(Object.getPrototypeOf(x));

/** The message of an unknown key; loading warns about the key and drops it. */
export const UNKNOWN_KEY = "is not a known key";

const unknownKey = v.pipe(v.unknown(), v.check(() => false, UNKNOWN_KEY));

type Shape<E extends v.ObjectEntries> = v.ObjectSchema<E, undefined>;

/**
 * A mapping with these keys. Each other key is an issue of its own ({@link UNKNOWN_KEY}) that
 * leaves the rest checked as usual; an absent required key gets its schema's message for
 * `undefined` ("must be a string, got undefined").
 */
function strict<const E extends v.ObjectEntries>(entries: E) {
  const missing = (issue: Issue) =>
    v.safeParse(entries[issue.path![0].key as string], undefined).issues![0].message;
  return v.pipe(
    v.custom<Record<string, unknown>>(isObject, got("must be a mapping of keys")),
    v.objectWithRest(entries, unknownKey, missing),
    // Typed without the rest's index signature: loading drops the unknown keys.
  ) as unknown as v.GenericSchema<v.InferInput<Shape<E>>, v.InferOutput<Shape<E>>>;
}

/**
 * A mapping of names to `value`s; a name that `key` refuses is reported (with `keyMessage`),
 * its value unchecked.
 */
function record<V extends v.GenericSchema>(
  value: V,
  key = (_name: string) => true,
  keyMessage = "is not an accepted name",
) {
  return v.pipe(
    v.custom<Record<string, unknown>>(isPlainObject, got("must be a mapping of names")),
    v.record(v.custom<string>((name) => key(name as string), keyMessage), value),
    v.rawCheck(({ dataset }) => {
      const refused = new Set(
        dataset.issues?.filter((i) => i.path?.[0].origin === "key").map((i) => i.path![0].key),
      );
      if (refused.size === 0) return;
      dataset.issues = dataset.issues!.filter((i) =>
        i.path?.[0].origin === "key" || !refused.has(i.path?.[0].key)
      ) as typeof dataset.issues;
    }),
  );
}

/** A list of `item`s. */
const list = <T extends v.GenericSchema>(item: T, message = got("must be a list")) =>
  v.array(item, message);

/**
 * Checks a value of the right type with `check`, which reports each problem with `fail` at a
 * key path below the value.
 */
const refine = <T>(check: (value: T, fail: (path: Path, message: string) => void) => void) =>
  v.rawCheck<T>(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    check(
      dataset.value,
      (path, message) =>
        addIssue({ message, path: path.map((key) => step(key)) as [v.IssuePathItem] }),
    );
  });

type Path = (string | number)[];

/** A step of an issue's key path. */
const step = (key: string | number, input?: unknown, value?: unknown): v.IssuePathItem => ({
  type: "unknown",
  origin: "value",
  input,
  key,
  value,
});

/**
 * A whole number from `min` (to `max`, within ±(2^53 − 1) either way), with `message` for any
 * other value: `must be a whole number ≥ 1, got 0.5` unless given.
 */
const whole = (
  min: number,
  max = Number.MAX_SAFE_INTEGER,
  message = got(
    max === Number.MAX_SAFE_INTEGER ? `must be a whole number ≥ ${min}` : `must be ${min}–${max}`,
  ),
) =>
  v.custom<number>(
    (x) => Number.isSafeInteger(x) && (x as number) >= min && (x as number) <= max,
    message,
  );

/** One of `options`: `must be "a", "b" or "c", got "d"` unless `message` is given. */
const oneOf = <const T extends readonly (string | number)[]>(
  options: T,
  message = got(`must be ${options.map(shown).join(", ").replace(/, ([^,]*)$/, " or $1")}`),
) => v.picklist(options, message);

/** A TCP port; 0 asks the system for a free one (tests use it). */
export const port = () =>
  v.pipe(
    v.custom<number>(Number.isSafeInteger, got("must be a whole number 0–65535")),
    v.check((n) => n >= 0 && n <= 65535, got("must be 0–65535")),
  );

const positive = (what: string) =>
  v.pipe(
    v.custom<number>((x) => typeof x === "number" && Number.isFinite(x), got(`must be ${what}`)),
    v.gtValue(0, got(`must be ${what}`)),
  );

const nonEmpty = v.pipe(
  v.string(got("must be a string")),
  v.minLength(1, "must not be empty"),
);

const bool = v.boolean(got("must be true or false"));

const SIZE_UNITS: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** A number of bytes, or nginx's `512k`, `10m`, `1g` (powers of 1024), read as bytes. */
const byteSize = v.pipe(
  v.custom<number | string>(
    (x) =>
      (Number.isSafeInteger(x) && (x as number) >= 0) ||
      (typeof x === "string" && /^\d+\s*[kmg]?b?$/i.test(x.trim())),
    got('must be a number of bytes or a size such as "512k", "10m" or "1g"'),
  ),
  v.transform((x) => {
    if (typeof x === "number") return x;
    const m = /^(\d+)\s*([kmg]?)/i.exec(x.trim())!;
    return Number(m[1]) * SIZE_UNITS[m[2].toLowerCase()];
  }),
);

/** `host:port`, as written in `upstreams`. */
const hostPort = v.pipe(
  nonEmpty,
  v.regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):\d{1,5}$/, got("must be host:port")),
);

const isUrlPath = (p: string) => p.startsWith("/");

const urlPath = v.pipe(nonEmpty, v.check(isUrlPath, got('must start with "/"')));

/**
 * The variables a header rule's value may use: `{client_ip}`, `{host}`, `{scheme}`,
 * `{request_id}`, `{method}`, `{uri}` and `{header.Name}` (a request header).
 */
export const HEADER_VARIABLES: readonly string[] = [
  "client_ip",
  "host",
  "scheme",
  "request_id",
  "method",
  "uri",
];

/** A `{variable}` in a header rule's value; group 1 is its name. */
export const HEADER_VARIABLE: RegExp = /\{([^{}]*)\}/g;

/** Whether `name` (between braces) is a variable header rules know. */
export const isHeaderVariable = (name: string): boolean =>
  HEADER_VARIABLES.includes(name) || /^header\.[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name);

/**
 * Headers no rule may touch: they frame the message or describe one connection (the proxy drops
 * them both ways and sets the framing itself).
 */
export const UNTOUCHABLE_HEADERS: readonly string[] = [...HOP_BY_HOP, "content-length"];

const headerName = v.pipe(
  nonEmpty,
  v.regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, got("must be a header name")),
  v.check(
    (n) => !UNTOUCHABLE_HEADERS.includes(n.toLowerCase()),
    got(`must not be one of ${UNTOUCHABLE_HEADERS.join(", ")} (set by the server itself)`),
  ),
);

const headerTemplate = v.pipe(
  v.string(got("must be a string")),
  v.check((t) => !/[\r\n\0]/.test(t), "must not contain line breaks"),
  v.check(
    (t) => [...t.matchAll(HEADER_VARIABLE)].every((m) => isHeaderVariable(m[1])),
    (issue) =>
      `uses ${
        [...String(issue.input).matchAll(HEADER_VARIABLE)].find((m) => !isHeaderVariable(m[1]))
          ?.[0]
      }; the variables are ${HEADER_VARIABLES.map((n) => `{${n}}`).join(", ")} and {header.Name}`,
  ),
);

const NAME_MESSAGE =
  "must be a header name (hop-by-hop headers and Content-Length are set by the server)";
const isRuleName = (n: string) => v.is(headerName, n);

/** `remove`, `set` (replace) and `add` (append) header rules, applied in that order. */
export const HeaderRules = strict({
  /** Headers dropped. */
  remove: v.optional(list(headerName), []),
  /** Headers replaced (or added when absent); a value that comes out empty sends none. */
  set: v.optional(record(headerTemplate, isRuleName, NAME_MESSAGE), {}),
  /** Headers appended, beside any of the same name. */
  add: v.optional(record(headerTemplate, isRuleName, NAME_MESSAGE), {}),
});
export type HeaderRules = v.InferOutput<typeof HeaderRules>;

/** `forward_auth:` ask an auth service (Authelia, Authentik, oauth2-proxy) about each request. */
const ForwardAuth = strict({
  /** The auth service and the path to ask: `http://authelia:9091/api/authz/forward-auth`. */
  url: v.pipe(
    nonEmpty,
    v.check(
      (u) => {
        try {
          const url = new URL(u);
          return /^https?:$/.test(url.protocol) && url.hostname !== "" && url.username === "" &&
            url.hash === "";
        } catch {
          return false;
        }
      },
      got(
        "must be an http:// or https:// URL such as http://127.0.0.1:9091/api/authz/forward-auth",
      ),
    ),
  ),
  /** Headers of the auth service's 2xx answer copied into the request that goes on. */
  copy_headers: v.optional(
    list(v.pipe(nonEmpty, v.regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, got("must be a header name")))),
    ["Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email"],
  ),
  /** Extra CA (PEM) to trust for an https auth service. */
  ca_file: v.optional(nonEmpty),
  /** Accept any certificate of an https auth service (warned about loudly). */
  insecure_skip_verify: v.optional(bool, false),
  /** Seconds to connect, and again to wait for the answer's headers: 504 past either. */
  timeout: v.optional(positive("a positive number of seconds"), 10),
  /** Seconds a 2xx answer is reused for the same credentials and request; 0 = never. */
  cache_ttl: v.optional(whole(0), 0),
});
export type ForwardAuth = v.InferOutput<typeof ForwardAuth>;

export const ProxyRule = v.pipe(
  strict({
    /** Public path prefix, matched on segment boundaries. */
    path: v.optional(urlPath, "/"),
    /** Backend host (PyServe's form). */
    host: v.optional(nonEmpty, "localhost"),
    /** Backend port (PyServe's form). */
    port: v.optional(port(), 80),
    /** https to the backend. */
    ssl: v.optional(bool, false),
    /** Remove the matched prefix before forwarding (PyServe does). */
    strip_prefix: v.optional(bool, true),
    /** Send the client's Host to the backend instead of the backend's own. */
    preserve_host: v.optional(bool, false),
    /** Ask an auth service about each request before it is forwarded (see server.locations). */
    forward_auth: v.optional(ForwardAuth),
    /** Extra CA (PEM) to trust for an https backend. */
    ca_file: v.optional(nonEmpty),
    /** Accept any backend certificate (warned about loudly). */
    insecure_skip_verify: v.optional(bool, false),
    /** Several backends as host:port; replaces host/port when given. */
    upstreams: v.optional(
      v.pipe(list(hostPort), v.minLength(1, "must list at least one host:port")),
    ),
    /** How to pick among upstreams. */
    lb: v.optional(
      oneOf(["round_robin", "least_conn", "ip_hash", "uri_hash", "header", "cookie"]),
      "round_robin",
    ),
    /** With `lb: header`: the request header whose value picks the backend. */
    lb_header: v.optional(
      v.pipe(nonEmpty, v.regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, got("must be a header name"))),
    ),
    /** With `lb: cookie`: the cookie's name. */
    lb_cookie: v.optional(
      v.pipe(nonEmpty, v.regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, got("must be a cookie name"))),
      "denoserve_lb",
    ),
    /** With `lb: cookie`: the HMAC key; default one chosen at random per process. */
    lb_cookie_secret: v.optional(
      v.pipe(nonEmpty, v.minLength(16, "must be at least 16 characters")),
    ),
    /** Path probed by the active health check; no active check when absent. */
    health_path: v.optional(urlPath),
    /** Seconds between active health checks. */
    health_interval: v.optional(positive("a positive number of seconds"), 10),
    /** Seconds a failed backend stays marked down. */
    fail_timeout: v.optional(positive("a positive number of seconds"), 10),
    /** Seconds to establish the backend connection. */
    connect_timeout: v.optional(positive("a positive number of seconds"), 10),
    /** Seconds to wait for the backend's response headers. */
    response_timeout: v.optional(positive("a positive number of seconds"), 30),
    /**
     * Seconds to keep trying while no backend can be reached (Caddy's lb_try_duration), before
     * 502; 0 = one try (and one other backend for an idempotent request).
     */
    try_duration: v.optional(
      v.pipe(
        v.number(got("must be a number of seconds ≥ 0")),
        v.minValue(0, got("must be a number of seconds ≥ 0")),
      ),
      0,
    ),
    /** Seconds between those tries (Caddy's lb_try_interval). */
    try_interval: v.optional(positive("a positive number of seconds"), 0.25),
    /**
     * Bridge `Upgrade: websocket` requests to the backend (PyServe's key). When false the upgrade
     * is not offered: the request goes on as plain HTTP without `Upgrade`, as nginx does when it
     * is not told to pass upgrades on.
     */
    websocket: v.optional(bool, true),
    /** Header rules for the request sent to the backend (after X-Forwarded-*: these win). */
    request_headers: v.optional(HeaderRules),
    /** Header rules for the backend's answer on its way to the client. */
    response_headers: v.optional(HeaderRules),
  }),
  refine((r, fail) => {
    if (r.lb === "header" && r.lb_header === undefined) {
      fail(["lb_header"], "is needed by lb: header");
    }
    if (r.lb !== "header" && r.lb_header !== undefined) {
      fail(["lb_header"], "needs lb: header");
    }
    if (r.lb !== "cookie" && r.lb_cookie_secret !== undefined) {
      fail(["lb_cookie_secret"], "needs lb: cookie");
    }
  }),
);
export type ProxyRule = v.InferOutput<typeof ProxyRule>;

/** A bcrypt hash as written by htpasswd -B, bcryptjs or Python's bcrypt. */
const BCRYPT = /^\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}$/;

/**
 * The password hashes basic authentication verifies, as `htpasswd` writes them: bcrypt (`-B`),
 * Apache MD5 (`-m`, `$apr1$`, and the MD5-crypt `$1$` nginx also reads) and SHA-1 (`-s`,
 * `{SHA}`). Plain text (`-p`) and DES crypt (`-d`, 8 characters at most) are refused.
 */
export const PASSWORD_HASHES: Readonly<Record<"bcrypt" | "md5" | "sha1", RegExp>> = {
  bcrypt: BCRYPT,
  md5: /^\$(apr1|1)\$[./0-9A-Za-z]{1,8}\$[./0-9A-Za-z]{22}$/,
  sha1: /^\{SHA\}[A-Za-z0-9+/]{27}=$/,
};

const HASH_MESSAGE = "must be a bcrypt, $apr1$ or {SHA} hash (as htpasswd -B, -m or -s writes it)";

const passwordHash = v.pipe(
  nonEmpty,
  v.check((h) => Object.values(PASSWORD_HASHES).some((re) => re.test(h)), HASH_MESSAGE),
);

/** A user name of basic authentication: no colon (it ends the name in the credentials). */
const userName = v.pipe(nonEmpty, v.check((u) => !u.includes(":"), "must not contain a colon"));

/** One user of `auth.users`. */
const AuthUser = v.pipe(
  strict({
    username: userName,
    /** Plain password; compared in constant time. */
    password: v.optional(nonEmpty),
    /** Hash of the password (see {@link PASSWORD_HASHES}). */
    password_hash: v.optional(passwordHash),
  }),
  v.check(
    (a) => (a.password === undefined) !== (a.password_hash === undefined),
    "needs exactly one of password or password_hash",
  ),
);

const Auth = v.pipe(
  strict({
    type: v.literal("basic", got('must be "basic"')),
    /** The one user of PyServe's form. */
    username: v.optional(userName),
    /** Plain password (PyServe's form); compared in constant time. */
    password: v.optional(nonEmpty),
    /** Hash of the password (see {@link PASSWORD_HASHES}). */
    password_hash: v.optional(passwordHash),
    /** More users, each with a password or a hash. */
    users: v.optional(list(AuthUser), []),
    /** An htpasswd file (user:hash lines), read at start and on every reload. */
    htpasswd_file: v.optional(nonEmpty),
    /** Realm shown by the browser's login dialog. */
    realm: v.optional(nonEmpty, "Restricted Area"),
  }),
  refine((a, fail) => {
    const secrets = Number(a.password !== undefined) + Number(a.password_hash !== undefined);
    if (a.username !== undefined && secrets !== 1) {
      fail([], "needs exactly one of password or password_hash");
    } else if (a.username === undefined && secrets > 0) {
      fail([a.password !== undefined ? "password" : "password_hash"], "needs username");
    } else if (
      a.username === undefined && a.users.length === 0 && a.htpasswd_file === undefined
    ) {
      fail([], "needs username with password or password_hash, users, or htpasswd_file");
    }
    const seen = new Map<string, number>();
    if (a.username !== undefined) seen.set(a.username, -1);
    a.users.forEach((u, i) => {
      const first = seen.get(u.username);
      if (first === undefined) seen.set(u.username, i);
      else {
        fail(
          ["users", i, "username"],
          `repeats "${u.username}" of ${first < 0 ? "username" : `users[${first}]`}`,
        );
      }
    });
  }),
);

/**
 * `ip_rules:` nginx's `allow` and `deny`, in order, the first that matches the client's address
 * deciding: `allow ADDRESS`, `deny ADDRESS`, with an address, a CIDR range or `all`.
 */
const ipRules = list(
  v.pipe(
    nonEmpty,
    v.check((rule) => {
      const m = /^(allow|deny)\s+(\S+)$/.exec(rule.trim());
      return m !== null && (m[2] === "all" || parseCidr(m[2]) !== undefined);
    }, got('must be "allow ADDRESS" or "deny ADDRESS" with an address, a CIDR range or all')),
  ),
  got('must be a list like ["allow 10.0.0.0/8", "deny all"]'),
);

const Location = strict({
  auth: v.optional(Auth),
  forward_auth: v.optional(ForwardAuth),
  ip_rules: v.optional(ipRules),
  /** Request bodies larger than this get 413 below this prefix (replaces server.max_body_size). */
  max_body_size: v.optional(byteSize),
});

const redirectStatus = v.picklist([301, 302, 307, 308], got("must be 301, 302, 307 or 308"));

/** Where a redirect may point: a path on this server or an absolute http(s) URL. */
const redirectTarget = v.pipe(
  nonEmpty,
  v.check(
    (t) => t.startsWith("/") || /^https?:\/\/[^/]/i.test(t),
    got('must be a path starting with "/" or an http(s):// URL'),
  ),
);

/** `- /from: /to` (PyServe) or `{ from, to, status }`. */
const Redirect = v.union([
  v.pipe(
    record(redirectTarget, isUrlPath),
    v.check((r) => Object.keys(r).length === 1, "must be a single `/from: /to` pair"),
  ),
  strict({
    from: urlPath,
    to: redirectTarget,
    status: v.optional(redirectStatus, 302),
  }),
], "must be `/from: /to` or { from, to, status }");
type Redirect = v.InferOutput<typeof Redirect>;

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
function checkRedirects(rules: Redirect[], fail: (path: Path, message: string) => void) {
  const byFrom = new Map<string, number>();
  const list = rules.map(redirectRule);
  list.forEach((r, i) => {
    const first = byFrom.get(r.from);
    if (first !== undefined) {
      fail([i], `repeats ${r.from}, already redirected by redirect_instructions[${first}]`);
    } else byFrom.set(r.from, i);
  });
  const reported = new Set<number>();
  list.forEach((r, i) => {
    if (reported.has(i)) return;
    const seen = [r.from];
    let next = localTarget(r.to);
    while (next !== null) {
      if (next === r.from) {
        fail(
          [i],
          seen.length === 1
            ? `redirects ${r.from} to itself; remove the rule or point it elsewhere`
            : `makes a redirect loop: ${[...seen, r.from].join(" → ")}; break the chain`,
        );
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
const cidr = v.pipe(
  nonEmpty,
  v.check(
    (c) => parseCidr(c) !== undefined,
    got("must be an IP address or CIDR like 192.168.1.0/24 or 2001:db8::/32"),
  ),
);

const cidrList = list(cidr, got("must be a list of addresses"));

/** A media type or a family of them (`text/*`), as `types` of `compression` lists them. */
const mediaRange = v.pipe(
  nonEmpty,
  v.regex(
    /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\/([!#$%&'*+\-.^_`|~0-9A-Za-z]+|\*)$/,
    got('must be a media type such as "application/json" or "text/*"'),
  ),
);

/** `server.compression`: gzip, zstd and br for answers made on the fly. */
export const Compression = strict({
  /** Off by default, as in nginx and Caddy: it costs CPU on every answer it applies to. */
  enabled: v.optional(bool, false),
  /** The codings offered, the server's preference first (used when a client rates two equally). */
  encodings: v.optional(
    v.pipe(
      list(oneOf(["zstd", "br", "gzip"])),
      v.minLength(1, "must list at least one of zstd, br, gzip"),
    ),
    ["zstd", "gzip"],
  ),
  gzip_level: v.optional(whole(1, 9), 5),
  zstd_level: v.optional(whole(1, 19), 3),
  br_level: v.optional(whole(0, 11), 4),
  /** Answers with a Content-Length below this are sent as they are. */
  min_size: v.optional(byteSize, 256),
  /** Media types compressed; empty = text, JSON, JavaScript, XML, SVG and wasm. */
  types: v.optional(list(mediaRange), []),
});
export type Compression = v.InferOutput<typeof Compression>;

/** The `server` keys that belong to a site: each of `sites` has its own. */
const SITE_SERVER = {
  /**
   * PyServe's switch for its welcome page at `/`. Here, when true and the static folder has no
   * index.html, `/` shows the built-in welcome page (instead of a listing or 404); a site's own
   * index.html always wins.
   */
  default_root: v.optional(bool, false),
  /** Header rules for every answer of the site (error pages, files and proxied answers alike). */
  response_headers: v.optional(HeaderRules),
  /** Proxy rules; an empty `reverse_proxy:` (YAML null) is no rules, as in PyServe. */
  reverse_proxy: v.nullish(list(ProxyRule), []),
  redirect_instructions: v.optional(v.pipe(list(Redirect), refine(checkRedirects)), []),
  locations: v.optional(record(Location, isUrlPath, 'must start with "/"'), {}),
  /** The site's `allow`/`deny` rules, for paths without a location that has its own. */
  ip_rules: v.optional(ipRules, []),
};

const Server = v.pipe(
  strict({
    /** Address to listen on. */
    host: v.optional(nonEmpty, "127.0.0.1"),
    /** Port to listen on. */
    port: v.optional(port(), 8000),
    /** Length of the listen queue (PyServe's key; the operating system may round it). */
    backlog: v.optional(whole(1), 511),
    /** Worker processes sharing the port; "auto" = one per core. */
    workers: v.optional(
      v.union(
        [whole(1, 256), v.literal("auto")],
        got('must be a whole number ≥ 1 or "auto"'),
      ),
      1,
    ),
    /** Seconds in-flight requests get to finish on SIGINT/SIGTERM. */
    shutdown_timeout: v.optional(positive("a positive number of seconds"), 10),
    /** Seconds a TLS client has to finish its handshake (nginx's ssl_handshake_timeout). */
    handshake_timeout: v.optional(positive("a positive number of seconds"), 60),
    /**
     * Seconds a client has, once connected (over TLS: once its handshake is done), to send its
     * first request (nginx's client_header_timeout).
     */
    header_timeout: v.optional(positive("a positive number of seconds"), 60),
    /**
     * Seconds a kept-alive connection may wait for its next request before it is closed
     * (nginx's keepalive_timeout).
     */
    idle_timeout: v.optional(positive("a positive number of seconds"), 75),
    /**
     * Seconds a request body may send nothing before the request is given up and the connection
     * closed (nginx's client_body_timeout); over HTTP/2 the stream is answered 408 instead.
     */
    body_timeout: v.optional(positive("a positive number of seconds"), 60),
    /**
     * Request bodies larger than this (bytes, or "10m") get 413: nginx's client_max_body_size.
     * 0 = no limit (Caddy's default): bodies stream through and are never held whole.
     */
    max_body_size: v.optional(byteSize, 0),
    /**
     * Most connections open at once in the whole process; beyond it new ones are closed at once.
     * Default: the open-files limit less a tenth of it (at least 128).
     */
    max_connections: v.optional(whole(1)),
    /** Most connections open at once from one client address; 0 = no limit. */
    max_connections_per_ip: v.optional(whole(0), 0),
    /**
     * The listener on `port` (plain or TLS) expects a PROXY protocol header (v1 or v2, as HAProxy's
     * `send-proxy` and `send-proxy-v2` write it) at the start of every connection, and takes its
     * source address as the client's: in the access log, `X-Forwarded-For`, `X-Real-IP`, rate
     * limits, IP filtering, connection limits and `$remote_addr`. A connection without a valid
     * header within `header_timeout` is closed unanswered. The `ssl.redirect_http` and ACME
     * listeners take plain connections either way.
     */
    proxy_protocol: v.optional(bool, false),
    /**
     * Peers allowed to send a PROXY protocol header (addresses or CIDRs): the load balancers.
     * A connection from any other address is closed.
     */
    proxy_protocol_from: v.optional(cidrList, ["127.0.0.0/8", "::1/128"]),
    /**
     * What a request whose Host names none of `sites` gets: the default site (the top-level
     * sections), `421` Misdirected Request, or `close`: its connection is closed unanswered
     * (nginx's `return 444`). Only read when `sites` is given.
     */
    unknown_host: v.optional(
      v.pipe(
        v.union(
          [v.literal("default"), v.literal(421), v.literal("421"), v.literal("close")],
          got('must be "default", 421 or "close"'),
        ),
        v.transform((x) => String(x) as "default" | "421" | "close"),
      ),
      "default",
    ),
    /** Compression of answers made on the fly (proxied, error pages, listings, `return`). */
    compression: v.optional(Compression, {}),
    ...SITE_SERVER,
  }),
  refine((s, fail) => {
    if (s.proxy_protocol && s.proxy_protocol_from.length === 0) {
      fail(
        ["proxy_protocol_from"],
        "must list at least one address while server.proxy_protocol is true: " +
          "every connection would be closed",
      );
    }
  }),
);

/** The `http` keys that belong to a site: each of `sites` has its own. */
const SITE_HTTP = {
  /** Folder served as the site root and under /static/. */
  static_dir: v.optional(nonEmpty, "./static"),
  /** Folder of error page templates. */
  templates_dir: v.optional(nonEmpty, "./templates"),
  /** HTML listing for folders without index.html. */
  directory_listing: v.optional(bool, false),
  /** Serve files and folders whose name starts with a dot. */
  serve_dotfiles: v.optional(bool, false),
};

const Http = strict({
  ...SITE_HTTP,
  /** How long a cached file's metadata is trusted before it is checked again (ms; 0 = always). */
  file_cache_ttl_ms: v.optional(whole(0), 1000),
  /** Files up to this size are kept in memory (bytes; 0 = never). */
  file_cache_max_file_size: v.optional(whole(0), 1024 * 1024),
  /** Memory for cached file bodies in all (bytes). */
  file_cache_max_bytes: v.optional(whole(0), 64 * 1024 * 1024),
});

/** A URL scheme in front of the rest (`redis://…`), as opposed to a folder. */
const URL_SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

/** Whether `storage` (the `ssl.acme.storage` value) names a Redis server rather than a folder. */
export const isRedisStorage = (storage: string): boolean => /^rediss?:\/\//i.test(storage);

const Acme = v.pipe(
  strict({
    email: nonEmpty,
    domains: v.pipe(list(nonEmpty), v.minLength(1, "must list at least one domain")),
    directory_url: v.optional(nonEmpty, "https://acme-v02.api.letsencrypt.org/directory"),
    ca_file: v.optional(nonEmpty),
    /**
     * Where the account key, the certificate and its key are kept: a folder (one instance), or
     * `redis://[user:password@]host[:port][/db]` (or `rediss://`) shared by several instances,
     * which then order one at a time and answer each other's http-01 challenges.
     * @default "./ssl/acme"
     */
    storage: v.optional(nonEmpty, "./ssl/acme"),
    /**
     * With Redis storage, required: the secret the private keys are encrypted with in Redis
     * (AES-256-GCM, the key derived with scrypt); the same on every instance, at least 16
     * characters. Write it as `${VAR}` to keep it out of the file. @default none
     */
    storage_key: v.optional(
      v.pipe(nonEmpty, v.minLength(16, "must be at least 16 characters (openssl rand -base64 32)")),
    ),
    /**
     * With Redis storage: seconds the order lock lasts without renewal, so an instance that dies
     * while ordering holds the others up this long at most. Renewed every third of it. @default 30
     */
    lock_timeout: v.optional(positive("a positive number of seconds"), 30),
    /**
     * With Redis storage: seconds between looks at the stored certificate, in case a
     * notification of a new one was missed (Redis away, a reconnect). @default 30
     */
    poll_interval: v.optional(positive("a positive number of seconds"), 30),
    challenge: v.optional(oneOf(["http-01", "tls-alpn-01"]), "http-01"),
    http_port: v.optional(port(), 80),
  }),
  refine((a, fail) => {
    if (!URL_SCHEME.test(a.storage)) return;
    if (!isRedisUrl(a.storage)) {
      fail(
        ["storage"],
        `must be a folder or redis://host:port/db (or rediss://), got ${shown(a.storage)}`,
      );
    } else if (a.storage_key === undefined) {
      fail(
        ["storage_key"],
        "is required with Redis storage (the private keys are encrypted with it); " +
          "set it on every instance, e.g. storage_key: ${DENOSERVE_ACME_KEY}",
      );
    }
  }),
);

const Ssl = strict({
  enabled: v.optional(bool, false),
  cert_file: v.optional(nonEmpty),
  key_file: v.optional(nonEmpty),
  /** Value of Strict-Transport-Security on HTTPS answers; none when absent. */
  hsts: v.optional(nonEmpty),
  /** Also listen for plain HTTP on this port and redirect it to HTTPS. */
  redirect_http: v.optional(port()),
  /**
   * Also serve HTTP/3 (QUIC) on the HTTPS port's number over UDP, with the same certificate, and
   * announce it with `Alt-Svc` on HTTPS answers. Only the main thread serves it (not `workers`).
   */
  http3: v.optional(bool, false),
  acme: v.optional(Acme),
  /**
   * Seconds a certificate from the local CA lasts (HTTPS with neither certificate files nor
   * ACME); a new one is made two thirds into its life. @default 43200 (12 hours)
   */
  leaf_lifetime: v.optional(positive("a positive number of seconds"), 43200),
});

export const LogLevel = oneOf(
  ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
  got("must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
);
export type LogLevel = v.InferOutput<typeof LogLevel>;

const Logging = strict({
  level: v.optional(
    v.pipe(v.unknown(), v.transform((l) => typeof l === "string" ? l.toUpperCase() : l), LogLevel),
    "INFO",
  ),
  log_file: v.optional(nonEmpty),
  console_output: v.optional(bool, true),
  use_colors: v.optional(bool, true),
  use_rotation: v.optional(bool, false),
  max_log_size: v.optional(whole(1), 10 * 1024 * 1024),
  backup_count: v.optional(whole(0), 5),
  structured_logs: v.optional(bool, false),
  /** One line per request. */
  access_log: v.optional(bool, true),
  access_format: v.optional(oneOf(["common", "combined", "json"]), "common"),
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
const headerLine = v.pipe(
  nonEmpty,
  v.regex(new RegExp(`^[${TCHAR}]+:\\s*\\S`), got('must be "Name: value"')),
);

/** `return: "200 OK"`: a status and an optional body (or Location, for 3xx). */
const returnSpec = v.pipe(
  nonEmpty,
  v.regex(/^[1-5]\d\d(\s|$)/, got('must be "STATUS [text]" such as "200 OK"')),
);

/** The keys a V2 location understands; anything else is an error naming it. */
export const RoutingLocation = v.pipe(
  strict({
    /** Forward to this backend (`{group}` allowed); a path in it replaces the request's. */
    proxy_pass: v.optional(
      v.pipe(nonEmpty, v.regex(/^https?:\/\/[^/\s]+/i, got("must be an http:// or https:// URL"))),
    ),
    /** Serve files from this folder instead of http.static_dir. */
    root: v.optional(nonEmpty),
    /** File that answers a folder (and the SPA page). Default index.html. */
    index_file: v.optional(
      v.pipe(nonEmpty, v.regex(/^[^/\\]+$/, "must be a file name without slashes")),
    ),
    /** Cache-Control on successful answers. */
    cache_control: v.optional(nonEmpty),
    /** Extra response headers, `Name: value` with `{group}` and `$remote_addr`-style variables. */
    headers: v.optional(list(headerLine), []),
    /** With proxy_pass: header rules for the request sent to the backend. */
    request_headers: v.optional(HeaderRules),
    /** With proxy_pass: header rules for the backend's answer. */
    response_headers: v.optional(HeaderRules),
    /** Answer directly with `STATUS [text]`. */
    return: v.optional(returnSpec),
    /** Content-Type of a `return` answer. Default text/plain. */
    content_type: v.optional(nonEmpty),
    /** Missing paths that do not look like files get the index_file (single-page apps). */
    spa_fallback: v.optional(bool, false),
    /** Path prefixes that never get the SPA page. */
    exclude_patterns: v.optional(list(urlPath), []),
  }),
  refine((l, fail) => {
    const what = l.return !== undefined ? "return" : l.proxy_pass !== undefined ? "proxy_pass" : "";
    if (l.return !== undefined && l.proxy_pass !== undefined) {
      fail(["proxy_pass"], "cannot be used with return");
    }
    if (what) {
      for (const key of ["root", "index_file", "exclude_patterns"] as const) {
        const value = l[key];
        if (value !== undefined && !(Array.isArray(value) && value.length === 0)) {
          fail([key], `cannot be used with ${what}`);
        }
      }
      if (l.spa_fallback) fail(["spa_fallback"], `cannot be used with ${what}`);
    }
    for (const key of ["request_headers", "response_headers"] as const) {
      if (l[key] !== undefined && l.proxy_pass === undefined) fail([key], "needs proxy_pass");
    }
    if (l.content_type !== undefined && l.return === undefined) {
      fail(["content_type"], "needs return");
    }
  }),
);
export type RoutingLocation = v.InferOutput<typeof RoutingLocation>;

/**
 * Parses each key of `record` with {@link parseLocationPattern}, once: each key that does not
 * parse is an issue at `path` + key; `only` narrows the kinds allowed. The parsed patterns come
 * out as `patterns`, in the record's order, for the route builders to use as they are (the one
 * place a pattern is parsed).
 */
const withPatterns = <T extends object>(
  pick: (value: T) => Record<string, unknown>,
  path: string[],
  only?: (p: LocationPattern, key: string) => void,
) =>
  v.rawTransform<T, T & { patterns: ReadonlyMap<string, LocationPattern> }>(
    ({ dataset, addIssue, NEVER }) => {
      const patterns = new Map<string, LocationPattern>();
      let failed = false;
      for (const key of Object.keys(pick(dataset.value))) {
        try {
          const p = parseLocationPattern(key);
          only?.(p, key);
          patterns.set(key, p);
        } catch (e) {
          failed = true;
          addIssue({
            message: (e as Error).message,
            path: [...path, key].map((k) => step(k)) as [v.IssuePathItem],
          });
        }
      }
      if (failed) return NEVER;
      // Not enumerable: the section reads, prints and compares as the file wrote it.
      return Object.defineProperty({ ...dataset.value }, "patterns", { value: patterns }) as
        & T
        & { patterns: ReadonlyMap<string, LocationPattern> };
    },
  );

/** `extensions: [{ type: routing, config: … }]`. */
export const RoutingConfig = v.pipe(
  strict({
    regex_locations: v.optional(record(RoutingLocation), {}),
  }),
  withPatterns((c) => c.regex_locations, ["regex_locations"]),
);
export type RoutingConfig = v.InferOutput<typeof RoutingConfig>;

const word = v.pipe(nonEmpty, v.regex(TOKEN, got("must be a header or method name")));

export const Cors = strict({
  /** Whether CORS headers are sent at all. */
  enabled: v.optional(bool, true),
  /** Allowed origins, exact (`https://app.example`) or `*`. */
  origins: v.optional(
    list(v.pipe(
      nonEmpty,
      v.check(
        (o) => o === "*" || /^[a-z][a-z0-9+.-]*:\/\/[^/\s]+$/i.test(o),
        got('must be "*" or an origin like https://app.example'),
      ),
    )),
    ["*"],
  ),
  /** Methods a preflight allows. */
  methods: v.optional(list(word), ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
  /** Request headers a preflight allows (`*` = any). */
  headers: v.optional(
    list(v.union([word, v.literal("*")], got(`must be "*" or a header name`))),
    ["Content-Type", "Authorization"],
  ),
  /** Response headers scripts may read. */
  expose_headers: v.optional(list(word), []),
  /** Allow cookies and HTTP authentication. */
  credentials: v.optional(bool, false),
  /** Seconds a browser may cache a preflight answer. */
  max_age: v.optional(whole(0)),
});
export type Cors = v.InferOutput<typeof Cors>;

/** `ip_filtering:` addresses refused, or the only ones let in. */
export const IpFiltering = strict({
  /** Whether the filter applies. */
  enabled: v.optional(bool, true),
  /** When not empty, only these addresses and ranges are served. */
  whitelist: v.optional(cidrList, []),
  /** These addresses and ranges are refused (even when also whitelisted). */
  blacklist: v.optional(cidrList, []),
});
export type IpFiltering = v.InferOutput<typeof IpFiltering>;

const headerValue = v.pipe(
  v.string(got("must be a string")),
  v.check((value) => !/[\r\n\0]/.test(value), "must not contain line breaks"),
);

/** `security_headers:` headers added to every answer. */
export const SecurityHeaders = strict({
  enabled: v.optional(bool, true),
  /** Header name → value. */
  headers: v.optional(
    v.pipe(
      record(headerValue),
      refine((h, fail) => {
        for (const name of Object.keys(h)) {
          if (!TOKEN.test(name)) fail([name], "is not a valid header name");
        }
      }),
    ),
    {
      "X-Content-Type-Options": "nosniff",
      "X-Frame-Options": "DENY",
      "Referrer-Policy": "strict-origin-when-cross-origin",
    },
  ),
});
export type SecurityHeaders = v.InferOutput<typeof SecurityHeaders>;

const RateLimit = strict({
  /** Tokens added per minute. */
  requests_per_minute: v.optional(whole(1), 60),
  /** Bucket size: requests a client may send at once. */
  burst: v.optional(whole(1), 10),
});

/** Whether `url` is `redis://[user:password@]host[:port][/db]` (or `rediss://`). */
function isRedisUrl(url: string): boolean {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  return (u.protocol === "redis:" || u.protocol === "rediss:") && u.hostname !== "" &&
    /^\d*$/.test(u.pathname.replace(/^\//, "")) && u.search === "" && u.hash === "";
}

/** `redis://[user:password@]host[:port][/db]` (or `rediss://`), checked where it is written. */
export const redisUrl = v.pipe(
  v.string(got("must be a string")),
  v.check(isRedisUrl, got("must be redis://host:port/db (or rediss://)")),
);

/** A redis `backend` needs its `url`. */
function redisNeedsUrl(
  c: { backend: string; url?: string },
  fail: (path: Path, message: string) => void,
) {
  if (c.backend === "redis" && c.url === undefined) {
    fail(["url"], "is required with backend: redis");
  }
}

/** `rate_limiting:` a token bucket per client address (and per rule). */
export const RateLimiting = v.pipe(
  strict({
    enabled: v.optional(bool, true),
    requests_per_minute: v.optional(whole(1), 60),
    burst: v.optional(whole(1), 10),
    /** Path prefix → its own limit, longest prefix first; requests under it count only there. */
    rules: v.optional(
      v.pipe(
        record(RateLimit),
        refine((rules, fail) => {
          for (const prefix of Object.keys(rules)) {
            if (!prefix.startsWith("/")) fail([prefix], 'must start with "/"');
          }
        }),
      ),
      {},
    ),
    /** Buckets kept at most; the least recently used idle ones go first. */
    max_clients: v.optional(whole(1), 10000),
    /** Where the buckets live: this process's memory, or Redis shared by several processes. */
    backend: v.optional(oneOf(["memory", "redis"], got('must be "memory" or "redis"')), "memory"),
    /** The Redis server of `backend: redis`. */
    url: v.optional(redisUrl),
  }),
  refine((c, fail) => redisNeedsUrl(c, fail)),
);
export type RateLimiting = v.InferOutput<typeof RateLimiting>;

/** `csrf_protection:` a double-submit cookie with an HMAC-signed token. */
export const CsrfProtection = v.pipe(
  strict({
    enabled: v.optional(bool, true),
    /** The HMAC key; required (use `${VAR}` to keep it out of the file). */
    secret: v.optional(v.pipe(nonEmpty, v.minLength(16, "must be at least 16 characters"))),
    cookie_name: v.optional(word, "csrf_token"),
    header_name: v.optional(word, "X-CSRF-Token"),
    /** Path prefixes whose unsafe requests are not checked. */
    exempt_paths: v.optional(list(urlPath), []),
  }),
  refine((c, fail) => {
    if (c.enabled && c.secret === undefined) fail(["secret"], "is required when enabled");
  }),
);
export type CsrfProtection = v.InferOutput<typeof CsrfProtection>;

/** `extensions: [{ type: security, config: … }]`. */
export const SecurityConfig = strict({
  cors: v.optional(Cors),
  rate_limiting: v.optional(RateLimiting),
  csrf_protection: v.optional(CsrfProtection),
  security_headers: v.optional(SecurityHeaders),
  ip_filtering: v.optional(IpFiltering),
  /**
   * Peers whose `X-Forwarded-For` names the client, for `ip_filtering` and `rate_limiting`;
   * by default none, and the socket's address counts.
   */
  trusted_proxies: v.optional(cidrList, []),
});
export type SecurityConfig = v.InferOutput<typeof SecurityConfig>;

/** Health check names denoserve answers for; any other name is reported as "unknown". */
export const KNOWN_HEALTH_CHECKS: readonly string[] = ["server", "reverse_proxy"];

const HealthCheck = strict({
  /** Exact path the JSON answer is served at. */
  path: urlPath,
  /**
   * Names of extra checks. The server itself and every `server.reverse_proxy` pool are always
   * reported; a name outside {@link KNOWN_HEALTH_CHECKS} is warned about and answered "unknown".
   */
  checks: v.optional(list(nonEmpty), []),
});

/** `extensions: [{ type: monitoring, config: … }]`. */
export const MonitoringConfig = v.pipe(
  strict({
    metrics: v.optional(strict({
      /** Serve Prometheus metrics. */
      enabled: v.optional(bool, true),
      /** Exact path of the metrics. */
      endpoint: v.optional(urlPath, "/metrics"),
    })),
    health_checks: v.optional(list(HealthCheck), []),
  }),
  refine((c, fail) => {
    const seen = new Map<string, number>();
    c.health_checks.forEach((h, i) => {
      const first = seen.get(h.path);
      if (first !== undefined) {
        fail(
          ["health_checks", i, "path"],
          `repeats ${h.path} of health_checks[${first}]; merge the two`,
        );
      } else seen.set(h.path, i);
    });
    const metrics = c.metrics;
    if (metrics?.enabled && seen.has(metrics.endpoint)) {
      fail(
        ["metrics", "endpoint"],
        `${metrics.endpoint} is also health_checks[${
          seen.get(metrics.endpoint)
        }].path; give the metrics and the health check different paths`,
      );
    }
  }),
);
export type MonitoringConfig = v.InferOutput<typeof MonitoringConfig>;

/** Cache backends PyServe names. */
export const CACHE_BACKENDS = ["memory", "redis"] as const;

const seconds = whole(0);

/** `extensions: [{ type: caching, config: … }]`: answers of proxied routes kept in memory. */
export const CachingConfig = v.pipe(
  strict({
    /** Where entries live: this process's memory, or Redis shared by several processes. */
    backend: v.optional(oneOf(CACHE_BACKENDS, got('must be "memory" or "redis"')), "memory"),
    /** The Redis server of `backend: redis`. */
    url: v.optional(redisUrl),
    /** Seconds an answer is fresh when neither the backend nor a rule says otherwise. */
    default_ttl: v.optional(seconds, 300),
    /**
     * `~regex` / `~*regex` (as in V2 locations) → seconds; the first that matches the path
     * decides, `0` = do not cache.
     */
    rules: v.optional(record(seconds), {}),
    /** Bytes of bodies and headers kept at most; the least recently used entries go first. */
    max_bytes: v.optional(whole(1), 64 * 1024 * 1024),
    /** Bytes one answer may have to be kept; larger ones pass through uncached. */
    max_entry_bytes: v.optional(whole(1), 1024 * 1024),
  }),
  withPatterns((c) => c.rules, ["rules"], (p, key) => {
    if (p.kind !== "regex") throw new Error(`must be "~regex" or "~*regex", got ${shown(key)}`);
  }),
  refine((c, fail) => {
    if (c.max_entry_bytes > c.max_bytes) {
      fail(["max_entry_bytes"], `must not exceed max_bytes (${c.max_bytes})`);
    }
    redisNeedsUrl(c, fail);
  }),
);
export type CachingConfig = v.InferOutput<typeof CachingConfig>;

/** The schema of each extension type's `config`. */
export const EXTENSION_SCHEMAS: Record<string, v.GenericSchema> = {
  routing: RoutingConfig,
  security: SecurityConfig,
  monitoring: MonitoringConfig,
  caching: CachingConfig,
};

/**
 * An `extensions` entry; `config` of known types is validated, unless the entry itself has
 * problems other than unknown keys. Unknown keys in it (a location's `vibe_serving`, say) stay
 * {@link UNKNOWN_KEY} issues, which loading turns into warnings, as PyServe ignores them.
 */
const Extension = v.pipe(
  strict({
    type: nonEmpty,
    config: v.optional(record(v.unknown()), {}),
    source: v.optional(nonEmpty),
  }),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed || dataset.issues?.some((i) => i.message !== UNKNOWN_KEY)) return;
    const ext = dataset.value;
    const schema = EXTENSION_SCHEMAS[ext.type];
    if (!schema) return;
    const result = v.safeParse(schema, ext.config);
    if (result.success) {
      ext.config = result.output as Record<string, unknown>;
      return;
    }
    for (const issue of result.issues) {
      addIssue({
        message: issue.message,
        path: [step("config", ext, ext.config), ...(issue.path ?? [])],
      });
    }
    // A config with problems is no usable entry: checks of the whole file wait for it.
    (dataset as { typed: boolean }).typed = false;
  }),
);

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

/**
 * A name of `sites[].names`: a host name, or a wildcard of one leading label (`*.example.com`,
 * as Caddy has it); read in lower case, without a trailing dot.
 */
const siteName = v.pipe(
  nonEmpty,
  v.transform((n) => n.toLowerCase().replace(/\.$/, "")),
  v.check(
    (n) => !n.slice(n.startsWith("*.") ? 2 : 0).includes("*"),
    got("has a wildcard that is not one whole leading label; write *.example.com"),
  ),
  v.check(
    (n) =>
      n.slice(n.startsWith("*.") ? 2 : 0).includes("*") ||
      /^(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/.test(n),
    got("must be a host name such as example.com, or *.example.com"),
  ),
);

/**
 * One of `sites`: its names, and the site-level keys of the sections a single-site file has at
 * the top (which are the default site's). A key a site leaves out takes its default, not the
 * default site's value.
 */
const Site = strict({
  /** Host names (and `*.example.com` wildcards) the site answers, and its certificate's. */
  names: v.pipe(
    list(siteName, got("must be a list of host names such as [example.com, www.example.com]")),
    v.minLength(1, "must list at least one name (only the top-level default site has none)"),
  ),
  server: v.optional(strict(SITE_SERVER), {}),
  http: v.optional(strict(SITE_HTTP), {}),
  ssl: v.optional(
    strict({
      /** The site's certificate chain; without it the default site's certificate is served. */
      cert_file: v.optional(nonEmpty),
      key_file: v.optional(nonEmpty),
      /** Strict-Transport-Security on the site's HTTPS answers; none when absent. */
      hsts: v.optional(nonEmpty),
      /** Refused with the way to say it: ACME is set once, at the top. */
      acme: v.optional(
        v.custom<never>(
          () => false,
          "cannot be set for a site: set ssl.acme at the top of the file; the names of every " +
            "site without cert_file join its order",
        ),
      ),
    }),
    {},
  ),
  extensions: v.optional(list(Extension), []),
});
export type Site = v.InferOutput<typeof Site>;

export const Config = v.pipe(
  strict({
    version: v.optional(v.picklist([1, 2], got("must be 1 or 2")), 1),
    server: v.optional(Server, {}),
    http: v.optional(Http, {}),
    ssl: v.optional(Ssl, {}),
    logging: v.optional(Logging, {}),
    extensions: v.optional(list(Extension), []),
    /** More sites on the same listeners, chosen by Host (and by SNI for the certificate). */
    sites: v.optional(list(Site), []),
  }),
  refine((c, fail) => {
    const owner = new Map<string, string>();
    c.sites.forEach((site, i) => {
      site.names.forEach((name, j) => {
        const first = owner.get(name);
        if (first !== undefined) fail(["sites", i, "names", j], `repeats "${name}" of ${first}`);
        else owner.set(name, `sites[${i}].names[${j}]`);
      });
      for (const key of ["cert_file", "key_file"] as const) {
        const other = key === "cert_file" ? "key_file" : "cert_file";
        if (site.ssl[other] !== undefined && site.ssl[key] === undefined) {
          fail(["sites", i, "ssl", key], `is required with sites[${i}].ssl.${other}`);
        }
      }
      const types = new Set<string>();
      site.extensions.forEach((e, k) => {
        if (types.has(e.type) && e.type in EXTENSION_SCHEMAS) {
          fail(["sites", i, "extensions", k], `repeats type ${e.type}; merge the two into one`);
        }
        types.add(e.type);
      });
    });
    // `extensions` without `version: 2` is a warning (see load.ts): PyServe applies them too.
    const firstOfType = new Map<string, number>();
    c.extensions.forEach((e, i) => {
      const first = firstOfType.get(e.type);
      if (first === undefined) firstOfType.set(e.type, i);
      else if (e.type in EXTENSION_SCHEMAS) {
        fail(
          ["extensions", i],
          `repeats type ${e.type} of extensions[${first}]; merge the two into one`,
        );
      }
    });
    const redirect = c.ssl.redirect_http;
    if (c.ssl.enabled && redirect !== undefined && redirect !== 0 && redirect === c.server.port) {
      fail(
        ["ssl", "redirect_http"],
        `must differ from server.port (${redirect}), which serves HTTPS`,
      );
    }
    // With neither file nor ACME, the certificate comes from the local CA (cli/local_https.ts).
    if (c.ssl.enabled && !c.ssl.acme && (c.ssl.cert_file || c.ssl.key_file)) {
      for (const [key, other] of [["cert_file", "key_file"], ["key_file", "cert_file"]] as const) {
        if (!c.ssl[key]) {
          fail(["ssl", key], `is required with ssl.${other} (or leave both out for the local CA)`);
        }
      }
    }
  }),
);

/** The validated configuration every other module reads. */
export type Config = v.InferOutput<typeof Config>;

/** A problem in a configuration: where, what, and for an unknown key the key. */
export interface Problem {
  /** The key path of the value; for an unknown key, of the mapping it is in. */
  path: Path;
  message: string;
  unknownKey?: string;
}

/** The problems of a failed parse, in the order found. */
export function problems(issues: readonly Issue[]): Problem[] {
  return issues.map((issue) => {
    const path = (issue.path ?? []).map((item) => item.key as string | number);
    return issue.message === UNKNOWN_KEY
      ? { path: path.slice(0, -1), message: issue.message, unknownKey: path.at(-1) as string }
      : { path, message: issue.message };
  });
}

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
  ["server", "reverse_proxy", "*", "forward_auth", "ca_file"],
  ["server", "locations", "*", "forward_auth", "ca_file"],
  ["server", "locations", "*", "auth", "htpasswd_file"],
  ["extensions", "*", "source"],
  ["extensions", "*", "config", "regex_locations", "*", "root"],
  ["sites", "*", "http", "static_dir"],
  ["sites", "*", "http", "templates_dir"],
  ["sites", "*", "ssl", "cert_file"],
  ["sites", "*", "ssl", "key_file"],
  ["sites", "*", "server", "reverse_proxy", "*", "ca_file"],
  ["sites", "*", "server", "reverse_proxy", "*", "forward_auth", "ca_file"],
  ["sites", "*", "server", "locations", "*", "forward_auth", "ca_file"],
  ["sites", "*", "server", "locations", "*", "auth", "htpasswd_file"],
  ["sites", "*", "extensions", "*", "config", "regex_locations", "*", "root"],
  ["sites", "*", "extensions", "*", "source"],
];
