/**
 * Authentication for the path prefixes of `server.locations` (and of `server.reverse_proxy` rules
 * with `forward_auth`): basic authentication with users written inline or in an htpasswd file,
 * then `forward_auth` (see forward_auth.ts).
 *
 * Passwords are checked as htpasswd.ts says, in constant time. Because bcrypt costs tens of
 * milliseconds, an accepted `Authorization` value for a hashed password is remembered (as a
 * digest) for a few minutes. Failed attempts are logged at WARNING with the user name and client
 * address, successes at DEBUG; the password is never logged.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { ConfigError } from "../config/config_error.ts";
import { readConfigFile } from "../config/load.ts";
import type { Config, ProxyRule } from "../config/schema.ts";
import type { Logger } from "../log/logger.ts";
import type { ErrorResponder } from "../http/types.ts";
import { permissionHint } from "../http/errors.ts";
import { normalizePath } from "../http/paths.ts";
import { type Handler, type RequestContext, type Route, underPrefix } from "../http/types.ts";
import { readCaFile } from "../tls/certs.ts";
import { type ClientAddress, clientAddress } from "./client_address.ts";
import { createForwardAuth, type ForwardAuthGate } from "./forward_auth.ts";
import {
  type Credential,
  hashCredential,
  HtpasswdError,
  plainCredential,
  readHtpasswd,
  sameSecret,
  type Users,
  verify,
} from "./htpasswd.ts";

/** Options of {@link createAuthRoute}. */
export interface AuthOptions {
  log: Logger;
  errorResponse: ErrorResponder;
  /** Answers requests that passed the check. */
  next: Handler;
  /**
   * Also guard `/static/<prefix>`, because the file server answers `/static/x` with `/x` when
   * `/static/x` itself does not exist. Default true.
   */
  staticAlias?: boolean;
  /** Proxy rules, whose `forward_auth` guards their path. Default none. */
  rules?: readonly ProxyRule[];
  /** The client's address, sent to auth services. Default: the socket's. */
  client?: ClientAddress;
}

/** How long an accepted check of a hashed password is remembered, in ms. */
const VERIFIED_TTL_MS = 5 * 60 * 1000;
const VERIFIED_MAX = 256;

type AuthSettings = NonNullable<Config["server"]["locations"][string]["auth"]>;

/** Basic authentication of one prefix. */
interface Basic {
  /** The config key, for logs. */
  key: string;
  realm: string;
  challenge: string;
  users: Users;
  /**
   * SHA-256 of the expected `Basic` token (base64 of `user:password`) of each plain password:
   * the common, correct request is then a digest and a comparison per plain user.
   */
  tokens: { digest: Uint8Array; user: string }[];
  /** Checked for a user that does not exist, so that the answer takes as long. */
  decoy: Credential;
  /** Digests of accepted `Authorization` values of hashed passwords → until when. */
  verified: Map<string, number>;
}

/**
 * What guards the paths below one prefix: the basic authentication and the auth service of the
 * nearest prefixes (this one or above) that have them.
 */
interface Guard {
  prefix: string;
  basic?: Basic;
  forward?: ForwardAuthGate;
}

const sha256 = (text: string) => createHash("sha256").update(text).digest();

/** A `server.locations` key as a prefix: without trailing slashes, "/" kept. */
export const locationPrefix = (key: string): string =>
  key.length > 1 ? key.replace(/\/+$/, "") : key;

/**
 * A finder of the item whose `prefix` is the longest one `path` lies on or below (on segment
 * boundaries); with `staticAlias`, `/static/<path>` is also found as `<path>`, because the file
 * server answers `/static/x` with `/x` when `/static/x` itself does not exist.
 */
export function findByPrefix<T extends { prefix: string }>(
  items: readonly T[],
  staticAlias = true,
): (path: string) => T | undefined {
  const sorted = [...items].sort((a, b) => b.prefix.length - a.prefix.length);
  return (path) => {
    for (const g of sorted) if (underPrefix(path, g.prefix)) return g;
    if (staticAlias && path.startsWith("/static/")) {
      const inner = path.slice(7);
      for (const g of sorted) if (underPrefix(inner, g.prefix)) return g;
    }
    return undefined;
  };
}

/** A credential the schema accepted. */
const credentialOf = (password: string | undefined, hash: string | undefined) =>
  password !== undefined ? plainCredential(password) : hashCredential(hash!) as Credential;

