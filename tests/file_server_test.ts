/**
 * The file server's pure parts (src/static/file_server.ts), called directly: which URL paths
 * name a file below the root, whether a resolved path is inside it, and which encodings a client
 * accepts.
 */
import assert from "node:assert/strict";
import { safeSegments, within } from "../src/static/file_server.ts";
import { acceptsEncoding } from "../src/http/encoding.ts";

Deno.test("safeSegments: decoded segments, 404 for what could leave the root, 400 for NUL and bad escapes", () => {
  // [URL path, without dotfiles, with dotfiles]
  type Out = string[] | 400 | 404;
  const cases: [string, Out, Out][] = [
    ["/", [], []],
    ["/a/b.txt", ["a", "b.txt"], ["a", "b.txt"]],
    ["//a///b/", ["a", "b"], ["a", "b"]],
    ["/a%20b", ["a b"], ["a b"]],
    ["/%C3%BC", ["ü"], ["ü"]],
    ["/%252e%252e", ["%2e%2e"], ["%2e%2e"]], // decoded once: a literal name, not a dot segment
    ["/.", 404, 404],
    ["/..", 404, 404],
    ["/a/../b", 404, 404], // dot segments are refused, not resolved
    ["/%2e%2e/etc/passwd", 404, 404],
    ["/%2E%2E", 404, 404],
    ["/.%2e", 404, 404],
    ["/..%2f", 404, 404],
    ["/a%2fb", 404, 404], // an encoded slash inside a segment
    ["/a%2Fb", 404, 404],
    ["/a%5cb", 404, 404], // a backslash, encoded or not
    ["/a\\b", 404, 404],
    ["/C:/x", 404, 404], // a drive letter
    ["/c%3a", 404, 404],
    ["/.env", 404, [".env"]],
    ["/%2eenv", 404, [".env"]],
    ["/a/.git/config", 404, ["a", ".git", "config"]],
    ["/.well-known/acme", [".well-known", "acme"], [".well-known", "acme"]],
    ["/%00", 400, 400],
    ["/a%00.txt", 400, 400],
    ["/a\0", 400, 400],
    ["/%zz", 400, 400],
    ["/%", 400, 400],
    ["/%e0%a4", 400, 400], // not UTF-8
  ];
  for (const [path, plain, dotfiles] of cases) {
    assert.deepEqual(safeSegments(path, false), plain, JSON.stringify(path));
    assert.deepEqual(safeSegments(path, true), dotfiles, `${JSON.stringify(path)} with dotfiles`);
  }
});

Deno.test("acceptsEncoding: listed or *, q=0 refuses, names without case, parameters trimmed", () => {
  // [Accept-Encoding value, coding, accepted]
  const cases: [string, string, boolean][] = [
    ["gzip", "gzip", true],
    ["gzip", "br", false],
    ["gzip, br", "br", true],
    ["gzip,br", "br", true],
    ["GZIP", "gzip", true],
    [" br ;q=0.5", "br", true],
    ["br;q=1.0", "br", true],
    ["br;q=0.001", "br", true],
    ["br;q=0", "br", false],
    ["br;q=0.0", "br", false],
    ["br; q=0.000", "br", false],
    ["br;level=1;q=0", "br", false],
    ["*", "br", true],
    ["*;q=0", "br", false],
    ["gzip;q=0, *", "gzip", false], // the coding named is taken over *
    ["gzip;q=0, *", "br", true],
    ["*;q=0, gzip", "gzip", true], // a named coding wins over *, wherever it stands
    ["*, gzip;q=0", "gzip", false],
    ["br;Q=0", "br", false], // the q parameter's name has no case
    ["x-gzip", "gzip", false],
    ["identity", "gzip", false],
    ["", "gzip", false],
  ];
  for (const [header, coding, accepted] of cases) {
    assert.equal(acceptsEncoding(header, coding), accepted, `${coding} in "${header}"`);
  }
});

Deno.test("within: a resolved path is the root or below it, also when the root is /", () => {
  const cases: [string, string, boolean][] = [
    ["/srv/site", "/srv/site", true],
    ["/srv/site/a.txt", "/srv/site", true],
    ["/srv/site/a/b.txt.br", "/srv/site/", true],
    ["/srv/site2/a.txt", "/srv/site", false], // a sibling folder sharing the name's start
    ["/srv/sit", "/srv/site", false],
    ["/etc/passwd", "/srv/site", false],
    // The file system's root: every path is inside it (the sibling check once compared with "//").
    ["/index.html.gz", "/", true],
    ["/", "/", true],
  ];
  for (const [real, base, expected] of cases) {
    assert.equal(within(real, base), expected, `${real} within ${base}`);
  }
});
