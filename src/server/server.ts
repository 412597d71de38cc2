/**
 * The listening side: our own listeners over HTTP or TLS (`listener.ts`), the route table
 * answering their requests, swapping the table and the listeners on reload, and a bounded
 * graceful stop.
 *
 * @module
 */
import { explainError } from "../http/errors.ts";
import { IpSet } from "../http/ip.ts";
import type { Config } from "../config/schema.ts";
import { redirectIsAcme, timeoutsMs, workerCount } from "../config/derived.ts";
import type { Logger } from "../log/logger.ts";
import type { App } from "../routes/build.ts";
import { addCertificateSource, addConnectionSource } from "../routes/metrics.ts";
import { type RequestContext, splitUrl, type Upgrade, urlAuthority } from "../http/types.ts";
import {
  describeMaterial,
  loadTlsMaterial,
  TlsError,
  type TlsMaterial,
  tlsMaterialFromPem,
} from "../tls/certs.ts";
import {
  Connections,
  type Exchange,
  type ExchangeHandler,
  listen,
  type Listening,
} from "./listener.ts";
import { redirectToHttps } from "../routes/https_redirect.ts";
import { openFilesLimit } from "./sockets.ts";
import { nativeCheck } from "./native_http.ts";
import { setHeaders } from "../http/headers.ts";
import { listenHttp3 } from "./http3/listener.ts";
import { loadSiteCertificates, sniResolver } from "../tls/sni.ts";
import { hostName, nameCovers } from "../config/sites.ts";

/** What the TLS listener takes: the default certificate, and with `sites` the choice by SNI. */
const keyPairs = (tls: TlsMaterial) => ({
  cert: tls.cert,
  key: tls.key,
  sni: tls.sites && sniResolver(tls, tls.sites),
});

/**
 * The context of a served request. The client's address is asked of the runtime only when
 * something reads it (a proxy header, a log line): asking costs about 6% of a small answer.
 */
class ServedContext implements RequestContext {
  route?: string;
  /** Set by the site dispatcher only (`routes/sites.ts`): no field at all on one site. */
  declare site?: string;
  requestId?: string;
  private session?: Upgrade;
  constructor(
    readonly path: string,
    readonly query: string,
    readonly secure: boolean,
    private readonly exchange: Exchange,
    private readonly request: Request,
  ) {}
  get remote(): Deno.NetAddr {
    return this.exchange.remoteAddr;
  }
  get sni(): string | undefined {
    return this.exchange.sni;
  }
  close() {
    this.exchange.close?.();
  }
  get protocol(): string | undefined {
    const alpn = this.exchange.alpn;
    return alpn === "h3" ? "HTTP/3" : alpn === "h2" ? "HTTP/2" : undefined;
  }
  get upgrade(): Upgrade | undefined {
    return this.session;
  }
  set upgrade(upgrade: Upgrade | undefined) {
    this.session = upgrade;
    if (upgrade) this.exchange.upgraded(upgrade.ended, upgrade.socket);
  }
  get authority(): string | null {
    const host = this.request.headers.get("host");
    if (host !== null) return host;
    const named = urlAuthority(this.request.url);
    return named === this.exchange.madeUp ? null : named;
  }
}

/** A listener stopped by itself; {@link RunningServer.finished} rejects with it. */
export class ListenerLost extends Error {}

export interface RunningServer {
  /** Where it listens (the real port when 0 was asked for); changes when a reload moves it. */
  readonly addr: Deno.NetAddr;
  /** The base URL clients use (`https://` when TLS is on). */
  readonly url: string;
  /** The configuration in service. */
  readonly config: Config;
  /** The certificate and key in service, when TLS is on. */
  readonly tls: TlsMaterial | undefined;
  /**
   * The plain-HTTP listener that redirects to HTTPS (`ssl.redirect_http`), when this server
   * opened it (not when the ACME challenge listener holds that port).
   */
  readonly redirectAddr: Deno.NetAddr | undefined;
  /** The HTTP/3 (QUIC, UDP) listener's address, when `ssl.http3` is on and this thread serves it. */
  readonly http3Addr: Deno.NetAddr | undefined;
  /** The connections of all its listeners: limits, timeouts and counts. */
  readonly connections: Connections;
  /** Serves new requests with `app` from now on; in-flight ones finish with the old one. */
  swap(app: App): void;
  /**
   * Takes `config` (and `app`, when given: the routes, HSTS and the access log are built into
   * it, so a configuration that changes them comes with its app) into service. Certificates are read again; when they,
   * the address or the TLS settings changed, new listeners open before the old ones stop
   * accepting and finish their in-flight requests. Throws (and changes nothing) when the new
   * certificates or listeners cannot be used.
   */
  reload(config: Config, app?: App): Promise<{ listenersReplaced: boolean }>;
  /** Stops accepting, lets in-flight requests finish for up to `timeoutMs`, then closes. */
  shutdown(timeoutMs?: number): Promise<void>;
  /**
   * Resolves when the server has shut down; rejects with {@link ListenerLost} (already logged)
   * when a listener stopped accepting by itself.
   */
  finished: Promise<void>;
}

