// bench:backup (root) — what a user of backups feels, on the lab: a full backup and a restore of a
// data set of at least 1 GB (pgbench -i), through pgop (`pgop backup`, `pgop restore --latest`
// into a new cluster), against plain `pg_basebackup` into a local directory in the same run; and
// the RPO of the WAL archive at a kill -9 of the primary under pgbench load in async mode (the
// age of the last archived segment when the primary dies). Runs inside its own lab hub
// namespace (unique prefix); everything it made is deleted at the end.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const SCALE = Number(process.env.PGOP_BENCH_SCALE ?? 70); // pgbench -s 70: about 1.05 GB
const KILLS = Number(process.env.PGOP_BENCH_TRIALS ?? 3);

if (process.getuid?.() !== 0) {
  console.log('bench:backup needs root (network namespaces, sshd, postgres, pgbackrest); skipped');
  process.exit(0);
}
process.env.PGOP_LAB_PREFIX ??= `pbk${process.pid.toString(36).slice(-4)}`;
const state = process.env.PGOP_BENCH_STATE ?? `/var/lib/pgop/bench-${process.env.PGOP_LAB_PREFIX}`;
process.env.PGOP_LAB_STATE = state;

const { enterLabHubIfNeeded } = await import('../src/cli/lab-ns.js');
await enterLabHubIfNeeded('', true); // re-runs this file inside the hub (never returns there)

const { PGOP_BIN, runPgop, writeSecretFiles } = await import('../test/helpers/lab-env.js');
const { labClusterYaml, labQuery } = await import('../test/helpers/lab-cluster.js');
const { eventually } = await import('../test/helpers/eventually.js');
const { labSsl } = await import('../test/helpers/lab-tls.js');

const work = join(state, 'bench-backup');
const db = join(work, 'pgop.db');
const repo = join(state, 'bench-backup-repo');
const secrets = {
  postgres: randomBytes(15).toString('base64url'),
  replicator: randomBytes(15).toString('base64url'),
  backup: randomBytes(24).toString('base64url'),
};
const SRC = { name: 'bkb', net: '10.96.0', nodes: ['b1', 'b2'] };
const COPY = { name: 'bkr', net: '10.99.0', nodes: ['r1'] };

const yaml = (c: typeof SRC) =>
  labClusterYaml({
    name: c.name,
    network: `${c.net}.0/24`,
    work,
    nodes: c.nodes,
    addr: (n) => `${c.net}.${11 + c.nodes.indexOf(n)}`,
    parameters: [
      'wal_level: replica',
      'max_wal_senders: 5',
      'max_replication_slots: 5',
      'wal_log_hints: "on"',
    ],
    pool: `${c.net}.10`,
    more: `  failureDetection:
    {probeIntervalMs: 250, missesBeforeFailover: 3, connectTimeoutMs: 300, retryIntervalMs: 50}
  backup:
    repo: {path: ${repo}}
    encryption: {passphrase: {file: ${work}/secrets/backup}}
`,
  }).replace('replication: {mode: sync, syncQuorum: 1,', 'replication: {mode: async,');

const pgop = (...args: string[]) => runPgop(db, args);
const clusterOf = (name: string) =>
  (JSON.parse(pgop('get', 'clusters', '-o', 'json').stdout).items as ClusterItem[]).find(
    (c) => c.name === name,
  );
interface ClusterItem {
  name: string;
  phase: string;
  message: string;
  primary: string | null;
  archive?: { state: string; last_archived_at: string | null };
}
const addressOf = (c: typeof SRC, node: string) => `${c.net}.${11 + c.nodes.indexOf(node)}`;
const primaryCfg = (c: typeof SRC) => {
  const p = clusterOf(c.name)!.primary!;
  return {
    host: addressOf(c, p),
    port: 5432,
    user: 'postgres',
    password: secrets.postgres,
    database: 'postgres',
    ssl: labSsl(state, c.name, p, addressOf(c, p)),
  };
};
const pgEnv = (password: string) => ({ ...process.env, PGPASSWORD: password, PGSSLMODE: 'require' });
const seconds = (t0: number) => (performance.now() - t0) / 1000;
const mb = (bytes: number) => bytes / 1e6;

const running: { serve: ChildProcess | null } = { serve: null };
const rows: string[][] = [];

