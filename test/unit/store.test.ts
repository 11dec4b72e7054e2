import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { defaultDbPath, Store } from '../../src/store/store.js';
import { PgopError } from '../../src/errors.js';
import type { ClusterSpec } from '../../src/spec/types.js';
import type { ClusterObservation } from '../../src/observe/types.js';

const MIGRATIONS = fileURLToPath(new URL('../../schema/migrations/', import.meta.url));

function spec(name: string, overrides: Partial<ClusterSpec> = {}): ClusterSpec {
  return {
    apiVersion: 'pgop.dev/v1',
    kind: 'Cluster',
    name,
    provider: { type: 'sim' },
    postgres: {
      version: 16,
      parameters: { max_connections: 100, password_encryption: 'scram-sha-256' },
      dataDir: '/u01/pg/data',
      archiveDir: '/u02/archive',
      backupDir: '/u02/backup',
      logDir: '/var/log/postgres',
      archiveScript: true,
      superuserPassword: { env: 'PG_SUPERUSER_PASSWORD' },
      hba: [],
    },
    nodes: [
      { name: 'pg1', address: '10.0.0.11', vcpus: 2, memoryMiB: 2048, rootDiskGiB: 10, dataDiskGiB: 20 },
      { name: 'pg2', address: '10.0.0.12', vcpus: 2, memoryMiB: 2048, rootDiskGiB: 10, dataDiskGiB: 20 },
    ],
    replication: {
      mode: 'async',
      syncQuorum: 1,
      user: 'replicator',
      password: { file: '/etc/pgop/repl' },
      slots: true,
    },
    pgpool: {
      enabled: false,
      port: 9999,
      pcpPort: 9898,
      loadBalancing: false,
      primaryApplications: [],
      watchdog: { enabled: false },
      numInitChildren: 32,
    },
    roles: [{ name: 'app', login: true, superuser: false, createdb: false, password: { env: 'APP_PW' } }],
    databases: [],
    grants: [],
    failureDetection: {
      probeIntervalMs: 1000,
      missesBeforeFailover: 3,
      connectTimeoutMs: 500,
      retryIntervalMs: 100,
    },
    ...overrides,
  };
}

let dir: string;
let dbPath: string;
const open: Store[] = [];
const openStore = (path = dbPath, opts?: Parameters<typeof Store.open>[1]) => {
  const s = Store.open(path, opts);
  open.push(s);
  return s;
};
/** pg1 of `cluster` committed as provisioned (rule r, at 2). */
const provisionPg1 = (store: Store, cluster: string) =>
  store.commitStep({
    cluster,
    node: 'pg1',
    state: 'provisioned',
    goal: 'primary',
    message: '',
    event: { ruleId: 'r', reason: '' },
    now: 2,
  });

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pgop-store-'));
  dbPath = join(dir, 'state', 'pgop.db');
});

