// Model-based property tests of the control loop against the simulated world: random schedules
// of faults, client writes, operator crashes and spec changes, interleaved with reconcile
// passes. After every step: never two writable primaries, and (sync mode) no acknowledged
// commit lost. After the faults stop: convergence to the spec within a bounded number of passes.
//
// Jobs (issue 15): the sim's long operations (boots, installs, initdb, copies, removals) take sim
// time, per node and kind: each schedule starts with a random profile (instant, seconds,
// minutes) and may change it, let time pass without a pass (jobs finish between passes), make
// a node's next job fail, and kill the operator while its jobs run. Time passes as in runLoop:
// a pass is followed by its requeue delay, cut short when a job settles (the loop wakes then).
//
// A failure prints fast-check's seed and path; replay it with
//   PGOP_PROPERTY_SEED=<seed> PGOP_PROPERTY_PATH=<path> PGOP_PROPERTY_REPLAY=<replayPath> \
//     npx vitest run test/property
// and explore beyond the default seed with PGOP_PROPERTY_SEED=random PGOP_PROPERTY_RUNS=5000.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Store } from '../../src/store/store.js';
import { SIM_JOB_KINDS, SimWorld, slotNameFor, type SimJobKind } from '../../src/drivers/sim/world.js';
import { SimClock } from '../../src/drivers/sim/clock.js';
import { createSimWorld, type SimDrivers } from '../../src/drivers/sim/drivers.js';
import { Reconciler, type PassResult } from '../../src/reconcile/reconciler.js';
import type { JobRecord } from '../../src/store/jobs.js';
import { canonicalJson } from '../../src/spec/parse.js';
import { poolHosts, poolVip, type ClusterSpec } from '../../src/spec/types.js';
import { simSpec } from '../helpers/sim-spec.js';

const RUNS = Number(process.env.PGOP_PROPERTY_RUNS ?? 600);
/** After the last fault: at most this many passes that act (the bound before jobs, when every
 *  pass acted or waited a moment; waits for jobs now fill the time between), within this much
 *  sim time. The time covers the slowest chain the
 *  schedules can leave behind: a copy hung on a link that went down mid-way runs into its
 *  deadline (2 min + its size at 1 MiB/s: its duration, up to 4 min), is redone (4 min),
 *  and the other nodes' jobs, cooling after failures (up to 5 min after a terminal one) and
 *  their redos come on top; the largest seen over the default seeds is printed by the suite. */
const CONVERGENCE_BOUND = { passes: 80, simMs: 60 * 60_000 };
const NODES = ['pg01', 'pg02', 'pg03', 'pg04'] as const;
/** Pool HA schedules: pgpool on these, the spec's pgpool address a virtual IP moved among them. */
const POOL_HOSTS = [
  { name: 'pool-a', address: '10.0.0.21' },
  { name: 'pool-b', address: '10.0.0.22' },
];
const POOL_HA_RUNS = Number(process.env.PGOP_PROPERTY_POOL_RUNS ?? 150);
/** Where pgpool runs: one pool host, pool hosts of their own, or every node (pgpool.onNodes). */
type PoolLayout = 'single' | 'hosts' | 'nodes';
/** How long a node's jobs take: at once (as before jobs), seconds (a lab host), minutes (a VM
 *  under TCG, a large copy). */
const JOB_MS = [0, 3_000, 45_000, 240_000] as const;

class OperatorCrashed extends Error {}

interface Env {
  clock: SimClock;
  sim: SimWorld;
  store: Store;
  reconciler: Reconciler;
  /** the running operator process dies (its drivers are detached, its jobs orphaned) */
  killOperator(): void;
  spec: ClusterSpec;
  crashNextCommit: boolean;
  /** the operator died at a commit (a pass's or a job's): a new one must start */
  crashed: boolean;
  /** a job settled: the loop would look at the cluster at once */
  woken: boolean;
  nextWriteId: number;
  vanished: number;
  trace: string[];
  stats: Stats;
}

interface Stats {
  jobsStarted: number;
  jobsSucceeded: number;
  jobsFailed: number;
  jobsCancelled: number;
  jobsInterrupted: number;
  restarts: number;
  maxConvergeMs: number;
  maxConvergePasses: number;
}

function hashOf(spec: ClusterSpec): string {
  return canonicalJson(spec);
}

