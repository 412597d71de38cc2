/**
 * What the runtime does not say or set on sockets, asked of libc through FFI: the open-files
 * limit, TCP_NODELAY on a listening socket, and shutting a socket down.
 *
 * `Deno.TlsConn` has no `setNoDelay`, so a TLS connection keeps Nagle's algorithm on, and an
 * answer written in more than one piece waits for the client's delayed ACK (about 40 ms each:
 * small kept-alive answers, and every window of an HTTP/2 download). Linux hands the options of
 * a listening socket to the connections it accepts, so setting TCP_NODELAY once on the listener
 * reaches every connection.
 *
 * The runtime does not expose file descriptors, so sockets are found by walking this process's
 * descriptors and asking each for its address (`getsockname`, `getpeername`). `/proc/self` would
 * say the same, but Deno lets only `--allow-all` read it.
 *
 * Each function needs `--allow-ffi` for libc ({@link NEEDED}) and says so instead of prompting
 * or throwing.
 *
 * @module
 */

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

/** The port of what `ask` (getsockname or getpeername) says of `fd`, or -1. */
function portOf(lib: Libc, ask: "getsockname" | "getpeername", fd: number): number {
  length[0] = address.length;
  if (lib[ask](fd, address, length) !== 0) return -1;
  const family = address[0] | (address[1] << 8); // AF_INET = 2, AF_INET6 = 10, host order
  return family === 2 || family === 10 ? (address[2] << 8) | address[3] : -1;
}

/**
 * Calls `visit` with each TCP socket of this process (its descriptor and local port). The walk
 * ends after 1,024 descriptors in a row that are not open: the kernel hands out the lowest free
 * one, so open descriptors lie close together.
 */
function eachSocket(lib: Libc, visit: (fd: number, port: number) => void) {
  for (let fd = 3, gap = 0; gap < 1024; fd++) {
    // F_GETFD = 1: -1 for a descriptor that is not open.
    if (lib.fcntl(fd, 1, 0) === -1) {
      gap++;
      continue;
    }
    gap = 0;
    const port = portOf(lib, "getsockname", fd);
    if (port >= 0) visit(fd, port);
  }
}

/**
 * Sets TCP_NODELAY on every socket of this process listening on `port`. Returns how many were
 * set, or why none could be.
 */
export function setListenerNoDelay(port: number): number | string {
  const lib = openLibc();
  if (typeof lib === "string") return lib;
  const one = new Int32Array([1]);
  const flag = new Int32Array(1);
  const size = new Uint32Array([4]);
  let set = 0;
  eachSocket(lib, (fd, local) => {
    if (local !== port) return;
    size[0] = 4;
    // SOL_SOCKET = 1, SO_ACCEPTCONN = 30: only the listening socket, not its connections.
    if (lib.getsockopt(fd, 1, 30, flag, size) !== 0 || flag[0] !== 1) return;
    // IPPROTO_TCP = 6, TCP_NODELAY = 1.
    if (lib.setsockopt(fd, 6, 1, one, 4) === 0) set++;
  });
  return set > 0 ? set : `no listening socket on port ${port} was found`;
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
