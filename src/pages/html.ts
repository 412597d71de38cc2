/**
 * Built-in HTML: error pages, the welcome page and folder listings. Kept as code so that a
 * compiled binary carries them.
 *
 * @module
 */
import { STATUS_CODES } from "node:http";

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Escapes text for HTML element content and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// deno-lint-ignore no-control-regex
const CONTROLS = /[\x00-\x1f\x7f]/g;

/** Percent-encodes control characters (CR, LF, NUL…) in text shown to a reader. */
export function escapeControls(text: string): string {
  return text.replace(
    CONTROLS,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`,
  );
}

/** The reason phrase of an HTTP status ("Not Found"). */
export function statusText(status: number): string {
  return STATUS_CODES[status] ?? "Unknown";
}

const STYLE = "body{font-family:system-ui,sans-serif;margin:3em auto;max-width:50em;" +
  "padding:0 1em;color:#222}h1{font-weight:600}table{border-collapse:collapse;width:100%}" +
  "td,th{padding:.25em .75em;text-align:left}td.n{text-align:right;font-variant-numeric:" +
  "tabular-nums}tr:nth-child(even){background:#f4f4f4}code{background:#f0f0f0;padding:0 .2em}";

/** A complete small HTML document. */
export function page(title: string, body: string): string {
  return `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width,initial-scale=1">` +
    `<title>${escapeHtml(title)}</title><style>${STYLE}</style></head>` +
    `<body>${body}</body></html>\n`;
}

/** The built-in error page for `status`. */
export function errorPage(status: number, details = ""): string {
  const text = statusText(status);
  return page(
    `${status} ${text}`,
    `<h1>${status} ${escapeHtml(text)}</h1>` +
      (details ? `<p>${escapeHtml(details)}</p>` : "") + `<hr><p>denoserve</p>`,
  );
}

/** The built-in error answer, for when no configured error page is at hand. */
export function builtInErrorResponse(
  status: number,
  request: Request,
  headers?: HeadersInit,
): Response {
  const h = new Headers(headers);
  h.set("content-type", "text/html; charset=utf-8");
  return new Response(request.method === "HEAD" ? null : errorPage(status), { status, headers: h });
}

/** Shown at `/` when the static folder does not exist. */
export function welcomePage(staticDir: string): string {
  return page(
    "denoserve",
    `<h1>denoserve is running</h1><p>There is no static folder yet. Put your files in ` +
      `<code>${escapeHtml(staticDir)}</code> (or set <code>http.static_dir</code> in ` +
      `<code>config.yaml</code>, or pass <code>--static DIR</code>) and reload this page.</p>`,
  );
}

/** One row of a folder listing. */
export interface ListingEntry {
  name: string;
  isDirectory: boolean;
  size: number;
  mtime: Date | null;
}

function humanSize(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) [n, i] = [n / 1024, i + 1];
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

/** An HTML listing of a folder: folders first, then files, each sorted by name. */
export function listingPage(urlPath: string, entries: ListingEntry[]): string {
  const sorted = [...entries].sort((a, b) =>
    a.isDirectory === b.isDirectory ? (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) : a
        .isDirectory
      ? -1
      : 1
  );
  const rows = sorted.map((e) => {
    const name = e.name + (e.isDirectory ? "/" : "");
    const href = encodeURIComponent(e.name) + (e.isDirectory ? "/" : "");
    const time = e.mtime ? e.mtime.toISOString().replace("T", " ").slice(0, 19) : "";
    return `<tr><td><a href="${escapeHtml(href)}">${escapeHtml(name)}</a></td>` +
      `<td class="n">${e.isDirectory ? "—" : humanSize(e.size)}</td><td>${time}</td></tr>`;
  }).join("");
  const up = urlPath === "/" ? "" : `<tr><td><a href="../">../</a></td><td></td><td></td></tr>`;
  return page(
    `Index of ${urlPath}`,
    `<h1>Index of ${escapeHtml(urlPath)}</h1><table><thead><tr><th>Name</th>` +
      `<th>Size</th><th>Modified (UTC)</th></tr></thead><tbody>${up}${rows}</tbody></table>`,
  );
}
