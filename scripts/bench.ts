/**
 * Side-by-side benchmark: denoserve, nginx and Caddy (and a bare Deno.serve as the runtime's
 * ceiling) on loopback, the same files and workloads, several rounds, median ratios.
 *
 *   deno task bench            full run, writes bench/results.md
 *   deno task bench --quick    one short round of each main workload against denoserve, nginx
 *                              and Caddy, under a minute, prints only (no npm peers, ceilings,
 *                              extension features, Connections or HTTP/3 sections)
 *   deno task bench --only X   the workloads and sections whose name contains X
 *
 * Installs wrk, nginx-light, caddy and nghttp2-client (h2load) with apt-get when missing, and the
 * Node static servers of PEERS with npm into the temporary folder (never the project's
 * dependencies).
 *
 * @module
 */
import { parseArgs } from "node:util";

const args = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    rounds: { type: "string" },
    duration: { type: "string" },
    only: { type: "string" },
    workers: { type: "string", default: "1" },
  },
});
const QUICK = args.values.quick;
const ROUNDS = Number(args.values.rounds ?? (QUICK ? 1 : 3));
const DURATION = Number(args.values.duration ?? (QUICK ? 1 : 4));
/**
 * Whether a section, and the servers only it uses, runs: `--only` names it, or the run is not
 * `--quick` (which keeps the main workloads against denoserve, nginx and Caddy, under a minute).
 */
const runs = (section: string) => args.values.only ? section.includes(args.values.only) : !QUICK;
/** Whether the proxy directives section runs: by its name or by one of its workloads' names. */
const runsDirectives = () =>
  runs(DIRECTIVES_SECTION) ||
  [HEADER_RULES, GZIP_JSON].some((w) => args.values.only && w.includes(args.values.only));
const CONNECTIONS = 50;
const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const DENO = Deno.execPath();

/**
 * The static servers JavaScript users pick from npm, run on Node, pinned. sirv-cli is the third:
 * a production file server (files indexed at start, as the Svelte and Vite templates use it),
 * where live-server is a development server that watches files and injects a reload script.
 * Compression off or moot (wrk sends no Accept-Encoding), ETags on as nginx and Caddy send them,
 * request logging off.
 */
const PEERS = [
  {
    name: "serve",
    pkg: "serve@14.2.7",
    bin: "serve",
    args: (port: number, site: string) => [
      "-l",
      `tcp://127.0.0.1:${port}`,
      "--no-request-logging",
      "--no-compression",
      "--no-clipboard",
      "--no-port-switching",
      site,
    ],
  },
  {
    name: "http-server",
    pkg: "http-server@14.1.1",
    bin: "http-server",
    args: (port: number, site: string) => [site, "-a", "127.0.0.1", "-p", String(port), "-s"],
  },
  {
    name: "sirv",
    pkg: "sirv-cli@3.0.1",
    bin: "sirv",
    args: (port: number, site: string) => [
      site,
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      "--etag",
      "--quiet",
    ],
  },
];
const PEER_NAMES = new Set(PEERS.map((p) => p.name));

// ---------------------------------------------------------------- setup

async function sh(cmd: string[], opts: { cwd?: string; quiet?: boolean } = {}) {
  const out = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    cwd: opts.cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success && !opts.quiet) throw new Error(`${cmd.join(" ")} failed:\n${text}`);
  return { ok: out.success, text };
}

async function ensurePackages() {
  const want: [string, string][] = [
    ["wrk", "wrk"],
    ["nginx", "nginx-light"],
    ["caddy", "caddy"],
    ["h2load", "nghttp2-client"],
    ["openssl", "openssl"],
  ];
  const missing: string[] = [];
  for (const [bin, pkg] of want) {
    const found = await sh(["sh", "-c", `command -v ${bin} || test -x /usr/sbin/${bin}`], {
      quiet: true,
    });
    if (!found.ok) missing.push(pkg);
  }
  if (missing.length === 0) return;
  console.error(`installing ${missing.join(" ")} …`);
  await sh(["apt-get", "update", "-qq"]);
  await sh(["apt-get", "install", "-y", "-qq", ...missing]);
}

/** Installs PEERS into WORK/npm; false (and the peers are skipped) without npm or the registry. */
async function installPeers(): Promise<boolean> {
  const r = await sh([
    "npm",
    "install",
    "--prefix",
    `${WORK}/npm`,
    "--no-audit",
    "--no-fund",
    "--silent",
    ...PEERS.map((p) => p.pkg),
  ], { quiet: true }).catch((e) => ({ ok: false, text: String(e) }));
  if (!r.ok) console.error(`npm peers skipped: ${r.text.trim()}`);
  return r.ok;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function makeCerts(dir: string) {
  const o = (a: string[]) => sh(["openssl", ...a], { cwd: dir });
  await o(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
  await o([
    "req",
    "-x509",
    "-new",
    "-key",
    "ca.key",
    "-subj",
    "/CN=bench CA",
    "-days",
    "2",
    "-out",
    "ca.pem",
  ]);
  await o(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "key.pem"]);
  await o(["req", "-new", "-key", "key.pem", "-subj", "/CN=localhost", "-out", "leaf.csr"]);
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
  );
  await o([
    "x509",
    "-req",
    "-in",
    "leaf.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    "ext.cnf",
    "-out",
    "cert.pem",
  ]);
}

// ---------------------------------------------------------------- servers

type Variant = "log" | "2 workers" | "h3" | "features" | "sites" | "directives";

interface Server {
  name: string;
  http: number;
  https?: number;
  process: Deno.ChildProcess;
  /** A second instance with access logging on, or with two workers, for those workloads. */
  variant?: Variant;
  /** For the bare Deno.serve ceilings: the workloads it answers. */
  ceilingOf?: string[];
  /** A Node static server from npm: the static workloads only. */
  peer?: boolean;
}