/** A new operator process: nothing in memory but the store. An operator's death ends what runs
 *  in it (its passes, its jobs' promises: nothing it started reports back or commits), but not
 *  what it started on the nodes: a package install, an initdb or a pg_basebackup goes on as a
 *  process there (the SSH channel closing does not stop them), and a machine boot on the
 *  hypervisor. The sim lets those land (work.ts `remote`); a copy that ends without the standby
 *  files the operator would have written is left partial, as the real directory would be. */
function startOperator(env: Env): void {
  const drivers: SimDrivers = createSimWorld(env.sim);
  let dead = false;
  const die = () => {
    dead = true;
    drivers.detach();
  };
  env.reconciler = new Reconciler({
    store: env.store,
    worldFor: () => drivers,
    clock: env.clock,
    beforeCommit: () => {
      // Once dead, no other commit of this process (parallel node actions, jobs) lands either.
      if (dead) throw new OperatorCrashed('the operator is dead');
      if (env.crashNextCommit) {
        env.crashNextCommit = false;
        env.crashed = true;
        die();
        throw new OperatorCrashed('operator killed after the side effect, before the commit');
      }
    },
  });
  env.reconciler.jobs.onSettled(() => {
    env.woken = true;
  });
  env.killOperator = die;
}

function restartOperator(env: Env, why: string): void {
  env.killOperator();
  env.crashed = false;
  env.stats.restarts++;
  startOperator(env);
  env.trace.push(`  operator restarted (${why})`);
}

function setup(mode: 'async' | 'sync', profile: JobProfile = {}, pools: PoolLayout = 'single'): Env {
  const clock = new SimClock(1_700_000_000_000);
  const sim = new SimWorld({ clock });
  const store = Store.open(':memory:');
  const spec = simSpec({
    name: 'prop',
    replication: { mode, syncQuorum: 1 },
    ...(pools === 'hosts' ? { pgpool: { hosts: POOL_HOSTS } } : {}),
    ...(pools === 'nodes' ? { pgpool: { onNodes: true } } : {}),
  });
  store.applySpec(spec, hashOf(spec), 'test', clock.now());
  for (const [node, ms] of Object.entries(profile)) sim.setJobDuration(spec.name, node, ms);
  const env = {
    clock,
    sim,
    store,
    spec,
    crashNextCommit: false,
    crashed: false,
    woken: false,
    nextWriteId: 1,
    vanished: 0,
    trace: [] as string[],
    stats: { ...emptyStats },
  } as Omit<Env, 'reconciler' | 'killOperator'> as Env;
  startOperator(env);
  return env;
}

/** Let sim time pass (jobs run and settle at their own times). `wake`: as runLoop, stop early
 *  when a job settles. A commit that killed the operator meanwhile restarts it. */
async function letTimePass(env: Env, ms: number, wake: boolean): Promise<void> {
  env.woken = false;
  await env.clock.advanceSettling(ms, () => (wake && env.woken) || env.crashed);
  if (env.crashed) restartOperator(env, 'died at a job commit');
}

async function pass(env: Env): Promise<PassResult | null> {
  const r = await env.reconciler.pass(env.spec.name);
  if (r) {
    const also = (r.also ?? []).map((d) => ` + ${d.ruleId}(${d.node})`).join('');
    const error = r.error ? ` (failed: ${r.error.message})` : '';
    traceLine(env, `  pass: ${r.decision.kind} ${r.decision.ruleId}: ${r.decision.reason}${also}${error}`);
  }
  if (env.crashed) restartOperator(env, 'died at a commit');
  await letTimePass(env, Math.max(r?.requeueAfterMs ?? 0, 100), true);
  return r;
}

/** A pass repeated unchanged (a wait) is one line with a count, so the trace shows the story. */
function traceLine(env: Env, line: string): void {
  const last = env.trace.length - 1;
  const repeated = /^(.*?)(?: ×(\d+))?$/.exec(env.trace[last] ?? '');
  if (repeated?.[1] === line) env.trace[last] = `${line} ×${Number(repeated[2] ?? 1) + 1}`;
  else env.trace.push(line);
}

