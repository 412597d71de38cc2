/**
 * Reads, merges and validates the configuration: defaults < file < environment < flags.
 *
 * @module
 */
import { isAbsolute, resolve } from "node:path";
import {
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type ParsedNode,
  parseDocument,
  type ScalarTag,
  type Tags,
} from "yaml";
import * as v from "valibot";
import { permissionHint, permissionProblem } from "../http/errors.ts";
import { ConfigError } from "./config_error.ts";
import type { Overrides } from "./overrides.ts";
import {
  Config,
  EXTENSION_SCHEMAS,
  isRedisStorage,
  KNOWN_HEALTH_CHECKS,
  type MonitoringConfig,
  PATH_KEYS,
  problems,
} from "./schema.ts";
import { didYouMean } from "./suggest.ts";

/** The result of {@link loadConfig}. */
export interface LoadedConfig {
  config: Config;
  /** The file read, or undefined when built-in defaults were used. */
  file?: string;
  /** Problems that do not stop the server (unknown keys, keys given twice). */
  warnings: string[];
  /** `file:line:col: ` of a key path, for checks that report a place (empty when unknown). */
  locate?: (path: Path, atKey?: boolean) => string;
}

type Raw = Record<string, unknown>;
type Path = (string | number)[];

/**
 * The settings read from the environment. Each also answers to PyServe's name for it
 * (`PYSERVE_PORT` for `DENOSERVE_PORT`), so that PyServe's deployments keep working; when both
 * are set, the `DENOSERVE_*` one wins.
 */
const ENV: Record<string, { path: string[]; kind: "string" | "port" | "bool" | "level" }> = {
  DENOSERVE_HOST: { path: ["server", "host"], kind: "string" },
  DENOSERVE_PORT: { path: ["server", "port"], kind: "port" },
  DENOSERVE_STATIC_DIR: { path: ["http", "static_dir"], kind: "string" },
  DENOSERVE_TEMPLATES_DIR: { path: ["http", "templates_dir"], kind: "string" },
  DENOSERVE_LOG_LEVEL: { path: ["logging", "level"], kind: "level" },
  DENOSERVE_LOG_FILE: { path: ["logging", "log_file"], kind: "string" },
  DENOSERVE_SSL_ENABLED: { path: ["ssl", "enabled"], kind: "bool" },
  DENOSERVE_SSL_CERT: { path: ["ssl", "cert_file"], kind: "string" },
  DENOSERVE_SSL_KEY: { path: ["ssl", "key_file"], kind: "string" },
};

/** PyServe's name for a `DENOSERVE_*` variable: `DENOSERVE_PORT` → `PYSERVE_PORT`. */
const pyserveName = (name: string) => name.replace(/^DENOSERVE_/, "PYSERVE_");

/** Names of the environment variables read, PyServe's aliases included, for permissions and docs. */
export const ENV_NAMES = Object.keys(ENV).flatMap((name) => [name, pyserveName(name)]);

/** `server.locations./admin`, `extensions[0].config.regex_locations["~^/api/"]`. */
const pathString = (path: Path) =>
  path.map((p, i) =>
    typeof p === "number"
      ? `[${p}]`
      : !/^([A-Za-z_][\w-]*|\/[\w/.-]*)$/.test(p)
      ? `[${JSON.stringify(p)}]`
      : i === 0
      ? p
      : `.${p}`
  ).join("");

function setIn(obj: Raw, path: string[], value: unknown): void {
  let o = obj;
  for (const key of path.slice(0, -1)) {
    if (typeof o[key] !== "object" || o[key] === null || Array.isArray(o[key])) o[key] = {};
    o = o[key] as Raw;
  }
  o[path[path.length - 1]] = value;
}

/** Applies `fn` to every value at `path` ("*" = each array element) that exists. */
function eachAt(obj: unknown, path: readonly string[], fn: (parent: Raw, key: string) => void) {
  if (typeof obj !== "object" || obj === null) return;
  const [head, ...rest] = path;
  if (head === "*") {
    for (const item of Array.isArray(obj) ? obj : Object.values(obj)) eachAt(item, rest, fn);
    return;
  }
  if (!(head in obj)) return;
  if (rest.length === 0) fn(obj as Raw, head);
  else eachAt((obj as Raw)[head], rest, fn);
}

