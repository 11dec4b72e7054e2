// The urgent pass: when a backend reports its postmaster dead, the loop plans on that news plus
// the other nodes' last answers instead of waiting for fresh probes, and acts on such a look
// only to fence (or fail) the dead node. Against the simulated world, whose "last answer" is
// the stalest a real driver could hand out. A dead standby is detached from pgpool on that look:
// every new session through pgpool fails until then.

import { describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { SimWorld } from '../../src/drivers/sim/world.js';
import { SimClock } from '../../src/drivers/sim/clock.js';
import { createSimWorld } from '../../src/drivers/sim/drivers.js';
import { Reconciler } from '../../src/reconcile/reconciler.js';
import { canonicalJson } from '../../src/spec/parse.js';
import type { ClusterSpec } from '../../src/spec/types.js';
import { simSpec } from '../helpers/sim-spec.js';

let clock: SimClock;
let sim: SimWorld;
let store: Store;
let spec: ClusterSpec;
let reconciler: Reconciler;

function setup(mode: 'sync' | 'async') {
  clock = new SimClock(1_700_000_000_000);
  sim = new SimWorld({ clock });
  store = Store.open(':memory:');
  spec = simSpec({ name: 'urgent', replication: { mode, syncQuorum: 1 } });
  store.applySpec(spec, canonicalJson(spec), 'test', clock.now());
  const drivers = createSimWorld(sim);
  reconciler = new Reconciler({ store, worldFor: () => drivers, clock });
}

async function pass() {
  const r = await reconciler.pass(spec.name);
  clock.advance(Math.max(r?.requeueAfterMs ?? 0, 100));
  return r!;
}

async function converge() {
  for (let i = 0; i < 80; i++) if ((await pass()).converged) return;
  throw new Error('did not converge');
}

describe('urgent pass', () => {
  it("fences a primary whose postmaster died on the news and the others' last answers", async () => {
    setup('async');
    await converge();
    const primary = store.getCluster(spec.name)!.primary!;
    const [s1, s2] = spec.nodes.map((n) => n.name).filter((n) => n !== primary) as [string, string];
    // s2 dies unseen (no probe since, and the operator had no session there in this story:
    // its news is dropped); then the primary's postmaster dies with a session open.
    sim.kill(spec.name, s2);
    sim.postmasterNews.clear();
    sim.kill(spec.name, primary);

    const r = await pass();
    expect(r.decision).toMatchObject({ kind: 'act', node: primary, ruleId: 'failover.fence-primary' });
    const seen = store.getObservation(spec.name)!;
    expect(seen.urgent).toEqual([primary]);
    // s2's answer is its last one (healthy), not a fresh probe: the urgent look did not wait
    expect(seen.nodes[s2]!.postgres?.running).toBe(true);
    expect(seen.nodes[primary]!.misses).toBe(spec.failureDetection.missesBeforeFailover);

    // the promotion is planned on a fresh look: s2 is seen down and s1 is promoted (in sync
    // mode it would wait instead: s1 alone cannot prove it holds every acknowledged commit)
    const next = await pass();
    expect(store.getObservation(spec.name)!.urgent).toBeUndefined();
    expect(store.getObservation(spec.name)!.nodes[s2]!.postgres?.running).toBe(false);
    expect(next.decision).toMatchObject({ kind: 'act', node: s1, ruleId: 'failover.promote' });
  });

  it("detaches a dead standby from pgpool on the news and the others' last answers", async () => {
    setup('sync');
    await converge();
    const primary = store.getCluster(spec.name)!.primary!;
    const [s1, s2] = spec.nodes.map((n) => n.name).filter((n) => n !== primary) as [string, string];
    sim.kill(spec.name, s1);

    const r = await pass();
    expect(r.decision).toMatchObject({ kind: 'cluster', ruleId: 'pool.detach-failed' });
    const seen = store.getObservation(spec.name)!;
    expect(seen.urgent).toEqual([s1]);
    expect(seen.nodes[s1]!.misses).toBe(spec.failureDetection.missesBeforeFailover);
    expect(seen.nodes[s2]!.postgres?.running).toBe(true);
    const pool = await createSimWorld(sim).pool.observe(spec);
    expect(pool.backends.find((b) => b.name === s1)?.status).not.toBe('up');
    expect(pool.backends.find((b) => b.name === s2)?.status).toBe('up');
  });

  it('decides on a fresh look when the urgent one would do anything else', async () => {
    setup('sync');
    await converge();
    const primary = store.getCluster(spec.name)!.primary!;
    const standbys = spec.nodes.map((n) => n.name).filter((n) => n !== primary);
    // Every standby is down (seen so by a pass), then the primary's postmaster dies: no
    // candidate, so the urgent look's decision (wait) is not one it may take.
    for (const s of standbys) sim.kill(spec.name, s);
    sim.postmasterNews.clear();
    await pass();
    sim.kill(spec.name, primary);

    const r = await pass();
    expect(r.decision.ruleId).not.toBe('failover.fence-primary');
    expect(store.getObservation(spec.name)!.urgent).toBeUndefined();
    expect(sim.postmasterNews.size).toBe(0);
  });
});
