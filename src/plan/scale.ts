// Scale-in: a node removed from the spec leaves one step a pass, in this order: out of the sync
// set (no commit waits for it), out of pgpool (no client reaches it), fenced, its machine and
// data deleted, its replication slot dropped on the primary (no WAL held for it), forgotten.
// A primary is handed over first and then removed the same way.

import type { PostgresObservation } from '../observe/types.js';
import { act, clusterAction, lookPredates, lsnOf, wait, type PlanContext } from './context.js';
import { parseSyncNames } from './sync.js';
import type { Verdict } from './types.js';

/** The primary's postgres while it answers and is a spec node: slots and the sync set live there. */
function livePrimary(ctx: PlanContext): PostgresObservation | null {
  return ctx.primary && ctx.specNames.includes(ctx.primary) ? ctx.primaryPg : null;
}

/** The node is still somewhere: recorded beyond 'absent' (a primary is handed over first). */
const leaving = (ctx: PlanContext, n: string) => ctx.state(n) !== 'absent' && ctx.state(n) !== 'primary';

export function removeFromSyncSet(ctx: PlanContext, n: string): Verdict | undefined {
  const live = livePrimary(ctx);
  if (!leaving(ctx, n) || !live) return undefined;
  const current = parseSyncNames(live.syncStandbyNames);
  if (!current.names.includes(n)) return undefined;
  const replication = ctx.input.spec.replication;
  const k = replication.mode === 'sync' ? replication.syncQuorum : current.quorum;
  const left = current.names.filter((x) => !ctx.strayNames.includes(x));
  // fewer members than the quorum would stop every commit: asynchronous until sync.quorum finds
  // enough streaming standbys again
  const names = left.length >= k ? left : [];
  const set = names.length
    ? `ANY ${k} of (${names.join(', ')})`
    : 'asynchronous commits until enough standbys stream';
  return clusterAction(
    { type: 'ensureSyncStandbys', primary: ctx.primary!, names, quorum: k },
    `${n} left the spec; taking it out of synchronous_standby_names first (${set})`,
  );
}

export function removeFromPool(ctx: PlanContext, n: string): Verdict | undefined {
  const { observation, spec } = ctx.input;
  const pool = observation.pool;
  if (!leaving(ctx, n) || !livePrimary(ctx) || !spec.pgpool.enabled || !pool?.reachable) return undefined;
  // pgpool names a backend the spec no longer holds by its address
  const address = observation.strays?.[n]?.address;
  const listed = (name: string) => name === n || (address !== undefined && name === address);
  if (!pool.backends.some((b) => b.status !== 'unused' && listed(b.name))) return undefined;
  return clusterAction(
    { type: 'ensurePool', primary: ctx.primary!, failed: ctx.poolFailed },
    `${n} left the spec; removing it from pgpool's backends before it is fenced ` +
      '(pgpool restarts, ending its client sessions)',
  );
}

/** A failed listing says nothing about the machine (observeCluster): ask again next pass. */
const listingFailed = (ctx: PlanContext, n: string) =>
  !!ctx.obs(n)?.machine.detail?.startsWith('provider unavailable');

export function fenceLeaving(ctx: PlanContext, n: string): Verdict | undefined {
  const s = ctx.state(n);
  const o = ctx.obs(n);
  if (leaving(ctx, n) && s !== 'deleting') {
    const pg = o?.postgres;
    const running = pg?.running ? ` (postgres ${pg.inRecovery ? 'streaming' : 'running'})` : '';
    return act(n, 'node.unwanted', `${n} left the spec${running}; fencing it before its machine is removed`, {
      leavingSpec: true,
    });
  }
  // a machine made for it before its record (or left by a removal that died half-way)
  if (s !== 'absent' || !o || listingFailed(ctx, n) || o.machine.state === 'missing') return undefined;
  if (lookPredates(ctx, n)) return undefined; // it saw the machine before its removal committed
  const what = o.machine.detail ?? o.machine.state;
  return act(
    n,
    'node.unwanted',
    `${n} left the spec but its machine still exists (${what}); fencing it before removal`,
    { leavingSpec: true },
  );
}

export function removeLeavingMachine(ctx: PlanContext, n: string): Verdict | undefined {
  if (ctx.state(n) !== 'deleting') return undefined;
  return act(
    n,
    'machine.fenced',
    `${n} left the spec and is fenced; deleting its machine with its disks and data`,
  );
}

/** Recorded absent and its machine is gone: what remains is its slot on the primary and the record. */
function machineGone(ctx: PlanContext, n: string): boolean {
  const o = ctx.obs(n);
  return ctx.state(n) === 'absent' && !listingFailed(ctx, n) && (!o || o.machine.state === 'missing');
}

/** The slot is dropped on a primary that answers (after any handover); while its slots were not
 *  read, nothing can be told. */
export function dropLeavingSlot(ctx: PlanContext, n: string): Verdict | undefined {
  const slot = ctx.input.slotNames?.[n];
  const live = livePrimary(ctx);
  if (!machineGone(ctx, n) || !slot || !live?.slots?.includes(slot)) return undefined;
  return clusterAction(
    { type: 'dropSlots', primary: ctx.primary!, node: n },
    `${n}'s machine is gone; dropping its replication slot ${slot} on primary ${ctx.primary}, which would ` +
      'otherwise keep WAL for it for ever',
  );
}

export function forgetLeaving(ctx: PlanContext, n: string): Verdict | undefined {
  const slot = ctx.input.slotNames?.[n];
  const live = livePrimary(ctx);
  const slotGone = !slot || (!!live?.slots && !live.slots.includes(slot));
  if (!machineGone(ctx, n) || !slotGone) return undefined;
  return clusterAction(
    { type: 'forgetNode', node: n },
    `${n} left the spec and is gone: no machine, no pgpool backend, no replication slot, not in ` +
      'synchronous_standby_names; forgetting it',
  );
}

// --- the primary left the spec: hand over to the most advanced streaming standby first --------

function handoverTarget(ctx: PlanContext): { primary: string; to: string | undefined } | undefined {
  const { primary } = ctx;
  if (!primary || !ctx.primaryHealthy || ctx.specNames.includes(primary)) return undefined;
  const to = [...ctx.streaming].sort((a, b) => lsnOf(ctx.obs(b)) - lsnOf(ctx.obs(a)))[0];
  return { primary, to };
}

export function waitForHandover(ctx: PlanContext): Verdict | undefined {
  const h = handoverTarget(ctx);
  if (!h || h.to !== undefined) return undefined;
  return wait(
    `primary ${h.primary} left the spec; waiting for a streaming standby to hand over to`,
    h.primary,
    ctx.probeMs,
  );
}

export function handOver(ctx: PlanContext): Verdict | undefined {
  const h = handoverTarget(ctx);
  if (!h?.to) return undefined;
  return act(
    h.primary,
    'switchover.requested',
    `primary ${h.primary} left the spec; shutting it down cleanly so ${h.to} takes over with every commit`,
  );
}
