/**
 * How a rule reaches its backends: per backend, the HTTP/1.1 client of src/proxy/http1.ts for
 * requests and WebSocket bridging, and one `Deno.HttpClient` per rule for the health checks'
 * fetch; both trust `ca_file` in addition to the system roots.
 * `insecure_skip_verify` has no switch in Deno's TLS clients, so such a backend is reached
 * through a loopback bridge that speaks TLS to it without verifying (node:tls with
 * `rejectUnauthorized: false`) while the clients speak plain HTTP to the bridge.
 *
 * @module
 */
import { isIP } from "node:net";
import { Duplex } from "node:stream";
import tls from "node:tls";
import { readCaFile } from "../tls/certs.ts";
import { type BackendClient, createBackendClient } from "./http1.ts";
import type { BackendAddress, CompiledRule } from "./rules.ts";

/** How requests reach one backend. */
export interface BackendConnections {
  /** Requests, and connections for WebSockets. */
  client: BackendClient;
  /** fetch's client, for health checks. */
  healthClient: Deno.HttpClient;
  /** Base URL for the health checks' fetch, without a trailing slash. */
  healthBase: string;
}

/** The connections of one rule's backends, in backend order. */
export interface RuleConnections extends Disposable {
  backends: BackendConnections[];
}

function readCa(rule: CompiledRule): string[] {
  const file = rule.rule.ca_file;
  return file === undefined
    ? []
    : [readCaFile(`server.reverse_proxy[${rule.index}].ca_file`, file)];
}

function bridge(backend: BackendAddress, caCerts: string[]): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const serve = async () => {
    for await (const conn of listener) {
      open.add(conn);
      const socket = tls.connect({
        host: backend.host,
        port: backend.port,
        rejectUnauthorized: false,
        servername: isIP(backend.host) ? undefined : backend.host,
        ca: caCerts.length ? caCerts : undefined,
        ALPNProtocols: ["http/1.1"],
      });
      const peer = Duplex.toWeb(socket);
      const done = () => {
        open.delete(conn);
        socket.destroy();
        try {
          conn.close();
        } catch { /* closed */ }
      };
      socket.on("error", done);
      Promise.allSettled([
        conn.readable.pipeTo(peer.writable as WritableStream<Uint8Array>),
        (peer.readable as ReadableStream<Uint8Array>).pipeTo(conn.writable),
      ]).then(done);
    }
  };
  serve().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close() {
      listener.close();
      for (const c of open) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

/** Opens the clients for `rule`; dispose them when the configuration is replaced. */
export function openConnections(rule: CompiledRule): RuleConnections {
  const caCerts = readCa(rule);
  const allowHost = rule.rule.preserve_host;
  const closers: (() => void)[] = [];
  let backends: BackendConnections[];
  if (rule.rule.ssl && rule.rule.insecure_skip_verify) {
    backends = rule.backends.map((backend) => {
      const b = bridge(backend, caCerts);
      const healthClient = Deno.createHttpClient({
        allowHost,
        proxy: { transport: "tcp", hostname: "127.0.0.1", port: b.port },
      });
      const client = createBackendClient({
        hostname: "127.0.0.1",
        port: b.port,
        tls: false,
        connectTimeoutMs: rule.connectTimeoutMs,
        authority: backend.authority,
      });
      closers.push(() => healthClient.close(), b.close, () => client[Symbol.dispose]());
      const plain = backend.origin.replace(/^https:/, "http:");
      return { client, healthClient, healthBase: plain };
    });
  } else {
    const healthClient = Deno.createHttpClient({ allowHost, caCerts });
    closers.push(() => healthClient.close());
    backends = rule.backends.map((backend) => {
      const client = createBackendClient({
        hostname: backend.host,
        port: backend.port,
        tls: rule.rule.ssl,
        caCerts,
        connectTimeoutMs: rule.connectTimeoutMs,
        authority: backend.authority,
      });
      closers.push(() => client[Symbol.dispose]());
      return { client, healthClient, healthBase: backend.origin };
    });
  }
  return {
    backends,
    [Symbol.dispose]() {
      for (const close of closers) {
        try {
          close();
        } catch { /* already closed */ }
      }
    },
  };
}
