/**
 * Static files: path safety, a metadata and small-body cache, conditional requests, ranges.
 *
 * The cache keeps what one `stat` + `realPath` (+ read, for small files) learned about a URL
 * path and trusts it for `ttlMs`; after that one `stat` revalidates it. This is nginx's
 * `open_file_cache` idea and what makes the common GET cost no file-system call at all.
 *
 * @module
 */
import mime from "mime";
import type { ErrorResponder } from "../http/types.ts";
import { cloneMarked, FILE_ANSWER, FIXED_HEADERS } from "../http/headers.ts";
import { compressBytes, COMPRESSIBLE, preferredEncoding } from "../http/encoding.ts";
import {
  builtInErrorResponse,
  type ListingEntry,
  listingPage,
  welcomePage,
} from "../pages/html.ts";
import {
  byteRange,
  etagMatches,
  httpDate,
  modifiedSince,
  notModifiedSince,
} from "./conditional.ts";

/** Options of {@link createFileServer}. */
export interface FileServerOptions {
  /** Absolute folder to serve. */
  root: string;
  /** Answer folders without index.html with a listing. Default false. */
  listing?: boolean;
  /**
   * Answer `/` with the built-in welcome page when the root has no index.html (before a
   * listing). Without the root folder `/` is the welcome page anyway. Default false.
   */
  welcome?: boolean;
  /** Serve names starting with a dot (`.well-known` always is). Default false. */
  dotfiles?: boolean;
  /** How long cached metadata is trusted, in ms; 0 checks on every request. Default 1000. */
  ttlMs?: number;
  /** Largest file whose body is kept in memory, in bytes. Default 1 MiB. */
  maxFileSize?: number;
  /** Memory for cached bodies in all, in bytes. Default 64 MiB. */
  maxBytes?: number;
  /** Also look up `/static/x` as `/x` when `/static/x` itself is missing. Default true. */
  staticPrefix?: boolean;
  /**
   * Write `Content-Length` into answers whose body is in memory. The runtime adds the header to
   * such answers by itself, so it is only needed when something reads the answer's headers (the
   * access log does); leaving it out makes a small answer about 5% cheaper. Default true.
   */
  contentLength?: boolean;
  /**
   * Headers every file answer built once for the cache carries (the `security` extension's
   * `security_headers`): they are copied with the answer when it is cloned, instead of being
   * looked up and appended on each request. Default none.
   */
  headers?: [string, string][];
  /**
   * Mark the answers built once for the cache as a file's ({@link FILE_ANSWER}), for a
   * compression wrapper in front, which then leaves them as they are without looking at their
   * headers. Only then: the mark costs about 0.3 µs per answer. Default false.
   */
  markFiles?: boolean;
  /** Builds error responses; a plain built-in page when absent. */
  errorResponse?: ErrorResponder;
}

/** What the answers of every file server of one configuration carry. */
export interface FileAnswers {
  /** See {@link FileServerOptions.contentLength}. */
  contentLength: boolean;
  /** See {@link FileServerOptions.headers}. */
  headers: [string, string][];
  /** See {@link FileServerOptions.markFiles}. */
  markFiles: boolean;
}

/**
 * Whether the resolved path `real` is the root `base` or inside it: the one containment check
 * (symlinks resolved first) for files, index files and precompressed siblings. `base` may end in
 * "/" (the root is the file system's root).
 */
export function within(real: string, base: string): boolean {
  return real === base || real.startsWith(base.endsWith("/") ? base : base + "/");
}

/** Serves one request whose URL path (still percent-encoded) is `path`. */
export type FileHandler = (
  request: Request,
  path: string,
  query: string,
) => Response | Promise<Response>;

interface FileEntry {
  kind: "file";
  fsPath: string;
  size: number;
  mtimeMs: number;
  etag: string;
  lastModified: string;
  contentType: string;
  body: Uint8Array<ArrayBuffer> | null;
  /** Set on a compressed form of a file. */
  encoding?: "br" | "gzip";
  /** Compressed forms of this file, best first, chosen by Accept-Encoding. */
  encoded: FileEntry[];
  /** Their codings, in the same order. */
  codings: ("br" | "gzip")[];
  /** Headers of a full 200 answer, built once. */
  headers: [string, string][];
  /** The `Vary` of that answer (empty or one pair), which 304 and 206 answers carry too. */
  vary: [string, string][];
  /**
   * Answers built once and cloned per request: cloning copies the header list without
   * validating every header again, which is most of what building a small answer costs.
   */
  responses: { get: Response | null; head: Response; notModified: Response };
  /**
   * The marks those answers carry: the fixed headers ({@link FileServerOptions.headers}) and
   * {@link FileServerOptions.markFiles}.
   */
  marks: number;
  checkedAt: number;
}

