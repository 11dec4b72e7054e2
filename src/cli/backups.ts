// `pgop get backups`: the repository's backups as the operator last listed them (pgbackrest info,
// kept in the cluster's observation), with a backup job still running shown as one more row.

import type { BackupRecord, ClusterObservation } from '../observe/types.js';
import type { JobRecord } from '../store/jobs.js';
import type { StoredCluster } from '../store/types.js';
import { age, humanBytes, jobItem } from './output.js';
import { renderTable } from './table.js';

export interface BackupItem {
  cluster: string;
  /** pgBackRest's label (null while the backup runs) */
  label: string | null;
  type: 'full' | 'diff' | 'incr';
  /** ok; checksum-errors: pgBackRest found damaged pages while copying; running: a job of pgop's */
  state: 'ok' | 'checksum-errors' | 'running';
  prior: string | null;
  started: string;
  stopped: string | null;
  duration_s: number | null;
  lsn_start: string | null;
  lsn_stop: string | null;
  wal_start: string | null;
  wal_stop: string | null;
  /** the database's size, what this backup copied, and its part and whole set in the repository */
  size_bytes: number | null;
  copied_bytes: number | null;
  repo_bytes: number | null;
  repo_set_bytes: number | null;
  /** the job that made or makes it, if it was pgop's and is still in the job history */
  job: number | null;
  percent: number | null;
}

const iso = (ms: number) => new Date(ms).toISOString();

export function backupItems(
  c: StoredCluster,
  obs: ClusterObservation | undefined,
  jobs: JobRecord[],
): BackupItem[] {
  const done = (obs?.backup?.backups ?? []).map((b) => listedItem(c.name, b, jobs));
  const running = jobs.filter((j) => j.kind.startsWith('backup.') && j.state === 'running');
  return [...done, ...running.map((j) => runningItem(c.name, j))];
}

function listedItem(cluster: string, b: BackupRecord, jobs: JobRecord[]): BackupItem {
  // the job that made it: a succeeded backup job whose message names the label
  const job = jobs.find((j) => j.state === 'succeeded' && j.message.includes(` ${b.label}:`));
  return {
    cluster,
    label: b.label,
    type: b.type,
    state: b.error ? 'checksum-errors' : 'ok',
    prior: b.prior ?? null,
    started: iso(b.startedAt),
    stopped: iso(b.stoppedAt),
    duration_s: Math.round((b.stoppedAt - b.startedAt) / 1000),
    lsn_start: b.lsnStart || null,
    lsn_stop: b.lsnStop || null,
    wal_start: b.walStart || null,
    wal_stop: b.walStop || null,
    size_bytes: b.size,
    copied_bytes: b.delta,
    repo_bytes: b.repoDelta,
    repo_set_bytes: b.repoSize,
    job: job?.id ?? null,
    percent: null,
  };
}

function runningItem(cluster: string, j: JobRecord): BackupItem {
  return {
    cluster,
    label: null,
    type: j.kind.slice('backup.'.length) as BackupItem['type'],
    state: 'running',
    prior: null,
    started: iso(j.startedAt),
    stopped: null,
    duration_s: null,
    lsn_start: null,
    lsn_stop: null,
    wal_start: null,
    wal_stop: null,
    size_bytes: j.totalBytes,
    copied_bytes: j.doneBytes,
    repo_bytes: null,
    repo_set_bytes: null,
    job: j.id,
    percent: jobItem(j).percent,
  };
}

export function renderBackups(items: BackupItem[], wide: boolean, now: number): string {
  const head = ['CLUSTER', 'LABEL', 'TYPE', 'STATE', 'STARTED', 'TOOK', 'LSN', 'SIZE', 'COPIED', 'REPO'];
  return renderTable(
    [...head, ...(wide ? ['PRIOR', 'WAL', 'JOB'] : [])],
    items.map((b) => [
      b.cluster,
      b.label ?? '-',
      b.type,
      b.state === 'running' && b.percent !== null ? `running ${b.percent}%` : b.state,
      `${age(b.started, now)} ago`,
      b.duration_s === null ? '-' : `${b.duration_s}s`,
      b.lsn_start ? `${b.lsn_start}..${b.lsn_stop}` : '-',
      humanBytes(b.size_bytes),
      humanBytes(b.copied_bytes),
      humanBytes(b.repo_bytes),
      ...(wide ? [b.prior ?? '-', b.wal_start ? `${b.wal_start}..${b.wal_stop}` : '-', b.job ?? '-'] : []),
    ]),
  );
}
