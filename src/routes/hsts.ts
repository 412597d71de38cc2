/**
 * `Strict-Transport-Security` (`ssl.hsts`) on every answer sent over TLS.
 *
 * @module
 */
import { setHeaders } from "../http/headers.ts";
import type { Handler, Wrapper } from "../http/types.ts";

/** Wraps `next` so that answers over TLS carry `value`; the identity without a value. */
export function withHsts(value: string | undefined): Wrapper {
  return (next: Handler): Handler => {
    if (value === undefined) return next;
    const pairs: [string, string][] = [["strict-transport-security", value]];
    const add = (response: Response) =>
      response.status === 101 ? response : setHeaders(response, pairs);
    return (request, ctx) => {
      const response = next(request, ctx);
      if (!ctx.secure) return response;
      return response instanceof Promise ? response.then(add) : add(response);
    };
  };
}
