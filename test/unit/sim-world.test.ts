// Sim-specific behaviour the contract cannot reach through the public interfaces: divergence,
// synchronous quorum, split brain and the invariant helpers the property tests rely on.

import fc from 'fast-check';
import { beforeEach, describe, expect, it } from 'vitest';
import { SimClock } from '../../src/drivers/sim/clock.js';
import { createSimWorld, desiredConfigHash, type SimDrivers } from '../../src/drivers/sim/drivers.js';
import { syncStandbyNamesValue as formatSyncStandbyNames } from '../../src/drivers/postgres/sync-names.js';
import { lsnOf, slotNameFor, SimWorld } from '../../src/drivers/sim/world.js';
import { PgopError } from '../../src/errors.js';
import type { ClusterSpec, NodeSpec } from '../../src/spec/types.js';
import { simSpec } from '../helpers/sim-spec.js';

let spec: ClusterSpec;
let clock: SimClock;
let sim: SimWorld;
let d: SimDrivers;
let A: NodeSpec, B: NodeSpec, C: NodeSpec;

const probe = async (n: NodeSpec) => (await d.postgres.probe(spec, n)).postgres!;
const direct = (n: NodeSpec, id: number) => sim.write(spec.name, { node: n.name }, id);

async function failsWith(p: Promise<unknown>, kind: string, message?: RegExp) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(PgopError);
  expect((err as PgopError).kind).toBe(kind);
  expect((err as PgopError).message).toMatch(/^cannot \S+ /);
  if (message) expect((err as PgopError).message).toMatch(message);
}

/** Primary A, streaming standbys B and C, pgpool routing to A. */
async function bringUp(s = simSpec()) {
  spec = s;
  [A, B, C] = [spec.nodes[0]!, spec.nodes[1]!, spec.nodes[2]!];
  for (const n of [A, B, C]) {
    await d.provider.ensureMachine(spec, n);
    await d.postgres.ensureInstalled(spec, n);
  }
  await d.postgres.ensurePrimary(spec, A, [B.name, C.name]);
  await d.postgres.ensureStandby(spec, B, A);
  await d.postgres.ensureStandby(spec, C, A);
  await d.pool.ensurePool(spec, A.name);
}

/** Fence the primary A, promote `to`, repoint the third node: the operator's failover. */
async function failover(to: NodeSpec, other: NodeSpec) {
  await d.provider.fenceMachine(spec, A);
  await d.postgres.promote(spec, to);
  await d.postgres.ensureSlots(spec, to, [A.name, other.name]);
  await d.postgres.ensureStandby(spec, other, to);
}

beforeEach(() => {
  clock = new SimClock(1_000);
  sim = new SimWorld({ clock });
  d = createSimWorld(sim);
});

