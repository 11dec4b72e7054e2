// WAL archiving with pgBackRest on the real lab, as a user runs it (apply, serve): the
// repository's server on the operator's side (the hub, the cluster's gateway address), as the
// unprivileged pgbackrest user, the stanza made from the primary, every switched segment in the
// repository and encrypted, archiving carried on by the new primary after a kill -9 (its
// timeline's history file and segments), a failing archive and its recovery as events, and the
// server gone with the cluster (the repository kept). Root only; runs inside the hub
// (scripts/test-integration.sh). ~90 s.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  openSync,
  existsSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labSsl } from '../helpers/lab-tls.js';
import { IN_LAB, PGOP_BIN, runPgop, writeSecretFiles } from '../helpers/lab-env.js';
import { eventually } from '../helpers/eventually.js';
import { labClusterYaml, labQuery } from '../helpers/lab-cluster.js';

describe.skipIf(!IN_LAB)(
  'WAL archiving to a pgBackRest repository on the lab (root)',
  { timeout: 400_000 },
  () => {
    const state = process.env.PGOP_LAB_STATE!;
    const work = join(state, 'backup-test');
    const db = join(work, 'pgop.db');
    // not in work (0700: the server's user could not reach it)
    const repo = join(state, 'backup-test-repo');
    const secrets = {
      postgres: randomBytes(15).toString('base64url'),
      replicator: randomBytes(15).toString('base64url'),
      backup: randomBytes(24).toString('base64url'),
    };
    const nodes = ['pg1', 'pg2', 'pg3'];
    const addr = (n: string) => `10.87.0.${11 + nodes.indexOf(n)}`;
    const outputs: string[] = [];
    let serve: ChildProcess | null = null;

    const spec = labClusterYaml({
      name: 'bk',
      network: '10.87.0.0/24',
      work,
      nodes,
      addr,
      parameters: [
        'wal_level: replica',
        'max_wal_senders: 5',
        'max_replication_slots: 5',
        'wal_log_hints: "on"',
      ],
      pool: '10.87.0.10',
      // no archiveScript: with backup, pgBackRest archives (the default turns the script off)
      more: `  failureDetection:
    {probeIntervalMs: 250, missesBeforeFailover: 3, connectTimeoutMs: 300, retryIntervalMs: 50}
  backup:
    repo: {path: ${repo}}
    archiveTimeoutS: 5
    encryption: {passphrase: {file: ${work}/secrets/backup}}
`,
    });

    function pgop(...args: string[]) {
      const r = runPgop(db, args);
      outputs.push(r.stdout, r.stderr);
      return r;
    }
    const primaryClient = (): pg.ClientConfig => {
      const p = cluster().primary as string;
      return {
        host: addr(p),
        port: 5432,
        user: 'postgres',
        password: secrets.postgres,
        database: 'postgres',
        ssl: labSsl(state, 'bk', p, addr(p)),
      };
    };
    const cluster = () => JSON.parse(pgop('get', 'clusters', '-o', 'json').stdout).items[0];
    const events = () =>
      JSON.parse(pgop('get', 'events', '--cluster', 'bk', '-o', 'json').stdout).items as {
        rule: string;
        reason: string;
      }[];
    const backups = () =>
      JSON.parse(pgop('get', 'backups', '--cluster', 'bk', '-o', 'json').stdout).items as {
        label: string;
        type: string;
        state: string;
        prior: string | null;
        size_bytes: number;
        copied_bytes: number;
        lsn_start: string;
      }[];
    /** every directory of the stanza's archive: made read-only for its owner (the server's
     *  user), archiving fails */
    const archiveDirs = () => {
      const dir = join(repo, 'archive', 'bk');
      return readdirSync(dir, { recursive: true, encoding: 'utf8' })
        .map((d) => join(dir, d))
        .filter((d) => statSync(d).isDirectory());
    };
    const archived = () =>
      readdirSync(join(repo, 'archive', 'bk'), { recursive: true, encoding: 'utf8' }).map((f) =>
        f.split('/').pop()!,
      );
    const serverDir = () => {
      const base = '/var/lib/pgop/backup-servers';
      const hash = readdirSync(base).find(
        (d) => d.startsWith('bk-') && existsSync(join(base, d, 'server.pid')) && serverOf(join(base, d)),
      );
      return hash ? join(base, hash) : null;
    };
    /** the server's pid when its configuration is this test's (the hash names the TLS directory) */
    const serverOf = (dir: string) => {
      const pid = Number(readFileSync(join(dir, 'server.pid'), 'utf8'));
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir) ? pid : null;
      } catch {
        return null;
      }
    };

    beforeAll(() => {
      writeSecretFiles(work, secrets);
      writeFileSync(join(work, 'spec.yaml'), spec);
    });

    afterAll(async () => {
      if (serve && serve.exitCode === null) {
        const gone = new Promise((r) => serve!.once('exit', r));
        serve.kill('SIGTERM');
        await Promise.race([gone, new Promise((r) => setTimeout(r, 15_000))]);
      }
      pgop('delete', 'cluster', 'bk');
      rmSync(work, { recursive: true, force: true });
    });

    it('archives every switched segment, encrypted, through a server that runs as pgbackrest', async () => {
      expect(pgop('apply', '-f', join(work, 'spec.yaml')).code).toBe(0);
      const log = openSync(join(state, 'backup-test-serve.log'), 'a');
      serve = spawn(process.execPath, [PGOP_BIN, '--db', db, 'serve'], { stdio: ['ignore', log, log] });
      closeSync(log);
      await eventually(async () => {
        const c = cluster();
        expect({ ...c, message: '' }, c.message).toMatchObject({ phase: 'Healthy', primary: 'pg1' });
      }, 180_000);
      const [sw] = await eventually(() =>
        labQuery<{ wal: string }>(primaryClient(), 'SELECT pg_walfile_name(pg_switch_wal()) AS wal'),
      );
      await eventually(async () => {
        expect(archived().some((f) => f.startsWith(sw!.wal))).toBe(true);
        expect(cluster().archive).toMatchObject({
          state: 'ok',
          repository: repo,
          failed: expect.any(Number),
        });
      }, 60_000);
      const segment = readdirSync(join(repo, 'archive', 'bk'), { recursive: true, encoding: 'utf8' }).find(
        (f) => f.includes(sw!.wal),
      )!;
      expect(
        readFileSync(join(repo, 'archive', 'bk', segment))
          .subarray(0, 8)
          .toString(),
      ).toBe('Salted__');
      // the server: pgbackrest's process, its repository pgbackrest's; root never writes there
      const dir = serverDir()!;
      const pid = serverOf(dir)!;
      const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
      expect(uid).not.toBe(0);
      expect(statSync(repo).uid).toBe(uid);
      // the passphrase is in no configuration hash, output or event
      expect(readFileSync(join(state, 'bk', 'pg1', 'u01', 'pg15', 'pgbackrest.conf'), 'utf8')).not.toContain(
        secrets.backup,
      );
      expect(events().map((e) => e.rule)).toEqual(
        expect.arrayContaining(['backup.repo-server', 'backup.stanza']),
      );
    });

    it('pgop backup takes a full and an incr backup from the primary; get backups lists them', async () => {
      await labQuery(primaryClient(), 'CREATE TABLE IF NOT EXISTS t (id int)');
      await labQuery(primaryClient(), 'INSERT INTO t SELECT generate_series(1, 100000)');
      const full = pgop('backup', 'bk', '--type', 'full');
      expect(full.code, full.stdout + full.stderr).toBe(0);
      expect(full.stdout).toMatch(/full backup \d{8}-\d{6}F: /);
      const incr = pgop('backup', 'bk', '--type', 'incr');
      expect(incr.code, incr.stdout + incr.stderr).toBe(0);
      const items = backups();
      expect(items.map((b) => b.type)).toEqual(['full', 'incr']);
      const [f, i] = items;
      expect(f).toMatchObject({ cluster: 'bk', state: 'ok', prior: null, job: expect.any(Number) });
      expect(f!.size_bytes).toBeGreaterThan(3_000_000);
      expect(f!.lsn_start).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
      expect(i).toMatchObject({ state: 'ok', prior: f!.label });
      expect(i!.copied_bytes).toBeLessThan(f!.copied_bytes);
      // copied through the primary's own pgbackrest server, which runs as postgres
      const pidFile = join(state, 'bk', 'pg1', 'u01', 'pg15', 'pgbackrest', 'server.pid');
      const pid = Number(readFileSync(pidFile, 'utf8'));
      const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
      expect(uid).toBe(Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim()));
      expect(pgop('get', 'clusters').stdout).toMatch(/incr \d+s/);
      expect(events().map((e) => e.rule)).toEqual(
        expect.arrayContaining(['backup.requested', 'backup.succeeded']),
      );
    });

    it('after kill -9 of the primary, the new one archives its timeline and what the old left', async () => {
      // segments the primary completes but cannot push (its archive read-only), then its death
      const dirs = archiveDirs();
      for (const d of dirs) chmodSync(d, 0o500);
      const unpushed: string[] = [];
      try {
        for (let i = 0; i < 3; i++) {
          await labQuery(primaryClient(), 'INSERT INTO t SELECT generate_series(1, 1000)');
          const [s] = await labQuery<{ wal: string }>(
            primaryClient(),
            'SELECT pg_walfile_name(pg_switch_wal()) AS wal',
          );
          unpushed.push(s!.wal);
        }
        await labQuery(primaryClient(), 'INSERT INTO t SELECT generate_series(1, 1000)');
        expect(archived().filter((f) => unpushed.some((u) => f.startsWith(u)))).toEqual([]);
        expect(pgop('lab', 'fault', 'pg1', 'kill').code).toBe(0);
      } finally {
        for (const d of dirs) chmodSync(d, 0o750);
      }
      await eventually(async () => expect(cluster().primary).not.toBe('pg1'), 60_000);
      await eventually(async () => {
        const files = archived();
        for (const u of unpushed)
          expect(
            files.some((f) => f.startsWith(u)),
            u,
          ).toBe(true);
      }, 60_000);
      // pushed from the new primary: the dead one never could
      const pushed = events().find((e) => e.rule === 'backup.timelines-pushed')!;
      expect(Number(/: (\d+) of \d+ segments/.exec(pushed.reason)![1])).toBeGreaterThanOrEqual(
        unpushed.length,
      );
      const [sw] = await eventually(() =>
        labQuery<{ wal: string }>(primaryClient(), 'SELECT pg_walfile_name(pg_switch_wal()) AS wal'),
      );
      // the segment's name starts with its timeline (the checkpoint's may still be the old one)
      const tli = parseInt(sw!.wal.slice(0, 8), 16);
      expect(tli).toBeGreaterThan(1);
      await eventually(async () => {
        const files = archived();
        expect(files).toContain(`${sw!.wal.slice(0, 8)}.history`);
        expect(files.some((f) => f.startsWith(sw!.wal))).toBe(true);
      }, 60_000);
      // and backups now copy from the new primary, through its own pgbackrest server
      const incr = pgop('backup', 'bk', '--type', 'incr');
      const jobs = pgop('get', 'jobs', '--cluster', 'bk', '-o', 'wide').stdout;
      expect(incr.code, `${incr.stdout}${incr.stderr}${jobs}${JSON.stringify(events().slice(-8))}`).toBe(0);
      expect(backups().at(-1)!.lsn_start.startsWith('0/')).toBe(true);
    });

    it('a failing archive becomes an event, and its recovery another', async () => {
      const dirs = archiveDirs();
      for (const d of dirs) chmodSync(d, 0o500);
      try {
        await eventually(async () => {
          await labQuery(primaryClient(), 'SELECT pg_switch_wal()');
          expect(events().map((e) => e.rule)).toContain('backup.archive-failed');
          expect(cluster().archive.state).toBe('failing');
        }, 60_000);
      } finally {
        for (const d of dirs) chmodSync(d, 0o750);
      }
      await eventually(async () => {
        expect(events().map((e) => e.rule)).toContain('backup.archive-resumed');
        expect(cluster().archive.state).toBe('ok');
      }, 60_000);
    });

    it('takes scheduled backups by itself and keeps only what retention says', async () => {
      const labels = new Set(backups().map((b) => b.label));
      const scheduled = spec.replace(
        '    archiveTimeoutS: 5\n',
        '    archiveTimeoutS: 5\n    schedule: {full: "*/12 * * * * *"}\n    retention: {full: 2}\n',
      );
      writeFileSync(join(work, 'spec.yaml'), scheduled);
      expect(pgop('apply', '-f', join(work, 'spec.yaml')).code).toBe(0);
      // two fulls of the schedule's: retention keeps those two, and expires the older ones
      await eventually(async () => {
        const fulls = backups().filter((b) => b.type === 'full' && b.state === 'ok');
        expect(fulls.filter((b) => !labels.has(b.label)).length).toBeGreaterThanOrEqual(2);
        expect(fulls).toHaveLength(2);
        expect(backups().some((b) => labels.has(b.label))).toBe(false);
      }, 120_000);
      expect(events().filter((e) => e.rule === 'backup.scheduled').length).toBeGreaterThanOrEqual(2);
      writeFileSync(join(work, 'spec.yaml'), spec);
      expect(pgop('apply', '-f', join(work, 'spec.yaml')).code).toBe(0);
    });

    it('deleting the cluster stops its server and keeps the repository', async () => {
      const dir = serverDir()!;
      const pid = serverOf(dir)!;
      expect(pgop('delete', 'cluster', 'bk').code).toBe(0);
      await eventually(
        async () => expect(pgop('get', 'clusters', '-o', 'json').stdout).not.toContain('"bk"'),
        120_000,
      );
      await eventually(async () => expect(existsSync(`/proc/${pid}`)).toBe(false), 120_000);
      expect(existsSync(dir)).toBe(false);
      expect(existsSync(join(repo, 'archive', 'bk', 'archive.info'))).toBe(true);
      for (const text of outputs) expect(text).not.toContain(secrets.backup);
    });
  },
);