function checkSafety(env: Env) {
  const writable = env.sim.writablePrimaries(env.spec.name);
  if (writable.length > 1)
    throw new Error(`two writable primaries: ${writable.join(', ')}\n${env.trace.slice(-80).join('\n')}`);
  // a machine that runs holds its addresses: two such holders answer ARP for the virtual IP
  const holders = env.sim.vipHolders(env.spec.name);
  if (holders.length > 1)
    throw new Error(
      `two pool hosts hold the virtual IP: ${holders.join(', ')}\n${env.trace.slice(-80).join('\n')}`,
    );
  {
    // Acks counted as sync only while synchronous_standby_names was set; check in every mode.
    const lost = env.sim.lostSyncAcks(env.spec.name);
    if (lost.length > 0)
      throw new Error(
        `acknowledged sync commits lost: ${lost.join(', ')}\n${env.trace.slice(-80).join('\n')}`,
      );
  }
}

type Cmd = fc.AsyncCommand<object, Env>;

function command(
  name: string,
  run: (env: Env) => Promise<void> | void,
  check: (env: Env) => boolean = () => true,
): Cmd {
  return {
    check: (_m: object) => true,
    async run(_m: object, env: Env) {
      if (!check(env)) return;
      env.trace.push(name);
      await run(env);
      if (env.crashed) restartOperator(env, 'died at a job commit');
      checkSafety(env);
    },
    toString: () => name,
  } as Cmd;
}

/** Faults on the pool hosts: pgpool killed, host cut off, stopped, started, its files edited. */
function poolHostCommands() {
  const host = fc.constantFrom(...POOL_HOSTS.map((h) => h.name));
  const exists = (n: string) => (env: Env) =>
    env.sim.inspectPoolHosts(env.spec.name).some((h) => h.name === n);
  return (['kill', 'partition', 'heal', 'stop', 'start', 'driftConfig'] as const).map((how) =>
    host.map((n) => command(`${how}(${n})`, (env) => env.sim[how](env.spec.name, n), exists(n))),
  );
}