describe('WAL and replication', () => {
  it('LSN = 0x1000000 + 64 * log length; standbys copy the primary log on every call', async () => {
    await bringUp();
    expect((await probe(A)).lsn).toBe(0x1000000);
    expect(direct(A, 1).acked).toBe(true);
    expect(sim.write(spec.name, 'pool', 2)).toMatchObject({ acked: true, node: A.name, sync: false });
    expect(sim.nodeLog(spec.name, A.name)).toEqual([1, 2]);
    expect(sim.nodeLog(spec.name, B.name)).toEqual([1, 2]);
    expect((await probe(C)).lsn).toBe(lsnOf(2));
    expect(lsnOf(2)).toBe(0x1000000 + 128);
    const replicas = (await probe(A)).replicas;
    expect(replicas.map((r) => [r.name, r.syncState, r.replayLsn])).toEqual([
      [B.name, 'async', lsnOf(2)],
      [C.name, 'async', lsnOf(2)],
    ]);
  });

  it('a partitioned standby stops streaming and catches up once healed', async () => {
    await bringUp();
    sim.partition(spec.name, B.name);
    direct(A, 1);
    expect(sim.nodeLog(spec.name, B.name)).toEqual([]);
    expect((await probe(A)).replicas.map((r) => r.name)).toEqual([C.name]);
    sim.heal(spec.name, B.name);
    expect(sim.nodeLog(spec.name, B.name)).toEqual([1]);
    expect((await probe(B)).streaming).toBe(true);
  });

  it('a lagging standby stays connected but receives nothing until it recovers', async () => {
    await bringUp();
    sim.setLagging(spec.name, B.name, true);
    direct(A, 1);
    const b = await probe(B);
    expect(b.streaming).toBe(true);
    expect(b.lsn).toBe(lsnOf(0));
    expect((await probe(A)).replicas.find((r) => r.name === B.name)?.flushLsn).toBe(lsnOf(0));
    sim.setLagging(spec.name, B.name, false);
    expect((await probe(B)).lsn).toBe(lsnOf(1));
  });

  it('an old primary with unreplicated commits is rewound to the common prefix', async () => {
    await bringUp();
    direct(A, 1);
    sim.partition(spec.name, A.name);
    expect(direct(A, 2).acked).toBe(true); // only A has it
    await failover(B, C);
    direct(B, 3);
    await d.provider.ensureMachine(spec, A);
    sim.heal(spec.name, A.name);
    expect(sim.nodeLog(spec.name, A.name)).toEqual([1, 2]);
    await d.postgres.ensureStandby(spec, A, B);
    expect(sim.nodeLog(spec.name, A.name)).toEqual([1, 3]);
    expect(await probe(A)).toMatchObject({
      streaming: true,
      upstream: B.name,
      timeline: 2,
      inRecovery: true,
    });
    expect(sim.journal(spec.name).some((l) => l.includes(`rewind standby ${A.name}`))).toBe(true);
  });

  it('a standby whose upstream lost commits stops streaming until ensureStandby rewinds it', async () => {
    await bringUp();
    sim.setLagging(spec.name, B.name, true);
    direct(A, 1); // A and C have it, B does not
    await d.provider.fenceMachine(spec, A);
    await d.postgres.promote(spec, B);
    await d.postgres.ensureSlots(spec, B, [A.name, C.name]);
    await d.provider.ensureMachine(spec, A);
    await d.postgres.ensureStandby(spec, A, B); // rewound: drops 1
    expect(sim.nodeLog(spec.name, A.name)).toEqual([]);
    // C still points at A; once A is a primary again C holds a commit A lacks: diverged.
    await d.postgres.ensureSlots(spec, A, [C.name]);
    await d.postgres.promote(spec, A);
    const c = await probe(C);
    expect(c.upstream).toBe(A.name);
    expect(c.streaming).toBe(false);
    expect(c.receiveLsn).toBe(0);
    direct(A, 2);
    expect(sim.nodeLog(spec.name, C.name)).toEqual([1]);
    await d.postgres.ensureStandby(spec, C, A);
    expect(sim.nodeLog(spec.name, C.name)).toEqual([2]);
    expect((await probe(C)).streaming).toBe(true);
  });

  it("a standby follows its upstream's promotion onto the new timeline", async () => {
    await bringUp();
    direct(A, 1);
    await d.postgres.demote(spec, A); // clean: everything shipped, no rewind needed later
    await d.postgres.promote(spec, B);
    await d.postgres.ensureSlots(spec, B, [A.name]);
    await d.postgres.ensureStandby(spec, A, B);
    expect(await probe(A)).toMatchObject({ streaming: true, timeline: 2 });
    expect(sim.journal(spec.name).some((l) => l.includes(`repoint standby ${A.name}`))).toBe(true);
    await d.postgres.promote(spec, A); // C still points at A and holds a prefix of its log
    expect(await probe(C)).toMatchObject({ streaming: true, upstream: A.name, timeline: 3 });
  });

  it('data from another initdb cannot be rewound: ensureStandby clones afresh', async () => {
    await bringUp();
    direct(A, 1);
    sim.vanish(spec.name, A.name);
    await d.provider.ensureMachine(spec, A);
    await d.postgres.ensureInstalled(spec, A);
    await d.postgres.ensurePrimary(spec, A, [B.name]); // a new cluster: new system identifier
    direct(A, 2);
    expect((await probe(B)).streaming).toBe(false);
    await d.postgres.ensureStandby(spec, B, A);
    expect(sim.nodeLog(spec.name, B.name)).toEqual([2]);
    expect(sim.journal(spec.name).some((l) => l.includes(`clone standby ${B.name}`))).toBe(true);
  });

  it('with slots on, a standby streams only once its slot exists on the primary', async () => {
    await bringUp();
    await failover(B, C); // slots for A and C made on B
    expect((await probe(C)).streaming).toBe(true);
    expect(sim.inspect(spec.name, B.name)!.pg.slots).toEqual([slotNameFor(A.name), slotNameFor(C.name)]);
    await d.postgres.ensureSlots(spec, B, []); // in spec: kept
    expect(sim.inspect(spec.name, B.name)!.pg.slots).toHaveLength(2);
    const smaller = simSpec({ nodes: [spec.nodes[1]!, spec.nodes[2]!] });
    await d.postgres.ensureSlots(smaller, B, [C.name]); // A left the spec: its slot goes
    expect(sim.inspect(spec.name, B.name)!.pg.slots).toEqual([slotNameFor(C.name)]);
    // Without its slot (never created on the new primary) a repointed node does not stream.
    const s = sim.state(spec.name).nodes.get(B.name)!;
    s.pg.slots = [];
    expect((await probe(C)).streaming).toBe(false);
    await d.postgres.ensureSlots(spec, B, [C.name]);
    expect((await probe(C)).streaming).toBe(true);
  });

  it('slot names are valid postgres identifiers', () => {
    expect(slotNameFor('db-01.lab')).toBe('db_01_lab');
  });
});

