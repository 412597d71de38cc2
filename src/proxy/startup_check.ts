/**
 * The start-up check: each backend gets one TCP connection attempt; one that cannot be reached
 * is a warning (it may come up later), never a reason not to start. `app/validate.ts` runs it for
 * a start and for `--test`.
 *
 * @module
 */
import type { ProxyRule } from "../config/schema.ts";
import { dial } from "./http1.ts";
import { compileRule } from "./rules.ts";

/** Probes every backend of `rules` at once; resolves to a warning for each unreachable one. */
export async function checkBackends(
  rules: readonly ProxyRule[],
  timeoutMs = 3000,
): Promise<string[]> {
  const seen = new Map<string, { host: string; port: number; rule: number; path: string }>();
  rules.forEach((r, i) => {
    for (const b of compileRule(r, i).backends) {
      const key = `${b.host}:${b.port}`;
      if (!seen.has(key)) seen.set(key, { host: b.host, port: b.port, rule: i, path: r.path });
    }
  });
  const down: string[] = [];
  await Promise.all([...seen].map(async ([key, b]) => {
    const limit = Math.min(timeoutMs, rules[b.rule].connect_timeout * 1000);
    try {
      (await dial({ hostname: b.host, port: b.port, tls: false, connectTimeoutMs: limit })).close();
      return;
    } catch { /* reported below */ }
    down.push(
      `server.reverse_proxy[${b.rule}]: backend ${key} for ${b.path} is not reachable now; ` +
        `requests get 502 until it is (--skip-proxy-check skips this check)`,
    );
  }));
  return down;
}
