// Real postgres 15 + pgpool 4.3 on lab hosts (network namespaces with their own sshd), driven
// through SshPostgresDriver / SshPoolDriver exactly as the operator drives them.
// Runs inside the lab hub namespace:
// `bash scripts/test-integration.sh test/integration/postgres-lab.test.ts`.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labSsl } from '../helpers/lab-tls.js';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import type { ClusterSpec, NodeSpec } from '../../src/spec/types.js';
import { createLabProvider, type LabProvider } from '../../src/drivers/lab/provider.js';
import { SshShell, createMemoryPins, type ShellLogEntry } from '../../src/drivers/ssh/shell.js';
import { SshPostgresDriver } from '../../src/drivers/postgres/driver.js';
import { SshPoolDriver } from '../../src/drivers/pgpool/pool-hosts.js';
import { PgopError } from '../../src/errors.js';
import { eventually, withPg } from '../helpers/eventually.js';
import { labNode, labSpec } from '../helpers/lab-spec.js';
import { SEED_PARAMS, seedDatabases, seedGrants, seedRoles } from '../helpers/seed.js';

const inLab = process.getuid?.() === 0 && !!process.env.PGOP_LAB_STATE;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const PW = {
  su: `su-${randomBytes(9).toString('hex')}`,
  repl: `repl-${randomBytes(9).toString('hex')}`,
  owner: `own-${randomBytes(9).toString('hex')}`,
  user: `usr-${randomBytes(9).toString('hex')}`,
};
const SECRETS = Object.values(PW);

/** Three lab nodes and a pool host; the seed's custom.conf (lab-sized), roles, database and
 *  grants; synchronous replication. */
function postgresLabSpec(): ClusterSpec {
  const base = labSpec({ name: 'pglab', network: '10.77.0.0/24', nodes: 3, pgpool: true });
  const { listen_addresses: _, ...seedParams } = SEED_PARAMS;
  return {
    ...base,
    postgres: {
      ...base.postgres,
      // the seed's custom.conf, lab-sized, stderr logging (no syslog in the lab)
      parameters: {
        ...seedParams,
        log_destination: 'stderr',
        shared_buffers: '32MB',
        wal_log_hints: 'on',
      },
      archiveScript: true,
      superuserPassword: { env: 'PGOP_IT_SU_PW' },
      hba: [{ type: 'host', database: 'all', user: 'all', address: '10.77.0.0/24', method: 'scram-sha-256' }],
    },
    nodes: [labNode('pg01', '10.77.0.11'), labNode('pg02', '10.77.0.12'), labNode('pg03', '10.77.0.13')],
    replication: { ...base.replication, mode: 'sync', password: { env: 'PGOP_IT_REPL_PW' } },
    roles: seedRoles({ env: 'PGOP_IT_OWNER_PW' }, { env: 'PGOP_IT_USER_PW' }),
    databases: seedDatabases(),
    grants: seedGrants(),
  };
}

async function until<T>(
  what: string,
  fn: () => Promise<T | null | undefined | false>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await sleep(50);
  }
}

/** The reconcile loop retries transient errors; so does the test (each retry is recorded). */
const retries: string[] = [];
async function retry<T>(what: string, fn: () => Promise<T>, attempts = 3): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof PgopError && err.kind === 'transient') || i >= attempts) throw err;
      retries.push(`${what}: ${err.message}`);
    }
  }
}

function psArgs(): Promise<string> {
  return new Promise((resolve) =>
    execFile('ps', ['-eo', 'args'], { maxBuffer: 8 << 20 }, (_e, out) => resolve(String(out ?? ''))),
  );
}

/** Every file under dir whose path looks like a log. */
function logFiles(dir: string, out: string[] = []): string[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = join(dir, e);
    let st;
    try {
      st = statSync(p);
    } catch {
      continue;
    }
    if (st.isDirectory()) logFiles(p, out);
    else if (/\.log$|\.csv$|\/log\/|\/pg_log\/|stderr/.test(p)) out.push(p);
  }
  return out;
}

