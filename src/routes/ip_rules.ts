/**
 * `ip_rules`: nginx's `allow` and `deny` for the site (`server.ip_rules`) and per location
 * (`server.locations.<prefix>.ip_rules`). Rules are read in order and the first that matches
 * the client's address decides; when none matches, the request is let through, as in nginx.
 * A location's rules replace the site's for the paths below it (nginx's inheritance), and the
 * nearest location that has rules counts, so a more specific location without any cannot open
 * up a path a broader one restricts. The `security` extension's `ip_filtering` runs before
 * either and refuses on its own.
 *
 * @module
 */
import type { Config } from "../config/schema.ts";
import { type CidrRange, inRange, type IpAddress, parseCidr } from "../http/ip.ts";
import { normalizePath } from "../http/paths.ts";
import type { ErrorResponder, Handler, Wrapper } from "../http/types.ts";
import type { Logger } from "../log/logger.ts";
import { findByPrefix, locationPrefix } from "./auth.ts";
import { addressText, type ClientAddress } from "./client_address.ts";

/** One `allow` or `deny` rule; `range` undefined means `all`. */
export interface IpRule {
  allow: boolean;
  range?: CidrRange;
  /** As written, for logs. */
  text: string;
}

/** Parses rules the schema accepted (`allow 10.0.0.0/8`, `deny all`). */
export function compileIpRules(rules: readonly string[]): IpRule[] {
  return rules.map((text) => {
    const [verb, target] = text.trim().split(/\s+/);
    return {
      allow: verb === "allow",
      range: target === "all" ? undefined : parseCidr(target),
      text: text.trim(),
    };
  });
}

/** The first rule that matches `ip` (only `all` matches an address that did not parse). */
export function firstMatch(
  rules: readonly IpRule[],
  ip: IpAddress | undefined,
): IpRule | undefined {
  for (const rule of rules) {
    if (rule.range === undefined || (ip !== undefined && inRange(ip, rule.range))) return rule;
  }
  return undefined;
}

/**
 * Wraps `next` so that a request refused by the rules that apply to its path (see the module
 * comment) is answered 403. A path that cannot be decoded gets 400 when any location has rules,
 * since no rule could be chosen for it.
 */
export function withIpRules(
  config: Config,
  client: ClientAddress,
  errorResponse: ErrorResponder,
  log: Logger,
): Wrapper {
  const site = compileIpRules(config.server.ip_rules);
  const located = Object.entries(config.server.locations)
    .filter(([, l]) => l.ip_rules !== undefined)
    .map(([key, l]) => ({
      prefix: locationPrefix(key),
      where: `server.locations.${key}`,
      rules: compileIpRules(l.ip_rules!),
    }));
  const find = findByPrefix(located);
  return (next: Handler): Handler => {
    if (site.length === 0 && located.length === 0) return next;
    return (request, ctx) => {
      let rules = site;
      let where = "server.ip_rules";
      if (located.length > 0) {
        const path = normalizePath(ctx.path);
        if (path === null) return errorResponse(400, request);
        const found = find(path);
        if (found) ({ rules, where } = found);
      }
      const ip = client(request, ctx);
      const rule = firstMatch(rules, ip);
      if (rule === undefined || rule.allow) return next(request, ctx);
      const shown = ip ? addressText(ip) : ctx.remote.hostname;
      log.info(`ip rules: ${shown} refused on ${ctx.path} by "${rule.text}" of ${where}`, ctx);
      return errorResponse(403, request, undefined, "Your address is not allowed here.");
    };
  };
}
