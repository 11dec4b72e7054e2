// pgpool: it routes writes to the primary, keeps no session on a failed node, and runs the
// spec's configuration.

import { clusterAction, wait, type PlanContext } from './context.js';
import type { Verdict } from './types.js';
import { poolHoldsStandbys, poolHostNode, poolVip } from '../spec/types.js';
import type { PoolHostObservation } from '../observe/types.js';

/** pgpool opens every new session on all its nodes, so each one fails until a failed node is
 *  taken out (pgpool detaches nothing by itself): detached, or on a pool host of its own cut off
 *  by a route (the pool driver's cutStandby). Decided before slower per-node repairs. */
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
      `taking ${failed.length > 1 ? 'them' : 'it'} out of pgpool (cut off by a route on a pool host of ` +
      'its own, else detached)',
  );
}

/** The looks in a row a pool host's pgpool has missed: its port silent (not while PCP's port
 *  answers: pgpool is alive there and only busy, every child serving a client, its listen
 *  backlog full), or its port open and pgpool not answering. */
const missedLooks = (h: PoolHostObservation) =>
  Math.max(h.pcpPort !== 'open' ? h.silentLooks : 0, h.unansweredLooks);

/** A pool host's pgpool serves no client: nothing listens on its port, its machine is off (the
 *  provider says so: no need to count looks), or it missed the failure budget's looks (host down
 *  or cut off, or hung). A busy one is not: fencing it would cut off the clients it serves. */
const poolHostDead = (h: PoolHostObservation, budget: number) =>
  h.port === 'refused' || h.machine === 'stopped' || h.machine === 'missing' || missedLooks(h) >= budget;

/** A pool host's pgpool serves clients: its port accepts, or it is only busy (above). */
const poolHostServes = (h: PoolHostObservation) =>
  h.port === 'open' || (h.port === 'silent' && h.pcpPort === 'open');

/** pgpool is configured from the spec: a primary that left it is handed over first (scale.ts). */
function specPrimaryForPool(ctx: PlanContext): string | undefined {
  const { primary } = ctx;
  if (!primary || !ctx.primaryHealthy || !ctx.input.spec.pgpool.enabled || !ctx.specNames.includes(primary)) {
    return undefined;
  }
  return primary;
}

/** ... and the pgpool clients reach: with several pool hosts, the one live holder of the virtual
 *  IP (none, or a dead one: placing the address comes first, holdVirtualIp). */
