/**
 * `lb: least_conn`: the backend with the fewest requests in flight.
 *
 * @module
 */
import type { BalancingPolicy } from "./policy.ts";

/**
 * Picks the backend with the fewest requests in flight; among equals, the first counting from a
 * start that moves on by one per pick, so that idle backends take turns. `count` is the number
 * of backends of the rule.
 */
export function leastConn(count: number): BalancingPolicy {
  /** Index (in the rule's list) the count of this pick starts from. */
  let next = 0;
  return {
    pick(backends) {
      const n = backends.length;
      let start = 0;
      while (start < n && backends[start].index < next) start++;
      if (start === n) start = 0;
      let best = backends[start];
      for (let i = 1; i < n; i++) {
        const b = backends[(start + i) % n];
        if (b.active < best.active) best = b;
      }
      next = (next + 1) % count;
      return best;
    },
  };
}
