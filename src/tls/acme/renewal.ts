/**
 * When to (re)issue: one timer for the next renewal, and retries with exponential back-off
 * after a failure, so a CA outage costs a few requests an hour, not a request loop.
 *
 * @module
 */
import { AcmeError } from "./problems.ts";

/** Options of {@link createRenewalScheduler}. */
export interface RenewalOptions {
  /** Issues a certificate; throws on failure. On success it schedules the next time itself. */
  run: () => Promise<void>;
  /** Delay before the first retry after a failure, in ms. Default 60 000 (one minute). */
  retryMinMs?: number;
  /** Longest delay between retries, in ms. Default 3 600 000 (one hour). */
  retryMaxMs?: number;
  /**
   * Another back-off for some failures (storage that is away comes back in seconds, a CA's
   * refusal does not): its first and longest delay, or undefined for the default.
   */
  backoff?: (error: unknown) => { minMs: number; maxMs: number } | undefined;
  /** Told about each failure and the delay before the next attempt. */
  onFailure?: (error: unknown, attempt: number, delayMs: number) => void;
}

/** A timer for the next issuance. */
export interface RenewalScheduler {
  /** Runs an issuance at `time` (epoch ms; now or earlier means at once), replacing any plan. */
  at(time: number): void;
  /** The planned time of the next attempt, or undefined when none is planned. */
  readonly next: number | undefined;
  /** Cancels the plan; an attempt in progress finishes but schedules nothing. */
  stop(): void;
}

// setTimeout takes at most 2^31-1 ms (about 24.8 days); longer waits are chained.
const MAX_TIMER = 2 ** 31 - 1;

/** A scheduler calling `options.run` at the planned times and retrying it on failure. */
export function createRenewalScheduler(options: RenewalOptions): RenewalScheduler {
  const retryMin = options.retryMinMs ?? 60_000;
  const retryMax = options.retryMaxMs ?? 3_600_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let next: number | undefined;
  let stopped = false;
  let running = false;
  // A plan that came due while an attempt ran is run right after it, not dropped.
  let again = false;
  let failures = 0;

  const plan = (time: number) => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    next = time;
    if (stopped) return;
    const wait = Math.max(0, time - Date.now());
    timer = setTimeout(() => {
      timer = undefined;
      if (wait > MAX_TIMER) plan(time);
      else attempt();
    }, Math.min(wait, MAX_TIMER));
  };

  const attempt = async () => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    next = undefined;
    try {
      await options.run();
      failures = 0;
    } catch (e) {
      failures++;
      const own = options.backoff?.(e);
      let delay = Math.min(own?.maxMs ?? retryMax, (own?.minMs ?? retryMin) * 2 ** (failures - 1));
      // A CA that names its wait (Retry-After, rate limits) is waited for at least that long.
      if (e instanceof AcmeError && e.retryAfter) delay = Math.max(delay, e.retryAfter * 1000);
      options.onFailure?.(e, failures, delay);
      if (!stopped) plan(Date.now() + delay);
    } finally {
      running = false;
      if (again && !stopped) {
        again = false;
        plan(Date.now());
      }
    }
  };

  return {
    at: plan,
    get next() {
      return next;
    },
    stop() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      next = undefined;
    },
  };
}
