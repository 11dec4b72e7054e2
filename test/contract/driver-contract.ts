// One contract for every driver set (sim, lab, libvirt): a failover story told through the
// public interfaces only (World + FaultInjector + an optional client), so the simulated world
// cannot drift from what the real drivers do. Steps run in order on one cluster, because a real
// bring-up costs seconds; after a failed step the rest are skipped, not failed, so the report
// points at the first broken behaviour.
//
// Usage: driverContract('sim', async () => ({ world, faults, cluster, write, cleanup }))
// The cluster needs at least 3 nodes; the first three play primary / standby / standby.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FaultInjector, World } from '../../src/drivers/types.js';
import { type ErrorKind, PgopError } from '../../src/errors.js';
import type { PoolObservation, PostgresObservation } from '../../src/observe/types.js';
import type { ClusterSpec, NodeSpec } from '../../src/spec/types.js';
import { eventually as retryUntil } from '../helpers/eventually.js';

export interface ContractEnv {
  world: World;
  faults: FaultInjector;
  cluster: ClusterSpec;
  /** Commit `id` through pgpool, or on the named node as a client colocated with it (so it still
   *  reaches the node while the node's link is down). Resolves true when the commit was
   *  acknowledged in time, false when it was refused or hung. Optional: write checks are skipped
   *  without it. */
  write?: (via: 'pool' | string, id: number) => Promise<boolean>;
  /** How long to wait for asynchronous effects (replication catching up, pgpool health checks).
   *  0 checks once: right for the sim, where every effect is immediate. Default 15 s. */
  eventuallyMs?: number;
  cleanup(): Promise<void>;
}

