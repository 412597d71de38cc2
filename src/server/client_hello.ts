/**
 * The server name a TLS client asks for (SNI, RFC 6066 §3), read from the first bytes of its
 * connection: the ClientHello in a TLS record (RFC 8446 §4.1.2). The runtime's TLS server does not
 * tell which name a connection was opened for, and a request whose Host belongs to a site with
 * another certificate is to be answered 421 (`routes/sites.ts`).
 *
 * @module
 */

/** What the bytes received so far say. */
export type ClientHello =
  /** Not whole yet: wait for more. */
  | { kind: "partial" }
  /** A ClientHello; `name` is its server name in lower case, or undefined when it sent none. */
  | { kind: "hello"; name?: string }
  /** Not a ClientHello (plain HTTP, garbage): the TLS server will refuse it. */
  | { kind: "other" };

const PARTIAL: ClientHello = { kind: "partial" };
const OTHER: ClientHello = { kind: "other" };
const NONE: ClientHello = { kind: "hello" };

/** The most of a ClientHello that is read for its name: one TLS record. */
export const HELLO_MAX = 5 + 16_384;

/** Reads the ClientHello at the start of `bytes`. */
export function readClientHello(bytes: Uint8Array): ClientHello {
  // A handshake record (22) of TLS 1.0 to 1.3 (3.1 to 3.4 in the record layer).
  if (bytes.length >= 1 && bytes[0] !== 22) return OTHER;
  if (bytes.length >= 2 && bytes[1] !== 3) return OTHER;
  if (bytes.length < 5) return PARTIAL;
  const recordEnd = 5 + ((bytes[3] << 8) | bytes[4]);
  // A ClientHello (1) in one record: a name a client sends comes in its first record.
  if (bytes.length >= 6 && bytes[5] !== 1) return OTHER;
  const end = Math.min(recordEnd, bytes.length);
  const at = (i: number) => (i < end ? bytes[i] : -1);
  const u16 = (i: number) => (i + 1 < end ? (bytes[i] << 8) | bytes[i + 1] : -1);
  // Handshake header (4), version (2), random (32), then the session id.
  let i = 5 + 4 + 2 + 32;
  const session = at(i);
  if (session < 0) return recordEnd > bytes.length ? PARTIAL : OTHER;
  i += 1 + session;
  const suites = u16(i);
  if (suites < 0) return recordEnd > bytes.length ? PARTIAL : OTHER;
  i += 2 + suites;
  const compression = at(i);
  if (compression < 0) return recordEnd > bytes.length ? PARTIAL : OTHER;
  i += 1 + compression;
  const extensions = u16(i);
  if (extensions < 0) return recordEnd > bytes.length ? PARTIAL : NONE;
  i += 2;
  const extensionsEnd = Math.min(i + extensions, recordEnd);
  while (i + 4 <= extensionsEnd) {
    const type = u16(i);
    const length = u16(i + 2);
    if (type < 0 || length < 0) break;
    if (type === 0) {
      // server_name: a list (2) of entries: type (1, 0 = host_name), length (2), the name.
      if (i + 4 + length > end) return PARTIAL;
      if (length < 5 || bytes[i + 6] !== 0) return NONE;
      const nameLength = u16(i + 7);
      if (nameLength < 0 || i + 9 + nameLength > i + 4 + length) return NONE;
      const name = new TextDecoder().decode(bytes.subarray(i + 9, i + 9 + nameLength));
      return { kind: "hello", name: name.toLowerCase() };
    }
    i += 4 + length;
  }
  return extensionsEnd > bytes.length ? PARTIAL : NONE;
}
