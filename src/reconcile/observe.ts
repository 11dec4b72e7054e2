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

/** How long a pass waits for pgpool's answer once the nodes have answered. */
const POOL_GRACE_MS = 150;

export async function observeCluster(
  spec: ClusterSpec,
  world: World,
  previousMisses: Record<string, number>,
  now: number,
  /** nodes no longer in the spec: only their machines are looked at (to remove them) */
  strays: string[] = [],
  opts: { urgent?: boolean; afterDeath?: boolean } = {},
): Promise<ClusterObservation> {
  // Urgent: a postmaster was reported dead (its backend's last words). That node is known
  // without a connect; the others' last answers (at most two probe intervals old) are taken
  // instead of waiting for fresh ones, which take 50-170 ms on a host busy with the failure.
  // News that comes while this look waits makes it urgent from then on. The reconciler acts on
  // an urgent look only to fence or fail the dead node.
  const dead = opts.urgent === false ? [] : (world.postgres.postmasterDeaths?.(spec) ?? []);
  const maxAge = { maxAgeMs: 2 * spec.failureDetection.probeIntervalMs };
  let lookDone = false;
  let stopWatching = () => {};
  const news =
    opts.urgent === false || dead.length > 0 || !world.postgres.watchPostmasterDeaths
      ? undefined
      : new Promise<string>((resolve) => {
          stopWatching = world.postgres.watchPostmasterDeaths!(spec, (name) => {
            if (!lookDone) dead.push(name);
            resolve(name);
          });
        });
  const probeOf = (node: NodeSpec) => {
    const asked = world.postgres.probe(spec, node, dead.length > 0 && !dead.includes(node.name) ? maxAge : opts.afterDeath ? { afterDeath: true } : undefined);
    if (!news) return asked;
    asked.catch(() => undefined); // raced below: its failure may come after the race is over
    // the news answers for the dead node; for the others, their last answer will do then
    return Promise.race([asked, news.then((name) => world.postgres.probe(spec, node, name === node.name ? {} : maxAge))]);
  };
  let machines: Awaited<ReturnType<World['provider']['observeMachines']>>;
  try {
    machines = await world.provider.observeMachines(strays.length ? { ...spec, nodes: [...spec.nodes, ...strays.map(strayNode)] } : spec);
  } catch (err) {
    // The provider itself did not answer: treat every machine as unknown-but-present so the
    // planner neither reprovisions nor declares anything vanished on a provider hiccup.
    machines = Object.fromEntries(spec.nodes.map((n) => [n.name, { state: 'running' as const, detail: `provider unavailable: ${messageOf(err)}` }]));
  }
  try {
    return await lookAtNodes();
  } finally {
    stopWatching();
  }

  async function lookAtNodes(): Promise<ClusterObservation> {
    const nodes: Record<string, NodeObservation> = {};
    // pgpool is read alongside the nodes (not after them): a pass costs the slowest look, not the sum.
    const poolLook: Promise<ClusterObservation['pool']> = spec.pgpool.enabled
      ? world.pool
          .observe(spec)
          .catch((err) => ({ reachable: false, primary: null, backends: [], configHash: '', error: messageOf(err) }))
      : Promise.resolve(null);
    await Promise.all(
      spec.nodes.map(async (node) => {
        const machine = machines[node.name] ?? { state: 'missing' as const };
        let reachable = false;
        let postgres: NodeObservation['postgres'] = null;
        let error: string | undefined = machine.state === 'running' ? undefined : `machine ${machine.state}`;
        let gone = false;
        if (machine.state === 'running') {
          try {
            const probe = await probeOf(node);
            reachable = probe.reachable;
            postgres = probe.postgres;
            error = probe.error;
            gone = !!probe.gone;
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
          // a certain failure (the postmaster is gone) is not a slow probe: no need to ask again
          misses: ok ? 0 : Math.max((previousMisses[node.name] ?? 0) + 1, gone ? spec.failureDetection.missesBeforeFailover : 0),
          ...(error !== undefined && !ok ? { error } : {}),
        };
      }),
    );
    lookDone = true;
    for (const name of strays) {
      const machine = machines[name] ?? { state: 'missing' as const };
      nodes[name] = { name, machine, reachable: false, postgres: null, misses: 0 };
    }
    // A pgpool in the middle of a failover (restarting its children) answers nothing until it is
    // done: wait only briefly beyond the nodes' probes, then use its previous answer. The look
    // goes on in the background and its answer (or its failure, after the driver's own timeout)
    // serves the next pass; a pass that re-routes pgpool waits for pgpool there.
    // While a node fails, pgpool is likely busy with the same failure and the pass is about the
    // node: take pgpool's answer only if it is already there (news of a death ends the wait).
    const grace = Object.values(nodes).some((n) => n.misses > 0) || dead.length > 0 ? 0 : POOL_GRACE_MS;
    const late = Symbol('late');
    const first = await Promise.race([
      poolLook,
      new Promise<typeof late>((resolve) => {
        const t = setTimeout(() => resolve(late), grace);
        void poolLook.finally(() => clearTimeout(t));
      }),
      ...(news ? [news.then((): typeof late => late)] : []),
    ]);
    const pool = first !== late ? first : (world.pool.latest?.(spec) ?? { reachable: false, primary: null, backends: [], configHash: '', error: `pgpool: no answer yet (asked ${grace} ms after the nodes answered)` });
    return { cluster: spec.name, at: now, nodes, pool, ...(dead.length > 0 ? { urgent: [...dead] } : {}) };
  }
}