describe('synchronous replication', () => {
  it('a write is acked only when a quorum of the named standbys has flushed it', async () => {
    await bringUp();
    await d.postgres.ensureSyncStandbys(spec, A, [B.name, C.name], 2);
    expect((await probe(A)).syncStandbyNames).toBe('ANY 2 ("pg02", "pg03")');
    expect((await probe(A)).replicas.map((r) => r.syncState)).toEqual(['quorum', 'quorum']);
    expect(direct(A, 1)).toMatchObject({ acked: true, sync: true });
    sim.kill(spec.name, C.name);
    const hung = direct(A, 2);
    expect(hung).toMatchObject({ acked: false, node: A.name, sync: true });
    expect(hung.reason).toMatch(/synchronous/);
    expect(sim.nodeLog(spec.name, A.name)).toEqual([1, 2]); // still in the primary's local WAL
    expect(sim.nodeLog(spec.name, B.name)).toEqual([1, 2]); // streamed, even though not acked
    await d.postgres.ensureSyncStandbys(spec, A, [B.name, C.name], 1);
    expect(direct(A, 3)).toMatchObject({ acked: true, sync: true });
    sim.setLagging(spec.name, B.name, true); // a lagging named standby does not count
    expect(direct(A, 4).acked).toBe(false);
    expect(sim.ackedWrites(spec.name)).toEqual([
      { id: 1, node: A.name, timeline: 1, sync: true, at: 1_000 },
      { id: 3, node: A.name, timeline: 1, sync: true, at: 1_000 },
    ]);
  });

  it('sync names set before the standbys stream make every write hang (lab notes)', async () => {
    spec = simSpec();
    [A, B, C] = [spec.nodes[0]!, spec.nodes[1]!, spec.nodes[2]!];
    await d.provider.ensureMachine(spec, A);
    await d.postgres.ensureInstalled(spec, A);
    await d.postgres.ensurePrimary(spec, A, []);
    await d.postgres.ensureSyncStandbys(spec, A, [B.name], 1); // accepted, as postgres does
    expect(direct(A, 1)).toMatchObject({ acked: false, sync: true });
    await d.postgres.ensureSyncStandbys(spec, A, [], 0);
    expect(direct(A, 2)).toMatchObject({ acked: true, sync: false });
  });

  it('a promoted standby starts async: its auto.conf was rewritten at ensureStandby', async () => {
    await bringUp();
    await d.postgres.ensureSyncStandbys(spec, A, [B.name, C.name], 1);
    await failover(B, C);
    expect((await probe(B)).syncStandbyNames).toBe('');
  });

  it('rejects a quorum below 1 as bad input', async () => {
    await bringUp();
    await failsWith(d.postgres.ensureSyncStandbys(spec, A, [B.name], 0), 'terminal');
  });
});

