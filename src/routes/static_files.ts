/**
 * The file server's options from `http` of a configuration: the adapter between `Config` and
 * `static/`, which takes plain options (as std's `serveDir` does) and knows nothing of `Config`.
 *
 * @module
 */
import type { Config } from "../config/schema.ts";
import type { FileAnswers, FileServerOptions } from "../static/file_server.ts";

/**
 * The options `http` sets for a file server of `root` (`http.static_dir` unless given):
 * listing, dot files, the cache; `answers` says what the answers carry. `/static/x` is looked up
 * as `/x` only under `http.static_dir`. The error pages are the caller's to add.
 */
export function fileServerOptions(
  http: Config["http"],
  answers: FileAnswers,
  root: string = http.static_dir,
): FileServerOptions {
  return {
    ...answers,
    root,
    listing: http.directory_listing,
    dotfiles: http.serve_dotfiles,
    ttlMs: http.file_cache_ttl_ms,
    maxFileSize: http.file_cache_max_file_size,
    maxBytes: http.file_cache_max_bytes,
    staticPrefix: root === http.static_dir,
  };
}