/** Where `${VAR}` was substituted: the key path (as JSON) → the variables, as written. */
export type Substituted = Map<string, string>;

function substituteEnv(
  value: unknown,
  path: Path,
  where: (p: Path) => string,
  env: (name: string) => string | undefined,
  substituted: Substituted,
): unknown {
  if (typeof value === "string") {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
      const key = JSON.stringify(path);
      const seen = substituted.get(key);
      substituted.set(key, seen ? `${seen}, \${${name}}` : `\${${name}}`);
      let v: string | undefined;
      try {
        v = env(name);
      } catch (e) {
        const denied = permissionProblem(e);
        if (!denied) throw e;
        throw new ConfigError(
          `${where(path)}${pathString(path)} uses \${${name}}, but reading the environment ` +
            `variable ${name} is not permitted; ${permissionHint("env", name)}`,
        );
      }
      if (v === undefined) {
        throw new ConfigError(
          `${where(path)}${
            pathString(path)
          } uses \${${name}}, but the environment variable ${name} is not set`,
        );
      }
      return v;
    });
  }
  if (Array.isArray(value)) {
    return value.map((v, i) => substituteEnv(v, [...path, i], where, env, substituted));
  }
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(
      Object.entries(value).map((
        [k, v],
      ) => [k, substituteEnv(v, [...path, k], where, env, substituted)]),
    );
  }
  return value;
}

/** PyYAML's booleans (YAML 1.1 without the lone y and n). */
const PYYAML_TRUE = /^(?:[Yy]es|YES|[Tt]rue|TRUE|[Oo]n|ON)$/;
const PYYAML_FALSE = /^(?:[Nn]o|NO|[Ff]alse|FALSE|[Oo]ff|OFF)$/;

/**
 * The number or boolean a substituted string stands for, as YAML would have read the literal
 * (`port: ${PORT}` with PORT=8123 is `port: 8123`); undefined when it stands for neither.
 */
function scalarOf(text: string): number | boolean | undefined {
  if (/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text.trim())) return Number(text);
  if (PYYAML_TRUE.test(text)) return true;
  if (PYYAML_FALSE.test(text)) return false;
  return undefined;
}

function valueAt(obj: unknown, path: Path): unknown {
  let o = obj;
  for (const p of path) {
    if (typeof o !== "object" || o === null) return undefined;
    o = (o as Raw)[p as string];
  }
  return o;
}

function envValue(name: string, kind: string, text: string): unknown {
  switch (kind) {
    case "port":
      if (!/^\d{1,5}$/.test(text)) {
        throw new ConfigError(`${name} must be a port number 0–65535, got "${text}"`);
      }
      return Number(text);
    case "bool":
      if (/^(1|true|yes|on)$/i.test(text)) return true;
      if (/^(0|false|no|off)$/i.test(text)) return false;
      throw new ConfigError(`${name} must be true or false, got "${text}"`);
    default:
      return text;
  }
}

/** The object keys the schema accepts at `path`, for 'did you mean'. */
function keysAt(schema: v.GenericSchema, path: Path): string[] {
  // deno-lint-ignore no-explicit-any
  let s: any = schema;
  // Through optional values and pipes to the schema that holds the entries, item or values.
  const unwrap = () => {
    while (s?.wrapped || s?.pipe) {
      s = s.wrapped ?? s.pipe.findLast((item: { kind: string }) => item.kind === "schema");
    }
  };
  unwrap();
  for (const p of path) {
    s = s?.entries ? s.entries[p] : s?.item ?? s?.value;
    unwrap();
  }
  return s?.entries ? Object.keys(s.entries) : [];
}

/** {@link keysAt} for the whole file: an extension's `config` by the schema of its type. */
function knownKeys(raw: Raw, path: Path): string[] {
  if (path[0] !== "extensions" || typeof path[1] !== "number" || path[2] !== "config") {
    return keysAt(Config, path);
  }
  const type = (valueAt(raw, ["extensions", path[1], "type"]) ?? "") as string;
  const schema = EXTENSION_SCHEMAS[type];
  return schema ? keysAt(schema, path.slice(3)) : [];
}

