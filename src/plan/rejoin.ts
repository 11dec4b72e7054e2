// Degraded, rejoining and fenced nodes come back: as standbys of the primary when there is one,
// else in place so that the most advanced node can be promoted.

import { act, hangs, type PlanContext } from './context.js';
import type { Verdict } from './types.js';
import { earlierTimelinesPending } from './backup.js';

const returning = (ctx: PlanContext, n: string) =>
  ctx.state(n) === 'degraded' || ctx.state(n) === 'rejoining';

export function startMachineToRejoin(ctx: PlanContext, n: string): Verdict | undefined {
  if (!returning(ctx, n) || ctx.obs(n)?.machine.state !== 'stopped') return undefined;
  return act(n, 'machine.down', `${n}'s machine is off; starting it to rejoin`);
}

export function rejoinAsStandby(ctx: PlanContext, n: string): Verdict | undefined {
  const { primary } = ctx;
  const o = ctx.obs(n);
  if (!returning(ctx, n) || !o?.reachable || hangs(o) || !primary || !ctx.primaryHealthy) return undefined;
  // a rewind checkpoints the primary: not before the WAL it alone holds is in the repository
  if (earlierTimelinesPending(ctx)) return undefined;
  const how = ctx.state(n) === 'rejoining' ? 'rewinding it into' : 'rejoining it as';
  return act(n, 'machine.reachable', `${n} is reachable again; ${how} a standby of ${primary}`, { primary });
}

/** Without a primary (the election could not promote anyone), a degraded standby's postgres
 *  comes back in place: it comes up in recovery and may hold commits a sync-mode promotion must
 *  see. A rejoining node may be an old primary: only the most recent one comes back, and only
 *  when no standby can be promoted instead. Never two. */
export function restartInPlace(ctx: PlanContext, n: string): Verdict | undefined {
  const o = ctx.obs(n);
  if (!returning(ctx, n) || o?.machine.state === 'stopped' || !o?.reachable || hangs(o)) return undefined;
  if (ctx.primary || (ctx.state(n) !== 'degraded' && n !== ctx.lastPrimaryToBringBack)) return undefined;
  return act(
    n,
    'postgres.stopped',
    `no primary; restarting ${n}'s postgres in place so the most advanced node can be promoted`,
  );
}

export function releaseFence(ctx: PlanContext, n: string): Verdict | undefined {
  const { primary } = ctx;
  if (ctx.state(n) !== 'fenced' || !primary || !ctx.primaryHealthy) return undefined;
  return act(
    n,
    'fence.released',
    `${primary} is the new primary; restarting fenced ${n} to rejoin as a standby`,
  );
}

/** It holds every commit it acknowledged. */
export function releaseLastPrimary(ctx: PlanContext, n: string): Verdict | undefined {
  if (ctx.state(n) !== 'fenced' || n !== ctx.lastPrimaryToBringBack) return undefined;
  const blocked = ctx.electionBlockedBy !== undefined ? ` (${ctx.electionBlockedBy})` : '';
  return act(
    n,
    'fence.released',
    `no standby can be promoted${blocked}; restarting ${n}, the most recent primary, ` +
      'which holds every commit it acknowledged',
  );
}
