/**
 * Error pages from templates: which template answers, escaping, reloading, and broken templates.
 */
import assert from "node:assert/strict";
import { get } from "./support/clients.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { startTestServer } from "./support/servers.ts";

Deno.test("error pages: error_<code>.html, then errors.html, then built-in; values escaped", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "static/index.html": "home",
    "templates/error_404.html":
      "<h1>{{ status_code }} {{status_text}}</h1><p>{{error_details}}</p>",
    "templates/errors.html": "generic {{status_code}} {{status_text}}",
  });
  await using s = await startTestServer({
    http: {
      static_dir: `${dir.path}/static`,
      templates_dir: `${dir.path}/templates`,
      // The test removes and rewrites templates and asks again at once. With the shipped 1000 ms a
      // template is trusted for a second after it was read; 0 has every answer look at the file,
      // so the test needs no wait (which would tie it to timing).
      file_cache_ttl_ms: 0,
    },
  });
  let r = await get(`${s.url}/%3Cscript%3Ealert(1)%3C%2Fscript%3E`);
  assert.equal(r.status, 404);
  assert.equal(
    r.body,
    "<h1>404 Not Found</h1><p>The requested URL /&lt;script&gt;alert(1)&lt;/script&gt; was not " +
      "found on this server.</p>",
  );
  assert.match(r.headers.get("content-type")!, /^text\/html/);
  r = await get(`${s.url}/index.html`, { method: "DELETE" });
  assert.equal(r.status, 405);
  assert.equal(r.body, "generic 405 Method Not Allowed");
  assert.equal(r.headers.get("allow"), "GET, HEAD");

  await Deno.remove(`${dir.path}/templates/errors.html`);
  r = await get(`${s.url}/index.html`, { method: "DELETE" });
  assert.equal(r.status, 405);
  assert.match(r.body, /<h1>405 Method Not Allowed<\/h1>/, "built-in page");

  // Reloaded when changed.
  await Deno.writeTextFile(`${dir.path}/templates/error_404.html`, "changed {{status_code}}!");
  r = await get(`${s.url}/nothing`);
  assert.equal(r.body, "changed 404!");
  r = await get(`${s.url}/nothing`, { method: "HEAD" });
  assert.equal(r.status, 404);
  assert.equal(r.body, "");
});

Deno.test("error pages: a broken template never turns a 404 into a 500", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "static/index.html": "home",
    "templates/error_404.html": new Uint8Array([0x3c, 0x70, 0x3e, 0xff, 0xfe, 0x00]),
    "templates/errors.html": "fallback {{status_code}}",
    "templates/error_405.html/inner": "a folder, not a file",
  });
  await using s = await startTestServer({
    http: {
      static_dir: `${dir.path}/static`,
      templates_dir: `${dir.path}/templates`,
      file_cache_ttl_ms: 60_000,
    },
  });
  let r = await get(`${s.url}/nope`);
  assert.equal(r.status, 404);
  assert.equal(r.body, "fallback 404");
  r = await get(`${s.url}/nope`);
  assert.equal(r.body, "fallback 404");
  r = await get(`${s.url}/`, { method: "PUT" });
  assert.equal(r.status, 405);
  assert.equal(r.body, "fallback 405");
  const warnings = s.log.lines.filter((l) => l.startsWith("WARNING error template"));
  assert.equal(warnings.length, 2, warnings.join("\n"));
  assert.match(warnings[0], /error_404\.html is not used/);

  // No templates folder at all: built-in pages.
  await using s2 = await startTestServer({
    http: { static_dir: `${dir.path}/static`, templates_dir: `${dir.path}/none` },
  });
  r = await get(`${s2.url}/nope`);
  assert.equal(r.status, 404);
  assert.match(r.body, /<h1>404 Not Found<\/h1>/);
});