export function driverContract(name: string, setup: () => Promise<ContractEnv>): void {
  describe(`driver contract: ${name}`, () => {
    let env: ContractEnv;
    let broken: string | null = null;

    beforeAll(async () => {
      env = await setup();
      if (env.cluster.nodes.length < 3)
        throw new Error('driver contract needs a cluster of at least 3 nodes');
    });
    afterAll(async () => {
      await env?.cleanup();
    });

    const step = (title: string, fn: () => Promise<void>, enabled: () => boolean = () => true) =>
      it(title, async (ctx) => {
        if (broken !== null) ctx.skip(`an earlier step failed: ${broken}`);
        if (!enabled()) ctx.skip('not applicable to this environment');
        try {
          await fn();
        } catch (err) {
          broken = title;
          throw err;
        }
      });

    // ---- helpers over the public interfaces ----
    const spec = () => env.cluster;
    const A = () => spec().nodes[0]!; // first primary
    const B = () => spec().nodes[1]!; // promoted on failover
    const C = () => spec().nodes[2]!; // promoted on switchover
    const trio = () => [A(), B(), C()];
    const hasPool = () => spec().pgpool.enabled;
    const canWrite = () => env.write !== undefined;

    const eventually = <T>(check: () => Promise<T>): Promise<T> =>
      retryUntil(check, env.eventuallyMs ?? 15_000, { stepMs: 100 });

    /** pgpool answers, routes to `primary` and has every backend up; `also` checks more of that look. */
    const poolRoutesTo = (primary: string, also: (o: PoolObservation) => void = () => {}) =>
      eventually(async () => {
        const o = await env.world.pool.observe(spec());
        expect(o.reachable).toBe(true);
        expect(o.primary).toBe(primary);
        for (const n of trio()) expect(o.backends.find((b) => b.name === n.name)?.status, n.name).toBe('up');
        also(o);
      });

    /** Probe a node that must be reachable with postgres readable. Right after its postgres
     *  stopped, a probe knows only that the port refuses; whether the node answers is told by the
     *  SSH look that probe starts in the background, so ask again until it has (bounded). */
    async function pg(node: NodeSpec): Promise<PostgresObservation> {
      const deadline = Date.now() + 15_000;
      let r = await env.world.postgres.probe(spec(), node);
      while (!r.reachable && Date.now() < deadline) {
        await new Promise((res) => setTimeout(res, 100));
        r = await env.world.postgres.probe(spec(), node);
      }
      expect(r.reachable, `${node.name} reachable (${r.error ?? ''})`).toBe(true);
      expect(r.postgres, `${node.name} postgres readable`).not.toBeNull();
      return r.postgres!;
    }

    async function write(via: 'pool' | NodeSpec, id: number): Promise<boolean> {
      return env.write!(via === 'pool' ? 'pool' : via.name, id);
    }

    async function rejectsWith(p: Promise<unknown>, kind: ErrorKind): Promise<void> {
      const err = await p.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, 'expected the call to fail with a PgopError').toBeInstanceOf(PgopError);
      expect((err as PgopError).kind, (err as Error).message).toBe(kind);
      expect((err as PgopError).message).toMatch(/^cannot \S+/);
    }

    async function expectStreaming(standby: NodeSpec, primary: NodeSpec, timeline: number): Promise<void> {
      await eventually(async () => {
        const s = await pg(standby);
        expect(s.running).toBe(true);
        expect(s.inRecovery).toBe(true);
        expect(s.upstream).toBe(primary.name);
        expect(s.streaming).toBe(true);
        expect(s.timeline).toBe(timeline);
        const p = await pg(primary);
        expect(p.replicas.find((r) => r.name === standby.name)?.state).toBe('streaming');
      });
    }

    /** The standby has replayed everything the primary has. */
    async function expectCaughtUp(standby: NodeSpec, primary: NodeSpec): Promise<void> {
      await eventually(async () => {
        const p = await pg(primary);
        const s = await pg(standby);
        expect(s.lsn).toBeGreaterThanOrEqual(p.lsn);
      });
    }

    // ---- the story ----

    step('ensureMachine creates and starts every node, idempotently', async () => {
      for (const n of trio()) {
        await env.world.provider.ensureMachine(spec(), n);
        await env.world.provider.ensureMachine(spec(), n);
      }
      const machines = await env.world.provider.observeMachines(spec());
      for (const n of trio()) expect(machines[n.name]?.state, n.name).toBe('running');
    });

    step('ensureInstalled prepares every node, idempotently; no data yet', async () => {
      for (const n of trio()) {
        await eventually(() => env.world.postgres.ensureInstalled(spec(), n)); // machines may still boot
        await env.world.postgres.ensureInstalled(spec(), n);
        const r = await env.world.postgres.probe(spec(), n);
        expect(r.reachable).toBe(true);
        if (r.postgres) {
          expect(r.postgres.initialized).toBe(false);
          expect(r.postgres.running).toBe(false);
        }
      }
    });

    step('ensurePrimary: a configured writable primary on timeline 1, idempotently', async () => {
      await env.world.postgres.ensurePrimary(spec(), A(), [B().name, C().name]);
      await env.world.postgres.ensurePrimary(spec(), A(), [B().name, C().name]);
      const p = await pg(A());
      expect(p).toMatchObject({
        initialized: true,
        running: true,
        inRecovery: false,
        timeline: 1,
        upstream: null,
      });
      expect(p.lsn).toBeGreaterThan(0);
      expect(p.configHash).toBe(env.world.postgres.desiredConfigHash(spec(), A()));
      expect(env.world.postgres.desiredConfigHash(spec(), A())).toBe(
        env.world.postgres.desiredConfigHash(spec(), A()),
      );
    });

    step('ensureStandby: the others stream from the primary, which lists them as replicas', async () => {
      for (const n of [B(), C()]) {
        await env.world.postgres.ensureStandby(spec(), n, A());
        await env.world.postgres.ensureStandby(spec(), n, A());
      }
      for (const n of [B(), C()]) {
        await expectStreaming(n, A(), 1);
        expect((await pg(n)).configHash).toBe(env.world.postgres.desiredConfigHash(spec(), n));
      }
    });

    step("ensurePrimary on a standby's data is refused for good (data is never re-initialised)", async () => {
      await rejectsWith(env.world.postgres.ensurePrimary(spec(), B(), []), 'terminal');
      await expectStreaming(B(), A(), 1);
    });

    step('ensureSlots is idempotent and keeps the standbys streaming', async () => {
      await env.world.postgres.ensureSlots(spec(), A(), [B().name, C().name]);
      await env.world.postgres.ensureSlots(spec(), A(), [B().name, C().name]);
      await expectStreaming(B(), A(), 1);
      await expectStreaming(C(), A(), 1);
    });

    step('sync standbys: quorum reported, an acknowledged write is on a standby', async () => {
      await env.world.postgres.ensureSyncStandbys(spec(), A(), [B().name, C().name], 1);
      await env.world.postgres.ensureSyncStandbys(spec(), A(), [B().name, C().name], 1);
      await eventually(async () => {
        const p = await pg(A());
        expect(p.syncStandbyNames).not.toBe('');
        for (const n of [B(), C()]) {
          expect(['quorum', 'sync', 'potential']).toContain(
            p.replicas.find((r) => r.name === n.name)?.syncState,
          );
        }
      });
      if (canWrite()) expect(await write(A(), 1)).toBe(true);
      const { lsn } = await pg(A());
      // ANY 1: at least one standby had flushed the commit when it was acknowledged.
      await eventually(async () => {
        const p = await pg(A());
        expect(Math.max(...p.replicas.map((r) => r.flushLsn))).toBeGreaterThanOrEqual(lsn);
      });
      await expectCaughtUp(B(), A());
      await expectCaughtUp(C(), A());
    });

    step(
      'ensurePool routes to the primary, idempotently; every backend up',
      async () => {
        await env.world.pool.ensurePool(spec(), A().name);
        await env.world.pool.ensurePool(spec(), A().name);
        await poolRoutesTo(A().name);
        if (canWrite()) expect(await write('pool', 2)).toBe(true);
      },
      hasPool,
    );

    step('back to async; a partitioned primary still takes writes from colocated clients', async () => {
      await env.world.postgres.ensureSyncStandbys(spec(), A(), [], 0);
      expect((await pg(A())).syncStandbyNames).toBe('');
      if (canWrite()) expect(await write(A(), 3)).toBe(true);
      await expectCaughtUp(B(), A());
      await expectCaughtUp(C(), A());
      await env.faults.partition(spec(), A());
      const r = await env.world.postgres.probe(spec(), A());
      expect(r.reachable).toBe(false);
      expect(r.error).toBeTruthy();
      // The split-brain risk fencing exists for: commit 4 lives only on the isolated old primary.
      if (canWrite()) expect(await write(A(), 4)).toBe(true);
    });

    step('postgres operations on an unreachable node fail transiently', async () => {
      await rejectsWith(env.world.postgres.promote(spec(), A()), 'transient');
      await rejectsWith(env.world.postgres.ensureConfigured(spec(), A()), 'transient');
      await rejectsWith(env.world.postgres.ensureSlots(spec(), A(), [B().name]), 'transient');
      // A standby needs its primary reachable.
      await rejectsWith(env.world.postgres.ensureStandby(spec(), C(), A()), 'transient');
    });

    step('fenceMachine powers off a partitioned node, idempotently', async () => {
      await env.world.provider.fenceMachine(spec(), A());
      await env.world.provider.fenceMachine(spec(), A());
      expect((await env.world.provider.observeMachines(spec()))[A().name]?.state).toBe('stopped');
      await env.faults.heal(spec(), A());
      const r = await env.world.postgres.probe(spec(), A());
      expect(r.reachable).toBe(false);
      // the fence's pool part (as the fenceNode actor runs it): cut the pool host off A and
      // switch pgpool to the successor B (still a standby); never throws, and the cut is undone
      // when A is attached again (the ensurePool steps below)
      if (hasPool()) await env.world.pool.detachBackend?.(spec(), A(), B());
    });

    step('promote: the standby becomes a writable primary on the next timeline, idempotently', async () => {
      await env.world.postgres.promote(spec(), B());
      await env.world.postgres.promote(spec(), B());
      const p = await pg(B());
      expect(p).toMatchObject({ running: true, inRecovery: false, timeline: 2, upstream: null });
      await env.world.postgres.ensureSyncStandbys(spec(), B(), [], 0);
      if (canWrite()) expect(await write(B(), 5)).toBe(true);
      // pgpool (passive), switched to B at the fence, routes there (the promoteStandby actor's
      // routeToPrimary has nothing left to do) and says so
      if (hasPool() && env.world.pool.routeToPrimary) {
        await env.world.pool.routeToPrimary(spec(), B(), Promise.resolve());
        await eventually(async () => expect((await env.world.pool.observe(spec())).primary).toBe(B().name));
        if (canWrite()) expect(await write('pool', 16)).toBe(true);
      }
    });

    step('the remaining standby is repointed to the new primary', async () => {
      await env.world.postgres.ensureSlots(spec(), B(), [A().name, C().name]);
      await env.world.postgres.ensureStandby(spec(), C(), B());
      await expectStreaming(C(), B(), 2);
      await expectCaughtUp(C(), B());
    });

    step('a restarted fenced primary stays down until told; ensureStandby rewinds it', async () => {
      await env.world.provider.ensureMachine(spec(), A());
      expect((await env.world.provider.observeMachines(spec()))[A().name]?.state).toBe('running');
      const old = await eventually(() => pg(A()));
      expect(old.running).toBe(false); // postgres never starts at boot: no primary comes back by itself
      await env.world.postgres.ensureStandby(spec(), A(), B());
      await expectStreaming(A(), B(), 2);
      await expectCaughtUp(A(), B());
      if (canWrite()) expect(await write(A(), 6)).toBe(false); // a standby is read-only
    });

    step('switchover: demote (idempotent, loses nothing), promote another, repoint the rest', async () => {
      if (canWrite()) expect(await write(B(), 7)).toBe(true);
      await expectCaughtUp(C(), B());
      const before = await pg(B());
      await env.world.postgres.demote(spec(), B());
      await env.world.postgres.demote(spec(), B());
      expect((await pg(B())).running).toBe(false);
      await env.world.postgres.promote(spec(), C());
      const p = await pg(C());
      expect(p).toMatchObject({ running: true, inRecovery: false, timeline: 3 });
      expect(p.lsn).toBeGreaterThanOrEqual(before.lsn);
      await env.world.postgres.ensureSyncStandbys(spec(), C(), [], 0);
      await env.world.postgres.ensureSlots(spec(), C(), [A().name, B().name]);
      await env.world.postgres.ensureStandby(spec(), B(), C());
      await env.world.postgres.ensureStandby(spec(), A(), C());
      await expectStreaming(B(), C(), 3);
      await expectStreaming(A(), C(), 3);
    });

    step(
      'ensurePool follows the new primary',
      async () => {
        await env.world.pool.ensurePool(spec(), C().name);
        await poolRoutesTo(C().name, (o) =>
          expect(o.backends.find((b) => b.name === C().name)?.role).toBe('primary'),
        );
        // a client reconnects: pgpool may end a session it opens while it still attaches the
        // standbys ensurePool brought back (pgpool 4.3's switching window, standby-death.md)
        if (canWrite()) await eventually(async () => expect(await write('pool', 8)).toBe(true));
      },
      hasPool,
    );

    step('ensureConfigured leaves every node with the desired config hash', async () => {
      for (const n of trio()) {
        await env.world.postgres.ensureConfigured(spec(), n);
        expect((await pg(n)).configHash).toBe(env.world.postgres.desiredConfigHash(spec(), n));
      }
    });

    step(
      'scale-in: a node that left the spec is listed by the provider, leaves pgpool, ' +
        'and once deleted holds no slot',
      async () => {
        // A (a standby of C now) leaves the spec.
        const smaller: ClusterSpec = { ...spec(), nodes: spec().nodes.filter((n) => n.name !== A().name) };
        expect(Object.keys(await env.world.provider.observeMachines(smaller))).not.toContain(A().name);
        const listed = await env.world.provider.listMachines(smaller);
        expect(listed[A().name], 'listed though the spec no longer names it').toMatchObject({
          state: 'running',
          address: A().address,
        });
        for (const n of [B(), C()]) expect(listed[n.name]?.state, n.name).toBe('running');
        const slot = env.world.postgres.slotName(A().name);
        if (spec().replication.slots) expect((await pg(C())).slots).toContain(slot);
        if (hasPool()) {
          await env.world.pool.ensurePool(smaller, C().name);
          await eventually(async () => {
            const o = await env.world.pool.observe(smaller);
            expect(o.primary).toBe(C().name);
            expect(o.backends.map((b) => b.name)).not.toContain(A().name);
            expect(o.backends.map((b) => b.name)).not.toContain(A().address);
          });
        }
        await env.world.provider.fenceMachine(smaller, A());
        await env.world.provider.deleteMachine(smaller, A());
        expect(
          (await env.world.provider.listMachines(smaller))[A().name],
          'gone from the listing',
        ).toBeUndefined();
        await eventually(async () => {
          await env.world.postgres.ensureSlots(smaller, C(), []);
          expect((await pg(C())).slots ?? []).not.toContain(slot);
        });
        await expectStreaming(B(), C(), 3);
      },
    );

    step('deleteMachine removes every machine, idempotently; then the cluster resources', async () => {
      if (hasPool()) await env.world.pool.deletePool(spec());
      for (const n of trio()) {
        await env.world.provider.fenceMachine(spec(), n);
        await env.world.provider.deleteMachine(spec(), n);
        await env.world.provider.deleteMachine(spec(), n);
      }
      const machines = await env.world.provider.observeMachines(spec());
      for (const n of trio()) expect(machines[n.name]?.state, n.name).toBe('missing');
      if (spec().nodes.length === 3) await env.world.provider.deleteClusterResources(spec());
    });
  });
}
