/**
 * What /proc tells about a process and the network namespace: open descriptors, resident
 * memory, listening sockets.
 *
 * @module
 */

/** Open file descriptors of process `pid` (this one by default), from /proc. */
export function fdCount(pid: number | "self" = "self"): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/**
 * Resident memory of process `pid` in bytes, from /proc/PID/status: now (`VmRSS`), or the
 * highest so far (`VmHWM`).
 */
export function rssBytes(
  pid: number | "self" = "self",
  field: "VmRSS" | "VmHWM" = "VmRSS",
): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

/**
 * Listening TCP sockets on `port` (IPv4 and IPv6) in this network namespace, from /proc/net:
 * one per listener, whichever thread or process holds it.
 */
export function listeningSockets(port: number): number {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  let n = 0;
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(table);
    } catch { /* no IPv6 */ }
    for (const line of text.split("\n").slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/);
      if (state === "0A" && local?.endsWith(`:${hex}`)) n++;
    }
  }
  return n;
}
