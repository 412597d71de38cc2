/**
 * The `caching` extension: GET/HEAD answers of proxied routes (`server.reverse_proxy` rules and
 * V2 `proxy_pass` locations) kept in this process's memory, bounded by `max_bytes` with the
 * least recently used entries evicted first. The rules of what is kept are in cache_policy.ts.
 *
 * @module
 */
import type { CachingConfig } from "../config/schema.ts";
import type { RequestContext } from "../http/types.ts";
import { urlAuthority } from "../http/types.ts";
import { normalizePath } from "../http/paths.ts";
import { currentAge, isFresh, notModified, requestPolicy, storeDecision } from "./cache_policy.ts";
import type { RedisLink } from "../redis/link.ts";

/** One stored answer. */
export interface Entry {
  status: number;
  statusText: string;
  headers: [string, string][];
  body: Uint8Array<ArrayBuffer>;
  storedAtMs: number;
  initialAge: number;
  ttlSeconds: number;
  /** Lower-case names of the request headers the answer varies on, and their values. */
  vary: string[];
  varyValues: string[];
  bytes: number;
}

/** Variants of one method-less key (host, path, query) kept at most. */
const MAX_VARIANTS = 16;

/** Headers of an answer that are not kept with it (set per answer). */
const NOT_STORED = new Set(["age", "x-cache", "connection", "keep-alive", "transfer-encoding"]);

/** Where entries live: this process's memory or Redis. */
export interface CacheStore {
  get(key: string, headers: Headers): Entry | undefined | Promise<Entry | undefined>;
  set(key: string, entry: Entry): void | Promise<void>;
  delete(key: string): void | Promise<void>;
}

/** Whether `a` and `b` are the same variant (same varied request headers and values). */
function sameVariant(a: Entry, b: Entry): boolean {
  return a.vary.join() === b.vary.join() && a.varyValues.every((v, i) => v === b.varyValues[i]);
}

/** The variant of `list` whose varied request headers match `headers`. */
function variantFor(list: Entry[], headers: Headers): Entry | undefined {
  return list.find((e) => e.vary.every((n, i) => (headers.get(n) ?? "") === e.varyValues[i]));
}

/** An LRU map of entries by host, path and query, each with its variants, bounded in bytes. */
export class MemoryCache implements CacheStore {
  #entries = new Map<string, Entry[]>();
  #bytes = 0;
  constructor(readonly maxBytes: number) {}

  /** Bytes held now. */
  get bytes(): number {
    return this.#bytes;
  }

  /** The variant of `key` whose varied request headers match `headers`; marks it used. */
  get(key: string, headers: Headers): Entry | undefined {
    const list = this.#entries.get(key);
    if (!list) return undefined;
    this.#entries.delete(key);
    this.#entries.set(key, list);
    return variantFor(list, headers);
  }

  /** Keeps `entry` under `key`, replacing the variant with the same varied values. */
  set(key: string, entry: Entry): void {
    const list = (this.#entries.get(key) ?? []).filter((e) => {
      const same = sameVariant(e, entry);
      if (same) this.#bytes -= e.bytes;
      return !same;
    });
    list.unshift(entry);
    while (list.length > MAX_VARIANTS) this.#bytes -= list.pop()!.bytes;
    this.#bytes += entry.bytes;
    this.#entries.delete(key);
    this.#entries.set(key, list);
    for (const [k, l] of this.#entries) {
      if (this.#bytes <= this.maxBytes) break;
      for (const e of l) this.#bytes -= e.bytes;
      this.#entries.delete(k);
    }
  }

  /** Drops every variant of `key`. */
  delete(key: string): void {
    for (const e of this.#entries.get(key) ?? []) this.#bytes -= e.bytes;
    this.#entries.delete(key);
  }
}

/** Prefix of the cache's keys in Redis. */
export const REDIS_CACHE_PREFIX = "denoserve:cache:";

/** An entry as Redis keeps it: JSON, the body in base64. */
type StoredEntry = Omit<Entry, "body"> & { body: string };

/** Milliseconds `entry` stays fresh after `nowMs`. */
function freshFor(entry: Entry, nowMs: number): number {
  return (entry.ttlSeconds - currentAge(entry.storedAtMs, entry.initialAge, nowMs)) * 1000;
}

/**
 * Entries in Redis, shared by every process that uses the same server: one key per URL (the
 * memory cache's key, prefixed) holding its variants as JSON, expiring when the freshest variant
 * does. A lookup is one GET; a store reads the variants and writes them back. Redis down or slow:
 * a lookup finds nothing and a store is skipped (see redis/link.ts).
 */
export class RedisCache implements CacheStore {
  constructor(readonly link: RedisLink, readonly now: () => number = Date.now) {}

