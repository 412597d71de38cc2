/**
 * The path access rules and locations are matched against (src/http/paths.ts), called directly.
 */
import assert from "node:assert/strict";
import { normalizePath } from "../src/http/paths.ts";

Deno.test("normalizePath: decodes, folds slashes, resolves dot segments; null when undecodable", () => {
  const cases: [string, string | null][] = [
    ["/", "/"],
    ["/admin", "/admin"],
    ["/admin/", "/admin/"],
    ["/%61dmin", "/admin"],
    ["/%41dmin", "/Admin"], // decoding does not fold case
    ["//admin", "/admin"],
    ["/a//b//", "/a/b/"],
    ["/./admin", "/admin"],
    ["/x/../admin", "/admin"],
    ["/a/b/../../c", "/c"],
    ["/../../etc", "/etc"], // never above the root
    ["/admin/.", "/admin/"],
    ["/admin/..", "/"],
    ["/%2e", "/"],
    ["/%2e%2e/admin", "/admin"], // encoded dots are dots
    ["/%2E%2E/admin", "/admin"],
    ["/.%2e/admin", "/admin"],
    ["/admin%2Fx", "/admin/x"], // an encoded slash is a slash
    ["/admin%2fx", "/admin/x"],
    ["/%2F%2Fadmin", "/admin"],
    ["/%252e%252e/admin", "/%2e%2e/admin"], // decoded once, not twice
    ["/...", "/..."], // three dots are a name
    ["/.well-known/x", "/.well-known/x"],
    ["/a/.hidden/", "/a/.hidden/"],
    ["/%E2%82%AC", "/€"],
    ["/%00", null],
    ["/a%00b", null],
    ["/%zz", null],
    ["/%", null],
    ["/%e0%a4", null], // not UTF-8
  ];
  for (const [path, expected] of cases) assert.equal(normalizePath(path), expected, path);
});
