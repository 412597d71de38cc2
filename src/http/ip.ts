/**
 * IP addresses and CIDR ranges, IPv4 and IPv6, for address filters and per-client limits.
 *
 * An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a dual-stack socket reports for an IPv4
 * client) is the IPv4 address it maps, so `10.0.0.0/8` matches it.
 *
 * @module
 */

/** A parsed address: its family and its bits as one number. */
export interface IpAddress {
  v6: boolean;
  value: bigint;
}

/** A range of addresses: those whose first `bits` bits equal `base`'s. */
export interface CidrRange {
  v6: boolean;
  base: bigint;
  bits: number;
}

const V4_PART = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

function parseV4(text: string): bigint | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    if (!V4_PART.test(part)) return undefined;
    value = (value << 8n) | BigInt(Number(part));
  }
  return value;
}

function parseV6(text: string): bigint | undefined {
  const zone = text.indexOf("%");
  if (zone >= 0) text = text.slice(0, zone);
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".", lastColon)) {
    // A dotted IPv4 tail (::ffff:10.0.0.1) stands for the last two groups.
    const v4 = parseV4(text.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${
      (v4 & 0xffffn).toString(16)
    }`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (s: string) => s === "" ? [] : s.split(":");
  const head = groups(halves[0]);
  const rest = halves.length === 2 ? groups(halves[1]) : [];
  const given = head.length + rest.length;
  if (halves.length === 1 ? given !== 8 : given > 7) return undefined;
  let value = 0n;
  for (const g of [...head, ...Array(8 - given).fill("0"), ...rest]) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
    value = (value << 16n) | BigInt(parseInt(g, 16));
  }
  return value;
}

/** Parses an IPv4 or IPv6 address (brackets and a zone allowed); undefined when it is none. */
export function parseIp(text: string): IpAddress | undefined {
  if (text.startsWith("[") && text.endsWith("]")) text = text.slice(1, -1);
  if (!text.includes(":")) {
    const v4 = parseV4(text);
    return v4 === undefined ? undefined : { v6: false, value: v4 };
  }
  const v6 = parseV6(text);
  if (v6 === undefined) return undefined;
  if (v6 >> 32n === 0xffffn) return { v6: false, value: v6 & 0xffffffffn };
  return { v6: true, value: v6 };
}

/**
 * Parses `address` or `address/bits`; undefined when it is neither. A mapped IPv6 range
 * (`::ffff:10.0.0.0/104`) becomes the IPv4 range it covers.
 */
export function parseCidr(text: string): CidrRange | undefined {
  const slash = text.indexOf("/");
  const addressText = slash < 0 ? text : text.slice(0, slash);
  const bitsText = slash < 0 ? undefined : text.slice(slash + 1);
  if (!addressText.includes(":")) {
    const v4 = parseV4(addressText);
    if (v4 === undefined) return undefined;
    const bits = bitsText === undefined ? 32 : prefixBits(bitsText, 32);
    return bits === undefined ? undefined : { v6: false, base: mask(v4, bits, 32), bits };
  }
  const v6 = parseV6(addressText);
  if (v6 === undefined) return undefined;
  const bits = bitsText === undefined ? 128 : prefixBits(bitsText, 128);
  if (bits === undefined) return undefined;
  if (bits >= 96 && (v6 >> 32n) === 0xffffn) {
    return { v6: false, base: mask(v6 & 0xffffffffn, bits - 96, 32), bits: bits - 96 };
  }
  return { v6: true, base: mask(v6, bits, 128), bits };
}

function prefixBits(text: string, max: number): number | undefined {
  if (!/^\d{1,3}$/.test(text)) return undefined;
  const n = Number(text);
  return n <= max ? n : undefined;
}

function mask(value: bigint, bits: number, width: number): bigint {
  const hostBits = BigInt(width - bits);
  return (value >> hostBits) << hostBits;
}

/** Whether `address` lies in `range`. */
export function inRange(address: IpAddress, range: CidrRange): boolean {
  if (address.v6 !== range.v6) return false;
  return mask(address.value, range.bits, range.v6 ? 128 : 32) === range.base;
}

/** A list of ranges, matched in order. */
export class IpSet {
  readonly #ranges: CidrRange[];

  /** `entries` are addresses or CIDRs; one that does not parse throws. */
  constructor(entries: readonly string[]) {
    this.#ranges = entries.map((e) => {
      const range = parseCidr(e);
      if (!range) throw new TypeError(`not an IP address or CIDR: ${e}`);
      return range;
    });
  }

  get size(): number {
    return this.#ranges.length;
  }

  /** Whether `address` (text or parsed) is in one of the ranges; false when it is no address. */
  has(address: string | IpAddress | undefined): boolean {
    const ip = typeof address === "string" ? parseIp(address) : address;
    if (!ip) return false;
    for (const range of this.#ranges) if (inRange(ip, range)) return true;
    return false;
  }
}

/** `address` as text in a canonical form (mapped IPv6 as IPv4), for use as a map key. */
export function ipKey(address: IpAddress): string {
  if (!address.v6) {
    const v = Number(address.value);
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  return address.value.toString(16);
}
