/**
 * What the runtime does not say or set on sockets, read from Linux's `/proc` and set through
 * libc: the open-files limit, and TCP_NODELAY on a listening socket.
 *
 * `Deno.TlsConn` has no `setNoDelay`, so a TLS connection keeps Nagle's algorithm on, and an
 * answer written in more than one piece waits for the client's delayed ACK (about 40 ms each:
 * small kept-alive answers, and every window of an HTTP/2 download). Linux hands the options of
 * a listening socket to the connections it accepts, so setting TCP_NODELAY once on the listener
 * reaches every connection. The listener's file descriptor is found by its socket inode: the
 * runtime does not expose descriptors.
 *
 * Each function needs its permission (`--allow-read` of the `/proc` paths, `--allow-ffi` of
 * libc) and says so instead of prompting or throwing; {@link NEEDED} names the flags.
 *
 * @module
 */

const LIBC = `/lib/${Deno.build.arch}-linux-gnu/libc.so.6`;
const PROC = ["/proc/self/fd", "/proc/net/tcp", "/proc/net/tcp6", "/proc/self/limits"];

/** The permission flags that let {@link setListenerNoDelay} and {@link openFilesLimit} work. */
export const NEEDED = `--allow-ffi=${LIBC} --allow-read=${PROC.join(",")}`;

const granted = (descriptor: Deno.PermissionDescriptor) => {
  try {
    return Deno.permissions.querySync(descriptor).state === "granted";
  } catch {
    return false;
  }
};

/** The soft limit on open files of this process, or undefined when it cannot be read. */
export function openFilesLimit(): number | undefined {
  const path = "/proc/self/limits";
  if (Deno.build.os !== "linux" || !granted({ name: "read", path })) return undefined;
  try {
    const line = Deno.readTextFileSync(path).split("\n").find((l) =>
      l.startsWith("Max open files")
    );
    const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0];
    return soft === undefined || soft === "unlimited" ? undefined : Number(soft);
  } catch {
    return undefined;
  }
}

const hexPort = (port: number) => port.toString(16).toUpperCase().padStart(4, "0");

/**
 * Inodes of this host's TCP sockets that `wanted` takes, given the hex `local` and `remote`
 * ports and the state (0A: LISTEN), from `/proc/net/tcp` and `/proc/net/tcp6`.
 */
function socketInodes(
  wanted: (local: string, remote: string, state: string) => boolean,
): Set<string> {
  const inodes = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(table);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      // local_address is field 1, rem_address field 2, the state field 3, the inode field 9.
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && wanted(f[1].slice(-4), f[2].slice(-4), f[3])) inodes.add(f[9]);
    }
  }
  return inodes;
}

/** The file descriptors of this process that hold one of `inodes`. */
function descriptorsOf(inodes: Set<string>): number[] {
  const fds: number[] = [];
  if (inodes.size === 0) return fds;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    let link = "";
    try {
      link = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
    } catch {
      continue;
    }
    const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1];
    if (inode && inodes.has(inode)) fds.push(+entry.name);
  }
  return fds;
}

const SYMBOLS = {
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
} as const;
let libc: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;

/** libc, or why it cannot be used. */
function openLibc(): Deno.DynamicLibrary<typeof SYMBOLS> | string {
  if (Deno.build.os !== "linux") return "only Linux hands a listener's options to connections";
  if (!PROC.slice(0, 3).every((path) => granted({ name: "read", path }))) {
    return `no read permission for ${PROC.slice(0, 3).join(",")}`;
  }
  if (!granted({ name: "ffi", path: LIBC })) return `no FFI permission for ${LIBC}`;
  try {
    return libc ??= Deno.dlopen(LIBC, SYMBOLS);
  } catch (e) {
    return `${LIBC} cannot be opened: ${(e as Error).message}`;
  }
}

/**
 * Sets TCP_NODELAY on every socket of this process listening on `port`. Returns how many were
 * set, or why none could be.
 */
export function setListenerNoDelay(port: number): number | string {
  const lib = openLibc();
  if (typeof lib === "string") return lib;
  const hex = hexPort(port);
  const one = new Int32Array([1]);
  let set = 0;
  for (const fd of descriptorsOf(socketInodes((l, _, state) => l === hex && state === "0A"))) {
    // IPPROTO_TCP = 6, TCP_NODELAY = 1.
    if (lib.symbols.setsockopt(fd, 6, 1, one, 4) === 0) set++;
  }
  return set > 0 ? set : `no listening socket on port ${port} was found`;
}

/**
 * Shuts down (both ways) this process's sockets with the given local and remote ports, so that
 * whatever waits to read from them ends. A pair whose ports more than one socket holds is left
 * alone. Returns how many were shut down (0 without the permissions).
 */
export function shutdownSockets(pairs: Deno.NetAddr[][]): number {
  const lib = openLibc();
  if (typeof lib === "string") return 0;
  const wanted = new Set(
    pairs.map(([local, remote]) => hexPort(local.port) + hexPort(remote.port)),
  );
  const seen = new Map<string, number>();
  const inodes = socketInodes((l, r) => {
    const key = l + r;
    if (!wanted.has(key)) return false;
    seen.set(key, (seen.get(key) ?? 0) + 1);
    return true;
  });
  if ([...seen.values()].some((n) => n > 1)) {
    // Ambiguous pairs would reach other connections: keep only the unique ones.
    const unique = new Set([...seen].filter(([, n]) => n === 1).map(([k]) => k));
    for (const key of wanted) if (!unique.has(key)) wanted.delete(key);
    inodes.clear();
    for (const i of socketInodes((l, r) => wanted.has(l + r))) inodes.add(i);
  }
  let done = 0;
  // SHUT_RDWR = 2.
  for (const fd of descriptorsOf(inodes)) if (lib.symbols.shutdown(fd, 2) === 0) done++;
  return done;
}
