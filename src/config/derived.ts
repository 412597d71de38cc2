/**
 * Settings worked out from others, once, for every folder that needs them: the start, the
 * checks and the listeners read the same answer.
 *
 * @module
 */
import type { Config } from "./schema.ts";

/** The number of event loops `server.workers` asks for: the main thread and the workers. */
export function workerCount(setting: number | "auto"): number {
  return setting === "auto" ? Math.max(1, navigator.hardwareConcurrency || 1) : setting;
}

/**
 * Whether `ssl.redirect_http` names `ssl.acme.http_port`. The ACME challenge listener
 * (`server/challenge_listener.ts`) then holds that port from before the first certificate to the
 * end, and redirects whatever is not a challenge: the server opens nothing else there, so no
 * reload has to hand the port over.
 */
/** The connection timeouts of `cfg` in milliseconds (0: off), as every listener takes them. */
export function timeoutsMs(cfg: Config) {
  const s = cfg.server;
  return {
    handshake: s.handshake_timeout * 1000,
    header: s.header_timeout * 1000,
    idle: s.idle_timeout * 1000,
    body: s.body_timeout * 1000,
  };
}

export const redirectIsAcme = (cfg: Config): boolean =>
  cfg.ssl.acme !== undefined && cfg.ssl.redirect_http !== undefined &&
  cfg.ssl.redirect_http !== 0 && cfg.ssl.redirect_http === cfg.ssl.acme.http_port;
