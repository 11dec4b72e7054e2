// Observe one cluster afresh: provider machines, a health probe per node, pgpool. Every
// failure becomes data in the observation; nothing here throws for an unhealthy world.

import type { ClusterSpec } from '../spec/types.js';
import type { World } from '../drivers/types.js';
import type { ClusterObservation, NodeObservation } from '../observe/types.js';
import { messageOf } from '../errors.js';
import type { NodeSpec } from '../spec/types.js';

/** What the provider needs of a node that left the spec: its name (machines are named after it). */
export function strayNode(name: string): NodeSpec {
  return { name, address: '0.0.0.0', vcpus: 1, memoryMiB: 1, rootDiskGiB: 1, dataDiskGiB: 1 };
}

export async function observeCluster(
  spec: ClusterSpec,
  world: World,
  previousMisses: Record<string, number>,
  now: number,
  /** nodes no longer in the spec: only their machines are looked at (to remove them) */
  strays: string[] = [],
): Promise<ClusterObservation> {
  let machines: Awaited<ReturnType<World['provider']['observeMachines']>>;
  try {
    machines = await world.provider.observeMachines(strays.length ? { ...spec, nodes: [...spec.nodes, ...strays.map(strayNode)] } : spec);
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
  for (const name of strays) {
    const machine = machines[name] ?? { state: 'missing' as const };
    nodes[name] = { name, machine, reachable: false, postgres: null, misses: 0 };
  }
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
