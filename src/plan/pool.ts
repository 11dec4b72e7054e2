// pgpool: it routes writes to the primary, keeps no session on a failed node, and runs the
// spec's configuration.

import { clusterAction, type PlanContext } from './context.js';
import type { Verdict } from './types.js';
import { poolHoldsStandbys } from '../spec/types.js';

/** pgpool opens every new session on all its nodes, so each one fails until a failed node is
 *  detached (pgpool detaches nothing by itself). Decided before slower per-node repairs. */
export function detachFailedFromPool(ctx: PlanContext): Verdict | undefined {
  const { primary } = ctx;
  const pool = ctx.input.observation.pool;
  if (!primary || !ctx.primaryHealthy || !ctx.input.spec.pgpool.enabled || !pool?.reachable) return undefined;
  const failed = pool.backends
    .filter((b) => b.status === 'up' && ctx.poolFailed.includes(b.name))
    .map((b) => b.name);
  if (failed.length === 0) return undefined;
  return clusterAction(
    { type: 'ensurePool', primary, failed: ctx.poolFailed },
    `postgres on ${failed.join(', ')} failed ${ctx.budget}+ probes but pgpool still opens sessions there; ` +
      `detaching ${failed.length > 1 ? 'them' : 'it'}`,
  );
}

/** pgpool is configured from the spec: a primary that left it is handed over first (scale.ts). */
function poolOfSpecPrimary(ctx: PlanContext) {
  const { primary } = ctx;
  if (!primary || !ctx.primaryHealthy || !ctx.input.spec.pgpool.enabled || !ctx.specNames.includes(primary)) {
    return undefined;
  }
  return { primary, pool: ctx.input.observation.pool };
}

/** Why pgpool does not route as it should, or undefined when it does. */
function misrouting(ctx: PlanContext, primary: string, pool: PoolLook): string | undefined {
  if (!pool || !pool.reachable) return `pgpool is not answering${pool?.error ? ` (${pool.error})` : ''}`;
  if (pool.primary !== primary) return `pgpool routes writes to ${pool.primary ?? 'nothing'}`;
  const holdsStandbys = poolHoldsStandbys(ctx.input.spec.pgpool);
  const down = pool.backends.filter(
    (b) => b.status !== 'up' && (b.name === primary || (holdsStandbys && ctx.streaming.includes(b.name))),
  );
  if (down.length > 0) return `pgpool marks ${down.map((b) => b.name).join(', ')} down`;
  if (holdsStandbys) return undefined;
  const held = pool.backends.filter((b) => b.status === 'up' && b.name !== primary).map((b) => b.name);
  return held.length > 0
    ? `pgpool holds ${held.join(', ')} up though it balances no load to standbys`
    : undefined;
}
type PoolLook = PlanContext['input']['observation']['pool'];

export function routePool(ctx: PlanContext): Verdict | undefined {
  const look = poolOfSpecPrimary(ctx);
  const why = look && misrouting(ctx, look.primary, look.pool);
  if (!look || !why) return undefined;
  return clusterAction(
    { type: 'ensurePool', primary: look.primary, failed: ctx.poolFailed },
    `${why}; pointing it at primary ${look.primary}`,
  );
}

/** After routing: a restart ends every client session, so not in the middle of a failover. */
export function reconfigurePool(ctx: PlanContext): Verdict | undefined {
  const look = poolOfSpecPrimary(ctx);
  if (!look || !look.pool || misrouting(ctx, look.primary, look.pool) !== undefined) return undefined;
  const desired = ctx.input.desiredPoolConfigHash;
  if (desired === undefined || look.pool.configHash === desired) return undefined;
  return clusterAction(
    { type: 'ensurePool', primary: look.primary, failed: ctx.poolFailed },
    `pgpool's configuration differs from the spec (${look.pool.configHash ? 'changed' : 'not recorded'}); ` +
      'rewriting it and restarting pgpool',
  );
}
