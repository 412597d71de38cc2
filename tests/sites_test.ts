/**
 * Several sites on one server: the `sites:` list and its errors, the choice of a site by Host
 * (exact, wildcard, unknown, port and trailing dot), the certificate chosen by SNI, and the site
 * in the access log.
 */
import assert from "node:assert/strict";
import { makeCerts, servedCertificate } from "./support/certs.ts";
import { curl, hasCommand, runCli, spawnCli } from "./support/cli.ts";
import { rawRequest } from "./support/clients.ts";
import { configError } from "./support/config.ts";
import { echoBackend } from "./support/backends.ts";
import { tempDir, writeFiles } from "./support/files.ts";
import { freePort, startTestServer } from "./support/servers.ts";
import { HAVE_PEBBLE, startPebble } from "./support/pebble.ts";
import { eventually } from "./support/wait.ts";
import { listeningSockets } from "./support/proc.ts";
import { H3Client } from "./support/h3_client.ts";

/** A folder per site, each index.html naming it. */
async function siteFolders(dir: string, names: string[]) {
  const files: Record<string, string> = {};
  for (const name of names) files[`${name}/index.html`] = `site ${name}`;
  await writeFiles(dir, files);
}

/** The body of a raw answer. */
const bodyOf = (answer: { text: string }) => answer.text.slice(answer.text.indexOf("\r\n\r\n") + 4);

/** `GET path` with Host `host` over a raw connection: the status, the body and any Location. */
async function getWithHost(port: number, host: string, path = "/") {
  const answer = await rawRequest(
    port,
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
  );
  return {
    status: answer.status,
    body: bodyOf(answer),
    location: answer.headers.find(([k]) => k === "location")?.[1],
  };
}

const threeSites = (dir: string) => ({
  http: { static_dir: `${dir}/main` },
  sites: [
    { names: ["example.com", "www.example.com"], http: { static_dir: `${dir}/apex` } },
    { names: ["*.example.com"], http: { static_dir: `${dir}/wild` } },
    { names: ["api.example.com"], http: { static_dir: `${dir}/api` } },
  ],
});

Deno.test("sites: Host chooses the site, exact names before the wildcard, unknown goes to the default site", async () => {
  await using tmp = await tempDir();
  await siteFolders(tmp.path, ["main", "apex", "wild", "api"]);
  await using srv = await startTestServer(threeSites(tmp.path));
  const port = srv.server.addr.port;
  const cases: [string, string][] = [
    ["example.com", "apex"],
    ["www.example.com", "apex"],
    ["api.example.com", "api"], // exact beats *.example.com, although listed after it
    ["shop.example.com", "wild"],
    ["a.b.example.com", "main"], // a wildcard covers one label only
    ["other.test", "main"],
    ["EXAMPLE.COM", "apex"],
    ["example.com.", "apex"],
    [`example.com:${port}`, "apex"],
    [`Api.Example.Com.:${port}`, "api"],
    ["127.0.0.1", "main"],
    ["[::1]:8000", "main"],
  ];
  for (const [host, site] of cases) {
    const got = await getWithHost(port, host);
    assert.equal(got.status, 200, host);
    assert.equal(got.body, `site ${site}`, `Host: ${host}`);
  }
  // HTTP/1.0 without Host: the default site.
  const old = await rawRequest(port, "GET / HTTP/1.0\r\n\r\n");
  assert.equal(bodyOf(old), "site main");
});

