/**
 * The PROXY protocol header (HAProxy's, versions 1 and 2) a load balancer sends before anything
 * else on a connection, to say whose connection it is passing on.
 *
 * {@link readProxyHeader} is told the bytes received so far and says whether they hold a whole
 * header, need more, or are not one. Only the source address is kept: version 2's TLVs are
 * skipped unread, and a header that names no address (v1 `UNKNOWN`, the v2 `LOCAL` command, the
 * `UNSPEC` and `UNIX` families) leaves the connection's own address in place.
 *
 * @module
 */
import { parseIp } from "../http/ip.ts";

/** Version 1 is one text line of at most 107 bytes, CRLF included. */
export const V1_MAX = 107;
/**
 * The most a version 2 header may hold after its 16 fixed bytes: the addresses and TLVs. The
 * protocol allows 65,535; what HAProxy sends (addresses, ALPN, authority, TLS details, a unique
 * id) fits in a few hundred bytes, so more is refused rather than buffered.
 */
export const V2_MAX_BODY = 4096;

const V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
const V1_PREFIX = [0x50, 0x52, 0x4f, 0x58, 0x59, 0x20]; // "PROXY "

/** What the bytes received so far are. */
export type ProxyHeader =
  /** Not whole yet; read more (never more than {@link V1_MAX} or 16 + {@link V2_MAX_BODY}). */
  | { kind: "partial" }
  /** Not a PROXY protocol header; the connection is to be closed. */
  | { kind: "bad"; reason: string }
  /**
   * A whole header of `length` bytes; `source` is the client's address, or undefined when the
   * header names none (the connection's own address stands).
   */
  | { kind: "header"; length: number; version: 1 | 2; source?: Deno.NetAddr };

const PARTIAL: ProxyHeader = { kind: "partial" };
const bad = (reason: string): ProxyHeader => ({ kind: "bad", reason });

/** Whether `bytes` starts with as much of `prefix` as it holds. */
function startsLike(bytes: Uint8Array, prefix: readonly number[]): boolean {
  const n = Math.min(bytes.length, prefix.length);
  for (let i = 0; i < n; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

/** Reads a PROXY protocol header (v1 or v2) at the start of `bytes`. */
export function readProxyHeader(bytes: Uint8Array): ProxyHeader {
  if (bytes.length === 0) return PARTIAL;
  if (bytes[0] === V1_PREFIX[0]) {
    return startsLike(bytes, V1_PREFIX) ? readV1(bytes) : bad("not a PROXY protocol header");
  }
  if (bytes[0] === V2_SIGNATURE[0]) {
    return startsLike(bytes, V2_SIGNATURE) ? readV2(bytes) : bad("not a PROXY protocol header");
  }
  return bad("not a PROXY protocol header");
}

const PORT = /^(0|[1-9]\d{0,4})$/;

function readV1(bytes: Uint8Array): ProxyHeader {
  // The CR of a line of V1_MAX bytes is its byte V1_MAX - 2.
  const limit = Math.min(bytes.length, V1_MAX - 1);
  let end = -1;
  for (let i = V1_PREFIX.length; i < limit; i++) {
    if (bytes[i] === 0x0d) {
      if (i + 1 >= bytes.length) return PARTIAL;
      if (bytes[i + 1] !== 0x0a) return bad("a v1 header has a CR without LF");
      end = i;
      break;
    }
    // Printable US-ASCII only: anything else is not a header line.
    if (bytes[i] < 0x20 || bytes[i] > 0x7e) return bad("a v1 header holds a control byte");
  }
  if (end < 0) {
    return bytes.length < V1_MAX - 1 ? PARTIAL : bad(`a v1 header is over ${V1_MAX} bytes`);
  }
  const line = new TextDecoder().decode(bytes.subarray(V1_PREFIX.length, end));
  const length = end + 2;
  const fields = line.split(" ");
  if (fields[0] === "UNKNOWN") return { kind: "header", length, version: 1 };
  if (fields.length !== 5) return bad("a v1 header must be PROXY TCP4|TCP6 src dst sport dport");
  const [family, src, dst, sport, dport] = fields;
  if (family !== "TCP4" && family !== "TCP6") return bad(`a v1 header names family ${family}`);
  for (const address of [src, dst]) {
    const ip = parseIp(address);
    if (!ip || address.includes(":") !== (family === "TCP6") || address.includes("%")) {
      return bad(`a v1 ${family} header has a bad address`);
    }
  }
  for (const p of [sport, dport]) {
    if (!PORT.test(p) || Number(p) > 65535) return bad("a v1 header has a bad port");
  }
  return {
    kind: "header",
    length,
    version: 1,
    source: { transport: "tcp", hostname: src, port: Number(sport) },
  };
}

function readV2(bytes: Uint8Array): ProxyHeader {
  if (bytes.length < 16) return PARTIAL;
  const versionCommand = bytes[12];
  if (versionCommand >> 4 !== 2) return bad(`a v2 header has version ${versionCommand >> 4}`);
  const command = versionCommand & 0x0f;
  if (command > 1) return bad(`a v2 header has command ${command}`);
  const body = (bytes[14] << 8) | bytes[15];
  if (body > V2_MAX_BODY) return bad(`a v2 header of ${body} bytes is over ${V2_MAX_BODY}`);
  const length = 16 + body;
  const family = bytes[13] >> 4;
  const transport = bytes[13] & 0x0f;
  // A family or protocol byte the protocol does not define is refused even under LOCAL.
  if (family > 3 || transport > 2) return bad(`a v2 header has family byte ${bytes[13]}`);
  const needed = family === 1 ? 12 : family === 2 ? 36 : family === 3 ? 216 : 0;
  if (body < needed) return bad(`a v2 header of ${body} bytes is too short for its addresses`);
  if (bytes.length < length) return PARTIAL;
  // LOCAL: the balancer's own connection (a health check); UNSPEC and UNIX name no TCP client.
  if (command === 0 || family === 0 || family === 3) return { kind: "header", length, version: 2 };
  if (transport !== 1) return bad("a v2 header names a connection that is not TCP");
  const at = 16;
  if (family === 1) {
    const hostname = `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
    const port = (bytes[at + 8] << 8) | bytes[at + 9];
    return { kind: "header", length, version: 2, source: { transport: "tcp", hostname, port } };
  }
  const hostname = formatIpv6(bytes.subarray(at, at + 16));
  const port = (bytes[at + 32] << 8) | bytes[at + 33];
  return { kind: "header", length, version: 2, source: { transport: "tcp", hostname, port } };
}

/** An IPv6 address in RFC 5952's form (`2001:db8::1`), as the runtime reports addresses. */
function formatIpv6(b: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  // The longest run of two or more zero groups becomes "::" (the first such, on a tie).
  let best = -1, bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j;
  }
  const hex = (g: number[]) => g.map((n) => n.toString(16)).join(":");
  if (best === 0 && bestLength === 5 && groups[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`; // an IPv4-mapped address
  }
  if (best < 0) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLength))}`;
}