afterEach(() => {
  for (const s of open.splice(0)) s.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('applySpec', () => {
  it('creates, leaves unchanged, configures, and keeps every generation in history', () => {
    const store = openStore();
    const a = spec('alpha');
    expect(store.applySpec(a, 'h1', 'a.yaml', 1000)).toEqual({ result: 'created', generation: 1 });
    expect(store.applySpec(a, 'h1', 'a.yaml', 2000)).toEqual({ result: 'unchanged', generation: 1 });

    const c = store.getCluster('alpha')!;
    expect(c.generation).toBe(1);
    expect(c.updatedAt).toBe(1000); // unchanged wrote nothing
    expect(c.createdAt).toBe(1000);
    expect(c.spec).toEqual(a);
    expect(c.specHash).toBe('h1');
    expect(c.deletionRequested).toBe(false);
    expect(c.observedGeneration).toBe(0);
    expect(c.primary).toBeNull();

    const a2 = spec('alpha', { replication: { ...a.replication, mode: 'sync' } });
    expect(store.applySpec(a2, 'h2', 'a2.yaml', 3000)).toEqual({ result: 'configured', generation: 2 });
    const c2 = store.getCluster('alpha')!;
    expect(c2.generation).toBe(2);
    expect(c2.createdAt).toBe(1000);
    expect(c2.updatedAt).toBe(3000);
    expect(c2.spec.replication.mode).toBe('sync');

    const hist = store.specHistory('alpha');
    expect(hist.map((h) => [h.generation, h.specHash, h.specSource, h.appliedAt])).toEqual([
      [1, 'h1', 'a.yaml', 1000],
      [2, 'h2', 'a2.yaml', 3000],
    ]);
    expect(hist[0]!.spec.replication.mode).toBe('async');
    expect(hist[1]!.spec).toEqual(a2);
  });

  it('clears a deletion request when the spec changes, not when it is re-applied unchanged', () => {
    const store = openStore();
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 1);
    expect(store.requestDeletion('alpha', 2)).toBe(true);
    expect(store.requestDeletion('nope', 2)).toBe(false);
    expect(store.getCluster('alpha')!.deletionRequested).toBe(true);
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 3);
    expect(store.getCluster('alpha')!.deletionRequested).toBe(true);
    store.applySpec(spec('alpha', { nodes: [] }), 'h2', 'a.yaml', 4);
    expect(store.getCluster('alpha')!.deletionRequested).toBe(false);
  });

  it('generations survive reopening the file', () => {
    const s1 = openStore();
    s1.applySpec(spec('alpha'), 'h1', 'a.yaml', 1);
    s1.applySpec(spec('alpha', { nodes: [] }), 'h2', 'a.yaml', 2);
    s1.applySpec(spec('beta'), 'b1', 'b.yaml', 3);
    s1.close();

    const s2 = openStore();
    expect(s2.listClusters().map((c) => [c.name, c.generation])).toEqual([
      ['alpha', 2],
      ['beta', 1],
    ]);
    expect(s2.applySpec(spec('alpha'), 'h3', 'a.yaml', 4)).toEqual({ result: 'configured', generation: 3 });
    expect(s2.specHistory('alpha').map((h) => h.generation)).toEqual([1, 2, 3]);
  });

  it('refuses a spec holding a plaintext password', () => {
    const store = openStore();
    const leaky = spec('alpha');
    (leaky.replication as unknown as { password: string }).password = 'hunter2';
    expect(() => store.applySpec(leaky, 'h', 's', 1)).toThrow(PgopError);
    try {
      store.applySpec(leaky, 'h', 's', 1);
    } catch (err) {
      expect((err as PgopError).kind).toBe('internal');
      expect((err as Error).message).toContain('spec.replication.password');
      expect((err as Error).message).not.toContain('hunter2');
    }
    const leaky2 = spec('alpha');
    (leaky2.postgres as unknown as { superuserPassword: string }).superuserPassword = 'x';
    expect(() => store.applySpec(leaky2, 'h', 's', 1)).toThrow(/superuserPassword/);
    expect(store.getCluster('alpha')).toBeUndefined();
    expect(store.specHistory('alpha')).toEqual([]);
  });

  it('setClusterStatus updates status and keeps observedGeneration when omitted', () => {
    const store = openStore();
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 1);
    expect(
      store.setClusterStatus('alpha', {
        phase: 'Healthy',
        primary: 'pg1',
        message: 'ok',
        observedGeneration: 1,
      }),
    ).toBe(true);
    expect(store.setClusterStatus('alpha', { phase: 'Degraded', primary: 'pg1', message: 'pg2 down' })).toBe(
      true,
    );
    const c = store.getCluster('alpha')!;
    expect([c.phase, c.primary, c.message, c.observedGeneration]).toEqual(['Degraded', 'pg1', 'pg2 down', 1]);
    expect(store.setClusterStatus('nope', { phase: 'Healthy', primary: null, message: '' })).toBe(false);
  });
});