Deno.test("sites: server.unknown_host: 421 answers a Host of no site with 421; the access log names the site", async () => {
  await using tmp = await tempDir();
  await siteFolders(tmp.path, ["main", "apex", "wild", "api"]);
  const raw = threeSites(tmp.path);
  await using srv = await startTestServer({ ...raw, server: { unknown_host: 421 } });
  const port = srv.server.addr.port;
  assert.equal((await getWithHost(port, "other.test")).status, 421);
  assert.equal((await getWithHost(port, "a.b.example.com")).status, 421);
  assert.equal((await getWithHost(port, "shop.example.com")).body, "site wild");
  const noHost = await rawRequest(port, "GET / HTTP/1.0\r\n\r\n");
  assert.equal(bodyOf(noHost), "site main", "a request without Host is the default site's");
  srv.log.flush();
  const access = srv.log.lines.filter((l) => l.startsWith("ACCESS "));
  assert.ok(access.some((l) => /" 421 /.test(l) && !l.includes("site=")), access.join("\n"));
  assert.ok(access.some((l) => /" 200 .*site=\*\.example\.com /.test(l)), access.join("\n"));
  assert.ok(access.some((l) => /" 200 .*site=default /.test(l)), access.join("\n"));
});

Deno.test("sites: server.unknown_host: close closes the connection of a Host of no site unanswered, over HTTP/1.1 and HTTP/2 (logged 444)", async () => {
  await using tmp = await tempDir();
  await siteFolders(tmp.path, ["main", "apex", "wild", "api"]);
  const raw = threeSites(tmp.path);
  await using srv = await startTestServer({ ...raw, server: { unknown_host: "close" } });
  const port = srv.server.addr.port;
  // Kept alive: only the server's close ends it, with not one byte sent.
  const closed = await rawRequest(port, "GET / HTTP/1.1\r\nHost: other.test\r\n\r\n", 10_000);
  assert.equal(closed.text, "");
  assert.ok(closed.closed, "the server closed the connection");
  assert.equal((await getWithHost(port, "shop.example.com")).body, "site wild");
  const noHost = await rawRequest(port, "GET / HTTP/1.0\r\n\r\n");
  assert.equal(bodyOf(noHost), "site main", "a request without Host is the default site's");
  if (hasCommand("curl") !== null) {
    // HTTP/2 without TLS (prior knowledge): the connection ends, curl gets no answer.
    const h2 = await curl([
      "-sS",
      "--http2-prior-knowledge",
      "-H",
      "Host: other.test",
      `http://127.0.0.1:${port}/`,
    ]);
    assert.notEqual(h2.code, 0, h2.stdout);
    assert.equal(h2.stdout, "");
  }
  srv.log.flush();
  const access = srv.log.lines.filter((l) => l.startsWith("ACCESS "));
  assert.ok(access.some((l) => /" 444 /.test(l)), access.join("\n"));
  assert.match(
    configError({ server: { unknown_host: 444 }, sites: [{ names: ["a.test"] }] }),
    /server\.unknown_host must be "default", 421 or "close"/,
  );
});

Deno.test("sites: a single-site file has no site in its access lines", async () => {
  await using tmp = await tempDir();
  await siteFolders(tmp.path, ["main"]);
  await using srv = await startTestServer({ http: { static_dir: `${tmp.path}/main` } });
  assert.equal((await getWithHost(srv.server.addr.port, "example.com")).body, "site main");
  srv.log.flush();
  const access = srv.log.lines.filter((l) => l.startsWith("ACCESS "));
  assert.equal(access.length, 1);
  assert.doesNotMatch(access[0], /site=/);
});

Deno.test("sites: each site has its own redirect_instructions, none of the default site's", async () => {
  await using tmp = await tempDir();
  await siteFolders(tmp.path, ["main", "apex"]);
  await using srv = await startTestServer({
    http: { static_dir: `${tmp.path}/main` },
    server: { redirect_instructions: [{ "/old": "/main-new" }] },
    sites: [{
      names: ["example.com"],
      http: { static_dir: `${tmp.path}/apex` },
      server: { redirect_instructions: [{ from: "/old", to: "/apex-new", status: 301 }] },
    }],
  });
  const port = srv.server.addr.port;
  const main = await getWithHost(port, "a.test", "/old");
  assert.equal(main.status, 302);
  assert.equal(main.location, "/main-new");
  const apex = await getWithHost(port, "example.com", "/old");
  assert.equal(apex.status, 301);
  assert.equal(apex.location, "/apex-new");
});

Deno.test("sites: the README's shape: www redirects every path to the apex, the API site proxies, the default site serves files", async () => {
  await using tmp = await tempDir();
  await siteFolders(tmp.path, ["main"]);
  await using api = echoBackend("api");
  await using srv = await startTestServer({
    version: 2,
    http: { static_dir: `${tmp.path}/main` },
    sites: [
      {
        names: ["www.example.com"],
        extensions: [{
          type: "routing",
          config: {
            regex_locations: { __default__: { return: "301 https://example.com$request_uri" } },
          },
        }],
      },
      {
        names: ["api.example.com"],
        server: { reverse_proxy: [{ path: "/", host: "127.0.0.1", port: api.port }] },
      },
    ],
  });
  const port = srv.server.addr.port;
  const www = await getWithHost(port, "www.example.com", "/a/b?c=1");
  assert.equal(www.status, 301);
  assert.equal(www.location, "https://example.com/a/b?c=1");
  const proxied = await getWithHost(port, "api.example.com", "/v1/x");
  assert.equal(proxied.status, 200);
  assert.equal(JSON.parse(proxied.body).path, "/v1/x");
  assert.equal((await getWithHost(port, "example.com")).body, "site main");
});

/** `--test configuration` in `dir` with `yaml` as its config.yaml. */
async function testConfiguration(dir: string, yaml: string) {
  await writeFiles(dir, { "config.yaml": yaml });
  return await runCli(["--test", "configuration"], { cwd: dir });
}

Deno.test("sites: a name given twice, a wildcard not one leading label and a site without names are errors naming file:line", async () => {
  await using tmp = await tempDir();
  const out = await testConfiguration(
    tmp.path,
    [
      "sites:", //                          1
      "  - names: [example.com]", //         2
      "  - names: ['*.*.example.com']", //   3
      "  - names: ['a.*.example.com']", //   4
      "  - names: []", //                    5
      "  - http: { static_dir: ./x }", //   6
      "",
    ].join("\n"),
  );
  assert.equal(out.code, 2, out.stdout + out.stderr);
  const lines = out.stdout.split("\n").filter((l) => l.startsWith("FAIL"));
  const expected = [
    /config\.yaml:3:\d+: sites\[1\]\.names\[0\] has a wildcard that is not one whole leading label/,
    /config\.yaml:4:\d+: sites\[2\]\.names\[0\] has a wildcard that is not one whole leading label/,
    /config\.yaml:5:\d+: sites\[3\]\.names must list at least one name/,
    /config\.yaml:6:\d+: sites\[4\]\.names must be a list of host names/,
  ];
  assert.equal(lines.length, expected.length, out.stdout);
  expected.forEach((re, i) => assert.match(lines[i], re));
  // A name given twice, in any spelling.
  const twice = await testConfiguration(
    tmp.path,
    "sites:\n  - names: [example.com]\n  - names:\n      - www.example.com\n      - Example.com.\n",
  );
  assert.equal(twice.code, 2, twice.stdout + twice.stderr);
  assert.match(
    twice.stdout,
    /config\.yaml:5:\d+: sites\[1\]\.names\[1\] repeats "example\.com" of sites\[0\]\.names\[0\]/,
  );
  // A start refuses it in the same words, exit 2.
  const start = await runCli(["-p", "0"], { cwd: tmp.path });
  assert.equal(start.code, 2);
  assert.match(start.stderr, /config\.yaml:5:\d+: sites\[1\]\.names\[1\] repeats "example\.com"/);
});

Deno.test("sites: a certificate that does not cover the site's names is a warning naming both, from --test and a start", async () => {
  await using tmp = await tempDir();
  const main = await makeCerts(tmp.path, { name: "main", names: ["main.test"] });
  const other = await makeCerts(tmp.path, { name: "other", names: ["other.test"] });
  await siteFolders(tmp.path, ["static"]);
  const yaml = [
    "ssl:",
    "  enabled: true",
    `  cert_file: ${main.cert}`,
    `  key_file: ${main.key}`,
    "sites:",
    "  - names: [other.test, www.other.test]", // 6
    "    ssl:",
    `      cert_file: ${other.cert}`, // 8
    `      key_file: ${other.key}`,
    "  - names: [third.test]", // 10
    "",
  ].join("\n");
  const out = await testConfiguration(tmp.path, yaml);
  assert.equal(out.code, 1, out.stdout + out.stderr);
  assert.match(
    out.stdout,
    new RegExp(
      `^WARN .*config\\.yaml:8:\\d+: sites\\[0\\]: the certificate ${other.cert} does not cover ` +
        "www\\.other\\.test \\(it names other\\.test\\)",
      "m",
    ),
  );
  assert.match(
    out.stdout,
    new RegExp(
      `^WARN .*config\\.yaml:10:\\d+: sites\\[1\\]: the certificate ${main.cert} \\(ssl\\.cert_file\\) ` +
        "does not cover third\\.test",
      "m",
    ),
  );
  await using srv = await spawnCli(["-p", "0"], { cwd: tmp.path });
  assert.match(
    srv.output(),
    /WARNING.*sites\[0\]: the certificate .* does not cover www\.other\.test/,
  );
  assert.match(srv.output(), /WARNING.*sites\[1\]: the certificate .* does not cover third\.test/);
});

const hasOpenssl = hasCommand("openssl") !== null;

/** The subject alternative names of the certificate openssl gets for `servername` (or none). */
async function servedNames(port: number, servername?: string): Promise<string> {
  return (await servedCertificate(port, servername ?? null)).subjectAltName ?? "";
}

/** Two sites with certificates of their own, a third on the default certificate. */
async function tlsSites(dir: string) {
  await siteFolders(dir, ["main", "a", "b", "wild"]);
  const main = await makeCerts(dir, { name: "main", names: ["main.test", "shared.test"] });
  const a = await makeCerts(dir, { name: "a", names: ["a.test", "www.a.test"] });
  const b = await makeCerts(dir, { name: "b", names: ["b.test", "*.b.test"] });
  return {
    ca: a.ca,
    caPem: a.caPem,
    config: {
      http: { static_dir: `${dir}/main` },
      ssl: { enabled: true, cert_file: main.cert, key_file: main.key },
      sites: [
        {
          names: ["a.test", "www.a.test"],
          http: { static_dir: `${dir}/a` },
          ssl: { cert_file: a.cert, key_file: a.key, hsts: "max-age=60" },
        },
        {
          names: ["b.test", "*.b.test"],
          http: { static_dir: `${dir}/b` },
          ssl: { cert_file: b.cert, key_file: b.key },
        },
        { names: ["shared.test"], http: { static_dir: `${dir}/wild` } },
      ],
    },
  };
}

Deno.test({
  name: "sites: openssl s_client gets each site's certificate by SNI, the default one without SNI",
  ignore: !hasOpenssl,
  async fn() {
    await using tmp = await tempDir();
    const { config } = await tlsSites(tmp.path);
    await using srv = await startTestServer(config);
    const port = srv.server.addr.port;
    assert.equal(await servedNames(port, "a.test"), "DNS:a.test, DNS:www.a.test");
    assert.equal(await servedNames(port, "WWW.A.TEST"), "DNS:a.test, DNS:www.a.test");
    assert.equal(await servedNames(port, "b.test"), "DNS:b.test, DNS:*.b.test");
    assert.equal(await servedNames(port, "x.b.test"), "DNS:b.test, DNS:*.b.test");
    assert.equal(await servedNames(port, "shared.test"), "DNS:main.test, DNS:shared.test");
    assert.equal(await servedNames(port, "unknown.test"), "DNS:main.test, DNS:shared.test");
    assert.equal(await servedNames(port), "DNS:main.test, DNS:shared.test");
  },
});

Deno.test({
  name:
    "sites: curl --resolve reaches each site by name over HTTP/2 and HTTP/1.1, verified, with its HSTS",
  ignore: hasCommand("curl") === null,
  async fn() {
    await using tmp = await tempDir();
    const { config, ca } = await tlsSites(tmp.path);
    await using srv = await startTestServer(config);
    const port = srv.server.addr.port;
    const cases: [string, string, string][] = [
      ["a.test", "site a", "max-age=60"],
      ["www.a.test", "site a", "max-age=60"],
      ["b.test", "site b", ""],
      ["x.b.test", "site b", ""],
      ["shared.test", "site wild", ""],
      ["main.test", "site main", ""],
    ];
    for (const version of ["--http2", "--http1.1"]) {
      for (const [name, body, hsts] of cases) {
        const out = await curl([
          "-sS",
          version,
          "--cacert",
          ca,
          "--resolve",
          `${name}:${port}:127.0.0.1`,
          "-D",
          "-",
          `https://${name}:${port}/`,
        ]);
        assert.equal(out.code, 0, `${name}: ${out.stderr}`);
        assert.ok(out.stdout.endsWith(body), `${name} ${version}: ${out.stdout}`);
        const header = /^strict-transport-security: (.*)\r$/mi.exec(out.stdout)?.[1] ?? "";
        assert.equal(header, hsts, `${name} ${version} HSTS`);
      }
    }
  },
});

/**
 * `GET /` with Host `host` on a TLS connection opened for `sni` (after a PROXY protocol header in
 * clear when `proxied`): the status and body.
 */
async function getOverSni(port: number, caPem: string, sni: string, host: string, proxied = false) {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  if (proxied) await tcp.write(new TextEncoder().encode("PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n"));
  const conn = await Deno.startTls(tcp, { hostname: sni, caCerts: [caPem] });
  await conn.write(
    new TextEncoder().encode(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
  );
  const text = await new Response(conn.readable).text();
  return { status: Number(text.slice(9, 12)), body: text.slice(text.indexOf("\r\n\r\n") + 4) };
}

Deno.test("sites: a Host whose site has another certificate than the SNI chose gets 421, over HTTP/1.1 and HTTP/2; names one certificate covers share a connection", async () => {
  await using tmp = await tempDir();
  const { config, caPem, ca } = await tlsSites(tmp.path);
  await using srv = await startTestServer(config);
  const port = srv.server.addr.port;
  // HTTP/1.1, raw: the SNI of the hello and the Host of the request disagree.
  const misdirected = await getOverSni(port, caPem, "a.test", "b.test");
  assert.equal(misdirected.status, 421, misdirected.body);
  assert.equal((await getOverSni(port, caPem, "x.b.test", "a.test")).status, 421);
  assert.equal((await getOverSni(port, caPem, "main.test", "a.test")).status, 421);
  assert.equal((await getOverSni(port, caPem, "a.test", "main.test")).status, 421);
  // Same certificate: the site of the Host answers.
  assert.deepEqual(await getOverSni(port, caPem, "a.test", "WWW.A.TEST."), {
    status: 200,
    body: "site a",
  });
  assert.deepEqual(await getOverSni(port, caPem, "b.test", "x.b.test:443"), {
    status: 200,
    body: "site b",
  });
  // main.test's certificate also covers shared.test, another site: a browser may reuse the
  // connection (HTTP/2 coalescing), and it works.
  assert.deepEqual(await getOverSni(port, caPem, "main.test", "shared.test"), {
    status: 200,
    body: "site wild",
  });
  // A Host no site names is served the default certificate too: not misdirected from main.test.
  assert.equal((await getOverSni(port, caPem, "main.test", "nothing.test")).status, 200);
  assert.equal((await getOverSni(port, caPem, "a.test", "nothing.test")).status, 421);
  assert.ok(
    srv.log.lines.some((l) => /"GET \/" 421 /.test(l)),
    srv.log.lines.join("\n"),
  );

  // HTTP/2 through curl: one connection opened for main.test, then requests for other names on it.
  if (hasCommand("curl") === null) return console.log("curl part skipped: no curl on PATH");
  const common = [
    "-sS",
    "--http2",
    "--cacert",
    ca,
    "--connect-to",
    `::127.0.0.1:${port}`,
    "-o",
    "/dev/null",
    "-w",
    "%{http_code} %{http_version} %{num_connects}\\n",
  ];
  // `--next` keeps the connection: the later requests go on the first one's.
  const out = await curl([
    ...common,
    `https://main.test:${port}/`,
    "--next",
    ...common,
    "-H",
    "Host: a.test",
    `https://main.test:${port}/`,
    "--next",
    ...common,
    "-H",
    "Host: shared.test",
    `https://main.test:${port}/`,
  ]);
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout, "200 2 1\n421 2 0\n200 2 0\n", out.stdout);
});

Deno.test("sites: behind the PROXY protocol too, a Host of another certificate than the SNI chose gets 421", async () => {
  await using tmp = await tempDir();
  const { config, caPem } = await tlsSites(tmp.path);
  await using srv = await startTestServer({ ...config, server: { proxy_protocol: true } });
  const port = srv.server.addr.port;
  assert.equal((await getOverSni(port, caPem, "a.test", "b.test", true)).status, 421);
  assert.deepEqual(await getOverSni(port, caPem, "x.b.test", "b.test", true), {
    status: 200,
    body: "site b",
  });
  const access = () => srv.log.lines.filter((l) => l.startsWith("ACCESS"));
  // The line of an answer is written once its body has been sent.
  assert.ok(await eventually(() => access().length === 2, 10_000), access().join("\n"));
  assert.ok(access().every((l) => l.includes("192.0.2.1")), access().join("\n"));
});

Deno.test("sites: Deno.connectTls with each SNI name verifies the site's certificate and gets its page", async () => {
  await using tmp = await tempDir();
  const { config, caPem } = await tlsSites(tmp.path);
  await using srv = await startTestServer(config);
  const port = srv.server.addr.port;
  for (const [name, body] of [["a.test", "site a"], ["x.b.test", "site b"]]) {
    const conn = await Deno.connectTls({ hostname: name, port, caCerts: [caPem] }).catch(
      async () => {
        // The name does not resolve here: connect to 127.0.0.1 and send the name as SNI.
        const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
        return await Deno.startTls(tcp, { hostname: name, caCerts: [caPem] });
      },
    );
    try {
      await conn.write(
        new TextEncoder().encode(`GET / HTTP/1.1\r\nHost: ${name}\r\nConnection: close\r\n\r\n`),
      );
      const text = await new Response(conn.readable).text();
      assert.match(text, /^HTTP\/1\.1 200/);
      assert.ok(text.endsWith(body), text);
    } catch (e) {
      conn.close();
      throw e;
    }
  }
});

Deno.test({
  name:
    "sites: ACME orders one certificate for the default site's and every site's names (pebble, real http-01), served by SNI; port 80 redirects both",
  ignore: !HAVE_PEBBLE || hasCommand("curl") === null,
  async fn() {
    await using pebble = await startPebble();
    await using tmp = await tempDir();
    const dir = tmp.path;
    await siteFolders(dir, ["main", "other", "own"]);
    const own = await makeCerts(dir, { name: "own", names: ["own.test"] });
    await writeFiles(dir, {
      "config.yaml": [
        "server:\n  port: 0\nhttp:\n  static_dir: ./main\nssl:\n  enabled: true",
        `  redirect_http: ${pebble.httpPort}`,
        "  acme:\n    email: admin@example.com\n    domains: [example.test]",
        `    directory_url: ${pebble.directoryUrl}\n    ca_file: ${pebble.caFile}`,
        `    storage: ./acme\n    http_port: ${pebble.httpPort}`,
        "sites:",
        "  - names: [other.test, www.other.test]\n    http: { static_dir: ./other }",
        "  - names: [own.test]\n    http: { static_dir: ./own }",
        `    ssl: { cert_file: ${own.cert}, key_file: ${own.key} }`,
        "",
      ].join("\n"),
    });
    const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(pebble.caFile)] });
    const root = await (await fetch(`${pebble.managementUrl}/roots/0`, { client })).text();
    client.close();
    await Deno.writeTextFile(`${dir}/root.pem`, root + await Deno.readTextFile(own.ca));
    await using server = await spawnCli(["-c", `${dir}/config.yaml`]);
    assert.match(server.url, /^https:/);
    const port = Number(new URL(server.url).port);
    // One order, for the default site's domain and both names of the site without files.
    assert.deepEqual(
      (await servedNames(port, "www.other.test")).split(", ").sort(),
      ["DNS:example.test", "DNS:other.test", "DNS:www.other.test"],
    );
    assert.equal(await servedNames(port, "own.test"), "DNS:own.test");
    assert.match(pebble.output(), /Issued certificate serial/i);
    for (
      const [name, body] of [
        ["example.test", "site main"],
        ["other.test", "site other"],
        ["www.other.test", "site other"],
        ["own.test", "site own"],
      ]
    ) {
      const out = await curl([
        "-sS",
        "--cacert",
        `${dir}/root.pem`,
        "--resolve",
        `${name}:${port}:127.0.0.1`,
        `https://${name}:${port}/`,
      ]);
      assert.equal(out.stdout, body, `${name}: ${out.stderr}`);
    }
    // The port-80 listener (ACME's, redirect_http on the same port) redirects every site.
    for (const name of ["example.test", "other.test", "own.test"]) {
      const answer = await getWithHost(pebble.httpPort, name, "/a?b");
      assert.equal(answer.status, 308, name);
      assert.equal(
        answer.location,
        `https://${name}:${port}/a?b`,
      );
    }
  },
});

/** A TLS connection kept alive, sending one HTTP/1.1 request at a time with `Host` = its SNI. */
async function keptConnection(port: number, name: string, caPem: string) {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  const conn = await Deno.startTls(tcp, { hostname: name, caCerts: [caPem] });
  const dec = new TextDecoder();
  let buffered = "";
  const buf = new Uint8Array(16 * 1024);
  return {
    async get(path = "/"): Promise<string> {
      await conn.write(new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: ${name}\r\n\r\n`));
      for (;;) {
        const end = buffered.indexOf("\r\n\r\n");
        if (end >= 0) {
          const length = Number(/^content-length: *(\d+)/mi.exec(buffered.slice(0, end))?.[1]);
          if (buffered.length >= end + 4 + length) {
            const body = buffered.slice(end + 4, end + 4 + length);
            buffered = buffered.slice(end + 4 + length);
            return body;
          }
        }
        const n = await conn.read(buf);
        if (n === null) throw new Error(`the connection for ${name} was closed`);
        buffered += dec.decode(buf.subarray(0, n), { stream: true });
      }
    },
    [Symbol.dispose]() {
      try {
        conn.close();
      } catch { /* closed */ }
    },
  };
}

Deno.test({
  name:
    "sites: SIGHUP adds, changes and removes sites, and a site's new certificate is taken, while another site's open connection goes on",
  ignore: !hasOpenssl,
  async fn() {
    await using tmp = await tempDir();
    const dir = tmp.path;
    await siteFolders(dir, ["main", "a", "a2", "b"]);
    const main = await makeCerts(dir, { name: "main", names: ["main.test"] });
    const a = await makeCerts(dir, { name: "a", names: ["a.test"] });
    const b = await makeCerts(dir, { name: "b", names: ["b.test"] });
    const yaml = (sites: string[]) =>
      [
        "server:\n  port: 0\nhttp:\n  static_dir: ./main\nssl:\n  enabled: true",
        `  cert_file: ${main.cert}\n  key_file: ${main.key}`,
        "sites:",
        ...sites,
        "",
      ].join("\n");
    const siteA = (folder: string) =>
      `  - names: [a.test]\n    http: { static_dir: ./${folder} }\n` +
      `    ssl: { cert_file: ${a.cert}, key_file: ${a.key} }`;
    const siteB = "  - names: [b.test]\n    http: { static_dir: ./b }\n" +
      `    ssl: { cert_file: ${dir}/b-live.pem, key_file: ${dir}/b-live-key.pem }`;
    await Deno.copyFile(b.cert, `${dir}/b-live.pem`);
    await Deno.copyFile(b.key, `${dir}/b-live-key.pem`);
    await writeFiles(dir, { "config.yaml": yaml([siteA("a")]) });
    await using cli = await spawnCli(["-c", "config.yaml"], { cwd: dir });
    const port = Number(new URL(cli.url).port);
    using kept = await keptConnection(port, "a.test", a.caPem);
    assert.equal(await kept.get(), "site a");
    assert.equal(await servedNames(port, "b.test"), "DNS:main.test", "no site b yet");

    // Added: site b with its certificate; site a's folder changed.
    await writeFiles(dir, { "config.yaml": yaml([siteA("a2"), siteB]) });
    cli.process.kill("SIGHUP");
    await cli.waitFor(/reloaded configuration.*\n/);
    assert.equal(await kept.get(), "site a2", "the open connection is served by the new table");
    assert.equal(await servedNames(port, "b.test"), "DNS:b.test");
    assert.equal(await getWithHostTls(port, "b.test", a.caPem), "site b");

    // Site b's certificate replaced on disk: taken without a signal; site a's connection goes on.
    const b2 = await makeCerts(dir, { name: "b2", names: ["b.test", "www.b.test"] });
    await Deno.copyFile(b2.key, `${dir}/b-live-key.pem`);
    await Deno.copyFile(b2.cert, `${dir}/b-live.pem`);
    await cli.waitFor(/certificate reloaded/, 15_000);
    assert.equal(await servedNames(port, "b.test"), "DNS:b.test, DNS:www.b.test");
    assert.equal(await servedNames(port, "a.test"), "DNS:a.test");
    assert.equal(await kept.get(), "site a2");

    // Removed: b.test now goes to the default site, with the default certificate.
    await writeFiles(dir, { "config.yaml": yaml([siteA("a2")]) });
    const reloads = cli.output().match(/reloaded configuration/g)!.length;
    cli.process.kill("SIGHUP");
    assert.ok(
      await eventually(() => cli.output().match(/reloaded configuration/g)!.length > reloads),
    );
    assert.equal(await servedNames(port, "b.test"), "DNS:main.test");
    assert.equal(await kept.get(), "site a2");
    assert.doesNotMatch(cli.output(), /ERROR/);
  },
});

Deno.test({
  name:
    "sites: a SIGHUP that gives a site its own certificate turns the 421 on for new connections; one opened before goes on",
  ignore: !hasOpenssl,
  async fn() {
    await using tmp = await tempDir();
    const dir = tmp.path;
    await siteFolders(dir, ["main", "a"]);
    const main = await makeCerts(dir, { name: "main", names: ["main.test", "a.test"] });
    const a = await makeCerts(dir, { name: "a", names: ["a.test"] });
    const yaml = (ssl: string) =>
      "server:\n  port: 0\nhttp:\n  static_dir: ./main\nssl:\n  enabled: true\n" +
      `  cert_file: ${main.cert}\n  key_file: ${main.key}\n` +
      `sites:\n  - names: [a.test]\n    http: { static_dir: ./a }\n${ssl}`;
    await writeFiles(dir, { "config.yaml": yaml("") });
    await using cli = await spawnCli(["-c", "config.yaml"], { cwd: dir });
    const port = Number(new URL(cli.url).port);
    // One certificate for both names: no 421.
    assert.equal((await getOverSni(port, main.caPem, "main.test", "a.test")).status, 200);
    using kept = await keptConnection(port, "a.test", main.caPem);
    assert.equal(await kept.get(), "site a");

    await writeFiles(dir, {
      "config.yaml": yaml(`    ssl: { cert_file: ${a.cert}, key_file: ${a.key} }\n`),
    });
    cli.process.kill("SIGHUP");
    await cli.waitFor(/reloaded configuration.*\n/);
    // A connection made in the instant the old listener closes can be reset unless
    // net.ipv4.tcp_migrate_req=1 (README, HTTPS): wait until the old one has closed.
    assert.ok(await eventually(() => listeningSockets(port) === 1, 10_000));
    assert.equal((await getOverSni(port, main.caPem, "main.test", "a.test")).status, 421);
    assert.deepEqual(await getOverSni(port, a.caPem, "a.test", "a.test"), {
      status: 200,
      body: "site a",
    });
    assert.equal(await kept.get(), "site a", "the connection opened before goes on");
  },
});

/** `GET /` over a new TLS connection whose SNI and Host are `name`, verified with `caPem`. */
async function getWithHostTls(port: number, name: string, caPem: string): Promise<string> {
  using conn = await keptConnection(port, name, caPem);
  return await conn.get();
}

Deno.test({
  name:
    "sites: over HTTP/2 and HTTP/1.1, a Host of no site gets 421 with unknown_host: 421, and a connection reused for another name its certificate covers is answered by that name's site",
  ignore: hasCommand("curl") === null,
  async fn() {
    await using tmp = await tempDir();
    const { config, ca } = await tlsSites(tmp.path);
    await using srv = await startTestServer({ ...config, server: { unknown_host: 421 } });
    const port = srv.server.addr.port;
    const ask = (version: string, sni: string, host: string) =>
      curl([
        "-sS",
        version,
        "--cacert",
        ca,
        "--resolve",
        `${sni}:${port}:127.0.0.1`,
        "-H",
        `Host: ${host}`,
        "-w",
        " %{http_code} %{http_version}",
        `https://${sni}:${port}/`,
      ]);
    for (const [version, shown] of [["--http2", "2"], ["--http1.1", "1.1"]]) {
      // main.test's certificate (the default one) also names shared.test, another site's: the
      // connection made for main.test serves shared.test's requests (HTTP/2 connection reuse).
      const reused = await ask(version, "main.test", "shared.test");
      assert.equal(reused.stdout, `site wild 200 ${shown}`, reused.stderr);
      const unknown = await ask(version, "main.test", "nowhere.test");
      assert.match(unknown.stdout, new RegExp(` 421 ${shown.replace(".", "\\.")}$`));
      assert.match(unknown.stdout, /Misdirected Request/);
    }
  },
});

Deno.test({
  name:
    "sites: HTTP/3 serves the sites its certificate (the default one) covers, by :authority; Alt-Svc is announced only to those",
  ignore: hasCommand("curl") === null,
  async fn() {
    await using tmp = await tempDir();
    const { config, ca, caPem } = await tlsSites(tmp.path);
    await using srv = await startTestServer({ ...config, ssl: { ...config.ssl, http3: true } });
    const port = srv.server.addr.port;
    const altSvc = async (name: string) => {
      const out = await curl([
        "-sS",
        "--http2",
        "--cacert",
        ca,
        "--resolve",
        `${name}:${port}:127.0.0.1`,
        "-D",
        "-",
        "-o",
        "/dev/null",
        `https://${name}:${port}/`,
      ]);
      return /^alt-svc: (.*)\r$/mi.exec(out.stdout)?.[1] ?? "";
    };
    assert.equal(await altSvc("main.test"), `h3=":${port}"; ma=86400`);
    assert.equal(await altSvc("shared.test"), `h3=":${port}"; ma=86400`);
    assert.equal(
      await altSvc("a.test"),
      "",
      "a.test has its own certificate, which QUIC cannot serve",
    );
    assert.equal(await altSvc("x.b.test"), "");
    await using h3 = await H3Client.connect(port, caPem, { serverName: "shared.test" });
    for (const [authority, body] of [["shared.test", "site wild"], ["main.test", "site main"]]) {
      const answer = await h3.request("/", { authority: `${authority}:${port}` });
      assert.equal(answer.status, 200);
      assert.equal(answer.text(), body, authority);
    }
    // The QUIC listener has the default certificate only: a client that verifies a.test refuses it.
    await assert.rejects(H3Client.connect(port, caPem, { serverName: "a.test" }));
  },
});

Deno.test("sites: metrics label each site's requests with the site", async () => {
  await using tmp = await tempDir();
  await siteFolders(tmp.path, ["main", "a"]);
  const monitoring = [{ type: "monitoring", config: { metrics: { enabled: true } } }];
  await using srv = await startTestServer({
    version: 2,
    http: { static_dir: `${tmp.path}/main` },
    extensions: monitoring,
    sites: [{
      names: ["a.test"],
      http: { static_dir: `${tmp.path}/a` },
      extensions: monitoring,
    }],
  });
  const port = srv.server.addr.port;
  for (let i = 0; i < 3; i++) assert.equal((await getWithHost(port, "a.test")).body, "site a");
  assert.equal((await getWithHost(port, "main.test")).body, "site main");
  const metrics = await getWithHost(port, "main.test", "/metrics");
  const text = metrics.body;
  assert.match(text, /^denoserve_requests_total\{route="static",site="a\.test",status="2xx"\} 3$/m);
  assert.match(text, /^denoserve_requests_total\{route="static",site="default",status="2xx"\} 1$/m);
  assert.match(text, /^denoserve_response_bytes_total\{route="static",site="a\.test"\} 18$/m);
});

Deno.test("sites: a site's extension read from a source: file, whose errors point into that file", async () => {
  await using tmp = await tempDir();
  await siteFolders(tmp.path, ["main", "a"]);
  await writeFiles(tmp.path, {
    "routing-a.yaml": 'regex_locations:\n  =/hello:\n    return: "200 hello from a"\n',
    "bad.yaml": 'regex_locations:\n  =/x:\n    content_type: text/plain\n    return: "999 x"\n',
    "config.yaml": [
      "version: 2",
      "http: { static_dir: ./main }",
      "sites:",
      "  - names: [a.test]",
      "    http: { static_dir: ./a }",
      "    extensions:",
      "      - type: routing",
      "        source: ./routing-a.yaml",
      "",
    ].join("\n"),
  });
  await using cli = await spawnCli(["-c", "config.yaml", "-p", "0"], { cwd: tmp.path });
  const port = Number(new URL(cli.url).port);
  const hello = await getWithHost(port, "a.test", "/hello");
  assert.equal(hello.body, "hello from a");
  assert.equal(
    (await getWithHost(port, "b.test", "/hello"))
      .status,
    404,
  );
  await Deno.writeTextFile(
    `${tmp.path}/config.yaml`,
    (await Deno.readTextFile(`${tmp.path}/config.yaml`)).replace("routing-a", "bad"),
  );
  const out = await runCli(["--test", "configuration"], { cwd: tmp.path });
  assert.equal(out.code, 2, out.stdout);
  assert.match(
    out.stdout,
    /bad\.yaml:4:\d+: sites\[0\]\.extensions\[0\]\.config\.regex_locations\["=\/x"\]\.return must be/,
  );
});

Deno.test("sites: JSON access lines carry the site; server.unknown_host without sites is a warning", async () => {
  await using tmp = await tempDir();
  await siteFolders(tmp.path, ["main", "a"]);
  await writeFiles(tmp.path, {
    "config.yaml": [
      "http: { static_dir: ./main }",
      "logging: { access_format: json }",
      "sites:",
      "  - names: [a.test]",
      "    http: { static_dir: ./a }",
      "",
    ].join("\n"),
  });
  await using cli = await spawnCli(["-c", "config.yaml", "-p", "0"], { cwd: tmp.path });
  const port = Number(new URL(cli.url).port);
  assert.equal((await getWithHost(port, "a.test")).body, "site a");
  await cli.waitFor(/"site":"a\.test"/);
  const line = cli.output().split("\n").find((l) => l.includes('"site":"a.test"'))!;
  const record = JSON.parse(line.slice(line.indexOf("{")));
  assert.equal(record.site, "a.test");
  assert.equal(record.status, 200);

  await writeFiles(tmp.path, { "config.yaml": "server:\n  unknown_host: 421\n" });
  const out = await runCli(["--test", "configuration"], { cwd: tmp.path });
  assert.equal(out.code, 1, out.stdout);
  assert.match(
    out.stdout,
    /^WARN .*config\.yaml:2:\d+: server\.unknown_host is ignored without sites/m,
  );
});

Deno.test("sites: ssl.redirect_http sends each site's plain requests to HTTPS on its own name", async () => {
  await using tmp = await tempDir();
  const { config } = await tlsSites(tmp.path);
  await using srv = await startTestServer({
    ...config,
    ssl: { ...config.ssl, redirect_http: freePort() },
  });
  const port = srv.server.addr.port;
  for (const name of ["a.test", "x.b.test", "main.test"]) {
    const answer = await getWithHost(srv.server.redirectAddr!.port, name, "/p?q");
    assert.equal(answer.status, 308, name);
    assert.equal(
      answer.location,
      `https://${name}:${port}/p?q`,
    );
  }
});

Deno.test("sites: a server-wide key in a site, a site key outside its section, a site's ssl without HTTPS and ACME in a site say where they belong", async () => {
  await using tmp = await tempDir();
  const misplaced = await testConfiguration(
    tmp.path,
    "sites:\n  - names: [a.test]\n    static_dir: ./x\n    server:\n      port: 9000\n",
  );
  assert.equal(misplaced.code, 1, misplaced.stdout);
  assert.match(
    misplaced.stdout,
    /config\.yaml:3:5: unknown key sites\[0\]\.static_dir is ignored \(did you mean "sites\[0\]\.http\.static_dir"\?\)/,
  );
  assert.match(
    misplaced.stdout,
    /config\.yaml:5:7: unknown key sites\[0\]\.server\.port is ignored \(server\.port is server-wide: set it at the top/,
  );
  const plain = await testConfiguration(
    tmp.path,
    "sites:\n  - names: [a.test]\n    ssl:\n      hsts: max-age=60\n",
  );
  assert.equal(plain.code, 1, plain.stdout);
  assert.match(
    plain.stdout,
    /config\.yaml:4:7: sites\[0\]\.ssl\.hsts is ignored while ssl\.enabled is false/,
  );
  const acme = await testConfiguration(
    tmp.path,
    "sites:\n  - names: [a.test]\n    ssl:\n      acme: { email: a@b.c, domains: [a.test] }\n",
  );
  assert.equal(acme.code, 2, acme.stdout);
  assert.match(
    acme.stdout,
    /config\.yaml:4:7: sites\[0\]\.ssl\.acme cannot be set for a site: set ssl\.acme at the top/,
  );
});

Deno.test("sites: response_headers are a site's own: each site sets and removes its headers, none of the default site's", async () => {
  await using tmp = await tempDir();
  await siteFolders(tmp.path, ["main", "b"]);
  await using srv = await startTestServer({
    http: { static_dir: `${tmp.path}/main` },
    server: { response_headers: { set: { "X-Site": "default" }, remove: ["Accept-Ranges"] } },
    sites: [{
      names: ["b.test"],
      server: { response_headers: { set: { "X-Site": "b {host}" } } },
      http: { static_dir: `${tmp.path}/b` },
    }],
  });
  const port = srv.server.addr.port;
  const get = (host: string) =>
    rawRequest(port, `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  const header = (a: { headers: [string, string][] }, name: string) =>
    a.headers.find(([k]) => k === name)?.[1];
  const main = await get("other.test");
  assert.equal(bodyOf(main), "site main");
  assert.equal(header(main, "x-site"), "default");
  assert.equal(header(main, "accept-ranges"), undefined);
  const b = await get("b.test");
  assert.equal(bodyOf(b), "site b");
  assert.equal(header(b, "x-site"), "b b.test");
  assert.equal(header(b, "accept-ranges"), "bytes");
});