/** The file's top-level sections, whose keys are looked for elsewhere when misplaced. */
const SECTIONS = ["server", "http", "ssl", "logging"];

/**
 * ` (did you mean "http.static_dir"?)` for a key of one section written in another (PyServe's
 * old docs put `static_dir` under `server`), else the closest key of its own section, if any.
 */
function suggestion(raw: Raw, path: Path, key: string): string {
  if (path.length === 1 && SECTIONS.includes(path[0] as string)) {
    const home = SECTIONS.find((s) => s !== path[0] && keysAt(Config, [s]).includes(key));
    if (home) return ` (did you mean "${home}.${key}"?)`;
  }
  if (path[0] === "sites" && typeof path[1] === "number") {
    const site = path.slice(0, 2);
    // `sites[0].static_dir`: a site's key outside its section.
    if (path.length === 2) {
      const home = SECTIONS.find((s) => keysAt(Config, [...site, s]).includes(key));
      if (home) return ` (did you mean "${pathString([...site, home, key])}"?)`;
    }
    // `sites[0].server.port`: a server-wide key, which only the top of the file sets.
    const section = path[2] as string;
    if (
      path.length === 3 && SECTIONS.includes(section) && keysAt(Config, [section]).includes(key)
    ) {
      return ` (${section}.${key} is server-wide: set it at the top of the file, for every site)`;
    }
  }
  return didYouMean(key, knownKeys(raw, path));
}

function deleteAt(obj: unknown, path: Path, key: string) {
  delete (valueAt(obj, path) as Raw)[key];
}

/** Joins a schema message to its key path: "must…" reads on, anything else after a colon. */
function describe(path: Path, message: string): string {
  const where = pathString(path) || "configuration";
  return /^(must|is|needs|uses|has|cannot|repeats|redirects|makes) /.test(message)
    ? `${where} ${message}`
    : `${where}: ${message}`;
}

/** Key names the schema's mappings pass over, so that none can reach an object's prototype. */
const RESERVED_KEYS = ["__proto__", "constructor", "prototype"];

/** Drops every key named in {@link RESERVED_KEYS}, with a warning for each. */
function dropReservedKeys(
  value: unknown,
  path: Path,
  where: (path: Path, atKey?: boolean) => string,
  warnings: string[],
): void {
  if (typeof value !== "object" || value === null) return;
  for (const [key, inner] of Object.entries(value)) {
    const full = [...path, Array.isArray(value) ? Number(key) : key];
    if (RESERVED_KEYS.includes(key)) {
      warnings.push(`${where(full, true)}key ${pathString(full)} is ignored: the name is reserved`);
      delete (value as Raw)[key];
    } else dropReservedKeys(inner, full, where, warnings);
  }
}

