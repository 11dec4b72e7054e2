// One node towards its goal: bring-up (provision, install, clone), standby upkeep, removal; and
// bookkeeping for a world that is ahead of the records.

import { REQUEUE, act, healthy, lookPredates, streamingFrom, wait, type PlanContext } from './context.js';
import type { Verdict } from './types.js';

/** The machine under a node disappeared. A node that left the spec is removed step by step
 *  instead (scale.ts); only a primary's loss is news to the election. */
export function machineVanished(ctx: PlanContext): Verdict | undefined {
  const strayPrimaries = ctx.strayNames.filter((x) => ctx.state(x) === 'primary');
  const n = [...ctx.specNames, ...strayPrimaries].find((x) => {
    const s = ctx.state(x);
    const gone = ctx.obs(x)?.machine.state === 'missing' && !lookPredates(ctx, x);
    return s !== 'absent' && s !== 'deleting' && gone;
  });
  if (n === undefined) return undefined;
  const why = ctx.state(n) === 'primary' ? ' (the primary is gone for good: no fencing needed)' : '';
  return act(n, 'machine.vanished', `${n}'s machine no longer exists${why}; starting it over from nothing`);
}

/** The first installed node whose data directory the records do not know (the operator died
 *  after a clone or an initdb succeeded) and that is down or in recovery. Started in place, a
 *  clone comes up in recovery and the first primary as a primary: either is then adopted. */
function unrecordedData(ctx: PlanContext): string | undefined {
  return ctx.specNames.find((n) => {
    const pg = ctx.obs(n)?.postgres;
    const adoptable = !!pg?.initialized && !!ctx.obs(n)?.reachable && (!pg.running || pg.inRecovery);
    return ctx.state(n) === 'installed' && adoptable;
  });
}

export function adoptClone(ctx: PlanContext): Verdict | undefined {
  const n = unrecordedData(ctx);
  if (n === undefined || !ctx.obs(n)!.postgres!.running) return undefined;
  return act(
    n,
    'standby.found',
    `${n} already runs as a standby (its clone finished before the operator recorded it); recording it`,
  );
}

export function startUnrecorded(ctx: PlanContext): Verdict | undefined {
  const n = unrecordedData(ctx);
  if (n === undefined || ctx.obs(n)!.postgres!.running) return undefined;
  return act(
    n,
    'postgres.stopped',
    `${n} holds a data directory pgop has not recorded and postgres is down; ` +
      'starting it in place to adopt it',
  );
}

// --- per-node rules: (ctx, node) => decision ---------------------------------------------------

export function provision(ctx: PlanContext, n: string): Verdict | undefined {
  if (ctx.state(n) !== 'absent') return undefined;
  return act(n, 'node.wanted', `${n} is in the spec but has no machine; provisioning it`);
}

export function install(ctx: PlanContext, n: string): Verdict | undefined {
  if (ctx.state(n) !== 'provisioned' || !ctx.obs(n)?.reachable) return undefined;
  return act(n, 'machine.reachable', `${n} answers over SSH; installing and configuring postgres`);
}

export function reprovision(ctx: PlanContext, n: string): Verdict | undefined {
  const o = ctx.obs(n);
  if (ctx.state(n) !== 'provisioned' || o?.reachable || o?.machine.state !== 'stopped') return undefined;
  if (lookPredates(ctx, n)) return undefined;
  return act(n, 'machine.vanished', `${n}'s machine stopped before installation; provisioning it again`);
}

export function startMachine(ctx: PlanContext, n: string): Verdict | undefined {
  if (ctx.state(n) !== 'installed' || ctx.obs(n)?.machine.state !== 'stopped') return undefined;
  return act(n, 'machine.down', `${n}'s machine is off; starting it`);
}

export function cloneStandby(ctx: PlanContext, n: string): Verdict | undefined {
  const { primary } = ctx;
  if (ctx.state(n) !== 'installed' || !ctx.obs(n)?.reachable) return undefined;
  if (!primary || !ctx.primaryHealthy) return undefined;
  return act(n, 'primary.found', `${primary} is primary; cloning ${n} from it as a streaming standby`, {
    primary,
  });
}

/** Marked degraded with or without a primary: a degraded node has ways back (restart in place,
 *  then promotion) that a stuck 'standby' has not. */
export function markStandbyFailed(ctx: PlanContext, n: string): Verdict | undefined {
  const o = ctx.obs(n);
  if (ctx.state(n) !== 'standby' || healthy(o) || (o?.misses ?? 0) < ctx.budget) return undefined;
  const why = o?.error ?? 'postgres not running';
  return act(n, 'probe.failed', `standby ${n} failed ${o?.misses} consecutive probes (${why})`);
}

export function repointStandby(ctx: PlanContext, n: string): Verdict | undefined {
  const { primary } = ctx;
  const o = ctx.obs(n);
  if (ctx.state(n) !== 'standby' || !primary || !healthy(o) || !ctx.primaryHealthy) return undefined;
  if (streamingFrom(o, primary)) return undefined;
  const up = o!.postgres!.upstream;
  const how = up && up !== primary ? `follows ${up}` : 'is not streaming';
  return act(n, 'primary.changed', `standby ${n} ${how}; pointing it at primary ${primary}`, { primary });
}

/** A standby's drift is repaired only while there is a primary to follow. */
export function repairConfigDrift(ctx: PlanContext, n: string): Verdict | undefined {
  const s = ctx.state(n);
  if (s !== 'primary' && !(s === 'standby' && ctx.primary)) return undefined;
  const o = ctx.obs(n);
  if (!healthy(o) || o!.postgres!.configHash === ctx.input.desiredConfigHash[n]) return undefined;
  return act(n, 'config.drifted', `${n}'s configuration differs from the spec; rewriting and reloading it`);
}

export function removeMachine(ctx: PlanContext, n: string): Verdict | undefined {
  if (ctx.state(n) !== 'deleting') return undefined;
  return act(n, 'machine.fenced', `${n} is powered off; removing its machine`);
}

// --- nothing to do but wait ------------------------------------------------------------------

export function waitForNodes(ctx: PlanContext): Verdict | undefined {
  const { primary, state, obs } = ctx;
  const n = ctx.specNames.find((x) => {
    const s = state(x);
    if (s === 'primary') return !healthy(obs(x));
    return !(s === 'standby' && primary && streamingFrom(obs(x), primary));
  });
  if (n === undefined) return undefined;
  const detail = obs(n)?.error ? `: ${obs(n)!.error}` : '';
  return wait(
    `waiting for ${n} (${state(n)}${detail})`,
    n,
    state(n) === 'provisioned' ? REQUEUE.waitBoot : REQUEUE.waitShort,
  );
}

export function converged(ctx: PlanContext): Verdict {
  return {
    kind: 'done',
    reason:
      `primary ${ctx.primary}, ${ctx.specNames.length - 1} streaming standbys; ` +
      "matches generation's spec",
    requeueAfterMs: ctx.probeMs,
  };
}
