/**
 * The app of a configuration called in process, without a socket (as Hono's `app.request()`):
 * for tests about routing, where the network adds nothing.
 *
 * @module
 */
import { bootLoaded } from "../../src/app/boot.ts";
import { validate } from "../../src/config/load.ts";
import type { Config } from "../../src/config/schema.ts";
import type { RequestContext } from "../../src/http/types.ts";
import { splitUrl } from "../../src/http/types.ts";
import { type Answer, answerOf } from "./clients.ts";
import { type CapturedLog, captureLogger } from "./servers.ts";

/** Where in-process requests come from. */
export const CLIENT: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 40000 };

/** Statuses whose answers have no body (the Response constructor refuses one). */
const NULL_BODY = new Set([204, 205, 304]);

/** The app of one configuration; dispose it to stop its timers. */
export interface TestApp extends Disposable {
  config: Config;
  log: CapturedLog;
  /**
   * Answers `input` (a Request, a URL, or a path on http://localhost), with its body read, so
   * that the access line is in `log.lines` when it resolves. Redirects are never followed.
   */
  request(input: Request | string, init?: RequestInit): Promise<Response>;
  /** {@link request} read as {@link get} reads a fetch: status, headers and body text. */
  get(input: Request | string, init?: RequestInit): Promise<Answer>;
}

/**
 * Builds the app for `raw` configuration as {@link startTestServer} would (merged over
 * 127.0.0.1 and port 0, otherwise the shipped defaults; access log on, to the test's logger;
 * through the start's boot path, its checks and warnings included).
 */
export async function testApp(raw: Record<string, unknown>): Promise<TestApp> {
  const merged = structuredClone(raw) as Record<string, Record<string, unknown>>;
  merged.server = { host: "127.0.0.1", port: 0, ...merged.server };
  const loaded = validate(merged);
  const log = captureLogger(loaded.config.logging.level);
  const { config, app } = await bootLoaded(loaded, log);
  const request = async (input: Request | string, init?: RequestInit) => {
    const req = typeof input === "string"
      ? new Request(new URL(input, "http://localhost"), init)
      : new Request(input, init);
    const { path, query } = splitUrl(req.url);
    const ctx: RequestContext = {
      path,
      query,
      remote: CLIENT,
      secure: req.url.startsWith("https:"),
    };
    const response = await app.handle(req, ctx);
    // Read whole, as a client would, then hand the test a response it can read at leisure.
    const empty = req.method === "HEAD" || NULL_BODY.has(response.status);
    const body = empty || response.body === null ? null : await response.arrayBuffer();
    if (empty) await response.body?.cancel();
    log.flush();
    return new Response(body, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  };
  return {
    config,
    log,
    request,
    get: async (input, init) => answerOf(await request(input, init)),
    [Symbol.dispose]() {
      app.close();
      log.flush();
    },
  };
}

/** One request to the app of `raw` configuration (see {@link testApp}). */
export async function appRequest(
  raw: Record<string, unknown>,
  input: Request | string,
  init?: RequestInit,
): Promise<Response> {
  using app = await testApp(raw);
  return await app.request(input, init);
}
