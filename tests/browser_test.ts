/**
 * A real browser: headless Chromium loads a page from denoserve over HTTPS (HTTP/2 by ALPN), and
 * the page opens a WebSocket through the reverse proxy to an echo backend. The page reports what
 * it saw with a POST that `proxy_pass` carries to the test's backend.
 */
import assert from "node:assert/strict";
import { unsupported } from "../src/app/validate.ts";
import { serveBackend } from "./support/backends.ts";
import { makeCerts } from "./support/certs.ts";
import { hasCommand } from "./support/cli.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { startTestServer } from "./support/servers.ts";

const chromium = hasCommand("chromium") ?? hasCommand("chromium-browser");
if (!chromium) {
  console.log(
    "browser tests ignored: no chromium on PATH (apt-get install chromium; .ci/run does)",
  );
}

const PAGE = `<!doctype html>
<meta charset="utf-8"><title>denoserve browser check</title>
<script>
(async () => {
  const nav = performance.getEntriesByType("navigation")[0];
  const result = { protocol: nav ? nav.nextHopProtocol : null, scheme: location.protocol };
  if (new URLSearchParams(location.search).has("file")) {
    try {
      const r = await fetch("/file.txt?" + Date.now());
      result.file = { status: r.status, text: await r.text() };
      const entry = performance.getEntriesByType("resource").find((e) => e.name.includes("/file.txt"));
      result.fileProtocol = entry ? entry.nextHopProtocol : null;
    } catch (e) {
      result.error = String(e);
    }
  }
  if (new URLSearchParams(location.search).has("ws")) {
    try {
      result.echo = await new Promise((resolve, reject) => {
        const ws = new WebSocket("wss://" + location.host + "/ws/echo");
        ws.onopen = () => ws.send("hello through the proxy");
        ws.onmessage = (e) => { resolve(e.data); ws.close(); };
        ws.onerror = () => reject(new Error("websocket error"));
        setTimeout(() => reject(new Error("websocket timeout")), 8000);
      });
    } catch (e) {
      result.error = String(e);
    }
  }
  await fetch("/report/", { method: "POST", body: JSON.stringify(result) });
})();
</script>`;

