/**
 * The import rules of src/ (README, "Where things live"), read from the code itself: nothing
 * imports `cli/`; `http/` imports nothing of src/ outside itself, `config/` nothing but itself
 * and `http/`; `static/` and `proxy/` never import `routes/`.
 */
import { strict as assert } from "node:assert";
import { relative, resolve } from "node:path";
import { ROOT } from "./support/files.ts";

const SRC = `${ROOT}/src`;

/** Every .ts file below `dir`, as paths relative to src/. */
function sources(dir = SRC): string[] {
  const found: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) found.push(...sources(path));
    else if (entry.name.endsWith(".ts")) found.push(relative(SRC, path));
  }
  return found;
}

/** The src/ files `file` imports (relative imports only), as paths relative to src/. */
function importsOf(file: string): string[] {
  const text = Deno.readTextFileSync(`${SRC}/${file}`);
  const found: string[] = [];
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*["'](\.{1,2}\/[^"']+)["']/g)) {
    found.push(relative(SRC, resolve(`${SRC}/${file}`, "..", m[1])));
  }
  return found;
}

const folder = (path: string) => path.includes("/") ? path.slice(0, path.indexOf("/")) : "";

/** What each folder may import besides itself; absent folders may import anything but cli/. */
const ALLOWED: Record<string, string[]> = {
  http: [],
  config: ["http"],
  redis: [],
};
const NEVER: Record<string, string[]> = {
  static: ["routes"],
  proxy: ["routes"],
};

Deno.test("layout: imports only run downward (nothing imports cli/, http/ and config/ are the ground floor)", () => {
  const problems: string[] = [];
  const files = sources();
  assert.ok(files.length > 40, `found only ${files.length} source files`);
  for (const file of files) {
    const from = folder(file);
    for (const target of importsOf(file)) {
      const to = folder(target);
      if (to === from) continue;
      if (to === "cli") problems.push(`${file} imports ${target}: nothing imports cli/`);
      const allowed = ALLOWED[from];
      if (allowed && !allowed.includes(to)) {
        problems.push(`${file} imports ${target}: ${from}/ may import only ${allowed.join(", ")}`);
      }
      if (NEVER[from]?.includes(to)) problems.push(`${file} imports ${target}: not ${to}/`);
    }
  }
  assert.deepEqual(problems, []);
});

Deno.test("layout: the rule check sees imports (it would catch an upward one)", () => {
  // The check above reads what this finds; an import it cannot see would make it pass vacuously.
  assert.ok(importsOf("cli/run.ts").includes("app/boot.ts"));
  assert.ok(importsOf("routes/build.ts").some((t) => t.startsWith("http/")));
});
