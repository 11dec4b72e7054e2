// pgpool's view of its backends, asked over PCP and mapped to the spec's node names.
//
// Not over SQL (SHOW POOL_BACKEND_STATS through a session to pgpool): that session needs a free
// pgpool child, and under client load every child is busy. A link-down failover then waited
// ~13 s for its routing check while the clients held all 8 children of the lab. PCP is served
// by pgpool's own PCP process, from shared memory.

import type { ClusterSpec } from '../../spec/types.js';
import type { PoolBackend } from '../../observe/types.js';
import { PcpRefused, PcpSession } from './pcp.js';
import { pcpTarget, type PcpLink } from './pcp-link.js';

/** The columns of one backend that pgop reads (pgpool's words). */
export interface PoolNodeRow {
  nodeId: string;
  hostname: string;
  status: string;
  role: string;
}

/** More backends than this in an answer is a malformed answer, not a cluster. */
const MAX_BACKENDS = 128;

/** pgpool's backends: node count ('L'), then each backend's health-check stats ('H'), which
 *  start with node id, hostname, port, status and role. A session of its own, closed at once:
 *  a PCP session left open holds up pgpool's restart of its PCP process after a failover. */
export async function poolBackends(link: PcpLink, boundMs: number): Promise<PoolBackend[]> {
  const end = Date.now() + boundMs;
  // each step gets what is left of the bound (a step that runs out ends the session)
  const left = () => Math.max(1, end - Date.now());
  let session: PcpSession;
  try {
    session = await PcpSession.open(await pcpTarget(link), left());
  } catch (err) {
    // a refused login: the password changed on the pool host; read it again next time
    if (err instanceof PcpRefused) link.state.pcpPassword = undefined;
    throw err;
  }
  try {
    const [count = ''] = await session.query({ kind: 'node-count' }, left());
    const n = Number(count);
    if (!Number.isInteger(n) || n < 0 || n > MAX_BACKENDS) {
      throw new Error(`pgpool answered a node count of ${JSON.stringify(count)}`);
    }
    const rows: PoolNodeRow[] = [];
    for (let nodeId = 0; nodeId < n; nodeId++) {
      const f = await session.query({ kind: 'backend-stats', nodeId }, left());
      rows.push({ nodeId: f[0] ?? '', hostname: f[1] ?? '', status: f[3] ?? '', role: f[4] ?? '' });
    }
    return rows.map((row) => backendOf(link.cluster, row));
  } finally {
    session.close();
  }
}

/** A row of pgpool's, by node id when its address matches, else by address. */
export function backendOf(cluster: ClusterSpec, row: PoolNodeRow): PoolBackend {
  const id = Number(row.nodeId);
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
