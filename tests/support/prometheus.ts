/**
 * A reader of Prometheus's text exposition format (version 0.0.4), enough to check what a scrape
 * says: samples with their labels (escapes undone), `# TYPE` and `# HELP` lines. It refuses what
 * the format does not allow, so that a malformed answer fails the test instead of reading empty.
 *
 * @module
 */

/** One sample line. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
  timestamp?: number;
}

/** What a scrape said. */
export interface Exposition {
  samples: Sample[];
  /** `# TYPE` of each metric family. */
  types: Map<string, string>;
  /** `# HELP` of each metric family, escapes undone. */
  help: Map<string, string>;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

function number(text: string, line: number): number {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (text === "NaN") return NaN;
  const n = Number(text);
  if (text === "" || Number.isNaN(n)) throw new Error(`line ${line}: not a number: ${text}`);
  return n;
}

/** Parses `text`; throws naming the line of the first thing the format does not allow. */
export function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  text.split("\n").forEach((raw, i) => {
    const n = i + 1;
    const line = raw.trim();
    if (line === "") return;
    if (line.startsWith("#")) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(line);
      if (!m) return; // a comment
      const [, kind, name, rest = ""] = m;
      if (!NAME.test(name) || NAME.exec(name)![0] !== name) {
        throw new Error(`line ${n}: bad metric name ${name}`);
      }
      if (kind === "TYPE") {
        if (!TYPES.has(rest.trim())) throw new Error(`line ${n}: bad type ${rest}`);
        if (types.has(name)) throw new Error(`line ${n}: second TYPE for ${name}`);
        types.set(name, rest.trim());
      } else {
        help.set(name, rest.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c)));
      }
      return;
    }
    const name = NAME.exec(line)?.[0];
    if (!name) throw new Error(`line ${n}: no metric name: ${line}`);
    let at = name.length;
    const labels: Record<string, string> = {};
    if (line[at] === "{") {
      at++;
      for (;;) {
        while (line[at] === " ") at++;
        if (line[at] === "}") break;
        const label = LABEL.exec(line.slice(at))?.[0];
        if (!label) throw new Error(`line ${n}: bad label name at ${at}`);
        at += label.length;
        while (line[at] === " ") at++;
        if (line[at] !== "=" || line[at + 1] !== '"') throw new Error(`line ${n}: expected ="`);
        at += 2;
        let value = "";
        for (;;) {
          const c = line[at++];
          if (c === undefined) throw new Error(`line ${n}: unterminated label value`);
          if (c === '"') break;
          if (c === "\\") {
            const e = line[at++];
            if (e === "n") value += "\n";
            else if (e === "\\" || e === '"') value += e;
            else throw new Error(`line ${n}: bad escape \\${e}`);
          } else value += c;
        }
        if (label in labels) throw new Error(`line ${n}: label ${label} twice`);
        labels[label] = value;
        while (line[at] === " ") at++;
        if (line[at] === ",") at++;
        else if (line[at] !== "}") throw new Error(`line ${n}: expected , or }`);
      }
      at++;
    }
    const rest = line.slice(at).trim().split(/\s+/);
    if (rest.length < 1 || rest.length > 2 || rest[0] === "") {
      throw new Error(`line ${n}: expected a value and an optional timestamp: ${line}`);
    }
    const sample: Sample = { name, labels, value: number(rest[0], n) };
    if (rest.length === 2) sample.timestamp = number(rest[1], n);
    samples.push(sample);
  });
  return { samples, types, help };
}

/** The value of the sample named `name` whose labels include `labels`, summed over matches. */
export function valueOf(
  e: Exposition,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  let sum: number | undefined;
  for (const s of e.samples) {
    if (s.name !== name) continue;
    if (Object.entries(labels).some(([k, v]) => s.labels[k] !== v)) continue;
    sum = (sum ?? 0) + s.value;
  }
  return sum;
}
