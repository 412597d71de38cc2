/**
 * Load balancing: a policy picks, per request, one of the backends of a rule that are up. The
 * pool (src/proxy/pool.ts) keeps health and falls back when none is up; a policy only chooses.
 *
 * A policy sees the request and its context, so one that hashes the client address
 * (`ctx.remote.hostname`) or the URI (`ctx.path`) is one more file here and one more case in
 * {@link createBalancingPolicy}; `Backend.index` stays the same however many are up, so a hash
 * can be mapped onto the rule's backend list rather than onto the ones up at the moment.
 *
 * @module
 */
import type { RequestContext } from "../../http/types.ts";
import type { Backend } from "../pool.ts";
import type { CompiledRule } from "../rules.ts";
import { leastConn } from "./least_conn.ts";
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
}

/** The policy `rule` names in `lb`. */
export function createBalancingPolicy(rule: CompiledRule): BalancingPolicy {
  const lb = rule.rule.lb;
  switch (lb) {
    case "round_robin":
      return roundRobin();
    case "least_conn":
      return leastConn(rule.backends.length);
    default:
      throw new Error(`unknown lb ${lb satisfies never}`);
  }
}
