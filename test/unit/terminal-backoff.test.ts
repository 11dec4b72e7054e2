// A terminal failure (say libvirt's "Permission denied" on a disk) is not retried every 30 s
// forever: the retries thin out to every 5 min, the event says it once, and a new spec
// generation starts afresh.

import { describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { SimWorld } from '../../src/drivers/sim/world.js';
import { SimClock } from '../../src/drivers/sim/clock.js';
import { createSimWorld } from '../../src/drivers/sim/drivers.js';
import { Reconciler } from '../../src/reconcile/reconciler.js';
import { canonicalJson } from '../../src/spec/parse.js';
import { terminal } from '../../src/errors.js';
import { simSpec } from '../helpers/sim-spec.js';

describe('terminal failures back off', () => {
  it(
    '30 s, 60 s, 120 s, 240 s, then every 300 s; ' + 'one event; a new generation resets the backoff',
    async () => {
      const clock = new SimClock(1_700_000_000_000);
      const sim = new SimWorld({ clock });
      const store = Store.open(':memory:');
      const spec = simSpec({ name: 'tb' });
      store.applySpec(spec, canonicalJson(spec), 'test', clock.now());
      const drivers = createSimWorld(sim);
      const msg =
        "cannot start tb/pg01: Cannot access storage file '/var/lib/pgop/pool/tb-pg01-root.qcow2' " +
        '(as uid:64055, gid:64055): Permission denied';
      const world = {
        ...drivers,
        provider: { ...drivers.provider, ensureMachine: async () => Promise.reject(terminal(msg)) },
      };
      const reconciler = new Reconciler({ store, worldFor: () => world, clock });
      const delays: number[] = [];
      for (let i = 0; i < 7; i++) {
        const r = (await reconciler.pass('tb'))!;
        expect(r.error?.message).toBe(msg);
        delays.push(r.requeueAfterMs);
        clock.advance(r.requeueAfterMs);
      }
      expect(delays).toEqual([30_000, 60_000, 120_000, 240_000, 300_000, 300_000, 300_000]);
      expect(store.listEvents({ cluster: 'tb' }).filter((e) => e.ruleId.endsWith('.failed'))).toHaveLength(1);
      const changed = simSpec({ name: 'tb', nodes: spec.nodes.slice(0, 2) });
      store.applySpec(changed, canonicalJson(changed), 'test', clock.now());
      expect((await reconciler.pass('tb'))!.requeueAfterMs).toBe(30_000);
      store.close();
    },
  );
});