/**
 * HTTP/3 limits, matched to what the HTTP/2 server (hyper) allows: a field section of 16 KiB
 * (its SETTINGS_MAX_HEADER_LIST_SIZE) and 100 requests in flight per connection.
 */
const HTTP3_MAX_FIELD_SECTION = 16 * 1024;
const HTTP3_MAX_STREAMS = 100;

const displayHost = (host: string) => host.includes(":") ? `[${host}]` : host;

/** Options of {@link startServer}. */
export interface StartOptions {
  /**
   * Join listeners that another worker of this process already holds on the same port
   * (SO_REUSEPORT) instead of reporting the port as in use. Default false.
   */
  sharePort?: boolean;
  /**
   * Told the main listener's address once it listens and again whenever a reload opens a new
   * one; the ACME challenge listener redirects to that port.
   */
  onListen?: (addr: Deno.NetAddr) => void;
  /**
   * The certificate and key in PEM, when they are not files: ACME with Redis storage keeps them
   * in memory only. Asked at start and at each reload instead of reading `ssl.cert_file`.
   */
  certificate?: () => { cert: string; key: string; source: string } | undefined;
}

/** A set of listeners opened together for one configuration. */
interface Generation {
  main: Listening;
  redirect?: Listening;
  /** HTTP/3 on the main listener's port number over UDP. */
  h3?: Listening;
  tls?: TlsMaterial;
  url: string;
}

/**
 * The connection limits of the whole process: `server.max_connections`, or by default the
 * open-files limit less a tenth of it (at least 128) for files, backends and logs; and
 * `server.max_connections_per_ip`. 0 is no limit.
 */
export function connectionLimits(config: Config): { max: number; perIp: number; files?: number } {
  const files = openFilesLimit();
  const max = config.server.max_connections ??
    (files === undefined ? 0 : Math.max(files - Math.max(128, Math.floor(files / 10)), 1));
  return { max, perIp: config.server.max_connections_per_ip, files };
}

/** Each thread of the process takes its share of the process's connection limit. */
function setLimits(connections: Connections, config: Config) {
  const { max, perIp } = connectionLimits(config);
  connections.max = max === 0
    ? 0
    : Math.max(1, Math.floor(max / workerCount(config.server.workers)));
  connections.maxPerIp = perIp;
  connections.retime(timeoutsMs(config));
}

/** With `-d`: what the connection layer did, every 10 s when something changed. */
function reportConnections(connections: Connections, log: Logger): () => void {
  let last = "";
  const timer = setInterval(() => {
    const { open, accepted, refused, timedOut, acceptErrors } = connections.stats;
    const line = `connections: ${open} open, ${accepted} accepted, ${refused.total} refused ` +
      `(${refused.perIp} over the per-client limit), closed by timeout: ` +
      Object.entries(timedOut).map(([stage, n]) => `${stage} ${n}`).join(", ") +
      `, accept errors ${acceptErrors}`;
    if (line !== last) log.debug(line);
    last = line;
  }, 10_000);
  Deno.unrefTimer(timer);
  return () => clearInterval(timer);
}

/**
 * Loads the certificates `config` names (or `certificate` hands over), logging their warnings and
 * (at debug) what they hold. (`ssl` keys set while HTTPS is off are warned about by the checks in
 * `app/validate.ts`.)
 */
