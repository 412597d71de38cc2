/**
 * One certificate order (RFC 8555 §7.4): new order, one http-01 challenge per authorization
 * answered by our responder, finalize with a fresh key's CSR, download the chain.
 *
 * @module
 */
import acme from "acme-client";
import type { Logger } from "../../log/logger.ts";
import type { AcmeClient } from "./account.ts";
import type { ChallengeResponder } from "./challenge.ts";
import { AcmeError, challengeError, type ChallengeProblem } from "./problems.ts";

/** A certificate just issued. */
export interface IssuedCertificate {
  /** Chain in PEM, leaf first. */
  certPem: string;
  /** The new private key (ECDSA P-256) in PEM. */
  keyPem: string;
}

type Authorization = Awaited<ReturnType<AcmeClient["getAuthorizations"]>>[number];
type Challenge = Authorization["challenges"][number];

async function validate(
  client: AcmeClient,
  order: Parameters<AcmeClient["getAuthorizations"]>[0],
  authz: Authorization,
  responder: ChallengeResponder,
  log: Logger,
): Promise<void> {
  const domain = authz.identifier.value;
  if (authz.status === "valid") {
    log.debug(`acme: ${domain} already authorized`);
    return;
  }
  const challenge = authz.challenges.find((c: Challenge) => c.type === "http-01");
  if (!challenge) {
    throw new AcmeError(
      "rejected",
      `ACME CA offers no http-01 challenge for ${domain} (offered: ${
        authz.challenges.map((c: Challenge) => c.type).join(", ")
      })`,
    );
  }
  const keyAuthorization = await client.getChallengeKeyAuthorization(challenge);
  await responder.add(challenge.token, keyAuthorization);
  try {
    await client.completeChallenge(challenge);
    await client.waitForValidStatus(challenge);
    log.info(`acme: ${domain} validated (http-01)`);
  } catch (e) {
    // The CA's reason is on the challenge; read the authorization again to get it.
    let problem: ChallengeProblem | undefined;
    try {
      const fresh = (await client.getAuthorizations(order)).find((a: Authorization) =>
        a.identifier.value === domain
      );
      const failed = fresh?.challenges.find((c: Challenge) => c.type === "http-01") as
        | (Challenge & { error?: ChallengeProblem })
        | undefined;
      problem = failed?.error;
    } catch { /* keep the first error */ }
    if (!problem) problem = { detail: e instanceof Error ? e.message : String(e) };
    throw challengeError(domain, problem);
  } finally {
    await responder.remove(challenge.token).catch(() => {}); // Redis keeps it only minutes
  }
}

/** Orders a certificate for `domains` and answers its challenges through `responder`. */
export async function orderCertificate(
  client: AcmeClient,
  domains: readonly string[],
  responder: ChallengeResponder,
  log: Logger,
): Promise<IssuedCertificate> {
  const order = await client.createOrder({
    identifiers: domains.map((value) => ({ type: "dns", value })),
  });
  log.debug(`acme: order ${order.url} for ${domains.join(", ")}`);
  const authorizations = await client.getAuthorizations(order);
  await Promise.all(
    authorizations.map((a: Authorization) => validate(client, order, a, responder, log)),
  );
  const key = await acme.crypto.createPrivateEcdsaKey("P-256");
  const [, csr] = await acme.crypto.createCsr({
    // The common name is limited to 64 characters; the names that count are the altNames.
    commonName: domains[0].length <= 64 ? domains[0] : undefined,
    altNames: [...domains],
  }, key);
  const finalized = await client.finalizeOrder(order, csr);
  const certPem = await client.getCertificate(finalized);
  return { certPem, keyPem: key.toString() };
}