async function waitReady(url: string, ms = 10_000): Promise<number> {
  const start = performance.now();
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(`${WORK}/ca.pem`)] });
  try {
    while (performance.now() - start < ms) {
      try {
        const r = await fetch(url, { client });
        await r.body?.cancel();
        return performance.now() - start;
      } catch {
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  } finally {
    client.close();
  }
  throw new Error(`${url} did not answer within ${ms} ms`);
}

/** Starts a server with its output going straight to a file (never through a pipe we read). */
function spawn(cmd: string[], env: Record<string, string> = {}, log = "/dev/null") {
  return new Deno.Command("sh", {
    args: ["-c", 'exec "$@" >"$BENCH_LOG" 2>&1', "sh", ...cmd],
    env: { ...env, BENCH_LOG: log },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

let WORK = "";
let BACKEND = 0;
/** A WebSocket echo backend (a Deno process), for the WebSockets section. */
let WS_BACKEND = 0;
let wsBackend: Deno.ChildProcess | undefined;

async function startNginx(name: string, conf: string): Promise<Deno.ChildProcess> {
  const path = `${WORK}/${name}.conf`;
  await Deno.writeTextFile(path, conf);
  return spawn(["nginx", "-p", WORK, "-c", path, "-e", `${WORK}/${name}-error.log`]);
}

function nginxConf(http: number, https: number, accessLog: boolean, pid: string) {
  return `worker_processes 1;
daemon off;
pid ${WORK}/${pid}.pid;
events { worker_connections 19000; }
http {
  include /etc/nginx/mime.types;
  access_log ${accessLog ? `${WORK}/nginx-access.log` : "off"};
  sendfile on; tcp_nopush on; keepalive_requests 1000000;
  open_file_cache max=1000 inactive=20s; open_file_cache_valid 1s;
  upstream backend { server 127.0.0.1:${BACKEND}; keepalive 64; }
  server {
    listen 127.0.0.1:${http};
    listen 127.0.0.1:${https} ssl http2;
    ssl_certificate ${WORK}/cert.pem; ssl_certificate_key ${WORK}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    root ${WORK}/site;
    location /proxy/ {
      proxy_pass http://backend/; proxy_http_version 1.1; proxy_set_header Connection "";
    }
    location /proxygz/ {
      proxy_pass http://backend/; proxy_http_version 1.1; proxy_set_header Connection "";
      gzip on; gzip_comp_level ${GZIP_LEVEL}; gzip_types application/json; gzip_proxied any;
    }
    location /ws/ {
      proxy_pass http://127.0.0.1:${WS_BACKEND}/; proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade";
      proxy_read_timeout 600s;
    }
  }
}
`;
}

/** The bare `Deno.serve` servers each workload's ceiling is measured with. */
async function startCeilings(servers: Server[]) {
  // The runtime's ceiling: a bare Deno.serve answering a constant in-memory body the fastest way
  // it can, a prebuilt Response cloned (about 1.1x faster for 1 KiB and 2.4x for 100 KiB than a
  // new Response per request), and without looking at the request: one process per size.
  await Deno.writeTextFile(
    `${WORK}/bare.ts`,
    `const body = new Uint8Array(Number(Deno.args[1])).fill(120);
const mode = (Deno.args[2] ?? "").split(",");
// As a file server: it reads what any file server that honours conditional and range requests
// must read of each request, and answers with the headers a file's answer carries.
const reads = mode.includes("reads");
const answer = new Response(body, {
  headers: reads
    ? {
      "content-type": "text/html; charset=utf-8",
      etag: '"6b17059e-400"',
      "last-modified": "Mon, 07 Dec 2026 19:14:38 GMT",
      "accept-ranges": "bytes",
      vary: "Accept-Encoding",
    }
    : { "content-type": "application/octet-stream" },
});
const READ = ["host", "range", "if-match", "if-unmodified-since", "if-none-match", "if-modified-since", "accept-encoding"];
const tls = mode.includes("tls")
  ? { cert: Deno.readTextFileSync("${WORK}/cert.pem"), key: Deno.readTextFileSync("${WORK}/key.pem") }
  : {};
let seen = 0;
const backend = mode.includes("proxy") ? \`http://127.0.0.1:\${Deno.args[3]}/x\` : "";
const handler = (request: Request) => {
  // A proxy the shortest way the runtime offers: its own fetch, the answer passed on as it is.
  if (backend) return fetch(backend, { method: request.method, headers: request.headers });
  if (reads) {
    seen += request.url.length + request.method.length;
    for (const name of READ) seen += (request.headers.get(name) ?? "").length;
  }
  return answer.clone();
};
if (mode.includes("conn")) {
  // The runtime's server for one connection, on connections accepted in JavaScript, as denoserve
  // serves them (every connection has to be seen for its timeouts and limits), with nothing else:
  // the floor of that design. TCP_NODELAY comes from the listener, as in denoserve.
  const internals = (Deno as any)[(Deno as any).internal];
  const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(Deno.args[0]) });
  const { setListenerNoDelay } = await import("${ROOT}/src/server/sockets.ts");
  setListenerNoDelay(Number(Deno.args[0]));
  for await (const conn of listener) {
    internals.serveHttpOnConnection(conn, undefined, handler, () => new Response(null, { status: 500 }), () => {})
      .finished.catch(() => {});
  }
}
Deno.serve({ hostname: "127.0.0.1", port: Number(Deno.args[0]), onListen() {}, ...tls }, handler);
// As denoserve does: TCP_NODELAY on the TLS listener, which accepted sockets inherit (Deno.serve
// leaves Nagle on there), so that the ceiling is not held back by delayed ACKs.
if (mode.includes("tls")) {
  const { setListenerNoDelay } = await import("${ROOT}/src/server/sockets.ts");
  setListenerNoDelay(Number(Deno.args[0]));
}
`,
  );
  for (const [workload, size] of [["1 KiB file", 1024], ["100 KiB file", 100 * 1024]] as const) {
    const port = await freePort();
    servers.push({
      name: "bare Deno.serve",
      http: port,
      process: spawn([DENO, "run", "-A", `${WORK}/bare.ts`, String(port), String(size)]),
      ceilingOf: workload === "1 KiB file" ? [workload, CLOSE] : [workload],
    });
  }
  // The runtime's server for one connection alone: the floor of accepting connections ourselves.
  const connPort = await freePort();
  servers.push({
    name: PER_CONNECTION,
    http: connPort,
    process: spawn([DENO, "run", "-A", `${WORK}/bare.ts`, String(connPort), "1024", "conn"]),
    ceilingOf: [CLOSE],
  });
  // The same doing per request what any file server must (its reads and its answer's headers):
  // the floor of a file server's per-request cost on this runtime, plain and over TLS.
  const readsPort = await freePort();
  servers.push({
    name: AS_FILE_SERVER,
    http: readsPort,
    process: spawn([DENO, "run", "-A", `${WORK}/bare.ts`, String(readsPort), "1024", "reads"]),
    ceilingOf: ["1 KiB file"],
  });
  const tlsReadsPort = await freePort();
  servers.push({
    name: AS_FILE_SERVER,
    http: tlsReadsPort,
    https: tlsReadsPort,
    process: spawn([
      DENO,
      "run",
      "-A",
      `${WORK}/bare.ts`,
      String(tlsReadsPort),
      "1024",
      "tls,reads",
    ]),
    ceilingOf: [HTTPS_KEEPALIVE],
  });
  // The runtime's own client as a proxy: a floor for what a proxy written on it costs.
  const proxyPort = await freePort();
  servers.push({
    name: "bare Deno.serve",
    http: proxyPort,
    process: spawn([
      DENO,
      "run",
      "-A",
      `${WORK}/bare.ts`,
      String(proxyPort),
      "0",
      "proxy",
      String(BACKEND),
    ]),
    ceilingOf: ["reverse proxy 1 KiB"],
  });
  // New TLS handshakes: the runtime's own TLS with the same certificate.
  const tlsPort = await freePort();
  servers.push({
    name: "bare Deno.serve",
    http: tlsPort,
    https: tlsPort,
    process: spawn([DENO, "run", "-A", `${WORK}/bare.ts`, String(tlsPort), "1024", "tls"]),
    ceilingOf: [HANDSHAKES, HTTPS_KEEPALIVE, HTTP2],
  });
}

async function startServers(peers: boolean): Promise<{ servers: Server[]; startupMs: number }> {
  BACKEND = await freePort();
  await startNginx(
    "backend",
    `worker_processes 1;
daemon off;
pid ${WORK}/backend.pid;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  include /etc/nginx/mime.types;
  server {
    listen 127.0.0.1:${BACKEND};
    location / { return 200 "${"x".repeat(1024)}"; }
    location = /100k.json { root ${WORK}/site; }
  }
}
`,
  );
  WS_BACKEND = await freePort();
  await Deno.writeTextFile(
    `${WORK}/ws-backend.ts`,
    `Deno.serve({ hostname: "127.0.0.1", port: ${WS_BACKEND}, onListen() {} }, (r) => {
  const { socket, response } = Deno.upgradeWebSocket(r);
  socket.onmessage = (e) => socket.send(e.data);
  return response;
});`,
  );
  wsBackend = spawn([DENO, "run", "-A", `${WORK}/ws-backend.ts`]);
  const servers: Server[] = [];

  // denoserve
  const dsHttp = await freePort();
  const dsHttps = await freePort();
  const dsConf = (
    port: number,
    https: boolean,
    access: boolean,
    workers: string,
    http3 = false,
    extensions = "",
    serverExtra = "",
    ruleExtra = "",
  ) =>
    `${extensions}
server:
  host: 127.0.0.1
  port: ${port}
  workers: ${workers}
${serverExtra}  reverse_proxy:
    - path: /proxy
      host: 127.0.0.1
      port: ${BACKEND}
${ruleExtra}    - path: /ws
      host: 127.0.0.1
      port: ${WS_BACKEND}
      websocket: true
http:
  static_dir: ${WORK}/site
ssl:
  enabled: ${https}
  cert_file: ${WORK}/cert.pem
  key_file: ${WORK}/key.pem
  http3: ${http3}
logging:
  level: INFO
  access_log: ${access}
${access ? `  console_output: false\n  log_file: ${WORK}/denoserve-access.log\n` : ""}`;
  const denoserve = async (
    name: string,
    port: number,
    https: boolean,
    access: boolean,
    workers = args.values.workers,
    http3 = false,
    extensions = "",
    serverExtra = "",
    ruleExtra = "",
  ) => {
    await Deno.writeTextFile(
      `${WORK}/${name}.yaml`,
      dsConf(port, https, access, workers, http3, extensions, serverExtra, ruleExtra),
    );
    const p = spawn(
      [
        DENO,
        "run",
        "-A",
        "--unstable-net",
        `${ROOT}/main.ts`,
        "-c",
        `${WORK}/${name}.yaml`,
      ],
      {},
      access ? `${WORK}/${name}-access.log` : `${WORK}/${name}.log`,
    );
    return p;
  };
  const t0 = performance.now();
  const ds = await denoserve("denoserve", dsHttp, false, false);
  await waitReady(`http://127.0.0.1:${dsHttp}/1k.html`);
  const startupMs = performance.now() - t0;
  servers.push({ name: "denoserve", http: dsHttp, process: ds });
  const dsTls = await denoserve("denoserve-tls", dsHttps, true, false);
  servers[0].https = dsHttps;
  servers.push({ name: "denoserve-tls", http: dsHttps, process: dsTls });
  const dsLogPort = await freePort();
  servers.push({
    name: "denoserve",
    http: dsLogPort,
    process: await denoserve("denoserve-log", dsLogPort, false, true),
    variant: "log",
  });
  const ds2Port = await freePort();
  servers.push({
    name: "denoserve",
    http: ds2Port,
    process: await denoserve("denoserve-2w", ds2Port, false, false, "2"),
    variant: "2 workers",
  });
  // HTTP/3 beside HTTPS (ssl.http3), for the HTTP/3 section: h3 and h2 on the same server.
  if (runs(HTTP3_SECTION)) {
    const dsH3Port = await freePort();
    servers.push({
      name: "denoserve",
      http: dsH3Port,
      https: dsH3Port,
      process: await denoserve("denoserve-h3", dsH3Port, true, false, "1", true),
      variant: "h3",
    });
  }

  // One extension feature on at a time, against the same server with none, in the same rounds.
  for (const [name, extensions] of runs(FEATURES_WORKLOAD) ? FEATURES : []) {
    const port = await freePort();
    servers.push({
      name,
      http: port,
      process: await denoserve(
        name.replaceAll(" ", "-").replace("+", ""),
        port,
        false,
        false,
        "1",
        false,
        extensions,
      ),
      variant: "features",
    });
  }

  // One site against 50 (`sites:`, the Host of the last), in the same rounds.
  for (const [name, extra] of runs(SITES_WORKLOAD) ? SITES : []) {
    const port = await freePort();
    servers.push({
      name,
      http: port,
      process: await denoserve(
        name.replaceAll(/\W+/g, "-"),
        port,
        false,
        false,
        "1",
        false,
        extra(),
      ),
      variant: "sites",
    });
  }

  // The proxy directives: header rules and compression, each against the same denoserve
  // without them, in the same rounds.
  for (const [name, serverExtra, ruleExtra] of runsDirectives() ? DIRECTIVES : []) {
    const port = await freePort();
    servers.push({
      name,
      http: port,
      process: await denoserve(
        name.replaceAll(/[^a-z0-9]+/gi, "-"),
        port,
        false,
        false,
        "1",
        false,
        "",
        serverExtra,
        ruleExtra,
      ),
      variant: "directives",
    });
  }

  const VARIANTS: (Variant | undefined)[] = [undefined, "log", "2 workers"];
  // nginx
  for (const variant of VARIANTS) {
    const [h, s] = [await freePort(), await freePort()];
    const name = `nginx${variant ? "-" + variant.replace(" ", "") : ""}`;
    const conf = nginxConf(h, s, variant === "log", name)
      .replace("worker_processes 1;", `worker_processes ${variant === "2 workers" ? 2 : 1};`);
    const p = await startNginx(name, conf);
    servers.push({ name: "nginx", http: h, https: s, process: p, variant });
  }

  // Caddy
  for (const variant of VARIANTS) {
    const logging = variant === "log";
    const [h, s] = [await freePort(), await freePort()];
    const name = `caddy${variant ? "-" + variant.replace(" ", "") : ""}`;
    const site = `root * ${WORK}/site
  handle_path /proxy/* {
    reverse_proxy 127.0.0.1:${BACKEND}
  }
  handle_path /proxygz/* {
    encode {
      gzip ${GZIP_LEVEL}
    }
    reverse_proxy 127.0.0.1:${BACKEND}
  }
  handle_path /ws/* {
    reverse_proxy 127.0.0.1:${WS_BACKEND}
  }
  file_server
  ${logging ? `log {\n    output file ${WORK}/caddy-access.log\n  }` : ""}`;
    await Deno.writeTextFile(
      `${WORK}/${name}.Caddyfile`,
      `{
  admin off
  auto_https off
}
http://127.0.0.1:${h} {
  ${site}
}
https://127.0.0.1:${s} {
  tls ${WORK}/cert.pem ${WORK}/key.pem
  ${site}
}
`,
    );
    const p = spawn(
      ["caddy", "run", "--adapter", "caddyfile", "--config", `${WORK}/${name}.Caddyfile`],
      {
        GOMAXPROCS: variant === "2 workers" ? "2" : "1",
        HOME: WORK,
        XDG_DATA_HOME: WORK,
        XDG_CONFIG_HOME: WORK,
      },
      `${WORK}/${name}.log`,
    );
    servers.push({ name: "caddy", http: h, https: s, process: p, variant });
  }

  // The Node static servers from npm.
  for (const peer of peers ? PEERS : []) {
    const port = await freePort();
    const p = spawn(
      [`${WORK}/npm/node_modules/.bin/${peer.bin}`, ...peer.args(port, `${WORK}/site`)],
      { PATH: Deno.env.get("PATH") ?? "", HOME: WORK, NODE_ENV: "production" },
      `${WORK}/${peer.name}.log`,
    );
    servers.push({ name: peer.name, http: port, process: p, peer: true });
  }

  // The runtime's ceilings (left out of --quick).
  if (!QUICK) await startCeilings(servers);

  for (const s of servers) {
    await waitReady(`http://127.0.0.1:${s.http}/`).catch(() =>
      waitReady(`https://localhost:${s.http}/1k.html`)
    ).catch((e) => console.error(`${s.name}: ${e.message}`));
  }
  return { servers, startupMs };
}

// ---------------------------------------------------------------- measuring

/** Process ids of `pid` and its descendants. */
async function tree(pid: number): Promise<number[]> {
  const all = [pid];
  for (let i = 0; i < all.length; i++) {
    try {
      const kids = await Deno.readTextFile(`/proc/${all[i]}/task/${all[i]}/children`);
      all.push(...kids.trim().split(/\s+/).filter(Boolean).map(Number));
    } catch { /* gone */ }
  }
  return all;
}

/**
 * MB of resident memory of `pid` and its children: all of it (`VmRSS`), or only the private
 * part (`RssAnon`), without the pages of the program's file, which every process running the
 * same binary shares.
 */
async function rssMb(pid: number, field: "VmRSS" | "RssAnon" = "VmRSS"): Promise<number> {
  let kb = 0;
  for (const p of await tree(pid)) {
    try {
      const status = await Deno.readTextFile(`/proc/${p}/status`);
      kb += Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
    } catch { /* gone */ }
  }
  return kb / 1024;
}

interface Result {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  rss: number;
  /** Bytes wrk read per answer (head and body, as on the wire). */
  bytes?: number;
}

function ms(text: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(text);
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === "us" ? v / 1000 : m[2] === "s" ? v * 1000 : v;
}

async function measure(pid: number, run: () => Promise<Omit<Result, "rss">>): Promise<Result> {
  let peak = 0;
  let sampling = true;
  let wake = () => {};
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, await rssMb(pid));
      await new Promise<void>((r) => {
        const t = setTimeout(r, 250);
        wake = () => (clearTimeout(t), r());
      });
    }
  })();
  try {
    const r = await run();
    return { ...r, rss: peak };
  } finally {
    sampling = false;
    wake(); // stop at once rather than after the rest of a 250 ms sleep
    await sampler;
  }
}

