/**
 * No request may stop the server: a throw in any wrapper of the pipeline becomes a 500 and one
 * ERROR line, a WebSocket handler that fails after the upgrade closes its session, and a
 * listener that stops by itself ends the process with status 1.
 */
import { strict as assert } from "node:assert";
import { validate } from "../src/config/load.ts";
import type { App } from "../src/routes/build.ts";
import { withAccessLog } from "../src/routes/access_log.ts";
import { createErrorPages } from "../src/routes/error_pages.ts";
import { withErrorGuard } from "../src/routes/guard.ts";
import { withHsts } from "../src/routes/hsts.ts";
import type { Handler, RequestContext } from "../src/http/types.ts";
import { startServer } from "../src/server/server.ts";
import { makeCerts } from "./support/certs.ts";
import { hasCommand, spawnCli } from "./support/cli.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { type CapturedLog, captureLogger } from "./support/servers.ts";

const ctxFor = (path: string, secure = false): RequestContext => ({
  path,
  query: "",
  secure,
  remote: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
});

/** A body already read: copying such an answer (to change immutable headers) throws. */
async function spentAnswer(): Promise<Response> {
  const fetched = Response.redirect("http://x/", 302); // immutable headers
  const spent = new Response("used", fetched);
  await spent.text();
  Object.defineProperty(spent, "headers", { value: fetched.headers });
  return spent;
}

/** The pipeline as buildApp composes it, around `inner`. */
function pipeline(log: CapturedLog, inner: Handler, hsts?: string): Handler {
  const { errorResponse } = createErrorPages();
  const guard = withErrorGuard(log, errorResponse);
  return guard(withAccessLog(log)(guard(withHsts(hsts)(inner))));
}

Deno.test("guard: a throw in a route, in HSTS or in X-Request-Id is a 500 and one ERROR line", async () => {
  const cases: [string, Handler, string?][] = [
    ["a route that throws", () => {
      throw new Error("boom in route");
    }],
    ["a route that rejects", () => Promise.reject(new Error("boom async"))],
    ["HSTS on an answer that cannot be changed", () => spentAnswer(), "max-age=60"],
    ["X-Request-Id on an answer that cannot be changed", () => spentAnswer()],
  ];
  for (const [name, inner, hsts] of cases) {
    const log = captureLogger("INFO");
    const handler = pipeline(log, inner, hsts);
    const res = await handler(new Request("http://x/p"), ctxFor("/p", hsts !== undefined));
    assert.equal(res.status, 500, name);
    assert.match(await res.text(), /500 Internal Server Error/, name);
    const errors = log.lines.filter((l) => l.startsWith("ERROR request failed: GET /p"));
    assert.equal(errors.length, 1, `${name}: ${log.lines.join("\n")}`);
  }
});

Deno.test("guard: an access logger that throws still gets the client an answer", async () => {
  const log = captureLogger("INFO");
  const throwing = {
    ...log,
    access() {
      throw new Error("disk on fire");
    },
  };
  const { errorResponse } = createErrorPages();
  const guard = withErrorGuard(throwing, errorResponse);
  const handler = guard(withAccessLog(throwing)(guard(() => new Response("ok"))));
  const res = await handler(new Request("http://x/p"), ctxFor("/p"));
  assert.equal(res.status, 500);
  assert.ok(log.lines.some((l) => /^ERROR request failed: GET \/p: disk on fire/.test(l)));
});

Deno.test("guard: error pages that throw fall back to the built-in 500", async () => {
  const log = captureLogger("INFO");
  const guard = withErrorGuard(log, () => {
    throw new Error("template engine broke");
  });
  const res = await guard(() => {
    throw new Error("first");
  })(new Request("http://x/p"), ctxFor("/p"));
  assert.equal(res.status, 500);
  assert.match(await res.text(), /500 Internal Server Error/);
});