describe('migrations', () => {
  const versions = (path: string) => {
    const db = new Database(path, { readonly: true });
    try {
      return db.prepare('SELECT version FROM schema_migrations ORDER BY version').pluck().all();
    } finally {
      db.close();
    }
  };

  it('applies each migration once, however often the store is reopened', () => {
    const migDir = join(dir, 'migrations');
    mkdirSync(migDir);
    for (const f of readdirSync(MIGRATIONS)) copyFileSync(join(MIGRATIONS, f), join(migDir, f));
    // not idempotent on purpose: a second run would add a second row
    const next = readdirSync(MIGRATIONS).filter((f) => f.endsWith('.sql')).length + 1;
    writeFileSync(
      join(migDir, `${String(next).padStart(3, '0')}_seed.sql`),
      'INSERT INTO events (time, cluster, node, from_state, to_state, rule_id, reason) ' +
        "VALUES (0, 'x', NULL, NULL, NULL, 'seed', 'seed');",
    );
    const base = readdirSync(MIGRATIONS).length;

    openStore(dbPath, { migrationsDir: migDir }).close();
    openStore(dbPath, { migrationsDir: migDir }).close();
    const s = openStore(dbPath, { migrationsDir: migDir });
    expect(s.listEvents().map((e) => e.ruleId)).toEqual(['seed']);
    expect(versions(dbPath)).toHaveLength(base + 1);
    expect(versions(dbPath).at(-1)).toBe(next);
    s.close();

    // a pgop that only knows the shipped migrations refuses a store migrated past it
    expect(() => Store.open(dbPath)).toThrow(/newer than this pgop/);
  });

  it('reopening with the shipped migrations records one row per file', () => {
    openStore().close();
    openStore().close();
    const files = readdirSync(MIGRATIONS).filter((f) => f.endsWith('.sql'));
    expect(versions(dbPath)).toEqual(files.map((f) => Number(f.split('_')[0])).sort((a, b) => a - b));
  });

  it('a migration that fails leaves nothing half-applied', () => {
    const migDir = join(dir, 'migrations');
    mkdirSync(migDir);
    for (const f of readdirSync(MIGRATIONS)) copyFileSync(join(MIGRATIONS, f), join(migDir, f));
    openStore(dbPath, { migrationsDir: migDir }).close();
    const next = readdirSync(MIGRATIONS).filter((f) => f.endsWith('.sql')).length + 1;
    const bad = `${String(next).padStart(3, '0')}_bad.sql`;
    writeFileSync(join(migDir, bad), 'CREATE TABLE extra (x INTEGER); INSERT INTO no_such_table VALUES (1);');
    expect(() => Store.open(dbPath, { migrationsDir: migDir })).toThrow(new RegExp(bad.replace('.', '\\.')));
    const db = new Database(dbPath, { readonly: true });
    const extra = db.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'extra'").pluck().get();
    db.close();
    expect(extra).toBe(0);
    expect(versions(dbPath)).not.toContain(next);
  });
});

describe('files', () => {
  it('creates the parent 0700 and the database 0600, WAL mode', () => {
    const store = openStore();
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 1); // forces -wal to exist
    expect(statSync(dbPath).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'state')).mode & 0o777).toBe(0o700);
    expect(existsSync(`${dbPath}-wal`)).toBe(true);
    expect(statSync(`${dbPath}-wal`).mode & 0o077).toBe(0);
  });

  it('readonly on a missing file reads as empty, creates nothing, and refuses writes', () => {
    const ro = openStore(dbPath, { readonly: true });
    expect(ro.listClusters()).toEqual([]);
    expect(ro.listNodes()).toEqual([]);
    expect(existsSync(dbPath)).toBe(false);
    expect(existsSync(join(dir, 'state'))).toBe(false);
    expect(() => ro.applySpec(spec('alpha'), 'h', 's', 1)).toThrow();
  });

  it('readonly on an existing store sees its data and refuses writes', () => {
    const rw = openStore();
    rw.applySpec(spec('alpha'), 'h1', 'a.yaml', 1);
    rw.saveNodeState('alpha', 'pg1', 'installed', { goal: 'primary', message: '', now: 5 });
    const ro = openStore(dbPath, { readonly: true });
    expect(ro.listNodes().map((n) => n.state)).toEqual(['installed']);
    expect(() =>
      ro.saveNodeState('alpha', 'pg1', 'primary', { goal: 'primary', message: '', now: 6 }),
    ).toThrow(/readonly/);
    expect(rw.getNode('alpha', 'pg1')!.state).toBe('installed');
  });

  it('defaultDbPath honours PGOP_DB, then XDG_STATE_HOME', () => {
    expect(defaultDbPath({ PGOP_DB: '/tmp/x.db' })).toBe('/tmp/x.db');
    if (process.getuid?.() !== 0) {
      expect(defaultDbPath({ XDG_STATE_HOME: '/s' })).toBe('/s/pgop/pgop.db');
      expect(defaultDbPath({ XDG_STATE_HOME: '' })).toMatch(/\/\.local\/state\/pgop\/pgop\.db$/);
    } else {
      expect(defaultDbPath({ XDG_STATE_HOME: '/s' })).toBe('/var/lib/pgop/pgop.db');
    }
  });
});

