/**
 * Failures of certificate issuance turned into one line a person can act on.
 *
 * @module
 */

/** Why issuance failed, for the retry policy and for tests. */
export type AcmeFailure =
  | "directory" // the CA could not be reached
  | "challenge" // the CA reached us but did not accept the answer
  | "dns" // the domain does not lead to this server
  | "rate-limit" // the CA refuses more orders for now
  | "rejected" // the CA refused the request (unknown domain, bad contact, policy…)
  | "storage"; // the storage (folder or Redis) could not be used

/** Seconds to wait after a rate limit that names no wait (Let's Encrypt's windows are hours). */
export const RATE_LIMIT_WAIT = 3600;

/** An issuance failure with a message naming what, where, and how to fix it. */
export class AcmeError extends Error {
  constructor(
    readonly kind: AcmeFailure,
    message: string,
    /** Seconds the CA asked us to wait (Retry-After), when it said so. */
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = "AcmeError";
  }
}

const CONNECT_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ETIMEDOUT",
  "ECONNABORTED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_HAS_EXPIRED",
]);

function causeText(e: unknown): string {
  const err = e as { code?: string; message?: string; cause?: unknown };
  const parts = [err?.code, err?.message].filter(Boolean);
  return parts.length ? [...new Set(parts)].join(": ") : String(e);
}

/**
 * An error from talking to the CA at `directoryUrl`, classified. Problem documents (RFC 7807)
 * keep the CA's own words.
 */
export function explainAcmeError(e: unknown, directoryUrl: string): AcmeError {
  if (e instanceof AcmeError) {
    if (e.kind !== "rate-limit" || e.retryAfter !== undefined) return e;
    return new AcmeError(e.kind, e.message, RATE_LIMIT_WAIT);
  }
  const err = e as {
    code?: string;
    message?: string;
    isAxiosError?: boolean;
    response?: { status?: number; headers?: Record<string, string> };
  };
  const text = causeText(e);
  if (/rate ?limit|too many/i.test(err?.message ?? "")) {
    return new AcmeError(
      "rate-limit",
      `ACME CA ${directoryUrl} rate limit: ${err.message}`,
      RATE_LIMIT_WAIT,
    );
  }
  if (
    (err?.code && CONNECT_CODES.has(err.code)) || (err?.isAxiosError && !err.response) ||
    /certificate|connection refused|dns error|timeout|network|tcp connect/i.test(err?.message ?? "")
  ) {
    return new AcmeError(
      "directory",
      `ACME directory ${directoryUrl} unreachable: ${text}; check ssl.acme.directory_url` +
        " (and ssl.acme.ca_file for a private CA)",
    );
  }
  return new AcmeError("rejected", `ACME CA ${directoryUrl} refused the request: ${text}`);
}

/** A challenge error object (RFC 8555 §7.1.5) as found on an invalid challenge. */
export interface ChallengeProblem {
  type?: string;
  detail?: string;
}

/** The failed validation of `domain`, with the CA's reason. */
export function challengeError(domain: string, problem: ChallengeProblem | undefined): AcmeError {
  const type = (problem?.type ?? "").replace("urn:ietf:params:acme:error:", "");
  const reason = problem?.detail ?? "no reason given";
  if (type === "dns" || type === "connection") {
    return new AcmeError(
      "dns",
      `ACME validation of ${domain} failed: the CA could not reach this server (${type}: ${reason});` +
        ` make ${domain} point to this server and keep port 80 (ssl.acme.http_port) open`,
    );
  }
  if (type === "rateLimited") {
    return new AcmeError("rate-limit", `ACME validation of ${domain}: rate limited: ${reason}`);
  }
  return new AcmeError(
    "challenge",
    `ACME validation of ${domain} rejected by the CA (${type || "error"}: ${reason});` +
      ` check that ${domain} reaches this server on port 80 and not another one`,
  );
}
