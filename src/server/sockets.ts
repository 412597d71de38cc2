/**
 * What the runtime does not say or set on sockets, asked of libc through FFI: the open-files
 * limit, TCP_NODELAY on a listening socket, shutting a socket down, and holding back the first
 * bytes of accepted connections from the runtime ({@link holdListenerReads}).
 *
 * `Deno.TlsConn` has no `setNoDelay`, so a TLS connection keeps Nagle's algorithm on, and an
 * answer written in more than one piece waits for the client's delayed ACK (about 40 ms each:
 * small kept-alive answers, and every window of an HTTP/2 download). Linux hands the options of
 * a listening socket to the connections it accepts, so setting TCP_NODELAY once on the listener
 * reaches every connection.
 *
 * The runtime does not expose file descriptors, so sockets are found by listing this process's
 * descriptors and asking each for its address (`getsockname`, `getpeername`). The list is read
 * from `/proc/self/fd` through libc's `opendir`, since Deno lets only `--allow-all` read
 * `/proc/self` itself.
 *
 * Each function needs `--allow-ffi` for libc ({@link NEEDED}) and says so instead of prompting
 * or throwing.
 *
 * @module
 */

import { parseIp } from "../http/ip.ts";

const LIBC = `/lib/${Deno.build.arch}-linux-gnu/libc.so.6`;

/** The permission flag that lets the functions of this module work. */
export const NEEDED = `--allow-ffi=${LIBC}`;

const SYMBOLS = {
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  opendir: { parameters: ["buffer"], result: "pointer" },
  readdir: { parameters: ["pointer"], result: "pointer" },
  closedir: { parameters: ["pointer"], result: "i32" },
  memcpy: { parameters: ["buffer", "pointer", "usize"], result: "pointer" },
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
} as const;
type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
let libc: Libc | undefined;

/** libc, or why it cannot be used. */
function openLibc(): Libc | string {
  if (libc) return libc;
  if (Deno.build.os !== "linux") return "only Linux hands a listener's options to connections";
  try {
    if (Deno.permissions.querySync({ name: "ffi", path: LIBC }).state !== "granted") {
      return `no FFI permission for ${LIBC}`;
    }
    return libc = Deno.dlopen(LIBC, SYMBOLS).symbols;
  } catch (e) {
    return `${LIBC} cannot be opened: ${(e as Error).message}`;
  }
}

/** Why libc cannot be used here, or undefined when it can. */
export function libcMissing(): string | undefined {
  const lib = openLibc();
  return typeof lib === "string" ? lib : undefined;
}

/** The soft limit on open files of this process, or undefined when it cannot be asked. */
export function openFilesLimit(): number | undefined {
  const lib = openLibc();
  if (typeof lib === "string") return undefined;
  const limits = new BigUint64Array(2);
  // RLIMIT_NOFILE = 7; an unlimited soft limit reads as 2^64 - 1.
  if (lib.getrlimit(7, limits) !== 0 || limits[0] > BigInt(Number.MAX_SAFE_INTEGER)) {
    return undefined;
  }
  return Number(limits[0]);
}

const address = new Uint8Array(128);
const length = new Uint32Array(1);

/** The port of what `ask` (getsockname or getpeername) says of `fd`, or -1 (also for a family
 * other than IPv4 and IPv6); {@link address} then holds the whole address. */
function portOf(lib: Libc, ask: "getsockname" | "getpeername", fd: number): number {
  length[0] = address.length;
  if (lib[ask](fd, address, length) !== 0) return -1;
  const family = address[0] | (address[1] << 8); // AF_INET = 2, AF_INET6 = 10, host order
  return family === 2 || family === 10 ? (address[2] << 8) | address[3] : -1;
}

const FD_FOLDER = new TextEncoder().encode("/proc/self/fd\0");
/** The start of a directory entry: up to 11 digits of its name. */
const dirent = new Uint8Array(30);

/**
 * The open descriptors of this process from 3 on, from `/proc/self/fd`: however far apart they
 * lie (a flood's connections, closed in a block, leave thousands free below the others).
 */
