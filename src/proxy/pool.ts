/**
 * The backends of one rule: picking one (the choice is the rule's balancing policy, see
 * src/proxy/balancing/), passive health (a backend that fails to connect is skipped for
 * `fail_timeout`), and the optional active health check.
 *
 * @module
 */
import type { RequestContext } from "../http/types.ts";
import type { Logger } from "../log/logger.ts";
import { createBalancingPolicy } from "./balancing/policy.ts";
import type { BackendConnections } from "./connections.ts";
import type { BackendAddress, CompiledRule } from "./rules.ts";

/** One backend of a rule: where it is, how to reach it, and its live state. */
export interface Backend {
  /** Position in the rule's backend list. */
  index: number;
  address: BackendAddress;
  connections: BackendConnections;
  /** Requests in flight (headers or body still moving). */
  active: number;
  /** Passive health: skipped until this time (ms since epoch). */
  downUntil: number;
  /** Active health: false after a failed probe until one succeeds. */
  healthy: boolean;
}

/** Whether `backend` is taken by picks at `now`: its health check passes and it is not down. */
export const backendUp = (backend: Backend, now = Date.now()): boolean =>
  backend.healthy && backend.downUntil <= now;

/** Picks backends for one rule. */
export interface Pool {
  backends: Backend[];
  /**
   * A backend for `request`, chosen by the rule's balancing policy among those that are up,
   * skipping `except`; backends that are down are used only when nothing else is left (the one
   * that comes back soonest). Undefined only when `except` was the only backend.
   */
  pick(request: Request, ctx: RequestContext, except?: Backend): Backend | undefined;
  /** The `Set-Cookie` a cookie policy wants on `backend`'s answer to `request`, if any. */
  cookie?: (backend: Backend, request: Request, ctx: RequestContext) => string | undefined;
  /** Marks a backend down for `fail_timeout` after it failed to connect. */
  fail(backend: Backend, reason: string): void;
  /** Stops the active health check. */
  close(): void;
}

/**
 * Creates the pool of `rule` over `connections` (in backend order), starting its active health
 * check when `health_path` is set.
 */
export function createPool(
  rule: CompiledRule,
  connections: readonly BackendConnections[],
  log: Logger,
  probe: (backend: Backend, signal: AbortSignal) => Promise<Response>,
): Pool {
  const backends: Backend[] = rule.backends.map((address, index) => ({
    index,
    address,
    connections: connections[index],
    active: 0,
    downUntil: 0,
    healthy: true,
  }));
  const policy = createBalancingPolicy(rule);
  const n = backends.length;
  const where = `server.reverse_proxy[${rule.index}]`;

  // The backends that are up, built again only when that may have changed (a failure, a health
  // check, a down time running out), so that a pick allocates nothing.
  let up: Backend[] = backends;
  let upUntil = Infinity;
  const refresh = (now: number) => {
    up = [];
    upUntil = Infinity;
    for (const b of backends) {
      if (!b.healthy) continue;
      if (b.downUntil > now) upUntil = Math.min(upUntil, b.downUntil);
      else up.push(b);
    }
  };

  const pick = (request: Request, ctx: RequestContext, except?: Backend): Backend | undefined => {
    if (n === 1) return except === backends[0] ? undefined : backends[0];
    const now = Date.now();
    if (now >= upUntil) refresh(now);
    const offered = except === undefined ? up : up.filter((b) => b !== except);
    let best = offered.length > 0 ? policy.pick(offered, request, ctx) : undefined;
    if (best) return best;
    // Everything is down: try the one that should come back first rather than failing outright.
    for (const b of backends) {
      if (b !== except && (best === undefined || b.downUntil < best.downUntil)) best = b;
    }
    return best;
  };

  const fail = (b: Backend, reason: string) => {
    const was = b.downUntil > Date.now();
    b.downUntil = Date.now() + rule.failTimeoutMs;
    upUntil = 0;
    if (!was) {
      log.warn(
        `${where}: backend ${b.address.origin} is down for ${rule.rule.fail_timeout}s: ${reason}`,
      );
    }
  };

  let timer: ReturnType<typeof setInterval> | undefined;
  const checks = new Set<AbortController>();
  if (rule.rule.health_path !== undefined) {
    const check = async (b: Backend) => {
      const controller = new AbortController();
      checks.add(controller);
      const t = setTimeout(() => controller.abort(), rule.connectTimeoutMs);
      let ok = false;
      let why = "";
      try {
        const res = await probe(b, controller.signal);
        await res.body?.cancel();
        ok = res.status >= 200 && res.status < 400;
        why = `status ${res.status}`;
      } catch (e) {
        why = controller.signal.aborted ? "timed out" : (e as Error).message.split("\n")[0];
      } finally {
        clearTimeout(t);
        checks.delete(controller);
      }
      if (ok !== b.healthy) {
        b.healthy = ok;
        upUntil = 0;
        const msg = `${where}: health check of ${b.address.origin}${rule.rule.health_path}`;
        if (ok) log.info(`${msg} passes again`);
        else log.warn(`${msg} failed (${why}); backend skipped until it passes`);
      }
    };
    const checkAll = () => {
      for (const b of backends) check(b);
    };
    timer = setInterval(checkAll, rule.healthIntervalMs);
    checkAll();
  }

  return {
    backends,
    pick,
    cookie: policy.cookie?.bind(policy),
    fail,
    close() {
      if (timer !== undefined) clearInterval(timer);
      for (const c of checks) c.abort();
    },
  };
}