describe('nodes and commitStep', () => {
  it('last_transition_at moves only when the state changes', () => {
    const store = openStore();
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 1);
    store.saveNodeState('alpha', 'pg2', 'provisioned', { goal: 'standby', message: 'a', now: 10 });
    store.saveNodeState('alpha', 'pg1', 'provisioned', { goal: 'primary', message: 'b', now: 10 });
    store.saveNodeState('alpha', 'pg1', 'provisioned', { goal: 'primary', message: 'c', now: 20 });
    expect(store.getNode('alpha', 'pg1')).toEqual({
      cluster: 'alpha',
      name: 'pg1',
      state: 'provisioned',
      goal: 'primary',
      lastTransitionAt: 10,
      message: 'c',
    });
    store.saveNodeState('alpha', 'pg1', 'installed', { goal: null, message: '', now: 30 });
    expect(store.getNode('alpha', 'pg1')!.lastTransitionAt).toBe(30);
    expect(store.getNode('alpha', 'pg1')!.goal).toBeNull();
    expect(store.listNodes().map((n) => n.name)).toEqual(['pg1', 'pg2']);
    expect(store.listNodes('beta')).toEqual([]);
    expect(store.deleteNodeRecord('alpha', 'pg2')).toBe(true);
    expect(store.deleteNodeRecord('alpha', 'pg2')).toBe(false);
    expect(store.getNode('alpha', 'pg2')).toBeUndefined();
  });

  it('refuses a node of a cluster that does not exist', () => {
    const store = openStore();
    expect(() =>
      store.saveNodeState('ghost', 'pg1', 'installed', { goal: null, message: '', now: 1 }),
    ).toThrow(/FOREIGN KEY/);
  });

  it('commitStep writes the state and the event together, from defaulting to the previous state', () => {
    const store = openStore();
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 1);
    const id1 = store.commitStep({
      cluster: 'alpha',
      node: 'pg1',
      state: 'provisioned',
      goal: 'primary',
      message: '',
      event: { ruleId: 'node.wanted', reason: 'in the spec, no machine' },
      now: 100,
    });
    const id2 = store.commitStep({
      cluster: 'alpha',
      node: 'pg1',
      state: 'installed',
      goal: 'primary',
      message: 'installed',
      event: { ruleId: 'machine.reachable', reason: 'ssh ok' },
      now: 200,
    });
    expect(id2).toBeGreaterThan(id1);
    expect(store.getNode('alpha', 'pg1')).toMatchObject({
      state: 'installed',
      lastTransitionAt: 200,
      message: 'installed',
    });
    expect(store.listEvents({ cluster: 'alpha' })).toEqual([
      {
        id: id1,
        time: 100,
        cluster: 'alpha',
        node: 'pg1',
        from: null,
        to: 'provisioned',
        ruleId: 'node.wanted',
        reason: 'in the spec, no machine',
      },
      {
        id: id2,
        time: 200,
        cluster: 'alpha',
        node: 'pg1',
        from: 'provisioned',
        to: 'installed',
        ruleId: 'machine.reachable',
        reason: 'ssh ok',
      },
    ]);
  });

  it('commitStep is atomic: a failing event insert leaves the node state untouched', () => {
    const store = openStore();
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 1);
    store.saveNodeState('alpha', 'pg1', 'installed', { goal: 'primary', message: 'before', now: 50 });
    const before = store.getNode('alpha', 'pg1');
    const promote = (event: { ruleId: string; reason: string }, now: number) =>
      store.commitStep({
        cluster: 'alpha',
        node: 'pg1',
        state: 'primary',
        goal: 'primary',
        message: 'after',
        event,
        now,
      });
    // rule_id is NOT NULL: the event insert fails after the node upsert ran
    expect(() => promote({ ruleId: null as unknown as string, reason: 'boom' }, 60)).toThrow(/NOT NULL/);
    expect(store.getNode('alpha', 'pg1')).toEqual(before);
    expect(store.listEvents()).toEqual([]);

    // and the store is still usable afterwards (no transaction left open)
    promote({ ruleId: 'primary.elected', reason: 'first primary' }, 70);
    expect(store.getNode('alpha', 'pg1')!.state).toBe('primary');
    expect(store.listEvents()).toHaveLength(1);
  });

  it('transaction() rolls back everything on a throw', () => {
    const store = openStore();
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 1);
    expect(() =>
      store.transaction(() => {
        store.saveNodeState('alpha', 'pg1', 'installed', { goal: null, message: '', now: 1 });
        store.recordEvent({
          time: 1,
          cluster: 'alpha',
          node: 'pg1',
          from: null,
          to: 'installed',
          ruleId: 'r',
          reason: '',
        });
        throw new Error('abort');
      }),
    ).toThrow('abort');
    expect(store.listNodes()).toEqual([]);
    expect(store.listEvents()).toEqual([]);
    expect(store.transaction(() => 42)).toBe(42);
  });
});

