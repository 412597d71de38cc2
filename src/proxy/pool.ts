/**
 * The backends of one rule: picking one (round robin or least connections), passive health
 * (a backend that fails to connect is skipped for `fail_timeout`), and the optional active
 * health check.
 *
 * @module
 */
import type { Logger } from "../log/logger.ts";
import type { Backend, CompiledRule } from "./rules.ts";

/** A backend with its live state. */
export interface Member {
  /** Position in the rule's backend list. */
  index: number;
  backend: Backend;
  /** Requests in flight (headers or body still moving). */
  active: number;
  /** Passive health: skipped until this time (ms since epoch). */
  downUntil: number;
  /** Active health: false after a failed probe until one succeeds. */
  healthy: boolean;
}

/** Picks backends for one rule. */
export interface Pool {
  members: Member[];
  /**
   * A backend to use, skipping `except`; backends that are down are used only when nothing
   * else is left (the one that comes back soonest). Undefined only when `except` was the only
   * backend.
   */
  pick(except?: Member): Member | undefined;
  /** Marks a backend down for `fail_timeout` after it failed to connect. */
  fail(member: Member, reason: string): void;
  /** Stops the active health check. */
  close(): void;
}

/** Creates the pool of `rule`, starting its active health check when `health_path` is set. */
export function createPool(
  rule: CompiledRule,
  log: Logger,
  probe: (backend: Backend, signal: AbortSignal) => Promise<Response>,
): Pool {
  const members: Member[] = rule.backends.map((backend, index) => ({
    index,
    backend,
    active: 0,
    downUntil: 0,
    healthy: true,
  }));
  const leastConn = rule.rule.lb === "least_conn";
  const n = members.length;
  let next = 0;
  const where = `server.reverse_proxy[${rule.index}]`;

  const up = (m: Member, now: number) => m.healthy && m.downUntil <= now;

  const pick = (except?: Member): Member | undefined => {
    if (n === 1) return except === members[0] ? undefined : members[0];
    const now = Date.now();
    let best: Member | undefined;
    if (leastConn) {
      for (let i = 0; i < n; i++) {
        const m = members[(next + i) % n];
        if (m !== except && up(m, now) && (best === undefined || m.active < best.active)) best = m;
      }
      next = (next + 1) % n;
    } else {
      for (let i = 0; i < n; i++) {
        const m = members[next];
        next = (next + 1) % n;
        if (m !== except && up(m, now)) return m;
      }
    }
    if (best) return best;
    // Everything is down: try the one that should come back first rather than failing outright.
    for (const m of members) {
      if (m !== except && (best === undefined || m.downUntil < best.downUntil)) best = m;
    }
    return best;
  };

  const fail = (m: Member, reason: string) => {
    const was = m.downUntil > Date.now();
    m.downUntil = Date.now() + rule.failTimeoutMs;
    if (!was) {
      log.warn(
        `${where}: backend ${m.backend.origin} is down for ${rule.rule.fail_timeout}s: ${reason}`,
      );
    }
  };

  let timer: ReturnType<typeof setInterval> | undefined;
  const checks = new Set<AbortController>();
  if (rule.rule.health_path !== undefined) {
    const check = async (m: Member) => {
      const controller = new AbortController();
      checks.add(controller);
      const t = setTimeout(() => controller.abort(), rule.connectTimeoutMs);
      let ok = false;
      let why = "";
      try {
        const res = await probe(m.backend, controller.signal);
        await res.body?.cancel();
        ok = res.status >= 200 && res.status < 400;
        why = `status ${res.status}`;
      } catch (e) {
        why = controller.signal.aborted ? "timed out" : (e as Error).message.split("\n")[0];
      } finally {
        clearTimeout(t);
        checks.delete(controller);
      }
      if (ok !== m.healthy) {
        m.healthy = ok;
        const msg = `${where}: health check of ${m.backend.origin}${rule.rule.health_path}`;
        if (ok) log.info(`${msg} passes again`);
        else log.warn(`${msg} failed (${why}); backend skipped until it passes`);
      }
    };
    const checkAll = () => {
      for (const m of members) check(m);
    };
    timer = setInterval(checkAll, rule.healthIntervalMs);
    checkAll();
  }

  return {
    members,
    pick,
    fail,
    close() {
      if (timer !== undefined) clearInterval(timer);
      for (const c of checks) c.abort();
    },
  };
}