export async function loadConfiguredTls(
  config: Config,
  log: Logger,
  certificate?: StartOptions["certificate"],
): Promise<TlsMaterial | undefined> {
  const { enabled, cert_file, key_file } = config.ssl;
  const given = enabled ? certificate?.() : undefined;
  if (!given && (!enabled || !cert_file || !key_file)) return undefined;
  const tls = given
    ? tlsMaterialFromPem(given.source, given.cert, `the key of ${given.source}`, given.key)
    : await loadTlsMaterial(cert_file!, key_file!);
  const sites = config.sites.length ? await loadSiteCertificates(config) : [];
  for (const material of [tls, ...sites.map((s) => s.tls)]) {
    for (const w of material.warnings) log.warn(w);
    if (log.enabled("DEBUG")) { for (const line of describeMaterial(material)) log.debug(line); }
  }
  return sites.length ? { ...tls, sites } : tls;
}

const sameTls = (a?: TlsMaterial, b?: TlsMaterial): boolean =>
  a === b || (a !== undefined && b !== undefined && a.cert === b.cert && a.key === b.key &&
    (a.sites?.length ?? 0) === (b.sites?.length ?? 0) &&
    (a.sites ?? []).every((s, i) =>
      sameTls(s.tls, b.sites![i].tls) && s.names.join() === b.sites![i].names.join()
    ));

let migrateChecked = false;
/**
 * When a listener sharing its port through SO_REUSEPORT closes, Linux resets the connections
 * still waiting in its accept queue unless net.ipv4.tcp_migrate_req hands them to the listener
 * that stays. Said once, when the first same-port swap happens.
 */
function checkMigrate(log: Logger) {
  if (migrateChecked || Deno.build.os !== "linux") return;
  migrateChecked = true;
  const path = "/proc/sys/net/ipv4/tcp_migrate_req";
  let value = "";
  try {
    // Only when already allowed: a permission prompt in the middle of a reload helps nobody.
    if (Deno.permissions.querySync({ name: "read", path }).state === "granted") {
      value = Deno.readTextFileSync(path).trim();
    }
  } catch { /* no /proc: say nothing */ }
  if (value === "0") {
    log.warn(
      "a connection the kernel queued on the old listener in the instant it closed may be " +
        "reset; set sysctl net.ipv4.tcp_migrate_req=1 to hand such connections to the new one",
    );
  }
}