/** Validates a merged raw object; unknown keys become warnings, the rest a {@link ConfigError}. */
export function validate(
  raw: Raw,
  where: (path: Path, atKey?: boolean) => string = () => "",
  base: string = Deno.cwd(),
  substituted: Substituted = new Map(),
): { config: Config; warnings: string[] } {
  const warnings: string[] = [];
  dropReservedKeys(raw, [], where, warnings);
  const coerced = new Set<string>();
  for (let attempt = 0; attempt < 50; attempt++) {
    const result = v.safeParse(Config, raw);
    if (result.success) {
      for (const keyPath of PATH_KEYS) {
        eachAt(result.output, keyPath, (parent, key) => {
          const value = parent[key];
          // A URL (`ssl.acme.storage: redis://…`) is not a path.
          if (
            typeof value === "string" && !isAbsolute(value) &&
            !/^[a-z][a-z0-9+.-]*:\/\//i.test(value)
          ) {
            parent[key] = resolve(base, value);
          }
        });
      }
      // With ACME the certificate in service is the one kept in its storage folder, so that
      // loading, checking and reloading certificates work on files alike. Redis storage has no
      // files: the certificate reaches the server from the ACME manager, in memory.
      const { ssl } = result.output;
      // One ACME order covers the default site's domains and every name of a site without
      // certificate files of its own (a wildcard cannot pass an http-01 challenge; validate.ts
      // warns about it).
      for (const site of result.output.sites) {
        if (!ssl.acme || site.ssl.cert_file) continue;
        for (const name of site.names) {
          if (!name.startsWith("*.") && !ssl.acme.domains.includes(name)) {
            ssl.acme.domains.push(name);
          }
        }
      }
      if (ssl.acme && !ssl.cert_file && !ssl.key_file && !isRedisStorage(ssl.acme.storage)) {
        ssl.cert_file = `${ssl.acme.storage}/cert.pem`;
        ssl.key_file = `${ssl.acme.storage}/key.pem`;
      }
      if (result.output.extensions.length > 0 && result.output.version !== 2) {
        warnings.push(
          `${where(["extensions"], true)}extensions without "version: 2" at the top of the ` +
            `file; PyServe ignores them, denoserve applies them (add "version: 2" to say so)`,
        );
      }
      result.output.extensions.forEach((e, i) => {
        if (e.type !== "monitoring") return;
        (e.config as MonitoringConfig).health_checks.forEach((h, j) => {
          h.checks.forEach((name, k) => {
            if (KNOWN_HEALTH_CHECKS.includes(name)) return;
            const at = ["extensions", i, "config", "health_checks", j, "checks", k];
            warnings.push(
              `${where(at)}${pathString(at)}: denoserve has no "${name}" check; ${h.path} ` +
                `reports it as "unknown" (known: ${KNOWN_HEALTH_CHECKS.join(", ")})`,
            );
          });
        });
      });
      return { config: deepFreeze(result.output) as Config, warnings };
    }
    // A value that came from `${VAR}` and is refused as a string is read as the literal would
    // have been, once.
    const found = problems(result.issues);
    let retry = false;
    for (const { path } of found) {
      const key = JSON.stringify(path);
      if (!substituted.has(key) || coerced.has(key)) continue;
      const value = valueAt(raw, path);
      const scalar = typeof value === "string" ? scalarOf(value) : undefined;
      if (scalar === undefined) continue;
      coerced.add(key);
      setIn(raw, path as string[], scalar);
      retry = true;
    }
    if (retry) continue;
    const unknown = found.filter((p) => p.unknownKey !== undefined);
    if (unknown.length === 0) {
      throw new ConfigError(
        found.map(({ path, message }) => {
          const from = substituted.get(JSON.stringify(path));
          return `${where(path)}${describe(path, message)}${from ? ` (from ${from})` : ""}`;
        }).join("\n"),
      );
    }
    for (const { path, unknownKey } of unknown) {
      const key = unknownKey!;
      const full = [...path, key];
      warnings.push(
        `${where(full, true)}unknown key ${pathString(full)} is ignored${
          suggestion(raw, path, key)
        }`,
      );
      deleteAt(raw, path, key);
    }
  }
  throw new ConfigError("configuration could not be validated");
}

