// Observe one cluster afresh: provider machines, a health probe per node, pgpool. Every
// failure becomes data in the observation; nothing here throws for an unhealthy world.

import type { ClusterSpec } from '../spec/types.js';
import type { ListedMachine, World } from '../drivers/types.js';
import type { ClusterObservation, NodeObservation } from '../observe/types.js';
import { messageOf } from '../errors.js';
import type { NodeSpec } from '../spec/types.js';

/** The NodeSpec a node that left the spec is reached by for its removal: the one recorded when
 *  it was made (address, hypervisor, sizes), else one at the address and on the hypervisor the
 *  provider reports for its machine. Undefined when neither is known. */
export function strayNodeSpec(name: string, recorded: NodeSpec | undefined, listed: ListedMachine | undefined): NodeSpec | undefined {
  if (recorded) return { ...recorded, name };
  if (!listed?.address) return undefined;
  return { name, address: listed.address, vcpus: 1, memoryMiB: 1, rootDiskGiB: 1, dataDiskGiB: 1, ...(listed.hypervisor ? { hypervisor: listed.hypervisor } : {}) };
}

/** How long a pass waits for pgpool's answer once the nodes have answered. */
const POOL_GRACE_MS = 150;

export async function observeCluster(
  spec: ClusterSpec,
  world: World,
  previousMisses: Record<string, number>,
  now: number,
  /** recorded nodes no longer in the spec, with the NodeSpec recorded for each (if any): they are
   *  looked at like spec nodes, to remove them */
  recordedStrays: Record<string, NodeSpec | undefined> = {},
  /** listMachines: ask the provider for every machine it holds for the cluster (always done
   *  while recorded strays exist): machines of nodes that left the spec unrecorded are found so */
  opts: { urgent?: boolean; afterDeath?: boolean; listMachines?: boolean } = {},
): Promise<ClusterObservation> {
  // Urgent: a postmaster was reported dead (its backend's last words). That node is known
  // without a connect; the others' last answers (at most two probe intervals old) are taken
  // instead of waiting for fresh ones, which take 50-170 ms on a host busy with the failure.
  // News that comes while this look waits makes it urgent from then on. The reconciler acts on
  // an urgent look only to fence or fail the dead node.
  // Machines the provider really has (not only the spec's): nodes that left the spec are found
  // there, with the address they were made at, whether or not the store still knows them.
  const specNames = new Set(spec.nodes.map((n) => n.name));
  const recordedNames = Object.keys(recordedStrays);
  let listed: Record<string, ListedMachine> | null = null;
  let listError = '';
  if (recordedNames.length > 0 || opts.listMachines) {
    try {
      listed = await world.provider.listMachines(spec);
    } catch (err) {
      listError = messageOf(err);
    }
  }
  const strays: Record<string, NodeSpec> = {};
  /** strays with no address known: they can be fenced/deleted by name only where the provider can */
  const strayNames = [...new Set([...recordedNames, ...Object.keys(listed ?? {}).filter((n) => !specNames.has(n))])].sort();
  for (const name of strayNames) {
    const ns = strayNodeSpec(name, recordedStrays[name], listed?.[name]);
    if (ns) strays[name] = ns;
  }
  // Probes see the strays as nodes of the cluster (a standby's upstream may still be one).
  const seen: ClusterSpec = strayNames.length ? { ...spec, nodes: [...spec.nodes, ...Object.values(strays)] } : spec;
  const dead = opts.urgent === false ? [] : (world.postgres.postmasterDeaths?.(seen) ?? []);
  const maxAge = { maxAgeMs: 2 * spec.failureDetection.probeIntervalMs };
  let lookDone = false;
  let stopWatching = () => {};
  const news =
    opts.urgent === false || dead.length > 0 || !world.postgres.watchPostmasterDeaths
      ? undefined
      : new Promise<string>((resolve) => {
          stopWatching = world.postgres.watchPostmasterDeaths!(seen, (name) => {
            if (!lookDone) dead.push(name);
            resolve(name);
          });
        });
  const probeOf = (node: NodeSpec) => {
    const asked = world.postgres.probe(seen, node, dead.length > 0 && !dead.includes(node.name) ? maxAge : opts.afterDeath ? { afterDeath: true } : undefined);
    if (!news) return asked;
    asked.catch(() => undefined); // raced below: its failure may come after the race is over
    // the news answers for the dead node; for the others, their last answer will do then
    return Promise.race([asked, news.then((name) => world.postgres.probe(seen, node, name === node.name ? {} : maxAge))]);
  };
  let machines: Awaited<ReturnType<World['provider']['observeMachines']>>;
  try {
    machines = await world.provider.observeMachines(spec);
  } catch (err) {
    // The provider itself did not answer: treat every machine as unknown-but-present so the
    // planner neither reprovisions nor declares anything vanished on a provider hiccup.
    machines = Object.fromEntries(spec.nodes.map((n) => [n.name, { state: 'running' as const, detail: `provider unavailable: ${messageOf(err)}` }]));
  }
  for (const name of strayNames) {
    // A listing that failed says nothing: unknown-but-present, as above (never "vanished").
    machines[name] = listed
      ? (listed[name] ?? { state: 'missing', detail: 'the provider holds no machine for it' })
      : { state: 'running', detail: `provider unavailable: ${listError || 'not asked'}` };
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
          .observe(seen) // pgpool may still have a node that left the spec: named, not an address
          .catch((err) => ({ reachable: false, primary: null, backends: [], configHash: '', error: messageOf(err) }))
      : Promise.resolve(null);
    await Promise.all(
      seen.nodes.map(async (node) => {
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
    for (const name of strayNames) {
      if (strays[name]) continue;
      // no address known: only its machine can be looked at
      nodes[name] = { name, machine: machines[name] ?? { state: 'missing' }, reachable: false, postgres: null, misses: 0, error: 'left the spec; its address is not known' };
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
    return { cluster: spec.name, at: now, nodes, pool, ...(dead.length > 0 ? { urgent: [...dead] } : {}), ...(Object.keys(strays).length ? { strays } : {}) };
  }
}