describe('split brain and the invariant helpers', () => {
  it('a partitioned primary accepts colocated writes; pgpool cannot reach it', async () => {
    await bringUp();
    sim.partition(spec.name, A.name);
    expect(direct(A, 1)).toMatchObject({ acked: true, node: A.name });
    expect(sim.write(spec.name, 'pool', 2)).toMatchObject({
      acked: false,
      reason: `pgpool cannot reach ${A.name}`,
    });
    expect(sim.nodeLog(spec.name, B.name)).toEqual([]);
    // pgpool detaches nothing by itself (no health checks): the node stays up until pgop detaches it
    const pool = await d.pool.observe(spec);
    expect(pool.backends.find((b) => b.name === A.name)).toEqual({
      name: A.name,
      status: 'up',
      role: 'primary',
    });

    expect((await d.postgres.probe(spec, A)).error).toBe('unreachable: link down');
  });

  it('writablePrimaries counts partitioned primaries and drops fenced ones', async () => {
    await bringUp();
    expect(sim.writablePrimaries(spec.name)).toEqual([A.name]);
    sim.partition(spec.name, A.name);
    await d.postgres.promote(spec, B); // without fencing: split brain
    expect(sim.writablePrimaries(spec.name)).toEqual([A.name, B.name]);
    await d.provider.fenceMachine(spec, A); // out of band: works through the partition
    expect(sim.writablePrimaries(spec.name)).toEqual([B.name]);
    expect((await d.provider.observeMachines(spec))[A.name]).toEqual({
      state: 'stopped',
      detail: 'domain shut off (fenced)',
    });
  });

  it('lostSyncAcks: a promotion of the standby lacking an acked commit loses it', async () => {
    await bringUp();
    await d.postgres.ensureSyncStandbys(spec, A, [B.name, C.name], 1);
    sim.setLagging(spec.name, C.name, true);
    expect(direct(A, 1)).toMatchObject({ acked: true, sync: true }); // on A and B only
    await d.provider.fenceMachine(spec, A);
    expect(sim.writablePrimaries(spec.name)).toEqual([]);
    expect(sim.lostSyncAcks(spec.name)).toEqual([]); // A's disk and B still hold it
    await d.postgres.promote(spec, C); // the wrong candidate
    expect(sim.lostSyncAcks(spec.name)).toEqual([1]);
  });

  it('lostSyncAcks: promoting the standby that holds every ack loses nothing', async () => {
    await bringUp();
    await d.postgres.ensureSyncStandbys(spec, A, [B.name, C.name], 1);
    sim.setLagging(spec.name, C.name, true);
    direct(A, 1);
    await failover(B, C);
    expect(sim.lostSyncAcks(spec.name)).toEqual([]);
    expect(sim.nodeLog(spec.name, C.name)).toEqual([]); // still lagging
    sim.setLagging(spec.name, C.name, false);
    expect(sim.nodeLog(spec.name, C.name)).toEqual([1]);
  });

  it('lostSyncAcks: with no primary, an ack is lost once no surviving data holds it', async () => {
    await bringUp();
    await d.postgres.ensureSyncStandbys(spec, A, [B.name], 1);
    sim.setLagging(spec.name, C.name, true);
    direct(A, 1);
    sim.kill(spec.name, A.name);
    sim.vanish(spec.name, B.name);
    expect(sim.lostSyncAcks(spec.name)).toEqual([]); // A's data dir has it
    sim.vanish(spec.name, A.name);
    expect(sim.lostSyncAcks(spec.name)).toEqual([1]);
  });

  it('async acks never count as lost', async () => {
    await bringUp();
    sim.setLagging(spec.name, B.name, true);
    sim.setLagging(spec.name, C.name, true);
    expect(direct(A, 1)).toMatchObject({ acked: true, sync: false });
    await failover(B, C);
    expect(sim.lostSyncAcks(spec.name)).toEqual([]);
  });
});