function deepFreeze<T>(o: T): T {
  if (typeof o === "object" && o !== null && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

/** The line a `file:line:col: …` warning points at. */
const lineOfWarning = (warning: string) => Number(/:(\d+):\d+: /.exec(warning)?.[1] ?? 0);

/**
 * Drops every pair of a mapping whose key comes again later in the same mapping, as PyYAML does
 * (the last one wins), and returns a warning for each, naming both lines.
 */
function dropRepeatedKeys(
  node: unknown,
  path: Path,
  file: string,
  linePos: (offset: number) => { line: number; col: number },
): string[] {
  const warnings: string[] = [];
  if (isMap(node)) {
    const last = new Map<unknown, number>();
    node.items.forEach((pair, i) => {
      if (isScalar(pair.key)) last.set(pair.key.value, i);
    });
    const kept = node.items.filter((pair, i) => {
      if (!isScalar(pair.key)) return true;
      const winner = last.get(pair.key.value)!;
      if (winner === i) return true;
      const at = linePos((pair.key as ParsedNode).range[0]);
      const line = at.line;
      const winnerLine = linePos((node.items[winner].key as ParsedNode).range[0]).line;
      warnings.push(
        `${file}:${line}:${at.col}: ` +
          `${pathString([...path, String(pair.key.value)])} is given twice, on lines ${line} and ` +
          `${winnerLine}; the one on line ${winnerLine} is used`,
      );
      return false;
    });
    node.items = kept;
    for (const pair of kept) {
      const key = isScalar(pair.key) ? String(pair.key.value) : "?";
      warnings.push(...dropRepeatedKeys(pair.value, [...path, key], file, linePos));
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => {
      warnings.push(...dropRepeatedKeys(item, [...path, i], file, linePos));
    });
  }
  return warnings;
}

/** What PyYAML's resolver reads as an int and as a float (its `resolver.py`), anchored. */
const PYYAML_NUMBERS: Record<string, RegExp> = {
  "tag:yaml.org,2002:int": new RegExp(
    "^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+" +
      "|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
  ),
  "tag:yaml.org,2002:float": new RegExp(
    "^(?:[-+]?(?:[0-9][0-9_]*)\\.[0-9_]*(?:[eE][-+][0-9]+)?|\\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?" +
      "|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\\.[0-9_]*|[-+]?\\.(?:inf|Inf|INF)|\\.(?:nan|NaN|NAN))$",
  ),
};

/**
 * The scalars of PyYAML's `safe_load`, which PyServe reads its files with (YAML 1.1): `yes`,
 * `no`, `on` and `off` are booleans, `0755` is octal, `1_000` a thousand, `1:30` is 90, `<<`
 * merges a mapping. The yaml package's 1.1 schema reads more as booleans and numbers than
 * PyYAML does (a lone `y` or `n`, `.`, `08`, `1e3`); each of its tags is narrowed to what PyYAML
 * accepts, so those stay strings, and so do dates (no key takes one).
 */
function pyyamlTags(tags: Tags): Tags {
  return tags
    .filter((t) => typeof t === "string" || t.tag !== "tag:yaml.org,2002:timestamp")
    .map((t) => {
      if (typeof t === "string" || !("test" in t) || !t.test) return t;
      const tag = t as ScalarTag & { test: RegExp };
      if (tag.tag === "tag:yaml.org,2002:bool") {
        return { ...tag, test: tag.identify?.(true) ? PYYAML_TRUE : PYYAML_FALSE };
      }
      const py = PYYAML_NUMBERS[tag.tag];
      // Both must match: the lookahead is PyYAML's rule, the rest the tag's own.
      return py ? { ...tag, test: new RegExp(`(?=${py.source})(?:${tag.test.source})`) } : tag;
    });
}

/**
 * Reads a YAML config file into a plain object, with a locator for error messages. Scalars are
 * read as PyYAML reads them ({@link pyyamlTags}). A key given twice in one mapping is a
 * warning, and the last one is used (PyYAML's rule).
 */
export async function readConfigFile(
  file: string,
): Promise<{ raw: Raw; where: (path: Path, atKey?: boolean) => string; warnings: string[] }> {
  const text = await Deno.readTextFile(file);
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, {
    lineCounter,
    prettyErrors: false,
    uniqueKeys: false,
    version: "1.1",
    customTags: pyyamlTags,
  });
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const pos = lineCounter.linePos(e.pos[0]);
    const reason = e.message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
    throw new ConfigError(`${file}:${pos.line}:${pos.col}: invalid YAML: ${reason}`);
  }
  const warnings = dropRepeatedKeys(doc.contents, [], file, (o) => lineCounter.linePos(o))
    .sort((a, b) => lineOfWarning(a) - lineOfWarning(b));
  const raw = doc.toJS() ?? {};
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(`${file}:1:1: the configuration must be a mapping of sections`);
  }
  const where = (path: Path, atKey = false) => {
    if (atKey && path.length > 0) {
      const parent = doc.getIn(path.slice(0, -1), true);
      const last = path[path.length - 1];
      if (isMap(parent)) {
        const pair = parent.items.find((p) => isScalar(p.key) && p.key.value === last);
        const range = (pair?.key as { range?: [number, number, number] } | undefined)?.range;
        if (range) {
          const pos = lineCounter.linePos(range[0]);
          return `${file}:${pos.line}:${pos.col}: `;
        }
      }
    }
    for (let n = path.length; n > 0; n--) {
      let node = doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] };
      if (isMap(node) || isSeq(node)) {
        // A block's own position is that of its first entry; its key reads better.
        const parent = n > 1 ? doc.getIn(path.slice(0, n - 1), true) : doc.contents;
        const pair = isMap(parent)
          ? parent.items.find((p) => isScalar(p.key) && p.key.value === path[n - 1])
          : undefined;
        if (pair && isScalar(pair.key) && pair.key.range) node = { range: pair.key.range };
      }
      if (node?.range) {
        const pos = lineCounter.linePos(node.range[0]);
        return `${file}:${pos.line}:${pos.col}: `;
      }
    }
    return `${file}: `;
  };
  return { raw: raw as Raw, where, warnings };
}

