// Deleting the whole cluster: fence each node, delete its machine, then the cluster's resources.

import { act, clusterAction, type PlanContext } from './context.js';
import type { Verdict } from './types.js';

/** The first node (spec order, then nodes that left the spec) deletion has not removed yet. */
function nextToDelete(ctx: PlanContext): string | undefined {
  return [...ctx.specNames, ...ctx.strayNames].find((n) => ctx.state(n) !== 'absent');
}

export function removeMachineOnDeletion(ctx: PlanContext): Verdict | undefined {
  if (!ctx.input.deletionRequested) return undefined;
  const n = nextToDelete(ctx);
  if (n === undefined || ctx.state(n) !== 'deleting') return undefined;
  return act(n, 'machine.fenced', `cluster deletion: removing ${n}'s machine and data`);
}

export function fenceOnDeletion(ctx: PlanContext): Verdict | undefined {
  if (!ctx.input.deletionRequested) return undefined;
  const n = nextToDelete(ctx);
  if (n === undefined || ctx.state(n) === 'deleting') return undefined;
  return act(n, 'node.unwanted', `cluster deletion: powering ${n} off first`);
}

/** Also removes machines pgop created but never recorded (a crash between side effect and
 *  commit), then networks and the pgpool host; the reconciler then forgets the cluster. */
export function deleteClusterResources(ctx: PlanContext): Verdict | undefined {
  if (!ctx.input.deletionRequested || nextToDelete(ctx) !== undefined) return undefined;
  return clusterAction(
    { type: 'deleteClusterResources' },
    'cluster deletion: every node is gone; removing machines left over, networks and the pgpool host',
  );
}
