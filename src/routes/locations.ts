/**
 * V2 routing: the `regex_locations` of the `routing` extension, compiled once into lookup tables.
 *
 * Order (PyServe's): `=/path` exact matches first, then `~regex` / `~*regex` in file order, then
 * the longest `^~/prefix` (or plain `/prefix`), then `__default__`. Paths are matched after
 * percent-decoding and resolving dot segments. Named groups (`(?P<version>\d+)`) are filled into
 * `{version}` in `proxy_pass`, `headers` and `return`.
 *
 * @module
 */
import type { Config, LocationPattern, RoutingConfig, RoutingLocation } from "../config/schema.ts";
import { createFileServer, type FileAnswers, type FileHandler } from "../static/file_server.ts";
import { fileServerOptions } from "./static_files.ts";
import type { ErrorResponder, RequestContext, Route } from "../http/types.ts";
import type { ProxyForward } from "../proxy/proxy_pass.ts";
import { compileHeaderRules } from "../proxy/header_rules.ts";
import { setHeaders } from "../http/headers.ts";
import { normalizePath } from "../http/paths.ts";

/** Options of {@link createLocationRoute}. */
export interface LocationOptions {
  /** For the file cache settings and the default root (`http.static_dir`). */
  config: Config;
  /** What file answers carry. */
  answers: FileAnswers;
  errorResponse: ErrorResponder;
  /** Carries `proxy_pass` requests to their backend. */
  forward: ProxyForward;
  /** The file server of `http.static_dir`, shared with locations without their own root. */
  staticFiles?: FileHandler;
}

type Groups = Record<string, string | undefined>;
type LocationHandler = (request: Request, ctx: RequestContext, groups: Groups) =>
  | Response
  | Promise<Response>;

/** A value with `{group}` and `$variable` parts, compiled to a function (or kept as a string). */
type Template = string | ((groups: Groups, request: Request, ctx: RequestContext) => string);

const VARIABLES: Record<string, (request: Request, ctx: RequestContext) => string> = {
  remote_addr: (_r, ctx) => ctx.remote.hostname,
  scheme: (_r, ctx) => ctx.secure ? "https" : "http",
  host: (r) => r.headers.get("host") ?? "",
  request_uri: (_r, ctx) => ctx.path + ctx.query,
  uri: (_r, ctx) => ctx.path,
  args: (_r, ctx) => ctx.query.slice(1),
};

/**
 * Compiles `text`: `{name}` of a group in `groups` and `$remote_addr`, `$scheme`, `$host`,
 * `$request_uri`, `$uri`, `$args` are replaced per request; everything else is literal.
 */
export function compileValue(text: string, groups: readonly string[]): Template {
  const names = groups.map((g) => g.replace(/[$]/g, "")).join("|");
  const pattern = new RegExp(
    (names ? `\\{(${names})\\}|` : "") + `\\$(${Object.keys(VARIABLES).join("|")})\\b`,
    "g",
  );
  const parts: (string | { group: string } | { variable: string })[] = [];
  let last = 0;
  for (const m of text.matchAll(pattern)) {
    parts.push(text.slice(last, m.index));
    parts.push(names && m[1] !== undefined ? { group: m[1] } : { variable: m[names ? 2 : 1] });
    last = m.index + m[0].length;
  }
  if (parts.length === 0) return text;
  parts.push(text.slice(last));
  return (g, request, ctx) => {
    let out = "";
    for (const p of parts) {
      out += typeof p === "string"
        ? p
        : "group" in p
        ? g[p.group] ?? ""
        : VARIABLES[p.variable](request, ctx);
    }
    return out;
  };
}

const UNSAFE_IN_HEADER = /[^\x20-\x7e]/u;
const UNSAFE_IN_HEADER_ALL = /[^\x20-\x7e]/gu;

/**
 * A header value filled in from the request: the groups come from the percent-decoded path, so
 * control characters (`/go/%0d%0aSet-Cookie:…`) and characters a header cannot carry are written
 * percent-encoded again instead of breaking the header or the answer.
 */
const headerValue = (t: Template, g: Groups, request: Request, ctx: RequestContext) => {
  const value = evaluate(t, g, request, ctx);
  return typeof t === "string" || !UNSAFE_IN_HEADER.test(value)
    ? value
    : value.replace(UNSAFE_IN_HEADER_ALL, encodeURIComponent);
};

const evaluate = (t: Template, g: Groups, request: Request, ctx: RequestContext) =>
  typeof t === "string" ? t : t(g, request, ctx);

interface Compiled {
  key: string;
  pattern: LocationPattern;
  handle: LocationHandler;
}

/** The location a request matched, with the named groups of its regex. */
interface LocationMatch {
  location: Compiled;
  groups: Groups;
}

/**
 * The route of the V2 locations, or undefined when there are none. Requests that no location
 * matches (and no `__default__`) go on to the next route.
 */
