// Bootstrap: no node holds data yet, so the first installed node becomes the primary.

import { act, healthy, wait, type PlanContext } from './context.js';
import type { Verdict } from './types.js';
import { jobOf } from './jobs.js';

function installedNodes(ctx: PlanContext): string[] | undefined {
  if (ctx.primary || ctx.anyData) return undefined;
  return ctx.specNames.filter((n) => ctx.state(n) === 'installed');
}

/** An installed node that cannot be seen may already hold the first primary (initdb done, the
 *  commit lost): initialising another one would make two. */
function unseen(ctx: PlanContext, installed: string[]): string[] {
  return installed.filter((n) => !ctx.obs(n)?.reachable);
}

const stoppedOf = (ctx: PlanContext, nodes: string[]) =>
  nodes.find((n) => ctx.obs(n)?.machine.state === 'stopped');

export function startMachineForBootstrap(ctx: PlanContext): Verdict | undefined {
  const installed = installedNodes(ctx);
  const off = installed && stoppedOf(ctx, unseen(ctx, installed));
  return off ? act(off, 'machine.down', `${off}'s machine is off; starting it`) : undefined;
}

export function waitForUnseen(ctx: PlanContext): Verdict | undefined {
  const installed = installedNodes(ctx);
  if (!installed) return undefined;
  const hidden = unseen(ctx, installed);
  if (hidden.length === 0 || stoppedOf(ctx, hidden)) return undefined;
  return wait(
    `no node holds recorded data yet, but ${hidden.join(', ')} cannot be read and may hold an unrecorded ` +
      'primary; waiting before initialising one',
    hidden[0],
    ctx.probeMs,
  );
}

/** How long the first primary waits for an earlier spec node whose machine is up but does not
 *  answer over SSH yet: a lab host's first seconds on a busy machine (a VM's boot under TCG is
 *  longer: then the first to answer is the first primary). */
const BOOT_PATIENCE_MS = 10_000;
/** How often it looks again meanwhile (a job that settles wakes the loop anyway). */
const BOOT_LOOK_MS = 1_000;

/** Being set up: its job runs, or its machine was just made and is booting. */
function onItsWay(ctx: PlanContext, n: string): boolean {
  const job = jobOf(ctx, n);
  if (job) return job.state === 'running';
  if (ctx.state(n) !== 'provisioned' || ctx.obs(n)?.machine.state !== 'running') return false;
  return ctx.input.now - (ctx.input.since?.[n] ?? 0) < BOOT_PATIENCE_MS;
}

/** One that already runs as a primary (initPrimary succeeded, its commit lost) wins. */
export function initPrimary(ctx: PlanContext): Verdict | undefined {
  // a restore reads through the cluster's own repository server (backup.restore-server)
  if (ctx.input.spec.bootstrap && ctx.input.observation.backup?.server !== 'running') return undefined;
  const installed = installedNodes(ctx);
  if (!installed || unseen(ctx, installed).length > 0) return undefined;
  // one is being initialised (an earlier node's failed try may have cooled down meanwhile)
  const initialising = installed.find((n) => {
    const job = jobOf(ctx, n);
    return job?.kind === 'initPrimary' && job.state === 'running';
  });
  if (initialising) {
    const reason = `no node holds data yet; ${initialising} is being initialised as the first primary`;
    return { ...wait(reason, initialising, BOOT_LOOK_MS), setUpMeanwhile: true };
  }
  const running = installed.find((n) => healthy(ctx.obs(n)) && ctx.obs(n)!.postgres!.inRecovery === false);
  // a node whose job just failed (its initdb, say: a leftover it will not write over) is passed
  // over while it cools down: electing it again would hold every other node up with it
  const first = running ?? installed.find((n) => ctx.obs(n)?.reachable && jobOf(ctx, n)?.state !== 'cooling');
  if (!first) return undefined;
  // the first primary is the first spec node that can be: one still being installed comes first
  const earlier = ctx.specNames.slice(0, ctx.specNames.indexOf(first));
  const coming = running ? undefined : earlier.find((n) => onItsWay(ctx, n));
  if (coming) {
    const reason = `no node holds data yet; ${coming} is being set up and will be the first primary`;
    // its own provisioning and install (and every other node's) go on meanwhile
    return { ...wait(reason, coming, BOOT_LOOK_MS), setUpMeanwhile: true };
  }
  return act(first, 'primary.elected', `no node holds data yet; initialising ${first} as the first primary`, {
    standbys: ctx.specNames.filter((x) => x !== first),
  });
}