async function wrk(url: string, extra: string[] = []): Promise<Omit<Result, "rss">> {
  const { text } = await sh([
    "wrk",
    "-t1",
    `-c${CONNECTIONS}`,
    `-d${DURATION}s`,
    "--latency",
    ...extra,
    url,
  ], { quiet: true });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? NaN);
  // The latency distribution's own lines: "88.50%" in the thread statistics is not p50.
  const p50 = ms(/^\s+50%\s+(\S+)/m.exec(text)?.[1] ?? "");
  const p99 = ms(/^\s+99%\s+(\S+)/m.exec(text)?.[1] ?? "");
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
  const errors = (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0) +
    (url.includes("missing") ? 0 : non2xx);
  if (Number.isNaN(rps)) console.error(text);
  const read = /(\d+) requests in [\d.]+\w+, ([\d.]+)([KMG]?B) read/.exec(text);
  const unit = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }[read?.[3] ?? "B"] ?? 1;
  const bytes = read ? Number(read[2]) * unit / Number(read[1]) : undefined;
  return { rps, p50, p99, errors, bytes };
}

async function h2load(url: string): Promise<Omit<Result, "rss">> {
  const { text } = await sh([
    "h2load",
    "-c",
    String(CONNECTIONS),
    "-m",
    "10",
    "-D",
    String(DURATION),
    "-t",
    "1",
    url,
  ], { quiet: true });
  const rps = Number(/finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(text)?.[1] ?? NaN);
  const failed = Number(/(\d+) failed/.exec(text)?.[1] ?? 0) +
    Number(/(\d+) errored/.exec(text)?.[1] ?? 0);
  const mean = /time for request:\s+\S+\s+\S+\s+(\S+)/.exec(text)?.[1] ?? "";
  if (Number.isNaN(rps)) console.error(text);
  return { rps, p50: ms(mean), p99: NaN, errors: failed };
}

