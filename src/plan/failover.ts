// Failover: fence a failed primary (or bring it back when nobody can replace it), elect a new
// one, and point pgpool and the standbys at it before anything slower happens.

import type { NodeObservation } from '../observe/types.js';
import { formatLsn } from '../observe/lsn.js';
import { poolCutsByRoute } from '../spec/types.js';
import {
  REQUEUE,
  act,
  clusterAction,
  hangs,
  healthy,
  lsnOf,
  streamingFrom,
  wait,
  type PlanContext,
} from './context.js';
import type { NodeDecision, Verdict } from './types.js';

/** The primary's observation when it failed missesBeforeFailover probes in a row. */
function failedPrimary(ctx: PlanContext): NodeObservation | undefined {
  const o = ctx.primary ? ctx.obs(ctx.primary) : undefined;
  return o && !healthy(o) && o.misses >= ctx.budget ? o : undefined;
}

/** Fencing a primary nobody can replace turns an outage into a longer one: fence only when a
 *  standby can then be promoted (in sync mode: with quorum evidence). */
const replaceable = (ctx: PlanContext) => ctx.candidates.length > 0 && ctx.syncEvidence.ok;

export function fencePrimary(ctx: PlanContext): Verdict | undefined {
  const o = failedPrimary(ctx);
  if (!o || !replaceable(ctx)) return undefined;
  const primary = ctx.primary!;
  const successor = ctx.candidates[0]!;
  const { spec, observation } = ctx.input;
  // Only on a fresh look: an urgent look's standby answers predate the failure, and switching
  // pgpool to a standby the election then passes over costs pgpool a second failover. Not where
  // pool hosts of their own hold the standbys: pgpool's switch (a promote) would mark them down,
  // each attach back ending sessions; the promotion detaches the old primary there instead.
  const early = spec.pgpool.enabled && !observation.urgent && !poolCutsByRoute(spec.pgpool);
  const told = observation.urgent?.includes(primary) ? { postmasterDeathReported: true as const } : {};
  const meanwhile = early ? ` (pgpool switches to ${successor} meanwhile)` : '';
  return act(
    primary,
    'probe.failed',
    `primary ${primary} failed ${o.misses} consecutive probes (${o.error ?? 'postgres not running'}); ` +
      `fencing it before promoting a standby${meanwhile}`,
    { ...(early ? { successor } : {}), ...told },
  );
}

export function startFailedPrimary(ctx: PlanContext): Verdict | undefined {
  const o = failedPrimary(ctx);
  if (!o || replaceable(ctx) || o.machine.state !== 'stopped') return undefined;
  const p = ctx.primary!;
  return act(
    p,
    'machine.down',
    `primary ${p}'s machine is off and no standby can take over; starting it again`,
  );
}

export function restartFailedPrimary(ctx: PlanContext): Verdict | undefined {
  const o = failedPrimary(ctx);
  if (!o || replaceable(ctx) || o.machine.state === 'stopped' || !o.reachable || hangs(o)) return undefined;
  const p = ctx.primary!;
  return act(
    p,
    'postgres.stopped',
    `primary ${p}'s postgres is down and no standby can take over; restarting it in place`,
  );
}

export function waitForCandidate(ctx: PlanContext): Verdict | undefined {
  const o = failedPrimary(ctx);
  if (!o || replaceable(ctx) || o.machine.state === 'stopped' || o.reachable) return undefined;
  const p = ctx.primary!;
  const why = `primary ${p} failed ${o.misses} probes (${o.error ?? 'postgres down'})`;
  return wait(`${why} and no standby is healthy enough to take over`, p, ctx.probeMs);
}

/** A standby already writable: promoted by an operator that died before recording it, or its
 *  promotion succeeded though the actor reported a failure and it was then restarted in place.
 *  It holds the newest timeline. */
export function adoptPromoted(ctx: PlanContext): Verdict | undefined {
  if (ctx.primary) return undefined;
  const adopted = ctx.specNames.find(
    (n) => ctx.state(n) === 'standby' && healthy(ctx.obs(n)) && ctx.obs(n)!.postgres!.inRecovery === false,
  );
  if (!adopted) return undefined;
  return act(
    adopted,
    'primary.elected',
    `${adopted} is already writable (its promotion finished though it was not recorded); ` +
      'recording it as primary',
  );
}

/** The standby an election promotes now: a switchover's target if it is as advanced as the
 *  best candidate, else the best candidate. Undefined when no election can run. */