function commands(mode: 'async' | 'sync', pools: PoolLayout = 'single') {
  const node = fc.constantFrom(...NODES);
  return [
    // listed twice: the node commands outnumber them
    ...(pools === 'hosts' ? [...poolHostCommands(), ...poolHostCommands()] : []),
    // pgpool on the nodes: the node commands fail its machine; this fails its pgpool alone
    ...(pools === 'nodes'
      ? [
          node.map((n) =>
            command(
              `killPgpool(${n})`,
              (env) => env.sim.killPgpool(env.spec.name, n),
              (env) => !!env.sim.poolHost(env.spec.name, n),
            ),
          ),
        ]
      : []),
    fc.constant(null).map(() => command('pass', async (env) => void (await pass(env)))),
    fc.integer({ min: 1, max: 4 }).map((n) =>
      command(`passes(${n})`, async (env) => {
        for (let i = 0; i < n; i++) await pass(env);
      }),
    ),
    fc
      .constant(null)
      .map(() =>
        command('write(pool)', (env) => void env.sim.write(env.spec.name, 'pool', env.nextWriteId++)),
      ),
    node.map((n) =>
      command(
        `write(direct ${n})`,
        (env) => void env.sim.write(env.spec.name, { node: n }, env.nextWriteId++),
        (env) => !!env.sim.node(env.spec.name, n),
      ),
    ),
    node.map((n) =>
      command(
        `kill(${n})`,
        (env) => env.sim.kill(env.spec.name, n),
        (env) => !!env.sim.node(env.spec.name, n),
      ),
    ),
    node.map((n) =>
      command(
        `partition(${n})`,
        (env) => env.sim.partition(env.spec.name, n),
        (env) => !!env.sim.node(env.spec.name, n),
      ),
    ),
    node.map((n) =>
      command(
        `heal(${n})`,
        (env) => env.sim.heal(env.spec.name, n),
        (env) => !!env.sim.node(env.spec.name, n),
      ),
    ),
    node.map((n) =>
      command(
        `stop(${n})`,
        (env) => env.sim.stop(env.spec.name, n),
        (env) => !!env.sim.node(env.spec.name, n),
      ),
    ),
    node.map((n) =>
      command(
        `start(${n})`,
        (env) => env.sim.start(env.spec.name, n),
        (env) => !!env.sim.node(env.spec.name, n),
      ),
    ),
    node.map((n) =>
      command(
        `destroyDomain(${n})`,
        (env) => env.sim.destroyDomain(env.spec.name, n),
        (env) => !!env.sim.node(env.spec.name, n),
      ),
    ),
    // Losing a machine with its disks: one per schedule, the failure budget a 3-node
    // cluster with a quorum of 1 promises to survive without losing acknowledged commits.
    node.map((n) =>
      command(
        `vanish(${n})`,
        (env) => {
          env.vanished++;
          env.sim.vanish(env.spec.name, n);
        },
        (env) => env.vanished === 0 && !!env.sim.node(env.spec.name, n),
      ),
    ),
    fc.tuple(node, fc.boolean()).map(([n, b]) =>
      command(
        `lagging(${n},${b})`,
        (env) => env.sim.setLagging(env.spec.name, n, b),
        (env) => !!env.sim.node(env.spec.name, n),
      ),
    ),
    node.map((n) =>
      command(
        `driftConfig(${n})`,
        (env) => env.sim.driftConfig(env.spec.name, n),
        (env) => !!env.sim.node(env.spec.name, n) && !!env.sim.node(env.spec.name, n)?.installed,
      ),
    ),
    fc.constant(null).map(() =>
      command(
        'crashPool',
        (env) => env.sim.crashPool(env.spec.name),
        (env) => env.sim.inspectPool(env.spec.name) !== null,
      ),
    ),
    fc.option(node, { nil: undefined }).map((to) =>
      command(`switchover(${to ?? 'any'})`, (env) => {
        const from = env.store.getCluster(env.spec.name)?.primary;
        env.store.enqueueRequest(
          env.spec.name,
          'switchover',
          { ...(from ? { from } : {}), ...(to ? { to } : {}) },
          env.clock.now(),
        );
      }),
    ),
    // The operator dies at its next commit: a pass's step (after its side effect) or a job's
    // (the job's work done, its record left running), whichever comes first.
    fc.constant(null).map(() =>
      command('crashOperatorMidPass', async (env) => {
        env.crashNextCommit = true;
        await pass(env);
        env.crashNextCommit = false;
      }),
    ),
    fc.constant(null).map(() =>
      command('crashOperatorAtJobCommit', async (env) => {
        env.crashNextCommit = true;
        await letTimePass(env, 60_000, false);
        env.crashNextCommit = false;
      }),
    ),
    // The operator dies between passes, its jobs running: they are orphans in the store.
    fc.constant(null).map(() => command('killOperator', (env) => restartOperator(env, 'killed'))),
    ...jobCommands(),
    // Scale-in of any node (the primary too) while at least three remain, or back out to the
    // nodes left out: the removed node's machine, slot, sync membership and pgpool backend must go
    // (the providers find it by what they hold, not by a spec; issue 19).
    node.map((n) =>
      command(`specScale(${n})`, (env) => {
        const prev = env.spec;
        const has = prev.nodes.some((x) => x.name === n);
        if (has && prev.nodes.length <= 3) return;
        const nodes = has
          ? prev.nodes.filter((x) => x.name !== n)
          : [...prev.nodes, { ...prev.nodes[0]!, name: n, address: `10.0.0.${11 + NODES.indexOf(n)}` }];
        env.spec = { ...prev, nodes };
        env.store.applySpec(env.spec, hashOf(env.spec), 'test', env.clock.now());
      }),
    ),
    fc
      .constantFrom('param', 'scale', 'balance', ...(mode === 'async' ? ['toSync'] : ['toAsync']))
      .map((change) =>
        command(`specChange(${change})`, (env) => {
          const prev = env.spec;
          const scaled = (): ClusterSpec => {
            // scale out to pg04, or back in: the removed node may be the primary at that moment
            if (prev.nodes.some((n) => n.name === 'pg04'))
              return { ...prev, nodes: prev.nodes.filter((n) => n.name !== 'pg04') };
            return {
              ...prev,
              nodes: [...prev.nodes, { ...prev.nodes[0]!, name: 'pg04', address: '10.0.0.14' }],
            };
          };
          const spec: ClusterSpec =
            change === 'param'
              ? {
                  ...prev,
                  postgres: {
                    ...prev.postgres,
                    parameters: { ...prev.postgres.parameters, work_mem: `${4 + (env.nextWriteId % 7)}MB` },
                  },
                }
              : change === 'scale'
                ? scaled()
                : change === 'balance'
                  ? // load balancing off: pgpool holds only the primary
                    { ...prev, pgpool: { ...prev.pgpool, loadBalancing: !prev.pgpool.loadBalancing } }
                  : {
                      ...prev,
                      replication: {
                        ...prev.replication,
                        mode: prev.replication.mode === 'sync' ? 'async' : 'sync',
                      },
                    };
          env.spec = spec;
          env.store.applySpec(spec, hashOf(spec), 'test', env.clock.now());
        }),
      ),
  ];
}