type Entry =
  | FileEntry
  | { kind: "missing"; status: 400 | 404; checkedAt: number }
  | { kind: "slash"; checkedAt: number }
  | { kind: "listing"; fsPath: string; checkedAt: number }
  | { kind: "welcome"; checkedAt: number };

const MAX_ENTRIES = 10_000;
const TEXT_TYPES = /^(text\/|application\/(javascript|json|xml|manifest\+json|.*\+xml)|image\/svg)/;

/** Content-Type for a file name, from the MIME database; UTF-8 on text. */
export function contentTypeFor(name: string): string {
  const type = mime.getType(name) ?? "application/octet-stream";
  return TEXT_TYPES.test(type) ? `${type}; charset=utf-8` : type;
}

/**
 * Splits a percent-encoded URL path into safe decoded segments, or gives the status to answer:
 * 400 for what cannot be decoded or holds NUL, 404 for anything that could leave the root.
 */
export function safeSegments(path: string, dotfiles: boolean): string[] | 400 | 404 {
  const segments: string[] = [];
  for (const raw of path.split("/")) {
    if (raw === "") continue;
    let seg = raw;
    if (raw.includes("%")) {
      try {
        seg = decodeURIComponent(raw);
      } catch {
        return 400;
      }
    }
    if (seg.includes("\0")) return 400;
    if (seg === "." || seg === ".." || seg.includes("/") || seg.includes("\\")) return 404;
    if (/^[A-Za-z]:/.test(seg)) return 404;
    if (seg[0] === "." && !dotfiles && seg !== ".well-known") return 404;
    segments.push(seg);
  }
  return segments;
}

/** Compresses a cached body once, so that each request after it costs nothing. */
const compress = (body: Uint8Array, encoding: "br" | "gzip") =>
  compressBytes(body, encoding, encoding === "br" ? 5 : 6);

/**
 * A file's cache entry with its answers built once. `encoding` marks a compressed form of the
 * file; `encoded` lists the compressed forms of an identity entry (best first).
 */
function fileEntry(
  fsPath: string,
  info: Deno.FileInfo,
  contentType: string,
  body: Uint8Array<ArrayBuffer> | null,
  now: number,
  answers: FileAnswers,
  encoding?: "br" | "gzip",
  encoded: FileEntry[] = [],
): FileEntry {
  const mtimeMs = info.mtime?.getTime() ?? 0;
  const size = body?.byteLength ?? info.size;
  const tag = `${Math.floor(mtimeMs / 1000).toString(16)}-${size.toString(16)}`;
  const etag = `"${tag}${encoding ? `-${encoding}` : ""}"`;
  const lastModified = new Date(mtimeMs).toUTCString();
  const headers: [string, string][] = [
    ["content-type", contentType],
    ["content-length", String(size)],
    ["etag", etag],
    ["last-modified", lastModified],
    ["accept-ranges", "bytes"],
  ];
  if (encoding) headers.push(["content-encoding", encoding]);
  // RFC 9110 §15.4.5 and §15.3.7: a 304 and a 206 carry the Vary the 200 would.
  const vary: [string, string][] = encoding || encoded.length ? [["vary", "Accept-Encoding"]] : [];
  headers.push(...vary);
  const fixed = answers.headers;
  const full = [...headers, ...fixed];
  return {
    kind: "file",
    fsPath,
    size,
    mtimeMs,
    etag,
    lastModified,
    contentType,
    body,
    encoding,
    encoded,
    codings: encoded.map((v) => v.encoding!),
    headers,
    vary,
    responses: {
      get: body === null ? null : new Response(body, {
        headers: answers.contentLength ? full : full.filter(([n]) => n !== "content-length"),
      }),
      head: new Response(null, { headers: full }),
      notModified: new Response(null, {
        status: 304,
        headers: [["etag", etag], ["last-modified", lastModified], ...vary, ...fixed],
      }),
    },
    marks: (fixed.length > 0 ? FIXED_HEADERS : 0) | (answers.markFiles ? FILE_ANSWER : 0),
    checkedAt: now,
  };
}

