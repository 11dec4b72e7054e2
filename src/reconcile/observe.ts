// Observe one cluster afresh: provider machines, a health probe per node, pgpool. Every
// failure becomes data in the observation; nothing here throws for an unhealthy world.
//
// Urgent looks: a postmaster reported dead (its backend's last words) is known without a
// connect, and the other nodes' last answers (at most two probe intervals old) are taken instead
// of waiting for fresh ones, which are slow on a host busy with the failure. News that comes while
// a look waits makes it urgent from then on. The reconciler acts on an urgent look only to fence
// the dead node, detach it from pgpool, or mark it failed.

import { PassTrace } from './pass-trace.js';
import type { ClusterSpec, NodeSpec } from '../spec/types.js';
import type { ListedMachine, World } from '../drivers/types.js';
import type {
  ClusterObservation,
  MachineObservation,
  NodeObservation,
  PoolObservation,
} from '../observe/types.js';
import { messageOf } from '../errors.js';

/** The NodeSpec a node that left the spec is reached by for its removal: the one recorded when
 *  it was made (address, hypervisor, sizes), else one at the address and on the hypervisor the
 *  provider reports for its machine. Undefined when neither is known. */
export function strayNodeSpec(
  name: string,
  recorded: NodeSpec | undefined,
  listed: ListedMachine | undefined,
): NodeSpec | undefined {
  if (recorded) return { ...recorded, name };
  if (!listed?.address) return undefined;
  const hypervisor = listed.hypervisor ? { hypervisor: listed.hypervisor } : {};
  const sizes = { vcpus: 1, memoryMiB: 1, rootDiskGiB: 1, dataDiskGiB: 1 };
  return { name, address: listed.address, ...sizes, ...hypervisor };
}

/** How long a pass waits for pgpool's answer once the nodes have answered. */
const POOL_GRACE_MS = 150;

type Machines = Record<string, MachineObservation>;

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
  opts: { urgent?: boolean; afterDeath?: boolean; listMachines?: boolean; trace?: PassTrace } = {},
): Promise<ClusterObservation> {
  const trace = opts.trace ?? new PassTrace();
  const found = await trace.on(
    opts.listMachines ? 'listing the machines' : 'the strays',
    findStrays(spec, world, recordedStrays, !!opts.listMachines),
  );
  const { strayNames, strays } = found;
  // Probes see the strays as nodes of the cluster (a standby's upstream may still be one).
  const seen: ClusterSpec = strayNames.length
    ? { ...spec, nodes: [...spec.nodes, ...Object.values(strays)] }
    : spec;
  const deaths = watchDeaths(world, seen, opts.urgent);
  const machines = await trace.on('the machines', observeMachines(spec, world, found));
  try {
    // pgpool is read alongside the nodes (not after them): a pass costs the slowest look, not the sum
    const poolLook: Promise<ClusterObservation['pool']> = spec.pgpool.enabled
      ? world.pool
          .observe(seen) // pgpool may still have a node that left the spec: named, not an address
          .catch((err) => unanswered(messageOf(err)))
      : Promise.resolve(null);
    const nodes: Record<string, NodeObservation> = {};
    const probe = (node: NodeSpec) => probeNode(world, seen, node, deaths, opts.afterDeath);
    await Promise.all(
      seen.nodes.map(async (node) => {
        const look = observeNode(spec, node, machines, probe, previousMisses[node.name] ?? 0);
        nodes[node.name] = await trace.on(`probe of ${node.name}`, look);
      }),
    );
    deaths.lookDone();
    for (const name of strayNames) {
      if (strays[name]) continue;
      // no address known: only its machine can be looked at
      const machine = machines[name] ?? { state: 'missing' as const };
      const error = 'left the spec; its address is not known';
      nodes[name] = { name, machine, reachable: false, postgres: null, misses: 0, error };
    }
    const pool = await trace.on('pgpool', poolAnswer(spec, world, poolLook, nodes, deaths));
    const urgent = deaths.dead.length > 0 ? { urgent: [...deaths.dead] } : {};
    const leftSpec = Object.keys(strays).length ? { strays } : {};
    const backup = await trace.on('the backup repository', observeBackup(spec, world));
    return { cluster: spec.name, at: now, nodes, pool, ...urgent, ...leftSpec, ...backup };
  } finally {
    deaths.stop();
  }
}