/** The users of `auth`: inline ones first, then those of its htpasswd file not given inline. */
function usersOf(auth: AuthSettings): Users {
  const users: Users = new Map();
  if (auth.username !== undefined) {
    users.set(auth.username, credentialOf(auth.password, auth.password_hash));
  }
  for (const u of auth.users) users.set(u.username, credentialOf(u.password, u.password_hash));
  if (auth.htpasswd_file !== undefined) {
    let read: Users;
    try {
      read = readHtpasswd(auth.htpasswd_file);
    } catch (e) {
      if (e instanceof HtpasswdError) throw new ConfigError(e.message);
      throw e;
    }
    for (const [name, credential] of read) if (!users.has(name)) users.set(name, credential);
  }
  return users;
}

/** Encodes `user:password` as a Basic token (UTF-8, base64). */
const basicToken = (user: string, password: string) => {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  return btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""));
};

function makeBasic(key: string, auth: AuthSettings): Basic {
  const realm = auth.realm.replace(/["\\]/g, "\\$&");
  const users = usersOf(auth);
  const tokens: Basic["tokens"] = [];
  const plain = (name: string, password: string | undefined) => {
    if (password !== undefined) {
      tokens.push({ digest: sha256(basicToken(name, password)), user: name });
    }
  };
  if (auth.username !== undefined) plain(auth.username, auth.password);
  for (const u of auth.users) plain(u.username, u.password);
  return {
    key,
    realm,
    challenge: `Basic realm="${realm}", charset="UTF-8"`,
    users,
    tokens,
    decoy: users.values().next().value!,
    verified: new Map(),
  };
}

/** Whether `password` is `user`'s; hashed passwords that passed are remembered by `header`. */
function check(
  basic: Basic,
  user: string,
  password: string,
  header: string,
): boolean | Promise<boolean> {
  const credential = basic.users.get(user);
  if (credential === undefined) {
    const spent = verify(basic.decoy, password);
    return typeof spent === "boolean" ? false : spent.then(() => false);
  }
  if (credential.kind === "plain") return verify(credential, password);
  const id = createHash("sha256").update(header).digest("base64");
  const until = basic.verified.get(id);
  if (until !== undefined && until > Date.now()) return true;
  const remember = (ok: boolean) => {
    if (!ok) return false;
    if (basic.verified.size >= VERIFIED_MAX) {
      basic.verified.delete(basic.verified.keys().next().value!);
    }
    basic.verified.set(id, Date.now() + VERIFIED_TTL_MS);
    return true;
  };
  const ok = verify(credential, password);
  return typeof ok === "boolean" ? remember(ok) : ok.then(remember);
}

const BASIC = /^basic\s+([A-Za-z0-9+/=]+)\s*$/i;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The user name and password of a Basic `Authorization` header, or null when malformed. */
export function parseBasic(header: string): { user: string; password: string } | null {
  const m = BASIC.exec(header);
  if (!m) return null;
  let text: string;
  try {
    const binary = atob(m[1]);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    text = utf8.decode(bytes);
  } catch {
    return null;
  }
  const colon = text.indexOf(":");
  if (colon < 0) return null;
  return { user: text.slice(0, colon), password: text.slice(colon + 1) };
}

/** A user name as it may appear in a log line: quoted, control characters escaped, bounded. */
const shownUser = (user: string) =>
  JSON.stringify(user.length > 64 ? user.slice(0, 64) + "…" : user);

/** The `forward_auth` blocks: of `server.locations` keys, then of proxy rules' paths. */
function forwardAuths(
  locations: Config["server"]["locations"],
  rules: readonly ProxyRule[],
) {
  const found = Object.entries(locations)
    .filter(([, l]) => l.forward_auth !== undefined)
    .map(([key, l]) => ({
      key,
      where: `server.locations.${key}`,
      path: ["server", "locations", key, "forward_auth"] as (string | number)[],
      settings: l.forward_auth!,
    }));
  rules.forEach((rule, i) => {
    if (rule.forward_auth) {
      found.push({
        key: rule.path,
        where: `server.reverse_proxy[${i}]`,
        path: ["server", "reverse_proxy", i, "forward_auth"],
        settings: rule.forward_auth,
      });
    }
  });
  return found;
}

/**
 * The route guarding `server.locations` prefixes with `auth` or `forward_auth` (and proxy rules'
 * paths with `forward_auth`), or undefined when there are none. Below a prefix with `auth`,
 * requests get 401 with `WWW-Authenticate` until they carry the right credentials; then the
 * auth service of `forward_auth`, if any, is asked; then `options.next` answers them. Paths are
 * matched after decoding and resolving dot segments, so `/%61dmin` and `/x/../admin` are guarded
 * like `/admin`; of each kind, the longest prefix that has it counts. Dispose it to close the
 * auth services' connections.
 */
export function createAuthRoute(
  locations: Config["server"]["locations"],
  options: AuthOptions,
): (Route<Guard | null> & Disposable) | undefined {
  const { log, errorResponse, next } = options;
  const basics: { prefix: string; basic: Basic }[] = [];
  for (const [key, l] of Object.entries(locations)) {
    if (l.auth !== undefined) {
      basics.push({ prefix: locationPrefix(key), basic: makeBasic(key, l.auth) });
    }
  }
  const gateOptions = { log, errorResponse, client: options.client ?? clientAddress([]) };
  const forwards: { prefix: string; gate: ForwardAuthGate }[] = [];
  const dispose = () => {
    for (const f of forwards) f.gate[Symbol.dispose]();
  };
  try {
    for (const { key, where, settings } of forwardAuths(locations, options.rules ?? [])) {
      const prefix = locationPrefix(key);
      // The first block of a prefix counts; validation reports a second one.
      if (forwards.some((f) => f.prefix === prefix)) continue;
      forwards.push({ prefix, gate: createForwardAuth(settings, where, gateOptions) });
    }
  } catch (e) {
    dispose();
    throw e;
  }
  const prefixes = new Set([...basics, ...forwards].map((g) => g.prefix));
  if (prefixes.size === 0) return undefined;
  // Each kind comes from the nearest prefix that has it, so that a more specific location with
  // one kind never drops the other kind a broader one has (a basic-auth-only /app/admin below a
  // forward_auth /app is asked about too). Resolved here, once per prefix.
  const nearestBasic = findByPrefix(basics, false);
  const nearestForward = findByPrefix(forwards, false);
  const guards: Guard[] = [...prefixes].map((prefix) => ({
    prefix,
    basic: nearestBasic(prefix)?.basic,
    forward: nearestForward(prefix)?.gate,
  }));
  const guardFor = findByPrefix(guards, options.staticAlias ?? true);
  /** The guard of the request's path; null for a path that cannot be decoded (answered 400). */
  const match = (ctx: RequestContext): Guard | null | undefined => {
    const path = normalizePath(ctx.path);
    return path === null ? null : guardFor(path);
  };

  const handle = (request: Request, ctx: RequestContext, guard: Guard | null) => {
    if (guard === null) return errorResponse(400, request);
    const forward = guard.forward;
    const pass: Handler = forward ? (r, c) => forward(r, c, next) : next;
    const basic = guard.basic;
    if (basic === undefined) return pass(request, ctx);
    const deny = () => errorResponse(401, request, { "www-authenticate": basic.challenge });
    const client = ctx.remote.hostname;
    const header = request.headers.get("authorization");
    if (header === null) {
      log.debug(`auth: no credentials from ${client} for ${basic.key}`);
      return deny();
    }
    if (basic.tokens.length > 0) {
      const m = BASIC.exec(header);
      if (m) {
        let user: string | undefined;
        for (const t of basic.tokens) if (sameSecret(m[1], t.digest)) user = t.user;
        if (user !== undefined) {
          if (log.enabled("DEBUG")) {
            log.debug(`auth ok for user ${shownUser(user)} from ${client} on ${basic.key}`);
          }
          return pass(request, ctx);
        }
      }
    }
    const creds = parseBasic(header);
    if (creds === null) {
      log.warn(`auth failed: malformed Authorization header from ${client} for ${basic.key}`);
      return deny();
    }
    const verdict = (ok: boolean) => {
      if (!ok) {
        log.warn(`auth failed for user ${shownUser(creds.user)} from ${client} on ${basic.key}`);
        return deny();
      }
      if (log.enabled("DEBUG")) {
        log.debug(`auth ok for user ${shownUser(creds.user)} from ${client} on ${basic.key}`);
      }
      return pass(request, ctx);
    };
    const ok = check(basic, creds.user, creds.password, header);
    return typeof ok === "boolean" ? verdict(ok) : ok.then(verdict);
  };
  return {
    name: "auth",
    match,
    handle,
    [Symbol.dispose]: dispose,
  };
}

/** Warnings about how `server.locations` is set up (plain passwords without TLS). */
export function authWarnings(config: Config): string[] {
  if (config.ssl.enabled) return [];
  return Object.entries(config.server.locations)
    .filter(([, l]) =>
      l.auth?.password !== undefined || l.auth?.users.some((u) => u.password !== undefined)
    )
    .map(([key]) =>
      `server.locations.${key}.auth has a plain password and ssl is off: Basic credentials ` +
      `cross the network readable; enable ssl and prefer password_hash (bcrypt)`
    );
}

/** One line of {@link checkAccess}'s report (the shape of validation's check results). */
export interface AccessCheck {
  status: "ok" | "warn" | "fail";
  /** The config key checked. */
  name: string;
  message: string;
}

/**
 * The checks of access control that need the file system or permissions, for validation: each
 * htpasswd file is read (a bad line fails naming its file and line), each auth service's
 * `ca_file` too, and the permission to reach each auth service is there; a prefix with two
 * `forward_auth` blocks fails. An auth service whose certificate is not verified and an inline
 * user who is also in the htpasswd file are warnings. Problems start with the `file:line:col` of
 * their key in `file`, the configuration file, when there is one.
 */
export async function checkAccess(config: Config, file?: string): Promise<AccessCheck[]> {
  const results: AccessCheck[] = [];
  /** Key paths of the problems, by result, for their place in the file. */
  const places = new Map<AccessCheck, (string | number)[]>();
  const problem = (status: "warn" | "fail", path: (string | number)[], message: string) => {
    const result: AccessCheck = { status, name: pathName(path), message };
    results.push(result);
    places.set(result, path);
  };
  for (const [key, l] of Object.entries(config.server.locations)) {
    const htpasswd = l.auth?.htpasswd_file;
    if (htpasswd === undefined) continue;
    const path = ["server", "locations", key, "auth", "htpasswd_file"];
    const at = pathName(path);
    try {
      const read = readHtpasswd(htpasswd);
      const inline = [l.auth!.username, ...l.auth!.users.map((u) => u.username)];
      for (const name of inline) {
        if (name !== undefined && read.has(name)) {
          problem(
            "warn",
            path,
            `${at}: user "${name}" is also in ${htpasswd}; the inline password is used`,
          );
        }
      }
      results.push({ status: "ok", name: at, message: `${htpasswd}: ${read.size} user(s)` });
    } catch (e) {
      if (!(e instanceof HtpasswdError)) throw e;
      for (const line of e.message.split("\n")) problem("fail", path, `${at}: ${line}`);
    }
  }
  const seen = new Map<string, string>();
  const { locations, reverse_proxy } = config.server;
  for (const { key, where, path, settings } of forwardAuths(locations, reverse_proxy)) {
    const name = `${where}.forward_auth`;
    const problems = results.length;
    const prefix = locationPrefix(key);
    const first = seen.get(prefix);
    if (first !== undefined) {
      problem(
        "fail",
        path,
        `${name}: ${first}.forward_auth already guards ${prefix}; keep one of them`,
      );
    } else seen.set(prefix, where);
    if (settings.ca_file !== undefined) {
      try {
        readCaFile(`${name}.ca_file`, settings.ca_file);
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        problem("fail", [...path, "ca_file"], e.message);
      }
    }
    const url = new URL(settings.url);
    const host = `${url.hostname}:${url.port || (url.protocol === "https:" ? 443 : 80)}`;
    if (Deno.permissions.querySync({ name: "net", host }).state !== "granted") {
      problem(
        "fail",
        [...path, "url"],
        `${name}.url: no net permission for ${host}; ${permissionHint("net", host)}`,
      );
    }
    if (settings.insecure_skip_verify && url.protocol === "https:") {
      problem(
        "warn",
        [...path, "insecure_skip_verify"],
        `${name}: insecure_skip_verify is on: the certificate of ${url.origin} is NOT ` +
          `verified; anyone on the path can answer in its place and let anyone in. Use ` +
          `ca_file instead.`,
      );
    }
    if (results.length === problems) {
      results.push({ status: "ok", name, message: `${prefix} asks ${settings.url}` });
    }
  }
  if (places.size > 0 && file !== undefined) {
    const { where } = await readConfigFile(file);
    for (const [result, path] of places) result.message = where(path) + result.message;
  }
  return results;
}

/** `server.locations./admin.auth`, `server.reverse_proxy[0].forward_auth`. */
const pathName = (path: (string | number)[]) =>
  path.map((p, i) => typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`).join("");
