// Jobs against the simulated world: a pass starts a long action and goes on; a failover never
// waits for a clone (the clone is cancelled and redone from the new primary); a job an earlier
// operator left running is marked interrupted and redone; one cluster's stuck pass never holds
// up another cluster.

import { describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { SimWorld } from '../../src/drivers/sim/world.js';
import { SimClock, systemClock } from '../../src/drivers/sim/clock.js';
import { createSimWorld } from '../../src/drivers/sim/drivers.js';
import { Reconciler, runLoop } from '../../src/reconcile/reconciler.js';
import { canonicalJson } from '../../src/spec/parse.js';
import type { ClusterSpec, NodeSpec } from '../../src/spec/types.js';
import type { JobContext, World } from '../../src/drivers/types.js';
import { SIM_PG04, simSpec } from '../helpers/sim-spec.js';

/** A world whose first clone of `node` hangs until cancelled (a clone of many GB, or one whose
 *  primary's link is down): it rejects only when its job's signal aborts. */
function hangingFirstClone(drivers: World, node: string) {
  const seen = { hung: 0, sources: [] as string[] };
  const world: World = {
    ...drivers,
    postgres: {
      ...drivers.postgres,
      ensureStandby: (spec: ClusterSpec, n: NodeSpec, primary: NodeSpec, job?: JobContext) => {
        if (n.name !== node) return drivers.postgres.ensureStandby(spec, n, primary, job);
        seen.sources.push(primary.name);
        if (seen.hung++ > 0) return drivers.postgres.ensureStandby(spec, n, primary, job);
        return new Promise<void>((_, reject) => {
          job?.progress(10 * 2 ** 20, 300 * 2 ** 20);
          job?.signal.addEventListener('abort', () => reject(new Error('pg_basebackup killed')));
        });
      },
    },
  };
  return { world, seen };
}

function setup(name: string, wrap: (drivers: World) => World = (d) => d) {
  const clock = new SimClock(1_700_000_000_000);
  const sim = new SimWorld({ clock });
  const store = Store.open(':memory:');
  const world = wrap(createSimWorld(sim));
  const env = {
    clock,
    sim,
    store,
    world,
    spec: simSpec({ name }),
    reconciler: new Reconciler({ store, worldFor: () => world, clock }),
    apply(spec: ClusterSpec) {
      env.spec = spec;
      store.applySpec(spec, canonicalJson(spec), 'test', clock.now());
    },
    /** passes (jobs settle between them) until `done` holds */
    async passUntil(done: () => boolean, max = 200) {
      for (let i = 0; i < max && !done(); i++) {
        const r = await env.reconciler.pass(env.spec.name);
        await new Promise((resolve) => setImmediate(resolve));
        clock.advance(Math.max(100, Math.min(r?.requeueAfterMs ?? 0, 1_000)));
      }
      if (!done()) throw new Error(`not reached:\n${story(env).slice(-15).join('\n')}`);
    },
    converged: () =>
      store.getCluster(env.spec.name)?.observedGeneration === store.getCluster(env.spec.name)?.generation,
  };
  env.apply(env.spec);
  return env;
}

const MIB = 2 ** 20;

const story = (env: { store: Store; spec: ClusterSpec }) =>
  env.store.listEvents({ cluster: env.spec.name }).map((e) => `${e.node ?? '-'} ${e.ruleId}: ${e.reason}`);

describe('jobs', () => {
  const failoverMidClone =
    'a failover goes ahead while a new standby clones; ' +
    'the clone is cancelled and redone from the new primary';
  it(failoverMidClone, async () => {
    let seen = { hung: 0, sources: [] as string[] };
    const env = setup('jobs1', (d) => {
      const h = hangingFirstClone(d, 'pg04');
      seen = h.seen;
      return h.world;
    });
    await env.passUntil(env.converged);
    env.apply({ ...env.spec, nodes: [...env.spec.nodes, SIM_PG04] });
    await env.passUntil(() => env.store.jobs.list({ running: true }).some((j) => j.kind === 'cloneStandby'));
    const clone = env.store.jobs.list({ running: true }).find((j) => j.kind === 'cloneStandby')!;
    expect(clone).toMatchObject({ node: 'pg04', source: 'pg01', state: 'running' });

    env.sim.kill(env.spec.name, 'pg01');
    await env.passUntil(() => env.sim.writablePrimaries(env.spec.name).length === 1);
    const newPrimary = env.sim.writablePrimaries(env.spec.name)[0]!;
    expect(newPrimary).not.toBe('pg01');
    // promoted while the clone was still running: its outcome comes after the promotion
    const events = story(env);
    const promoted = events.findIndex((e) => e.includes('failover.promote'));
    const cancelled = events.findIndex((e) => e.startsWith('pg04 job.cancelled'));
    expect(promoted).toBeGreaterThan(-1);
    expect(events.findIndex((e) => e.startsWith('pg01 failover.fence-primary'))).toBeLessThan(cancelled);
    expect(env.store.jobs.get(clone.id)!.state).toBe('cancelled');

    await env.passUntil(() => env.store.getNode(env.spec.name, 'pg04')?.state === 'standby');
    expect(seen.sources).toEqual(['pg01', newPrimary]);
    const redone = env.store.jobs.list({}).find((j) => j.node === 'pg04' && j.state === 'succeeded');
    expect(redone?.source).toBe(newPrimary);
    env.store.close();
  });

  it('a job left running by an operator that died is marked interrupted and its step redone', async () => {
    const env = setup('jobs2');
    await env.passUntil(env.converged);
    env.apply({ ...env.spec, nodes: [...env.spec.nodes, SIM_PG04] });
    // the earlier operator recorded pg04's node and its provisioning job, then died
    env.store.saveNodeState(env.spec.name, 'pg04', 'absent', { goal: 'standby', message: '', now: 0 });
    const orphan = env.store.jobs.create({
      cluster: env.spec.name,
      node: 'pg04',
      kind: 'provisionVm',
      ruleId: 'node.provision',
      from: 'absent',
      to: 'provisioned',
      source: null,
      startedAt: env.clock.now(),
      deadlineAt: env.clock.now() + 60_000,
      owner: 'an-operator-that-died',
    });
    // a new operator process starts
    env.reconciler = new Reconciler({ store: env.store, worldFor: () => env.world, clock: env.clock });
    await env.passUntil(() => env.store.getNode(env.spec.name, 'pg04')?.state === 'standby');
    expect(env.store.jobs.get(orphan)).toMatchObject({ state: 'interrupted' });
    expect(story(env).some((e) => e.startsWith(`pg04 job.interrupted: job #${orphan}`))).toBe(true);
    env.store.close();
  });

  it('a clone that copied every byte gets the slack from then to finish, past its deadline', async () => {
    const { env, job, clone } = await heldClone('jobs5', 10 * MIB, 300 * MIB);
    const firstDeadline = clone().deadlineAt; // start + 2 min + 300 MiB at 1 MiB/s
    env.clock.advance(firstDeadline - env.clock.now() - 30_000);
    job.progress(300 * MIB, 300 * MIB); // copied; postgres now starts and catches up
    env.clock.advance(60_000); // past the first deadline
    await env.reconciler.pass(env.spec.name);
    expect(clone().state).toBe('running');
    env.clock.advance(90_000); // past the slack from the last byte
    await env.passUntil(() => clone().state !== 'running', 5);
    expect(clone().state).toBe('cancelled');
    env.store.close();
  });

  it('a clone slower than the slowest healthy rate runs on while it moves, ends when it stalls', async () => {
    const { env, job, clone } = await heldClone('jobs6', 0, 30 * MIB);
    // 30 MiB at 100 kB/s (a busy TCG guest): past start + 2 min + 30 s, a third copied
    for (let copied = 1; copied <= 24; copied++) {
      env.clock.advance(10_000);
      job.progress(copied * MIB, 30 * MIB);
      await env.reconciler.pass(env.spec.name);
    }
    expect(clone().state).toBe('running');
    env.clock.advance(90_000); // stalled, but not for the slack yet
    await env.reconciler.pass(env.spec.name);
    expect(clone().state).toBe('running');
    env.clock.advance(40_000); // stalled past the slack
    await env.passUntil(() => clone().state !== 'running', 5);
    expect(clone().state).toBe('cancelled');
    env.store.close();
  });

  /** A converged cluster given pg04, whose clone reports `done` of `total` bytes and then runs
   *  until its job is cancelled. */
  async function heldClone(name: string, done: number, total: number) {
    let ctx: JobContext | undefined;
    const env = setup(name, (d) => ({
      ...d,
      postgres: {
        ...d.postgres,
        ensureStandby: (spec, n, primary, job) => {
          if (n.name !== 'pg04') return d.postgres.ensureStandby(spec, n, primary, job);
          ctx = job;
          job?.progress(done, total);
          return new Promise<void>((_, reject) =>
            job?.signal.addEventListener('abort', () => reject(new Error('pg_basebackup killed'))),
          );
        },
      },
    }));
    await env.passUntil(env.converged);
    env.apply({ ...env.spec, nodes: [...env.spec.nodes, SIM_PG04] });
    await env.passUntil(() => ctx !== undefined);
    const clone = () => env.store.jobs.list({}).find((j) => j.kind === 'cloneStandby')!;
    return { env, job: ctx!, clone };
  }

  it('a slow removal is not pre-empted by its own rule, pass after pass', async () => {
    const env = setup('jobs4');
    env.apply({ ...env.spec, nodes: [...env.spec.nodes, SIM_PG04] });
    await env.passUntil(env.converged);
    // removing pg04's machine takes a minute: the passes meanwhile must wait for it, not cancel it
    env.sim.setJobDuration(env.spec.name, 'pg04', 60_000, 'delete');
    env.apply({ ...env.spec, nodes: env.spec.nodes.filter((n) => n.name !== 'pg04') });
    await env.passUntil(() => !env.sim.node(env.spec.name, 'pg04') && env.converged(), 400);
    const removals = env.store.jobs.list({}).filter((j) => j.node === 'pg04' && j.kind === 'deleteMachine');
    // the first removal runs to its end (a pass that looked before it ended may remove again)
    expect(removals[0]?.state).toBe('succeeded');
    expect(removals.filter((j) => j.state !== 'succeeded')).toEqual([]);
    env.store.close();
  });

  const coolingBootstrap =
    'bootstrap passes over a node whose initdb failed while it cools down: the others are not held up';
  it(coolingBootstrap, async () => {
    const env = setup('jobs5');
    await env.passUntil(() => env.store.getNode(env.spec.name, 'pg01')?.state === 'installed');
    // pg01's data directory holds the leftovers of a clone that was interrupted: initdb refuses
    // to write over them (terminal), as the real driver does, every time it is tried
    env.sim.node(env.spec.name, 'pg01')!.pg.partial = true;
    await env.passUntil(env.converged, 400);
    const primary = env.sim.writablePrimaries(env.spec.name);
    expect(primary).toEqual(['pg02']);
    // pg01 was then cloned (a clone empties an interrupted one)
    expect(env.sim.inspect(env.spec.name, 'pg01')?.pg).toMatchObject({ inRecovery: true, upstream: 'pg02' });
    expect(story(env).some((e) => e.startsWith('pg01 job.failed') && e.includes('interrupted clone'))).toBe(
      true,
    );
    env.store.close();
  });

  it("a pool host's configuration that hangs holds up no failover", async () => {
    const hosts = [
      { name: 'pool-a', address: '10.0.0.21' },
      { name: 'pool-b', address: '10.0.0.22' },
    ];
    // pool-b's first configuration never ends (a VM that just booted, its SSH session stuck)
    let hung = 0;
    const env = setup('jobs6', (d) => ({
      ...d,
      pool: {
        ...d.pool,
        ensurePool: (spec, primary, failed, host) =>
          host === 'pool-b' && hung++ === 0
            ? new Promise(() => {})
            : d.pool.ensurePool(spec, primary, failed, host),
      },
    }));
    env.apply(simSpec({ name: 'jobs6', pgpool: { hosts } }));
    const running = () => env.store.jobs.list({ running: true }).filter((j) => j.kind === 'pool.configure');
    await env.passUntil(() => env.sim.vipHolders('jobs6').length === 1 && running().length === 1, 400);
    expect(running()[0]!.node).toBe('pool-b');
    const [old] = env.sim.writablePrimaries('jobs6');
    env.sim.kill('jobs6', old!);
    // promoted, and clients write through the address again, pool-b's job still running
    const newPrimary = () => env.sim.writablePrimaries('jobs6').find((p) => p !== old);
    await env.passUntil(() => !!newPrimary() && env.sim.write('jobs6', 'pool', 1).acked, 400);
    expect(env.sim.write('jobs6', 'pool', 2)).toMatchObject({ acked: true, node: newPrimary() });
    expect(running().map((j) => j.node)).toEqual(['pool-b']);
    env.store.close();
  });

  it("one cluster's stuck pass does not hold up another cluster's passes", async () => {
    const store = Store.open(':memory:');
    const sim = new SimWorld({ clock: systemClock });
    const drivers = createSimWorld(sim);
    // every probe of cluster "stuck" hangs: its pass never ends
    const stuck: World = {
      ...drivers,
      postgres: { ...drivers.postgres, probe: () => new Promise(() => {}) },
    };
    for (const name of ['stuck', 'free']) {
      const spec = simSpec({ name });
      store.applySpec(spec, canonicalJson(spec), 'test', Date.now());
    }
    const reconciler = new Reconciler({
      store,
      worldFor: (spec) => (spec.name === 'stuck' ? stuck : drivers),
      clock: systemClock,
    });
    const freeConverged = () => {
      const c = store.getCluster('free')!;
      return c.observedGeneration === c.generation;
    };
    const ac = new AbortController();
    const stopped = await runLoop(reconciler, store, systemClock, {
      stopWhen: freeConverged,
      timeoutMs: 20_000,
      signal: ac.signal,
    });
    expect(stopped).toBe(true);
    expect(freeConverged()).toBe(true);
    expect(store.getCluster('stuck')!.observedGeneration).toBe(0);
    store.close();
  }, 30_000);
});
