// Model-based property tests of the control loop against the simulated world: random schedules
// of faults, client writes, operator crashes and spec changes, interleaved with reconcile
// passes. After every step: never two writable primaries, and (sync mode) no acknowledged
// commit lost. After the faults stop: convergence to the spec within a bounded number of passes.
//
// A failure prints fast-check's seed and path; replay it with
//   PGOP_PROPERTY_SEED=<seed> PGOP_PROPERTY_PATH=<path> npx vitest run test/property
// and explore beyond the default seed with PGOP_PROPERTY_SEED=random PGOP_PROPERTY_RUNS=5000.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Store } from '../../src/store/store.js';
import { SimWorld, slotNameFor } from '../../src/drivers/sim/world.js';
import { SimClock } from '../../src/drivers/sim/clock.js';
import { createSimWorld } from '../../src/drivers/sim/drivers.js';
import { Reconciler, type PassResult } from '../../src/reconcile/reconciler.js';
import { canonicalJson } from '../../src/spec/parse.js';
import type { ClusterSpec } from '../../src/spec/types.js';
import { simSpec } from '../helpers/sim-spec.js';

const RUNS = Number(process.env.PGOP_PROPERTY_RUNS ?? 600);
const CONVERGENCE_BOUND = 80; // passes after the last fault
const NODES = ['pg01', 'pg02', 'pg03', 'pg04'] as const;

class OperatorCrashed extends Error {}

interface Env {
  clock: SimClock;
  sim: SimWorld;
  store: Store;
  reconciler: Reconciler;
  spec: ClusterSpec;
  crashNextCommit: boolean;
  crashedThisPass: boolean;
  nextWriteId: number;
  vanished: number;
  trace: string[];
}

function hashOf(spec: ClusterSpec): string {
  return canonicalJson(spec);
}

function newReconciler(env: Omit<Env, 'reconciler'> & { reconciler?: Reconciler }): Reconciler {
  const drivers = createSimWorld(env.sim);
  return new Reconciler({
    store: env.store,
    worldFor: () => drivers,
    clock: env.clock,
    beforeCommit: () => {
      // Once dead, no other commit of the same pass (parallel node actions) lands either.
      if (env.crashNextCommit || env.crashedThisPass) {
        env.crashNextCommit = false;
        env.crashedThisPass = true;
        throw new OperatorCrashed('operator killed after the side effect, before the commit');
      }
    },
  });
}

function setup(mode: 'async' | 'sync'): Env {
  const clock = new SimClock(1_700_000_000_000);
  const sim = new SimWorld({ clock });
  const store = Store.open(':memory:');
  const spec = simSpec({ name: 'prop', replication: { mode, syncQuorum: 1 } });
  store.applySpec(spec, hashOf(spec), 'test', clock.now());
  const env = {
    clock,
    sim,
    store,
    spec,
    crashNextCommit: false,
    crashedThisPass: false,
    nextWriteId: 1,
    vanished: 0,
    trace: [] as string[],
  } as Omit<Env, 'reconciler'> as Env;
  env.reconciler = newReconciler(env);
  return env;
}

async function pass(env: Env): Promise<PassResult | null> {
  const r = await env.reconciler.pass(env.spec.name);
  if (env.crashedThisPass) {
    env.crashedThisPass = false;
    // The process died: a new one starts with nothing in memory but the store.
    env.reconciler = newReconciler(env);
    env.trace.push('  operator restarted');
  }
  env.clock.advance(Math.max(r?.requeueAfterMs ?? 0, 100));
  if (r)
    env.trace.push(
      `  pass: ${r.decision.kind} ${r.decision.ruleId}: ${r.decision.reason}` +
        `${r.error ? ` (failed: ${r.error.message})` : ''}`,
    );
  return r;
}

function checkSafety(env: Env) {
  const writable = env.sim.writablePrimaries(env.spec.name);
  if (writable.length > 1)
    throw new Error(`two writable primaries: ${writable.join(', ')}\n${env.trace.slice(-40).join('\n')}`);
  {
    // Acks counted as sync only while synchronous_standby_names was set; check in every mode.
    const lost = env.sim.lostSyncAcks(env.spec.name);
    if (lost.length > 0)
      throw new Error(
        `acknowledged sync commits lost: ${lost.join(', ')}\n${env.trace.slice(-40).join('\n')}`,
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
      checkSafety(env);
    },
    toString: () => name,
  } as Cmd;
}

function commands(mode: 'async' | 'sync') {
  const node = fc.constantFrom(...NODES);
  return [
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
    fc.constant(null).map(() =>
      command('crashOperatorMidPass', async (env) => {
        env.crashNextCommit = true;
        await pass(env);
        env.crashNextCommit = false;
      }),
    ),
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
    fc.constantFrom('param', 'scale', ...(mode === 'async' ? ['toSync'] : ['toAsync'])).map((change) =>
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

async function converge(env: Env): Promise<number> {
  // Faults stop: links heal, slow standbys catch up. Machines stay as the faults left them:
  // restarting what it fenced or lost is the operator's job.
  for (const n of NODES) {
    if (env.sim.node(env.spec.name, n)) {
      env.sim.heal(env.spec.name, n);
      env.sim.setLagging(env.spec.name, n, false);
    }
  }
  env.trace.push('-- faults stop --');
  for (let i = 1; i <= CONVERGENCE_BOUND; i++) {
    const r = await pass(env);
    checkSafety(env);
    if (r?.converged) return i;
  }
  throw new Error(`did not converge within ${CONVERGENCE_BOUND} passes\n${env.trace.slice(-60).join('\n')}`);
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
  // A write through pgpool now succeeds, synchronously in sync mode.
  const w = env.sim.write(name, 'pool', env.nextWriteId++);
  expect(w.acked, w.reason).toBe(true);
  if (env.spec.replication.mode === 'sync') expect(w.sync).toBe(true);
  expect(env.sim.lostSyncAcks(name)).toEqual([]);
}

// A fixed seed by default keeps CI reproducible; PGOP_PROPERTY_SEED=random explores new
// schedules (the failing seed and path are printed either way).
const DEFAULT_SEED = 20261125;

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

for (const mode of ['async', 'sync'] as const) {
  describe(`reconcile loop under faults (${mode})`, () => {
    it(
      `keeps one primary${mode === 'sync' ? ', loses no acknowledged commit,' : ''}` +
        ` and converges (${RUNS} schedules)`,
      async () => {
        await fc.assert(
          fc.asyncProperty(fc.commands(commands(mode), { maxCommands: 40 }), async (cmds) => {
            const env = setup(mode);
            try {
              // Bring the cluster up first so faults hit a running cluster as often as a young one.
              await fc.asyncModelRun(() => ({ model: {}, real: env }), cmds);
              checkSafety(env);
              await converge(env);
              assertConverged(env);
            } finally {
              env.store.close();
            }
          }),
          params(RUNS),
        );
      },
      600_000,
    );
  });
}

describe('reconcile loop, a healthy bring-up', () => {
  it('converges from nothing in a bounded number of passes and then stays done', async () => {
    for (const mode of ['async', 'sync'] as const) {
      const env = setup(mode);
      const passes = await converge(env);
      expect(passes).toBeLessThan(20);
      assertConverged(env);
      const again = await pass(env);
      expect(again?.decision.kind).toBe('done');
      env.store.close();
    }
  });
});