/**
 * Replaces the `config` of each `extensions` entry that names a `source` file with that file's
 * `config` (inline keys win). Returns a locator that points into the source file for its keys.
 */
async function loadExtensionSources(
  raw: Raw,
  /** The key path of `raw` in the file: [] for the top, ["sites", 1] for a site. */
  at: Path,
  base: string,
  where: (path: Path, atKey?: boolean) => string,
  env: (name: string) => string | undefined,
  substituted: Substituted,
  warnings: string[],
): Promise<(path: Path, atKey?: boolean) => string> {
  const extensions = raw.extensions;
  if (!Array.isArray(extensions)) return where;
  const sources = new Map<number, (path: Path, atKey?: boolean) => string>();
  for (const [i, ext] of extensions.entries()) {
    if (typeof ext !== "object" || ext === null || typeof ext.source !== "string") continue;
    const file = resolve(base, ext.source);
    let loaded: Awaited<ReturnType<typeof readConfigFile>>;
    try {
      loaded = await readConfigFile(file);
      warnings.push(...loaded.warnings);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      throw new ConfigError(
        `${where([...at, "extensions", i, "source"])}${
          pathString([...at, "extensions", i, "source"])
        }: ${file} not found`,
      );
    }
    const local: Substituted = new Map();
    const body = substituteEnv(loaded.raw, [], loaded.where, env, local) as Raw;
    const wrapped = "config" in body;
    for (const [key, vars] of local) {
      const path = JSON.parse(key) as Path;
      if (!wrapped || path[0] === "config") {
        substituted.set(
          JSON.stringify([...at, "extensions", i, "config", ...(wrapped ? path.slice(1) : path)]),
          vars,
        );
      }
    }
    if (wrapped && body.type !== undefined && body.type !== ext.type) {
      throw new ConfigError(
        `${loaded.where(["type"])}type is ${JSON.stringify(body.type)}, but ${
          pathString([...at, "extensions", i])
        } ` +
          `that loads this file says ${JSON.stringify(ext.type)}`,
      );
    }
    const config = wrapped ? body.config : body;
    if (typeof config !== "object" || config === null || Array.isArray(config)) {
      throw new ConfigError(`${loaded.where(["config"])}config must be a mapping`);
    }
    const inline = typeof ext.config === "object" && ext.config !== null ? ext.config : {};
    ext.config = { ...config, ...inline };
    ext.type ??= body.type;
    const inner = loaded.where;
    sources.set(i, wrapped ? (p, atKey) => inner(["config", ...p], atKey) : inner);
  }
  if (sources.size === 0) return where;
  const n = at.length;
  return (path, atKey) => {
    const source = at.every((p, k) => path[k] === p) && path[n] === "extensions" &&
      path[n + 2] === "config" && sources.get(path[n + 1] as number);
    return source ? source(path.slice(n + 3), atKey) : where(path, atKey);
  };
}

/**
 * Loads the configuration: the file (`flags.config`, or `./config.yaml` when present), then
 * `DENOSERVE_*` variables (or PyServe's `PYSERVE_*` names for them), then flags. Relative paths in the file resolve against its folder;
 * those from the environment and flags against the working directory.
 */
