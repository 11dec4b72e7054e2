// Synchronous replication: the primary's synchronous_standby_names follows the streaming standbys.

import { clusterAction, type PlanContext } from './context.js';
import type { Verdict } from './types.js';

/** `ANY 1 (pg02, pg03)` / `ANY 1 ("pg02","pg03")` / `FIRST 1 (..)` / `pg02, pg03` / '' */
export function parseSyncNames(s: string): { quorum: number; names: string[] } {
  const t = s.trim();
  if (t === '') return { quorum: 0, names: [] };
  const m = /^(?:(ANY|FIRST)\s+)?(\d+)\s*\((.*)\)$/i.exec(t);
  const list = (m ? m[3]! : t)
    .split(',')
    .map((x) => x.trim().replace(/^"(.*)"$/, '$1'))
    .filter(Boolean);
  return { quorum: m ? Number(m[2]) : 1, names: list.sort() };
}

/** Enabled only once k standbys stream (else every write hangs). Adding a streaming standby to
 *  the set is always safe; dropping a member is safe only once every remaining member holds all
 *  the primary's WAL (else a commit acknowledged by the dropped member alone would be outside the
 *  set the failover rule trusts). */
export function setSyncQuorum(ctx: PlanContext): Verdict | undefined {
  const { primary, primaryPg: p, streaming } = ctx;
  const replication = ctx.input.spec.replication;
  if (!primary || !p || replication.mode !== 'sync') return undefined;
  const current = parseSyncNames(p.syncStandbyNames);
  const k = replication.syncQuorum;
  const caughtUp = streaming.every((n) => (p.replicas.find((r) => r.name === n)?.flushLsn ?? -1) >= p.lsn);
  const keep = caughtUp && streaming.length >= k ? [] : current.names;
  const wanted =
    streaming.length >= k || current.names.length > 0 ? [...new Set([...streaming, ...keep])].sort() : [];
  if (wanted.join(',') === current.names.join(',') && (wanted.length === 0 || current.quorum === k)) {
    return undefined;
  }
  return clusterAction(
    { type: 'ensureSyncStandbys', primary, names: wanted, quorum: k },
    wanted.length
      ? `requiring ANY ${k} of (${wanted.join(', ')}) to acknowledge commits`
      : `only ${streaming.length} of ${k} required standbys stream; ` +
          'keeping commits asynchronous until they do',
  );
}

export function clearSyncNames(ctx: PlanContext): Verdict | undefined {
  const { primary, primaryPg: p } = ctx;
  if (!primary || !p || ctx.input.spec.replication.mode === 'sync') return undefined;
  if (parseSyncNames(p.syncStandbyNames).names.length === 0) return undefined;
  return clusterAction(
    { type: 'ensureSyncStandbys', primary, names: [], quorum: 0 },
    'replication mode is async; clearing synchronous_standby_names',
  );
}
