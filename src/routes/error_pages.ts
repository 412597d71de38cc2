/**
 * Error answers from the templates folder: `error_<code>.html`, then `errors.html`, then the
 * built-in page. `{{status_code}}`, `{{status_text}}` and `{{error_details}}` are filled in,
 * HTML-escaped.
 *
 * Templates are read on first use and kept; a kept template is checked with one `stat` once it is
 * older than `ttlMs`, and read again when its size or modification time changed. A template that
 * cannot be read or decoded is skipped (the next step answers), so a broken template never turns
 * a 404 into a 500.
 *
 * @module
 */
import { explainError, permissionHint, permissionProblem } from "../http/errors.ts";
import type { Logger } from "../log/logger.ts";
import { errorPage, escapeControls, escapeHtml, statusText } from "../pages/html.ts";
import { type ErrorResponder, splitUrl } from "../http/types.ts";

/** Options of {@link createErrorPages}. */
export interface ErrorPagesOptions {
  /** Folder holding `error_<code>.html` and `errors.html`; built-in pages only when absent. */
  templatesDir?: string;
  /** How long a read template is trusted before one `stat` checks it, in ms. Default 1000. */
  ttlMs?: number;
  /** Where unreadable templates are reported (once per change). */
  log?: Logger;
}

/** Templates larger than this are treated as broken. */
const MAX_TEMPLATE_BYTES = 1024 * 1024;
const PLACEHOLDER = /\{\{\s*(status_code|status_text|error_details)\s*\}\}/g;

type Field = "status_code" | "status_text" | "error_details";

interface Template {
  /** Literal text and placeholders, alternating (literals at even indexes). */
  parts: string[];
  size: number;
  mtimeMs: number;
}

interface Slot {
  /** null: the file is missing or broken. */
  template: Template | null;
  checkedAt: number;
  /** Last problem reported, so that it is logged once. */
  problem?: string;
}

/** Splits a template at its placeholders, once, so that rendering is a join. */
export function compileTemplate(text: string): string[] {
  const parts: string[] = [];
  let last = 0;
  for (const m of text.matchAll(PLACEHOLDER)) {
    parts.push(text.slice(last, m.index), m[1]);
    last = m.index + m[0].length;
  }
  parts.push(text.slice(last));
  return parts;
}

function render(parts: string[], values: Record<Field, string>): string {
  let out = parts[0];
  for (let i = 1; i < parts.length; i += 2) {
    out += escapeHtml(values[parts[i] as Field]) + parts[i + 1];
  }
  return out;
}

/** The explanation shown when the caller gives none. */
export function defaultDetails(status: number, request: Request): string {
  const path = () => {
    const raw = splitUrl(request.url).path;
    try {
      // Decoded for reading; a control character (a %0d%0a in the URL) stays percent-encoded
      // and never reaches the page raw.
      return escapeControls(decodeURIComponent(raw));
    } catch {
      return raw;
    }
  };
  switch (status) {
    case 400:
      return "The request could not be understood.";
    case 401:
      return "Authentication is required to access this resource.";
    case 403:
      return "You do not have permission to access this resource.";
    case 404:
      return `The requested URL ${path()} was not found on this server.`;
    case 405:
      return `The method ${request.method} is not allowed for ${path()}.`;
    case 429:
      return "Too many requests; try again later.";
    case 502:
      return "The upstream server could not be reached or sent an invalid answer.";
    case 503:
      return "The service is temporarily unavailable.";
    case 504:
      return "The upstream server did not answer in time.";
    default:
      return status >= 500 ? "The server could not complete the request." : "";
  }
}

/**
 * Creates the error answer builder for one configuration.
 *
 * @example
 * ```ts
 * const { errorResponse } = createErrorPages({ templatesDir: "./templates" });
 * errorResponse(404, request); // error_404.html, else errors.html, else built-in
 * ```
 */
export function createErrorPages(options: ErrorPagesOptions = {}): {
  errorResponse: ErrorResponder;
} {
  const dir = options.templatesDir?.replace(/\/+$/, "");
  const ttl = options.ttlMs ?? 1000;
  const slots = new Map<string, Slot>();
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let deniedReported = false;

  const load = (name: string, old: Template | null, slot: Slot | undefined): Slot => {
    const path = `${dir}/${name}`;
    const now = Date.now();
    try {
      const info = Deno.statSync(path);
      const mtimeMs = info.mtime?.getTime() ?? 0;
      if (old && old.size === info.size && old.mtimeMs === mtimeMs) {
        return { template: old, checkedAt: now };
      }
      if (!info.isFile) throw new Error("is not a file");
      if (info.size > MAX_TEMPLATE_BYTES) throw new Error("is larger than 1 MiB");
      const text = decoder.decode(Deno.readFileSync(path));
      return {
        template: { parts: compileTemplate(text), size: info.size, mtimeMs },
        checkedAt: now,
      };
    } catch (e) {
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
        return { template: null, checkedAt: now };
      }
      if (permissionProblem(e)) {
        // Said once for the folder, with the flag that covers every template in it.
        if (!deniedReported) {
          deniedReported = true;
          options.log?.warn(
            `error templates in ${dir} are not used: permission denied: read access to ${dir}; ${
              permissionHint("read", dir!)
            }`,
          );
        }
        return { template: null, checkedAt: now, problem: "permission denied" };
      }
      const problem = explainError(e);
      if (slot?.problem !== problem) {
        options.log?.warn(`error template ${path} is not used: ${problem}`);
      }
      return { template: null, checkedAt: now, problem };
    }
  };

  const template = (name: string): Template | null => {
    if (dir === undefined) return null;
    let slot = slots.get(name);
    if (slot === undefined || Date.now() - slot.checkedAt >= ttl) {
      slot = load(name, slot?.template ?? null, slot);
      slots.set(name, slot);
    }
    return slot.template;
  };

  const errorResponse: ErrorResponder = (status, request, headers, details) => {
    const h = new Headers(headers);
    h.set("content-type", "text/html; charset=utf-8");
    if (request.method === "HEAD") return new Response(null, { status, headers: h });
    const text = details ?? defaultDetails(status, request);
    let body: string | undefined;
    try {
      const t = template(`error_${status}.html`) ?? template("errors.html");
      if (t) {
        body = render(t.parts, {
          status_code: String(status),
          status_text: statusText(status),
          error_details: text,
        });
      }
    } catch (e) {
      options.log?.warn(`error template for ${status} failed: ${(e as Error).message}`);
    }
    return new Response(body ?? errorPage(status, text), { status, headers: h });
  };
  return { errorResponse };
}
