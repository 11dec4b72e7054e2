// The planner's decisions as values: rule id, node, event and a reason a person can read.

import { describe, expect, it } from 'vitest';
import { plan, parseSyncNames } from '../../src/plan/plan.js';
import { formatLsn, parseLsn } from '../../src/observe/lsn.js';
import type { PlanInput } from '../../src/plan/types.js';
import type { NodeObservation, PoolHostObservation, PostgresObservation } from '../../src/observe/types.js';
import type { NodeState } from '../../machines/node-edges.js';
import { SIM_PG04, simSpec } from '../helpers/sim-spec.js';

import { HASH, healthy3, input, node, off, pg, poolUp, primaryPg, states3 } from '../helpers/plan-input.js';

describe('plan', () => {
  it('provisions the first missing node of an empty cluster', () => {
    const r = plan(
      input({}, { pg01: node('pg01', { machine: { state: 'missing' }, reachable: false, postgres: null }) }),
    );
    expect(r.decision).toMatchObject({
      kind: 'act',
      node: 'pg01',
      event: 'node.wanted',
      ruleId: 'node.provision',
    });
    expect(r.phase).toBe('Provisioning');
  });

  it('initialises the first installed node as primary when no node holds data', () => {
    const r = plan(
      input(
        { pg01: 'installed', pg02: 'installed', pg03: 'provisioned' },
        {
          pg01: node('pg01', { postgres: null }),
          pg02: node('pg02', { postgres: null }),
          pg03: node('pg03', { reachable: false, postgres: null }),
        },
      ),
    );
    expect(r.decision).toMatchObject({
      kind: 'act',
      node: 'pg01',
      event: 'primary.elected',
      ruleId: 'bootstrap.init-primary',
      standbys: ['pg02', 'pg03'],
    });
  });

  it('is done on a healthy cluster and says so', () => {
    const r = plan(input(states3, healthy3()));
    expect(r.decision).toMatchObject({ kind: 'done', ruleId: 'cluster.converged' });
    expect(r.phase).toBe('Healthy');
    expect(r.goals).toEqual({ pg01: 'primary', pg02: 'standby', pg03: 'standby' });
  });

  it('is not Healthy while pgpool still handles an attach (it ends new sessions until it has)', () => {
    const i = input(states3, healthy3());
    i.observation.pool = { ...poolUp('pg01', ['pg01', 'pg02', 'pg03']), handlingAttach: true };
    const r = plan(i);
    expect(r.decision).toMatchObject({ kind: 'wait', ruleId: 'pool.attach-settling' });
    expect(r.phase).toBe('Degraded');
    i.observation.pool = poolUp('pg01', ['pg01', 'pg02', 'pg03']);
    expect(plan(i).phase).toBe('Healthy');
  });

  it('does not fail over on fewer misses than the budget (no flapping on one slow probe)', () => {
    const nodes = {
      ...healthy3(),
      pg01: node('pg01', { postgres: null, reachable: false, misses: 2, error: 'timeout' }),
    };
    const r = plan(input(states3, nodes));
    expect(r.decision).toMatchObject({ kind: 'wait', ruleId: 'primary.unhealthy' });
  });

  it('after a failed first probe, probes again after retryIntervalMs, not a whole probe interval', () => {
    const nodes = {
      ...healthy3(),
      pg01: node('pg01', { postgres: null, reachable: true, misses: 1, error: 'connect ECONNREFUSED' }),
    };
    const r = plan(input(states3, nodes));
    expect(r.decision).toMatchObject({ kind: 'wait', ruleId: 'primary.unhealthy', requeueAfterMs: 100 });
  });

  it(
    'a promotion whose outcome was never seen: the old primary stays fenced until the candidate was ' +
      'restarted and looked at, and a writable one is adopted',
    () => {
      const spec = simSpec({ replication: { mode: 'sync', syncQuorum: 1 } });
      const down = (n: string, over: Partial<NodeObservation> = {}) =>
        node(n, { postgres: pg({ running: false, lsn: 0 }), ...over });
      // pg01 fenced (old primary); pg02's promotion "failed" (it died right after); pg03 unreadable
      const nodes = {
        pg01: node('pg01', off),
        pg02: down('pg02', { misses: 1 }),
        pg03: node('pg03', { reachable: false, postgres: null, misses: 5 }),
      };
      const i = input({ pg01: 'fenced', pg02: 'standby', pg03: 'standby' }, nodes, { spec });
      i.observation.lastSync = { names: ['pg02', 'pg03'], quorum: 1, primary: 'pg01' };
      const r = plan(i);
      expect(r.decision.ruleId).not.toBe('recover.release-last-primary');
      expect(r.decision.kind === 'act' && r.decision.node === 'pg01').toBe(false);
      // pg02 marked degraded, then restarted in place
      const j = input(
        { pg01: 'fenced', pg02: 'degraded', pg03: 'standby' },
        { ...nodes, pg02: down('pg02', { misses: 9 }) },
        { spec },
      );
      j.observation.lastSync = i.observation.lastSync;
      expect(plan(j).decision).toMatchObject({
        kind: 'act',
        node: 'pg02',
        ruleId: 'recover.restart-in-place',
      });
      // restarted in place it is a standby again and comes up writable (it was promoted): adopted
      // as the primary, not the older pg01
      const k = input(
        { pg01: 'fenced', pg02: 'standby', pg03: 'standby' },
        { ...nodes, pg02: node('pg02', { postgres: primaryPg({ timeline: 4 }) }) },
        { spec },
      );
      k.observation.lastSync = i.observation.lastSync;
      expect(plan(k).decision).toMatchObject({
        kind: 'act',
        node: 'pg02',
        event: 'primary.elected',
        ruleId: 'failover.adopt-promoted',
      });
    },
  );

  it('fences a primary that missed the budget before anything else, naming why', () => {
    const nodes = {
      ...healthy3(),
      pg01: node('pg01', { postgres: null, reachable: false, misses: 3, error: 'connect ECONNREFUSED' }),
    };
    const r = plan(input(states3, nodes));
    expect(r.decision).toMatchObject({
      kind: 'act',
      node: 'pg01',
      event: 'probe.failed',
      ruleId: 'failover.fence-primary',
    });
    expect(r.decision.reason).toContain('ECONNREFUSED');
    expect(r.phase).toBe('FailingOver');
  });

  it('promotes the standby with the highest WAL position once the old primary is fenced', () => {
    const nodes = {
      pg01: node('pg01', { ...off, misses: 5 }),
      pg02: node('pg02', { postgres: pg({ lsn: 1500, receiveLsn: 1600 }) }),
      pg03: node('pg03', { postgres: pg({ lsn: 1700, receiveLsn: 1700 }) }),
    };
    const r = plan(input({ pg01: 'fenced', pg02: 'standby', pg03: 'standby' }, nodes));
    expect(r.decision).toMatchObject({
      kind: 'act',
      node: 'pg03',
      event: 'primary.elected',
      ruleId: 'failover.promote',
    });
    expect(r.decision.reason).toMatch(/pg03 at LSN 0\/6A4 .*ahead of pg02 at LSN 0\/640/);
  });

  it('sync mode: refuses to promote without a quorum-intersecting set of readable standbys', () => {
    const spec = simSpec({ replication: { mode: 'sync', syncQuorum: 1 } });
    const nodes = {
      pg01: node('pg01', { ...off, misses: 5 }),
      pg02: node('pg02', { reachable: false, postgres: null, misses: 5 }),
      pg03: node('pg03'),
    };
    const base = input({ pg01: 'fenced', pg02: 'degraded', pg03: 'standby' }, nodes, { spec });
    base.observation.lastSync = { names: ['pg02', 'pg03'], quorum: 1, primary: 'pg01' };
    // No promotion: instead the old primary, which holds every acknowledged commit, comes back.
    const blocked = plan(base).decision;
    expect(blocked).toMatchObject({
      kind: 'act',
      node: 'pg01',
      event: 'fence.released',
      ruleId: 'recover.release-last-primary',
    });
    expect(blocked.reason).toContain('only 1 of them can be read and 2 are needed');
    // ...and a primary that cannot be replaced is restarted in place, not fenced.
    const live = input(
      { pg01: 'primary', pg02: 'degraded', pg03: 'standby' },
      { ...nodes, pg01: node('pg01', { postgres: pg({ running: false, inRecovery: false }), misses: 5 }) },
      { spec },
    );
    live.observation.lastSync = { names: ['pg02', 'pg03'], quorum: 1, primary: 'pg01' };
    expect(plan(live).decision).toMatchObject({
      kind: 'act',
      node: 'pg01',
      event: 'postgres.stopped',
      ruleId: 'recover.restart-primary',
    });
    // With both readable, the most advanced one is promoted.
    const both = input(
      { pg01: 'fenced', pg02: 'standby', pg03: 'standby' },
      { ...nodes, pg02: node('pg02', { postgres: pg({ lsn: 1900, receiveLsn: 1900 }) }) },
      { spec },
    );
    both.observation.lastSync = { names: ['pg02', 'pg03'], quorum: 1, primary: 'pg01' };
    expect(plan(both).decision).toMatchObject({ kind: 'act', node: 'pg02', ruleId: 'failover.promote' });
  });

  it(
    "sync mode, a promoted node dead before its own set was seen: the election's level standbys are " +
      'the evidence',
    () => {
      const spec = simSpec({ replication: { mode: 'sync', syncQuorum: 1 } });
      const nodes = {
        pg01: node('pg01', off),
        pg02: node('pg02', { ...off, misses: 5 }),
        pg03: node('pg03'),
      };
      const level = input({ pg01: 'fenced', pg02: 'fenced', pg03: 'standby' }, nodes, { spec });
      level.observation.lastSync = { names: ['pg02', 'pg03'], quorum: 2, primary: 'pg02', elected: true };
      expect(plan(level).decision).toMatchObject({ kind: 'act', node: 'pg03', ruleId: 'failover.promote' });
      // pg03 was behind pg02 at the election: only pg02 holds every acknowledged commit
      const since = { pg01: 1000, pg02: 2000, pg03: 0 };
      const behind = input({ pg01: 'fenced', pg02: 'fenced', pg03: 'standby' }, nodes, { spec, since });
      behind.observation.lastSync = { names: ['pg02'], quorum: 1, primary: 'pg02', elected: true };
      const d = plan(behind).decision;
      expect(d).toMatchObject({ kind: 'act', node: 'pg02', ruleId: 'recover.release-last-primary' });
      expect(d.reason).toContain('no standby was level with it');
    },
  );

  it('a promotion names the standbys level with the promoted node', () => {
    const nodes = {
      pg01: node('pg01', off),
      pg02: node('pg02', { postgres: pg({ lsn: 1700, receiveLsn: 1700 }) }),
      pg03: node('pg03', { postgres: pg({ lsn: 1700, receiveLsn: 1700 }) }),
    };
    const r = plan(input({ pg01: 'fenced', pg02: 'standby', pg03: 'standby' }, nodes));
    expect(r.decision).toMatchObject({ ruleId: 'failover.promote', node: 'pg02', levelStandbys: ['pg03'] });
    const ahead = { ...nodes, pg02: node('pg02', { postgres: pg({ lsn: 1800, receiveLsn: 1800 }) }) };
    const r2 = plan(input({ pg01: 'fenced', pg02: 'standby', pg03: 'standby' }, ahead));
    expect(r2.decision).toMatchObject({ ruleId: 'failover.promote', node: 'pg02', levelStandbys: [] });
  });

  it(
    'sync mode: only the set last seen on the primary counts (a node that never streamed does not ' +
      'block)',
    () => {
      const spec = simSpec({ replication: { mode: 'sync', syncQuorum: 1 } });
      const nodes = {
        pg01: node('pg01', off),
        pg02: node('pg02'),
        pg03: node('pg03', { reachable: false, postgres: null }),
      };
      const i = input({ pg01: 'fenced', pg02: 'standby', pg03: 'installed' }, nodes, { spec });
      i.observation.lastSync = { names: ['pg02'], quorum: 1, primary: 'pg01' };
      expect(plan(i).decision).toMatchObject({ kind: 'act', node: 'pg02', ruleId: 'failover.promote' });
    },
  );

  it('adopts a standby that is already writable (operator died after promoting it)', () => {
    const nodes = {
      pg01: node('pg01', off),
      pg02: node('pg02', { postgres: primaryPg({ timeline: 2 }) }),
      pg03: node('pg03'),
    };
    const r = plan(input({ pg01: 'fenced', pg02: 'standby', pg03: 'standby' }, nodes));
    expect(r.decision).toMatchObject({
      kind: 'act',
      node: 'pg02',
      event: 'primary.elected',
      ruleId: 'failover.adopt-promoted',
    });
  });

  it(
    'after a failover: pgpool and the other standbys follow the new primary first, then the fenced node ' +
      'is released',
    () => {
      const nodes = {
        pg01: node('pg01', off),
        pg02: node('pg02', { postgres: primaryPg({ timeline: 2 }) }),
        pg03: node('pg03', { postgres: pg({ upstream: 'pg01', streaming: false }) }),
      };
      const s: Record<string, NodeState> = { pg01: 'fenced', pg02: 'primary', pg03: 'standby' };
      // pgpool still routes to pg01: clients come first, with pg03's repoint in the same pass
      const clients = plan(input(s, nodes));
      expect(clients.decision).toMatchObject({
        kind: 'cluster',
        action: { type: 'ensurePool', primary: 'pg02' },
        ruleId: 'failover.pool-route',
      });
      expect(clients.also).toEqual([
        expect.objectContaining({
          node: 'pg03',
          event: 'primary.changed',
          ruleId: 'standby.repoint',
          primary: 'pg02',
        }),
      ]);
      // pgpool not answering is pgpool still switching (restarting its children): routing alone,
      // the standbys follow in a later pass (their SSH work would compete with pgpool for the CPU)
      const busy = input(s, nodes);
      busy.observation.pool = {
        reachable: false,
        primary: null,
        backends: [],
        configHash: '',
        error: 'pgpool: no answer yet',
      };
      expect(plan(busy).decision).toMatchObject({
        kind: 'cluster',
        action: { type: 'ensurePool', primary: 'pg02' },
        ruleId: 'failover.pool-route',
      });
      expect(plan(busy).also ?? []).toEqual([]);
      const routed = (i: PlanInput) => (
        (i.observation.pool = { reachable: true, primary: 'pg02', backends: [], configHash: '' }),
        i
      );
      const first = plan(routed(input(s, nodes)));
      expect(first.decision).toMatchObject({
        kind: 'act',
        node: 'pg01',
        event: 'fence.released',
        ruleId: 'rejoin.release-fence',
      });
      const second = plan(
        routed(input({ ...s, pg01: 'rejoining' }, { ...nodes, pg01: node('pg01', { postgres: null }) })),
      );
      expect(second.decision).toMatchObject({
        kind: 'act',
        node: 'pg01',
        event: 'machine.reachable',
        ruleId: 'rejoin.standby',
        primary: 'pg02',
      });
      const third = plan(
        routed(
          input(
            { ...s, pg01: 'standby' },
            { ...nodes, pg01: node('pg01', { postgres: pg({ upstream: 'pg02' }) }) },
          ),
        ),
      );
      expect(third.decision).toMatchObject({
        kind: 'act',
        node: 'pg03',
        event: 'primary.changed',
        ruleId: 'standby.repoint',
        primary: 'pg02',
      });
    },
  );

  it('detaches from pgpool a standby whose postgres failed (pgpool detaches nothing by itself)', () => {
    const budget = simSpec().failureDetection.missesBeforeFailover;
    const nodes = {
      ...healthy3(),
      pg03: node('pg03', { postgres: null, misses: budget, error: 'connect ECONNREFUSED' }),
    };
    const i = input(states3, nodes);
    i.observation.pool = poolUp('pg01', ['pg01', 'pg02', 'pg03']);
    expect(plan(i).decision).toMatchObject({
      kind: 'cluster',
      action: { type: 'ensurePool', primary: 'pg01' },
      ruleId: 'pool.detach-failed',
    });
    // one slow probe is not a failure; a node pgpool already holds down needs nothing
    const once = input(states3, { ...nodes, pg03: node('pg03', { postgres: null, misses: 1 }) });
    once.observation.pool = i.observation.pool;
    expect(plan(once).decision).not.toMatchObject({ ruleId: 'pool.detach-failed' });
    const down = input(states3, nodes);
    down.observation.pool = {
      ...i.observation.pool,
      backends: i.observation.pool.backends.map((b) =>
        b.name === 'pg03' ? { ...b, status: 'down' as const } : b,
      ),
    };
    expect(plan(down).decision).not.toMatchObject({ ruleId: 'pool.detach-failed' });
  });

  it('detaches a node being rejoined whose postgres refuses sessions (starting up), not a standby', () => {
    const starting = node('pg03', {
      postgres: { ...pg(), lsn: 0, timeline: 0, streaming: false, refusesSessions: true },
      error: 'the database system is not yet accepting connections (57P03)',
    });
    const i = input({ ...states3, pg03: 'rejoining' }, { ...healthy3(), pg03: starting });
    i.observation.pool = poolUp('pg01', ['pg01', 'pg02', 'pg03']);
    expect(plan(i).decision).toMatchObject({
      action: { type: 'ensurePool', primary: 'pg01', failed: ['pg03'] },
      ruleId: 'pool.detach-failed',
    });
    // a standby's brief restart (a setting that needs one) is not detached for it
    const restarting = input(states3, { ...healthy3(), pg03: starting });
    restarting.observation.pool = i.observation.pool;
    expect(plan(restarting).decision).not.toMatchObject({ ruleId: 'pool.detach-failed' });
  });

  it('reconciles configuration drift', () => {
    const nodes = { ...healthy3(), pg02: node('pg02', { postgres: pg({ configHash: 'other' }) }) };
    expect(plan(input(states3, nodes)).decision).toMatchObject({
      kind: 'act',
      node: 'pg02',
      event: 'config.drifted',
      ruleId: 'node.config-drift',
    });
  });

  it('turns sync quorum on only once enough standbys stream, and points pgpool at the primary', () => {
    const spec = simSpec({ replication: { mode: 'sync', syncQuorum: 1 } });
    const oneStreaming = { ...healthy3(), pg03: node('pg03', { reachable: false, postgres: null }) };
    const r = plan(input({ pg01: 'primary', pg02: 'standby', pg03: 'provisioned' }, oneStreaming, { spec }));
    expect(r.decision).toMatchObject({
      kind: 'cluster',
      action: { type: 'ensureSyncStandbys', primary: 'pg01', names: ['pg02'], quorum: 1 },
    });
    const none = plan(
      input(
        { pg01: 'primary', pg02: 'installed', pg03: 'installed' },
        {
          pg01: healthy3().pg01,
          pg02: node('pg02', { postgres: null }),
          pg03: node('pg03', { postgres: null }),
        },
        { spec },
      ),
    );
    expect(none.decision).not.toMatchObject({ kind: 'cluster', action: { type: 'ensureSyncStandbys' } });
    const pool = input(states3, healthy3());
    pool.observation.pool = {
      reachable: true,
      primary: null,
      backends: [{ name: 'pg02', status: 'down', role: 'standby' }],
      configHash: '',
    };
    expect(plan(pool).decision).toMatchObject({
      kind: 'cluster',
      action: { type: 'ensurePool', primary: 'pg01' },
      ruleId: 'pool.route',
    });
    // pgpool routing writes to another node is a failover's aftermath: first, before all else
    pool.observation.pool = { reachable: true, primary: 'pg02', backends: [], configHash: '' };
    expect(plan(pool).decision).toMatchObject({
      kind: 'cluster',
      action: { type: 'ensurePool', primary: 'pg01' },
      ruleId: 'failover.pool-route',
    });
  });

  it(
    'fences a failed primary naming the standby pgpool is switched to meanwhile: the one the election ' +
      'then promotes',
    () => {
      const failed = node('pg01', {
        postgres: null,
        reachable: false,
        misses: 3,
        error: 'connect ECONNREFUSED',
      });
      const nodes = {
        pg01: failed,
        pg02: node('pg02', { postgres: pg({ lsn: 900, receiveLsn: 900 }) }),
        pg03: node('pg03', { postgres: pg({ lsn: 1100, receiveLsn: 1100 }) }),
      };
      // pgpool on the nodes: a promote in pgpool marks no standby down that matters
      const onNodes = input(states3, nodes);
      onNodes.spec = { ...onNodes.spec, pgpool: { ...onNodes.spec.pgpool, onNodes: true } };
      const r = plan(onNodes);
      expect(r.decision).toMatchObject({
        kind: 'act',
        node: 'pg01',
        ruleId: 'failover.fence-primary',
        successor: 'pg03',
      });
      expect(r.decision.reason).toContain('pgpool switches to pg03');
      // a pool host of its own holding standbys: the promotion detaches the old primary instead
      const ownHost = plan(input(states3, nodes)).decision;
      expect(ownHost).toMatchObject({ ruleId: 'failover.fence-primary' });
      expect(ownHost).not.toHaveProperty('successor');
      const fenced = {
        ...nodes,
        pg01: node('pg01', off),
      };
      expect(plan(input({ ...states3, pg01: 'fenced' }, fenced)).decision).toMatchObject({
        kind: 'act',
        node: 'pg03',
        ruleId: 'failover.promote',
      });
      // standbys holding the same WAL: the one pgpool is switching to (no second switch)
      const even = { ...fenced, pg02: node('pg02', { postgres: pg({ lsn: 1100, receiveLsn: 1100 }) }) };
      const switching = input({ ...states3, pg01: 'fenced' }, even);
      // spec order
      expect(plan(switching).decision).toMatchObject({ node: 'pg02', ruleId: 'failover.promote' });
      switching.observation.pool = {
        reachable: false,
        primary: 'pg03',
        backends: [],
        configHash: '',
        error: 'pgpool: switching to pg03',
      };
      expect(plan(switching).decision).toMatchObject({ node: 'pg03', ruleId: 'failover.promote' });
      // more WAL wins over pgpool's choice
      switching.observation.nodes.pg02 = node('pg02', { postgres: pg({ lsn: 1200, receiveLsn: 1200 }) });
      expect(plan(switching).decision).toMatchObject({ node: 'pg02', ruleId: 'failover.promote' });
      // no pgpool, nothing to switch
      const bare = plan(input(states3, nodes, { spec: simSpec({ pgpool: { enabled: false } }) }));
      expect(bare.decision).toMatchObject({ ruleId: 'failover.fence-primary' });
      expect(bare.decision).not.toHaveProperty('successor');
      // an urgent look (standby answers from before the failure) names none: the promotion step
      // switches pgpool to whoever the fresh election picks
      const urgent = input(states3, nodes);
      urgent.observation.urgent = ['pg01'];
      expect(plan(urgent).decision).toMatchObject({ ruleId: 'failover.fence-primary' });
      expect(plan(urgent).decision).not.toHaveProperty('successor');
      expect(plan(urgent).decision.reason).not.toContain('pgpool switches');
      // its own backend told of the death: the pool host's cut-off can wait (nothing of it hangs)
      expect(plan(urgent).decision).toMatchObject({ postmasterDeathReported: true });
      expect(r.decision).not.toHaveProperty('postmasterDeathReported');
    },
  );

  it('with load balancing off wants pgpool to hold only the primary, and a standby down is no fault', () => {
    const i = input(states3, healthy3(), { desiredPoolConfigHash: 'h' });
    i.spec = { ...i.spec, pgpool: { ...i.spec.pgpool, loadBalancing: false } };
    const backends = (pg02: 'up' | 'down') => [
      { name: 'pg01', status: 'up' as const, role: 'primary' as const },
      { name: 'pg02', status: pg02, role: 'standby' as const },
      { name: 'pg03', status: 'down' as const, role: 'standby' as const },
    ];
    i.observation.pool = { reachable: true, primary: 'pg01', backends: backends('down'), configHash: 'h' };
    expect(plan(i).decision).toMatchObject({ kind: 'done' });
    i.observation.pool = { ...i.observation.pool, backends: backends('up') };
    const d = plan(i).decision;
    expect(d).toMatchObject({
      kind: 'cluster',
      action: { type: 'ensurePool', primary: 'pg01' },
      ruleId: 'pool.route',
    });
    expect(d.reason).toContain('pgpool holds pg02 up though it balances no load to standbys');
  });

  it('rewrites a pgpool configuration that differs from the spec, once pgpool routes right', () => {
    const i = input(states3, healthy3(), { desiredPoolConfigHash: 'wanted' });
    i.observation.pool = { reachable: true, primary: 'pg01', backends: [], configHash: 'older' };
    expect(plan(i).decision).toMatchObject({
      kind: 'cluster',
      action: { type: 'ensurePool', primary: 'pg01' },
      ruleId: 'pool.reconfigure',
    });
    // routing first
    i.observation.pool = { reachable: true, primary: 'pg02', backends: [], configHash: 'older' };
    expect(plan(i).decision).toMatchObject({ ruleId: 'failover.pool-route' });
    i.observation.pool = { reachable: true, primary: 'pg01', backends: [], configHash: 'wanted' };
    expect(plan(i).decision).toMatchObject({ kind: 'done' });
  });

  it('never drops a sync member before the others caught up', () => {
    const spec = simSpec({ replication: { mode: 'sync', syncQuorum: 1 } });
    const p = primaryPg({
      lsn: 5000,
      syncStandbyNames: 'ANY 1 ("pg02", "pg03")',
      replicas: [{ name: 'pg02', state: 'streaming', syncState: 'quorum', flushLsn: 4000, replayLsn: 4000 }],
    });
    const nodes = {
      pg01: node('pg01', { postgres: p }),
      pg02: node('pg02', { postgres: pg({ lsn: 4000 }) }),
      pg03: node('pg03', { reachable: false, postgres: null, misses: 1 }),
    };
    const r = plan(input(states3, nodes, { spec }));
    expect(r.decision).not.toMatchObject({ kind: 'cluster', action: { type: 'ensureSyncStandbys' } });
  });

  it('switches over: demotes the primary cleanly first', () => {
    const r = plan(
      input(states3, healthy3(), {
        requests: [
          { id: 7, cluster: 'sim1', kind: 'switchover', args: { from: 'pg01', to: 'pg03' }, createdAt: 0 },
        ],
      }),
    );
    expect(r.decision).toMatchObject({
      kind: 'act',
      node: 'pg01',
      event: 'switchover.requested',
      ruleId: 'switchover.demote',
    });
  });

  it('removes a node that left the spec, and tears everything down on deletion', () => {
    const r = plan(input({ ...states3, pg09: 'standby' }, healthy3()));
    expect(r.decision).toMatchObject({ kind: 'act', node: 'pg09', event: 'node.unwanted' });
    const d = plan(input(states3, healthy3(), { deletionRequested: true }));
    expect(d.decision).toMatchObject({
      kind: 'act',
      node: 'pg01',
      event: 'node.unwanted',
      ruleId: 'delete.fence',
    });
    const last = plan(input({ pg01: 'absent' }, healthy3(), { deletionRequested: true }));
    expect(last.decision).toMatchObject({ kind: 'cluster', action: { type: 'deleteClusterResources' } });
  });

  it('restarts a lone primary in place rather than fencing the last copy', () => {
    const nodes = {
      pg01: node('pg01', { postgres: pg({ running: false, inRecovery: false }), misses: 4 }),
      pg02: node('pg02', { reachable: false, postgres: null, misses: 4 }),
      pg03: node('pg03', { reachable: false, postgres: null, misses: 4 }),
    };
    const r = plan(input({ pg01: 'primary', pg02: 'degraded', pg03: 'degraded' }, nodes));
    expect(r.decision).toMatchObject({
      kind: 'act',
      node: 'pg01',
      event: 'postgres.stopped',
      ruleId: 'recover.restart-primary',
    });
  });

  it('parses and formats LSNs and sync names', () => {
    expect(parseLsn('16/B374D848')).toBe(0x16 * 2 ** 32 + 0xb374d848);
    expect(formatLsn(parseLsn('0/3000148'))).toBe('0/3000148');
    expect(parseSyncNames('ANY 1 ("pg02", "pg03")')).toEqual({ quorum: 1, names: ['pg02', 'pg03'] });
    expect(parseSyncNames('')).toEqual({ quorum: 0, names: [] });
  });
});