describe('events', () => {
  const ev = (store: Store, cluster: string, time: number) =>
    store.recordEvent({
      time,
      cluster,
      node: null,
      from: null,
      to: null,
      ruleId: `r${time}`,
      reason: `t${time}`,
    });

  it('lists in id order, filters by cluster and afterId, and limit keeps the last n', () => {
    const store = openStore();
    // times deliberately out of order: ordering is by id, not time
    const ids = [
      ev(store, 'a', 5),
      ev(store, 'b', 4),
      ev(store, 'a', 3),
      ev(store, 'a', 2),
      ev(store, 'b', 1),
    ];
    expect(ids).toEqual([...ids].sort((x, y) => x - y));
    expect(new Set(ids).size).toBe(5);

    expect(store.listEvents().map((e) => e.id)).toEqual(ids);
    expect(store.listEvents({ cluster: 'a' }).map((e) => e.time)).toEqual([5, 3, 2]);
    expect(store.listEvents({ afterId: ids[1] }).map((e) => e.id)).toEqual(ids.slice(2));
    expect(store.listEvents({ cluster: 'b', afterId: ids[1] }).map((e) => e.time)).toEqual([1]);
    expect(store.listEvents({ limit: 2 }).map((e) => e.id)).toEqual(ids.slice(3));
    expect(store.listEvents({ cluster: 'a', limit: 2 }).map((e) => e.time)).toEqual([3, 2]);
    expect(store.listEvents({ cluster: 'a', limit: 10 }).map((e) => e.time)).toEqual([5, 3, 2]);
    expect(store.listEvents({ limit: 0 })).toEqual([]);
    expect(store.listEvents({ afterId: ids[4] })).toEqual([]);
    expect(store.listEvents({ cluster: 'a', afterId: ids[0], limit: 1 }).map((e) => e.time)).toEqual([2]);
  });

  it('events outlive removeCluster; everything else of the cluster goes', () => {
    const store = openStore();
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 1);
    store.applySpec(spec('beta'), 'b1', 'b.yaml', 1);
    for (const c of ['alpha', 'beta']) {
      provisionPg1(store, c);
      store.saveObservation({ cluster: c, at: 3, nodes: {}, pool: null });
      store.pinHostKey(c, 'pg1', 'ssh-ed25519', 'AAAA', 4);
      store.enqueueRequest(c, 'switchover', { to: 'pg2' }, 5);
    }
    expect(store.removeCluster('alpha')).toBe(true);
    expect(store.removeCluster('alpha')).toBe(false);
    expect(store.getCluster('alpha')).toBeUndefined();
    expect(store.listNodes('alpha')).toEqual([]);
    expect(store.getObservation('alpha')).toBeUndefined();
    expect(store.getHostKey('alpha', 'pg1')).toBeUndefined();
    expect(store.pendingRequests('alpha')).toEqual([]);
    expect(store.specHistory('alpha')).toEqual([]);
    expect(store.listEvents({ cluster: 'alpha' })).toHaveLength(1);
    // beta untouched
    expect(store.listNodes('beta')).toHaveLength(1);
    expect(store.getObservation('beta')).toBeDefined();
    expect(store.getHostKey('beta', 'pg1')).toBeDefined();
    expect(store.pendingRequests('beta')).toHaveLength(1);
    // a recreated cluster starts again at generation 1
    expect(store.applySpec(spec('alpha'), 'h1', 'a.yaml', 9)).toEqual({ result: 'created', generation: 1 });
  });

  it('a cluster deleted and created again starts with its own event history (issue 19)', () => {
    const store = openStore();
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 1);
    ev(store, 'alpha', 10);
    ev(store, 'beta', 11);
    store.removeCluster('alpha');
    ev(store, 'alpha', 12); // the deletion's own last event
    // gone: its whole history
    expect(store.listEvents({ cluster: 'alpha' }).map((e) => e.time)).toEqual([10, 12]);
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 20);
    expect(store.listEvents({ cluster: 'alpha' })).toEqual([]);
    ev(store, 'alpha', 21);
    expect(store.listEvents({ cluster: 'alpha' }).map((e) => e.time)).toEqual([21]);
    expect(store.listEvents({ cluster: 'alpha', limit: 5 }).map((e) => e.time)).toEqual([21]);
    expect(store.listEvents({ cluster: 'alpha', allIncarnations: true }).map((e) => e.time)).toEqual([
      10, 12, 21,
    ]);
    expect(store.listEvents().map((e) => e.time)).toEqual([10, 11, 12, 21]);
    // re-applying a changed spec is the same incarnation
    store.applySpec(
      spec('alpha', { replication: { ...spec('alpha').replication, mode: 'sync' } }),
      'h2',
      'a.yaml',
      30,
    );
    expect(store.listEvents({ cluster: 'alpha' }).map((e) => e.time)).toEqual([21]);
  });

  it('remembers the NodeSpec a node was recorded with, until its record goes', () => {
    const store = openStore();
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 1);
    expect(store.getNodeSpec('alpha', 'pg1')).toBeUndefined();
    store.saveNodeState('alpha', 'pg1', 'absent', { goal: 'primary', message: '', now: 1 });
    expect(store.getNodeSpec('alpha', 'pg1')).toBeUndefined();
    store.saveNodeSpec('alpha', spec('alpha').nodes[0]!);
    provisionPg1(store, 'alpha');
    expect(store.getNodeSpec('alpha', 'pg1')).toEqual(spec('alpha').nodes[0]);
    store.deleteNodeRecord('alpha', 'pg1');
    expect(store.getNodeSpec('alpha', 'pg1')).toBeUndefined();
  });
});