/** The backup repository as the operator's host sees it (local files and a process: no wait on
 *  the network); an error is reported as a stopped server with its reason. */
async function observeBackup(spec: ClusterSpec, world: World): Promise<Pick<ClusterObservation, 'backup'>> {
  if (!spec.backup || !world.backup) return {};
  try {
    return { backup: await world.backup.observe(spec) };
  } catch (err) {
    return { backup: { server: 'stopped', stanza: false, error: messageOf(err) } };
  }
}

interface FoundStrays {
  strayNames: string[];
  /** strays with an address known; the others can be fenced/deleted by name only where the
   *  provider can */
  strays: Record<string, NodeSpec>;
  /** the provider's full listing, null when not asked or when it failed */
  listed: Record<string, ListedMachine> | null;
  listError: string;
}

/** Machines the provider really has (not only the spec's): nodes that left the spec are found
 *  there, with the address they were made at, whether or not the store still knows them. */
async function findStrays(
  spec: ClusterSpec,
  world: World,
  recordedStrays: Record<string, NodeSpec | undefined>,
  listMachines: boolean,
): Promise<FoundStrays> {
  const specNames = new Set(spec.nodes.map((n) => n.name));
  const recordedNames = Object.keys(recordedStrays);
  let listed: Record<string, ListedMachine> | null = null;
  let listError = '';
  if (recordedNames.length > 0 || listMachines) {
    try {
      listed = await world.provider.listMachines(spec);
    } catch (err) {
      listError = messageOf(err);
    }
  }
  const unrecorded = Object.keys(listed ?? {}).filter((n) => !specNames.has(n));
  const strayNames = [...new Set([...recordedNames, ...unrecorded])].sort();
  const strays: Record<string, NodeSpec> = {};
  for (const name of strayNames) {
    const ns = strayNodeSpec(name, recordedStrays[name], listed?.[name]);
    if (ns) strays[name] = ns;
  }
  return { strayNames, strays, listed, listError };
}

async function observeMachines(spec: ClusterSpec, world: World, found: FoundStrays): Promise<Machines> {
  let machines: Machines;
  try {
    machines = await world.provider.observeMachines(spec);
  } catch (err) {
    // The provider itself did not answer: treat every machine as unknown-but-present so the
    // planner neither reprovisions nor declares anything vanished on a provider hiccup.
    const detail = `provider unavailable: ${messageOf(err)}`;
    machines = Object.fromEntries(spec.nodes.map((n) => [n.name, { state: 'running' as const, detail }]));
  }
  const { listed, listError } = found;
  for (const name of found.strayNames) {
    // A listing that failed says nothing: unknown-but-present, as above (never "vanished").
    machines[name] = listed
      ? (listed[name] ?? { state: 'missing', detail: 'the provider holds no machine for it' })
      : { state: 'running', detail: `provider unavailable: ${listError || 'not asked'}` };
  }
  return machines;
}

interface DeathWatch {
  /** nodes whose postmaster was reported dead: known before the look, or news during it */
  dead: string[];
  /** the first news during the look (none when the look was urgent from the start) */
  news: Promise<string> | undefined;
  /** news after this no longer makes the look urgent */
  lookDone(): void;
  stop(): void;
}

function watchDeaths(world: World, seen: ClusterSpec, urgent: boolean | undefined): DeathWatch {
  const dead = urgent === false ? [] : (world.postgres.postmasterDeaths?.(seen) ?? []);
  let done = false;
  let stop = () => {};
  const watch = world.postgres.watchPostmasterDeaths?.bind(world.postgres);
  const news =
    urgent === false || dead.length > 0 || !watch
      ? undefined
      : new Promise<string>((resolve) => {
          stop = watch(seen, (name) => {
            if (!done) dead.push(name);
            resolve(name);
          });
        });
  return { dead, news, lookDone: () => void (done = true), stop: () => stop() };
}

