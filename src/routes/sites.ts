/**
 * Several sites on one server: the request's Host chooses the site whose route table answers.
 *
 * Names are matched as nginx and Caddy do: the exact name first, then the wildcard of one leading
 * label (`*.example.com` takes `a.example.com`, not `a.b.example.com` nor `example.com`), in
 * lower case, without a trailing dot or a `:port`. A Host that names no site goes to the default
 * site (the top-level sections), gets 421 with `server.unknown_host: 421`, or has its connection
 * closed unanswered with `close`. A request without
 * Host (HTTP/1.0) goes to the default site. With no `sites` there is no dispatcher at all: the
 * default site's table answers directly.
 *
 * Over TLS, a request whose Host would be served another certificate than the one its connection
 * was opened with (the name of the TLS hello chose it) gets 421 Misdirected Request, as RFC 9110
 * §15.5.20 asks: a browser that reuses an HTTP/2 connection for another name then opens one of
 * its own. Names one certificate covers share connections freely. The listener reads that name
 * only where sites have certificates of their own (`server/direct_listener.ts`).
 *
 * @module
 */
import type { Config } from "../config/schema.ts";
import {
  addNames,
  hostName,
  siteConfigs,
  siteFor,
  siteLabel,
  type SiteTable,
} from "../config/sites.ts";
import type { Logger } from "../log/logger.ts";
import { type Handler, type RequestContext, urlAuthority } from "../http/types.ts";
import { withAccessLog } from "./access_log.ts";
import { type App, buildApp } from "./build.ts";

/** The route table of `config`: the default site's, or a dispatcher by Host over every site. */
export function buildSites(config: Config, log: Logger): App {
  const main = buildApp(config, log);
  const sites = siteConfigs(config);
  if (sites.length === 0) return main;
  const apps = sites.map((site) => ({ label: siteLabel(site), app: buildApp(site.config, log) }));
  const table: SiteTable<Handler> = { exact: new Map(), wildcard: new Map() };
  // Which certificate each name is served: its site's files, or "" for the default site's
  // (files or automatic), as `tls/sni.ts` chooses.
  const certificates: SiteTable<string> = { exact: new Map(), wildcard: new Map() };
  const defaultCertificate = config.ssl.cert_file ?? "";
  sites.forEach((site, i) => {
    addNames(certificates, site.names, site.config.ssl.cert_file ?? "");
    const { label, app } = apps[i];
    const handle = app.handle;
    addNames(table, site.names, (request: Request, ctx: RequestContext) => {
      ctx.site = label;
      return handle(request, ctx);
    });
  });
  const fallback: Handler = (request, ctx) => {
    ctx.site = "default";
    return main.handle(request, ctx);
  };
  const unknownHost = config.server.unknown_host;
  const unknown: Handler = unknownHost === "421"
    ? withAccessLog(log)((request) =>
      main.errorResponse(
        421,
        request,
        undefined,
        "This server has no site by the name this request was sent to.",
      )
    )
    : unknownHost === "close"
    ? withAccessLog(log)(async (_request, ctx) => {
      ctx.close?.();
      // The runtime may write an answer given at once before the connection's end takes effect:
      // the answer comes a turn of the event loop later, when there is nothing left to send it on.
      await new Promise((resolve) => setTimeout(resolve, 0));
      // Logged as nginx logs its `return 444`.
      return new Response(null, { status: 444 });
    })
    : fallback;
  const misdirected: Handler = withAccessLog(log)((request) =>
    main.errorResponse(
      421,
      request,
      undefined,
      "This connection was opened for a site with another certificate; a new connection to " +
        "this name will be answered.",
    )
  );
  const certificateOf = (name: string) => siteFor(certificates, name) ?? defaultCertificate;
  const handle: Handler = (request, ctx) => {
    const authority = ctx.authority === undefined ? urlAuthority(request.url) : ctx.authority;
    if (authority === null || authority === "") return fallback(request, ctx);
    const name = hostName(authority);
    const sni = ctx.sni;
    if (sni !== undefined && sni !== name && certificateOf(sni) !== certificateOf(name)) {
      return misdirected(request, ctx);
    }
    return (siteFor(table, name) ?? unknown)(request, ctx);
  };
  return {
    handle,
    errorResponse: main.errorResponse,
    close() {
      main.close();
      for (const { app } of apps) app.close();
    },
  };
}
