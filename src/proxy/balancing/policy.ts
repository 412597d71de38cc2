/**
 * Load balancing: a policy picks, per request, one of the backends of a rule that are up. The
 * pool (src/proxy/pool.ts) keeps health and falls back when none is up; a policy only chooses.
 *
 * A policy sees the request and its context: `ip_hash`, `uri_hash` and `header` hash the client's
 * network, the URI or a header (hash.ts: rendezvous hashing on `Backend.index`, which stays the
 * same however many are up), and `cookie` pins a client with a cookie it sets.
 *
 * @module
 */
import type { RequestContext } from "../../http/types.ts";
import type { Backend } from "../pool.ts";
import type { CompiledRule } from "../rules.ts";
import { cookiePolicy } from "./cookie.ts";
import { headerHash } from "./header_hash.ts";
import { ipHash } from "./ip_hash.ts";
import { leastConn } from "./least_conn.ts";
import { uriHash } from "./uri_hash.ts";
import { roundRobin } from "./round_robin.ts";

/** Chooses a backend for one request. */
export interface BalancingPolicy {
  /**
   * One of `backends` for `request`, or undefined to let the pool fall back as if none were up.
   * `backends` are the rule's backends that are up (healthy and not marked down), in the rule's
   * order, without one that has just failed for this request; never empty. The array belongs to
   * the pool: read it, do not keep or change it.
   */
  pick(backends: readonly Backend[], request: Request, ctx: RequestContext): Backend | undefined;
  /**
   * A `Set-Cookie` value for the answer of `request` served by `backend`, for a policy that
   * pins clients with a cookie; undefined when none is needed (the client has the right one).
   */
  cookie?(backend: Backend, request: Request, ctx: RequestContext): string | undefined;
}

/** The policy `rule` names in `lb`. */
export function createBalancingPolicy(rule: CompiledRule): BalancingPolicy {
  const lb = rule.rule.lb;
  switch (lb) {
    case "round_robin":
      return roundRobin();
    case "least_conn":
      return leastConn(rule.backends.length);
    case "ip_hash":
      return ipHash();
    case "uri_hash":
      return uriHash();
    case "header":
      return headerHash(rule.rule.lb_header!);
    case "cookie":
      return cookiePolicy(rule);
    default:
      throw new Error(`unknown lb ${lb satisfies never}`);
  }
}