/** Memory an entry holds in file bodies, its compressed forms included. */
function heldBytes(entry: Entry | undefined): number {
  if (entry?.kind !== "file") return 0;
  return entry.encoded.reduce((n, e) => n + heldBytes(e), entry.body?.byteLength ?? 0);
}

/** A stream of `length` bytes of an open file from `start`; closes the file when done. */
function fileSlice(file: Deno.FsFile, start: number, length: number): ReadableStream<Uint8Array> {
  let remaining = length;
  let positioned = false;
  return new ReadableStream({
    async pull(ctrl) {
      try {
        if (!positioned) {
          await file.seek(start, Deno.SeekMode.Start);
          positioned = true;
        }
        const buf = new Uint8Array(Math.min(remaining, 64 * 1024));
        const n = await file.read(buf);
        if (n === null) throw new Error("file shrank while being sent");
        remaining -= n;
        ctrl.enqueue(buf.subarray(0, n));
        if (remaining <= 0) {
          file.close();
          ctrl.close();
        }
      } catch (e) {
        try {
          file.close();
        } catch { /* already closed */ }
        ctrl.error(e);
      }
    },
    cancel() {
      try {
        file.close();
      } catch { /* already closed */ }
    },
  });
}

/**
 * Creates the static file handler for `options.root`.
 *
 * @example
 * ```ts
 * const files = createFileServer({ root: "/srv/site" });
 * Deno.serve((req) => files(req, new URL(req.url).pathname, ""));
 * ```
 */
