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

    it('after kill -9 of the primary, the new primary archives its timeline and history', async () => {
      expect(pgop('lab', 'fault', 'pg1', 'kill').code).toBe(0);
      await eventually(async () => expect(cluster().primary).not.toBe('pg1'), 60_000);
      const [sw] = await eventually(() =>
        labQuery<{ wal: string; tli: number }>(
          primaryClient(),
          'SELECT pg_walfile_name(pg_switch_wal()) AS wal, timeline_id AS tli FROM pg_control_checkpoint()',
        ),
      );
      const history = `${sw!.tli.toString(16).toUpperCase().padStart(8, '0')}.history`;
      expect(sw!.tli).toBeGreaterThan(1);
      await eventually(async () => {
        const files = archived();
        expect(files).toContain(history);
        expect(files.some((f) => f.startsWith(sw!.wal))).toBe(true);
      }, 60_000);
    });

    it('a failing archive becomes an event, and its recovery another', async () => {
      // every directory of the stanza's archive read-only for its owner (the server's user)
      const dir = join(repo, 'archive', 'bk');
      const dirs = readdirSync(dir, { recursive: true, encoding: 'utf8' })
        .map((d) => join(dir, d))
        .filter((d) => statSync(d).isDirectory());
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
