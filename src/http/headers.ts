/**
 * Adding headers to answers that may have come from `fetch` (whose headers are immutable).
 *
 * @module
 */

function apply(headers: Headers, pairs: readonly (readonly [string, string])[]) {
  for (const [name, value] of pairs) {
    if (name === "vary") {
      const old = headers.get("vary");
      if (old === null) headers.set("vary", value);
      else if (old !== "*" && !old.toLowerCase().includes(value.toLowerCase())) {
        headers.set("vary", `${old}, ${value}`);
      }
    } else if (name === "set-cookie") headers.append(name, value);
    else headers.set(name, value);
  }
}

/**
 * Sets `pairs` on `response` (`vary` is merged with what is there, `set-cookie` is added to the
 * cookies already set) and returns it, or a copy
 * when its headers cannot be changed. The one place for a header on an answer that may be
 * immutable: every wrapper that adds one goes through here.
 */
export function setHeaders(
  response: Response,
  pairs: readonly (readonly [string, string])[],
): Response {
  if (pairs.length === 0) return response;
  try {
    apply(response.headers, pairs);
    return response;
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
    // The Response constructor refuses a 1xx status (a WebSocket upgrade's 101): left as it is.
    if (response.status < 200) return response;
    const copy = new Response(response.body, response);
    apply(copy.headers, pairs);
    return copy;
  }
}
