// Point-in-time restore on the real lab, as a user runs it (apply, serve, pgop backup, pgop
// restore): rows written with their commit times, a backup, more rows, a time T, more rows, a
// kill -9 of the primary (failover), rows on the new timeline; then (a) `restore --to-time T`
// into a new cluster holds exactly the rows committed at or before T, and (b) `restore --latest`
// into another one holds every acknowledged row (sync mode), those after the failover included.
// Both restored clusters are ordinary pgop clusters (a standby, pgpool). Root only; runs inside
// the hub (scripts/test-integration.sh). Budget: ~3 min.

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labSsl } from '../helpers/lab-tls.js';
import { IN_LAB, PGOP_BIN, runPgop, writeSecretFiles } from '../helpers/lab-env.js';
import { eventually } from '../helpers/eventually.js';
import { labClusterYaml, labQuery } from '../helpers/lab-cluster.js';

interface Row {
  id: number;
  at: string;
}

describe.skipIf(!IN_LAB)(
  'point-in-time restore into new clusters on the lab (root)',
  { timeout: 600_000 },
  () => {
    const state = process.env.PGOP_LAB_STATE!;
    const work = join(state, 'restore-test');
    const db = join(work, 'pgop.db');
    const repo = join(state, 'restore-test-repo');
    const secrets = {
      postgres: randomBytes(15).toString('base64url'),
      replicator: randomBytes(15).toString('base64url'),
      backup: randomBytes(24).toString('base64url'),
    };
    let serve: ChildProcess | null = null;
    const nets = { src: '10.89.0', at: '10.90.0', latest: '10.95.0' } as const;
    const names = { src: 'pitr', at: 'pitr-at', latest: 'pitr-latest' } as const;

    const specOf = (which: keyof typeof nets, nodes: string[]) =>
      labClusterYaml({
        name: names[which],
        network: `${nets[which]}.0/24`,
        work,
        nodes,
        addr: (n) => `${nets[which]}.${11 + nodes.indexOf(n)}`,
        parameters: [
          'wal_level: replica',
          'max_wal_senders: 5',
          'max_replication_slots: 5',
          'wal_log_hints: "on"',
        ],
        pool: `${nets[which]}.10`,
        more: `  failureDetection:
    {probeIntervalMs: 250, missesBeforeFailover: 3, connectTimeoutMs: 300, retryIntervalMs: 50}
  backup:
    repo: {path: ${repo}}
    archiveTimeoutS: 5
    encryption: {passphrase: {file: ${work}/secrets/backup}}
`,
      });

    function pgop(...args: string[]) {
      return runPgop(db, args);
    }
    const clusterOf = (name: string) =>
      (
        JSON.parse(pgop('get', 'clusters', '-o', 'json').stdout).items as {
          name: string;
          primary: string | null;
        }[]
      ).find((c) => c.name === name);
    const client = (which: keyof typeof nets): pg.ClientConfig => {
      const c = clusterOf(names[which])!;
      const nodes = which === 'src' ? ['pg1', 'pg2', 'pg3'] : ['r1', 'r2'];
      const address = `${nets[which]}.${11 + nodes.indexOf(c.primary!)}`;
      return {
        host: address,
        port: 5432,
        user: 'postgres',
        password: secrets.postgres,
        database: 'postgres',
        ssl: labSsl(state, names[which], c.primary!, address),
      };
    };
    /** rows committed, each with its commit's time (clock_timestamp after the insert commits) */
    const write = async (n: number) => {
      const cfg = client('src');
      for (let i = 0; i < n; i++) await labQuery(cfg, 'INSERT INTO rows (at) VALUES (clock_timestamp())');
    };
    const rows = (which: keyof typeof nets) =>
      labQuery<Row>(
        client(which),
        "SELECT id, to_char(at, 'YYYY-MM-DD HH24:MI:SS.US') AS at FROM rows ORDER BY id",
      );
    const checksum = async (which: keyof typeof nets) =>
      (
        await labQuery<{ sum: string }>(
          client(which),
          "SELECT md5(string_agg(id::text, ',' ORDER BY id)) AS sum FROM rows",
        )
      )[0]!.sum;

    beforeAll(async () => {
      writeSecretFiles(work, secrets);
      writeFileSync(join(work, 'src.yaml'), specOf('src', ['pg1', 'pg2', 'pg3']));
      writeFileSync(join(work, 'at.yaml'), specOf('at', ['r1', 'r2']));
      writeFileSync(join(work, 'latest.yaml'), specOf('latest', ['r1', 'r2']));
      expect(pgop('apply', '-f', join(work, 'src.yaml')).code).toBe(0);
      const log = openSync(process.env.PGOP_KEEP_LOG ?? join(state, 'restore-test-serve.log'), 'a');
      serve = spawn(process.execPath, [PGOP_BIN, '--db', db, 'serve'], { stdio: ['ignore', log, log] });
      closeSync(log);
    });

    afterAll(async () => {
      if (serve && serve.exitCode === null) {
        const gone = new Promise((r) => serve!.once('exit', r));
        serve.kill('SIGTERM');
        await Promise.race([gone, new Promise((r) => setTimeout(r, 15_000))]);
      }
      for (const n of Object.values(names)) pgop('delete', 'cluster', n);
      rmSync(work, { recursive: true, force: true });
      rmSync(repo, { recursive: true, force: true });
    });

    let before: Row[] = [];
    let acknowledged: Row[] = [];
    let target = '';

    it('writes, backs up, writes, notes T, writes, fails over, and writes on the new timeline', async () => {
      // the primary the cluster settled on (pg1 unless a node missed its probes on the way up,
      // which this file is not about): it is the one killed below
      let first = '';
      await eventually(async () => {
        const c = JSON.parse(pgop('get', 'clusters', '-o', 'json').stdout).items[0];
        expect({ ...c, message: '' }, c.message).toMatchObject({ phase: 'Healthy' });
        expect(c.archive.state).toBe('ok');
        first = c.primary;
      }, 180_000);
      await labQuery(client('src'), 'CREATE TABLE rows (id serial PRIMARY KEY, at timestamptz NOT NULL)');
      await write(20);
      const backup = pgop('backup', names.src, '--type', 'full');
      expect(backup.code, backup.stdout + backup.stderr).toBe(0);
      await write(20);
      // T: a time between two commits, as postgres prints it (microseconds, UTC)
      const [t] = await labQuery<{ t: string }>(
        client('src'),
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' AS t",
      );
      target = t!.t;
      before = await rows('src');
      await new Promise((r) => setTimeout(r, 50));
      await write(20);
      expect(pgop('lab', 'fault', first, 'kill').code).toBe(0);
      await eventually(async () => expect(clusterOf(names.src)!.primary).not.toBe(first), 60_000);
      await eventually(() => write(20), 60_000);
      acknowledged = await rows('src');
      expect(acknowledged.length).toBeGreaterThanOrEqual(80);
      expect(before.length).toBe(40);
      // the new timeline's last rows reach the archive
      const [sw] = await labQuery<{ wal: string }>(
        client('src'),
        'SELECT pg_walfile_name(pg_switch_wal()) AS wal',
      );
      await eventually(async () => {
        const c = JSON.parse(pgop('get', 'clusters', names.src, '-o', 'json').stdout).items[0];
        expect(c.archive.last_archived_wal >= sw!.wal).toBe(true);
      }, 60_000);
    });

    it('restore --to-time T: a new cluster with exactly the rows committed at or before T', async () => {
      const r = pgop(
        'restore',
        '--from',
        names.src,
        '--to-time',
        target,
        '-f',
        join(work, 'at.yaml'),
        '--timeout',
        '150s',
      );
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/restored and healthy/);
      const got = await rows('at');
      expect(got.map((x) => x.id)).toEqual(before.map((x) => x.id));
      expect(got.every((x) => `${x.at}+00` <= target)).toBe(true);
      expect(await checksum('at')).toBe(await checksumOf(before));
      // an ordinary cluster: a streaming standby, and its own stanza archiving
      await eventually(async () => {
        const c = JSON.parse(pgop('get', 'clusters', names.at, '-o', 'json').stdout).items[0];
        expect(c).toMatchObject({ phase: 'Healthy', archive: { state: 'ok' } });
      }, 120_000);
    });

    it('restore --latest: every acknowledged row, those after the failover included', async () => {
      const r = pgop('restore', '--from', names.src, '--latest', '-f', join(work, 'latest.yaml'));
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const got = await rows('latest');
      expect(got.map((x) => x.id)).toEqual(acknowledged.map((x) => x.id));
      expect(await checksum('latest')).toBe(await checksumOf(acknowledged));
    });

    /** the same md5 as the SQL above, over rows read elsewhere */
    async function checksumOf(list: Row[]): Promise<string> {
      const { createHash } = await import('node:crypto');
      return createHash('md5')
        .update(list.map((x) => String(x.id)).join(','))
        .digest('hex');
    }
  },
);
