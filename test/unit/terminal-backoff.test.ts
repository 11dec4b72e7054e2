// A terminal failure (say libvirt's "Permission denied" on a disk) is not retried every 30 s
// forever: the retries of the failed job thin out to every 5 min, the event says it once, and a
// new spec generation starts afresh.

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
      // provisioning runs as a job: a failed one cools its node down before the next try
      const starts = () =>
        store.jobs
          .list({ cluster: 'tb' })
          .filter((j) => j.node === 'pg01')
          .map((j) => j.startedAt)
          .reverse();
      const passUntil = async (done: () => boolean) => {
        for (let i = 0; i < 20_000 && !done(); i++) {
          const r = (await reconciler.pass('tb'))!;
          await new Promise((resolve) => setImmediate(resolve)); // the job settles
          clock.advance(Math.max(100, Math.min(r.requeueAfterMs, 1_000)));
        }
      };
      await passUntil(() => starts().length >= 8);
      const gaps = starts()
        .slice(0, 8)
        .map((t, i, all) => (i === 0 ? 0 : t - all[i - 1]!))
        .slice(1);
      const expected = [30_000, 60_000, 120_000, 240_000, 300_000, 300_000, 300_000];
      // each retry comes when its cooling ends, at the next pass (passes here are <= 1 s apart)
      gaps.forEach((gap, i) => expect(gap - expected[i]!).toBeGreaterThanOrEqual(0));
      gaps.forEach((gap, i) => expect(gap - expected[i]!).toBeLessThanOrEqual(1_100));
      const failedJobs = store.jobs.list({ cluster: 'tb' }).filter((j) => j.node === 'pg01');
      expect(failedJobs.filter((j) => j.state === 'failed').every((j) => j.message.includes(msg))).toBe(true);
      const events = store.listEvents({ cluster: 'tb' }).filter((e) => e.node === 'pg01');
      expect(events.filter((e) => e.ruleId === 'job.failed')).toHaveLength(1);
      const changed = simSpec({ name: 'tb', nodes: spec.nodes.slice(0, 2) });
      store.applySpec(changed, canonicalJson(changed), 'test', clock.now());
      const before = starts().length;
      await reconciler.pass('tb');
      expect(starts().length).toBe(before + 1);
      store.close();
    },
  );
});