function openDescriptors(lib: Libc): number[] {
  const found: number[] = [];
  const dir = lib.opendir(FD_FOLDER);
  if (dir === null) return found;
  try {
    for (let entry = lib.readdir(dir); entry !== null; entry = lib.readdir(dir)) {
      // struct dirent (glibc, x86_64 and aarch64): d_ino 8, d_off 8, d_reclen 2, d_type 1, then
      // d_name, here a number. Copied by libc: reading the pointer itself needs all of --allow-ffi.
      lib.memcpy(dirent, entry, BigInt(dirent.length));
      let fd = 0;
      for (let i = 19; i < dirent.length && dirent[i] >= 48 && dirent[i] <= 57; i++) {
        fd = fd * 10 + dirent[i] - 48;
      }
      if (fd >= 3) found.push(fd);
    }
  } finally {
    lib.closedir(dir);
  }
  return found;
}

/** Calls `visit` with each TCP socket of this process (its descriptor and local port). */
function eachSocket(lib: Libc, visit: (fd: number, port: number) => void) {
  for (const fd of openDescriptors(lib)) {
    const port = portOf(lib, "getsockname", fd);
    if (port >= 0) visit(fd, port);
  }
}

/**
 * Sets an option of every socket of this process listening on `port` (`level`, `name`, an int
 * `value`). Returns how many were set, or why none could be.
 */
function setListenerOption(
  port: number,
  level: number,
  name: number,
  value: number,
): number | string {
  const lib = openLibc();
  if (typeof lib === "string") return lib;
  const int = new Int32Array([value]);
  const flag = new Int32Array(1);
  const size = new Uint32Array([4]);
  let set = 0;
  eachSocket(lib, (fd, local) => {
    if (local !== port) return;
    size[0] = 4;
    // SOL_SOCKET = 1, SO_ACCEPTCONN = 30: only the listening socket, not its connections.
    if (lib.getsockopt(fd, 1, 30, flag, size) !== 0 || flag[0] !== 1) return;
    if (lib.setsockopt(fd, level, name, int, 4) === 0) set++;
  });
  return set > 0 ? set : `no listening socket on port ${port} was found`;
}

/**
 * Sets TCP_NODELAY on every socket of this process listening on `port`. Returns how many were
 * set, or why none could be.
 */
export function setListenerNoDelay(port: number): number | string {
  // IPPROTO_TCP = 6, TCP_NODELAY = 1.
  return setListenerOption(port, 6, 1, 1);
}

/**
 * Holds back from the runtime the first bytes of every connection accepted on `port` until
 * {@link HeldSocket.release}: what a PROXY protocol header is read from before TLS starts.
 *
 * SO_RCVLOWAT on the listening socket, which accepted connections inherit, keeps a socket from
 * being reported readable until that many bytes have arrived (the kernel caps it at half the
 * largest receive buffer, megabytes, far beyond a header and a ClientHello). The runtime's TLS
 * server reads only when the socket is reported readable, so the bytes stay in the kernel, where
 * {@link HeldSocket} peeks at them and takes the header alone; setting the mark back to 1 reports
 * the rest as readable at once. Returns how many listening sockets were set, or why none could be.
 */
export function holdListenerReads(port: number): number | string {
  // SOL_SOCKET = 1, SO_RCVLOWAT = 18.
  return setListenerOption(port, 1, 18, 0x7fffffff);
}

/** Whether {@link address} (as getsockname or getpeername filled it) is `addr`'s. */
function isAddress(addr: Deno.NetAddr): boolean {
  if (((address[2] << 8) | address[3]) !== addr.port) return false;
  const family = address[0] | (address[1] << 8);
  const bytes = family === 2 ? address.subarray(4, 8) : address.subarray(8, 24);
  let value = 0n;
  for (const b of bytes) value = (value << 8n) | BigInt(b);
  // An IPv4 client of a dual-stack listener reads as ::ffff:a.b.c.d, as parseIp takes it.
  const v6 = family === 10 && value >> 32n !== 0xffffn;
  const ip = parseIp(addr.hostname);
  return ip !== undefined && ip.v6 === v6 && ip.value === (v6 ? value : value & 0xffffffffn);
}

/** An accepted connection's socket whose first bytes {@link holdListenerReads} holds back. */
export class HeldSocket {
  private constructor(private readonly lib: Libc, readonly fd: number) {}

