/**
 * `lb: cookie`: sticky sessions by a cookie denoserve sets (Caddy's `cookie` policy). A client
 * without a valid cookie is given a backend round-robin, and its answer sets the cookie
 * (`lb_cookie`, default `denoserve_lb`): an HMAC-SHA256 of the backend's address under
 * `lb_cookie_secret`, so a client can neither read which backend it is on nor choose another.
 * The cookie is honoured while its backend is up; when it is down the client moves (round-robin)
 * and gets a new cookie. Every backend's value is computed when the configuration loads: a
 * request only compares text.
 *
 * @module
 */
import { createHmac } from "node:crypto";
import { readCookie } from "../../http/headers.ts";
import type { Backend } from "../pool.ts";
import type { CompiledRule } from "../rules.ts";
import type { BalancingPolicy } from "./policy.ts";
import { roundRobin } from "./round_robin.ts";

/** The key when `lb_cookie_secret` is not set: one per process, kept across reloads. */
const PROCESS_SECRET = crypto.getRandomValues(new Uint8Array(32));

/** The cookie policy of `rule`. */
export function cookiePolicy(rule: CompiledRule): BalancingPolicy {
  const name = rule.rule.lb_cookie;
  const secret = rule.rule.lb_cookie_secret ?? PROCESS_SECRET;
  const values = rule.backends.map((b) =>
    createHmac("sha256", secret).update(b.origin).digest("hex").slice(0, 32)
  );
  const byValue = new Map(values.map((v, i) => [v, i]));
  const attributes = `; Path=${rule.prefix || "/"}; HttpOnly; SameSite=Lax`;
  const fallback = roundRobin();
  return {
    pick(backends, request, ctx) {
      const value = readCookie(request.headers.get("cookie"), name);
      const index = value === undefined ? undefined : byValue.get(value);
      if (index !== undefined) {
        for (const b of backends) if (b.index === index) return b;
      }
      return fallback.pick(backends, request, ctx);
    },
    cookie(backend: Backend, request, ctx) {
      const value = values[backend.index];
      if (readCookie(request.headers.get("cookie"), name) === value) return undefined;
      return `${name}=${value}${attributes}${ctx.secure ? "; Secure" : ""}`;
    },
  };
}
