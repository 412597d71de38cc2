/**
 * Which address a request comes from, for address filters and per-client limits.
 *
 * @module
 */
import { type IpAddress, ipKey, IpSet, parseIp } from "../http/ip.ts";
import type { RequestContext } from "../http/types.ts";

/** Finds a request's client address; undefined when none parses. */
export type ClientAddress = (request: Request, ctx: RequestContext) => IpAddress | undefined;

/**
 * The socket's address, or, when the socket's peer is one of `trustedProxies`, the address in
 * `X-Forwarded-For` that the nearest untrusted hop wrote: read from the right, skipping trusted
 * proxies, since everything left of them is what the client itself claimed.
 */
export function clientAddress(trustedProxies: readonly string[]): ClientAddress {
  const trusted = new IpSet(trustedProxies);
  if (trusted.size === 0) return (_request, ctx) => parseIp(ctx.remote.hostname);
  return (request, ctx) => {
    const peer = parseIp(ctx.remote.hostname);
    if (!peer || !trusted.has(peer)) return peer;
    const header = request.headers.get("x-forwarded-for");
    if (header === null) return peer;
    const hops = header.split(",");
    let found = peer;
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = parseIp(hops[i].trim());
      if (!hop) break;
      found = hop;
      if (!trusted.has(hop)) break;
    }
    return found;
  };
}

/** The canonical text of a request's client address ("?" when none parses), a rate-limit key. */
export type ClientKey = (request: Request, ctx: RequestContext) => string;

/** {@link ClientKey} for `trustedProxies`, as {@link clientAddress} finds the address. */
export function clientKey(trustedProxies: readonly string[]): ClientKey {
  const client = clientAddress(trustedProxies);
  const parsed: ClientKey = (request, ctx) => {
    const ip = client(request, ctx);
    return ip ? ipKey(ip) : "?";
  };
  if (new IpSet(trustedProxies).size > 0) return parsed;
  // The socket's own address: an IPv4 one as the runtime writes it is already canonical, so the
  // common case needs no parsing.
  return (request, ctx) => {
    const host = ctx.remote.hostname;
    return host.includes(":") ? parsed(request, ctx) : host;
  };
}

/** `address` written as text (IPv6 with its longest run of zero groups shortened to `::`). */
export function addressText(address: IpAddress): string {
  if (!address.v6) return ipKey(address);
  const groups = Array.from(
    { length: 8 },
    (_, i) => ((address.value >> BigInt(112 - 16 * i)) & 0xffffn).toString(16),
  );
  let best = { at: -1, length: 1 };
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > best.length) best = { at: i, length: j - i };
    i = j > i ? j : i + 1;
  }
  if (best.at < 0) return groups.join(":");
  return `${groups.slice(0, best.at).join(":")}::${groups.slice(best.at + best.length).join(":")}`;
}