function poolOfSpecPrimary(ctx: PlanContext) {
  const primary = specPrimaryForPool(ctx);
  if (!primary) return undefined;
  const pool = ctx.input.observation.pool;
  const hosts = pool?.hosts;
  if (!hosts) return { primary, pool };
  const holders = hosts.filter((h) => h.holdsVip === true);
  const holder = holders.length === 1 ? holders[0]! : undefined;
  // one that stopped answering is the virtual IP's to move first (a pgpool just killed keeps
  // its port a moment: a restart here would cost clients seconds); routed once nothing could
  // a holder being configured (its pgpool died with nowhere to move the address) is its job's
  if (!holder || !poolHostServes(holder) || ctx.input.poolHostJobs?.[holder.name]?.state === 'running')
    return undefined;
  if (holder.unansweredLooks > 0 && holder.unansweredLooks < ctx.budget) return undefined;
  return { primary, pool };
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

// ------------------------------------------------------------------ several pool hosts

/** A pool host the spec no longer names is removed before anything else moves the virtual IP:
 *  it may hold the address (or, having been the one pool host, have it as its own). */
export function removeLeftPoolHost(ctx: PlanContext): Verdict | undefined {
  const host = ctx.input.observation.pool?.leftHosts?.[0];
  if (!host) return undefined;
  return clusterAction(
    { type: 'removePoolHost', host },
    `pool host ${host} is no longer in the spec; removing its machine (its pgpool and addresses with it)`,
  );
}

/** Clients reach pgpool at the virtual IP: exactly one pool host holds it, one whose pgpool
 *  listens. Otherwise it goes to a live pool host reached over SSH (the holder that still
 *  listens, else one routing to the primary, else the first in spec order); the driver makes
 *  every other host drop it first, powering off one it cannot reach. */
export function holdVirtualIp(ctx: PlanContext): Verdict | undefined {
  const vip = poolVip(ctx.input.spec);
  // pgpool's own watchdog moves it (a pgpool that died is restarted without it, routeOtherPoolHosts)
  if (ctx.input.spec.pgpool.watchdog.enabled) return undefined;
  const hosts = ctx.input.observation.pool?.hosts;
  if (!vip || !hosts || (ctx.input.observation.pool?.leftHosts ?? []).length > 0) return undefined;
  // not read yet (the operator just started): a live holder may be among them
  if (hosts.some((h) => h.holdsVip === null && h.shellReachable && h.port === 'open')) return undefined;
  const holders = hosts.filter((h) => h.holdsVip === true);
  const sole = holders.length === 1 ? holders[0]! : undefined;
  if (sole && !poolHostDead(sole, ctx.budget)) return undefined;
  if (leavingNodeMayHold(ctx)) return undefined;
  // one being configured may be restarting its pgpool: the address waits for the job
  const configuring = (h: PoolHostObservation) => poolHostJob(ctx, h.name)?.state === 'running';
  const live = hosts.filter(
    (h) => h.shellReachable && h.port === 'open' && !poolHostDead(h, ctx.budget) && !configuring(h),
  );
  const to =
    live.find((h) => h.holdsVip === true) ??
    live.find((h) => ctx.primary && h.primary === ctx.primary) ??
    live[0];
  if (!to) return undefined;
  const why = !sole
    ? holders.length === 0
      ? `no pool host holds the virtual IP ${vip}`
      : `${holders.map((h) => h.name).join(' and ')} all hold the virtual IP ${vip}`
    : sole.port === 'refused'
      ? `pgpool on ${sole.name}, which holds the virtual IP ${vip}, is not running (its port refuses)`
      : `${sole.name}, which holds the virtual IP ${vip}, has not answered ${sole.silentLooks} looks`;
  return clusterAction({ type: 'moveVip', to: to.name }, `${why}; moving it to ${to.name}`);
}

/** The virtual IP's holder stopped answering, not yet for the failure budget's looks: the next
 *  looks come at the retry interval, as a primary's probes do after a miss (a merely slow holder
 *  answers one of them and nothing happens). Not while a job's wait would set the pace. */
export function waitForSilentHolder(ctx: PlanContext): Verdict | undefined {
  const vip = poolVip(ctx.input.spec);
  if (!vip || ctx.input.spec.pgpool.watchdog.enabled) return undefined;
  const holders = ctx.input.observation.pool?.hosts?.filter((h) => h.holdsVip === true) ?? [];
  const holder = holders.length === 1 ? holders[0]! : undefined;
  if (!holder || poolHostDead(holder, ctx.budget)) return undefined;
  const looks = missedLooks(holder);
  if (looks === 0) return undefined;
  return wait(
    `${holder.name}, which holds the virtual IP ${vip}, has not answered ${looks}/${ctx.budget} looks`,
    undefined,
    ctx.retryMs,
  );
}

/** pgpool on the nodes: a node leaving the spec is no pool host any more (not looked at), yet
 *  while its machine runs it may hold the address, and its pgpool serve the clients there. It is
 *  fenced first (scale.ts), which takes the address with it: moving the address before would
 *  leave it on two machines. */
function leavingNodeMayHold(ctx: PlanContext): boolean {
  if (!ctx.input.spec.pgpool.onNodes) return false;
  return ctx.strayNames.some((n) => ctx.obs(n)?.machine.state === 'running' && ctx.state(n) !== 'deleting');
}

/** A pool host that was fenced or stopped is started again (it then gets its pgpool back). */
export function startPoolHost(ctx: PlanContext): Verdict | undefined {
  const spec = ctx.input.spec;
  // a node's machine (pgpool on the nodes) is the node's rules' to start
  const hosts = ctx.input.observation.pool?.hosts?.filter((h) => !poolHostNode(spec, h.name));
  // a missing one is made with the first node; later (a pool host added to the spec) here
  const down = hosts?.find((h) => h.machine === 'stopped' || (h.machine === 'missing' && ctx.primary));
  if (!down) return undefined;
  return clusterAction(
    { type: 'startPoolHost', host: down.name },
    `pool host ${down.name} is ${down.machine}: starting it (no client reaches it before it holds the ` +
      'virtual IP)',
  );
}

/** Every pool host's pgpool as the serving one's: configured from the spec, routing to the
 *  primary, so that the virtual IP can move there at any moment. One host at a time starts as a
 *  job (the next pass starts the next one's): none of it holds up the loop. A holder whose pgpool died is
 *  one of them once no live host can take the address (holdVirtualIp moves it otherwise):
 *  someone's pgpool must start. */
export function routeOtherPoolHosts(ctx: PlanContext): Verdict | undefined {
  const primary = specPrimaryForPool(ctx);
  const hosts = ctx.input.observation.pool?.hosts;
  if (!primary || !hosts) return undefined;
  const look = { primary };
  const desired = ctx.input.desiredPoolConfigHash;
  for (const h of hosts) {
    // its job runs, or failed a moment ago and cools down
    if (poolHostJob(ctx, h.name)) continue;
    // down or cut off (a silent port): SSH would only time out
    if (!h.shellReachable || h.port === 'silent' || (h.machine && h.machine !== 'running')) continue;
    // the serving holder is routePool's
    if (h.holdsVip === true && h.port === 'open') continue;
    const drift = desired !== undefined && h.reachable && h.configHash !== '' && h.configHash !== desired;
    const why =
      misrouting(ctx, look.primary, h) ?? (drift ? "pgpool's configuration differs from the spec" : null);
    if (!why) continue;
    return clusterAction(
      { type: 'configurePoolHost', host: h.name, primary: look.primary, failed: ctx.poolFailed },
      `pool host ${h.name}: ${why}; configuring it and pointing it at primary ${look.primary}`,
    );
  }
  return undefined;
}

/** Nothing left to do but the pool layer is not whole: no live holder of the virtual IP yet, a
 *  pool host whose pgpool is down (the cluster has lost a spare), or one that routes otherwise
 *  than the spec. Not Healthy until it is. */
export function waitForPoolHosts(ctx: PlanContext): Verdict | undefined {
  const vip = poolVip(ctx.input.spec);
  const hosts = ctx.input.observation.pool?.hosts;
  if (!vip || !hosts) return undefined;
  const holders = hosts.filter((h) => h.holdsVip === true);
  if (holders.length !== 1 || !poolHostServes(holders[0]!))
    return wait(`no live pool host holds the virtual IP ${vip} yet`);
  const down = hosts.filter((h) => !h.reachable).map((h) => h.name);
  if (down.length > 0) return wait(`pgpool is down on pool host ${down.join(', ')} (a spare for ${vip})`);
  const configuring = Object.entries(ctx.input.poolHostJobs ?? {}).filter(([, j]) => j.state === 'running');
  if (configuring.length > 0) {
    const jobs = configuring.map(([h, j]) => `pool host ${h}: job #${j.id} configures pgpool`);
    return wait(jobs.join('; '), undefined, 1_000);
  }
  // a spare routeOtherPoolHosts could not configure (its shell did not answer, its job cools
  // down) would take the address as it routes now
  const primary = specPrimaryForPool(ctx);
  if (!primary) return undefined;
  for (const h of hosts.filter((x) => x !== holders[0])) {
    const why = misrouting(ctx, primary, h);
    if (why) return wait(`pool host ${h.name}: ${why} (a spare for ${vip}, not configured yet)`);
  }
  return undefined;
}

/** Nothing left to do, but the pgpool clients reach still handles an attach: it ends every new
 *  session until it has (src/drivers/pgpool/failback.ts). Not Healthy until then. */
export function waitForPoolAttach(ctx: PlanContext): Verdict | undefined {
  if (!ctx.input.spec.pgpool.enabled || !ctx.input.observation.pool?.handlingAttach) return undefined;
  return wait('pgpool is still handling an attach (it ends new sessions until it has)', undefined, 250);
}

/** The pool host's configuration job, running or cooling down after a failure. */
function poolHostJob(ctx: PlanContext, host: string) {
  const job = ctx.input.poolHostJobs?.[host];
  return job && (job.state === 'running' || job.deadlineAt > ctx.input.now) ? job : undefined;
}