export function createLocationRoute(
  routing: RoutingConfig | undefined,
  options: LocationOptions,
): Route<LocationMatch> | undefined {
  const entries = Object.entries(routing?.regex_locations ?? {});
  if (entries.length === 0) return undefined;
  const fileServers = new Map<string, FileHandler>();
  const http = options.config.http;
  if (options.staticFiles) fileServers.set(http.static_dir, options.staticFiles);
  const filesFor = (root: string) => {
    let files = fileServers.get(root);
    if (!files) {
      files = createFileServer({
        ...fileServerOptions(http, options.answers, root),
        errorResponse: options.errorResponse,
      });
      fileServers.set(root, files);
    }
    return files;
  };

  const exact = new Map<string, Compiled>();
  const regexes: { re: RegExp; location: Compiled }[] = [];
  const prefixes: { path: string; location: Compiled }[] = [];
  let fallback: Compiled | undefined;
  for (const [key, location] of entries) {
    const pattern = routing!.patterns.get(key)!;
    const groups = pattern.kind === "regex" ? pattern.groups : [];
    const compiled: Compiled = {
      key,
      pattern,
      handle: compileLocation(location, groups, options, filesFor),
    };
    switch (pattern.kind) {
      case "exact":
        if (!exact.has(pattern.path)) exact.set(pattern.path, compiled);
        break;
      case "regex":
        regexes.push({ re: new RegExp(pattern.source, pattern.flags), location: compiled });
        break;
      case "prefix":
        prefixes.push({ path: pattern.path, location: compiled });
        break;
      case "default":
        fallback = compiled;
    }
  }
  prefixes.sort((a, b) => b.path.length - a.path.length);

  const find = (path: string): LocationMatch | undefined => {
    const e = exact.get(path);
    if (e) return { location: e, groups: {} };
    for (const { re, location } of regexes) {
      const m = re.exec(path);
      if (m) return { location, groups: m.groups ?? {} };
    }
    for (const { path: prefix, location } of prefixes) {
      if (path.startsWith(prefix)) return { location, groups: {} };
    }
    return fallback && { location: fallback, groups: {} };
  };

  return {
    name: "locations",
    match(ctx) {
      const path = normalizePath(ctx.path);
      return path === null ? undefined : find(path);
    },
    handle: (request, ctx, found) => found.location.handle(request, ctx, found.groups),
  };
}

/** Everything after the status in `return: "302 /new"`. */
function parseReturn(spec: string): { status: number; text: string } {
  const m = /^(\d{3})(?:\s+([\s\S]*))?$/.exec(spec.trim())!;
  return { status: Number(m[1]), text: m[2] ?? "" };
}

function compileLocation(
  location: RoutingLocation,
  groups: readonly string[],
  options: LocationOptions,
  filesFor: (root: string) => FileHandler,
): LocationHandler {
  const extra = location.headers.map((line) => {
    const colon = line.indexOf(":");
    return [
      line.slice(0, colon).trim().toLowerCase(),
      compileValue(line.slice(colon + 1).trim(), groups),
    ] as const;
  });
  const dynamic = extra.some(([, v]) => typeof v !== "string");
  const fixed = extra.map(([k, v]) => [k, v as string] as const);
  const cacheControl = location.cache_control;
  const decorate = (response: Response, g: Groups, request: Request, ctx: RequestContext) => {
    const pairs = dynamic
      ? extra.map(([k, v]) => [k, headerValue(v, g, request, ctx)] as const)
      : fixed;
    let out = setHeaders(response, pairs);
    if (cacheControl !== undefined && out.status < 400) {
      out = setHeaders(out, [["cache-control", cacheControl]]);
    }
    return out;
  };
  const inner = compileAnswer(location, groups, options, filesFor);
  if (extra.length === 0 && cacheControl === undefined) return inner;
  return (request, ctx, g) => {
    const response = inner(request, ctx, g);
    return response instanceof Promise
      ? response.then((r) => decorate(r, g, request, ctx))
      : decorate(response, g, request, ctx);
  };
}

function compileAnswer(
  location: RoutingLocation,
  groups: readonly string[],
  options: LocationOptions,
  filesFor: (root: string) => FileHandler,
): LocationHandler {
  if (location.return !== undefined) {
    const { status, text } = parseReturn(location.return);
    const value = compileValue(text, groups);
    if (status >= 300 && status < 400 && text) {
      return (request, ctx, g) =>
        new Response(null, { status, headers: { location: headerValue(value, g, request, ctx) } });
    }
    const contentType = location.content_type ?? "text/plain; charset=utf-8";
    return (request, ctx, g) =>
      new Response(
        request.method === "HEAD" || status === 204 || status === 304
          ? null
          : evaluate(value, g, request, ctx),
        { status, headers: { "content-type": contentType } },
      );
  }

  if (location.proxy_pass !== undefined) {
    const target = compileValue(location.proxy_pass.replace(/\/+$/, ""), groups);
    const written = /^https?:\/\/[^/]+(\/.*)?$/i.exec(location.proxy_pass)?.[1];
    const keepPath = written === undefined || written === "/";
    const rules = {
      up: compileHeaderRules(location.request_headers),
      down: compileHeaderRules(location.response_headers),
    };
    const withRules = rules.up || rules.down ? rules : undefined;
    return (request, ctx, g) => {
      let url: URL;
      try {
        const base = evaluate(target, g, request, ctx);
        url = new URL(keepPath ? base + ctx.path + ctx.query : base + ctx.query);
      } catch {
        return options.errorResponse(502, request);
      }
      return options.forward(request, ctx, url, withRules);
    };
  }

  const root = location.root ?? options.config.http.static_dir;
  const files = filesFor(root);
  const index = location.index_file;
  const customIndex = index !== undefined && index !== "index.html";
  const serve = (request: Request, ctx: RequestContext) =>
    files(request, customIndex && ctx.path.endsWith("/") ? ctx.path + index : ctx.path, ctx.query);
  if (!location.spa_fallback) return serve;

  const spaPath = "/" + encodeURIComponent(index ?? "index.html");
  const excluded = location.exclude_patterns;
  const spa = (request: Request, ctx: RequestContext, response: Response) => {
    if (response.status !== 404) return response;
    const path = normalizePath(ctx.path);
    if (path === null || excluded.some((p) => path.startsWith(p))) return response;
    if (path.slice(path.lastIndexOf("/") + 1).includes(".")) return response;
    return files(request, spaPath, "");
  };
  return (request, ctx) => {
    const response = serve(request, ctx);
    return response instanceof Promise
      ? response.then((r) => spa(request, ctx, r))
      : spa(request, ctx, response);
  };
}
