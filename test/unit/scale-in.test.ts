// Scale-in (issue 19) against the simulated world, which finds machines as the real providers do
// (by what it holds for the cluster, not by a made-up spec): a node that leaves the spec is taken
// out of the sync set and pgpool, fenced, deleted, its slot dropped on the primary, and only then
// forgotten; its events tell that story.

import { describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { SimWorld, slotNameFor } from '../../src/drivers/sim/world.js';
import { SimClock } from '../../src/drivers/sim/clock.js';
import { createSimWorld } from '../../src/drivers/sim/drivers.js';
import { Reconciler } from '../../src/reconcile/reconciler.js';
import { canonicalJson } from '../../src/spec/parse.js';
import type { ClusterSpec } from '../../src/spec/types.js';
import { SIM_PG04, simSpec } from '../helpers/sim-spec.js';
import { STANDBY_REMOVAL_RULES } from '../helpers/scale-in.js';

function setup(mode: 'sync' | 'async') {
  const clock = new SimClock(1_700_000_000_000);
  const sim = new SimWorld({ clock });
  const store = Store.open(':memory:');
  const drivers = createSimWorld(sim);
  const reconciler = new Reconciler({ store, worldFor: () => drivers, clock });
  const env = {
    clock,
    sim,
    store,
    drivers,
    spec: simSpec({ name: 'scale', replication: { mode, syncQuorum: 1 } }),
    apply(spec: ClusterSpec) {
      env.spec = spec;
      store.applySpec(spec, canonicalJson(spec), 'test', clock.now());
    },
    async converge() {
      for (let i = 0; i < 80; i++) {
        const r = (await reconciler.pass(env.spec.name))!;
        clock.advance(Math.max(r.requeueAfterMs, 100));
        if (r.converged) return i;
      }
      throw new Error(
        `did not converge:\n${store
          .listEvents({ cluster: env.spec.name })
          .slice(-20)
          .map((e) => `${e.node} ${e.ruleId} ${e.reason}`)
          .join('\n')}`,
      );
    },
  };
  env.apply(env.spec);
  return env;
}

type Env = ReturnType<typeof setup>;
const pg04 = SIM_PG04;

function primaryOf(env: Env): string {
  const w = env.sim.writablePrimaries(env.spec.name);
  expect(w).toHaveLength(1);
  return w[0]!;
}

function expectGone(env: Env, node: string) {
  const name = env.spec.name;
  const primary = primaryOf(env);
  expect(env.sim.node(name, node), `${node}'s machine`).toBeUndefined();
  expect(env.store.getNode(name, node), `${node}'s record`).toBeUndefined();
  const pg = env.sim.inspect(name, primary)!.pg;
  expect(pg.slots).not.toContain(slotNameFor(node));
  expect(pg.syncNames).not.toContain(node);
  expect(env.sim.inspectPool(name)!.backends).not.toContain(node);
  expect(env.sim.lostSyncAcks(name)).toEqual([]);
}

describe('scale-in against the simulated world', () => {
  it(
    '3 -> 4 -> 3: the removed standby leaves the sync set, pgpool, its machine and its slot, then is ' +
      'forgotten',
    async () => {
      const env = setup('sync');
      await env.converge();
      env.apply({ ...env.spec, nodes: [...env.spec.nodes, pg04] });
      await env.converge();
      expect(env.sim.inspect(env.spec.name, 'pg04')!.pg.streaming).toBe(true);
      const primary = primaryOf(env);
      expect(env.sim.inspect(env.spec.name, primary)!.pg.syncNames).toContain('pg04');
      expect(env.store.getNodeSpec(env.spec.name, 'pg04')).toEqual(pg04);
      const before = env.store.listEvents({ cluster: env.spec.name }).at(-1)!.id;

      env.apply({ ...env.spec, nodes: env.spec.nodes.filter((n) => n.name !== 'pg04') });
      await env.converge();
      expectGone(env, 'pg04');
      const story = env.store
        .listEvents({ cluster: env.spec.name, afterId: before })
        .filter((e) => e.node === 'pg04' || e.reason.includes('pg04'));
      expect(story.map((e) => e.ruleId)).toEqual(STANDBY_REMOVAL_RULES);
      expect(story.map((e) => e.ruleId)).not.toContain('node.machine-vanished');
      // a write through pgpool is acknowledged synchronously by the remaining standbys
      const w = env.sim.write(env.spec.name, 'pool', 1);
      expect(w.acked && w.sync, w.reason).toBe(true);
    },
  );

  it('3 -> 2 removing the primary: handed over first, then removed the same way', async () => {
    const env = setup('sync');
    await env.converge();
    const old = primaryOf(env);
    const acked: number[] = [];
    for (let i = 1; i <= 5; i++) if (env.sim.write(env.spec.name, 'pool', i).acked) acked.push(i);
    env.apply({ ...env.spec, nodes: env.spec.nodes.filter((n) => n.name !== old) });
    await env.converge();
    expectGone(env, old);
    const now = primaryOf(env);
    expect(now).not.toBe(old);
    const rules = env.store
      .listEvents({ cluster: env.spec.name })
      .filter((e) => e.node === old || e.reason.includes(old))
      .map((e) => e.ruleId);
    expect(rules).toContain('scale.handover');
    expect(rules.slice(rules.indexOf('scale.handover'))).toEqual(
      expect.arrayContaining(['scale.fence', 'scale.remove-machine', 'scale.forget']),
    );
    expect(rules).not.toContain('node.machine-vanished');
    expect(env.sim.lostSyncAcks(env.spec.name)).toEqual([]);
  });

  it(
    'finds a machine of a node that left the spec through the provider, ' + 'though the store forgot it',
    async () => {
      const env = setup('async');
      await env.converge();
      env.apply({ ...env.spec, nodes: [...env.spec.nodes, pg04] });
      await env.converge();
      env.apply({ ...env.spec, nodes: env.spec.nodes.filter((n) => n.name !== 'pg04') });
      // the record is lost (a store restored from an older backup, say): the machine is still found
      env.store.deleteNodeRecord(env.spec.name, 'pg04');
      const listed = await env.drivers.provider.listMachines(env.spec);
      expect(listed.pg04).toMatchObject({ state: 'running', address: '10.0.0.14' });
      // the loop lists every machine of a cluster now and then (not every pass) when it knows of
      // no node leaving
      env.clock.advance(61_000);
      await env.converge();
      expectGone(env, 'pg04');
    },
  );

  it(
    'the simulated provider refuses to look for a ' + 'machine through a made-up spec, as the lab does',
    async () => {
      const env = setup('async');
      await env.converge();
      const madeUp = {
        ...env.spec,
        nodes: [...env.spec.nodes.slice(1), { ...env.spec.nodes[0]!, address: '0.0.0.0' }],
      };
      await expect(env.drivers.provider.observeMachines(madeUp)).rejects.toThrow(
        /made at 10\.0\.0\.11, not 0\.0\.0\.0/,
      );
    },
  );
});

describe('observeCluster and nodes that left the spec', () => {
  it(
    'observes a stray through its recorded NodeSpec; a failed listing leaves it unknown-but-present, ' +
      'never missing',
    async () => {
      const { observeCluster } = await import('../../src/reconcile/observe.js');
      const env = setup('async');
      env.apply({ ...env.spec, nodes: [...env.spec.nodes, pg04] });
      await env.converge();
      const three = { ...env.spec, nodes: env.spec.nodes.filter((n) => n.name !== 'pg04') };
      const seen = await observeCluster(three, env.drivers, {}, env.clock.now(), { pg04 });
      expect(seen.strays).toEqual({ pg04 });
      expect(seen.nodes.pg04).toMatchObject({
        machine: { state: 'running' },
        reachable: true,
        postgres: { inRecovery: true, streaming: true },
      });
      const failing = {
        ...env.drivers,
        provider: {
          ...env.drivers.provider,
          listMachines: async () => Promise.reject(new Error('libvirtd restarting')),
        },
      };
      const blind = await observeCluster(three, failing, {}, env.clock.now(), { pg04 });
      expect(blind.nodes.pg04!.machine).toEqual({
        state: 'running',
        detail: 'provider unavailable: libvirtd restarting',
      });
      // unrecorded and unlisted without asking: nothing is made up
      const plain = await observeCluster(three, env.drivers, {}, env.clock.now(), {});
      expect(plain.nodes.pg04).toBeUndefined();
      const listed = await observeCluster(
        three,
        env.drivers,
        {},
        env.clock.now(),
        {},
        { listMachines: true },
      );
      expect(listed.strays).toEqual({
        pg04: { name: 'pg04', address: '10.0.0.14', vcpus: 1, memoryMiB: 1, rootDiskGiB: 1, dataDiskGiB: 1 },
      });
    },
  );
});