function probeNode(
  world: World,
  seen: ClusterSpec,
  node: NodeSpec,
  deaths: DeathWatch,
  afterDeath: boolean | undefined,
) {
  const { dead, news } = deaths;
  const maxAge = { maxAgeMs: 2 * seen.failureDetection.probeIntervalMs };
  const others = dead.length > 0 && !dead.includes(node.name);
  const asked = world.postgres.probe(seen, node, others ? maxAge : afterDeath ? { afterDeath } : undefined);
  if (!news) return asked;
  asked.catch(() => undefined); // raced below: its failure may come after the race is over
  // the news answers for the dead node; for the others, their last answer will do then
  const onNews = news.then((name) => world.postgres.probe(seen, node, name === node.name ? {} : maxAge));
  return Promise.race([asked, onNews]);
}

async function observeNode(
  spec: ClusterSpec,
  node: NodeSpec,
  machines: Machines,
  probe: (node: NodeSpec) => ReturnType<World['postgres']['probe']>,
  previousMisses: number,
): Promise<NodeObservation> {
  const machine = machines[node.name] ?? { state: 'missing' as const };
  let reachable = false;
  let postgres: NodeObservation['postgres'] = null;
  let error: string | undefined = machine.state === 'running' ? undefined : `machine ${machine.state}`;
  let gone = false;
  let hung = false;
  if (machine.state === 'running') {
    try {
      const probed = await probe(node);
      reachable = probed.reachable;
      postgres = probed.postgres;
      error = probed.error;
      gone = !!probed.gone;
      hung = !!probed.hung;
    } catch (err) {
      error = messageOf(err);
    }
  }
  const ok = reachable && !!postgres?.running;
  // a certain failure (the postmaster is gone) is not a slow probe: no need to ask again
  const budget = gone ? spec.failureDetection.missesBeforeFailover : 0;
  return {
    name: node.name,
    machine,
    reachable,
    postgres,
    misses: ok ? 0 : Math.max(previousMisses + 1, budget),
    ...(error !== undefined && !ok ? { error } : {}),
    ...(hung ? { hung } : {}),
  };
}

/** A pgpool in the middle of a failover (restarting its children) answers nothing until it is
 *  done: wait only briefly beyond the nodes' probes, then use its previous answer. The look goes
 *  on in the background and its answer (or its failure, after the driver's own timeout) serves
 *  the next pass; a pass that re-routes pgpool waits for pgpool there. While a node fails, pgpool
 *  is likely busy with the same failure and the pass is about the node: take pgpool's answer
 *  only if it is already there (news of a death ends the wait). */
async function poolAnswer(
  spec: ClusterSpec,
  world: World,
  poolLook: Promise<PoolObservation | null>,
  nodes: Record<string, NodeObservation>,
  deaths: DeathWatch,
): Promise<PoolObservation | null> {
  const grace = Object.values(nodes).some((n) => n.misses > 0) || deaths.dead.length > 0 ? 0 : POOL_GRACE_MS;
  const late = Symbol('late');
  const first = await Promise.race([
    poolLook,
    new Promise<typeof late>((resolve) => {
      const t = setTimeout(() => resolve(late), grace);
      void poolLook.finally(() => clearTimeout(t));
    }),
    ...(deaths.news ? [deaths.news.then((): typeof late => late)] : []),
  ]);
  if (first !== late) return first;
  const error = `pgpool: no answer yet (asked ${grace} ms after the nodes answered)`;
  return world.pool.latest?.(spec) ?? unanswered(error);
}

const unanswered = (error: string): PoolObservation => ({
  reachable: false,
  primary: null,
  backends: [],
  configHash: '',
  error,
});