describe('driver preconditions', () => {
  it('postgres operations on stopped, missing or partitioned nodes fail transiently', async () => {
    await bringUp();
    sim.stop(spec.name, B.name);
    await failsWith(d.postgres.ensureConfigured(spec, B), 'transient', /machine not running/);
    sim.partition(spec.name, C.name);
    await failsWith(d.postgres.promote(spec, C), 'transient', /link down/);
    sim.vanish(spec.name, C.name);
    await failsWith(d.postgres.ensureInstalled(spec, C), 'transient', /machine missing/);
    expect(await d.postgres.probe(spec, C)).toEqual({
      reachable: false,
      postgres: null,
      error: 'machine missing',
    });
  });

  it('ensureStandby needs a reachable, running, writable primary', async () => {
    await bringUp();
    await failsWith(d.postgres.ensureStandby(spec, C, B), 'transient', /not writable/);
    sim.kill(spec.name, A.name);
    await failsWith(d.postgres.ensureStandby(spec, C, A), 'transient', /postgres not running/);
    sim.stop(spec.name, A.name);
    await failsWith(d.postgres.ensureStandby(spec, C, A), 'transient', /machine not running/);
    await expect(d.postgres.ensureStandby(spec, C, C)).rejects.toMatchObject({ kind: 'internal' });
  });

  it('promote: idempotent on a primary, refused on a stopped standby', async () => {
    await bringUp();
    await d.postgres.promote(spec, A);
    expect((await probe(A)).timeline).toBe(1);
    sim.kill(spec.name, B.name);
    await failsWith(d.postgres.promote(spec, B), 'transient', /not running/);
  });

  it('ensurePrimary never re-inits: terminal on standby data, restarts a killed primary', async () => {
    await bringUp();
    await failsWith(d.postgres.ensurePrimary(spec, B, []), 'terminal', /standby/);
    direct(A, 1);
    sim.kill(spec.name, A.name);
    await d.postgres.ensurePrimary(spec, A, [B.name, C.name]);
    expect(await probe(A)).toMatchObject({ running: true, inRecovery: false, timeline: 1, lsn: lsnOf(1) });
  });

  it('a fresh machine needs installing before postgres: a vanished node starts from nothing', async () => {
    await bringUp();
    sim.vanish(spec.name, C.name);
    expect((await d.provider.observeMachines(spec))[C.name]).toEqual({
      state: 'missing',
      detail: 'no such domain',
    });
    await d.provider.ensureMachine(spec, C);
    expect(await d.postgres.probe(spec, C)).toEqual({
      reachable: true,
      postgres: null,
      error: 'postgres not installed',
    });
    await failsWith(d.postgres.ensureStandby(spec, C, A), 'transient', /not installed/);
    await d.postgres.ensureInstalled(spec, C);
    expect((await probe(C)).initialized).toBe(false);
    await d.postgres.ensureStandby(spec, C, A);
    expect((await probe(C)).streaming).toBe(true);
  });

  it('machines boot with postgres down; destroy and stop keep the data', async () => {
    await bringUp();
    direct(A, 1);
    sim.destroyDomain(spec.name, B.name);
    expect((await d.provider.observeMachines(spec))[B.name]).toEqual({
      state: 'stopped',
      detail: 'domain shut off (destroyed)',
    });
    sim.start(spec.name, B.name);
    expect(await probe(B)).toMatchObject({
      running: false,
      initialized: true,
      inRecovery: true,
      upstream: A.name,
      lsn: lsnOf(1),
    });
    await d.postgres.ensureStandby(spec, B, A);
    expect((await probe(B)).streaming).toBe(true);
  });

  it('demote shuts a primary down after shipping its WAL; a no-op on standbys', async () => {
    await bringUp();
    direct(A, 1);
    await d.postgres.demote(spec, A);
    await d.postgres.demote(spec, B);
    expect((await probe(A)).running).toBe(false);
    expect((await probe(B)).running).toBe(true);
    expect(sim.nodeLog(spec.name, B.name)).toEqual([1]);
    expect(sim.writablePrimaries(spec.name)).toEqual([]);
  });

  it('config drift shows in the probe and ensureConfigured repairs it', async () => {
    await bringUp();
    sim.driftConfig(spec.name, B.name);
    expect((await probe(B)).configHash).not.toBe(desiredConfigHash(spec, B));
    await d.postgres.ensureConfigured(spec, B);
    expect((await probe(B)).configHash).toBe(desiredConfigHash(spec, B));
  });

  it('desiredConfigHash follows the config-shaping spec parts only, regardless of key order', () => {
    const s = simSpec();
    const n = s.nodes[0]!;
    const h = desiredConfigHash(s, n);
    const reordered = simSpec({
      postgres: { parameters: Object.fromEntries(Object.entries(s.postgres.parameters).reverse()) },
    });
    expect(desiredConfigHash(reordered, n)).toBe(h);
    expect(desiredConfigHash(simSpec({ postgres: { parameters: { work_mem: '8MB' } } }), n)).not.toBe(h);
    expect(desiredConfigHash(simSpec({ replication: { slots: false } }), n)).not.toBe(h);
    expect(desiredConfigHash(simSpec({ roles: [] }), n)).toBe(h);
    expect(desiredConfigHash(s, s.nodes[1]!)).not.toBe(h);
  });

  it('formats synchronous_standby_names as postgres stores it', () => {
    expect(formatSyncStandbyNames([], 0)).toBe('');
    expect(formatSyncStandbyNames(['a-1', 'b'], 1)).toBe('ANY 1 ("a-1", "b")');
  });

  it(
    'reports synchronous_standby_names as the real driver sets it: ' + 'names sorted, quorum clamped',
    async () => {
      await bringUp();
      await d.postgres.ensureSyncStandbys(spec, A, [C.name, B.name], 5);
      expect((await probe(A)).syncStandbyNames).toBe('ANY 2 ("pg02", "pg03")');
    },
  );

  it('deleteClusterResources waits for every machine to go', async () => {
    await bringUp();
    await failsWith(d.provider.deleteClusterResources(spec), 'transient', /machines still exist/);
  });
});

