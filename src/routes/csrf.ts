/**
 * `csrf_protection` from the `security` extension: a double-submit cookie holding an
 * HMAC-signed token.
 *
 * @module
 */
import type { CsrfProtection } from "../config/schema.ts";
import { readCookie, setHeaders } from "../http/headers.ts";
import type { ErrorResponder, Handler, Wrapper } from "../http/types.ts";
import { underPrefix } from "../http/types.ts";

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);
const encoder = new TextEncoder();

function base64url(bytes: Uint8Array): string {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64url(text: string): Uint8Array<ArrayBuffer> | undefined {
  if (!/^[A-Za-z0-9_-]+$/.test(text)) return undefined;
  try {
    const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
}

/** Signs and checks tokens `nonce.signature` with HMAC-SHA-256 under one secret. */
export class CsrfTokens {
  readonly #key: Promise<CryptoKey>;

  constructor(secret: string) {
    this.#key = crypto.subtle.importKey(
      "raw",
      encoder.encode(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign", "verify"],
    );
  }

  /** A new token: 16 random bytes and their signature. */
  async issue(): Promise<string> {
    const nonce = base64url(crypto.getRandomValues(new Uint8Array(16)));
    const signature = await crypto.subtle.sign("HMAC", await this.#key, encoder.encode(nonce));
    return `${nonce}.${base64url(new Uint8Array(signature))}`;
  }

  /** Whether `token` was issued under this secret (compared in constant time by WebCrypto). */
  async verify(token: string): Promise<boolean> {
    const dot = token.indexOf(".");
    if (dot <= 0 || token.length > 200) return false;
    const signature = fromBase64url(token.slice(dot + 1));
    if (!signature) return false;
    const nonce = token.slice(0, dot);
    return crypto.subtle.verify("HMAC", await this.#key, signature, encoder.encode(nonce));
  }
}

/** Directives a shared cache acts on that `private` makes moot or that a private answer drops. */
const SHARED_ONLY = /^(public|private\s*=.*|s-maxage\s*=.*|proxy-revalidate)$/i;

/**
 * `Cache-Control` for an answer that hands out a new token: `private`, so that no shared cache
 * (a CDN, nginx's `proxy_cache`, a company proxy) keeps one visitor's token and gives it to the
 * next. What the answer lets the visitor's own browser do (`max-age`, `immutable`, `no-cache`…)
 * is kept; `public`, `s-maxage` and a `private="…"` that names fields are dropped. An answer
 * that is already `private` or `no-store` keeps its header as it is.
 */
export function privateCacheControl(value: string | null): string {
  if (value === null) return "private";
  const directives = value.split(",").map((d) => d.trim()).filter((d) => d !== "");
  if (directives.some((d) => /^(private|no-store)$/i.test(d))) return value;
  return ["private", ...directives.filter((d) => !SHARED_ONLY.test(d))].join(", ");
}

/**
 * Wraps `next` so that:
 *
 * - a safe request (GET, HEAD, OPTIONS) without a valid token cookie gets one, `SameSite=Lax`,
 *   `Secure` over TLS and readable by scripts (not `HttpOnly`), which must send it back in the
 *   header; that answer is made `private` ({@link privateCacheControl}) and says
 *   `Vary: Cookie`, since what it carries depends on the cookie the request did not have;
 * - an unsafe request outside `exempt_paths` is served only when the header equals the cookie
 *   and its signature verifies; otherwise it is answered with 403 from the error pages.
 *
 * A cross-site page can make the browser send the cookie but cannot read it, so it cannot
 * write the header; the signature keeps a cookie planted by a sibling subdomain from passing.
 */
export function withCsrf(config: CsrfProtection, errorResponse: ErrorResponder): Wrapper {
  return (next: Handler): Handler => {
    if (!config.enabled) return next;
    const tokens = new CsrfTokens(config.secret!);
    const cookieName = config.cookie_name;
    const headerName = config.header_name.toLowerCase();
    const exempt = config.exempt_paths;
    const cookieOf = (token: string, secure: boolean) =>
      `${cookieName}=${token}; Path=/; SameSite=Lax${secure ? "; Secure" : ""}`;

    return async (request, ctx) => {
      const cookie = readCookie(request.headers.get("cookie"), cookieName);
      if (SAFE.has(request.method)) {
        if (cookie !== undefined && await tokens.verify(cookie)) return next(request, ctx);
        const [token, response] = await Promise.all([tokens.issue(), next(request, ctx)]);
        if (ctx.upgrade) return response;
        return setHeaders(response, [
          ["set-cookie", cookieOf(token, ctx.secure)],
          ["cache-control", privateCacheControl(response.headers.get("cache-control"))],
          ["vary", "Cookie"],
        ]);
      }
      if (exempt.some((p) => underPrefix(ctx.path, p))) return next(request, ctx);
      const sent = request.headers.get(headerName);
      if (sent !== null && cookie !== undefined && sent === cookie && await tokens.verify(sent)) {
        return next(request, ctx);
      }
      await request.body?.cancel();
      return errorResponse(
        403,
        request,
        undefined,
        "The request's CSRF token is missing or invalid.",
      );
    };
  };
}
