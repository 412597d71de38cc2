/** Balancing policies, called directly: what they pick from the backends a pool offers them. */
import assert from "node:assert/strict";
import { leastConn } from "../src/proxy/balancing/least_conn.ts";
import { roundRobin } from "../src/proxy/balancing/round_robin.ts";
import type { RequestContext } from "../src/http/types.ts";
import type { Backend } from "../src/proxy/pool.ts";

const backends = (n: number) =>
  Array.from({ length: n }, (_, index) => ({ index, active: 0 }) as Backend);
const request = new Request("http://localhost/x");
const ctx: RequestContext = {
  path: "/x",
  query: "",
  remote: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
  secure: false,
};

Deno.test("round robin takes turns, and a backend that is not offered loses its turn", () => {
  const all = backends(3);
  const policy = roundRobin();
  const picks = (offered: Backend[], times: number) =>
    Array.from({ length: times }, () => policy.pick(offered, request, ctx)!.index);
  assert.deepEqual(picks(all, 4), [0, 1, 2, 0]);
  assert.deepEqual(picks([all[0], all[2]], 3), [2, 0, 2]);
  assert.deepEqual(picks(all, 2), [0, 1]);
});

Deno.test("least_conn picks the fewest in flight; equals take turns", () => {
  const all = backends(3);
  const policy = leastConn(all.length);
  const pick = (offered: Backend[] = all) => policy.pick(offered, request, ctx)!.index;
  assert.deepEqual([pick(), pick(), pick(), pick()], [0, 1, 2, 0]);
  all[1].active = 2;
  all[2].active = 1;
  assert.equal(pick(), 0);
  all[0].active = 3;
  assert.equal(pick(), 2);
  assert.equal(pick([all[0], all[1]]), 1);
});