// ---------------------------------------------------------------- workloads

interface Workload {
  name: string;
  /** Which servers (by name) and how to hit them; undefined = skip that server. */
  run: (s: Server) => (() => Promise<Omit<Result, "rss">>) | undefined;
  variant?: Variant;
  /** A plain static workload, which the npm peers run too. */
  static?: boolean;
}

const plain = (path: string, extra: string[] = []) => (s: Server) =>
  s.name === "denoserve-tls" ? undefined : () => wrk(`http://127.0.0.1:${s.http}${path}`, extra);
const tls = (path: string, extra: string[] = []) => (s: Server) => {
  if (s.name === "denoserve-tls") return () => wrk(`https://127.0.0.1:${s.http}${path}`, extra);
  if (s.name === "denoserve" || !s.https) return undefined;
  return () => wrk(`https://127.0.0.1:${s.https}${path}`, extra);
};

/**
 * The extension features whose cost issue targets name (each ≤ 10% of the 1 KiB rate), one
 * denoserve each, beside one with no extension: name → the `extensions:` of its config.
 */
const FEATURES: readonly (readonly [string, string])[] = [
  ["denoserve, no extension", ""],
  [
    "denoserve + metrics",
    "version: 2\nextensions:\n  - type: monitoring\n    config:\n      metrics: { enabled: true }\n",
  ],
  [
    "denoserve + rate limiting",
    "version: 2\nextensions:\n  - type: security\n    config:\n      rate_limiting:\n" +
    "        { enabled: true, requests_per_minute: 600000000, burst: 600000000 }\n",
  ],
  [
    "denoserve + security headers",
    "version: 2\nextensions:\n  - type: security\n    config:\n      security_headers: { enabled: true }\n",
  ],
];
const FEATURES_WORKLOAD = "1 KiB file, extension features";
const SITES_WORKLOAD = "1 KiB file, 50 sites, Host of the last one";
/** The last of the 50 sites' names, sent as Host to both servers of {@link SITES_WORKLOAD}. */
const LAST_SITE = "site50.example.com";
/** One site, and 50 sites each with its own names and the same folder. */
const SITES: readonly (readonly [string, () => string])[] = [
  ["denoserve, one site", () => ""],
  [
    "denoserve, 50 sites",
    () =>
      "sites:\n" + Array.from(
        { length: 50 },
        (_, i) =>
          `  - names: [site${i + 1}.example.com, www.site${i + 1}.example.com]\n` +
          `    http: { static_dir: ${WORK}/site }\n`,
      ).join(""),
  ],
];

/** The gzip level of the compression rows, for all three servers (Caddy's default). */
const GZIP_LEVEL = 5;
const DIRECTIVES_SECTION = "Proxy directives";
const HEADER_RULES = "Proxy 1 KiB with two header rules";
const GZIP_JSON = "Proxy 100 KiB JSON with gzip on";
/** The denoserve servers of the proxy directives: name, server keys, keys of the /proxy rule. */
const DIRECTIVES: readonly (readonly [string, string, string])[] = [
  ["denoserve, no rules", "", ""],
  [
    "denoserve + two header rules",
    "",
    '      request_headers: { set: { X-Client: "{client_ip}" } }\n' +
    "      response_headers: { remove: [Server] }\n",
  ],
  [
    "denoserve + compression",
    `  compression: { enabled: true, encodings: [gzip, zstd], gzip_level: ${GZIP_LEVEL} }\n`,
    "",
  ],
];
const CONNECTIONS_SECTION = "connections";
const WEBSOCKETS_SECTION = "WebSockets";
/** WebSockets open at once through each proxy, each echoing one message at a time. */
const WEBSOCKETS = 1000;
const HTTP3_SECTION = "HTTP/3";
const HANDSHAKES = "TLS handshakes (Connection: close)";
const HTTPS_KEEPALIVE = "HTTPS 1 KiB keep-alive";
/** The bare `Deno.serve` doing per request what a file server must: reads and headers. */
const AS_FILE_SERVER = "bare Deno.serve as a file server";
const CLOSE = "plain 1 KiB, Connection: close";
/** The runtime's server for one connection, on connections accepted in JavaScript, alone. */
const PER_CONNECTION = "runtime's per-connection server";
const HTTP2 = "HTTP/2 1 KiB (h2load)";

const WORKLOADS: Workload[] = [
  { name: "1 KiB file", run: plain("/1k.html"), static: true },
  { name: "100 KiB file", run: plain("/100k.bin"), static: true },
  { name: "10 MiB file", run: plain("/10m.bin"), static: true },
  { name: "404", run: plain("/missing.html"), static: true },
  { name: CLOSE, run: plain("/1k.html", ["-H", "Connection: close"]) },
  { name: HTTPS_KEEPALIVE, run: tls("/1k.html") },
  { name: HANDSHAKES, run: tls("/1k.html", ["-H", "Connection: close"]) },
  {
    name: HTTP2,
    run: (s) => {
      const port = s.name === "denoserve-tls" ? s.http : s.name === "denoserve" ? 0 : s.https;
      return port ? () => h2load(`https://127.0.0.1:${port}/1k.html`) : undefined;
    },
  },
  { name: "reverse proxy 1 KiB", run: plain("/proxy/x") },
  { name: "1 KiB file, access log on", run: plain("/1k.html"), variant: "log" },
  { name: "1 KiB file, 2 workers", run: plain("/1k.html", ["-t2"]), variant: "2 workers" },
  { name: FEATURES_WORKLOAD, run: plain("/1k.html"), variant: "features" },
  {
    name: SITES_WORKLOAD,
    run: plain("/1k.html", ["-H", `Host: ${LAST_SITE}`]),
    variant: "sites",
  },
];

