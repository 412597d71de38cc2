/**
 * What the hashing policies share (`ip_hash`, `header`, `uri_hash`, and `cookie` for clients
 * without a valid cookie): a key is hashed once, then the backend with the highest score for it
 * among those up wins (rendezvous hashing). A key keeps its backend as long as that one is up,
 * and when a backend goes down or comes back only the keys that belong to it move.
 *
 * @module
 */
import type { Backend } from "../pool.ts";

/** FNV-1a over the UTF-16 code units of `key`: 32 bits. */
export function hashKey(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The score of backend `index` for a key hashed to `h` (a 32-bit finaliser of both). */
function score(h: number, index: number): number {
  let x = (h ^ Math.imul(index + 1, 0x9e3779b9)) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** The backend of `backends` (never empty) with the highest score for a key hashed to `h`. */
export function byHash(backends: readonly Backend[], h: number): Backend {
  let best = backends[0];
  let top = score(h, best.index);
  for (let i = 1; i < backends.length; i++) {
    const s = score(h, backends[i].index);
    if (s > top) {
      top = s;
      best = backends[i];
    }
  }
  return best;
}