export function createFileServer(options: FileServerOptions): FileHandler {
  const root = options.root.replace(/\/+$/, "") || "/";
  const ttl = options.ttlMs ?? 1000;
  const maxFileSize = options.maxFileSize ?? 1024 * 1024;
  const answers: FileAnswers = {
    contentLength: options.contentLength ?? true,
    headers: options.headers ?? [],
    markFiles: options.markFiles ?? false,
  };
  const maxBytes = options.maxBytes ?? 64 * 1024 * 1024;
  const dotfiles = options.dotfiles ?? false;
  const listing = options.listing ?? false;
  const welcome = options.welcome ?? false;
  const staticPrefix = options.staticPrefix ?? true;
  const errorResponse = options.errorResponse ?? builtInErrorResponse;
  const cache = new Map<string, Entry>();
  let cachedBytes = 0;
  let realRoot: string | null = null;

  const remember = (key: string, entry: Entry) => {
    if (ttl === 0) return entry;
    const old = cache.get(key);
    cachedBytes -= heldBytes(old);
    if (!old && cache.size >= MAX_ENTRIES) {
      const first = cache.keys().next().value!;
      cachedBytes -= heldBytes(cache.get(first));
      cache.delete(first);
    }
    cachedBytes += heldBytes(entry);
    cache.set(key, entry);
    return entry;
  };

  async function rootReal(): Promise<string | null> {
    try {
      realRoot = await Deno.realPath(root);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return realRoot = null;
      throw e;
    }
    return realRoot;
  }

  /** Resolves decoded segments to an entry, checking that the real path stays inside. */
  async function resolveEntry(
    segments: string[],
    trailingSlash: boolean,
    old: Entry | undefined,
    now: number,
  ): Promise<Entry> {
    const base = await rootReal();
    if (base === null) {
      return segments.length === 0
        ? { kind: "welcome", checkedAt: now }
        : { kind: "missing", status: 404, checkedAt: now };
    }
    let fsPath = segments.length ? `${root}/${segments.join("/")}` : root;
    let info: Deno.FileInfo;
    let real: string;
    try {
      real = await Deno.realPath(fsPath);
      info = await Deno.stat(real);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
        return { kind: "missing", status: 404, checkedAt: now };
      }
      throw e;
    }
    if (!within(real, base)) return { kind: "missing", status: 404, checkedAt: now };
    if (info.isDirectory) {
      if (!trailingSlash) return { kind: "slash", checkedAt: now };
      const dir = real;
      fsPath = `${dir}/index.html`;
      try {
        info = await Deno.stat(fsPath);
        if (!info.isFile) throw new Deno.errors.NotFound();
        real = await Deno.realPath(fsPath);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
        if (welcome && segments.length === 0) return { kind: "welcome", checkedAt: now };
        return listing
          ? { kind: "listing", fsPath: dir, checkedAt: now }
          : { kind: "missing", status: 404, checkedAt: now };
      }
      if (!within(real, base)) return { kind: "missing", status: 404, checkedAt: now };
    } else if (trailingSlash || !info.isFile) {
      return { kind: "missing", status: 404, checkedAt: now };
    }
    const mtimeMs = info.mtime?.getTime() ?? 0;
    const size = info.size;
    if (
      old?.kind === "file" && old.fsPath === real && old.size === size && old.mtimeMs === mtimeMs
    ) {
      old.checkedAt = now;
      return old;
    }
    const contentType = contentTypeFor(real);
    const body = await readSmall(real, size);
    // Precompressed siblings are the author's choice; without any, cached text is compressed once.
    const encoded: FileEntry[] = [];
    for (const [encoding, ext] of [["br", ".br"], ["gzip", ".gz"]] as const) {
      const sibling = await siblingInfo(real + ext, base);
      if (!sibling) continue;
      const siblingBody = await readSmall(sibling.path, sibling.info.size);
      encoded.push(
        fileEntry(
          sibling.path,
          sibling.info,
          contentType,
          siblingBody,
          now,
          answers,
          encoding,
        ),
      );
    }
    if (encoded.length === 0 && body !== null && COMPRESSIBLE.test(contentType) && size >= 256) {
      for (const encoding of ["br", "gzip"] as const) {
        const packed = compress(body, encoding);
        if (packed.byteLength < size * 0.9 && cachedBytes + packed.byteLength <= maxBytes) {
          encoded.push(fileEntry(real, info, contentType, packed, now, answers, encoding));
        }
      }
    }
    return fileEntry(real, info, contentType, body, now, answers, undefined, encoded);
  }

  /** The body of a file small enough to keep in memory, else null. */
  async function readSmall(path: string, size: number) {
    if (size > maxFileSize || cachedBytes + size > maxBytes || ttl === 0) return null;
    const body = await Deno.readFile(path);
    return body.byteLength === size ? body : null;
  }

  /** A precompressed sibling (`x.br`, `x.gz`) that is a file inside the root. */
  async function siblingInfo(path: string, base: string) {
    try {
      const real = await Deno.realPath(path);
      const info = await Deno.stat(real);
      return info.isFile && within(real, base) ? { path: real, info } : null;
    } catch {
      return null;
    }
  }

  async function lookup(path: string, old: Entry | undefined, now: number): Promise<Entry> {
    const segments = safeSegments(path, dotfiles);
    if (typeof segments === "number") return { kind: "missing", status: segments, checkedAt: now };
    const slash = path.endsWith("/");
    let entry = await resolveEntry(segments, slash, old, now);
    if (
      entry.kind === "missing" && staticPrefix && segments[0] === "static" &&
      path.startsWith("/static/")
    ) {
      entry = await resolveEntry(segments.slice(1), slash, old, now);
    }
    return entry;
  }

  async function listDirectory(fsPath: string): Promise<ListingEntry[]> {
    const entries: ListingEntry[] = [];
    for await (const item of Deno.readDir(fsPath)) {
      if (item.name[0] === "." && !dotfiles) continue;
      let size = 0;
      let mtime: Date | null = null;
      let isDirectory = item.isDirectory;
      try {
        const info = await Deno.stat(`${fsPath}/${item.name}`);
        [size, mtime, isDirectory] = [info.size, info.mtime, info.isDirectory];
      } catch { /* broken link: listed without details */ }
      entries.push({ name: item.name, isDirectory, size, mtime });
    }
    return entries;
  }

  async function respond(request: Request, entry: Entry, path: string, query: string) {
    switch (entry.kind) {
      case "file":
        return await respondFile(request, entry);
      case "missing":
        return errorResponse(entry.status, request);
      case "slash":
        return new Response(null, {
          status: 301,
          headers: { location: `${path}/${query}` },
        });
      case "welcome":
        return html(request, welcomePage(root));
      case "listing":
        return html(request, listingPage(decodeURI(path), await listDirectory(entry.fsPath)));
    }
  }

  const handler: FileHandler = (request, path, query) => {
    const method = request.method;
    if (method !== "GET" && method !== "HEAD") {
      return errorResponse(405, request, { allow: "GET, HEAD" });
    }
    const now = Date.now();
    const cached = cache.get(path);
    if (cached !== undefined && now - cached.checkedAt < ttl) {
      if (cached.kind === "file" && cached.body !== null) return respondFile(request, cached);
      return respond(request, cached, path, query);
    }
    return lookup(path, cached, now).then((entry) => {
      remember(path, entry);
      return respond(request, entry, path, query);
    });
  };
  return handler;
}

