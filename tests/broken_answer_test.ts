/**
 * An answer whose body breaks off after it has begun (a backend dying mid-stream) resets the
 * client's stream, over HTTP/2 and over HTTP/1.1 through TLS, and the server goes on serving: the
 * runtime's `completed` promise rejects for such an answer and must not go unhandled (it ended the
 * process).
 */
import assert from "node:assert/strict";
import { serveBackend } from "./support/backends.ts";
import { makeCerts } from "./support/certs.ts";
import { curl } from "./support/cli.ts";
import { tempDir } from "./support/files.ts";
import { startTestServer } from "./support/servers.ts";

Deno.test("a proxied answer that breaks off mid-stream resets the client's stream over h2 and h1, and the server serves on", async () => {
  await using backend = serveBackend((req) => {
    if (new URL(req.url).pathname === "/ok") return new Response("fine");
    let part = 0;
    return new Response(
      new ReadableStream({
        pull(ctl) {
          if (part === 3) return ctl.error(new Error("the backend dies"));
          ctl.enqueue(new TextEncoder().encode(`part ${++part}\n`));
        },
      }),
    );
  });
  await using dir = await tempDir();
  const certs = await makeCerts(dir.path);
  await using s = await startTestServer({
    http: { static_dir: dir.path },
    ssl: { enabled: true, cert_file: certs.cert, key_file: certs.key },
    server: { reverse_proxy: [{ path: "/", host: "127.0.0.1", port: backend.port }] },
  });
  const url = `https://localhost:${s.server.addr.port}`;
  for (const version of ["--http2", "--http1.1"]) {
    const broken = await curl([version, "--cacert", certs.ca, `${url}/stream`]);
    assert.notEqual(broken.code, 0, `${version}: the break is visible: ${broken.stdout}`);
    const ok = await curl([version, "--cacert", certs.ca, `${url}/ok`]);
    assert.equal(ok.stdout, "fine", version);
  }
});
