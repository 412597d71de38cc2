/**
 * The http-01 challenge responder: the CA fetches
 * `http://<domain>/.well-known/acme-challenge/<token>` on port 80 and expects the key
 * authorization as the body (RFC 8555 §8.3).
 *
 * @module
 */
import type { Logger } from "../../log/logger.ts";

/** The path prefix the CA asks under. */
export const CHALLENGE_PREFIX = "/.well-known/acme-challenge/";

/** Tokens being validated right now and their answers. */
export interface ChallengeResponder {
  /** Answers `token` with `keyAuthorization` until {@link remove}. */
  add(token: string, keyAuthorization: string): void;
  remove(token: string): void;
  /**
   * The answer for a challenge request, or null when `request` is not one (so the caller goes on
   * with its own routes). Unknown tokens get 404.
   */
  handle(request: Request): Response | null;
}

/** A responder with no tokens. */
export function createChallengeResponder(log?: Logger): ChallengeResponder {
  const tokens = new Map<string, string>();
  return {
    add: (token, keyAuthorization) => void tokens.set(token, keyAuthorization),
    remove: (token) => void tokens.delete(token),
    handle(request) {
      const url = request.url;
      const path = url.indexOf("/", url.indexOf("//") + 2);
      if (path < 0 || !url.startsWith(CHALLENGE_PREFIX, path)) return null;
      if (request.method !== "GET" && request.method !== "HEAD") return null;
      const query = url.indexOf("?", path);
      const token = url.slice(path + CHALLENGE_PREFIX.length, query < 0 ? undefined : query);
      const answer = tokens.get(token);
      log?.debug(`acme: http-01 request for token ${token} (${answer ? "known" : "unknown"})`);
      if (answer === undefined) return new Response("unknown challenge token\n", { status: 404 });
      return new Response(answer, { headers: { "content-type": "application/octet-stream" } });
    },
  };
}

/** Options of {@link serveChallenges}. */
export interface ChallengeListenerOptions {
  /** Address to bind. Default "0.0.0.0". */
  hostname?: string;
  /** Port to bind (`ssl.acme.http_port`). */
  port: number;
  responder: ChallengeResponder;
  /** Answers every request that is not a challenge (a redirect to HTTPS). */
  others: (request: Request) => Response;
}

/**
 * The plain-HTTP listener on `port`: challenges first, everything else to `others`. It is also
 * the `ssl.redirect_http` listener when that names the same port.
 */
export function serveChallenges(options: ChallengeListenerOptions): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve(
    { hostname: options.hostname ?? "0.0.0.0", port: options.port, onListen() {} },
    (request) => options.responder.handle(request) ?? options.others(request),
  );
}