function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

const fmt = (n: number, digits = 0) => Number.isNaN(n) ? "n/a" : n.toFixed(digits);

// ---------------------------------------------------------------- connections

const DOWNLOADS = 20;
const IDLE_PLAIN = 5000;
const IDLE_TLS = 3000;
const FLOOD = 20000;
const FLOOD_HOLD_S = 3;
let FILES = 0;

/** Where one server listens for plain HTTP and for HTTPS, and the process that holds each. */
interface Endpoints {
  name: string;
  plain: { port: number; pid: number };
  tls: { port: number; pid: number };
}

function endpointsOf(servers: Server[]): Endpoints[] {
  const main = servers.filter((s) => !s.variant && !s.peer && s.ceilingOf === undefined);
  const out: Endpoints[] = [];
  for (const s of main) {
    if (s.name === "denoserve-tls") continue;
    if (s.name === "denoserve") {
      const t = main.find((x) => x.name === "denoserve-tls")!;
      out.push({
        name: s.name,
        plain: { port: s.http, pid: s.process.pid },
        tls: { port: t.http, pid: t.process.pid },
      });
    } else if (s.https) {
      out.push({
        name: s.name,
        plain: { port: s.http, pid: s.process.pid },
        tls: { port: s.https, pid: s.process.pid },
      });
    }
  }
  return out;
}

/** ms per 2 MiB download over HTTP/2 by a client with 64 KiB windows. */
async function smallWindowDownload(port: number): Promise<number> {
  const { text } = await sh([
    "h2load",
    "-n",
    String(DOWNLOADS),
    "-c",
    "1",
    "-w",
    "16",
    "-W",
    "16",
    `https://127.0.0.1:${port}/2m.bin`,
  ], { quiet: true });
  const done = Number(/(\d+) succeeded/.exec(text)?.[1] ?? 0);
  const total = ms(/finished in (\S+),/.exec(text)?.[1] ?? "");
  return done === DOWNLOADS ? total / DOWNLOADS : NaN;
}

/** A client connection over plain TCP or TLS (HTTP/1.1). */
async function connectTo(port: number, secure: boolean, ca: string): Promise<Deno.Conn> {
  return secure
    ? await Deno.connectTls({
      hostname: "127.0.0.1",
      port,
      caCerts: [ca],
      alpnProtocols: ["http/1.1"],
    })
    : await Deno.connect({ hostname: "127.0.0.1", port });
}