  /**
   * The socket of the connection between `local` and `remote`, found among this process's
   * descriptors; undefined without the permission or when none matches.
   *
   * The kernel gives an accepted connection the lowest descriptor free at that moment, so it is
   * most likely just below the lowest one free now: the search goes down from there, then up.
   * It usually ends in a few steps, where a walk from the start would ask about every open
   * descriptor (a few milliseconds with thousands of connections).
   */
  static of(local: Deno.NetAddr, remote: Deno.NetAddr): HeldSocket | undefined {
    const lib = openLibc();
    if (typeof lib === "string") return undefined;
    const isIt = (fd: number) =>
      portOf(lib, "getpeername", fd) === remote.port && isAddress(remote) &&
      portOf(lib, "getsockname", fd) === local.port;
    let free = -1;
    // F_DUPFD = 0: a copy of a standard stream at the lowest free descriptor from 3 on.
    for (let std = 0; std < 3 && free < 0; std++) free = lib.fcntl(std, 0, 3);
    if (free >= 0) lib.close(free);
    else free = 3;
    for (let fd = free - 1; fd >= 3; fd--) if (isIt(fd)) return new HeldSocket(lib, fd);
    // Descriptors closed since the accept: it is above.
    for (const fd of openDescriptors(lib)) {
      if (fd > free && isIt(fd)) return new HeldSocket(lib, fd);
    }
    return undefined;
  }

  /**
   * Copies what has arrived into `into` without taking it: the count, 0 when the peer closed or
   * the socket failed, or -1 when nothing has arrived yet.
   */
  peek(into: Uint8Array): number {
    // MSG_PEEK = 2, MSG_DONTWAIT = 0x40.
    const n = Number(this.lib.recv(this.fd, into, BigInt(into.length), 0x42));
    if (n >= 0) return n;
    // SOL_SOCKET = 1, SO_ERROR = 4: a reset reads as -1 too.
    const error = new Int32Array(1);
    const size = new Uint32Array([4]);
    return this.lib.getsockopt(this.fd, 1, 4, error, size) === 0 && error[0] === 0 ? -1 : 0;
  }

  /** Whether the socket holds its bytes back (accepted from a listener {@link holdListenerReads} set). */
  holds(): boolean {
    const mark = new Int32Array(1);
    const size = new Uint32Array([4]);
    // SOL_SOCKET = 1, SO_RCVLOWAT = 18.
    return this.lib.getsockopt(this.fd, 1, 18, mark, size) === 0 && mark[0] > 1;
  }

  /** Takes the first `count` bytes (peeked already) and hands the rest to the runtime. */
  release(count: number): boolean {
    const skipped = count > 0
      ? Number(this.lib.recv(this.fd, new Uint8Array(count), BigInt(count), 0))
      : 0;
    // SOL_SOCKET = 1, SO_RCVLOWAT = 18: readable again from one byte, reported at once.
    return this.lib.setsockopt(this.fd, 1, 18, new Int32Array([1]), 4) === 0 && skipped === count;
  }

  /** Shuts the socket down both ways, so that the runtime's waiting handshake ends. */
  shutdown() {
    // SHUT_RDWR = 2.
    this.lib.shutdown(this.fd, 2);
  }
}

/**
 * Shuts down (both ways) this process's sockets with the given local and remote ports, so that
 * whatever waits to read from them ends. A pair of ports that more than one socket holds is left
 * alone. Returns how many were shut down (0 without the permission).
 */
export function shutdownSockets(pairs: Deno.NetAddr[][]): number {
  const lib = openLibc();
  if (typeof lib === "string") return 0;
  const wanted = new Set(pairs.map(([local, remote]) => `${local.port}:${remote.port}`));
  const found = new Map<string, number[]>();
  eachSocket(lib, (fd, local) => {
    const key = `${local}:${portOf(lib, "getpeername", fd)}`;
    if (wanted.has(key)) found.set(key, [...found.get(key) ?? [], fd]);
  });
  let done = 0;
  for (const fds of found.values()) {
    // SHUT_RDWR = 2.
    if (fds.length === 1 && lib.shutdown(fds[0], 2) === 0) done++;
  }
  return done;
}