describe('pgpool', () => {
  it('a crashed pgpool is unreachable and refuses writes until ensurePool restarts it', async () => {
    await bringUp();
    sim.crashPool(spec.name);
    expect(await d.pool.observe(spec)).toMatchObject({
      reachable: false,
      primary: null,
      error: 'pgpool not running',
    });
    expect(sim.write(spec.name, 'pool', 1)).toMatchObject({ acked: false, reason: 'pgpool not running' });
    await d.pool.ensurePool(spec, A.name);
    expect(sim.write(spec.name, 'pool', 2).acked).toBe(true);
  });

  it('holds a dead standby up until detached; attaches it once it answers, not failed', async () => {
    await bringUp();
    const status = async (n: string) =>
      (await d.pool.observe(spec)).backends.find((b) => b.name === n)?.status;
    sim.kill(spec.name, C.name);
    expect(await status(C.name)).toBe('up');
    await d.pool.ensurePool(spec, A.name, [C.name]);
    expect(await status(C.name)).toBe('down');
    // not failed any more, but not answering: held down
    await d.pool.ensurePool(spec, A.name, []);
    expect(await status(C.name)).toBe('down');
    await d.postgres.ensureConfigured(spec, C);
    await d.pool.ensurePool(spec, A.name, []);
    expect(await status(C.name)).toBe('up');
  });

  it('routes to its configured primary only: stale routing after a failover fails writes', async () => {
    await bringUp();
    await failover(B, C);
    expect(sim.write(spec.name, 'pool', 1)).toMatchObject({ acked: false });
    await d.pool.ensurePool(spec, B.name);
    expect(sim.write(spec.name, 'pool', 2)).toMatchObject({ acked: true, node: B.name });
    const o = await d.pool.observe(spec);
    expect(o.backends.map((b) => [b.name, b.status, b.role])).toEqual([
      [A.name, 'down', 'unknown'],
      [B.name, 'up', 'primary'],
      [C.name, 'up', 'standby'],
    ]);
  });
});

describe('pool hosts (spec.pgpool.hosts)', () => {
  const HOSTS = [
    { name: 'pool-a', address: '10.0.0.21' },
    { name: 'pool-b', address: '10.0.0.22' },
  ];
  const hostLooks = async () => (await d.pool.observe(spec)).hosts!;
  const look = async (name: string) => (await hostLooks()).find((h) => h.name === name)!;

  /** bringUp with pool hosts (made with the first node), the virtual IP on pool-a. */
  async function bringUpHosts() {
    await bringUp(simSpec({ pgpool: { hosts: HOSTS } }));
    await d.pool.moveVip!(spec, 'pool-a');
  }

  it('each host reports its own pgpool; a new operator sees the address from its second look', async () => {
    await bringUpHosts();
    expect((await hostLooks()).map((h) => [h.name, h.port, h.holdsVip, h.machine, h.primary])).toEqual([
      ['pool-a', 'open', true, 'running', A.name],
      ['pool-b', 'open', false, 'running', A.name],
    ]);
    expect(sim.write(spec.name, 'pool', 1)).toMatchObject({ acked: true, node: A.name });
    // the SSH read runs beside the look: its answer shows from the next one
    d = createSimWorld(sim);
    expect((await hostLooks()).map((h) => h.holdsVip)).toEqual([null, null]);
    expect((await hostLooks()).map((h) => h.holdsVip)).toEqual([true, false]);
  });

  it("a killed pgpool's port refuses; a cut-off host's is silent, looks counted, holding kept", async () => {
    await bringUpHosts();
    await hostLooks();
    await d.faults.kill(spec, 'pool-b');
    expect(await look('pool-b')).toMatchObject({ port: 'refused', reachable: false, silentLooks: 0 });
    await d.faults.partition(spec, 'pool-a');
    expect(await look('pool-a')).toMatchObject({ port: 'silent', silentLooks: 1, holdsVip: true });
    expect(await look('pool-a')).toMatchObject({ silentLooks: 2, holdsVip: true, shellReachable: false });
    expect(sim.write(spec.name, 'pool', 1)).toMatchObject({ acked: false });
  });

  it('moving the address fences a host SSH cannot reach; startHost brings it back without it', async () => {
    await bringUpHosts();
    await d.faults.partition(spec, 'pool-a');
    await hostLooks();
    await d.pool.ensurePool(spec, A.name, [], 'pool-b');
    await d.pool.moveVip!(spec, 'pool-b');
    expect(sim.inspectPoolHosts(spec.name).map((h) => [h.name, h.machine, h.holdsVip])).toEqual([
      ['pool-a', 'stopped', false],
      ['pool-b', 'running', true],
    ]);
    expect(sim.vipHolders(spec.name)).toEqual(['pool-b']);
    expect(sim.write(spec.name, 'pool', 1)).toMatchObject({ acked: true });
    expect(await look('pool-a')).toMatchObject({ machine: 'stopped', port: 'silent', holdsVip: false });
    await d.faults.heal(spec, 'pool-a');
    await d.pool.startHost!(spec, 'pool-a');
    expect(await look('pool-a')).toMatchObject({ machine: 'running', port: 'refused', holdsVip: false });
  });

  it('a reachable host drops the address over SSH; ensurePool of all needs the serving pgpool', async () => {
    await bringUpHosts();
    await hostLooks();
    await d.pool.moveVip!(spec, 'pool-b');
    expect(sim.inspectPoolHosts(spec.name).map((h) => [h.machine, h.holdsVip])).toEqual([
      ['running', false],
      ['running', true],
    ]);
    await d.faults.kill(spec, 'pool-b');
    await failsWith(
      d.pool.ensurePool(spec, A.name),
      'transient',
      /pool host pool-b, which holds the virtual IP, is down \(its port refused\)/,
    );
    await d.pool.ensurePool(spec, A.name, [], 'pool-b');
    expect(sim.write(spec.name, 'pool', 1)).toMatchObject({ acked: true });
  });

  it('a host stopped while holding the address holds it no more', async () => {
    await bringUpHosts();
    await d.faults.stop(spec, 'pool-a');
    expect(sim.vipHolders(spec.name)).toEqual([]);
    expect(sim.write(spec.name, 'pool', 1)).toMatchObject({ acked: false });
  });
});