/** A server in this process answering with `handle`, through the same guard buildApp uses. */
async function serverWith(handle: Handler) {
  const { config } = validate({ server: { host: "127.0.0.1", port: 0 } });
  const log = captureLogger(config.logging.level);
  const { errorResponse } = createErrorPages();
  const app: App = {
    handle: withErrorGuard(log, errorResponse)(withAccessLog(log)(handle)),
    errorResponse,
    close() {},
  };
  const server = await startServer(config, log, app);
  return {
    server,
    log,
    url: server.url.replace(/\/$/, ""),
    async [Symbol.asyncDispose]() {
      await server.shutdown(2000);
    },
  };
}

/** Opens a WebSocket and resolves with how it ended (or "open" when it opened). */
function wsOutcome(url: string): Promise<string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.onclose = (e) => resolve(`closed ${e.code}`);
    ws.onerror = () => {};
  });
}

Deno.test("guard: a WebSocket handler that fails after the upgrade closes the session; the listener keeps accepting", async () => {
  await using s = await serverWith((request, ctx) => {
    const path = new URL(request.url).pathname;
    if (path === "/") return new Response("alive");
    const { response, socket } = Deno.upgradeWebSocket(request);
    ctx.upgrade = { response, socket, ended: Promise.resolve() };
    if (path === "/throws") throw new Error("after upgrade");
    return new Response("not the upgrade"); // path /wrong
  });
  const ws = s.url.replace("http", "ws");
  for (let i = 0; i < 3; i++) {
    assert.equal(await wsOutcome(`${ws}/throws`), "closed 1011");
    assert.equal(await wsOutcome(`${ws}/wrong`), "closed 1011");
    assert.equal(await (await fetch(`${s.url}/`)).text(), "alive");
  }
  assert.equal(s.log.lines.filter((l) => l.startsWith("ERROR request failed")).length, 6);
});

async function assertExitsWhenListenerKilled(tls: boolean, workers = 1) {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "site/a.txt": "a",
    "config.yaml": `server:\n  workers: ${workers}\n`,
  });
  const args = ["-c", `${dir.path}/config.yaml`, "-p", "0", "-s", `${dir.path}/site`];
  if (tls) {
    const certs = await makeCerts(dir.path);
    args.push("--ssl", "--cert", certs.cert, "--key", certs.key);
  }
  await using cli = await spawnCli(args);
  const port = new URL(cli.url).port;
  // Destroys the listening socket from outside, as a failing accept would end it.
  const kill = await new Deno.Command("ss", { args: ["-K", "-ltn", `sport = :${port}`] })
    .output();
  assert.equal(kill.code, 0, new TextDecoder().decode(kill.stderr));
  await cli.waitFor("stopped accepting connections");
  // The process must end by itself (SIGCONT changes nothing); bounded, then killed and failed.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const code = await Promise.race([
    cli.stop("SIGCONT"),
    new Promise<string>((r) => timer = setTimeout(() => r("still running"), 10_000)),
  ]);
  clearTimeout(timer);
  assert.equal(code, 1, cli.output());
  assert.match(
    cli.output(),
    new RegExp(`ERROR the listener on 127\\.0\\.0\\.1:${port} stopped accepting connections`),
  );
}

const ss = hasCommand("ss");
if (!ss) {
  console.log("listener tests ignored: no ss on PATH (apt-get install iproute2; .ci/run does)");
}

Deno.test({
  name: "listener: a plain listener that stops by itself ends the process with 1",
  ignore: !ss,
  fn: () => assertExitsWhenListenerKilled(false),
});

Deno.test({
  name: "listener: an HTTPS listener that stops by itself ends the process with 1",
  ignore: !ss,
  fn: () => assertExitsWhenListenerKilled(true),
});

Deno.test({
  name: "listener: with server.workers the process ends with 1 when the listeners stop",
  ignore: !ss,
  fn: () => assertExitsWhenListenerKilled(false, 2),
});
