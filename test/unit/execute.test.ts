// runActor / runClusterAction map every actor and cluster action to a driver operation: one that
// did nothing would let the reconciler commit a step that never happened.

import { describe, expect, it } from 'vitest';
import { NODE_ACTORS, type NodeActor } from '../../machines/node-edges.js';
import { runActor, runClusterAction } from '../../src/reconcile/execute.js';
import type { World } from '../../src/drivers/types.js';
import type { ClusterAction, NodeDecision } from '../../src/plan/types.js';
import { PgopError } from '../../src/errors.js';
import { simSpec } from '../helpers/sim-spec.js';

/** A world whose every driver method records its call and succeeds. */
function recordingWorld(): { world: World; calls: string[] } {
  const calls: string[] = [];
  const driver = (part: string) =>
    new Proxy(
      {},
      {
        get:
          (_, method) =>
          (..._args: unknown[]) => {
            calls.push(`${part}.${String(method)}`);
            return Promise.resolve();
          },
      },
    );
  const world = { provider: driver('provider'), postgres: driver('postgres'), pool: driver('pool') };
  return { world: world as unknown as World, calls };
}

const spec = simSpec();
const decision = (over: Partial<NodeDecision> = {}): NodeDecision => ({
  kind: 'act',
  node: 'pg02',
  event: 'primary.found',
  ruleId: 'node.clone-standby',
  reason: 'test',
  requeueAfterMs: 0,
  primary: 'pg01',
  ...over,
});

describe('runActor', () => {
  it.each(NODE_ACTORS)('%s runs a driver operation', async (actor) => {
    const { world, calls } = recordingWorld();
    await runActor(actor, decision(), spec, world);
    expect(calls.length).toBeGreaterThan(0);
  });

  it('an actor it does not know is an internal error, not a silent success', async () => {
    const { world, calls } = recordingWorld();
    const run = runActor('reticulateSplines' as NodeActor, decision(), spec, world);
    await expect(run).rejects.toSatisfy((e) => e instanceof PgopError && e.kind === 'internal');
    expect(calls).toEqual([]);
  });
});

describe('runClusterAction', () => {
  it('an action it does not know is an internal error, not a silent success', async () => {
    const { world } = recordingWorld();
    const run = runClusterAction({ type: 'reticulate' } as unknown as ClusterAction, spec, world);
    await expect(run).rejects.toSatisfy((e) => e instanceof PgopError && e.kind === 'internal');
  });

  it('ensurePool and ensureSyncStandbys reach their drivers', async () => {
    const { world, calls } = recordingWorld();
    await runClusterAction({ type: 'ensurePool', primary: 'pg01' }, spec, world);
    const sync: ClusterAction = { type: 'ensureSyncStandbys', primary: 'pg01', names: ['pg02'], quorum: 1 };
    await runClusterAction(sync, spec, world);
    expect(calls).toEqual(['pool.ensurePool', 'postgres.ensureSyncStandbys']);
  });
});
