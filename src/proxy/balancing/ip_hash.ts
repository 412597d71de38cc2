/**
 * `lb: ip_hash`: the client's network picks the backend, as nginx's `ip_hash`: the first three
 * octets of an IPv4 address (its /24), and the first 64 bits of an IPv6 address (its /64: one
 * subscriber's network, within which privacy addresses change; nginx takes the whole IPv6
 * address). An IPv4-mapped IPv6 address counts as the IPv4 address.
 *
 * @module
 */
import { parseIp } from "../../http/ip.ts";
import { byHash, hashKey } from "./hash.ts";
import type { BalancingPolicy } from "./policy.ts";

/** The network of `address` as text: `10.1.2` for 10.1.2.3, the /64 in hex for IPv6. */
export function clientNetwork(address: string): string {
  if (!address.includes(":")) return address.slice(0, address.lastIndexOf("."));
  const ip = parseIp(address);
  if (ip === undefined) return address;
  return ip.v6 ? (ip.value >> 64n).toString(16) : (ip.value >> 8n).toString(16);
}

/** Picks by the hash of the client's network among the backends that are up. */
export function ipHash(): BalancingPolicy {
  return {
    pick: (backends, _request, ctx) =>
      byHash(backends, hashKey(clientNetwork(ctx.remote.hostname))),
  };
}