describe('plan: scale-in (a node that left the spec, issue 19)', () => {
  const slotNames = { pg04: 'pgop_pg04' };
  const withPg04 = (over: Partial<NodeObservation> = {}, primary: Partial<PostgresObservation> = {}) => ({
    ...healthy3(),
    pg01: node('pg01', {
      postgres: primaryPg({ slots: ['pgop_pg02', 'pgop_pg03', 'pgop_pg04'], ...primary }),
    }),
    pg04: node('pg04', over),
  });
  const scaleIn = (
    states: Record<string, NodeState>,
    nodes: Record<string, NodeObservation>,
    pool: string[] = ['pg01', 'pg02', 'pg03'],
  ) => {
    const i = input(states, nodes, { slotNames });
    i.observation.strays = { pg04: SIM_PG04 };
    i.observation.pool = poolUp('pg01', pool);
    return plan(i);
  };

  it(
    'takes it out of the sync set first; with fewer members left than the quorum, commits go ' +
      'asynchronous',
    () => {
      const r = scaleIn(
        { ...states3, pg04: 'standby' },
        withPg04({}, { syncStandbyNames: 'ANY 1 (pg02, pg03, pg04)' }),
      );
      expect(r.decision).toMatchObject({
        kind: 'cluster',
        ruleId: 'scale.sync-remove',
        action: { type: 'ensureSyncStandbys', primary: 'pg01', names: ['pg02', 'pg03'] },
      });
      const spec = simSpec({ replication: { mode: 'sync', syncQuorum: 2 } });
      const i = input(
        { ...states3, pg04: 'standby' },
        withPg04({}, { syncStandbyNames: 'ANY 2 (pg02, pg04)' }),
        { spec, slotNames },
      );
      i.observation.strays = { pg04: SIM_PG04 };
      expect(plan(i).decision).toMatchObject({
        ruleId: 'scale.sync-remove',
        action: { names: [], quorum: 2 },
      }); // ANY 2 of (pg02) would stop every commit
    },
  );

  it(
    'then out of pgpool (named, or by address), then fenced without cutting the pool host off its ' +
      'address',
    () => {
      expect(
        scaleIn({ ...states3, pg04: 'standby' }, withPg04(), ['pg01', 'pg02', 'pg03', 'pg04']).decision,
      ).toMatchObject({ ruleId: 'scale.pool-remove', action: { type: 'ensurePool', primary: 'pg01' } });
      expect(
        scaleIn({ ...states3, pg04: 'standby' }, withPg04(), ['pg01', 'pg02', 'pg03', '10.0.0.14']).decision,
      ).toMatchObject({ ruleId: 'scale.pool-remove' });
      expect(scaleIn({ ...states3, pg04: 'standby' }, withPg04()).decision).toMatchObject({
        kind: 'act',
        node: 'pg04',
        event: 'node.unwanted',
        ruleId: 'scale.fence',
        leavingSpec: true,
      });
    },
  );

  it('then its machine, then its slot on the primary, then it is forgotten; never "vanished"', () => {
    const gone = { machine: { state: 'missing' as const }, reachable: false, postgres: null };
    expect(scaleIn({ ...states3, pg04: 'deleting' }, withPg04(off)).decision).toMatchObject({
      node: 'pg04',
      event: 'machine.fenced',
      ruleId: 'scale.remove-machine',
    });
    // a standby whose machine is gone already is removed the same way, not "vanished"
    expect(scaleIn({ ...states3, pg04: 'standby' }, withPg04(gone)).decision).toMatchObject({
      node: 'pg04',
      ruleId: 'scale.fence',
    });
    expect(scaleIn({ ...states3, pg04: 'absent' }, withPg04(gone)).decision).toMatchObject({
      kind: 'cluster',
      ruleId: 'scale.drop-slot',
      action: { type: 'dropSlots', primary: 'pg01', node: 'pg04' },
    });
    expect(
      scaleIn({ ...states3, pg04: 'absent' }, withPg04(gone, { slots: ['pgop_pg02', 'pgop_pg03'] })).decision,
    ).toMatchObject({
      kind: 'cluster',
      ruleId: 'scale.forget',
      action: { type: 'forgetNode', node: 'pg04' },
    });
  });

  it('waits while the provider could not list its machines, and while no primary can drop its slot', () => {
    const unknown = {
      machine: { state: 'running' as const, detail: 'provider unavailable: timeout' },
      reachable: false,
      postgres: null,
    };
    const r = scaleIn({ ...states3, pg04: 'absent' }, withPg04(unknown));
    expect(r.decision.ruleId).not.toMatch(/^scale\./);
    const gone = { machine: { state: 'missing' as const }, reachable: false, postgres: null };
    const nodes = {
      ...withPg04(gone),
      pg01: node('pg01', { postgres: null, reachable: false, misses: 1, error: 'timeout' }),
    };
    expect(scaleIn({ ...states3, pg04: 'absent' }, nodes).decision.ruleId).not.toMatch(
      /^scale\.(drop-slot|forget)$/,
    );
  });

  it('a primary that left the spec is handed over first; pgpool is not rewritten without it before', () => {
    const spec = simSpec({ nodes: simSpec().nodes.slice(1) });
    const nodes = { ...healthy3(), pg01: node('pg01', { postgres: primaryPg({ syncStandbyNames: '' }) }) };
    const i = input(states3, nodes, { spec, slotNames: { pg01: 'pgop_pg01' }, desiredPoolConfigHash: 'new' });
    i.observation.strays = { pg01: simSpec().nodes[0]! };
    i.observation.pool = { reachable: true, primary: 'pg01', backends: [], configHash: 'old' };
    expect(plan(i).decision).toMatchObject({
      kind: 'act',
      node: 'pg01',
      event: 'switchover.requested',
      ruleId: 'scale.handover',
    });
  });
});

