/**
 * The Prometheus metrics of the `monitoring` extension: one registry per process, so that
 * counters carry on across reloads (each `server.workers` worker keeps its own, as every
 * Prometheus client in a forked server does). What is read at scrape time (backends, the
 * certificate) comes from sources the current route table and the server register.
 *
 * @module
 */
import client from "prom-client";
import type { Handler, RequestContext, Route, Wrapper } from "../http/types.ts";
import { backendUp } from "../proxy/pool.ts";
import type { RulePool } from "../proxy/proxy.ts";

const registry = new client.Registry();

const requests = new client.Counter({
  name: "denoserve_requests_total",
  help: "Requests answered, by the kind of route that answered and the status class.",
  labelNames: ["route", "status"] as const,
  registers: [registry],
});

const duration = new client.Histogram({
  name: "denoserve_request_duration_seconds",
  help: "Time from the request's arrival to its answer's head, by route kind.",
  labelNames: ["route"] as const,
  buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [registry],
});

const bytes = new client.Counter({
  name: "denoserve_response_bytes_total",
  help: "Body bytes of answers whose Content-Length was known, by route kind.",
  labelNames: ["route"] as const,
  registers: [registry],
});

const reloads = new client.Counter({
  name: "denoserve_reloads_total",
  help: "Configuration reloads, by result.",
  labelNames: ["result"] as const,
  registers: [registry],
});

const backendSources = new Set<() => readonly RulePool[]>();
const certificateSources = new Set<() => { file: string; notAfter: Date } | undefined>();

new client.Gauge({
  name: "denoserve_backend_up",
  help: "1 when a reverse-proxy backend is taken by picks (health check passes, not marked down).",
  labelNames: ["rule", "path", "backend"] as const,
  registers: [registry],
  collect() {
    this.reset();
    const now = Date.now();
    for (const source of backendSources) {
      for (const { index, path, pool } of source()) {
        for (const b of pool.backends) {
          this.set(
            { rule: String(index), path, backend: b.address.origin },
            backendUp(b, now) ? 1 : 0,
          );
        }
      }
    }
  },
});

new client.Gauge({
  name: "denoserve_backend_in_flight_requests",
  help: "Requests in flight to a reverse-proxy backend.",
  labelNames: ["rule", "path", "backend"] as const,
  registers: [registry],
  collect() {
    this.reset();
    for (const source of backendSources) {
      for (const { index, path, pool } of source()) {
        for (const b of pool.backends) {
          this.set({ rule: String(index), path, backend: b.address.origin }, b.active);
        }
      }
    }
  },
});

new client.Gauge({
  name: "denoserve_certificate_expiry_seconds",
  help: "Seconds until the served TLS certificate expires (negative once it has).",
  labelNames: ["file"] as const,
  registers: [registry],
  collect() {
    this.reset();
    for (const source of certificateSources) {
      const cert = source();
      if (cert) this.set({ file: cert.file }, (cert.notAfter.getTime() - Date.now()) / 1000);
    }
  },
});

/** Adds the pools of a route table to the backend gauges; returns what removes them. */
export function addBackendSource(source: () => readonly RulePool[]): () => void {
  backendSources.add(source);
  return () => backendSources.delete(source);
}

/** Adds a server's certificate to the expiry gauge; returns what removes it. */
export function addCertificateSource(
  source: () => { file: string; notAfter: Date } | undefined,
): () => void {
  certificateSources.add(source);
  return () => certificateSources.delete(source);
}

/** Counts a configuration reload. */
export function countReload(ok: boolean): void {
  reloads.inc({ result: ok ? "ok" : "failed" });
}

/** The route kinds metrics name, from {@link Route.name} and {@link RequestContext.route}. */
const KIND: Record<string, string> = {
  static: "static",
  proxy: "proxy",
  locations: "location",
  redirect: "redirect",
  auth: "auth",
  metrics: "metrics",
  health: "health",
};

const CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"] as const;

/** The children of one route kind, looked up once so that a request only adds. */
interface KindSeries {
  byClass: client.Counter.Internal[];
  duration: client.Histogram.Internal<"route">;
  bytes: client.Counter.Internal;
}

const series = new Map<string, KindSeries>();
const seriesFor = (kind: string): KindSeries => {
  let s = series.get(kind);
  if (s === undefined) {
    s = {
      byClass: CLASSES.map((c) => requests.labels(kind, c)),
      duration: duration.labels(kind),
      bytes: bytes.labels(kind),
    };
    series.set(kind, s);
  }
  return s;
};

/**
 * Counts every answer of `next`: its route kind (`error` when no route took the request, such
 * as a 400 for a missing Host), status class, time to the head, and Content-Length.
 */
export const withMetrics: Wrapper = (next: Handler): Handler => (request, ctx) => {
  const started = performance.now();
  const record = (response: Response) => {
    const kind = KIND[ctx.route ?? ""] ?? "error";
    const s = seriesFor(kind);
    const cls = Math.floor(response.status / 100) - 1;
    (s.byClass[cls] ?? s.byClass[4]).inc();
    s.duration.observe((performance.now() - started) / 1000);
    const length = response.headers.get("content-length");
    if (length !== null) s.bytes.inc(Number(length));
    return response;
  };
  const response = next(request, ctx);
  return response instanceof Promise ? response.then(record) : record(response);
};

/** The route answering `endpoint` with the metrics in Prometheus's text format. */
export function createMetricsRoute(endpoint: string): Route<true> {
  return {
    name: "metrics",
    match: (ctx: RequestContext) => ctx.path === endpoint ? true : undefined,
    async handle(request) {
      if (request.method !== "GET" && request.method !== "HEAD") {
        return new Response(null, { status: 405, headers: { allow: "GET, HEAD" } });
      }
      const text = await registry.metrics();
      return new Response(request.method === "HEAD" ? null : text, {
        headers: { "content-type": registry.contentType, "cache-control": "no-store" },
      });
    },
  };
}
