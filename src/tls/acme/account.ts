/**
 * The ACME account: its key (created once, kept in storage), the client that signs requests with
 * it (JWS, nonces and retries on `badNonce` come from `acme-client`), and trust for a private
 * ACME server through `ssl.acme.ca_file`.
 *
 * @module
 */
import acme from "acme-client";
import https from "node:https";
import type { Logger } from "../../log/logger.ts";
import { AcmeError } from "./problems.ts";
import type { AcmeStorage } from "./storage.ts";

/** What {@link openAccount} needs. */
export interface AccountOptions {
  directoryUrl: string;
  email: string;
  /** PEM of extra CAs trusted for the ACME server (`ssl.acme.ca_file` contents). */
  caPem?: string;
  storage: AcmeStorage;
  log: Logger;
  /** Longest wait for one HTTP request to the CA, in ms. Default 30 000. */
  requestTimeoutMs?: number;
}

interface HttpError {
  config?: { url?: string };
  response?: {
    status?: number;
    headers?: Record<string, string | undefined>;
    data?: { type?: string; detail?: string };
  };
}
type Rejected = (error: HttpError) => Promise<unknown>;
let patched = false;

/** Seconds in a Retry-After header (delta or HTTP date), or undefined. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, (date - now) / 1000);
}

/**
 * Two fixes to acme-client's response interceptor (every response passes through it):
 * - it reads `response.config` even when there is no response (refused connection, untrusted
 *   certificate), which replaces the real cause with a TypeError; the network error is kept;
 * - a rate limit (HTTP 429 or `rateLimited`) would be retried after its Retry-After, which can be
 *   hours of silence; it becomes an {@link AcmeError} at once, carrying the wait, so the renewal
 *   scheduler logs it and waits that long.
 */
function patchInterceptor() {
  if (patched) return;
  patched = true;
  const chain = acme.axios.interceptors.response as unknown as {
    handlers: ({ rejected?: Rejected } | null)[];
  };
  for (const handler of chain.handlers) {
    const original = handler?.rejected;
    if (!handler || !original) continue;
    handler.rejected = async (error) => {
      const response = error?.response;
      if (
        response?.status === 429 ||
        response?.data?.type === "urn:ietf:params:acme:error:rateLimited"
      ) {
        const origin = error.config?.url ? new URL(error.config.url).origin : "the ACME CA";
        throw new AcmeError(
          "rate-limit",
          `ACME CA ${origin} rate limit: ${response.data?.detail ?? `HTTP ${response.status}`}`,
          parseRetryAfter(response.headers?.["retry-after"]),
        );
      }
      try {
        return await original(error);
      } catch (e) {
        if (!error?.response && e instanceof TypeError) throw error;
        throw e;
      }
    };
  }
}

/** The client type of `acme-client`. */
export type AcmeClient = InstanceType<typeof acme.Client>;

/**
 * Loads or creates the account key, registers (or finds) the account at the CA and returns a
 * client signing with it.
 */
export async function openAccount(options: AccountOptions): Promise<AcmeClient> {
  // acme-client sends every request through its one axios instance, so trust is set there.
  patchInterceptor();
  acme.axios.defaults.timeout = options.requestTimeoutMs ?? 30_000;
  // One quick retry for a network blip or a 5xx/429 (honouring Retry-After); longer outages are
  // the renewal scheduler's job, which logs each failure instead of waiting silently for minutes.
  const settings = (acme.axios.defaults as { acmeSettings?: Record<string, number> }).acmeSettings;
  if (settings) Object.assign(settings, { retryMaxAttempts: 1, retryDefaultDelay: 1 });
  acme.axios.defaults.httpsAgent = options.caPem
    // Only the CA's own server is contacted, so ca_file alone is the trust (as in Node, `ca`
    // replaces the default roots; adding tls.rootCertificates would need --allow-sys).
    ? new https.Agent({ ca: options.caPem })
    : undefined;
  let accountKey = await options.storage.readAccountKey();
  if (!accountKey) {
    const created = (await acme.crypto.createPrivateEcdsaKey("P-256")).toString();
    // With shared storage another instance may have stored one first: that one is used.
    accountKey = await options.storage.writeAccountKey(created);
    if (accountKey === created) {
      options.log.info(`acme: created an account key in ${options.storage.where}`);
    }
  }
  const client = new acme.Client({
    directoryUrl: options.directoryUrl,
    accountKey,
    // Polling of orders and authorizations; the CA usually answers within a second or two.
    backoffAttempts: 10,
    backoffMin: 500,
    backoffMax: 5_000,
  });
  await client.createAccount({
    termsOfServiceAgreed: true,
    contact: [`mailto:${options.email}`],
  });
  options.log.debug(`acme: account ${client.getAccountUrl()}`);
  return client;
}