describe('determinism and cost', () => {
  async function scenario(): Promise<string[]> {
    clock = new SimClock(0);
    sim = new SimWorld({ clock });
    d = createSimWorld(sim);
    await bringUp();
    for (let i = 0; i < 50; i++) {
      clock.advance(10);
      if (i === 20) sim.partition(spec.name, A.name);
      direct(i < 30 ? A : B, i);
      if (i === 25) await failover(B, C);
    }
    return sim.journal(spec.name);
  }

  it('the same schedule gives the same world', async () => {
    const first = await scenario();
    const second = await scenario();
    expect(second).toEqual(first);
    expect(sim.nodeLog(spec.name, C.name)).toEqual(sim.nodeLog(spec.name, B.name));
  });

  it('SimClock moves only forward, when told', () => {
    const c = new SimClock(5);
    c.advance(0);
    c.advance(10);
    expect(c.now()).toBe(15);
    expect(() => c.advance(-1)).toThrow(PgopError);
  });

  // (Speed is measured by npm run bench:reconcile, not asserted here: a busy machine is no bug.)
  it('ten thousand writes interleaved with probes all reach the streaming standby', async () => {
    await bringUp();
    for (let i = 0; i < 10_000; i++) {
      direct(A, i);
      await d.postgres.probe(spec, B);
    }
    expect(sim.nodeLog(spec.name, C.name)).toHaveLength(10_000);
  });
});

