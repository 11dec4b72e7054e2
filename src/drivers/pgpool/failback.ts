// The end of pgpool's handling of an attach, seen the way a client sees it.
//
// pgpool 4.3 handles an attach (a "failback") in its main process: it marks the node up, then
// looks for the primary again over a new session to every node (TLS and SCRAM each: up to
// seconds on a loaded VM). Meanwhile every child that needs the main node (a session starting,
// or running a query) exits without a word (pool_virtual_main_db_node_id: "failover/failback is
// in progress"), and clients see "Connection terminated unexpectedly". pgpool shows the node up
// from the start of that, so its node list cannot say when it ended: one new session through
// it that answers a query can, since the node was marked up inside the same handling.

import type pg from 'pg';
import type { ClusterSpec } from '../../spec/types.js';
import { resolveSecret } from '../../spec/secrets.js';
import { clientTls } from '../../tls/client.js';
import type { ClusterTls } from '../../tls/material.js';
import { connectClient, endClient, newClient, pgMessage } from '../pg-clients.js';
import { sleep } from '../remote/run.js';
import { poolSessionTimeoutMs } from '../timeouts.js';

export interface FailbackWait {
  /** how long until a session through pgpool answered (ms) */
  ms: number;
  /** sessions pgpool ended or refused before that */
  refused: number;
  /** set when none answered in time: the last one's error */
  error?: string;
}

/** The superuser's session through the pgpool at `address` (verify-full when TLS is on). */
export function poolSessionConfig(cluster: ClusterSpec, address: string, tls: ClusterTls): pg.ClientConfig {
  const ms = poolSessionTimeoutMs(cluster);
  const base: pg.ClientConfig = {
    host: address,
    port: cluster.pgpool.port,
    user: 'postgres',
    database: 'postgres',
    password: resolveSecret(cluster.postgres.superuserPassword, 'the postgres superuser password'),
    connectionTimeoutMillis: ms,
    query_timeout: ms,
    application_name: 'pgop',
  };
  const m = tls.enabled(cluster) ? tls.peek(cluster) : undefined;
  if (!m) return base;
  return {
    ...base,
    ssl: clientTls(m.caBundle, { name: 'pgpool', address }),
    enableChannelBinding: true,
  } as pg.ClientConfig;
}

/** Until a new session through pgpool answers a query, at most `timeoutMs` (the cluster is not
 *  Healthy meanwhile; measured after pgpool showed the node up: 0.4-0.9 s in the lab, 2-17 s on
 *  the e2e's TCG VMs with a busy host). */
export async function waitFailbackDone(config: pg.ClientConfig, timeoutMs = 30_000): Promise<FailbackWait> {
  const t0 = Date.now();
  let refused = 0;
  let error = '';
  while (Date.now() - t0 < timeoutMs) {
    const client = newClient(config);
    client.on('error', () => {});
    try {
      await connectClient(client);
      await client.query('SELECT 1');
      return { ms: Date.now() - t0, refused };
    } catch (err) {
      refused++;
      error = pgMessage(err);
    } finally {
      await endClient(client);
    }
    // each try costs pgpool a child, and the pgpool host a TLS handshake, while pgpool itself
    // opens a session to every node: back off (0.2, 0.4, 0.8, then every 1 s)
    await sleep(Math.min(1_000, 200 * 2 ** (refused - 1)));
  }
  return { ms: Date.now() - t0, refused, error };
}
