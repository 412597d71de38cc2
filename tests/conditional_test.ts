/**
 * Conditional and range request rules (src/static/conditional.ts), called directly.
 */
import assert from "node:assert/strict";
import {
  byteRange,
  etagMatches,
  modifiedSince,
  notModifiedSince,
} from "../src/static/conditional.ts";

Deno.test("etagMatches: strong comparison for If-Match, weak for If-None-Match, * and lists", () => {
  // [If-Match / If-None-Match value, the file's ETag, strong (If-Match) result, weak result]
  const cases: [string, string, boolean, boolean][] = [
    ['"abc"', '"abc"', true, true],
    [' "abc" ', '"abc"', true, true],
    ['"abd"', '"abc"', false, false],
    ['"ABC"', '"abc"', false, false], // opaque tags compare byte for byte
    ["abc", '"abc"', false, false], // unquoted is not the tag
    ['W/"abc"', '"abc"', false, true], // a weak tag in the header never matches strongly
    ['"abc"', 'W/"abc"', false, true], // nor does a weak ETag of the file
    ['W/"abc"', 'W/"abc"', false, true],
    ['w/"abc"', '"abc"', false, false], // the weak prefix is case-sensitive
    ['"x", "abc"', '"abc"', true, true],
    ['"x","abc","y"', '"abc"', true, true],
    ['"x", W/"abc"', '"abc"', false, true],
    ['"x", "y"', '"abc"', false, false],
    ["*", '"abc"', true, true],
    [" * ", 'W/"abc"', true, true],
    ['"x", *', '"abc"', false, false], // * stands alone; in a list it is no tag
    ["", '"abc"', false, false],
    [",", '"abc"', false, false],
  ];
  for (const [header, etag, strong, weak] of cases) {
    assert.equal(etagMatches(header, etag, true), strong, `strong: ${header} vs ${etag}`);
    assert.equal(etagMatches(header, etag, false), weak, `weak: ${header} vs ${etag}`);
  }
});

Deno.test("notModifiedSince: whole seconds, either HTTP date form, unreadable dates never match", () => {
  const date = "Sun, 06 Nov 1994 08:49:37 GMT";
  const at = Date.UTC(1994, 10, 6, 8, 49, 37);
  // [header, file modified at (ms), unchanged since the header's date]
  const cases: [string, number, boolean][] = [
    [date, at, true],
    [date, at + 999, true], // HTTP dates have no milliseconds: the same second is unchanged
    [date, at + 1000, false],
    [date, at - 86_400_000, true],
    ["Sunday, 06-Nov-94 08:49:37 GMT", at, true], // RFC 850 form
    ["Sunday, 06-Nov-94 08:49:37 GMT", at + 1000, false],
    ["garbage", at, false],
    ["", at, false],
    ["Sun, 32 Nov 1994 08:49:37 GMT", at, false],
    ["Sun Nov  6 08:49:37 1994", at, true], // asctime form
    ["0", at, false], // not an HTTP date: ignored, never read as the year 2000
    ["2030", at, false],
    ["Sun, 06 Nov 1994 08:49:37 +0000", at, false], // HTTP dates are GMT
  ];
  for (const [header, mtime, unchanged] of cases) {
    assert.equal(notModifiedSince(header, mtime), unchanged, `${header} / ${mtime - at}`);
  }
});

Deno.test("modifiedSince (If-Unmodified-Since): a changed file, never for an unreadable date", () => {
  const date = "Sun, 06 Nov 1994 08:49:37 GMT";
  const at = Date.UTC(1994, 10, 6, 8, 49, 37);
  assert.equal(modifiedSince(date, at + 1000), true);
  assert.equal(modifiedSince(date, at + 999), false);
  assert.equal(modifiedSince(date, at), false);
  // An unreadable If-Unmodified-Since is ignored (RFC 9110 §13.1.4), not a 412.
  for (const bad of ["garbage", "", "0", "2030"]) assert.equal(modifiedSince(bad, at), false, bad);
});

Deno.test("byteRange: one range, suffixes, open ends, past the end, and what is ignored", () => {
  // [Range value, body size, answer: a range, null (send it all) or "unsatisfiable" (416)]
  const cases: [string, number, [number, number] | null | "unsatisfiable"][] = [
    ["bytes=0-99", 1000, [0, 99]],
    ["bytes=0-0", 1000, [0, 0]],
    ["bytes=999-999", 1000, [999, 999]],
    ["bytes=500-", 1000, [500, 999]],
    ["bytes=0-", 1000, [0, 999]],
    ["bytes=0-5000", 1000, [0, 999]], // an end past the end is the last byte
    ["bytes=0-99999999999999999999", 1000, [0, 999]],
    ["bytes=-100", 1000, [900, 999]], // the last 100 bytes
    ["bytes=-1", 1000, [999, 999]],
    ["bytes=-2000", 1000, [0, 999]], // a suffix longer than the body is all of it
    ["bytes=-0", 1000, "unsatisfiable"],
    ["bytes=1000-", 1000, "unsatisfiable"], // starts past the end
    ["bytes=1000-2000", 1000, "unsatisfiable"],
    ["bytes=0-", 0, "unsatisfiable"], // an empty body has no first byte
    ["bytes=-5", 0, "unsatisfiable"],
    ["bytes= 2 - 5 ", 1000, [2, 5]],
    ["bytes=5-2", 1000, null], // invalid: ignored
    ["bytes=-", 1000, null],
    ["bytes=", 1000, null],
    ["bytes=0-1,5-6", 1000, null], // several ranges are not honoured: the whole body
    ["bytes=a-b", 1000, null],
    ["bytes=1.5-2", 1000, null],
    ["bytes=--5", 1000, null],
    ["items=0-1", 1000, null],
    ["0-1", 1000, null],
    ["", 1000, null],
  ];
  for (const [header, size, expected] of cases) {
    assert.deepEqual(byteRange(header, size), expected, `${header} of ${size}`);
  }
});
