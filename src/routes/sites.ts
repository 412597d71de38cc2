/**
 * Several sites on one server: the request's Host chooses the site whose route table answers.
 *
 * Names are matched as nginx and Caddy do: the exact name first, then the wildcard of one leading
 * label (`*.example.com` takes `a.example.com`, not `a.b.example.com` nor `example.com`), in
 * lower case, without a trailing dot or a `:port`. A Host that names no site goes to the default
 * site (the top-level sections), or gets 421 with `server.unknown_host: 421`. A request without
 * Host (HTTP/1.0) goes to the default site. With no `sites` there is no dispatcher at all: the
 * default site's table answers directly.
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
  sites.forEach((site, i) => {
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
  const unknown: Handler = config.server.unknown_host === "421"
    ? withAccessLog(log)((request) =>
      main.errorResponse(
        421,
        request,
        undefined,
        "This server has no site by the name this request was sent to.",
      )
    )
    : fallback;
  const handle: Handler = (request, ctx) => {
    const authority = ctx.authority === undefined ? urlAuthority(request.url) : ctx.authority;
    if (authority === null || authority === "") return fallback(request, ctx);
    return (siteFor(table, hostName(authority)) ?? unknown)(request, ctx);
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