describe('observations, host keys, requests', () => {
  it('round-trips the latest observation', () => {
    const store = openStore();
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 1);
    const obs: ClusterObservation = {
      cluster: 'alpha',
      at: 10,
      nodes: {
        pg1: {
          name: 'pg1',
          machine: { state: 'running' },
          reachable: true,
          postgres: null,
          misses: 2,
          error: 'refused',
        },
      },
      pool: null,
    };
    store.saveObservation(obs);
    store.saveObservation({ ...obs, at: 20 });
    expect(store.getObservation('alpha')).toEqual({ ...obs, at: 20 });
    expect(store.getObservation('beta')).toBeUndefined();
  });

  it('pins host keys on first use and refuses a silent change', () => {
    const store = openStore();
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 1);
    expect(store.getHostKey('alpha', 'pg1')).toBeUndefined();
    store.pinHostKey('alpha', 'pg1', 'ssh-ed25519', 'KEY1', 5);
    store.pinHostKey('alpha', 'pg1', 'ssh-ed25519', 'KEY1', 6); // same key: no-op
    expect(store.getHostKey('alpha', 'pg1')).toEqual({
      cluster: 'alpha',
      node: 'pg1',
      algo: 'ssh-ed25519',
      keyB64: 'KEY1',
      pinnedAt: 5,
    });
    expect(() => store.pinHostKey('alpha', 'pg1', 'ssh-ed25519', 'KEY2', 7)).toThrow(/already pinned/);
    expect(store.getHostKey('alpha', 'pg1')!.keyB64).toBe('KEY1');
    expect(store.forgetHostKey('alpha', 'pg1')).toBe(true);
    expect(store.forgetHostKey('alpha', 'pg1')).toBe(false);
    store.pinHostKey('alpha', 'pg1', 'ssh-ed25519', 'KEY2', 8);
    expect(store.getHostKey('alpha', 'pg1')!.keyB64).toBe('KEY2');
  });

  it('queues requests oldest first until completed', () => {
    const store = openStore();
    store.applySpec(spec('alpha'), 'h1', 'a.yaml', 1);
    const r1 = store.enqueueRequest('alpha', 'switchover', { to: 'pg2' }, 10);
    const r2 = store.enqueueRequest('alpha', 'switchover', {}, 11);
    expect(store.pendingRequests('alpha')).toEqual([
      { id: r1, cluster: 'alpha', kind: 'switchover', args: { to: 'pg2' }, createdAt: 10 },
      { id: r2, cluster: 'alpha', kind: 'switchover', args: {}, createdAt: 11 },
    ]);
    expect(store.completeRequest(r1, 12)).toBe(true);
    expect(store.completeRequest(r1, 13)).toBe(false);
    expect(store.pendingRequests('alpha').map((r) => r.id)).toEqual([r2]);
  });
});

