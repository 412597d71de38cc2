/**
 * The addresses a listener answers on, for the start banner and the local CA's leaf: the loopback
 * names, and the machine's network addresses and host name when it is bound to 0.0.0.0 or ::.
 *
 * @module
 */

/** Whether `host` is the any-address of IPv4 or IPv6. */
export const isWildcard = (host: string): boolean => {
  const bare = host.replace(/^\[(.*)\]$/, "$1");
  return bare === "0.0.0.0" || bare === "::" || bare === "";
};

const isLoopback = (address: string) => address.startsWith("127.") || address === "::1";

/**
 * The machine's own addresses on its networks (loopback and link-local left out: they need no
 * name, or a zone no URL carries), IPv4 first. Needs `--allow-sys=networkInterfaces`.
 */
export function networkAddresses(ipv6: boolean): string[] {
  const found = Deno.networkInterfaces()
    .filter((i) => !isLoopback(i.address) && !/^fe[89ab]/i.test(i.address))
    .filter((i) => i.family === "IPv4" || ipv6)
    .sort((a, b) => (a.family === b.family ? 0 : a.family === "IPv4" ? -1 : 1))
    .map((i) => i.address);
  return [...new Set(found)];
}

/** What a listener on `host` answers on: local names, and network addresses when wildcard. */
export interface Reach {
  local: string[];
  network: string[];
}

/** The names and addresses a listener on `host` is reached at (see {@link Reach}). */
export function reachOf(host: string, network: () => string[] = () => []): Reach {
  const bare = host.replace(/^\[(.*)\]$/, "$1");
  if (bare === "127.0.0.1" || bare === "localhost") {
    return { local: ["localhost", "127.0.0.1"], network: [] };
  }
  if (bare === "::1") return { local: ["localhost", "::1"], network: [] };
  if (bare === "0.0.0.0") return { local: ["localhost", "127.0.0.1"], network: network() };
  if (bare === "::" || bare === "") {
    return { local: ["localhost", "127.0.0.1", "::1"], network: network() };
  }
  return { local: [], network: [bare] };
}

/** `scheme://host:port/` with IPv6 addresses in brackets. */
export const urlFor = (scheme: string, host: string, port: number): string =>
  `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}/`;
