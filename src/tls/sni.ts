/**
 * The certificate of each TLS handshake, chosen by the name the client sent (SNI) among the
 * sites' certificates: the exact name first, then a one-label wildcard, as requests are matched
 * to sites by Host. A client without SNI, or with a name no site with certificate files of its
 * own has, gets the default site's certificate.
 *
 * @module
 */
import type { Config } from "../config/schema.ts";
import { addNames, hostName, siteFor, type SiteTable } from "../config/sites.ts";
import { loadTlsMaterial, type TlsMaterial } from "./certs.ts";

/** A certificate and its key in PEM, as `Deno.listenTls` takes them. */
export interface KeyPair {
  cert: string;
  key: string;
}

/** A site's own certificate, and the names it is chosen for. */
export interface SiteCertificate {
  names: readonly string[];
  tls: TlsMaterial;
}

/** The certificate for each SNI name: `fallback` unless one of `sites` has the name. */
export function sniResolver(
  fallback: KeyPair,
  sites: readonly SiteCertificate[],
): (sni: string) => KeyPair {
  const table: SiteTable<KeyPair> = { exact: new Map(), wildcard: new Map() };
  // Earlier sites win a name given twice (which validation refuses anyway).
  for (const site of [...sites].reverse()) {
    addNames(table, site.names, { cert: site.tls.cert, key: site.tls.key });
  }
  return (sni) => (sni === "" ? undefined : siteFor(table, hostName(sni))) ?? fallback;
}

/** The certificates of the sites of `config` that have certificate files of their own. */
export async function loadSiteCertificates(config: Config): Promise<SiteCertificate[]> {
  const found: SiteCertificate[] = [];
  for (const site of config.sites) {
    const { cert_file, key_file } = site.ssl;
    if (cert_file === undefined || key_file === undefined) continue;
    found.push({ names: site.names, tls: await loadTlsMaterial(cert_file, key_file) });
  }
  return found;
}