  async #list(key: string): Promise<Entry[] | undefined> {
    const raw = await this.link.run((c) => c.get(REDIS_CACHE_PREFIX + key));
    if (typeof raw !== "string") return raw === null ? [] : undefined;
    try {
      return (JSON.parse(raw) as StoredEntry[]).map((e) => ({
        ...e,
        body: Uint8Array.from(atob(e.body), (ch) => ch.charCodeAt(0)),
      }));
    } catch {
      return [];
    }
  }

  async get(key: string, headers: Headers): Promise<Entry | undefined> {
    const list = await this.#list(key);
    return list && variantFor(list, headers);
  }

  async set(key: string, entry: Entry): Promise<void> {
    const old = await this.#list(key);
    if (old === undefined) return;
    const t = this.now();
    const list = [entry, ...old.filter((e) => !sameVariant(e, entry) && freshFor(e, t) > 0)]
      .slice(0, MAX_VARIANTS);
    const ms = Math.ceil(Math.max(...list.map((e) => freshFor(e, t))));
    if (ms <= 0) return;
    const value = JSON.stringify(list.map((e) => ({ ...e, body: toBase64(e.body) })));
    await this.link.run((c) => c.set(REDIS_CACHE_PREFIX + key, value, { PX: ms }));
  }

  async delete(key: string): Promise<void> {
    await this.link.run((c) => c.del(REDIS_CACHE_PREFIX + key));
  }
}

/** `bytes` in base64. */
function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** Options of {@link createCache}. */
export interface CacheOptions {
  /** Milliseconds since the epoch, for tests. @default Date.now */
  now?: () => number;
  /** With `backend: redis`: the link to its server. */
  redis?: RedisLink;
}

/** A handler of a proxied route: the request, its context, and what the route matched. */
type Proxied<A extends unknown[]> = (
  request: Request,
  ctx: RequestContext,
  ...rest: A
) => Response | Promise<Response>;

/** What {@link createCache} returns: `wrap` puts the cache in front of a proxied handler. */
export interface Cache {
  wrap<A extends unknown[]>(
    handler: Proxied<A>,
  ): (request: Request, ctx: RequestContext, ...rest: A) => Promise<Response>;
  store: CacheStore;
}

/** The TTL `rules` and `default_ttl` give a path (percent-decoded, as V2 locations see it). */
function ruleTtl(config: CachingConfig): (path: string) => number {
  const rules = Object.entries(config.rules).map(([key, ttl]) => {
    const p = config.patterns.get(key)!;
    return { re: p.kind === "regex" ? new RegExp(p.source, p.flags) : /(?!)/, ttl };
  });
  return (path) => rules.find((r) => r.re.test(path))?.ttl ?? config.default_ttl;
}

/** Sets `set` on an answer, copying it when its headers are immutable. */
function withHeaders(response: Response, set: Record<string, string>): Response {
  try {
    for (const [k, v] of Object.entries(set)) response.headers.set(k, v);
    return response;
  } catch {
    const headers = new Headers(response.headers);
    for (const [k, v] of Object.entries(set)) headers.set(k, v);
    return new Response(response.body, {
      status: response.status,
      statusText: response.statusText,
      headers,
    });
  }
}

/**
 * Reads `body` whole when it has at most `limit` bytes; otherwise gives back a stream of what
 * was read followed by the rest, so that the client still gets it all.
 */
async function buffer(
  body: ReadableStream<Uint8Array>,
  limit: number,
): Promise<{ bytes: Uint8Array<ArrayBuffer> } | { stream: ReadableStream<Uint8Array> }> {
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
    if (size > limit) {
      return {
        stream: new ReadableStream<Uint8Array>({
          start(c) {
            for (const chunk of chunks) c.enqueue(chunk);
          },
          async pull(c) {
            const next = await reader.read();
            if (next.done) c.close();
            else c.enqueue(next.value);
          },
          cancel: (reason) => reader.cancel(reason),
        }),
      };
    }
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return { bytes };
}

