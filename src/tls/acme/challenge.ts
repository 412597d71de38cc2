/**
 * The http-01 challenge responder: the CA fetches
 * `http://<domain>/.well-known/acme-challenge/<token>` on port 80 and expects the key
 * authorization as the body (RFC 8555 §8.3).
 *
 * The answers live in the storage's {@link ChallengeStore}: this process's memory with a folder,
 * Redis when several instances share it, so whichever instance the load balancer sends the CA to
 * answers.
 *
 * @module
 */
import type { Logger } from "../../log/logger.ts";
import type { ChallengeStore } from "./storage.ts";

/** The path prefix the CA asks under. */
export const CHALLENGE_PREFIX = "/.well-known/acme-challenge/";

/** Tokens being validated right now and their answers. */
export interface ChallengeResponder {
  /** Answers `token` with `keyAuthorization` (on every instance sharing the store) until {@link remove}. */
  add(token: string, keyAuthorization: string): Promise<void>;
  remove(token: string): Promise<void>;
  /**
   * The answer for a challenge request, or null when `request` is not one (so the caller goes on
   * with its own routes). Unknown tokens get 404.
   */
  handle(request: Request): Response | Promise<Response> | null;
}

/** A responder answering from `store`. */
export function createChallengeResponder(store: ChallengeStore, log?: Logger): ChallengeResponder {
  const reply = (token: string, answer: string | undefined) => {
    log?.debug(`acme: http-01 request for token ${token} (${answer ? "known" : "unknown"})`);
    if (answer === undefined) return new Response("unknown challenge token\n", { status: 404 });
    return new Response(answer, { headers: { "content-type": "application/octet-stream" } });
  };
  return {
    add: (token, keyAuthorization) => store.put(token, keyAuthorization),
    remove: (token) => store.delete(token),
    handle(request) {
      const url = request.url;
      const path = url.indexOf("/", url.indexOf("//") + 2);
      if (path < 0 || !url.startsWith(CHALLENGE_PREFIX, path)) return null;
      if (request.method !== "GET" && request.method !== "HEAD") return null;
      const query = url.indexOf("?", path);
      const token = url.slice(path + CHALLENGE_PREFIX.length, query < 0 ? undefined : query);
      const answer = store.get(token);
      if (!(answer instanceof Promise)) return reply(token, answer);
      return answer.then((a) => reply(token, a), (e) => {
        log?.warn(`acme: http-01 request for token ${token}: ${(e as Error).message}`);
        return new Response("challenge store unavailable\n", { status: 503 });
      });
    },
  };
}
