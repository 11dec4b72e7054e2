// pgop itself against the real lab, as a user drives it: apply, serve until converged, writes
// through pgpool reaching both standbys, configuration drift (a spec change; a pg_hba line
// removed by hand) reconciled, a killed standby brought back, delete leaving nothing behind, and
// no secret in any output. Root only; runs inside the hub (scripts/test-integration.sh).

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labSsl } from '../helpers/lab-tls.js';
import { IN_LAB, runPgop, writeSecretFiles } from '../helpers/lab-env.js';
import { eventually } from '../helpers/eventually.js';
import { labClusterYaml, labQuery } from '../helpers/lab-cluster.js';

describe.skipIf(!IN_LAB)('pgop on the lab provider (root)', { timeout: 300_000 }, () => {
  const prefix = process.env.PGOP_LAB_PREFIX!;
  const state = process.env.PGOP_LAB_STATE!;
  const work = join(state, 'operator-test');
  const db = join(work, 'pgop.db');
  const secrets = {
    postgres: randomBytes(15).toString('base64url'),
    replicator: randomBytes(15).toString('base64url'),
    owner: randomBytes(15).toString('base64url'),
    app: randomBytes(15).toString('base64url'),
  };
  const outputs: string[] = [];
  const nodes = ['pg1', 'pg2', 'pg3'];
  const addr = (n: string) => `10.81.0.${11 + nodes.indexOf(n)}`;

  function spec(workMem: string) {
    const parameters = [
      'wal_level: replica',
      'max_wal_senders: 5',
      'max_replication_slots: 5',
      'hot_standby: "on"',
      'wal_log_hints: "on"',
      `work_mem: ${workMem}`,
      'archive_mode: "on"',
    ];
    const roles = [
      `{name: owner, password: {file: ${work}/secrets/owner}}`,
      `{name: app, password: {file: ${work}/secrets/app}, searchPath: ["$user", owner, public]}`,
    ].join(', ');
    return labClusterYaml({
      name: 'op',
      network: '10.81.0.0/24',
      work,
      nodes,
      addr,
      parameters,
      pool: '10.81.0.10',
      more: `  roles: [${roles}]
  databases: [{name: appdb, schemas: [{name: owner, owner: owner}]}]
  grants: [{role: app, database: appdb, schema: owner, tablePrivileges: [SELECT, INSERT]}]
`,
    });
  }

  function pgop(...args: string[]) {
    const r = runPgop(db, args);
    outputs.push(r.stdout, r.stderr);
    return r;
  }
  const converge = () => {
    const r = pgop('serve', '--until-converged', '--timeout', '180');
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
  };
  const client = (
    host: string,
    port = 5432,
    user = 'postgres',
    password = secrets.postgres,
    database = 'postgres',
  ): pg.ClientConfig => ({ host, port, user, password, database, ssl: labSsl(state, 'op', host, host) });
  const query = labQuery;
  const nodesJson = () =>
    JSON.parse(pgop('get', 'nodes', '-o', 'json').stdout).items as {
      name: string;
      role: string;
      state: string;
      lag_bytes: number | null;
      timeline: number;
      message: string;
    }[];

  beforeAll(() => {
    writeSecretFiles(work, secrets);
    writeFileSync(join(work, 'spec.yaml'), spec('8MB'));
  });

  afterAll(() => {
    // Tear down even after a failure (idempotent when the delete test ran).
    pgop('delete', 'cluster', 'op');
    rmSync(work, { recursive: true, force: true });
  });

  it('brings the spec up: one primary, two streaming standbys with lag, pgpool routing', () => {
    expect(pgop('apply', '-f', join(work, 'spec.yaml')).stdout).toBe('cluster/op created (generation 1)\n');
    converge();
    const items = nodesJson();
    expect(items.filter((n) => n.role === 'primary').map((n) => n.name)).toEqual(['pg1']);
    expect(items.filter((n) => n.role === 'standby' && n.state === 'standby')).toHaveLength(2);
    for (const n of items) expect(typeof n.lag_bytes).toBe('number');
    const cluster = JSON.parse(pgop('get', 'clusters', '-o', 'json').stdout).items[0];
    expect(cluster).toMatchObject({
      name: 'op',
      phase: 'Healthy',
      primary: 'pg1',
      endpoint: '10.81.0.10:9999',
    });
  });

  it('writes through pgpool reach both standbys; the app role works with its grants', async () => {
    await query(
      client('10.81.0.10', 9999),
      'CREATE TABLE IF NOT EXISTS it_writes (id int PRIMARY KEY, at timestamptz DEFAULT now())',
    );
    await query(
      client('10.81.0.10', 9999),
      'INSERT INTO it_writes (id) SELECT g FROM generate_series(1, 100) g',
    );
    for (const n of ['pg2', 'pg3']) {
      await eventually(async () => {
        const [row] = await query<{ n: string; r: boolean }>(
          client(addr(n)),
          'SELECT count(*) AS n, pg_is_in_recovery() AS r FROM it_writes',
        );
        expect(row).toEqual({ n: '100', r: true });
      });
    }
    // As the seed's cl_owner / cl_user: the schema owner creates, the user's default privileges
    // and search_path make the table usable unqualified.
    await query(
      client('10.81.0.10', 9999, 'owner', secrets.owner, 'appdb'),
      'CREATE TABLE IF NOT EXISTS owner.items (id int)',
    );
    await query(client('10.81.0.10', 9999, 'app', secrets.app, 'appdb'), 'INSERT INTO items VALUES (1)');
    const rows = await query<{ n: string }>(
      client('10.81.0.10', 9999, 'app', secrets.app, 'appdb'),
      'SELECT count(*) AS n FROM items',
    );
    expect(rows[0]!.n).toBe('1');
    await expect(
      query(client('10.81.0.10', 9999, 'app', secrets.app, 'appdb'), 'DELETE FROM items'),
    ).rejects.toThrow(/permission denied/);
  });

  it('reconciles drift: a changed parameter in the spec, and a pg_hba line removed by hand', async () => {
    writeFileSync(join(work, 'spec.yaml'), spec('16MB'));
    expect(pgop('apply', '-f', join(work, 'spec.yaml')).stdout).toBe(
      'cluster/op configured (generation 2)\n',
    );
    converge();
    for (const n of nodes)
      expect((await query<{ work_mem: string }>(client(addr(n)), 'SHOW work_mem'))[0]!.work_mem).toBe('16MB');

    const hba = join(state, 'op', 'pg2', 'u01', 'pg15', 'data', 'pg_hba.conf');
    const before = readFileSync(hba, 'utf8');
    const line = before
      .split('\n')
      .find((l) => l.includes('10.81.0.0/24') && l.startsWith('host') && !l.includes('replication'))!;
    expect(line).toBeTruthy();
    writeFileSync(hba, before.replace(`${line}\n`, ''));
    expect(readFileSync(hba, 'utf8')).not.toContain(line);
    converge();
    expect(readFileSync(hba, 'utf8')).toContain(line);
    expect(pgop('get', 'events', '--cluster', 'op').stdout).toContain('node.config-drift');
  });

  it('brings a killed standby back', async () => {
    expect(pgop('lab', 'fault', 'pg3', 'kill', '--cluster', 'op').code).toBe(0);
    converge();
    const pg3 = nodesJson().find((n) => n.name === 'pg3')!;
    expect(pg3).toMatchObject({ role: 'standby', state: 'standby' });
    await eventually(async () => {
      const [row] = await query<{ n: string }>(client(addr('pg3')), 'SELECT count(*) AS n FROM it_writes');
      expect(row!.n).toBe('100');
    });
  });

  it('shows no secret in any output, event or log', () => {
    outputs.push(
      pgop('describe', 'cluster', 'op').stdout,
      pgop('get', 'events', '-o', 'json').stdout,
      pgop('get', 'nodes', '-o', 'wide').stdout,
    );
    const ps = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout;
    for (const s of Object.values(secrets)) {
      for (const out of [...outputs, ps]) expect(out.includes(s)).toBe(false);
    }
  });

  it('delete tears everything down: no namespace, process or directory of the cluster left', () => {
    const r = pgop('delete', 'cluster', 'op');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(pgop('get', 'clusters', '-o', 'json').stdout).items).toEqual([]);
    const left = existsSync('/run/netns')
      ? readdirSync('/run/netns').filter((n) => n.startsWith(`${prefix}-op-`))
      : [];
    expect(left).toEqual([]);
    expect(existsSync(join(state, 'op'))).toBe(false);
    const procs = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
      .stdout.split('\n')
      .filter((l) => l.includes(join(state, 'op')));
    expect(procs).toEqual([]);
  });
});