describe('random schedules of driver calls and faults', () => {
  // Whatever the operator (or chaos) does, the sim's physics stay coherent: calls fail only with
  // transient/terminal PgopErrors worded "cannot ...", streaming standbys hold a prefix of their
  // primary's log on its timeline, probes agree with the logs, and a cluster in which nobody
  // promotes never has two writable primaries.
  const nodeIx = fc.integer({ min: 0, max: 2 });
  // Writes weigh most so that most runs carry acknowledged commits through the faults.
  const op = fc.oneof(
    {
      weight: 2,
      arbitrary: fc.tuple(
        fc.constantFrom(
          'kill',
          'partition',
          'heal',
          'stop',
          'start',
          'destroy',
          'vanish',
          'drift',
          'lag',
          'unlag',
        ),
        nodeIx,
      ),
    },
    {
      weight: 3,
      arbitrary: fc.tuple(
        fc.constantFrom(
          'machine',
          'install',
          'primary',
          'configure',
          'promote',
          'demote',
          'fence',
          'slots',
          'pool',
        ),
        nodeIx,
      ),
    },
    { weight: 2, arbitrary: fc.tuple(fc.constant('standby'), nodeIx, fc.integer({ min: 1, max: 2 })) },
    { weight: 1, arbitrary: fc.tuple(fc.constant('sync'), nodeIx, fc.integer({ min: 0, max: 2 })) },
    { weight: 6, arbitrary: fc.tuple(fc.constant('write'), fc.integer({ min: -1, max: 2 })) },
    { weight: 1, arbitrary: fc.tuple(fc.constant('crashPool')) },
  );

  async function run(ops: (string | number)[][], withPromotions: boolean) {
    sim = new SimWorld({ clock: new SimClock() });
    d = createSimWorld(sim);
    spec = simSpec();
    const nodes = spec.nodes;
    const at = (i: unknown) => nodes[i as number]!;
    let id = 0;
    let reinitialised = false; // the first node's data was lost: its old commits are gone for good
    for (const [kind, a, b] of ops) {
      if (kind === 'vanish' && a === 0) reinitialised = true;
      if (!withPromotions && kind === 'promote') continue;
      const n = at(a);
      const call = async (): Promise<unknown> => {
        switch (kind) {
          case 'kill':
            return sim.kill(spec.name, n.name);
          case 'partition':
            return sim.partition(spec.name, n.name);
          case 'heal':
            return sim.heal(spec.name, n.name);
          case 'stop':
            return sim.stop(spec.name, n.name);
          case 'start':
            return sim.start(spec.name, n.name);
          case 'destroy':
            return sim.destroyDomain(spec.name, n.name);
          case 'vanish':
            return sim.vanish(spec.name, n.name);
          case 'drift':
            return sim.driftConfig(spec.name, n.name);
          case 'lag':
            return sim.setLagging(spec.name, n.name, true);
          case 'unlag':
            return sim.setLagging(spec.name, n.name, false);
          case 'crashPool':
            return sim.crashPool(spec.name);
          case 'write':
            return sim.write(spec.name, a === -1 ? 'pool' : { node: n.name }, ++id);
          case 'machine':
            return d.provider.ensureMachine(spec, n);
          case 'install':
            return d.postgres.ensureInstalled(spec, n);
          case 'primary': {
            // Without promotions, only the first node may ever be initialised as a primary.
            if (!withPromotions && a !== 0) return;
            return d.postgres.ensurePrimary(
              spec,
              n,
              nodes.filter((x) => x !== n).map((x) => x.name),
            );
          }
          case 'configure':
            return d.postgres.ensureConfigured(spec, n);
          case 'promote':
            return d.postgres.promote(spec, n);
          case 'demote':
            return d.postgres.demote(spec, n);
          case 'fence':
            return d.provider.fenceMachine(spec, n);
          case 'slots':
            return d.postgres.ensureSlots(
              spec,
              n,
              nodes.filter((x) => x !== n).map((x) => x.name),
            );
          case 'pool':
            return d.pool.ensurePool(spec, n.name);
          case 'standby':
            return d.postgres.ensureStandby(spec, n, at(((a as number) + (b as number)) % 3));
          case 'sync': {
            const others = nodes.filter((x) => x !== n).map((x) => x.name);
            return d.postgres.ensureSyncStandbys(spec, n, (b as number) === 0 ? [] : others, b as number);
          }
          default:
            throw new Error(`no such operation: ${String(kind)}`);
        }
      };
      try {
        await call();
      } catch (err) {
        expect(err).toBeInstanceOf(PgopError);
        expect(['transient', 'terminal']).toContain((err as PgopError).kind);
        expect((err as PgopError).message).toMatch(/^cannot \S+ /);
      }
      // Invariants of the physics, checked after every step.
      if (!withPromotions) expect(sim.writablePrimaries(spec.name).length).toBeLessThanOrEqual(1);
      for (const x of nodes) {
        const r = await d.postgres.probe(spec, x);
        const state = sim.inspect(spec.name, x.name);
        if (!r.postgres || !state) continue;
        if (state.pg.initialized) expect(r.postgres.lsn).toBe(lsnOf(state.pg.log.length));
        if (!state.pg.streaming) continue;
        const up = sim.inspect(spec.name, state.pg.upstream!)!;
        expect(up.pg.running && !up.pg.inRecovery).toBe(true);
        expect(up.pg.log.slice(0, state.pg.log.length)).toEqual(state.pg.log);
        expect(state.pg.timeline).toBe(up.pg.timeline);
      }
    }
    const acked = sim.ackedWrites(spec.name).map((w) => w.id);
    expect(new Set(acked).size).toBe(acked.length);
    // Without promotions every commit lives on one history: no sync ack can be lost while the
    // original primary's data survives.
    if (!withPromotions && !reinitialised && sim.inspect(spec.name, nodes[0]!.name)?.pg.initialized) {
      const log = new Set(sim.nodeLog(spec.name, nodes[0]!.name));
      for (const w of sim.ackedWrites(spec.name)) expect(log.has(w.id)).toBe(true);
    }
  }

  const bootstrap: (string | number)[][] = [
    ['machine', 0],
    ['machine', 1],
    ['machine', 2],
    ['install', 0],
    ['install', 1],
    ['install', 2],
    ['primary', 0],
    ['standby', 1, 2],
    ['standby', 2, 1],
    ['pool', 0],
  ];

  it('keep the physics coherent (with promotions)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 60 }), (ops) => run([...bootstrap, ...ops], true)),
      { numRuns: 300 },
    );
  });

  it('never make two primaries or lose a commit when nobody promotes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 60 }), (ops) => run([...bootstrap, ...ops], false)),
      { numRuns: 300 },
    );
  });
});