/** KiB of server RSS per kept-alive connection that had one answer and now waits. */
async function idleMemory(port: number, pid: number, secure: boolean, n: number) {
  const ca = await Deno.readTextFile(`${WORK}/ca.pem`);
  // The Host each server's site answers for (Caddy matches it).
  const request = new TextEncoder().encode(
    `GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`,
  );
  await new Promise((r) => setTimeout(r, 1000));
  const before = await rssMb(pid);
  const conns: Deno.Conn[] = [];
  try {
    for (let i = 0; i < n; i += 100) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(100, n - i) }, async () => {
          const c = await connectTo(port, secure, ca);
          await c.write(request);
          // Read one whole answer (its head, then Content-Length bytes), whatever it is.
          const buf = new Uint8Array(4096);
          let text = "";
          for (;;) {
            const end = text.indexOf("\r\n\r\n");
            const length = Number(/content-length:\s*(\d+)/i.exec(text)?.[1] ?? 0);
            if (end >= 0 && text.length >= end + 4 + length) break;
            const got = await c.read(buf);
            if (got === null) throw new Error(`closed after ${JSON.stringify(text.slice(0, 80))}`);
            text += new TextDecoder().decode(buf.subarray(0, got));
          }
          return c;
        }),
      );
      conns.push(...batch);
    }
    await new Promise((r) => setTimeout(r, 1000));
    return ((await rssMb(pid)) - before) * 1024 / n;
  } catch (e) {
    console.error(`idle connections on ${port}: ${(e as Error).message}`);
    return NaN;
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Whether one normal request to `url` is answered within `ms`. */
async function answers(url: string, client: Deno.HttpClient, timeout: number) {
  try {
    const res = await fetch(url, { client, signal: AbortSignal.timeout(timeout) });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

const FLOODER = `
import socket, sys, time
socks = []
for i in range(int(sys.argv[2])):
    try:
        s = socket.socket()
    except OSError:
        break
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", int(sys.argv[1])))
    socks.append(s)
time.sleep(0.5)
print(len(socks), flush=True)
sys.stdin.readline()
for s in socks:
    s.close()
`;

/** Idle connections up to FLOOD from another process; a normal client during and after. */
async function flood(port: number, secure: boolean): Promise<string> {
  const url = `${secure ? "https" : "http"}://127.0.0.1:${port}/index.html`;
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(`${WORK}/ca.pem`)] });
  const child = new Deno.Command("python3", {
    args: ["-c", FLOODER, String(port), String(FLOOD)],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const opened = Number((await lines.read()).value?.trim() ?? NaN);
  const during = await answers(url, client, 2000);
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("\n")).catch(() => {});
  await writer.close().catch(() => {});
  const ended = performance.now();
  await child.status;
  let after = NaN;
  while (performance.now() - ended < 10_000) {
    if (await answers(url, client, 1000)) {
      after = performance.now() - ended;
      break;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  lines.releaseLock();
  client.close();
  await new Promise((r) => setTimeout(r, 2000));
  return `${opened}, ${during ? "answered" : "not answered"}, ${fmt(after)}`;
}

async function connectionWorkloads(servers: Server[]): Promise<string[]> {
  FILES = Number(/Max open files\s+(\d+)/.exec(await Deno.readTextFile("/proc/self/limits"))?.[1]);
  const rows: string[] = [];
  for (const e of endpointsOf(servers)) {
    const download = await smallWindowDownload(e.tls.port);
    const plainKiB = await idleMemory(e.plain.port, e.plain.pid, false, IDLE_PLAIN);
    const tlsKiB = await idleMemory(e.tls.port, e.tls.pid, true, IDLE_TLS);
    const floodPlain = await flood(e.plain.port, false);
    const floodTls = await flood(e.tls.port, true);
    const alive = [e.plain.pid, e.tls.pid].every((pid) => {
      try {
        Deno.statSync(`/proc/${pid}`);
        return true;
      } catch {
        return false;
      }
    });
    const row = `| ${e.name} | ${fmt(download, 1)} | ${fmt(plainKiB, 1)} | ${
      fmt(tlsKiB, 1)
    } | ${floodPlain} | ${floodTls} | ${alive ? "yes" : "no"} |`;
    rows.push(row);
    console.error(row);
  }
  // The runtime's floors for an idle connection: its own server, and its server for one
  // connection on connections accepted in JavaScript (denoserve's design).
  const plainBare = servers.find((s) => s.name === "bare Deno.serve" && !s.https);
  const tlsBare = servers.find((s) => s.name === "bare Deno.serve" && s.https);
  const perConnection = servers.find((s) => s.name === PER_CONNECTION);
  for (
    const [name, plain, tls] of [
      ["bare Deno.serve", plainBare, tlsBare],
      [PER_CONNECTION, perConnection, undefined],
    ] as const
  ) {
    const plainKiB = plain
      ? await idleMemory(plain.http, plain.process.pid, false, IDLE_PLAIN)
      : NaN;
    const tlsKiB = tls ? await idleMemory(tls.http, tls.process.pid, true, IDLE_TLS) : NaN;
    const row = `| ${name} | | ${fmt(plainKiB, 1)} | ${fmt(tlsKiB, 1)} | | | |`;
    rows.push(row);
    console.error(row);
  }
  return rows;
}

// ---------------------------------------------------------------- WebSockets

/**
 * Echo round trips per second through each server's proxy to one WebSocket echo backend:
 * ${WEBSOCKETS} WebSockets open at once (plain), each sending its next message when the last
 * came back, for DURATION s, measured in this process.
 */
async function webSocketEcho(port: number): Promise<{ rps: number; opened: number }> {
  const sockets = (await Promise.all(
    Array.from({ length: WEBSOCKETS }, () =>
      new Promise<WebSocket | undefined>((resolve) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/echo`);
        ws.onopen = () => resolve(ws);
        ws.onerror = () => resolve(undefined);
      })),
  )).filter((ws) => ws !== undefined);
  let trips = 0;
  let running = true;
  const t0 = performance.now();
  for (const ws of sockets) {
    ws.onmessage = () => {
      trips++;
      if (running) ws.send("x".repeat(32));
    };
    ws.send("x".repeat(32));
  }
  await new Promise((r) => setTimeout(r, DURATION * 1000));
  running = false;
  const rps = trips / ((performance.now() - t0) / 1000);
  await Promise.all(sockets.map((ws) =>
    new Promise<void>((resolve) => {
      ws.onclose = () => resolve();
      ws.close();
      setTimeout(resolve, 2000);
    })
  ));
  return { rps, opened: sockets.length };
}

async function webSocketWorkloads(servers: Server[]): Promise<string[]> {
  const rows: string[] = [];
  const results = new Map<string, { rps: number[]; opened: number }>();
  const targets = endpointsOf(servers);
  for (let round = 0; round < ROUNDS; round++) {
    for (const e of targets) {
      const r = await webSocketEcho(e.plain.port);
      const seen = results.get(e.name) ?? { rps: [], opened: r.opened };
      seen.rps.push(r.rps);
      seen.opened = Math.min(seen.opened, r.opened);
      results.set(e.name, seen);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  const rate = (name: string) => median(results.get(name)?.rps ?? []);
  for (const [name, r] of results) {
    const row = `| ${name} | ${r.opened} | ${fmt(median(r.rps))} | ${
      fmt(median(r.rps) / rate("nginx"), 2)
    } | ${fmt(median(r.rps) / rate("caddy"), 2)} |`;
    rows.push(row);
    console.error(row);
  }
  return rows;
}

// ---------------------------------------------------------------- HTTP/3

const H3_STREAMS = 50;
const H3_DOWNLOADS = 5;

/** Requests of `path` answered per second: `streams` at a time on one connection, for DURATION. */
async function loadOne(
  request: () => Promise<number>,
  streams: number,
): Promise<{ rps: number; errors: number }> {
  let done = 0;
  let errors = 0;
  const end = performance.now() + DURATION * 1000;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: streams }, async () => {
    while (performance.now() < end) {
      try {
        if (await request() === 200) done++;
        else errors++;
      } catch {
        errors++;
      }
    }
  }));
  return { rps: done / ((performance.now() - t0) / 1000), errors };
}

/**
 * HTTP/3 against HTTP/2 on the same server: 1 KiB files per second with ${H3_STREAMS} requests in
 * flight on one connection, and the median time of a 10 MiB download. h3 through the test
 * client over `Deno.connectQuic` (tests/support/h3_client.ts); h2 through Deno's fetch, one
 * HTTP/2 connection: both clients run in this process, in JavaScript on Deno.
 */
async function http3Workloads(servers: Server[]): Promise<string[]> {
  const { H3Client } = await import("../tests/support/h3_client.ts");
  const ca = await Deno.readTextFile(`${WORK}/ca.pem`);
  const targets = servers.filter((s) =>
    (s.name === "denoserve" && s.variant === "h3") || (s.name === "caddy" && !s.variant)
  );
  const rows: string[] = [];
  for (const s of targets) {
    const port = s.https!;
    const row: string[] = [];
    try {
      await using h3 = await H3Client.connect(port, ca, { authority: `127.0.0.1:${port}` });
      const small = await loadOne(async () => (await h3.request("/1k.html")).status, H3_STREAMS);
      const times: number[] = [];
      for (let i = 0; i < H3_DOWNLOADS; i++) {
        const t0 = performance.now();
        const r = await h3.request("/10m.bin");
        if (r.body.length !== 10 * 1024 * 1024) {
          throw new Error(`${r.status} with ${r.body.length} bytes for 10 MiB`);
        }
        times.push(performance.now() - t0);
      }
      row.push(fmt(small.rps), fmt(small.errors), fmt(median(times)));
    } catch (e) {
      console.error(`${s.name} over HTTP/3: ${(e as Error).message}`);
      row.push("n/a", "n/a", "n/a");
    }
    const client = Deno.createHttpClient({ caCerts: [ca], http1: false, http2: true });
    try {
      const url = `https://127.0.0.1:${port}`;
      const small = await loadOne(async () => {
        const r = await fetch(`${url}/1k.html`, { client });
        await r.arrayBuffer();
        return r.status;
      }, H3_STREAMS);
      const times: number[] = [];
      for (let i = 0; i < H3_DOWNLOADS; i++) {
        const t0 = performance.now();
        const r = await fetch(`${url}/10m.bin`, { client });
        await r.arrayBuffer();
        times.push(performance.now() - t0);
      }
      row.push(fmt(small.rps), fmt(small.errors), fmt(median(times)));
    } finally {
      client.close();
    }
    const line = `| ${s.name} | ${row.join(" | ")} |`;
    rows.push(line);
    console.error(line);
  }
  return rows;
}

/**
 * The proxy directives: the 1 KiB proxy with two header rules against the same without, and a
 * 100 KiB JSON answer compressed on the way (gzip at ${GZIP_LEVEL} everywhere, and denoserve's
 * zstd) against nginx (`gzip on`) and Caddy (`encode gzip`): req/s and bytes per answer.
 */
async function directiveWorkloads(servers: Server[]): Promise<string[]> {
  const find = (name: string, variant?: Variant) =>
    servers.find((s) => s.name === name && s.variant === variant)!;
  const gzip = ["-H", "Accept-Encoding: gzip"];
  const groups: [string, [string, Server, string, string[]][]][] = [
    [HEADER_RULES, [
      ["denoserve, no rules", find("denoserve, no rules", "directives"), "/proxy/x", []],
      [
        "denoserve + two header rules",
        find("denoserve + two header rules", "directives"),
        "/proxy/x",
        [],
      ],
    ]],
    [GZIP_JSON, [
      ["denoserve gzip", find("denoserve + compression", "directives"), "/proxy/100k.json", gzip],
      ["nginx gzip on", find("nginx"), "/proxygz/100k.json", gzip],
      ["Caddy encode gzip", find("caddy"), "/proxygz/100k.json", gzip],
      ["denoserve zstd", find("denoserve + compression", "directives"), "/proxy/100k.json", [
        "-H",
        "Accept-Encoding: zstd",
      ]],
      ["denoserve, none", find("denoserve + compression", "directives"), "/proxy/100k.json", []],
    ]],
  ];
  const rows: string[] = [];
  for (const [workload, targets] of groups) {
    const only = args.values.only;
    if (only && !DIRECTIVES_SECTION.includes(only) && !workload.includes(only)) continue;
    const results = targets.map(() => [] as Result[]);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [i, [, s, path, extra]] of targets.entries()) {
        results[i].push(
          await measure(s.process.pid, () => wrk(`http://127.0.0.1:${s.http}${path}`, extra)),
        );
      }
    }
    const first = median(results[0].map((r) => r.rps));
    for (const [i, [label]] of targets.entries()) {
      const rs = results[i];
      const rps = median(rs.map((r) => r.rps));
      const line = `| ${workload} | ${label} | ${fmt(rps)} | ${
        fmt(Math.min(...rs.map((r) => r.rps)))
      }–${fmt(Math.max(...rs.map((r) => r.rps)))} | ${fmt(median(rs.map((r) => r.p50)), 2)} | ${
        fmt(median(rs.map((r) => r.bytes ?? NaN)))
      } | ${fmt(rs.reduce((a, r) => a + r.errors, 0))} | ${fmt(rps / first, 2)} |`;
      rows.push(line);
      console.error(line);
    }
  }
  return rows;
}

async function main() {
  await ensurePackages();
  WORK = await Deno.makeTempDir({ prefix: "denoserve-bench-" });
  await Deno.chmod(WORK, 0o755); // nginx workers read the site as an unprivileged user
  // --quick leaves the npm peers out: installing and running them would take it past a minute.
  const peersInstalled = QUICK ? Promise.resolve(false) : installPeers(); // meanwhile
  await makeCerts(WORK);
  await Deno.mkdir(`${WORK}/site`);
  await Deno.writeTextFile(`${WORK}/site/1k.html`, "x".repeat(1024));
  await Deno.writeFile(`${WORK}/site/100k.bin`, new Uint8Array(100 * 1024).fill(97));
  await Deno.writeFile(`${WORK}/site/10m.bin`, new Uint8Array(10 * 1024 * 1024).fill(98));
  await Deno.writeTextFile(`${WORK}/site/index.html`, "index");
  await Deno.writeFile(`${WORK}/site/2m.bin`, new Uint8Array(2 * 1024 * 1024).fill(99));
  // About 100 KiB of JSON as an API answers it: records with repeating keys and varying values.
  const records = [];
  for (let i = 0; records.length === 0 || JSON.stringify(records).length < 100 * 1024; i++) {
    records.push({ id: i, name: `user ${i}`, email: `user${i}@example.com`, active: i % 3 === 0 });
  }
  await Deno.writeTextFile(`${WORK}/site/100k.json`, JSON.stringify(records));

  const { servers, startupMs } = await startServers(await peersInstalled);
  const idle: Record<string, { all: number; own: number }> = {};
  for (const s of servers) {
    if (s.variant) continue;
    idle[s.name] = { all: await rssMb(s.process.pid), own: await rssMb(s.process.pid, "RssAnon") };
  }
  const started = Date.now();
  const rows: string[] = [];
  let connectionRows: string[] = [];
  let http3Rows: string[] = [];
  let directiveRows: string[] = [];
  let webSocketRows: string[] = [];
  let featureRates = new Map<string, number>();
  let siteRates = new Map<string, number>();
  const ratios: Record<
    string,
    {
      nginx: number;
      caddy: number;
      bare?: number;
      reads?: number;
      perConnection?: number;
      floor?: number;
    }
  > = {};
  try {
    for (const w of WORKLOADS) {
      if (args.values.only && !w.name.includes(args.values.only)) continue;
      const targets = servers.filter((s) =>
        s.variant === w.variant && w.run(s) !== undefined &&
        (s.ceilingOf === undefined || s.ceilingOf.includes(w.name)) && (!s.peer || w.static)
      );
      const results = new Map<Server, Result[]>(targets.map((s) => [s, []]));
      // Rounds alternate between the servers, so that a slow spell of the machine falls on all.
      for (let round = 0; round < ROUNDS; round++) {
        for (const s of targets) {
          results.get(s)!.push(await measure(s.process.pid, w.run(s)!));
        }
      }
      const summary = new Map(
        targets.map((s) => {
          const rs = results.get(s)!;
          return [s.name.replace("-tls", ""), {
            rps: median(rs.map((r) => r.rps)),
            min: Math.min(...rs.map((r) => r.rps)),
            max: Math.max(...rs.map((r) => r.rps)),
            p50: median(rs.map((r) => r.p50)),
            p99: median(rs.map((r) => r.p99)),
            errors: rs.reduce((a, r) => a + r.errors, 0),
            rss: Math.max(...rs.map((r) => r.rss)),
          }];
        }),
      );
      if (w.name === FEATURES_WORKLOAD) {
        featureRates = new Map([...summary].map(([name, r]) => [name, r.rps]));
      }
      if (w.name === SITES_WORKLOAD) {
        siteRates = new Map([...summary].map(([name, r]) => [name, r.rps]));
      }
      const ds = summary.get("denoserve")?.rps ?? NaN;
      const ratio = (other: string, of = ds) => of / (summary.get(other)?.rps ?? NaN);
      ratios[w.name] = {
        nginx: ratio("nginx"),
        caddy: ratio("caddy"),
        bare: summary.has("bare Deno.serve") ? ratio("bare Deno.serve") : undefined,
        reads: summary.has(AS_FILE_SERVER) ? ratio(AS_FILE_SERVER) : undefined,
        perConnection: summary.has(PER_CONNECTION) ? ratio(PER_CONNECTION) : undefined,
        floor: summary.has(PER_CONNECTION)
          ? ratio("bare Deno.serve", summary.get(PER_CONNECTION)!.rps)
          : undefined,
      };
      for (const [name, r] of summary) {
        // The ratio columns: this row's req/s against nginx's and Caddy's, for denoserve and peers.
        const rated = name === "denoserve" || PEER_NAMES.has(name);
        const spread = ROUNDS > 1 ? `${fmt(r.min)}–${fmt(r.max)}` : "";
        const row = `| ${w.name} | ${name} | ${fmt(r.rps)} | ${spread} | ${fmt(r.p50, 2)} | ${
          fmt(r.p99, 2)
        } | ${fmt(r.errors)} | ${fmt(r.rss)} | ${rated ? fmt(ratio("nginx", r.rps), 2) : ""} | ${
          rated ? fmt(ratio("caddy", r.rps), 2) : ""
        } |`;
        rows.push(row);
        console.error(row);
      }
    }
    if (runs(CONNECTIONS_SECTION)) connectionRows = await connectionWorkloads(servers);
    if (runs(HTTP3_SECTION)) http3Rows = await http3Workloads(servers);
    if (runsDirectives()) directiveRows = await directiveWorkloads(servers);
    if (runs(WEBSOCKETS_SECTION)) webSocketRows = await webSocketWorkloads(servers);
  } finally {
    for (const s of servers) {
      try {
        s.process.kill("SIGTERM");
      } catch { /* gone */ }
    }
    await Promise.all(servers.map((s) => s.process.status));
    try {
      wsBackend?.kill("SIGTERM");
      await wsBackend?.status;
    } catch { /* gone */ }
    for (const pid of ["backend"]) {
      const text = await Deno.readTextFile(`${WORK}/${pid}.pid`).catch(() => "");
      if (text) await sh(["kill", text.trim()], { quiet: true });
    }
  }
  const elapsed = (Date.now() - started) / 1000;
  const versions = [
    `deno ${Deno.version.deno}`,
    (await sh(["nginx", "-v"], { quiet: true })).text.trim(),
    `caddy ${(await sh(["caddy", "version"], { quiet: true })).text.trim().split(" ")[0]}`,
    (await sh(["wrk", "-v"], { quiet: true })).text.split("\n")[0].trim(),
    `node ${(await sh(["node", "--version"], { quiet: true })).text.trim()}`,
    ...PEERS.map((p) => p.pkg),
  ];
  const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1];
  const none = featureRates.get(FEATURES[0][0]) ?? NaN;
  const featureLine = featureRates.size === 0
    ? ""
    : `Extension features on, each against ${
      FEATURES[0][0]
    } in the same rounds (${FEATURES_WORKLOAD}): ${
      FEATURES.slice(1).map(([name]) =>
        `${name.replace("denoserve + ", "")} ${fmt((featureRates.get(name) ?? NaN) / none, 2)}×`
      ).join(", ")
    }.`;
  const sitesLine = siteRates.size === 0
    ? ""
    : `${SITES_WORKLOAD}: ${
      fmt((siteRates.get(SITES[1][0]) ?? NaN) / (siteRates.get(SITES[0][0]) ?? NaN), 2)
    }× of ${SITES[0][0]} in the same rounds (target ≥ 0.95×).`;
  const report = `# Benchmark results

Date: ${new Date().toISOString()}
Machine: ${Deno.osRelease()} ${Deno.build.arch}, ${navigator.hardwareConcurrency} cores (${cpu}),
${Math.round(Deno.systemMemoryInfo().total / 2 ** 30)} GiB
Versions: ${versions.join("; ")}
Command: \`deno task bench${
    Deno.args.length ? " " + Deno.args.join(" ") : ""
  }\` (${ROUNDS} rounds of ${DURATION} s per workload and server, took ${fmt(elapsed)} s)
Load: \`wrk -t1 -c${CONNECTIONS} -d${DURATION}s --latency URL\`; HTTP/2: \`h2load -c ${CONNECTIONS} -m 10 -D ${DURATION} -t 1 URL\`
Rounds alternate between the servers within each workload; req/s is the median of the rounds and
min–max their spread. ×nginx and ×Caddy: the row's req/s against nginx's and Caddy's (denoserve
and the Node peers).
Node peers (npm, static workloads only, one process each): ${
    PEERS.map((p) => `\`${p.bin} ${p.args(-1, "SITE").join(" ").replace("-1", "PORT")}\``).join(
      "; ",
    )
  }.
Each server runs one worker (nginx \`worker_processes 1\`, Caddy \`GOMAXPROCS=1\`, denoserve \`workers: ${args.values.workers}\`), all on 127.0.0.1; the proxy backend is one nginx worker returning a fixed 1 KiB body.

Start-up of denoserve to its first answered request: ${fmt(startupMs)} ms.
Idle RSS (MB; in brackets the private part, without the pages of the program's file): ${
    Object.entries(idle).map(([k, v]) => `${k} ${fmt(v.all)} (${fmt(v.own)})`).join(", ")
  }.

| workload | server | req/s | min–max | p50 ms | p99 ms | errors | peak RSS MB | ×nginx | ×Caddy |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
${rows.join("\n")}

Against the bare \`Deno.serve\` ceiling: 1 KiB file ${
    fmt(ratios["1 KiB file"]?.bare ?? NaN, 2)
  }×, 100 KiB file ${fmt(ratios["100 KiB file"]?.bare ?? NaN, 2)}×; 1 KiB file against the bare
server doing per request what any file server must (it reads the URL, the method and the seven
headers of conditional, range and coding choices, and answers with a file's five headers): ${
    fmt(ratios["1 KiB file"]?.reads ?? NaN, 2)
  }×; new TLS handshakes against a bare \`Deno.serve\` with TLS: ${
    fmt(ratios[HANDSHAKES]?.bare ?? NaN, 2)
  }×, HTTPS kept alive ${fmt(ratios[HTTPS_KEEPALIVE]?.bare ?? NaN, 2)}× (${
    fmt(ratios[HTTPS_KEEPALIVE]?.reads ?? NaN, 2)
  }× the same doing a file server's work), plain with \`Connection: close\` ${
    fmt(ratios[CLOSE]?.bare ?? NaN, 2)
  }× (${
    fmt(ratios[CLOSE]?.perConnection ?? NaN, 2)
  }× the runtime's server for one connection alone, on connections accepted in JavaScript, which
itself gives ${fmt(ratios[CLOSE]?.floor ?? NaN, 2)}× the bare \`Deno.serve\`) and HTTP/2 ${
    fmt(ratios[HTTP2]?.bare ?? NaN, 2)
  }× against the same; the reverse proxy against a bare \`Deno.serve\` passing each request to the backend with the
runtime's \`fetch\`: ${fmt(ratios["reverse proxy 1 KiB"]?.bare ?? NaN, 2)}×.
${featureLine}
${sitesLine}
(HTTP/2 rows: the p50 column is h2load's mean time per request.)
${
    connectionRows.length === 0 ? "" : `
## Connections

- **2 MiB over h2, 64 KiB windows**: \`h2load -n ${DOWNLOADS} -c 1 -w 16 -W 16 URL\` (a client that
  keeps HTTP/2's default window, as nghttp does), ms per download.
- **Idle kept-alive connection**: RSS growth of the server (all its processes) per connection,
  with ${IDLE_PLAIN} plain and ${IDLE_TLS} TLS connections that each had one answer and stay open.
  The last two rows are the runtime's floors: a bare \`Deno.serve\`, and the runtime's server for
  one connection on connections accepted in JavaScript (what every connection must be, to have
  timeouts and limits), each answering a constant.
- **Flood**: up to ${FLOOD} connections that send nothing, from another process (the open-files
  limit is ${FILES} for both sides), held ${FLOOD_HOLD_S} s. "During": whether a normal request was answered
  while they were held; "after": ms from the flood's end to the first answered request.

| server | 2 MiB h2 ms | KiB per idle plain | KiB per idle TLS | flood plain: opened, during, after ms | flood TLS: opened, during, after ms | alive |
| --- | ---: | ---: | ---: | --- | --- | --- |
${connectionRows.join("\n")}
`
  }${
    webSocketRows.length === 0 ? "" : `
## WebSockets

${WEBSOCKETS} WebSockets open at once through each server's proxy (plain HTTP; denoserve
\`reverse_proxy\` with \`websocket: true\`, nginx \`proxy_pass\` with the Upgrade headers, Caddy
\`reverse_proxy\`) to one echo backend (a bare \`Deno.serve\` upgrading each request); each sends
32 bytes when its last message came back, for ${DURATION} s. The client runs in the benchmark's
own process.

| server | WebSockets open | echo round trips/s | ×nginx | ×Caddy |
| --- | ---: | ---: | ---: | ---: |
${webSocketRows.join("\n")}
`
  }${
    http3Rows.length === 0 ? "" : `
## HTTP/3

HTTP/3 (\`ssl.http3: true\`) against HTTP/2 on the same server and port: 1 KiB files per second
with ${H3_STREAMS} requests in flight on one connection for ${DURATION} s, and the median of
${H3_DOWNLOADS} downloads of 10 MiB. The h3 client is the tests' own over \`Deno.connectQuic\`
(there is no HTTP/3 load tool in Debian), the h2 client Deno's fetch on one HTTP/2 connection;
both run in the benchmark's process. Caddy serves HTTP/3 by default on its HTTPS port.

| server | h3 1 KiB req/s | h3 errors | h3 10 MiB ms | h2 1 KiB req/s | h2 errors | h2 10 MiB ms |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
${http3Rows.join("\n")}
`
  }${
    directiveRows.length === 0 ? "" : `
## Proxy directives

Through the same nginx backend: the 1 KiB answer with two header rules on the rule
(\`request_headers\` set with \`{client_ip}\`, \`response_headers\` remove), against the same denoserve
without them; a 100 KiB JSON answer compressed on the way at gzip level ${GZIP_LEVEL} by denoserve
(\`server.compression\`), nginx (\`gzip on; gzip_comp_level ${GZIP_LEVEL}\`) and Caddy
(\`encode { gzip ${GZIP_LEVEL} }\`), wrk sending \`Accept-Encoding: gzip\`; denoserve with zstd and
uncompressed beside them. Bytes: what wrk read per answer (head and body). ×first: req/s against
the first row of the workload.

| workload | server | req/s | min–max | p50 ms | bytes per answer | errors | ×first |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |
${directiveRows.join("\n")}
`
  }`;
  console.log(report);
  if (!QUICK) {
    await Deno.mkdir(`${ROOT}/bench`, { recursive: true });
    await Deno.writeTextFile(`${ROOT}/bench/results.md`, report);
  }
  await Deno.remove(WORK, { recursive: true }).catch(() => {});
}

if (import.meta.main) await main();
