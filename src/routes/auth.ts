/**
 * Basic authentication for the path prefixes of `server.locations`.
 *
 * Plain passwords are compared as SHA-256 digests with `timingSafeEqual`, so the time taken does
 * not depend on where the guess goes wrong. bcrypt hashes are checked with bcryptjs; because
 * that costs tens of milliseconds, an accepted `Authorization` value is remembered (as a digest)
 * for a few minutes. Failed attempts are logged at WARNING with the user name and client address,
 * successes at DEBUG; the password is never logged.
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { Config } from "../config/schema.ts";
import type { Logger } from "../log/logger.ts";
import type { ErrorResponder } from "../http/types.ts";
import { normalizePath } from "../http/paths.ts";
import { type Handler, type RequestContext, type Route, underPrefix } from "../http/types.ts";

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
}

/** How long an accepted bcrypt check is remembered, in ms. */
const VERIFIED_TTL_MS = 5 * 60 * 1000;
const VERIFIED_MAX = 256;

interface Guard {
  prefix: string;
  /** The config key, for logs. */
  key: string;
  realm: string;
  challenge: string;
  /** The configured user name, for the log line of the fast path. */
  user: string;
  /**
   * SHA-256 of the expected `Basic` token (base64 of `user:password`), for plain passwords:
   * the common, correct request is then one digest and one comparison.
   */
  token?: Uint8Array;
  check(user: string, password: string, header: string): boolean | Promise<boolean>;
}

const sha256 = (text: string) => createHash("sha256").update(text).digest();

/** Equal-time string comparison (the digests have equal length whatever the inputs). */
function sameSecret(given: string, expected: Uint8Array): boolean {
  return timingSafeEqual(sha256(given), expected);
}

function makeGuard(key: string, auth: NonNullable<Config["server"]["locations"][string]["auth"]>) {
  const prefix = key.length > 1 ? key.replace(/\/+$/, "") : key;
  const realm = auth.realm.replace(/["\\]/g, "\\$&");
  const user = sha256(auth.username);
  let check: Guard["check"];
  let token: Uint8Array | undefined;
  if (auth.password !== undefined) {
    const bytes = new TextEncoder().encode(`${auth.username}:${auth.password}`);
    token = sha256(btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join("")));
    const password = sha256(auth.password);
    check = (u, p) => {
      const userOk = sameSecret(u, user);
      const passOk = sameSecret(p, password);
      return userOk && passOk;
    };
  } else {
    const hash = auth.password_hash!;
    const verified = new Map<string, number>();
    check = async (u, p, header) => {
      const id = createHash("sha256").update(header).digest("base64");
      const until = verified.get(id);
      if (until !== undefined && until > Date.now()) return true;
      const userOk = sameSecret(u, user);
      // Loaded on first use: only configurations with password_hash pay for it.
      const { default: bcrypt } = await import("bcryptjs");
      const passOk = await bcrypt.compare(p, hash);
      if (!(userOk && passOk)) return false;
      if (verified.size >= VERIFIED_MAX) verified.delete(verified.keys().next().value!);
      verified.set(id, Date.now() + VERIFIED_TTL_MS);
      return true;
    };
  }
  return {
    prefix,
    key,
    realm,
    challenge: `Basic realm="${realm}", charset="UTF-8"`,
    user: auth.username,
    token,
    check,
  } satisfies Guard;
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

/**
 * The route guarding `server.locations` prefixes, or undefined when none has `auth`. Requests
 * below a guarded prefix get 401 with `WWW-Authenticate` until they carry the right credentials;
 * then `options.next` answers them. Paths are matched after decoding and resolving dot segments,
 * so `/%61dmin` and `/x/../admin` are guarded like `/admin`; the longest prefix wins.
 */
export function createAuthRoute(
  locations: Config["server"]["locations"],
  options: AuthOptions,
): Route<Guard | null> | undefined {
  const guards: Guard[] = Object.entries(locations)
    .filter(([, l]) => l.auth !== undefined)
    .map(([key, l]) => makeGuard(key, l.auth!))
    .sort((a, b) => b.prefix.length - a.prefix.length);
  if (guards.length === 0) return undefined;
  const { log, errorResponse, next } = options;
  const staticAlias = options.staticAlias ?? true;

  const guardFor = (path: string): Guard | undefined => {
    for (const g of guards) if (underPrefix(path, g.prefix)) return g;
    if (staticAlias && path.startsWith("/static/")) {
      const inner = path.slice(7);
      for (const g of guards) if (underPrefix(inner, g.prefix)) return g;
    }
    return undefined;
  };
  /** The guard of the request's path; null for a path that cannot be decoded (answered 400). */
  const match = (ctx: RequestContext): Guard | null | undefined => {
    const path = normalizePath(ctx.path);
    return path === null ? null : guardFor(path);
  };

  const deny = (request: Request, guard: Guard) =>
    errorResponse(401, request, { "www-authenticate": guard.challenge });

  const handle = (request: Request, ctx: RequestContext, guard: Guard | null) => {
    if (guard === null) return errorResponse(400, request);
    const client = ctx.remote.hostname;
    const header = request.headers.get("authorization");
    if (header === null) {
      log.debug(`auth: no credentials from ${client} for ${guard.key}`);
      return deny(request, guard);
    }
    if (guard.token) {
      const m = BASIC.exec(header);
      if (m && sameSecret(m[1], guard.token)) {
        if (log.enabled("DEBUG")) {
          log.debug(`auth ok for user ${shownUser(guard.user)} from ${client} on ${guard.key}`);
        }
        return next(request, ctx);
      }
    }
    const creds = parseBasic(header);
    if (creds === null) {
      log.warn(`auth failed: malformed Authorization header from ${client} for ${guard.key}`);
      return deny(request, guard);
    }
    const verdict = (ok: boolean) => {
      if (!ok) {
        log.warn(`auth failed for user ${shownUser(creds.user)} from ${client} on ${guard.key}`);
        return deny(request, guard);
      }
      if (log.enabled("DEBUG")) {
        log.debug(`auth ok for user ${shownUser(creds.user)} from ${client} on ${guard.key}`);
      }
      return next(request, ctx);
    };
    const ok = guard.check(creds.user, creds.password, header);
    return typeof ok === "boolean" ? verdict(ok) : ok.then(verdict);
  };
  return { name: "auth", match, handle };
}

/** Warnings about how `server.locations` is set up (plain passwords without TLS). */
export function authWarnings(config: Config): string[] {
  if (config.ssl.enabled) return [];
  return Object.entries(config.server.locations)
    .filter(([, l]) => l.auth?.password !== undefined)
    .map(([key]) =>
      `server.locations.${key}.auth has a plain password and ssl is off: Basic credentials ` +
      `cross the network readable; enable ssl and prefer password_hash (bcrypt)`
    );
}
