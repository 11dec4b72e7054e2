// A pass that waits on something that never answers leaves its cluster's loop blind: it must at
// least say so, naming the await still open, every SLOW_PASS_MS.

import { afterEach, describe, expect, it, vi } from 'vitest';
import { Store } from '../../src/store/store.js';
import { SimWorld } from '../../src/drivers/sim/world.js';
import { SimClock } from '../../src/drivers/sim/clock.js';
import { createSimWorld } from '../../src/drivers/sim/drivers.js';
import { Reconciler } from '../../src/reconcile/reconciler.js';
import { PassTrace, SLOW_PASS_MS } from '../../src/reconcile/pass-trace.js';
import { canonicalJson } from '../../src/spec/parse.js';
import { simSpec } from '../helpers/sim-spec.js';

afterEach(() => vi.useRealTimers());

describe('a slow pass', () => {
  it('is reported every minute with the look it waits on, and not once it is over', async () => {
    vi.useFakeTimers();
    const clock = new SimClock(1_700_000_000_000);
    const store = Store.open(':memory:');
    const spec = simSpec({ name: 'sp' });
    store.applySpec(spec, canonicalJson(spec), 'test', clock.now());
    const drivers = createSimWorld(new SimWorld({ clock }));
    let answer!: () => void;
    const hung = new Promise<void>((resolve) => (answer = resolve));
    const provider = {
      ...drivers.provider,
      observeMachines: async (s: typeof spec) => {
        await hung;
        return drivers.provider.observeMachines(s);
      },
    };
    const warnings: { fields: Record<string, unknown>; msg: string }[] = [];
    const log = {
      info() {},
      error() {},
      warn: (fields: Record<string, unknown>, msg: string) => warnings.push({ fields, msg }),
    };
    const world = { ...drivers, provider };
    const reconciler = new Reconciler({ store, worldFor: () => world, clock, log });
    const pass = reconciler.pass('sp');
    await vi.advanceTimersByTimeAsync(SLOW_PASS_MS - 1000);
    expect(warnings).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(2 * SLOW_PASS_MS);
    expect(warnings.map((w) => w.fields.passS)).toEqual([60, 120]);
    expect(warnings[0]!.msg).toMatch(/the pass of sp has run 60 s; .*waiting on: the machines \(60 s\)/);
    answer();
    await vi.advanceTimersByTimeAsync(10);
    await pass;
    await vi.advanceTimersByTimeAsync(3 * SLOW_PASS_MS);
    expect(warnings).toHaveLength(2);
    store.close();
  });

  it('names only the awaits still open', async () => {
    const trace = new PassTrace();
    let done!: () => void;
    const a = trace.on('probe of pg01', new Promise<void>((r) => (done = r)));
    await trace.on('probe of pg02', Promise.resolve());
    expect(trace.waitingOn().map((w) => w.replace(/ \(\d+ s\)$/, ''))).toEqual(['probe of pg01']);
    done();
    await a;
    expect(trace.waitingOn()).toEqual([]);
  });
});