function electedStandby(ctx: PlanContext): string | undefined {
  if (ctx.primary || !ctx.anyData || !ctx.syncEvidence.ok) return undefined;
  const best = ctx.candidates[0];
  if (best === undefined) return undefined;
  const to = ctx.switchoverRequest?.args.to;
  const obs = ctx.obs;
  return to && ctx.candidates.includes(to) && lsnOf(obs(to)) >= lsnOf(obs(best)) ? to : best;
}

function promote(ctx: PlanContext, target: string): Verdict {
  const describe = (n: string) => {
    const pg = ctx.obs(n)?.postgres;
    return pg ? `${n} at LSN ${formatLsn(lsnOf(ctx.obs(n)))} on timeline ${pg.timeline}` : n;
  };
  const others = ctx.candidates.filter((c) => c !== target);
  const ahead = ctx.candidates.length > 1 ? `, ahead of ${others.map(describe).join(', ')}` : '';
  const timeline = (n: string) => ctx.obs(n)?.postgres?.timeline;
  const levelStandbys = others.filter(
    (c) => timeline(c) === timeline(target) && lsnOf(ctx.obs(c)) >= lsnOf(ctx.obs(target)),
  );
  return act(target, 'primary.elected', `no primary; promoting ${target}: ${describe(target)}${ahead}`, {
    standbys: ctx.specNames.filter((x) => x !== target),
    levelStandbys,
  });
}

export function promoteForFailover(ctx: PlanContext): Verdict | undefined {
  const target = electedStandby(ctx);
  return target !== undefined && !ctx.switchoverRequest ? promote(ctx, target) : undefined;
}

export function promoteForSwitchover(ctx: PlanContext): Verdict | undefined {
  const target = electedStandby(ctx);
  return target !== undefined && ctx.switchoverRequest ? promote(ctx, target) : undefined;
}

/** Decided after the per-node rules: the nodes that could supply the evidence recover first. */
export function waitForSyncEvidence(ctx: PlanContext): Verdict | undefined {
  if (ctx.electionBlockedBy === undefined) return undefined;
  return wait(ctx.electionBlockedBy, undefined, ctx.probeMs);
}

/** Right after a failover, clients first: pgpool routes writes to the new primary, and the other
 *  standbys follow it in the same pass (in sync mode commits wait for them), before anything
 *  slower such as rewinding the old primary. */
export function routePoolAfterFailover(ctx: PlanContext): Verdict | undefined {
  const { primary, specNames, state, obs } = ctx;
  if (!primary || !ctx.primaryHealthy || !ctx.input.spec.pgpool.enabled || !specNames.includes(primary)) {
    return undefined;
  }
  const pool = ctx.input.observation.pool;
  const afterFailover =
    specNames.some((n) => state(n) === 'fenced' || state(n) === 'rejoining') ||
    (!!pool?.reachable && pool.primary !== null && pool.primary !== primary);
  if (!afterFailover || (pool?.reachable && pool.primary === primary)) return undefined;
  // While pgpool does not answer it is still switching (restarting its children): the standbys
  // follow once it answers, so that their reloads do not compete with that restart for the CPU.
  // Commits on the new primary do not wait for them meanwhile: it starts with no sync set.
  const repoints = !pool?.reachable
    ? []
    : specNames
        .filter((n) => n !== primary && state(n) === 'standby' && healthy(obs(n)))
        .filter((n) => !streamingFrom(obs(n), primary))
        .map((n): NodeDecision => ({
          kind: 'act',
          node: n,
          event: 'primary.changed',
          ruleId: 'standby.repoint',
          reason:
            `standby ${n} follows ${obs(n)!.postgres!.upstream ?? 'nobody'}; ` +
            `pointing it at primary ${primary}`,
          requeueAfterMs: REQUEUE.afterAct,
          primary,
        }));
  const why = !pool?.reachable
    ? `pgpool is not answering${pool?.error ? ` (${pool.error})` : ''}`
    : `pgpool routes writes to ${pool.primary}`;
  const follow = repoints.length ? ` while ${repoints.map((d) => d.node).join(', ')} follow it` : '';
  return {
    ...clusterAction(
      { type: 'ensurePool', primary, failed: ctx.poolFailed },
      `${why}; pointing it at new primary ${primary}${follow}`,
    ),
    also: repoints,
  };
}

/** A primary that misses probes, but not yet enough of them: probes come faster meanwhile. */
export function waitForPrimary(ctx: PlanContext): Verdict | undefined {
  const { primary } = ctx;
  if (!primary || ctx.primaryHealthy) return undefined;
  const o = ctx.obs(primary);
  return wait(
    `primary ${primary} is not answering (${o?.error ?? 'postgres down'}; ` +
      `${o?.misses ?? 0}/${ctx.budget} misses)`,
    primary,
    ctx.retryMs,
  );
}
