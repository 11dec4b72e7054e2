// Bootstrap: no node holds data yet, so the first installed node becomes the primary.

import { act, healthy, wait, type PlanContext } from './context.js';
import type { Verdict } from './types.js';

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

/** One that already runs as a primary (initPrimary succeeded, its commit lost) wins. */
export function initPrimary(ctx: PlanContext): Verdict | undefined {
  const installed = installedNodes(ctx);
  if (!installed || unseen(ctx, installed).length > 0) return undefined;
  const running = installed.find((n) => healthy(ctx.obs(n)) && ctx.obs(n)!.postgres!.inRecovery === false);
  const first = running ?? installed.find((n) => ctx.obs(n)?.reachable);
  if (!first) return undefined;
  return act(first, 'primary.elected', `no node holds data yet; initialising ${first} as the first primary`, {
    standbys: ctx.specNames.filter((x) => x !== first),
  });
}