async function main(): Promise<void> {
  // the repository's user (pgbackrest) must reach the repository through the state directory
  mkdirSync(state, { recursive: true, mode: 0o755 });
  mkdirSync(work, { recursive: true, mode: 0o700 });
  writeSecretFiles(work, secrets);
  writeFileSync(join(work, 'src.yaml'), yaml(SRC));
  writeFileSync(join(work, 'copy.yaml'), yaml(COPY));
  if (pgop('apply', '-f', join(work, 'src.yaml')).code !== 0) throw new Error('apply failed');
  const log = openSync(join(state, 'bench-backup-serve.log'), 'a');
  running.serve = spawn(process.execPath, [PGOP_BIN, '--db', db, 'serve'], { stdio: ['ignore', log, log] });
  closeSync(log);
  await eventually(async () => {
    const c = clusterOf(SRC.name);
    if (c?.phase !== 'Healthy' || c.archive?.state !== 'ok')
      throw new Error(`not ready: ${c?.phase} ${c?.archive?.state}: ${c?.message}`);
  }, 240_000);
  const primary = addressOf(SRC, clusterOf(SRC.name)!.primary!);

  let t0 = performance.now();
  const init = spawnSync(
    'pgbench',
    ['-i', '-q', '-s', String(SCALE), '-h', primary, '-U', 'postgres', 'postgres'],
    {
      env: pgEnv(secrets.postgres),
      encoding: 'utf8',
    },
  );
  if (init.status !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`);
  const [size] = await labQuery<{ bytes: string }>(
    primaryCfg(SRC),
    'SELECT sum(pg_database_size(oid))::text AS bytes FROM pg_database',
  );
  const dbBytes = Number(size!.bytes);
  console.log(
    `data set: pgbench -s ${SCALE}, ${(dbBytes / 2 ** 30).toFixed(2)} GiB in ${seconds(t0).toFixed(0)} s`,
  );

  // baseline: pg_basebackup into a local directory (plain format, WAL fetched, fast checkpoint)
  const target = join(work, 'basebackup');
  t0 = performance.now();
  const base = spawnSync(
    'pg_basebackup',
    ['-h', primary, '-U', 'replicator', '-D', target, '-X', 'fetch', '-c', 'fast', '-Fp'],
    { env: pgEnv(secrets.replicator), encoding: 'utf8' },
  );
  if (base.status !== 0) throw new Error(`pg_basebackup failed: ${base.stderr}`);
  const baseS = seconds(t0);
  rmSync(target, { recursive: true, force: true });
  rows.push(['pg_basebackup -Fp (baseline)', baseS.toFixed(1), (mb(dbBytes) / baseS).toFixed(0), '-']);

  t0 = performance.now();
  const full = pgop('backup', SRC.name, '--type', 'full');
  if (full.code !== 0) throw new Error(`pgop backup failed: ${full.stdout}${full.stderr}`);
  const backupS = seconds(t0);
  const listed = JSON.parse(pgop('get', 'backups', '--cluster', SRC.name, '-o', 'json').stdout).items;
  const last = listed.at(-1) as { size_bytes: number; repo_bytes: number; duration_s: number };
  rows.push([
    'pgop backup --type full (zst, aes, 1 process)',
    backupS.toFixed(1),
    (mb(last.size_bytes) / backupS).toFixed(0),
    `${mb(last.repo_bytes).toFixed(0)} MB in repo`,
  ]);

  t0 = performance.now();
  const restore = pgop(
    'restore',
    '--from',
    SRC.name,
    '--latest',
    '-f',
    join(work, 'copy.yaml'),
    '--timeout',
    '20m',
  );
  if (restore.code !== 0) throw new Error(`pgop restore failed: ${restore.stdout}${restore.stderr}`);
  const restoreS = seconds(t0);
  const jobs = JSON.parse(pgop('get', 'jobs', '--cluster', COPY.name, '-o', 'json').stdout).items as {
    kind: string;
    state: string;
    started: string;
    finished: string | null;
  }[];
  const init1 = jobs.find((j) => j.kind === 'initPrimary' && j.state === 'succeeded');
  const jobS = init1?.finished ? (Date.parse(init1.finished) - Date.parse(init1.started)) / 1000 : NaN;
  rows.push([
    'pgop restore --latest (new cluster, healthy)',
    restoreS.toFixed(1),
    (mb(dbBytes) / restoreS).toFixed(0),
    `restore job ${jobS.toFixed(1)} s (${(mb(dbBytes) / jobS).toFixed(0)} MB/s)`,
  ]);
  pgop('delete', 'cluster', COPY.name);

  const ages = await rpoTrials();
  const sorted = [...ages].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!.toFixed(1);
  const each = sorted.map((a) => a.toFixed(1)).join(', ');
  rows.push([
    `RPO at kill -9, async, pgbench load (N=${ages.length})`,
    '-',
    '-',
    `last archived ${each} s before the kill (median ${median})`,
  ]);
}

/** Under pgbench writes: the age of the primary's last archived segment when it is killed. */
async function rpoTrials(): Promise<number[]> {
  const ages: number[] = [];
  for (let i = 0; i < KILLS; i++) {
    await eventually(async () => {
      const c = clusterOf(SRC.name);
      if (c?.phase !== 'Healthy') throw new Error('not healthy');
    }, 240_000);
    const p = clusterOf(SRC.name)!.primary!;
    const load = spawn(
      'pgbench',
      ['-n', '-c', '4', '-T', '30', '-h', addressOf(SRC, p), '-U', 'postgres', 'postgres'],
      {
        env: pgEnv(secrets.postgres),
        stdio: 'ignore',
      },
    );
    await new Promise((r) => setTimeout(r, 15_000));
    const [a] = await labQuery<{ at: string | null }>(
      primaryCfg(SRC),
      'SELECT last_archived_time::text AS at FROM pg_stat_archiver',
    );
    const killedAt = Date.now();
    if (pgop('lab', 'fault', p, 'kill').code !== 0) throw new Error('kill failed');
    ages.push(a?.at ? (killedAt - Date.parse(a.at)) / 1000 : NaN);
    load.kill('SIGTERM');
    await eventually(async () => {
      if (clusterOf(SRC.name)?.primary === p) throw new Error('no failover yet');
    }, 60_000);
  }
  return ages;
}

try {
  await main();
  const { table } = await import('./table.js');
  console.log(table([['what', 'seconds', 'MB/s', 'note'], ...rows]));
} finally {
  const serve = running.serve;
  if (serve && serve.exitCode === null) {
    const gone = new Promise((r) => serve.once('exit', r));
    serve.kill('SIGTERM');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 15_000))]);
  }
  for (const c of [COPY, SRC]) runPgop(db, ['delete', 'cluster', c.name]);
  rmSync(work, { recursive: true, force: true });
  rmSync(repo, { recursive: true, force: true });
  rmSync(state, { recursive: true, force: true });
  // the hub namespace this run made (nothing else of ours runs in it by now)
  const { deleteNetns, hubNs, netnsPids } = await import('../src/drivers/lab/netns.js');
  const hub = hubNs();
  if (netnsPids(hub).every((p) => p === process.pid)) await deleteNetns(hub).catch(() => undefined);
}