// One case per rule not pinned above, so that moving a rule in src/plan/rules.ts shows here.
describe('plan: each rule decides its case', () => {
  type States = Record<string, NodeState>;
  const decide = (states: States, nodes: Record<string, NodeObservation>, over: Partial<PlanInput> = {}) =>
    plan(input(states, nodes, over)).decision;
  const down = { reachable: false, postgres: null, misses: 3, error: 'timeout' };
  const switchover = (args: Record<string, string>) => ({
    requests: [{ id: 7, cluster: 'sim', kind: 'switchover' as const, args, createdAt: 0 }],
  });
  const completes = (ruleId: string) => ({
    kind: 'cluster',
    ruleId,
    action: { type: 'completeRequest', requestId: 7 },
  });

  it('deletion: fence, then remove the machine, then the cluster resources', () => {
    const r = plan(input(states3, healthy3(), { deletionRequested: true }));
    expect(r.decision).toMatchObject({ node: 'pg01', event: 'node.unwanted', ruleId: 'delete.fence' });
    expect(r.phase).toBe('Deleting');
    expect(decide({ ...states3, pg01: 'deleting' }, healthy3(), { deletionRequested: true })).toMatchObject({
      node: 'pg01',
      event: 'machine.fenced',
      ruleId: 'delete.remove-machine',
    });
    expect(decide({}, {}, { deletionRequested: true })).toMatchObject({
      kind: 'cluster',
      action: { type: 'deleteClusterResources' },
      ruleId: 'delete.resources',
    });
  });

  it('an installed node with unrecorded data is adopted as a standby, or started first', () => {
    const states = { ...states3, pg02: 'installed' as const };
    expect(decide(states, healthy3())).toMatchObject({
      node: 'pg02',
      event: 'standby.found',
      ruleId: 'node.adopt-clone',
    });
    const stopped = { ...healthy3(), pg02: node('pg02', { postgres: pg({ running: false }) }) };
    expect(decide(states, stopped)).toMatchObject({
      node: 'pg02',
      event: 'postgres.stopped',
      ruleId: 'node.start-unrecorded',
    });
  });

  it('a failed primary nobody can replace: wait for a candidate, or start its machine if it is off', () => {
    const nodes = { pg01: node('pg01', down), pg02: node('pg02', down), pg03: node('pg03', down) };
    const states = { ...states3, pg02: 'degraded' as const, pg03: 'degraded' as const };
    expect(decide(states, nodes)).toMatchObject({
      kind: 'wait',
      node: 'pg01',
      ruleId: 'failover.no-candidate',
      requeueAfterMs: 1000,
    });
    const stopped = { ...nodes, pg01: node('pg01', { ...off, misses: 3 }) };
    expect(decide(states, stopped)).toMatchObject({
      node: 'pg01',
      event: 'machine.down',
      ruleId: 'recover.start-primary',
    });
  });

  it('sync mode without enough evidence and no old primary to bring back: wait, saying why', () => {
    const spec = simSpec({ replication: { mode: 'sync', syncQuorum: 1 } });
    // pg03's machine answers but its postgres is down: it may hold a newer primary
    const pg03 = node('pg03', { postgres: null, misses: 1 });
    const nodes = { pg01: node('pg01', off), pg02: node('pg02'), pg03 };
    const i = input({ pg01: 'fenced', pg02: 'standby', pg03: 'standby' }, nodes, { spec });
    i.observation.lastSync = { names: ['pg02', 'pg03'], quorum: 1, primary: 'pg01' };
    const r = plan(i).decision;
    expect(r).toMatchObject({ kind: 'wait', ruleId: 'failover.sync-evidence', requeueAfterMs: 1000 });
    expect(r.reason).toContain('only 1 of them can be read and 2 are needed');
  });

  it('bootstrap: an installed node that cannot be read is waited for, or started when it is off', () => {
    const states: States = { pg01: 'installed', pg02: 'installed', pg03: 'installed' };
    const nodes = {
      pg01: node('pg01', { postgres: null }),
      pg02: node('pg02', { reachable: false, postgres: null }),
      pg03: node('pg03', { postgres: null }),
    };
    expect(decide(states, nodes)).toMatchObject({ node: 'pg02', ruleId: 'bootstrap.wait-unseen' });
    expect(decide(states, { ...nodes, pg02: node('pg02', off) })).toMatchObject({
      node: 'pg02',
      event: 'machine.down',
      ruleId: 'node.start-machine',
    });
  });

  it('bootstrap: the first spec node, still being set up, is waited for while its install goes on', () => {
    const states: States = { pg01: 'provisioned', pg02: 'installed', pg03: 'installed' };
    const nodes = {
      pg01: node('pg01', { postgres: null }),
      pg02: node('pg02', { postgres: null }),
      pg03: node('pg03', { postgres: null }),
    };
    const i = input(states, nodes);
    i.since = { pg01: i.now - 1_000 };
    const r = plan(i);
    expect(r.decision).toMatchObject({ kind: 'wait', node: 'pg01', ruleId: 'bootstrap.init-primary' });
    // the wait must not hold back the install of the node it waits for: pg01 would never be ready
    expect(r.also).toEqual([expect.objectContaining({ node: 'pg01', ruleId: 'node.install' })]);
    // once it is installed it is the first primary, though pg02 was ready first
    const next = input({ ...states, pg01: 'installed' }, nodes);
    expect(plan(next).decision).toMatchObject({ node: 'pg01', ruleId: 'bootstrap.init-primary' });
    // pg01's try failed and cooled down while pg02 was being initialised: pg02 is waited for
    next.jobs = { pg02: { id: 8, kind: 'initPrimary', state: 'running', deadlineAt: next.now + 60_000 } };
    expect(plan(next).decision).toMatchObject({
      kind: 'wait',
      node: 'pg02',
      ruleId: 'bootstrap.init-primary',
    });
  });

  it('a look that began before a job committed the node is no evidence against its machine', () => {
    // pg02's provisioning committed at t=10 while the look (t=0) still saw no machine
    const provisioned = input(
      { ...states3, pg02: 'provisioned' },
      { ...healthy3(), pg02: node('pg02', off) },
    );
    provisioned.since = { pg02: 10 };
    expect(plan(provisioned).decision).not.toMatchObject({ event: 'machine.vanished' });
    const missing = { machine: { state: 'missing' as const }, reachable: false, postgres: null };
    const vanished = input(states3, { ...healthy3(), pg02: node('pg02', missing) });
    vanished.since = { pg02: 10 };
    expect(plan(vanished).decision).not.toMatchObject({ ruleId: 'node.machine-vanished' });
    // the same look taken after the step: the machine did vanish
    vanished.observation.at = 20;
    expect(plan(vanished).decision).toMatchObject({ node: 'pg02', ruleId: 'node.machine-vanished' });
  });

  it('per node: install (with the next node alongside), reprovision, remove, wait for a boot', () => {
    const states = { ...states3, pg02: 'provisioned' as const, pg03: 'provisioned' as const };
    const fresh = { ...healthy3(), pg02: node('pg02', { postgres: null }) };
    fresh.pg03 = node('pg03', { postgres: null });
    const r = plan(input(states, fresh));
    expect(r.decision).toMatchObject({ node: 'pg02', event: 'machine.reachable', ruleId: 'node.install' });
    expect(r.also).toEqual([expect.objectContaining({ node: 'pg03', ruleId: 'node.install' })]);
    const one = { ...states3, pg02: 'provisioned' as const };
    expect(decide(one, { ...healthy3(), pg02: node('pg02', off) })).toMatchObject({
      node: 'pg02',
      event: 'machine.vanished',
      ruleId: 'node.reprovision',
    });
    const booting = node('pg02', { reachable: false, postgres: null });
    expect(decide(one, { ...healthy3(), pg02: booting })).toMatchObject({
      kind: 'wait',
      node: 'pg02',
      ruleId: 'node.waiting',
      requeueAfterMs: 500,
    });
    expect(decide({ ...states3, pg02: 'deleting' }, healthy3())).toMatchObject({
      node: 'pg02',
      event: 'machine.fenced',
      ruleId: 'node.remove-machine',
    });
  });

  it('a standby that failed its probes is marked failed; a degraded one that is off is started', () => {
    expect(decide(states3, { ...healthy3(), pg02: node('pg02', down) })).toMatchObject({
      node: 'pg02',
      event: 'probe.failed',
      ruleId: 'standby.failed',
    });
    const states = { ...states3, pg02: 'degraded' as const };
    expect(decide(states, { ...healthy3(), pg02: node('pg02', off) })).toMatchObject({
      node: 'pg02',
      event: 'machine.down',
      ruleId: 'rejoin.start-machine',
    });
  });

  it('sync.quorum sets the set once the standbys stream; sync.off clears it in async mode', () => {
    const spec = simSpec({ replication: { mode: 'sync', syncQuorum: 1 } });
    expect(decide(states3, healthy3(), { spec })).toMatchObject({
      kind: 'cluster',
      ruleId: 'sync.quorum',
      action: { type: 'ensureSyncStandbys', primary: 'pg01', names: ['pg02', 'pg03'], quorum: 1 },
    });
    const syncing = primaryPg({ syncStandbyNames: 'ANY 1 (pg02)' });
    const set = { ...healthy3(), pg01: node('pg01', { postgres: syncing }) };
    expect(decide(states3, set)).toMatchObject({ ruleId: 'sync.off', action: { names: [], quorum: 0 } });
  });

  // standbys whose postgres is down (not failed yet): nobody streams, and no per-node rule acts
  const notStreaming = () => ({
    ...healthy3(),
    pg02: node('pg02', { postgres: pg({ running: false }) }),
    pg03: node('pg03', { postgres: pg({ running: false }) }),
  });

  it('a primary that left the spec waits for a streaming standby to hand over to', () => {
    const spec = simSpec({ nodes: simSpec().nodes.slice(1) });
    const i = input(states3, notStreaming(), { spec });
    i.observation.strays = { pg01: simSpec().nodes[0]! };
    expect(plan(i).decision).toMatchObject({
      kind: 'wait',
      node: 'pg01',
      ruleId: 'scale.wait-handover',
      requeueAfterMs: 1000,
    });
  });

  it('switchover: rejected, done, waiting for a target, promoting the target', () => {
    const rejected = decide(states3, healthy3(), switchover({ to: 'pg09', from: 'pg01' }));
    expect(rejected).toMatchObject(completes('switchover.rejected'));
    const done = decide(states3, healthy3(), switchover({ to: 'pg01', from: 'pg03' }));
    expect(done).toMatchObject(completes('switchover.done'));
    const waiting = decide(states3, notStreaming(), switchover({ from: 'pg01' }));
    expect(waiting).toMatchObject({ kind: 'wait', ruleId: 'switchover.wait-target' });
    const fenced: States = { pg01: 'fenced', pg02: 'standby', pg03: 'standby' };
    const nodes = { ...healthy3(), pg01: node('pg01', off) };
    const r = plan(input(fenced, nodes, switchover({ to: 'pg03', from: 'pg01' })));
    expect(r.decision).toMatchObject({ node: 'pg03', ruleId: 'switchover.promote' });
    expect(r.phase).toBe('SwitchingOver');
  });
});