describe.skipIf(!inLab)('postgres + pgpool drivers on lab hosts', () => {
  const spec = postgresLabSpec();
  const [pg01, pg02, pg03] = spec.nodes as [NodeSpec, NodeSpec, NodeSpec];
  let provider: LabProvider;
  let shell: SshShell;
  let pgd: SshPostgresDriver;
  let pool: SshPoolDriver;
  let poolDriver: () => SshPoolDriver;
  const shellLog: ShellLogEntry[] = [];
  const driverLog: string[] = [];
  const leaks: string[] = [];
  let sampler: NodeJS.Timeout | undefined;
  let sampling = Promise.resolve();
  const timings: Record<string, number> = {};

  // network clients over TLS (verify-full against the cluster CA pgop issued)
  const ssl = (name: string, address: string) =>
    labSsl(process.env.PGOP_LAB_STATE!, spec.name, name, address);
  const direct = (
    n: NodeSpec,
    database = 'postgres',
    user = 'postgres',
    password = PW.su,
  ): pg.ClientConfig => ({
    host: n.address,
    port: 5432,
    user,
    password,
    database,
    ssl: ssl(n.name, n.address),
  });
  const viaPool = (database: string, user: string, password: string): pg.ClientConfig => ({
    host: spec.pgpool.address,
    port: spec.pgpool.port,
    user,
    password,
    database,
    ssl: ssl('pgpool', spec.pgpool.address!),
  });

  beforeAll(async () => {
    process.env.PGOP_IT_SU_PW = PW.su;
    process.env.PGOP_IT_REPL_PW = PW.repl;
    process.env.PGOP_IT_OWNER_PW = PW.owner;
    process.env.PGOP_IT_USER_PW = PW.user;
    const pins = createMemoryPins();
    provider = createLabProvider({ hostKeys: pins });
    shell = new SshShell(pins, { log: (e) => shellLog.push(e) });
    const logger = {
      info: (o: object, m?: string) => driverLog.push(`${m} ${JSON.stringify(o)}`),
      warn: (o: object, m?: string) => driverLog.push(`WARN ${m} ${JSON.stringify(o)}`),
    };
    pgd = new SshPostgresDriver({ shell, hostRef: (c, n) => provider.hostRef(c, n), logger });
    poolDriver = () => new SshPoolDriver({ shell, hostRef: (c, h) => provider.hostRef(c, h), logger });
    pool = poolDriver();
    // Sample every process's command line for the whole run: no password may ever show.
    sampler = setInterval(() => {
      sampling = sampling.then(async () => {
        const out = await psArgs();
        for (const line of out.split('\n'))
          if (SECRETS.some((s) => line.includes(s))) leaks.push(`ps: ${line}`);
      });
    }, 100);
    const t0 = performance.now();
    await Promise.all(spec.nodes.map((n) => provider.ensureMachine(spec, n)));
    await provider.ensurePoolHost(spec);
    timings.machines = Math.round(performance.now() - t0);
  });

  afterAll(async () => {
    if (sampler) clearInterval(sampler);
    await sampling.catch(() => {});
    await pgd?.close().catch(() => {});
    await pool?.close().catch(() => {});
    await shell?.close().catch(() => {});
    if (provider && process.env.PGOP_IT_VERBOSE) {
      for (const h of [...spec.nodes, 'pool' as const]) {
        try {
          const f = join(provider.describeHost(spec, h).dir, 'log/sshd.log');
          const lines = readFileSync(f, 'utf8')
            .split('\n')
            .filter((l) => /error|fatal|disconnect|closed|timeout|kill|signal/i.test(l));
          if (lines.length) console.log(`--- ${f}\n${lines.slice(-40).join('\n')}`);
        } catch {
          /* no log */
        }
      }
      try {
        const f = join(provider.describeHost(spec, 'pool').dir, 'u01/pgpool/log/pgpool.log');
        console.log(`--- ${f}\n${readFileSync(f, 'utf8').split('\n').slice(-3000).join('\n')}`);
      } catch {
        /* no pool log */
      }
    }
    if (provider) {
      for (const n of spec.nodes)
        await provider.deleteMachine(spec, n).catch((e) => console.error(`deleteMachine ${n.name}: ${e}`));
      await provider.deleteMachine(spec, 'pool').catch((e) => console.error(`deleteMachine pool: ${e}`));
      await provider.deleteClusterResources(spec).catch((e) => console.error(`deleteClusterResources: ${e}`));
    }
    console.log(`timings (ms): ${JSON.stringify(timings)}`);
    console.log(`transient retries: ${retries.length}${retries.length ? `\n  ${retries.join('\n  ')}` : ''}`);
    if (process.env.PGOP_IT_VERBOSE) {
      console.log(driverLog.join('\n'));
      console.log(
        shellLog
          .map(
            (e) =>
              `${e.id} ${e.ms}ms ${e.code ?? e.error ?? ''} ` +
              `${(e.argv ?? []).slice(0, 3).join(' ').replace(/\s+/g, ' ').slice(0, 90)}`,
          )
          .join('\n'),
      );
    }
  });

  it('brings up a primary and two streaming standbys', async () => {
    const t0 = performance.now();
    await Promise.all(
      spec.nodes.map((n) => retry(`ensureInstalled ${n.name}`, () => pgd.ensureInstalled(spec, n))),
    );
    timings.install = Math.round(performance.now() - t0);
    const t1 = performance.now();
    await retry('ensurePrimary pg01', () => pgd.ensurePrimary(spec, pg01, [pg02.name, pg03.name]));
    timings.primary = Math.round(performance.now() - t1);
    const t2 = performance.now();
    await Promise.all([
      retry('ensureStandby pg02', () => pgd.ensureStandby(spec, pg02, pg01)),
      retry('ensureStandby pg03', () => pgd.ensureStandby(spec, pg03, pg01)),
    ]);
    timings.standbys = Math.round(performance.now() - t2);
    timings.bringUp = Math.round(performance.now() - t1);

    await withPg(direct(pg01), (c) =>
      c.query('CREATE TABLE IF NOT EXISTS lagcheck(x int); INSERT INTO lagcheck VALUES (1)'),
    );
    const p1 = await pgd.probe(spec, pg01);
    expect(p1.reachable).toBe(true);
    expect(p1.postgres).toMatchObject({
      initialized: true,
      running: true,
      inRecovery: false,
      timeline: 1,
      upstream: null,
    });
    expect(p1.postgres!.configHash).toBe(pgd.desiredConfigHash(spec, pg01));
    const replicas = await until('both replicas streaming', async () => {
      const p = await pgd.probe(spec, pg01);
      const r = p.postgres!.replicas;
      return r.length === 2 && r.every((x) => x.state === 'streaming') ? r : null;
    });
    expect(replicas.map((r) => r.name).sort()).toEqual(['pg02', 'pg03']);
    for (const s of [pg02, pg03]) {
      const p = await pgd.probe(spec, s);
      expect(p.postgres).toMatchObject({
        running: true,
        inRecovery: true,
        streaming: true,
        upstream: 'pg01',
        timeline: 1,
      });
      expect(p.postgres!.configHash).toBe(pgd.desiredConfigHash(spec, s));
      const lag = p1.postgres!.lsn - p.postgres!.lsn;
      expect(Number.isFinite(lag)).toBe(true);
      expect(p.postgres!.receiveLsn).toBeGreaterThan(0);
    }
    // idempotent: a second pass changes nothing and is quick
    const t3 = performance.now();
    await retry('ensurePrimary pg01', () => pgd.ensurePrimary(spec, pg01, [pg02.name, pg03.name]));
    await retry('ensureStandby pg02', () => pgd.ensureStandby(spec, pg02, pg01));
    timings.idempotentPass = Math.round(performance.now() - t3);
    for (const what of [
      'role created',
      'search_path set',
      'database created',
      'replication slot created',
      'initdb done',
      'cloned',
    ]) {
      expect(driverLog.filter((l) => l.startsWith(what)).length, what).toBe(
        what === 'replication slot created' ? 2 : what === 'role created' ? 3 : what === 'cloned' ? 2 : 1,
      );
    }
    // per-node settings live on the command line, not in copied files
    const auto = await retry('readFile', () =>
      shell.readFile(provider.hostRef(spec, pg02), '/u01/pg15/data/postgresql.auto.conf'),
    );
    expect(auto ?? '').not.toMatch(/listen_addresses|cluster_name|primary_conninfo/);
    const settings = await withPg(direct(pg02), (c) =>
      c.query<{ name: string; setting: string; source: string }>(
        'SELECT name, setting, source FROM pg_settings ' +
          "WHERE name IN ('listen_addresses','cluster_name','primary_slot_name')",
      ),
    );
    const byName = Object.fromEntries(settings.rows.map((r) => [r.name, r]));
    expect(byName.listen_addresses).toMatchObject({ setting: pg02.address, source: 'command line' });
    expect(byName.cluster_name).toMatchObject({ setting: 'pg02', source: 'command line' });
    expect(byName.primary_slot_name!.setting).toBe('pgop_pg02');
    // a probe is one round trip
    const t4 = performance.now();
    await pgd.probe(spec, pg02);
    timings.probe = Math.round(performance.now() - t4);
  }, 180_000);

  it('creates critlib, cl_owner, cl_user with grants, default privileges and search_path', async () => {
    await withPg(direct(pg01, 'critlib'), async (c) => {
      const roles = await c.query(
        "SELECT rolname FROM pg_roles WHERE rolname IN ('cl_owner','cl_user','replicator') ORDER BY 1",
      );
      expect(roles.rows.map((r) => r.rolname)).toEqual(['cl_owner', 'cl_user', 'replicator']);
      const sch = await c.query(
        "SELECT pg_get_userbyid(nspowner) AS owner FROM pg_namespace WHERE nspname = 'cl_owner'",
      );
      expect(sch.rows[0]?.owner).toBe('cl_owner');
      const usage = await c.query("SELECT has_schema_privilege('cl_user', 'cl_owner', 'USAGE') AS u");
      expect(usage.rows[0]?.u).toBe(true);
      const sp = await c.query("SELECT setconfig FROM pg_db_role_setting WHERE setrole = 'cl_user'::regrole");
      expect(String(sp.rows[0]?.setconfig)).toMatch(/search_path="\$user", ?cl_owner, ?public/);
      const db = await c.query(
        "SELECT pg_encoding_to_char(encoding) AS enc, datcollate FROM pg_database WHERE datname = 'critlib'",
      );
      expect(db.rows[0]?.enc).toBe('UTF8');
    });
    // the owner creates a table; the user may use it through the default privileges + search_path
    await withPg(direct(pg01, 'critlib', 'cl_owner', PW.owner), (c) =>
      c.query('CREATE TABLE cl_owner.books (id int PRIMARY KEY, title text)'),
    );
    await withPg(direct(pg01, 'critlib', 'cl_user', PW.user), async (c) => {
      await c.query("INSERT INTO books VALUES (1, 'seed')");
      const r = await c.query('SELECT title FROM books');
      expect(r.rows[0]?.title).toBe('seed');
      await expect(c.query('DROP TABLE books')).rejects.toThrow(/owner|permission/);
    });
  }, 60_000);

  it('sync standbys on: a write through pgpool is visible on both standbys', async () => {
    const t0 = performance.now();
    await retry('ensureSyncStandbys pg01', () =>
      pgd.ensureSyncStandbys(spec, pg01, [pg02.name, pg03.name], 1),
    );
    timings.syncOn = Math.round(performance.now() - t0);
    const p = await pgd.probe(spec, pg01);
    expect(p.postgres!.syncStandbyNames).toBe('ANY 1 ("pg02", "pg03")');
    await until('quorum replicas', async () => {
      const r = (await pgd.probe(spec, pg01)).postgres!.replicas;
      return r.length === 2 && r.every((x) => x.syncState === 'quorum');
    });
    const t1 = performance.now();
    await retry('ensurePool pg01', () => pool.ensurePool(spec, 'pg01'));
    timings.poolUp = Math.round(performance.now() - t1);
    const obs = await pool.observe(spec);
    expect(obs).toMatchObject({ reachable: true, primary: 'pg01' });
    expect(obs.backends.map((b) => `${b.name}:${b.status}`)).toEqual(['pg01:up', 'pg02:up', 'pg03:up']);
    expect(obs.configHash).toBe(pool.desiredConfigHash(spec));

    await withPg(viaPool('critlib', 'cl_user', PW.user), (c) =>
      c.query("INSERT INTO books VALUES (2, 'via pgpool, sync')"),
    );
    for (const s of [pg02, pg03]) {
      await until(`row on ${s.name}`, () =>
        withPg(
          direct(s, 'critlib'),
          async (c) => (await c.query('SELECT 1 FROM cl_owner.books WHERE id = 2')).rowCount === 1,
        ),
      );
    }
  }, 90_000);

  it('restores a removed pg_hba line with ensureConfigured', async () => {
    const host = provider.hostRef(spec, pg01);
    const res = await retry('exec', () =>
      shell.exec(host, ['sed', '-i', '/^hostssl\tall\tall\t10.77.0.0\\/24/d', '/u01/pg15/data/pg_hba.conf']),
    );
    expect(res.code).toBe(0);
    expect(await retry('readFile', () => shell.readFile(host, '/u01/pg15/data/pg_hba.conf'))).not.toContain(
      'hostssl\tall\tall\t10.77.0.0/24',
    );
    const drift = await pgd.probe(spec, pg01);
    expect(drift.postgres!.configHash).not.toBe(pgd.desiredConfigHash(spec, pg01));
    const t0 = performance.now();
    await retry('ensureConfigured pg01', () => pgd.ensureConfigured(spec, pg01));
    timings.ensureConfigured = Math.round(performance.now() - t0);
    expect(await retry('readFile', () => shell.readFile(host, '/u01/pg15/data/pg_hba.conf'))).toContain(
      'hostssl\tall\tall\t10.77.0.0/24\tscram-sha-256',
    );
    expect((await pgd.probe(spec, pg01)).postgres!.configHash).toBe(pgd.desiredConfigHash(spec, pg01));
    await withPg(direct(pg01, 'critlib', 'cl_user', PW.user), (c) => c.query('SELECT 1'));
  }, 60_000);

  it('applies a setting that needs a restart: the standby restarts in place', async () => {
    const spec2 = structuredClone(spec);
    spec2.postgres.parameters.shared_buffers = '48MB';
    expect((await pgd.probe(spec2, pg03)).postgres!.configHash).not.toBe(pgd.desiredConfigHash(spec2, pg03));
    const t0 = performance.now();
    await retry('ensureConfigured pg03', () => pgd.ensureConfigured(spec2, pg03));
    timings.restartForSetting = Math.round(performance.now() - t0);
    expect(driverLog.some((l) => l.startsWith('restarting postgres') && l.includes('pg03'))).toBe(true);
    const p = await pgd.probe(spec2, pg03);
    expect(p.postgres!.configHash).toBe(pgd.desiredConfigHash(spec2, pg03));
    await until('pg03 streams again', async () => (await pgd.probe(spec2, pg03)).postgres?.streaming);
    const sb = await withPg(direct(pg03), (c) => c.query<{ shared_buffers: string }>('SHOW shared_buffers'));
    expect(sb.rows[0]?.shared_buffers).toBe('48MB');
    await retry('ensureConfigured pg03', () => pgd.ensureConfigured(spec, pg03));
    expect((await pgd.probe(spec, pg03)).postgres!.configHash).toBe(pgd.desiredConfigHash(spec, pg03));
  }, 60_000);

  it('brings back a standby after kill -9 of its postmaster', async () => {
    await provider.kill(spec, pg02);
    // pgpool detaches nothing by itself: the operator detaches the node it saw fail (later,
    // after the failover, pgpool holds the new primary down and ensurePool must attach it)
    await retry('ensurePool without pg02', () => pool.ensurePool(spec, 'pg01', ['pg02']));
    expect((await pool.observe(spec)).backends.find((b) => b.name === 'pg02')?.status).toBe('down');
    // A probe soon after the kill may know only that the postmaster is gone; whether the node
    // still answers is told by the SSH look it starts in the background.
    await until('the SSH look sees pg02 up', async () => (await pgd.probe(spec, pg02)).reachable);
    const down = await pgd.probe(spec, pg02);
    if (process.env.PGOP_IT_VERBOSE) console.log('after kill', JSON.stringify(down));
    expect(down.reachable).toBe(true);
    expect(down.postgres).toMatchObject({ initialized: true, running: false });
    const t0 = performance.now();
    await retry('ensureStandby pg02', () => pgd.ensureStandby(spec, pg02, pg01));
    timings.restartAfterKill = Math.round(performance.now() - t0);
    expect((await pgd.probe(spec, pg02)).postgres).toMatchObject({
      inRecovery: true,
      streaming: true,
      upstream: 'pg01',
    });
  }, 90_000);

  it('fails over: fence pg01, promote pg02, pg03 follows on timeline 2', async () => {
    await withPg(direct(pg01, 'critlib'), (c) =>
      c.query("INSERT INTO cl_owner.books VALUES (3, 'before failover')"),
    );
    await until('pg02 has row 3', () =>
      withPg(
        direct(pg02, 'critlib'),
        async (c) => (await c.query('SELECT 1 FROM cl_owner.books WHERE id = 3')).rowCount === 1,
      ),
    );
    await provider.fenceMachine(spec, pg01);
    const gone = await pgd.probe(spec, pg01);
    expect(gone.reachable).toBe(false);
    expect(gone.postgres).toBeNull();
    const t0 = performance.now();
    await retry('promote pg02', () => pgd.promote(spec, pg02));
    timings.promote = Math.round(performance.now() - t0);
    const p2 = await pgd.probe(spec, pg02);
    expect(p2.postgres).toMatchObject({ inRecovery: false, timeline: 2, upstream: null });
    await retry('promote pg02', () => pgd.promote(spec, pg02)); // idempotent
    await withPg(direct(pg02, 'critlib'), (c) =>
      c.query("INSERT INTO cl_owner.books VALUES (4, 'after failover')"),
    );
    const t1 = performance.now();
    await retry('ensureSlots pg02', () => pgd.ensureSlots(spec, pg02, [pg03.name, pg01.name]));
    await retry('ensureStandby pg03', () => pgd.ensureStandby(spec, pg03, pg02));
    timings.repoint = Math.round(performance.now() - t1);
    // its walreceiver streams the rest of timeline 1 from pg02 before it crosses to timeline 2
    const p3 = await until('pg03 streams from pg02 on timeline 2', async () => {
      const p = await pgd.probe(spec, pg03);
      return p.postgres?.timeline === 2 && p.postgres.streaming ? p : null;
    });
    expect(p3.postgres).toMatchObject({ inRecovery: true, streaming: true, upstream: 'pg02', timeline: 2 });
    await until('pg03 has row 4', () =>
      withPg(
        direct(pg03, 'critlib'),
        async (c) => (await c.query('SELECT 1 FROM cl_owner.books WHERE id = 4')).rowCount === 1,
      ),
    );
  }, 120_000);

  it('rewinds the old primary into a standby of pg02', async () => {
    await provider.start(spec, pg01);
    // pg01 failed moments ago, so its probe answers from the last SSH look and refreshes that look
    // in the background: wait for the look taken after the start.
    const st = await until('pg01 answers over SSH again', async () => {
      const p = await pgd.probe(spec, pg01);
      return p.reachable ? p : null;
    });
    if (process.env.PGOP_IT_VERBOSE) console.log('after start', JSON.stringify(st));
    expect(st.reachable).toBe(true);
    expect(st.postgres!.running).toBe(false); // the machine came back, postgres did not
    const t0 = performance.now();
    await retry('ensureStandby pg01', () => pgd.ensureStandby(spec, pg01, pg02));
    timings.rejoinWithRewind = Math.round(performance.now() - t0);
    const rewound = driverLog.filter((l) => l.startsWith('rewound') && l.includes('"node":"pg01"'));
    expect(rewound.length).toBe(1);
    timings.pgRewind = JSON.parse(rewound[0]!.slice('rewound '.length)).ms;
    const p1 = await pgd.probe(spec, pg01);
    expect(p1.postgres).toMatchObject({ inRecovery: true, streaming: true, upstream: 'pg02', timeline: 2 });
    const slots = await withPg(direct(pg01), (c) => c.query('SELECT slot_name FROM pg_replication_slots'));
    expect(slots.rowCount).toBe(0); // stale slots of the old primary are gone
    await until('pg01 has row 4', () =>
      withPg(
        direct(pg01, 'critlib'),
        async (c) => (await c.query('SELECT 1 FROM cl_owner.books WHERE id = 4')).rowCount === 1,
      ),
    );
    const r = (await pgd.probe(spec, pg02)).postgres!.replicas.map((x) => x.name).sort();
    expect(r).toEqual(['pg01', 'pg03']);
  }, 120_000);

  it('routes pgpool to pg02', async () => {
    const t0 = performance.now();
    await retry('ensurePool pg02', () => pool.ensurePool(spec, 'pg02'));
    timings.poolReroute = Math.round(performance.now() - t0);
    const obs = await pool.observe(spec);
    expect(obs.primary).toBe('pg02');
    expect(obs.backends.find((b) => b.name === 'pg02')).toMatchObject({ status: 'up', role: 'primary' });
    expect(
      obs.backends
        .filter((b) => b.status === 'up')
        .map((b) => b.name)
        .sort(),
    ).toEqual(['pg01', 'pg02', 'pg03']);
    await withPg(viaPool('critlib', 'cl_owner', PW.owner), async (c) => {
      await c.query("INSERT INTO cl_owner.books VALUES (5, 'through pgpool to pg02')");
      const who = await c.query<{ a: string }>(
        'SELECT host(inet_server_addr()) AS a FROM cl_owner.books FOR UPDATE',
      );
      expect(who.rows[0]?.a).toBe(pg02.address);
    });
    await withPg(direct(pg02, 'critlib'), async (c) =>
      expect((await c.query('SELECT 1 FROM cl_owner.books WHERE id = 5')).rowCount).toBe(1),
    );
  }, 90_000);

  it('restarts a pgpool that stopped answering', async () => {
    const host = provider.hostRef(spec, 'pool');
    const pid = (await retry('readFile', () => shell.readFile(host, '/u01/pgpool/run/pgpool.pid')))
      ?.replace(/\0/g, '')
      .trim(); // pgpool writes a NUL
    expect(pid).toMatch(/^\d+$/);
    // freeze pgpool and all its children (they share its process group)
    expect((await retry('exec', () => shell.exec(host, ['kill', '-STOP', '--', `-${pid}`]))).code).toBe(0);
    const t0 = performance.now();
    await retry('ensurePool pg02', () => pool.ensurePool(spec, 'pg02'));
    timings.poolRestartFrozen = Math.round(performance.now() - t0);
    expect(driverLog.some((l) => l.startsWith('WARN pgpool disagrees: restarting it'))).toBe(true);
    const obs = await pool.observe(spec);
    expect(obs.primary).toBe('pg02');
    expect(obs.backends.every((b) => b.status === 'up')).toBe(true);
    // The frozen group is gone: no live member left (zombies wait for a slow reaper here, and
    // SIGKILLed members take a moment to exit).
    let alive = '';
    for (let i = 0; i < 50; i++) {
      alive = (
        await retry('exec', () =>
          shell.exec(host, ['sh', '-c', `ps -o stat= -g ${pid} | grep -vc '^Z' || true`]),
        )
      ).stdout.trim();
      if (alive === '0') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(alive).toBe('0');
  }, 60_000);

  it('starts pgpool again when its main process died alone, its children holding the ports', async () => {
    const host = provider.hostRef(spec, 'pool');
    const readPid = async () =>
      (await retry('readFile', () => shell.readFile(host, '/u01/pgpool/run/pgpool.pid')))
        ?.replace(/\0/g, '')
        .trim();
    const pid = await readPid();
    expect(pid).toMatch(/^\d+$/);
    const run = (cmd: string) => retry('exec', () => shell.exec(host, ['sh', '-c', cmd]));
    expect((await run(`kill -KILL ${pid}`)).code).toBe(0);
    const holders = `ss -Hltnp "sport = :${spec.pgpool.port}" | grep -o 'pid=[0-9]*' | sort -u`;
    // the case this covers: the old children keep the listening socket, and a new main process
    // would fail with "Address already in use"
    expect((await run(holders)).stdout.trim(), 'children of the killed main still listen').not.toBe('');
    // as a restarted `pgop serve` finds it: files rewritten, pgpool (its main process) not
    // running, so it is started; the leftovers would make that fail until they die
    const fresh = poolDriver();
    try {
      await fresh.ensurePool(spec, 'pg02');
      const obs = await fresh.observe(spec);
      expect(obs.primary).toBe('pg02');
      expect(obs.backends.every((b) => b.status === 'up')).toBe(true);
    } finally {
      await fresh.close();
    }
    const now = await readPid();
    expect(now).not.toBe(pid);
    // every listener is the new main's or in its group, none the killed one's
    const groups = await run(`${holders} | cut -d= -f2 | xargs -r ps -o pgid= -p | sort -u`);
    expect(groups.stdout.trim().split(/\s+/)).toEqual([now]);
  }, 60_000);

  it('switches over: demote pg02, promote pg01, pg02 and pg03 follow without losing a commit', async () => {
    await withPg(direct(pg02, 'critlib'), (c) =>
      c.query("INSERT INTO cl_owner.books VALUES (6, 'last on pg02')"),
    );
    const t0 = performance.now();
    await retry('demote pg02', () => pgd.demote(spec, pg02));
    // A probe within seconds of the node's last answer says "not checked yet" (postgres null)
    // while its SSH look runs in the background; the next probe reads the look.
    const seen = await eventually(async () => {
      const { postgres } = await pgd.probe(spec, pg02);
      if (!postgres) throw new Error('pg02 not looked at yet');
      return postgres;
    }, 10_000);
    expect(seen).toMatchObject({ running: false });
    await retry('promote pg01', () => pgd.promote(spec, pg01));
    await Promise.all([
      retry('ensureStandby pg02', () => pgd.ensureStandby(spec, pg02, pg01)),
      retry('ensureStandby pg03', () => pgd.ensureStandby(spec, pg03, pg01)),
    ]);
    timings.switchover = Math.round(performance.now() - t0);
    const p1 = await pgd.probe(spec, pg01);
    expect(p1.postgres).toMatchObject({ inRecovery: false, timeline: 3 });
    for (const s of [pg02, pg03])
      expect((await pgd.probe(spec, s)).postgres).toMatchObject({
        inRecovery: true,
        streaming: true,
        upstream: 'pg01',
        timeline: 3,
      });
    await withPg(direct(pg01, 'critlib'), async (c) =>
      expect((await c.query('SELECT 1 FROM cl_owner.books WHERE id = 6')).rowCount).toBe(1),
    );
    await retry('ensurePool pg01', () => pool.ensurePool(spec, 'pg01'));
    expect((await pool.observe(spec)).primary).toBe('pg01');
    // every node reports the desired configuration, the promoted one included (no pending restart)
    const restarts = () => driverLog.filter((l) => l.startsWith('restarting postgres')).length;
    const before = restarts();
    for (const n of spec.nodes) {
      await retry(`ensureConfigured ${n.name}`, () => pgd.ensureConfigured(spec, n));
      expect((await pgd.probe(spec, n)).postgres!.configHash, n.name).toBe(pgd.desiredConfigHash(spec, n));
    }
    expect(restarts()).toBe(before);
  }, 120_000);

  it('clones afresh when pg_rewind cannot work (data dir of another cluster)', async () => {
    const host = provider.hostRef(spec, pg03);
    const B = '/usr/lib/postgresql/15/bin';
    const res = await shell.exec(
      host,
      [
        'sh',
        '-c',
        `cd / && ${B}/pg_ctl -D /u01/pg15/data -m fast -w stop >/dev/null && ` +
          `rm -rf /u01/pg15/data/* && ${B}/initdb -D /u01/pg15/data -A peer >/dev/null`,
      ],
      { user: 'postgres', timeoutMs: 60_000 },
    );
    expect(res.code, res.stderr).toBe(0);
    const t0 = performance.now();
    await retry('ensureStandby pg03', () => pgd.ensureStandby(spec, pg03, pg01));
    timings.rewindFallbackClone = Math.round(performance.now() - t0);
    expect(
      driverLog.some(
        (l) => l.startsWith('WARN pg_rewind failed: cloning instead') && l.includes('"node":"pg03"'),
      ),
    ).toBe(true);
    expect((await pgd.probe(spec, pg03)).postgres).toMatchObject({
      inRecovery: true,
      streaming: true,
      upstream: 'pg01',
      timeline: 3,
    });
    const aside = await retry('exec', () =>
      shell.exec(host, ['sh', '-c', 'ls -d /u01/pg15/data.pgop-old-*']),
    );
    expect(aside.stdout.trim()).toMatch(/data\.pgop-old-\d+/);
    await withPg(direct(pg03, 'critlib'), async (c) =>
      expect((await c.query('SELECT count(*)::int AS n FROM cl_owner.books')).rows[0]?.n).toBe(6),
    );
  }, 120_000);

  it('never showed a password in ps output, driver logs, shell logs or log files', async () => {
    if (sampler) clearInterval(sampler);
    sampler = undefined;
    await sampling;
    expect(leaks).toEqual([]);
    for (const l of driverLog) for (const s of SECRETS) expect(l).not.toContain(s);
    const shellText = JSON.stringify(shellLog);
    for (const s of SECRETS) expect(shellText).not.toContain(s);
    const files = logFiles(process.env.PGOP_LAB_STATE!);
    expect(files.some((f) => /postgresql-.*\.log$/.test(f))).toBe(true);
    for (const f of files) {
      const text = readFileSync(f, 'utf8');
      for (const s of SECRETS) if (text.includes(s)) throw new Error(`password found in ${f}`);
    }
  }, 120_000); // reads every log file of the lab: slow on a loaded host
});