function html(request: Request, text: string): Response {
  return new Response(request.method === "HEAD" ? null : text, {
    headers: { "content-type": "text/html; charset=utf-8" },
  });
}

/** The answer for a file entry, honouring conditional and range headers. */
function respondFile(request: Request, file: FileEntry): Response | Promise<Response> {
  const h = request.headers;
  // Each read of a request header is a call into the runtime: each is read once.
  const rangeHeader = h.get("range");
  let e = file;
  if (file.encoded.length) {
    const accept = h.get("accept-encoding");
    if (accept !== null && rangeHeader === null) {
      const coding = preferredEncoding(accept, file.codings);
      if (coding !== undefined) e = file.encoded.find((v) => v.encoding === coding)!;
    }
  }
  const ifMatch = h.get("if-match");
  if (ifMatch !== null && !etagMatches(ifMatch, e.etag, true)) return preconditionFailed(e);
  const ifUnmodified = ifMatch === null ? h.get("if-unmodified-since") : null;
  if (ifUnmodified !== null && modifiedSince(ifUnmodified, e.mtimeMs)) {
    return preconditionFailed(e);
  }
  const ifNoneMatch = h.get("if-none-match");
  if (ifNoneMatch !== null) {
    if (etagMatches(ifNoneMatch, e.etag, false)) return notModified(e);
  } else {
    const ims = h.get("if-modified-since");
    if (ims !== null && notModifiedSince(ims, e.mtimeMs)) return notModified(e);
  }
  const head = request.method === "HEAD";
  if (rangeHeader !== null && ifRangeHolds(h.get("if-range"), e)) {
    const range = byteRange(rangeHeader, e.size);
    if (range === "unsatisfiable") {
      return new Response(null, {
        status: 416,
        headers: { "content-range": `bytes */${e.size}`, "accept-ranges": "bytes" },
      });
    }
    if (range !== null) {
      const [start, end] = range;
      const headers: [string, string][] = [
        ["content-type", e.contentType],
        ["content-length", String(end - start + 1)],
        ["content-range", `bytes ${start}-${end}/${e.size}`],
        ["etag", e.etag],
        ["last-modified", e.lastModified],
        ["accept-ranges", "bytes"],
        ...e.vary,
      ];
      if (head) return new Response(null, { status: 206, headers });
      if (e.body !== null) {
        return new Response(e.body.subarray(start, end + 1), { status: 206, headers });
      }
      return Deno.open(e.fsPath).then((file) =>
        new Response(fileSlice(file, start, end - start + 1), { status: 206, headers })
      );
    }
  }
  if (head) return cloneMarked(e.responses.head, e.marks);
  if (e.responses.get !== null) return cloneMarked(e.responses.get, e.marks);
  if (e.size === 0) return new Response(new Uint8Array(0), { headers: e.headers });
  return Deno.open(e.fsPath).then((file) => new Response(file.readable, { headers: e.headers }));
}

function ifRangeHolds(ifRange: string | null, e: FileEntry): boolean {
  if (ifRange === null) return true;
  if (ifRange.startsWith('"') || ifRange.startsWith("W/")) return ifRange === e.etag;
  const date = httpDate(ifRange);
  return date !== undefined && Math.floor(e.mtimeMs / 1000) * 1000 === date;
}

function notModified(e: FileEntry): Response {
  return cloneMarked(e.responses.notModified, e.marks);
}

function preconditionFailed(e: FileEntry): Response {
  return new Response(null, { status: 412, headers: { etag: e.etag } });
}
