/**
 * The path that access rules and locations are matched against.
 *
 * @module
 */

/**
 * Decodes a percent-encoded URL path, folds repeated slashes and resolves `.` and `..`
 * segments, so that `/%61dmin`, `//admin` and `/x/../admin` all read `/admin`. Encoded slashes
 * become real ones (a rule on `/admin` then also covers `/admin%2Fx`). Null when the path cannot
 * be decoded or holds a NUL byte.
 */
export function normalizePath(path: string): string | null {
  if (!path.includes("%") && !path.includes("//") && !path.includes("/.")) return path;
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return null;
  }
  if (decoded.includes("\0")) return null;
  const out: string[] = [];
  const segments = decoded.split("/");
  for (const seg of segments) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") out.pop();
    else out.push(seg);
  }
  const last = segments[segments.length - 1];
  const slash = last === "" || last === "." || last === "..";
  return "/" + out.join("/") + (slash && out.length ? "/" : "");
}