/** Builds the cache of one configuration (a reload starts empty). */
export function createCache(config: CachingConfig, options: CacheOptions = {}): Cache {
  const now = options.now ?? Date.now;
  const store: CacheStore = config.backend === "redis" && options.redis
    ? new RedisCache(options.redis, now)
    : new MemoryCache(config.max_bytes);
  const ttlFor = ruleTtl(config);
  const limit = config.max_entry_bytes;

  const answer = (request: Request, entry: Entry): Response => {
    const headers = new Headers(entry.headers);
    headers.set("age", String(currentAge(entry.storedAtMs, entry.initialAge, now())));
    headers.set("x-cache", "HIT");
    if (notModified(request.headers, headers.get("etag"), headers.get("last-modified"))) {
      const kept = new Headers();
      for (const name of ["cache-control", "date", "etag", "expires", "vary", "age", "x-cache"]) {
        const v = headers.get(name);
        if (v !== null) kept.set(name, v);
      }
      const lm = headers.get("last-modified");
      if (lm !== null) kept.set("last-modified", lm);
      return new Response(null, { status: 304, headers: kept });
    }
    return new Response(request.method === "HEAD" ? null : entry.body.slice(), {
      status: entry.status,
      statusText: entry.statusText,
      headers,
    });
  };

  const keep = async (
    request: Request,
    ctx: RequestContext,
    key: string,
    response: Response,
  ): Promise<Response> => {
    const path = normalizePath(ctx.path) ?? ctx.path;
    const ttl = ttlFor(path);
    const miss = (r: Response) => withHeaders(r, { "x-cache": "MISS" });
    if (ttl === 0 || request.method !== "GET" || response.body === null) return miss(response);
    const decision = storeDecision(request.headers, response, ttl);
    if (!decision.store) return miss(response);
    const length = response.headers.get("content-length");
    if (length !== null && Number(length) > limit) return miss(response);
    const read = await buffer(response.body, limit);
    if ("stream" in read) {
      return miss(
        new Response(read.stream, {
          status: response.status,
          statusText: response.statusText,
          headers: response.headers,
        }),
      );
    }
    const headers: [string, string][] = [];
    let bytes = read.bytes.byteLength + key.length;
    for (const [k, v] of response.headers) {
      if (NOT_STORED.has(k)) continue;
      headers.push([k, v]);
      bytes += k.length + v.length;
    }
    const entry: Entry = {
      status: response.status,
      statusText: response.statusText,
      headers,
      body: read.bytes,
      storedAtMs: now(),
      initialAge: decision.initialAge,
      ttlSeconds: decision.ttlSeconds,
      vary: decision.vary,
      varyValues: decision.vary.map((n) => request.headers.get(n) ?? ""),
      bytes,
    };
    // Redis writes go on in the background: the client does not wait for them.
    if (bytes <= config.max_bytes) Promise.resolve(store.set(key, entry)).catch(() => {});
    const out = new Headers(response.headers);
    out.set("x-cache", "MISS");
    out.set("age", String(decision.initialAge));
    return new Response(read.bytes, {
      status: response.status,
      statusText: response.statusText,
      headers: out,
    });
  };

  const wrap =
    <A extends unknown[]>(handler: Proxied<A>) =>
    async (request: Request, ctx: RequestContext, ...rest: A): Promise<Response> => {
      const host = (ctx.authority ?? urlAuthority(request.url)).toLowerCase();
      const key = `${ctx.secure ? "https" : "http"}://${host}${ctx.path}${ctx.query}`;
      const policy = requestPolicy(request);
      if (policy.bypass) {
        const response = await handler(request, ctx, ...rest);
        // An unsafe method that succeeded makes what was stored for its URL stale (RFC 9111 §4.4).
        if (
          request.method !== "GET" && request.method !== "HEAD" && request.method !== "OPTIONS" &&
          response.status < 400
        ) await store.delete(key);
        return response;
      }
      if (!policy.revalidate) {
        const entry = await store.get(key, request.headers);
        if (entry && isFresh(entry, now())) return answer(request, entry);
      }
      const response = await handler(request, ctx, ...rest);
      if (ctx.upgrade) return response;
      return keep(request, ctx, key, response);
    };

  return { wrap, store };
}