type JobProfile = Partial<Record<(typeof NODES)[number], number>>;

/** A schedule's first job durations: instant everywhere (as before jobs), or per node. */
const jobProfile: fc.Arbitrary<JobProfile> = fc.oneof(
  { weight: 1, arbitrary: fc.constant({}) },
  {
    weight: 3,
    arbitrary: fc.record(Object.fromEntries(NODES.map((n) => [n, fc.constantFrom(...JOB_MS)]))),
  },
);

function jobCommands() {
  const node = fc.constantFrom(...NODES);
  const kind = fc.option(fc.constantFrom<SimJobKind>(...SIM_JOB_KINDS), { nil: undefined });
  // faults aimed at a running job (passes first, until one runs): the primary a copy reads
  // from, or the job's own node; listed thrice, as commands are picked evenly and these need a
  // job running to do anything
  const breakSource = fc.constantFrom('kill', 'partition', 'stop').map((how) =>
    command(`breakJobSource(${how})`, async (env) => {
      const job = await passesUntilJob(env, (j) => j.source !== null);
      if (job?.source) faultOn(env, how, job.source);
    }),
  );
  const breakNode = fc.constantFrom('partition', 'stop', 'destroyDomain').map((how) =>
    command(`breakJobNode(${how})`, async (env) => {
      const job = await passesUntilJob(env, (j) => !!env.sim.node(env.spec.name, j.node));
      if (job) faultOn(env, how, job.node);
    }),
  );
  return [
    ...[breakSource, breakSource, breakSource, breakNode, breakNode, breakNode],
    fc
      .tuple(node, fc.constantFrom(...JOB_MS), kind)
      .map(([n, ms, k]) =>
        command(`jobTime(${n},${ms}${k ? `,${k}` : ''})`, (env) =>
          env.sim.setJobDuration(env.spec.name, n, ms, k),
        ),
      ),
    // time passes without a pass (the operator busy elsewhere): jobs finish between passes
    fc
      .constantFrom(1_000, 10_000, 60_000, 300_000)
      .map((ms) => command(`time(${ms})`, (env) => letTimePass(env, ms, false))),
    fc
      .tuple(node, fc.constantFrom('transient', 'terminal' as const))
      .map(([n, k]) => command(`failNextJob(${n},${k})`, (env) => env.sim.failNextJob(env.spec.name, n, k))),
  ];
}

/** A job the store says runs (an orphan of a dead operator too: its work may go on) and that
 *  `which` accepts, after passes (at most 30) until there is one. */
async function passesUntilJob(env: Env, which: (job: JobRecord) => boolean): Promise<JobRecord | undefined> {
  for (let i = 0; i <= 30; i++) {
    const job = env.store.jobs.list({ cluster: env.spec.name, running: true }).find(which);
    if (job || i === 30) return job;
    await pass(env);
    checkSafety(env);
  }
  return undefined;
}

function faultOn(env: Env, how: 'kill' | 'partition' | 'stop' | 'destroyDomain', node: string): void {
  env.trace.push(`  ${how}(${node})`);
  env.sim[how](env.spec.name, node);
}

async function converge(env: Env): Promise<number> {
  // Faults stop: links heal, slow standbys catch up. Machines stay as the faults left them:
  // restarting what it fenced or lost is the operator's job.
  for (const n of NODES) {
    if (env.sim.node(env.spec.name, n)) {
      env.sim.heal(env.spec.name, n);
      env.sim.setLagging(env.spec.name, n, false);
    }
  }
  for (const h of env.sim.inspectPoolHosts(env.spec.name)) env.sim.heal(env.spec.name, h.name);
  env.trace.push('-- faults stop --');
  const start = env.clock.now();
  let working = 0;
  for (let passes = 1; ; passes++) {
    const r = await pass(env);
    checkSafety(env);
    if (r?.converged) {
      const s = env.stats;
      s.maxConvergeMs = Math.max(s.maxConvergeMs, env.clock.now() - start);
      s.maxConvergePasses = Math.max(s.maxConvergePasses, working);
      return passes;
    }
    if (r?.decision.kind !== 'wait') working++;
    const tookMs = env.clock.now() - start;
    if (working > CONVERGENCE_BOUND.passes || tookMs > CONVERGENCE_BOUND.simMs) {
      const bound = `${CONVERGENCE_BOUND.passes} acting passes and ${CONVERGENCE_BOUND.simMs} ms`;
      throw new Error(`did not converge within ${bound}\n${env.trace.slice(-60).join('\n')}`);
    }
  }
}

