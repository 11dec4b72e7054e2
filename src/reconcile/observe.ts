// Observe one cluster afresh: provider machines, a health probe per node, pgpool. Every
// failure becomes data in the observation; nothing here throws for an unhealthy world.

import type { ClusterSpec } from '../spec/types.js';
import type { World } from '../drivers/types.js';
import type { ClusterObservation, NodeObservation } from '../observe/types.js';
import { messageOf } from '../errors.js';

export async function observeCluster(
  spec: ClusterSpec,
  world: World,
  previousMisses: Record<string, number>,
  now: number,
): Promise<ClusterObservation> {
  let machines: Awaited<ReturnType<World['provider']['observeMachines']>>;
  try {
    machines = await world.provider.observeMachines(spec);
  } catch (err) {
    // The provider itself did not answer: treat every machine as unknown-but-present so the
    // planner neither reprovisions nor declares anything vanished on a provider hiccup.
    machines = Object.fromEntries(spec.nodes.map((n) => [n.name, { state: 'running' as const, detail: `provider unavailable: ${messageOf(err)}` }]));
  }
  const nodes: Record<string, NodeObservation> = {};
  await Promise.all(
    spec.nodes.map(async (node) => {
      const machine = machines[node.name] ?? { state: 'missing' as const };
      let reachable = false;
      let postgres: NodeObservation['postgres'] = null;
      let error: string | undefined = machine.state === 'running' ? undefined : `machine ${machine.state}`;
      if (machine.state === 'running') {
        try {
          const probe = await world.postgres.probe(spec, node);
          reachable = probe.reachable;
          postgres = probe.postgres;
          error = probe.error;
        } catch (err) {
          error = messageOf(err);
        }
      }
      const ok = reachable && !!postgres?.running;
      nodes[node.name] = {
        name: node.name,
        machine,
        reachable,
        postgres,
        misses: ok ? 0 : (previousMisses[node.name] ?? 0) + 1,
        ...(error !== undefined && !ok ? { error } : {}),
      };
    }),
  );
  let pool: ClusterObservation['pool'] = null;
  if (spec.pgpool.enabled) {
    try {
      pool = await world.pool.observe(spec);
    } catch (err) {
      pool = { reachable: false, primary: null, backends: [], configHash: '', error: messageOf(err) };
    }
  }
  return { cluster: spec.name, at: now, nodes, pool };
}