/** The test's backend: a WebSocket echo at /echo and the page's report at /report/. */
function backend() {
  const reports: Record<string, unknown>[] = [];
  const waiting: (() => void)[] = [];
  const server = serveBackend(async (req) => {
    const path = new URL(req.url).pathname;
    if (path.endsWith("/echo") && req.headers.get("upgrade") === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (e) => socket.send(`echo: ${e.data}`);
      return response;
    }
    if (path.startsWith("/report")) {
      reports.push(JSON.parse(await req.text()));
      for (const w of waiting.splice(0)) w();
      return new Response("thanks");
    }
    return new Response("not here", { status: 404 });
  });
  return {
    port: server.port,
    reports,
    /** Settles when `n` reports have come. */
    async reportsOf(n: number, ms: number) {
      const end = Date.now() + ms;
      while (reports.length < n) {
        if (Date.now() > end) throw new Error(`${reports.length} of ${n} reports in ${ms} ms`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return reports;
    },
    async report(ms: number) {
      if (!reports.length) {
        await new Promise<void>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error(`no report from the page in ${ms} ms`)), ms);
          waiting.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
      return reports[0];
    },
    [Symbol.asyncDispose]: () => server[Symbol.asyncDispose](),
  };
}

/** Runs headless Chromium on `url` until `done` settles; returns its stderr when it fails. */
async function withChromium<T>(
  url: string,
  done: () => Promise<T>,
  extraArgs: string[] = [],
  /** Accept any certificate (the test CA is not in the browser's store). Default true. */
  anyCertificate = true,
): Promise<T> {
  await using profile = await tempDir();
  const child = new Deno.Command(chromium!, {
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
      // The test CA is not in the browser's store; the certificate is still a valid localhost one.
      ...(anyCertificate ? ["--ignore-certificate-errors"] : []),
      `--user-data-dir=${profile.path}`,
      ...extraArgs,
      url,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  try {
    return await done();
  } catch (e) {
    child.kill("SIGKILL");
    throw new Error(`${(e as Error).message}\nchromium said:\n${(await stderr).slice(-2000)}`);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await stderr.catch(() => "");
  }
}

async function browserSite(dir: string, backendPort: number, ssl: Record<string, unknown> = {}) {
  await writeFiles(dir, { "site/index.html": PAGE, "site/file.txt": "a file over QUIC" });
  const certs = await makeCerts(dir);
  return await startTestServer({
    version: 2,
    http: { static_dir: `${dir}/site` },
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key, ...ssl },
    server: {
      reverse_proxy: [{ path: "/ws", host: "127.0.0.1", port: backendPort }],
    },
    extensions: [{
      type: "routing",
      config: {
        regex_locations: { "^~/report/": { proxy_pass: `http://127.0.0.1:${backendPort}` } },
      },
    }],
  });
}

Deno.test({
  name: "chromium loads a page over HTTPS with HTTP/2",
  ignore: !chromium,
  async fn() {
    await using dir = await tempDir();
    await using echo = backend();
    await using srv = await browserSite(dir.path, echo.port);
    const url = `https://localhost:${srv.server.addr.port}/`;
    const report = await withChromium(url, () => echo.report(30_000));
    console.log(`chromium: ${JSON.stringify(report)}`);
    assert.equal(report.scheme, "https:");
    assert.equal(report.protocol, "h2");
  },
});

const proxyMissing = (() => {
  const found = unsupported(
    {
      server: { reverse_proxy: [{}], workers: 1 },
      extensions: [],
      ssl: {},
    } as unknown as Parameters<typeof unsupported>[0],
  );
  return found.includes("server.reverse_proxy");
})();
if (chromium && proxyMissing) {
  console.log(
    "WebSocket browser test ignored: server.reverse_proxy is not supported by this build",
  );
}

Deno.test({
  name: "chromium opens a WebSocket through the reverse proxy and gets its echo",
  ignore: !chromium || proxyMissing,
  async fn() {
    await using dir = await tempDir();
    await using echo = backend();
    await using srv = await browserSite(dir.path, echo.port);
    const url = `https://localhost:${srv.server.addr.port}/?ws`;
    const report = await withChromium(url, () => echo.report(30_000));
    console.log(`chromium: ${JSON.stringify(report)}`);
    assert.equal(report.error, undefined);
    assert.equal(report.protocol, "h2");
    assert.equal(report.echo, "echo: hello through the proxy");
  },
});

/** Base64 of the SHA-256 of a certificate's SubjectPublicKeyInfo, as Chromium's SPKI list wants. */
async function spkiHash(certFile: string): Promise<string> {
  const { X509Certificate, createHash } = await import("node:crypto");
  const cert = new X509Certificate(await Deno.readTextFile(certFile));
  const spki = cert.publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

Deno.test({
  name: "chromium loads a page and a file over HTTP/3 (QUIC) when forced onto it",
  ignore: !chromium,
  async fn() {
    await using dir = await tempDir();
    await using echo = backend();
    await using srv = await browserSite(dir.path, echo.port, { http3: true });
    const port = srv.server.addr.port;
    assert.equal(srv.server.http3Addr?.port, port);
    // By address: for QUIC, Chromium takes localhost as ::1 only, where the test server (on
    // 127.0.0.1) is not; the certificate names 127.0.0.1 too.
    const url = `https://127.0.0.1:${port}/?file`;
    const report = await withChromium(url, () => echo.report(30_000), [
      "--enable-quic",
      `--origin-to-force-quic-on=127.0.0.1:${port}`,
      `--ignore-certificate-errors-spki-list=${await spkiHash(srv.config.ssl.cert_file!)}`,
    ]);
    console.log(`chromium: ${JSON.stringify(report)}`);
    assert.equal(report.error, undefined);
    assert.equal(report.protocol, "h3");
    assert.equal(report.fileProtocol, "h3");
    assert.deepEqual(report.file, { status: 200, text: "a file over QUIC" });
    srv.log.flush();
    const lines = srv.log.lines.filter((l) => l.startsWith("ACCESS "));
    assert.ok(lines.some((l) => /"GET \/file\.txt\S* HTTP\/3" 200/.test(l)), lines.join("\n"));
    assert.ok(
      lines.some((l) => /"POST \/report\/ HTTP\/3" 200/.test(l)),
      "the report went up over h3",
    );
  },
});

/** A page that reports its host and its site's /who.txt, then goes to `next` when given. */
const SITE_PAGE = `<!doctype html>
<meta charset="utf-8"><title>site check</title>
<script>
(async () => {
  const nav = performance.getEntriesByType("navigation")[0];
  const who = await (await fetch("/who.txt")).text();
  await fetch("/report/", {
    method: "POST",
    body: JSON.stringify({ host: location.hostname, who, protocol: nav.nextHopProtocol }),
  });
  const next = new URLSearchParams(location.search).get("next");
  if (next) location.href = next;
})();
</script>`;

Deno.test({
  name:
    "chromium loads two sites from one server by name (--host-resolver-rules), each with its own certificate trusted by key",
  ignore: !chromium,
  async fn() {
    await using dir = await tempDir();
    await using echo = backend();
    const d = dir.path;
    await writeFiles(d, {
      "a/index.html": SITE_PAGE,
      "a/who.txt": "site a",
      "b/index.html": SITE_PAGE,
      "b/who.txt": "site b",
      "main/who.txt": "default site",
    });
    const main = await makeCerts(d, { name: "main", names: ["main.test"] });
    const a = await makeCerts(d, { name: "a", names: ["a.test"] });
    const b = await makeCerts(d, { name: "b", names: ["b.test"] });
    const report = [{
      type: "routing",
      config: {
        regex_locations: { "^~/report/": { proxy_pass: `http://127.0.0.1:${echo.port}` } },
      },
    }];
    await using srv = await startTestServer({
      version: 2,
      http: { static_dir: `${d}/main` },
      ssl: { enabled: true, cert_file: main.cert, key_file: main.key },
      sites: [
        {
          names: ["a.test"],
          http: { static_dir: `${d}/a` },
          ssl: { cert_file: a.cert, key_file: a.key },
          extensions: report,
        },
        {
          names: ["b.test"],
          http: { static_dir: `${d}/b` },
          ssl: { cert_file: b.cert, key_file: b.key },
          extensions: report,
        },
      ],
    });
    const port = srv.server.addr.port;
    const next = encodeURIComponent(`https://b.test:${port}/`);
    // Only the two sites' keys are trusted: the default certificate would be refused.
    const reports = await withChromium(
      `https://a.test:${port}/?next=${next}`,
      () => echo.reportsOf(2, 30_000),
      [
        "--host-resolver-rules=MAP a.test 127.0.0.1, MAP b.test 127.0.0.1",
        `--ignore-certificate-errors-spki-list=${await spkiHash(a.cert)},${await spkiHash(b.cert)}`,
      ],
      false,
    );
    console.log(`chromium: ${JSON.stringify(reports)}`);
    assert.deepEqual(reports, [
      { host: "a.test", who: "site a", protocol: "h2" },
      { host: "b.test", who: "site b", protocol: "h2" },
    ]);
    srv.log.flush();
    const access = srv.log.lines.filter((l) => l.includes("GET /who.txt"));
    assert.ok(access.some((l) => / site=a\.test /.test(l)), access.join("\n"));
    assert.ok(access.some((l) => / site=b\.test /.test(l)), access.join("\n"));
  },
});
