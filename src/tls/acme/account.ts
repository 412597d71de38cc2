/**
 * The ACME account: its key (created once, kept in storage), the client that signs requests with
 * it (JWS, nonces and retries on `badNonce` come from `acme-client`), and trust for a private
 * ACME server through `ssl.acme.ca_file`.
 *
 * @module
 */
import acme from "acme-client";
import https from "node:https";
import tls from "node:tls";
import type { Logger } from "../../log/logger.ts";
import { readAccountKey, type StoragePaths, writePrivate } from "./storage.ts";

/** What {@link openAccount} needs. */
export interface AccountOptions {
  directoryUrl: string;
  email: string;
  /** PEM of extra CAs trusted for the ACME server (`ssl.acme.ca_file` contents). */
  caPem?: string;
  paths: StoragePaths;
  log: Logger;
  /** Longest wait for one HTTP request to the CA, in ms. Default 30 000. */
  requestTimeoutMs?: number;
}

/** The client type of `acme-client`. */
export type AcmeClient = InstanceType<typeof acme.Client>;

/**
 * Loads or creates the account key, registers (or finds) the account at the CA and returns a
 * client signing with it.
 */
export async function openAccount(options: AccountOptions): Promise<AcmeClient> {
  // acme-client sends every request through its one axios instance, so trust is set there.
  acme.axios.defaults.timeout = options.requestTimeoutMs ?? 30_000;
  acme.axios.defaults.httpsAgent = options.caPem
    ? new https.Agent({ ca: [...tls.rootCertificates, options.caPem] })
    : undefined;
  let accountKey = await readAccountKey(options.paths);
  if (!accountKey) {
    accountKey = (await acme.crypto.createPrivateEcdsaKey("P-256")).toString();
    await writePrivate(options.paths.accountKey, accountKey);
    options.log.info(`acme: created account key ${options.paths.accountKey}`);
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
