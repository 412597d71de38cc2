/**
 * Redirects (`server.redirect_instructions`): exact paths, the query carried over, and loops
 * refused at start.
 */
import assert from "node:assert/strict";
import { testApp } from "./support/app.ts";
import { configError } from "./support/config.ts";
import { tempDir } from "./support/files.ts";

Deno.test("redirects: exact path, 302 by default, query carried over, status and absolute URL", async () => {
  await using dir = await tempDir();
  using app = await testApp({
    http: { static_dir: dir.path },
    server: {
      redirect_instructions: [
        { "/home": "/index.html" },
        { "/blog": "https://blog.example.com/posts?lang=en" },
        { from: "/old", to: "/new", status: 301 },
        { from: "/tmp", to: "/elsewhere#top", status: 307 },
      ],
    },
  });
  let r = await app.get("/home?x=1&y=2");
  assert.equal(r.status, 302);
  assert.equal(r.headers.get("location"), "/index.html?x=1&y=2");
  r = await app.get("/blog?page=2");
  assert.equal(r.headers.get("location"), "https://blog.example.com/posts?lang=en&page=2");
  r = await app.get("/old");
  assert.equal(r.status, 301);
  assert.equal(r.headers.get("location"), "/new");
  r = await app.get("/tmp?a=1");
  assert.equal(r.status, 307);
  assert.equal(r.headers.get("location"), "/elsewhere?a=1#top");
  // Exact match only.
  r = await app.get("/home/x");
  assert.equal(r.status, 404);
});

Deno.test("redirects: self redirects, loops and repeats are configuration errors", () => {
  let m = configError({ server: { redirect_instructions: [{ "/a": "/a?x=1" }] } });
  assert.match(m, /server\.redirect_instructions\[0\] redirects \/a to itself/);
  m = configError({
    server: {
      redirect_instructions: [{ "/a": "/b" }, { "/c": "https://x.example/" }, { "/b": "/a" }],
    },
  });
  assert.match(m, /redirect_instructions\[0\] makes a redirect loop: \/a → \/b → \/a/);
  assert.equal(m.split("\n").length, 1, "one loop is reported once");
  m = configError({ server: { redirect_instructions: [{ "/a": "/b" }, { "/a": "/c" }] } });
  assert.match(m, /redirect_instructions\[1\] repeats \/a/);
  m = configError({ server: { redirect_instructions: [{ "/a": "b.html" }] } });
  assert.match(m, /must be a path starting with "\/" or an http\(s\):\/\/ URL/);
  m = configError({ server: { redirect_instructions: [{ from: "/a", to: "/b", status: 303 }] } });
  assert.match(m, /must be `\/from: \/to` or \{ from, to, status \}|must be 301, 302, 307 or 308/);
});