describe('serve lock', () => {
  it('refuses a second holder with the holder pid, across connections', () => {
    const a = openStore();
    const b = openStore();
    const alive = () => true;
    expect(a.acquireServeLock(100, 'h1', 1000, alive)).toEqual({ ok: true });
    expect(b.acquireServeLock(200, 'h1', 2000, alive)).toEqual({
      ok: false,
      pid: 100,
      hostname: 'h1',
      startedAt: 1000,
    });
    // the holder re-acquiring is fine
    expect(a.acquireServeLock(100, 'h1', 3000, alive)).toEqual({ ok: true });
    expect(a.heartbeat(100, 4000)).toBe(true);
    expect(b.heartbeat(200, 4000)).toBe(false);
    // released: the next one gets it
    expect(b.releaseServeLock(200)).toBe(false);
    expect(a.releaseServeLock(100)).toBe(true);
    expect(b.acquireServeLock(200, 'h1', 5000, alive)).toEqual({ ok: true });
    expect(a.acquireServeLock(100, 'h1', 6000, alive)).toEqual({
      ok: false,
      pid: 200,
      hostname: 'h1',
      startedAt: 5000,
    });
  });

  it('replaces a dead holder on the same host, never judges another host', () => {
    const store = openStore();
    expect(store.acquireServeLock(100, 'h1', 1000, () => true)).toEqual({ ok: true });
    const asked: number[] = [];
    const deadIs100 = (pid: number) => {
      asked.push(pid);
      return pid !== 100;
    };
    // another host: pid 100 means nothing there, so isAlive is not consulted
    expect(store.acquireServeLock(300, 'h2', 1500, deadIs100)).toEqual({
      ok: false,
      pid: 100,
      hostname: 'h1',
      startedAt: 1000,
    });
    expect(asked).toEqual([]);
    expect(store.acquireServeLock(200, 'h1', 2000, deadIs100)).toEqual({ ok: true });
    expect(asked).toEqual([100]);
    expect(store.heartbeat(100, 2500)).toBe(false); // the old holder learns it lost the lock
    expect(store.acquireServeLock(300, 'h1', 3000, () => true)).toEqual({
      ok: false,
      pid: 200,
      hostname: 'h1',
      startedAt: 2000,
    });
  });
});
