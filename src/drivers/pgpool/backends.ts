// pgpool's view of its backends, asked over SQL (a pg session to pgpool itself, TLS
// verify-full when the cluster has TLS), mapped to the spec's node names.

import pg from 'pg';
import type { ClusterSpec } from '../../spec/types.js';
import type { PoolBackend } from '../../observe/types.js';
import { transient } from '../../errors.js';
import { ClientCache, newClient } from '../pg-clients.js';
import type { ClusterTls } from '../../tls/material.js';
import { clientTls } from '../../tls/client.js';
import { KEEPALIVE_IDLE_MS, poolSessionTimeoutMs } from '../timeouts.js';

interface PoolNodeRow {
  node_id: string;
  hostname: string;
  port: string;
  status: string;
  role: string;
  pg_role?: string;
}

/** One SQL session per cluster to pgpool, for SHOW POOL_BACKEND_STATS. */
export class PoolBackendsQuery {
  private readonly clients = new ClientCache();

  constructor(
    private readonly connectOf: (cluster: ClusterSpec) => pg.ClientConfig,
    private readonly tls: ClusterTls,
  ) {}

  /** pgpool's view of the backends. SHOW POOL_BACKEND_STATS, not SHOW POOL_NODES: the latter
   *  (4.3) opens a fresh session to every backend to fill its pg_status/pg_role columns and
   *  took 0.5-0.9 s; the former answers from shared memory in ~2 ms with the same
   *  node_id/hostname/status/role. Bounded here as well as by pg's own timeouts: nothing else
   *  may hold up a pass that routes pgpool right after a failover. */
  async backends(cluster: ClusterSpec, bound = poolSessionTimeoutMs(cluster) + 1000): Promise<PoolBackend[]> {
    try {
      const c = await within(this.client(cluster), bound, 'connecting to pgpool');
      const query = 'SHOW POOL_BACKEND_STATS';
      const r = await within(c.query<PoolNodeRow>(query), bound, query);
      return r.rows.map((row) => backendOf(cluster, row));
    } catch (err) {
      // Only the SQL session: pgpool ends it when the backend it used fails, which is the very
      // moment a PCP session opened ahead is about to serve (a dead PCP session shows itself).
      this.drop(cluster);
      throw err;
    }
  }

  drop(cluster: ClusterSpec): void {
    this.clients.drop(cluster.name);
  }

  close(): Promise<void> {
    return this.clients.close();
  }

  private client(cluster: ClusterSpec): Promise<pg.Client> {
    const timeout = poolSessionTimeoutMs(cluster);
    return this.clients.get(cluster.name, () =>
      newClient({
        ...this.connectOf(cluster),
        ...this.sslConfig(cluster),
        // (A pgpool busy failing over does not hold up a pass: observe() waits only briefly.)
        connectionTimeoutMillis: timeout,
        query_timeout: timeout,
        application_name: 'pgop-pool-probe',
        keepAlive: true,
        keepAliveInitialDelayMillis: KEEPALIVE_IDLE_MS,
      }),
    );
  }

  /** verify-full to pgpool (its certificate names spec.pgpool.address) when TLS is on. */
  private sslConfig(cluster: ClusterSpec): Partial<pg.ClientConfig> {
    if (!this.tls.enabled(cluster)) return {};
    const m = this.tls.peek(cluster);
    if (!m) throw transient(`cannot connect to pgpool of ${cluster.name}: the cluster CA is not issued yet`);
    const host = this.connectOf(cluster).host ?? cluster.pgpool.address ?? '';
    const ssl = clientTls(m.caBundle, { name: 'pgpool', address: host });
    return { ssl, enableChannelBinding: true } as Partial<pg.ClientConfig>;
  }
}

/** A row of pgpool's, by node id when its address matches, else by address. */
function backendOf(cluster: ClusterSpec, row: PoolNodeRow): PoolBackend {
  const id = Number(row.node_id);
  const node =
    cluster.nodes[id]?.address === row.hostname
      ? cluster.nodes[id]
      : cluster.nodes.find((n) => n.address === row.hostname);
  const s = row.status.toLowerCase();
  const status: PoolBackend['status'] =
    s === 'up' || s === 'waiting' ? 'up' : s === 'unused' ? 'unused' : 'down';
  const rl = row.role.toLowerCase();
  const role: PoolBackend['role'] = rl === 'primary' ? 'primary' : rl === 'standby' ? 'standby' : 'unknown';
  return { name: node?.name ?? row.hostname, status, role };
}

/** `p`, or a rejection after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>(
    (_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)),
  );
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