/** Starts listening with `app` answering requests (over TLS when `config.ssl.enabled`). */
export async function startServer(
  config: Config,
  log: Logger,
  app: App,
  options: StartOptions = {},
): Promise<RunningServer> {
  let current = app;
  let active = config;
  // SO_REUSEPORT lets a new listener bind the port before the old one closes. Deno gates it
  // behind --unstable-net; without the flag the server still runs, but a new certificate (or a
  // switch between HTTP and HTTPS) on the same port cannot be taken without a restart.
  // Asking for it without the flag ends the process, so look first: Deno.listenDatagram exists
  // only under --unstable-net.
  const reusePort = typeof (Deno as unknown as Record<string, unknown>).listenDatagram ===
    "function";
  const debugConnections = log.enabled("DEBUG");
  const seen = new Set<string>();
  const connections = new Connections();
  nativeCheck((line) => log.warn(line));
  setLimits(connections, config);
  const stopReporting = debugConnections ? reportConnections(connections, log) : undefined;

  const noteConnection = (exchange: Exchange, secure: boolean, request: Request) => {
    const remote = exchange.remoteAddr;
    const id = `${displayHost(remote.hostname)}:${remote.port}`;
    if (seen.has(id)) return;
    if (seen.size >= 4096) seen.clear();
    seen.add(id);
    const over = exchange.alpn === "h3"
      ? "QUIC, HTTP/3"
      : secure
      ? `TLS, ALPN ${exchange.alpn ?? "not used"}`
      : `plain TCP, ${request.headers.has("host") ? "HTTP/1.x" : "HTTP/2 or HTTP/1.0"}`;
    log.debug(
      `connection from ${id} over ${over}, first request ${request.method} ` +
        splitUrl(request.url).path,
    );
  };

  const handlerFor = (secure: boolean): ExchangeHandler => (request, exchange) => {
    if (debugConnections) noteConnection(exchange, secure, request);
    const { path, query } = splitUrl(request.url);
    return current.handle(request, new ServedContext(path, query, secure, exchange, request));
  };

  /**
   * The HTTPS handler announcing HTTP/3 on `port` (RFC 7838) on its answers over TCP. With sites
   * that have certificates of their own, only to names the QUIC listener's certificate (the
   * default site's: QUIC takes one) covers; a browser told of it for another name would fail the
   * QUIC handshake.
   */
  const announcing = (handler: ExchangeHandler, port: number): ExchangeHandler => {
    const pairs: [string, string][] = [["alt-svc", `h3=":${port}"; ma=86400`]];
    const add = (response: Response) =>
      response.status === 101 ? response : setHeaders(response, pairs);
    const all: ExchangeHandler = (request, exchange) => {
      const response = handler(request, exchange);
      return response instanceof Promise ? response.then(add) : add(response);
    };
    // The certificate in service (a certificate-only reload swaps it under this handler).
    let seen: TlsMaterial | undefined;
    let sans: string[] = [];
    return (request, exchange) => {
      const tls = gen.tls;
      if (!tls?.sites?.length) return all(request, exchange);
      if (tls !== seen) {
        seen = tls;
        sans = tls.info.sans.filter((n) => n.startsWith("DNS:")).map((n) => n.slice(4));
      }
      const name = hostName(request.headers.get("host") ?? urlAuthority(request.url));
      return sans.some((san) => nameCovers(san, name))
        ? all(request, exchange)
        : handler(request, exchange);
    };
  };

  const onError = (error: unknown) => {
    log.error(`request failed: ${explainError(error, log.enabled("DEBUG"))}`);
    return current.errorResponse(500, new Request("http://x/"));
  };

  const listenOn = (
    hostname: string,
    port: number,
    tls: TlsMaterial | undefined,
    handler: ExchangeHandler,
    cfg: Config,
    proxyProtocol?: IpSet,
  ): Listening => {
    try {
      return listen({
        hostname,
        port,
        reusePort,
        tcpBacklog: cfg.server.backlog,
        tls: tls && keyPairs(tls),
        connections,
        proxyProtocol: proxyProtocol && { from: proxyProtocol },
        onError,
        log,
      }, handler);
    } catch (e) {
      if (
        tls && !(e instanceof Deno.errors.AddrInUse) && !(e instanceof Deno.errors.NotCapable) &&
        !(e instanceof Deno.errors.AddrNotAvailable) && !(e instanceof Deno.errors.PermissionDenied)
      ) {
        throw new TlsError(
          tls.certFile,
          `rejected by the TLS library: ${String(e).split("\n")[0]}`,
        );
      }
      throw e;
    }
  };

  // With SO_REUSEPORT a second server on a taken port would share it silently; a plain bind
  // first keeps "already in use" for ports this server does not hold yet.
  const probe = (hostname: string, port: number, held: number[]) => {
    if (options.sharePort) return;
    if (reusePort && port !== 0 && !held.includes(port)) Deno.listen({ hostname, port }).close();
  };

  /** Whether `cfg` has this thread serve HTTP/3 (workers leave it to the main thread). */
  const wantsH3 = (cfg: Config, tls: TlsMaterial | undefined) =>
    tls !== undefined && cfg.ssl.http3 && !options.sharePort;

  const openH3 = (cfg: Config, tls: TlsMaterial, port: number): Listening => {
    const s = cfg.server;
    try {
      return listenHttp3({
        hostname: s.host,
        port,
        tls: { cert: tls.cert, key: tls.key },
        connections,
        // Read from the connection table when used, so that a reload reaches open connections.
        limits: {
          maxFieldSectionSize: HTTP3_MAX_FIELD_SECTION,
          get headerTimeoutMs() {
            return connections.timeouts.header;
          },
          get idleTimeoutMs() {
            return connections.timeouts.idle;
          },
          get bodyTimeoutMs() {
            return connections.timeouts.body;
          },
        },
        maxConcurrentStreams: HTTP3_MAX_STREAMS,
        onError,
        refuse: (status, request) => current.errorResponse(status, request),
        log,
      }, handlerFor(true));
    } catch (e) {
      if (e instanceof Deno.errors.AddrInUse) {
        throw new Deno.errors.AddrInUse(
          `ssl.http3: UDP port ${port} on ${s.host} is already in use; free it or turn ssl.http3 off`,
        );
      }
      throw e;
    }
  };

  const open = (
    cfg: Config,
    tls: TlsMaterial | undefined,
    port: number,
    held: number[] = [],
    /** An HTTP/3 listener on this port to keep (a reload on the same address). */
    keepH3?: Listening,
  ): Generation => {
    const redirectPort = tls && !redirectIsAcme(cfg) ? cfg.ssl.redirect_http : undefined;
    probe(cfg.server.host, port, held);
    if (redirectPort !== undefined) probe(cfg.server.host, redirectPort, held);
    // Only the main listener: the port-80 ones (the redirect, ACME's) take plain connections.
    const proxied = cfg.server.proxy_protocol
      ? new IpSet(cfg.server.proxy_protocol_from)
      : undefined;
    const h3Wanted = wantsH3(cfg, tls);
    const handler = handlerFor(tls !== undefined);
    // Alt-Svc names the port the TCP listener took (port 0 is resolved by listening).
    let announced: ExchangeHandler | undefined;
    const main = listenOn(
      cfg.server.host,
      port,
      tls,
      h3Wanted ? (request, exchange) => (announced ?? handler)(request, exchange) : handler,
      cfg,
      proxied,
    );
    let h3: Listening | undefined;
    if (h3Wanted) {
      announced = announcing(handler, main.addr.port);
      try {
        h3 = keepH3 ?? openH3(cfg, tls!, main.addr.port);
      } catch (e) {
        main.shutdown();
        throw e;
      }
    }
    const url = `${tls ? "https" : "http"}://${displayHost(main.addr.hostname)}:${main.addr.port}/`;
    let redirect: Listening | undefined;
    if (redirectPort !== undefined) {
      try {
        redirect = listenOn(
          cfg.server.host,
          redirectPort,
          undefined,
          redirectToHttps(main.addr.port, displayHost(cfg.server.host)),
          cfg,
        );
      } catch (e) {
        main.shutdown();
        if (h3 !== keepH3) h3?.shutdown();
        throw e;
      }
      log.info(
        `redirecting http://${
          displayHost(redirect.addr.hostname)
        }:${redirect.addr.port}/ to ${url}`,
      );
    } else if (tls && redirectIsAcme(cfg)) {
      log.info(
        `redirecting http://${
          displayHost(cfg.server.host)
        }:${cfg.ssl.redirect_http}/ to ${url} (the ACME challenge listener)`,
      );
    }
    if (h3) {
      log.info(
        `HTTP/3 on udp ${displayHost(h3.addr.hostname)}:${h3.addr.port} (announced by Alt-Svc)`,
      );
    }
    return { main, redirect, h3, tls, url };
  };

  const stopGeneration = async (g: Generation, timeoutMs: number) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<boolean>((r) => timer = setTimeout(() => r(false), timeoutMs));
    const done = Promise.all([g.main.shutdown(), g.redirect?.shutdown(), g.h3?.shutdown()])
      .then(() => true);
    const finished = await Promise.race([done, timeout]);
    clearTimeout(timer);
    if (!finished) {
      log.warn(`requests still running on ${g.url} after ${timeoutMs} ms are no longer waited for`);
      // WebSockets are told the server is going away (1001); other connections are cut.
      for (const listener of [g.main, g.redirect, g.h3]) listener?.abort?.();
      // A moment for the close frames to go out before the process may end.
      await Promise.race([done, new Promise((r) => timer = setTimeout(r, 1000))]);
      clearTimeout(timer);
    }
  };

  const retiring = new Set<Promise<void>>();
  const stopped = Promise.withResolvers<void>();
  let closing = false;
  // Generations being stopped on purpose; a listener of any other that ends has failed, and a
  // live process that no longer accepts would never be restarted by its supervisor.
  const stopping = new WeakSet<Generation>();
  const watch = (g: Generation) => {
    for (const listener of [g.main, g.redirect, g.h3]) {
      listener?.finished.then(
        () => lost(g, listener, new Error("it closed")),
        (e) => lost(g, listener, e),
      );
    }
    return g;
  };
  const failure = Promise.withResolvers<never>();
  let failed = false;
  const lost = (g: Generation, listener: Listening, reason: unknown) => {
    if (closing || failed || stopping.has(g)) return;
    failed = true;
    const at = `${displayHost(listener.addr.hostname)}:${listener.addr.port}`;
    log.error(
      `the listener on ${at} stopped accepting connections ` +
        `(${reason instanceof Error ? reason.message : reason}); exiting so that a supervisor ` +
        `restarts denoserve`,
    );
    log.flush();
    failure.reject(new ListenerLost(`the listener on ${at} stopped`));
  };
  const finished = Promise.race([stopped.promise, failure.promise]);
  finished.catch(() => {}); // seen by whoever awaits it; never an unhandled rejection
  const stopGen = (g: Generation, timeoutMs: number) => {
    stopping.add(g);
    return stopGeneration(g, timeoutMs);
  };

  let gen = watch(
    open(config, await loadConfiguredTls(config, log, options.certificate), config.server.port),
  );
  options.onListen?.(gen.main.addr);
  const removeCertificate = addCertificateSource(() =>
    gen.tls ? { file: gen.tls.certFile, notAfter: gen.tls.info.notAfter } : undefined
  );
  const removeConnections = addConnectionSource(() => connections.stats);

  const server: RunningServer = {
    get addr() {
      return gen.main.addr;
    },
    get url() {
      return gen.url;
    },
    get config() {
      return active;
    },
    get tls() {
      return gen.tls;
    },
    get redirectAddr() {
      return gen.redirect?.addr;
    },
    get http3Addr() {
      return gen.h3?.addr;
    },
    connections,
    swap(next) {
      const old = current;
      current = next;
      old.close();
    },
    async reload(next, nextApp) {
      if (closing) throw new Error("the server is shutting down");
      const tls = await loadConfiguredTls(next, log, options.certificate);
      const sameAddr = next.server.host === active.server.host &&
        (next.server.port === active.server.port || next.server.port === gen.main.addr.port);
      const redirectPort = (c: Config) => c.ssl.enabled ? c.ssl.redirect_http : undefined;
      const proxyOf = (c: Config) =>
        c.server.proxy_protocol ? c.server.proxy_protocol_from.join(",") : "";
      const sameProxy = proxyOf(next) === proxyOf(active);
      const h3Changed = wantsH3(next, tls) !== (gen.h3 !== undefined);
      const replace = !sameAddr || !sameTls(tls, gen.tls) || !sameProxy ||
        redirectPort(next) !== redirectPort(active) || h3Changed;
      const certificateOnly = replace && sameAddr && sameProxy && tls !== undefined &&
        gen.tls !== undefined && redirectPort(next) === redirectPort(active) && !h3Changed &&
        gen.main.replaceCertificate !== undefined;
      if (certificateOnly) {
        try {
          gen.main.replaceCertificate!(tls.cert, tls.key, keyPairs(tls).sni);
          gen.h3?.replaceCertificate?.(tls.cert, tls.key);
        } catch (e) {
          if (!reusePort) {
            throw new Error(
              "taking a new certificate on the same port needs SO_REUSEPORT, which Deno allows " +
                "only with --unstable-net; run with it (deno task start does) or restart",
            );
          }
          throw e;
        }
        gen = { ...gen, tls };
        checkMigrate(log);
      } else if (replace) {
        let fresh: Generation;
        // QUIC has no SO_REUSEPORT here: on the same address the HTTP/3 listener is handed to
        // the new generation (taking the new certificate) instead of opened again.
        const keepH3 = sameAddr && gen.h3 && wantsH3(next, tls) ? gen.h3 : undefined;
        try {
          fresh = open(
            next,
            tls,
            sameAddr && next.server.port === 0 ? gen.main.addr.port : next.server.port,
            [gen.main.addr.port, ...(gen.redirect ? [gen.redirect.addr.port] : [])],
            keepH3,
          );
          if (keepH3 && tls) keepH3.replaceCertificate!(tls.cert, tls.key);
        } catch (e) {
          if (sameAddr && e instanceof Deno.errors.AddrInUse && !reusePort) {
            throw new Error(
              "replacing the listener on the same port needs SO_REUSEPORT, which Deno allows " +
                "only with --unstable-net; run with it (deno task start does) or restart",
            );
          }
          throw e;
        }
        const old = keepH3 ? { ...gen, h3: undefined } : gen;
        if (keepH3) stopping.add(gen); // its listeners are stopped or handed over from here on
        gen = watch(fresh);
        options.onListen?.(gen.main.addr);
        if (sameAddr) checkMigrate(log);
        const retired = stopGen(old, active.server.shutdown_timeout * 1000).finally(() =>
          retiring.delete(retired)
        );
        retiring.add(retired);
      }
      active = next;
      setLimits(connections, next);
      if (nextApp) server.swap(nextApp);
      return { listenersReplaced: replace };
    },
    async shutdown(timeoutMs = active.server.shutdown_timeout * 1000) {
      if (closing) return await stopped.promise;
      closing = true;
      await Promise.all([stopGen(gen, timeoutMs), ...retiring]);
      current.close();
      removeCertificate();
      removeConnections();
      stopReporting?.();
      log.flush();
      stopped.resolve();
    },
    finished,
  };
  return server;
}