describe('plan: pool hosts and the virtual IP', () => {
  const spec = simSpec({
    pgpool: {
      hosts: [
        { name: 'pool-a', address: '10.0.0.21' },
        { name: 'pool-b', address: '10.0.0.22' },
        { name: 'pool-c', address: '10.0.0.23' },
      ],
    },
  });
  /** A pool host whose pgpool listens, routes to pg01 with every backend up, and does not hold
   *  the virtual IP. */
  const host = (name: string, over: Partial<PoolHostObservation> = {}): PoolHostObservation => ({
    ...poolUp('pg01', ['pg01', 'pg02', 'pg03']),
    name,
    port: 'open',
    pcpPort: over.port ?? 'open',
    silentLooks: 0,
    unansweredLooks: 0,
    holdsVip: false,
    shellReachable: true,
    machine: 'running',
    ...over,
  });
  /** A healthy cluster whose pool observation is these hosts (the serving view: the holder's). */
  const withHosts = (...hosts: PoolHostObservation[]): PlanInput => {
    const i = input(states3, healthy3(), { spec });
    const serving = hosts.find((h) => h.holdsVip === true) ?? hosts[0]!;
    const servesClients = serving.port === 'open';
    i.observation.pool = {
      reachable: servesClients,
      primary: servesClients ? serving.primary : null,
      backends: servesClients ? serving.backends : [],
      configHash: serving.configHash,
      hosts,
    };
    return i;
  };
  const decide = (...hosts: PoolHostObservation[]) => plan(withHosts(...hosts)).decision;
  const moveTo = (to: string) => ({
    kind: 'cluster',
    ruleId: 'pool.vip-holder',
    action: { type: 'moveVip', to },
  });
  const budget = spec.failureDetection.missesBeforeFailover;

  it('a sole live holder: nothing to do', () => {
    expect(decide(host('pool-a', { holdsVip: true }), host('pool-b'), host('pool-c'))).toMatchObject({
      kind: 'done',
    });
  });

  it('no holder: the address goes to a live host (one routing to the primary first)', () => {
    const d = decide(
      host('pool-a', { port: 'refused', reachable: false, primary: null }),
      host('pool-b', { primary: 'pg02' }),
      host('pool-c'),
    );
    expect(d).toMatchObject(moveTo('pool-c'));
    expect(d.reason).toContain('no pool host holds the virtual IP 10.0.0.10');
  });

  it("pgpool's own watchdog moves it: pgop never does, and restarts the dead holder's pgpool", () => {
    const i = withHosts(
      host('pool-a', { holdsVip: true, port: 'refused', reachable: false, primary: null }),
      host('pool-b'),
      host('pool-c'),
    );
    i.spec = { ...i.spec, pgpool: { ...i.spec.pgpool, watchdog: { enabled: true } } };
    expect(plan(i).decision).toMatchObject({
      ruleId: 'pool.host-route',
      action: { type: 'configurePoolHost', host: 'pool-a' },
    });
    const none = withHosts(host('pool-a'), host('pool-b'), host('pool-c'));
    none.spec = i.spec;
    expect(plan(none).decision).not.toMatchObject({ ruleId: 'pool.vip-holder' });
  });

  it("the holder's machine is off (the provider says so): moved at once, without counting looks", () => {
    const off = host('pool-a', { holdsVip: true, port: 'silent', pcpPort: 'silent', silentLooks: 1 });
    off.machine = 'stopped';
    expect(decide(off, host('pool-b'), host('pool-c'))).toMatchObject(moveTo('pool-b'));
    const slow = host('pool-a', { holdsVip: true, port: 'silent', pcpPort: 'silent', silentLooks: 1 });
    expect(decide(slow, host('pool-b'), host('pool-c'))).not.toMatchObject({ ruleId: 'pool.vip-holder' });
  });

  it("the holder's pgpool refuses: moved at once, the reason naming the holder", () => {
    const d = decide(host('pool-a', { holdsVip: true, port: 'refused', reachable: false }), host('pool-b'));
    expect(d).toMatchObject(moveTo('pool-b'));
    expect(d.reason).toContain('pgpool on pool-a, which holds the virtual IP 10.0.0.10, is not running');
  });

  it('a silent holder: waited for over the failure budget, then moved', () => {
    for (let looks = 1; looks < budget; looks++) {
      const d = decide(
        host('pool-a', { holdsVip: true, port: 'silent', silentLooks: looks, reachable: false }),
        host('pool-b'),
      );
      expect(d, `${looks} silent looks`).not.toMatchObject({ ruleId: 'pool.vip-holder' });
    }
    const silent = host('pool-a', { holdsVip: true, port: 'silent', silentLooks: budget, reachable: false });
    const d = decide({ ...silent, shellReachable: false }, host('pool-b'));
    expect(d).toMatchObject(moveTo('pool-b'));
    expect(d.reason).toContain(
      `pool-a, which holds the virtual IP 10.0.0.10, has not answered ${budget} looks`,
    );
  });

  it('a holder missing looks is looked at again at the retry interval, even while a job runs', () => {
    const retry = spec.failureDetection.retryIntervalMs;
    const silent = host('pool-a', { holdsVip: true, port: 'silent', silentLooks: 1, reachable: false });
    const i = withHosts(silent, host('pool-b'));
    i.jobs = { pg02: { id: 8, kind: 'repointStandby', state: 'running', deadlineAt: i.now + 60_000 } };
    const d = plan(i).decision;
    expect(d).toMatchObject({ kind: 'wait', ruleId: 'pool.holder-unanswered', requeueAfterMs: retry });
    expect(d.reason).toContain(`pool-a, which holds the virtual IP 10.0.0.10, has not answered 1/${budget}`);
    const hung = host('pool-a', { holdsVip: true, reachable: false, primary: null, unansweredLooks: 1 });
    expect(decide(hung, host('pool-b'))).toMatchObject({ ruleId: 'pool.holder-unanswered' });
    // a silent spare, or a busy holder (PCP answers): the usual pace
    const spare = host('pool-b', { port: 'silent', silentLooks: 1, reachable: false });
    expect(decide(host('pool-a', { holdsVip: true }), spare)).not.toMatchObject({
      ruleId: 'pool.holder-unanswered',
    });
    const busy = host('pool-a', { holdsVip: true, port: 'silent', pcpPort: 'open', silentLooks: 1 });
    expect(decide(busy, host('pool-b'))).not.toMatchObject({ ruleId: 'pool.holder-unanswered' });
  });

  it('a busy holder (clients port silent under load, PCP answering) keeps the virtual IP', () => {
    const busy = host('pool-a', {
      holdsVip: true,
      port: 'silent',
      pcpPort: 'open',
      silentLooks: budget * 10,
      reachable: false,
    });
    const d = decide(busy, host('pool-b'));
    expect(d).not.toMatchObject({ ruleId: 'pool.vip-holder' });
    expect(d).not.toMatchObject({ action: { type: 'moveVip' } });
  });

  it('a holder whose port accepts but pgpool does not answer: not restarted, moved after the budget', () => {
    for (let looks = 1; looks < budget; looks++) {
      const d = decide(
        host('pool-a', { holdsVip: true, reachable: false, primary: null, unansweredLooks: looks }),
        host('pool-b'),
      );
      expect(d, `${looks} unanswered looks`).not.toMatchObject({ action: { type: 'ensurePool' } });
      expect(d, `${looks} unanswered looks`).not.toMatchObject({ action: { type: 'moveVip' } });
    }
    const hung = host('pool-a', { holdsVip: true, reachable: false, primary: null, unansweredLooks: budget });
    expect(decide(hung, host('pool-b'))).toMatchObject(moveTo('pool-b'));
  });

  it('two holders: kept on one of them that is live', () => {
    const d = decide(
      host('pool-a', { holdsVip: true, port: 'refused', reachable: false }),
      host('pool-b'),
      host('pool-c', { holdsVip: true }),
    );
    expect(d).toMatchObject(moveTo('pool-c'));
    expect(d.reason).toContain('pool-a and pool-c all hold the virtual IP');
  });

  it("holdership not read yet on a live host: wait (it may be the holder), don't move", () => {
    const d = decide(host('pool-a', { holdsVip: null }), host('pool-b'));
    expect(d).not.toMatchObject({ ruleId: 'pool.vip-holder' });
    // unread on a host that cannot be reached: no reason to wait for it
    const unreached = host('pool-a', {
      holdsVip: null,
      shellReachable: false,
      port: 'silent',
      silentLooks: 1,
    });
    expect(decide(unreached, host('pool-b'))).toMatchObject(moveTo('pool-b'));
  });

  it('no live host to move it to: nothing', () => {
    const d = decide(
      host('pool-a', { holdsVip: true, port: 'refused', reachable: false }),
      host('pool-b', { port: 'silent', silentLooks: budget, shellReachable: false, reachable: false }),
      host('pool-c', { port: 'open', shellReachable: false }),
    );
    expect(d).not.toMatchObject({ ruleId: 'pool.vip-holder' });
  });

  it('a stopped pool host is started; a missing one only once there is a primary', () => {
    const stopped = host('pool-b', { machine: 'stopped', port: 'silent', shellReachable: false });
    expect(decide(host('pool-a', { holdsVip: true }), stopped)).toMatchObject({
      kind: 'cluster',
      ruleId: 'pool.host-start',
      action: { type: 'startPoolHost', host: 'pool-b' },
    });
    const missing = host('pool-b', { machine: 'missing', port: 'silent', shellReachable: false });
    expect(decide(host('pool-a', { holdsVip: true }), missing)).toMatchObject({
      ruleId: 'pool.host-start',
      action: { host: 'pool-b' },
    });
    const bringUp = withHosts(host('pool-a', { holdsVip: true }), missing);
    const states = { pg01: 'provisioned', pg02: 'provisioned', pg03: 'provisioned' } as const;
    const noPrimary = plan({ ...bringUp, states, observation: { ...bringUp.observation } }).decision;
    expect(noPrimary).not.toMatchObject({ ruleId: 'pool.host-start' });
  });

  it('a non-holder misrouting or with drifted files is configured alone (host named)', () => {
    expect(
      decide(host('pool-a', { holdsVip: true }), host('pool-b', { primary: 'pg02' }), host('pool-c')),
    ).toMatchObject({
      kind: 'cluster',
      ruleId: 'pool.host-route',
      action: { type: 'configurePoolHost', primary: 'pg01', host: 'pool-b' },
    });
    const dead = host('pool-c', { port: 'refused', reachable: false, primary: null });
    expect(decide(host('pool-a', { holdsVip: true }), host('pool-b'), dead)).toMatchObject({
      ruleId: 'pool.host-route',
      action: { host: 'pool-c' },
    });
    const drift = withHosts(
      host('pool-a', { holdsVip: true, configHash: 'wanted' }),
      host('pool-b', { configHash: 'old' }),
    );
    drift.desiredPoolConfigHash = 'wanted';
    const d = plan(drift).decision;
    expect(d).toMatchObject({ ruleId: 'pool.host-route', action: { host: 'pool-b' } });
    expect(d.reason).toContain("pool host pool-b: pgpool's configuration differs from the spec");
  });

  it("a pool host's configuration is a job: the next pass takes the next host, then waits for them", () => {
    const misrouted = () => [host('pool-a', { holdsVip: true }), host('pool-b', { primary: 'pg02' })];
    const running = (id: number) => ({
      id,
      kind: 'pool.configure',
      state: 'running' as const,
      deadlineAt: 9e15,
    });
    const both = withHosts(...misrouted(), host('pool-c', { primary: 'pg02' }));
    both.poolHostJobs = { 'pool-b': running(4) };
    expect(plan(both).decision).toMatchObject({
      ruleId: 'pool.host-route',
      action: { type: 'configurePoolHost', host: 'pool-c' },
    });
    both.poolHostJobs['pool-c'] = running(5);
    const d = plan(both).decision;
    expect(d).toMatchObject({ kind: 'wait', ruleId: 'pool.hosts-waiting' });
    expect(d.reason).toContain('pool host pool-b: job #4 configures pgpool');
    // a failed one cools down first, and is tried again after
    const cooling = withHosts(...misrouted());
    cooling.poolHostJobs = { 'pool-b': { ...running(6), state: 'cooling', deadlineAt: cooling.now + 500 } };
    expect(plan(cooling).decision).not.toMatchObject({ ruleId: 'pool.host-route' });
    cooling.poolHostJobs['pool-b']!.deadlineAt = cooling.now - 1;
    expect(plan(cooling).decision).toMatchObject({ ruleId: 'pool.host-route', action: { host: 'pool-b' } });
  });

  it('the virtual IP never moves to a pool host whose configuration job runs', () => {
    const i = withHosts(
      host('pool-a', { holdsVip: true, port: 'refused', reachable: false }),
      host('pool-b'),
      host('pool-c'),
    );
    i.poolHostJobs = { 'pool-b': { id: 3, kind: 'pool.configure', state: 'running', deadlineAt: 9e15 } };
    expect(plan(i).decision).toMatchObject(moveTo('pool-c'));
  });

  it('a pool host its shell cannot reach is left to the others (the cluster waits, naming it)', () => {
    const cut = host('pool-b', { primary: null, reachable: false, shellReachable: false });
    const d = decide(host('pool-a', { holdsVip: true }), cut);
    expect(d).toMatchObject({ kind: 'wait', ruleId: 'pool.hosts-waiting' });
    expect(d.reason).toContain('pgpool is down on pool host pool-b');
  });

  it('a spare that routes otherwise and cannot be configured keeps the cluster waiting, named', () => {
    // pgpool answers there, but its shell did not: routeOtherPoolHosts cannot reach it
    const unreached = { shellReachable: false };
    expect(plan(withHosts(host('pool-a', { holdsVip: true }), host('pool-b', unreached))).phase).toBe(
      'Healthy',
    );
    const backends = host('pool-b').backends.map((b) =>
      b.name === 'pg02' ? { ...b, status: 'down' as const } : b,
    );
    const d = decide(host('pool-a', { holdsVip: true }), host('pool-b', { ...unreached, backends }));
    expect(d).toMatchObject({ kind: 'wait', ruleId: 'pool.hosts-waiting' });
    expect(d.reason).toContain('pool host pool-b: pgpool marks pg02 down');
  });

  it('pgpool is not routed while the holder of the virtual IP does not listen (only other hosts)', () => {
    const silent = host('pool-a', { holdsVip: true, port: 'silent', silentLooks: 1, reachable: false });
    const d = decide(silent, host('pool-b', { primary: 'pg02' }));
    expect(d).not.toMatchObject({ ruleId: 'pool.route' });
    expect(d).toMatchObject({
      ruleId: 'pool.host-route',
      action: { type: 'configurePoolHost', host: 'pool-b' },
    });
  });

  it("the holder's pgpool died and no live host can take the address: its pgpool is started", () => {
    const dead = host('pool-a', { holdsVip: true, port: 'refused', reachable: false, primary: null });
    const cut = host('pool-b', { port: 'silent', silentLooks: 1, shellReachable: false, reachable: false });
    expect(decide(dead, cut)).toMatchObject({
      ruleId: 'pool.host-route',
      action: { type: 'configurePoolHost', primary: 'pg01', host: 'pool-a' },
    });
  });
  it(
    'pgpool on the nodes: a node leaving the spec, which may hold the address, is fenced before ' +
      'the address moves',
    () => {
      const onNodes = simSpec({ pgpool: { onNodes: true } });
      const leaving = (pg04: NodeState) => {
        const nodes = { ...healthy3(), pg04: node('pg04', pg04 === 'deleting' ? off : {}) };
        const i = input({ ...states3, pg04 }, nodes, { spec: onNodes });
        i.observation.strays = { pg04: SIM_PG04 };
        // no spec'd node holds the address: pg04 (unobserved) may
        const hosts = ['pg01', 'pg02', 'pg03'].map((n) => host(n));
        i.observation.pool = { ...poolUp('pg01', ['pg01', 'pg02', 'pg03']), hosts };
        return plan(i).decision;
      };
      const first = leaving('standby');
      expect(first).not.toMatchObject({ ruleId: 'pool.vip-holder' });
      expect(first).toMatchObject({ node: 'pg04', ruleId: 'scale.fence' });
      expect(leaving('deleting')).toMatchObject(moveTo('pg01'));
    },
  );
});