const emptyStats: Stats = {
  jobsStarted: 0,
  jobsSucceeded: 0,
  jobsFailed: 0,
  jobsCancelled: 0,
  jobsInterrupted: 0,
  restarts: 0,
  maxConvergeMs: 0,
  maxConvergePasses: 0,
};

/** Adds a finished schedule's job outcomes (from the store) to `total`. */
function addStats(total: Stats, env: Env): void {
  const jobs = env.store.jobs.list({ cluster: env.spec.name });
  const count = (state: string) => jobs.filter((j) => j.state === state).length;
  total.jobsStarted += jobs.length;
  total.jobsSucceeded += count('succeeded');
  total.jobsFailed += count('failed');
  total.jobsCancelled += count('cancelled');
  total.jobsInterrupted += count('interrupted');
  total.restarts += env.stats.restarts;
  total.maxConvergeMs = Math.max(total.maxConvergeMs, env.stats.maxConvergeMs);
  total.maxConvergePasses = Math.max(total.maxConvergePasses, env.stats.maxConvergePasses);
}

function assertConverged(env: Env) {
  const name = env.spec.name;
  const writable = env.sim.writablePrimaries(name);
  expect(writable).toHaveLength(1);
  const primary = writable[0]!;
  const nodes = env.store.listNodes(name);
  expect(nodes.filter((n) => n.state === 'primary').map((n) => n.name)).toEqual([primary]);
  const specNodes = env.spec.nodes.map((n) => n.name);
  expect(nodes.map((n) => n.name).sort()).toEqual([...specNodes].sort());
  for (const n of NODES)
    if (!specNodes.includes(n)) expect(env.sim.node(name, n), `${n} removed`).toBeUndefined();
  for (const n of specNodes) {
    if (n === primary) continue;
    const node = env.sim.inspect(name, n)!;
    expect(node.pg.inRecovery, `${n} in recovery`).toBe(true);
    expect(node.pg.streaming, `${n} streaming`).toBe(true);
    expect(node.pg.upstream, `${n} upstream`).toBe(primary);
  }
  expect(env.sim.inspectPool(name)?.primary).toBe(primary);
  // A node that left the spec left everything (issue 19): no replication slot holding WAL for
  // it on the primary, no place in the sync set, no pgpool backend.
  const p = env.sim.inspect(name, primary)!.pg;
  if (env.spec.replication.slots)
    expect([...p.slots].sort(), 'slots on the primary').toEqual(
      specNodes
        .filter((n) => n !== primary)
        .map(slotNameFor)
        .sort(),
    );
  for (const n of p.syncNames) expect(specNodes, `sync standby ${n}`).toContain(n);
  expect([...(env.sim.inspectPool(name)?.backends ?? [])].sort(), 'pgpool backends').toEqual(
    [...specNodes].sort(),
  );
  if (poolVip(env.spec)) assertPoolHostsConverged(env, primary);
  // A write through pgpool now succeeds, synchronously in sync mode.
  const w = env.sim.write(name, 'pool', env.nextWriteId++);
  expect(w.acked, w.reason).toBe(true);
  if (env.spec.replication.mode === 'sync') expect(w.sync).toBe(true);
  expect(env.sim.lostSyncAcks(name)).toEqual([]);
}

/** Exactly one live pool host holds the virtual IP, and every pool host runs a pgpool routing
 *  to the primary (the address may move to any of them next). */
function assertPoolHostsConverged(env: Env, primary: string) {
  // a node that left the spec (pgpool.onNodes) took its pgpool with it
  const names = poolHosts(env.spec).map((h) => h.name);
  const hosts = env.sim.inspectPoolHosts(env.spec.name).filter((h) => names.includes(h.name));
  expect(hosts.map((h) => h.name).sort(), 'pool hosts').toEqual([...names].sort());
  const live = hosts.filter((h) => h.holdsVip && env.sim.poolHostUp(h));
  expect(
    live.map((h) => h.name),
    'live holders of the virtual IP',
  ).toHaveLength(1);
  for (const h of hosts) {
    expect(env.sim.poolHostMachine(h), `pool host ${h.name}`).toBe('running');
    expect(h.pgpool?.running, `pgpool on ${h.name} runs`).toBe(true);
    expect(h.pgpool?.primary, `pgpool on ${h.name} routes`).toBe(primary);
  }
}

