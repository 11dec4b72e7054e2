// Two failovers in a row, sync mode: the node just promoted dies before the loop ever saw it
// healthy (so before its own synchronous set was seen). The election's evidence decides: a standby
// that was level with it at the election takes over; one that was behind never does (the promoted
// node is brought back in place). Against the simulated world.

import { describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { SimWorld } from '../../src/drivers/sim/world.js';
import { SimClock } from '../../src/drivers/sim/clock.js';
import { createSimWorld } from '../../src/drivers/sim/drivers.js';
import { Reconciler } from '../../src/reconcile/reconciler.js';
import { canonicalJson } from '../../src/spec/parse.js';
import { simSpec } from '../helpers/sim-spec.js';

function setup() {
  const clock = new SimClock(1_700_000_000_000);
  const sim = new SimWorld({ clock });
  const store = Store.open(':memory:');
  const spec = simSpec({ name: 'double', replication: { mode: 'sync', syncQuorum: 1 } });
  store.applySpec(spec, canonicalJson(spec), 'test', clock.now());
  const drivers = createSimWorld(sim);
  const reconciler = new Reconciler({ store, worldFor: () => drivers, clock });
  const pass = async () => {
    const r = (await reconciler.pass(spec.name))!;
    clock.advance(Math.max(r.requeueAfterMs, 100));
    return r;
  };
  const converge = async () => {
    for (let i = 0; i < 120; i++) if ((await pass()).converged) return;
    throw new Error(`did not converge:\n${sim.journal(spec.name).slice(-30).join('\n')}`);
  };
  return { sim, store, spec, pass, converge, name: spec.name };
}

type World = ReturnType<typeof setup>;

/** Kill the primary, run passes until a standby is promoted, kill that one before the next look. */
async function killPrimaryThenThePromoted(w: World): Promise<{ first: string; second: string }> {
  const first = w.store.getCluster(w.name)!.primary!;
  w.sim.kill(w.name, first);
  for (let i = 0; i < 60; i++) {
    const r = await w.pass();
    if (r.decision.ruleId === 'failover.promote' && r.acted) {
      const second = (r.decision as { node: string }).node;
      w.sim.kill(w.name, second);
      return { first, second };
    }
  }
  throw new Error('no promotion');
}

function writeSome(w: World, from: number, count: number): void {
  for (let id = from; id < from + count; id++) w.sim.write(w.name, 'pool', id);
}

describe('two failovers in a row (sync mode)', () => {
  it('a standby level with the promoted node at the election takes over when that node dies', async () => {
    const w = setup();
    await w.converge();
    writeSome(w, 1, 20);
    const { first, second } = await killPrimaryThenThePromoted(w);
    const evidence = w.store.getObservation(w.name)!.lastSync!;
    expect(evidence).toMatchObject({ primary: second, elected: true });
    expect(evidence.names[0]).toBe(second);
    await w.converge();
    const third = w.spec.nodes.map((n) => n.name).find((n) => n !== first && n !== second)!;
    expect(w.store.getCluster(w.name)!.primary).toBe(third);
    expect(w.sim.lostSyncAcks(w.name)).toEqual([]);
    const rules = w.store.listEvents({ cluster: w.name }).map((e) => `${e.node}:${e.ruleId}`);
    expect(rules).toContain(`${third}:failover.promote`);
    expect(rules).not.toContain(`${second}:recover.restart-primary`);
    // once the new primary's own set is seen, it replaces the election's evidence
    expect(w.store.getObservation(w.name)!.lastSync).toMatchObject({ primary: third });
    expect(w.store.getObservation(w.name)!.lastSync!.elected).toBeUndefined();
  });

  it('a standby behind the promoted node never takes over: the promoted node comes back', async () => {
    const w = setup();
    await w.converge();
    const first = w.store.getCluster(w.name)!.primary!;
    const [a, b] = w.spec.nodes.map((n) => n.name).filter((n) => n !== first) as [string, string];
    // b stops receiving: commits are acknowledged by a alone (ANY 1), so a is ahead at the election
    w.sim.setLagging(w.name, b, true);
    writeSome(w, 1, 20);
    const { second } = await killPrimaryThenThePromoted(w);
    expect(second).toBe(a);
    expect(w.store.getObservation(w.name)!.lastSync).toMatchObject({ names: [a], elected: true });
    w.sim.setLagging(w.name, b, false);
    await w.converge();
    expect(w.store.getCluster(w.name)!.primary).toBe(a);
    expect(w.sim.lostSyncAcks(w.name)).toEqual([]);
    const promotedB = w.store
      .listEvents({ cluster: w.name })
      .some((e) => e.node === b && e.ruleId === 'failover.promote');
    expect(promotedB).toBe(false);
  });
});