export async function loadConfig(
  flags: Overrides = {},
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): Promise<LoadedConfig> {
  const file = resolve(flags.config ?? "config.yaml");
  let raw: Raw = {};
  let where = (_: Path, _atKey?: boolean) => "";
  let used: string | undefined;
  const fileWarnings: string[] = [];
  try {
    let warnings: string[];
    ({ raw, where, warnings } = await readConfigFile(file));
    fileWarnings.push(...warnings);
    used = file;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    if (flags.config !== undefined) {
      throw new ConfigError(`${flags.config}: configuration file not found`);
    }
  }
  const substituted: Substituted = new Map();
  raw = substituteEnv(raw, [], where, env, substituted) as Raw;
  const base = used ? resolve(file, "..") : Deno.cwd();
  where = await loadExtensionSources(raw, [], base, where, env, substituted, fileWarnings);
  if (Array.isArray(raw.sites)) {
    for (const [i, site] of raw.sites.entries()) {
      if (typeof site !== "object" || site === null || Array.isArray(site)) continue;
      where = await loadExtensionSources(
        site as Raw,
        ["sites", i],
        base,
        where,
        env,
        substituted,
        fileWarnings,
      );
    }
  }

  const origin = new Map<string, string>();
  const override = (path: string[], value: unknown, source: string) => {
    setIn(raw, path, value);
    origin.set(path.join("."), source);
  };
  for (const [own, { path, kind }] of Object.entries(ENV)) {
    const name = [own, pyserveName(own)].find((n) => (env(n) ?? "") !== "");
    if (name === undefined) continue;
    const text = env(name)!;
    const value = envValue(name, kind, text);
    const isPath = PATH_KEYS.some((k) => k.join(".") === path.join("."));
    override(path, isPath ? resolve(value as string) : value, name);
  }
  const flagValues: [string[], unknown, string][] = [
    [["server", "host"], flags.host, "--host"],
    [["server", "port"], flags.port, "--port"],
    [["http", "static_dir"], flags.static && resolve(flags.static), "--static"],
    [["http", "templates_dir"], flags.templates && resolve(flags.templates), "--templates"],
    [["ssl", "enabled"], flags.ssl || undefined, "--ssl"],
    [["ssl", "cert_file"], flags.cert && resolve(flags.cert), "--cert"],
    [["ssl", "key_file"], flags.key && resolve(flags.key), "--key"],
    [["logging", "level"], flags.debug ? "DEBUG" : undefined, "--debug"],
  ];
  for (const [path, value, source] of flagValues) {
    if (value !== undefined) override(path, value, source);
  }
  if (flags.proxy?.length) {
    const server = (raw.server ??= {}) as Raw;
    const rules = Array.isArray(server.reverse_proxy) ? server.reverse_proxy : [];
    server.reverse_proxy = [...rules, ...flags.proxy];
  }
  if (flags.spa || flags.cors) {
    if (!Array.isArray(raw.extensions)) raw.extensions = [];
    const extensions = raw.extensions as Raw[];
    const configOf = (type: string): Raw => {
      let found = extensions.find((e) => e?.type === type);
      if (!found) extensions.push(found = { type, config: {} });
      if (typeof found.config !== "object" || found.config === null) found.config = {};
      return found.config as Raw;
    };
    if (flags.cors) {
      const security = configOf("security");
      security.cors = { ...(security.cors as Raw | undefined), enabled: true };
    }
    if (flags.spa) {
      const routing = configOf("routing");
      const locations = (routing.regex_locations ??= {}) as Raw;
      locations.__default__ = { ...(locations.__default__ as Raw | undefined), spa_fallback: true };
    }
    raw.version ??= 2; // extensions asked for on the command line need no "version: 2" warning
  }

  const locate = (path: Path, atKey?: boolean) => {
    const source = origin.get(path.join("."));
    return source ? `${source}: ` : where(path, atKey);
  };
  const { config, warnings } = validate(raw, locate, base, substituted);
  return { config, file: used, warnings: [...fileWarnings, ...warnings], locate };
}