// A fixed seed by default keeps CI reproducible; PGOP_PROPERTY_SEED=random explores new
// schedules (the failing seed and path are printed either way).
const DEFAULT_SEED = 20261125;

/** fast-check prints a commands' replayPath beside the counterexample: it is needed with the
 *  seed and path to replay the same commands. */
function replayPath(): { replayPath?: string } {
  const replay = process.env.PGOP_PROPERTY_REPLAY;
  return replay ? { replayPath: replay } : {};
}

function params(runs: number) {
  const env = process.env.PGOP_PROPERTY_SEED;
  const seed = env === 'random' ? undefined : env ? Number(env) : DEFAULT_SEED;
  const path = process.env.PGOP_PROPERTY_PATH;
  return {
    numRuns: runs,
    ...(seed !== undefined ? { seed } : {}),
    ...(path ? { path } : {}),
    endOnFailure: false,
  };
}

/** Random schedules from `setup(mode, profile, pools)`: safe after every step, then converged. */
async function runSchedules(mode: 'async' | 'sync', pools: PoolLayout, runs: number): Promise<Stats> {
  const total: Stats = { ...emptyStats };
  let schedules = 0;
  await fc.assert(
    fc.asyncProperty(
      jobProfile,
      fc.commands(commands(mode, pools), { maxCommands: 40, ...replayPath() }),
      async (profile, cmds) => {
        const env = setup(mode, profile, pools);
        try {
          await fc.asyncModelRun(() => ({ model: {}, real: env }), cmds);
          checkSafety(env);
          await converge(env);
          assertConverged(env);
          schedules++;
          addStats(total, env);
        } finally {
          env.store.close();
        }
      },
    ),
    params(runs),
  );
  const what = `${mode}${pools === 'single' ? '' : pools === 'hosts' ? ', pool hosts' : ', pgpool on nodes'}`;
  console.info(`${what}: ${schedules} schedules passed; jobs: ${JSON.stringify(total)}`);
  return total;
}

for (const mode of ['async', 'sync'] as const) {
  describe(`reconcile loop under faults and jobs (${mode})`, () => {
    it(
      `keeps one primary${mode === 'sync' ? ', loses no acknowledged commit,' : ''}` +
        ` and converges (${RUNS} schedules)`,
      async () => {
        const total = await runSchedules(mode, 'single', RUNS);
        // the schedules did exercise every outcome of a job
        expect(total.jobsSucceeded).toBeGreaterThan(0);
        if (RUNS >= 100) {
          for (const k of ['jobsFailed', 'jobsCancelled', 'jobsInterrupted'] as const)
            expect(total[k], k).toBeGreaterThan(0);
        }
      },
      600_000,
    );
  });
}

describe('reconcile loop with pool hosts, under pool host faults too', () => {
  it(
    `never lets two running pool hosts hold the virtual IP, and ends with one live holder ` +
      `(${POOL_HA_RUNS} schedules)`,
    async () => {
      const total = await runSchedules('async', 'hosts', POOL_HA_RUNS);
      expect(total.jobsSucceeded).toBeGreaterThan(0);
    },
    600_000,
  );
});

describe('reconcile loop with pgpool on every node, under node and pgpool faults', () => {
  it(
    `never lets two running nodes hold the virtual IP, loses no acknowledged commit, and ends ` +
      `with one live holder (${POOL_HA_RUNS} schedules)`,
    async () => {
      const total = await runSchedules('sync', 'nodes', POOL_HA_RUNS);
      expect(total.jobsSucceeded).toBeGreaterThan(0);
    },
    600_000,
  );
});

describe('reconcile loop, a healthy bring-up', () => {
  it('converges from nothing in a bounded number of passes and then stays done', async () => {
    for (const [mode, pools] of [
      ['async', 'single'],
      ['sync', 'single'],
      ['async', 'hosts'],
      ['sync', 'nodes'],
    ] as const) {
      const env = setup(mode, {}, pools);
      const passes = await converge(env);
      expect(passes).toBeLessThan(20);
      assertConverged(env);
      const again = await pass(env);
      expect(again?.decision.kind).toBe('done');
      env.store.close();
    }
  });
});
