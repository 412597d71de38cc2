/**
 * Header rules (`request_headers`, `response_headers`, `server.response_headers`): `remove`, then
 * `set` (replacing), then `add` (appending), with values that may name the variables of
 * `HEADER_VARIABLES` (config/schema.ts) and `{header.Name}`. Compiled once per configuration: on the request
 * path a value is a constant or a few closures, and a list is walked once.
 *
 * @module
 */
import { HEADER_VARIABLE, type HeaderRules as HeaderRulesConfig } from "../config/schema.ts";
import type { RequestContext } from "../http/types.ts";
import { clientHost } from "./forwarded_headers.ts";

/** A value for one request; one entry per name of `HEADER_VARIABLES`. */
type Value = (request: Request, ctx: RequestContext) => string;

const VARIABLES: Record<string, Value> = {
  client_ip: (_, ctx) => ctx.remote.hostname,
  host: (request, ctx) => ctx.authority === undefined ? clientHost(request) : ctx.authority ?? "",
  scheme: (_, ctx) => ctx.secure ? "https" : "http",
  request_id: (_, ctx) => ctx.requestId ?? "",
  method: (request) => request.method,
  uri: (_, ctx) => ctx.path + ctx.query,
};

/** Compiles a template the schema accepted into a constant or a function. */
function compileValue(template: string): string | Value {
  const parts: (string | Value)[] = [];
  let at = 0;
  for (const m of template.matchAll(HEADER_VARIABLE)) {
    if (m.index > at) parts.push(template.slice(at, m.index));
    const name = m[1];
    if (name.startsWith("header.")) {
      const header = name.slice(7).toLowerCase();
      parts.push((request) => request.headers.get(header) ?? "");
    } else parts.push(VARIABLES[name]);
    at = m.index + m[0].length;
  }
  if (at < template.length) parts.push(template.slice(at));
  if (parts.every((p) => typeof p === "string")) return parts.join("");
  if (parts.length === 1) return parts[0];
  return (request, ctx) => {
    let out = "";
    for (const p of parts) out += typeof p === "string" ? p : p(request, ctx);
    return out;
  };
}

/** Header rules ready for the request path. */
export interface HeaderRules {
  /** Lower-cased names dropped from the list before `set` and `add` (removed and set ones). */
  readonly drop: ReadonlySet<string>;
  /** Whether a rule sets `host` (the backend then gets it instead of its own). */
  readonly setsHost: boolean;
  /** `list` with the rules applied, in place (dropped pairs taken out, the others appended). */
  apply(list: [string, string][], request: Request, ctx: RequestContext): [string, string][];
  /** The same on a `Headers` (in place; throws TypeError when it is immutable). */
  applyTo(headers: Headers, request: Request, ctx: RequestContext): void;
}

/** Compiles `config`; undefined when it has no rule at all. */
export function compileHeaderRules(
  config: HeaderRulesConfig | undefined,
): HeaderRules | undefined {
  if (config === undefined) return undefined;
  const lower = (entries: Record<string, string>) =>
    Object.entries(entries).map(([k, t]) => [k.toLowerCase(), compileValue(t)] as const);
  const set = lower(config.set);
  const add = lower(config.add);
  const remove = config.remove.map((n) => n.toLowerCase());
  if (set.length + add.length + remove.length === 0) return undefined;
  const drop = new Set([...remove, ...set.map(([n]) => n)]);
  const pairs = [...set, ...add];
  const value = (v: string | Value, request: Request, ctx: RequestContext) =>
    typeof v === "string" ? v : v(request, ctx);
  return {
    drop,
    setsHost: drop.has("host") && set.some(([n]) => n === "host"),
    apply(list, request, ctx) {
      if (drop.size > 0) {
        let kept = 0;
        for (let i = 0; i < list.length; i++) {
          const pair = list[i];
          if (!drop.has(pair[0])) list[kept++] = pair;
        }
        list.length = kept;
      }
      for (let i = 0; i < pairs.length; i++) {
        const [name, v] = pairs[i];
        const text = typeof v === "string" ? v : v(request, ctx);
        if (text !== "") list.push([name, text]);
      }
      return list;
    },
    applyTo(headers, request, ctx) {
      for (const name of remove) headers.delete(name);
      for (const [name, v] of set) {
        const text = value(v, request, ctx);
        if (text === "") headers.delete(name);
        else headers.set(name, text);
      }
      for (const [name, v] of add) {
        const text = value(v, request, ctx);
        if (text !== "") headers.append(name, text);
      }
    },
  };
}
