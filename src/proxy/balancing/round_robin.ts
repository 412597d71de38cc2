/**
 * `lb: round_robin` (the default): backends take turns in the rule's order.
 *
 * @module
 */
import type { BalancingPolicy } from "./policy.ts";

/** Each pick takes the next backend after the last one picked; one that is down loses its turn. */
export function roundRobin(): BalancingPolicy {
  /** Index (in the rule's list) the next turn starts from. */
  let next = 0;
  return {
    pick(backends) {
      let chosen = backends[0];
      for (const b of backends) {
        if (b.index >= next) {
          chosen = b;
          break;
        }
      }
      next = chosen.index + 1;
      return chosen;
    },
  };
}
