/**
 * `--ssl-config`: writes `--ssl --cert --key` into the configuration file's `ssl` section and
 * leaves every other byte of the file as it was.
 *
 * @module
 */
import { dirname, isAbsolute, relative, resolve } from "node:path";
import { isMap, isScalar, parseDocument, type Scalar, type YAMLMap } from "yaml";
import { explainError } from "../http/errors.ts";
import type { Flags } from "./flags.ts";
import { ConfigError } from "../config/config_error.ts";
import { loadTlsMaterial, TlsError } from "../tls/certs.ts";

/** What `--ssl-config` stores. */
export interface SslSettings {
  /** Certificate path, absolute or relative to the working directory. */
  certFile: string;
  /** Key path, absolute or relative to the working directory. */
  keyFile: string;
}

/**
 * A path as the config file should hold it: relative paths in the file resolve against the
 * file's folder, so `./x` from the working directory is rewritten relative to that folder.
 */
function pathForFile(configFile: string, path: string): string {
  const absolute = resolve(path);
  const rel = relative(dirname(configFile), absolute);
  if (rel === "" || rel.startsWith("..") || isAbsolute(rel)) return absolute;
  return `./${rel}`;
}

/** Sets `key` in `map` to `value`, keeping the node (and its comments) when unchanged. */
function setScalar(map: YAMLMap, key: string, value: unknown) {
  const node = map.get(key, true);
  if (isScalar(node)) {
    if ((node as Scalar).value === value) return;
    (node as Scalar).value = value;
    node.comment = undefined; // an inline comment described the old value
    return;
  }
  map.set(key, value);
}

/**
 * Returns `text` with its `ssl` section set to `settings` (enabled, cert_file, key_file), other
 * `ssl` keys kept. Everything outside the section is left byte for byte; a missing section is
 * appended. Throws {@link ConfigError} when `text` is not valid YAML.
 */
export function rewriteSslSection(text: string, file: string, settings: SslSettings): string {
  const values: [string, unknown][] = [
    ["enabled", true],
    ["cert_file", pathForFile(file, settings.certFile)],
    ["key_file", pathForFile(file, settings.keyFile)],
  ];
  const doc = parseDocument(text);
  if (doc.errors.length) {
    throw new ConfigError(
      `${file}: invalid YAML, not changed: ${doc.errors[0].message.split("\n")[0]}`,
    );
  }
  const root = doc.contents;
  if (root !== null && !isMap(root)) {
    throw new ConfigError(`${file}: the configuration must be a mapping of sections, not changed`);
  }
  const pair = root?.items.find((p) => isScalar(p.key) && p.key.value === "ssl");
  const keyRange = pair && isScalar(pair.key) ? pair.key.range : undefined;
  const valueRange = (pair?.value as { range?: [number, number, number] } | null)?.range;
  const blockStyle = root !== null && !root.flow && keyRange !== undefined &&
    (keyRange[0] === 0 || text[keyRange[0] - 1] === "\n");

  if (!pair || !keyRange || !blockStyle) {
    if (pair || root?.flow) {
      // An unusual layout (flow style): let the YAML library write the whole document.
      const ssl = doc.getIn(["ssl"], true);
      if (!isMap(ssl)) doc.set("ssl", doc.createNode({}));
      for (const [k, v] of values) setScalar(doc.getIn(["ssl"], true) as YAMLMap, k, v);
      return doc.toString();
    }
    const section = parseDocument("ssl: {}\n");
    const map = section.getIn(["ssl"], true) as YAMLMap;
    map.flow = false;
    for (const [k, v] of values) map.set(k, v);
    const sep = text === "" || text.endsWith("\n\n") ? "" : text.endsWith("\n") ? "\n" : "\n\n";
    return text + sep + section.toString();
  }

  const start = keyRange[0];
  let end = valueRange ? valueRange[1] : keyRange[2];
  const eol = text.indexOf("\n", end === 0 ? 0 : end - 1);
  end = text[end - 1] === "\n" ? end : eol < 0 ? text.length : eol + 1;
  const section = parseDocument(text.slice(start, end));
  let map = section.getIn(["ssl"], true);
  if (!isMap(map)) {
    section.set("ssl", section.createNode({}));
    map = section.getIn(["ssl"], true) as YAMLMap;
    (map as YAMLMap).flow = false;
  }
  for (const [k, v] of values) setScalar(map as YAMLMap, k, v);
  let out = section.toString();
  if (!text.slice(start, end).endsWith("\n")) out = out.replace(/\n$/, "");
  return text.slice(0, start) + out + text.slice(end);
}

const stderr = (line: string) => console.error(`denoserve: ${line}`);

/**
 * The `--ssl-config` command: saves the flags into the config file (`-c` or ./config.yaml,
 * created when absent) and resolves to the exit status without serving.
 */
export async function runSslConfig(flags: Flags): Promise<number> {
  const missing = [
    flags.ssl ? "" : "--ssl",
    flags.cert ? "" : "--cert FILE",
    flags.key ? "" : "--key FILE",
  ].filter(Boolean);
  if (missing.length) {
    stderr(
      `--ssl-config needs --ssl, --cert FILE and --key FILE; missing ${missing.join(", ")}`,
    );
    return 1;
  }
  const file = resolve(flags.config ?? "config.yaml");
  const settings = { certFile: flags.cert!, keyFile: flags.key! };
  let text = "";
  let created = false;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      stderr(`cannot read ${file}: ${explainError(e, flags.debug)}`);
      return 1;
    }
    created = true;
  }
  let next: string;
  try {
    next = rewriteSslSection(text, file, settings);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    stderr(e.message);
    return e.code;
  }
  try {
    await Deno.writeTextFile(file, next);
  } catch (e) {
    stderr(`cannot write ${file}: ${explainError(e, flags.debug)}`);
    return 1;
  }
  console.log(
    `denoserve: ${created ? "created" : "updated"} ${file}: ssl.enabled true, ` +
      `cert_file ${pathForFile(file, settings.certFile)}, key_file ${
        pathForFile(file, settings.keyFile)
      }`,
  );
  try {
    const tls = await loadTlsMaterial(resolve(settings.certFile), resolve(settings.keyFile));
    for (const w of tls.warnings) stderr(`warning: ${w}`);
  } catch (e) {
    if (!(e instanceof TlsError)) throw e;
    stderr(`warning: ${e.message} (saved anyway; the server will not start until it is fixed)`);
  }
  return 0;
}
