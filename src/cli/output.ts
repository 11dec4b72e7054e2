// Turning store records into what `get`/`describe` print. Kept free of heavy imports: `get`
// must start in about twice the time of a bare `node -e 0`.

import type { JobRecord } from '../store/jobs.js';
import type { EventRecord, NodeRecord, StoredCluster } from '../store/types.js';
import type { ClusterObservation } from '../observe/types.js';
import { formatLsn } from '../observe/lsn.js';
import { archivingFails } from '../observe/archiver.js';
import { poolHosts, poolVip } from '../spec/types.js';
import { nextBackup, type BackupSchedule, type LastBackupStarts } from '../plan/backup-schedule.js';

export interface NodeItem {
  cluster: string;
  name: string;
  state: string;
  role: 'primary' | 'standby' | 'down' | 'unknown';
  goal: string | null;
  address: string;
  reachable: boolean;
  machine: string;
  timeline: number | null;
  lsn: string | null;
  lag_bytes: number | null;
  streaming: boolean | null;
  upstream: string | null;
  last_transition: string;
  message: string;
}

export interface ClusterItem {
  name: string;
  generation: number;
  observed_generation: number;
  phase: string;
  primary: string | null;
  endpoint: string | null;
  /** with several pool hosts: who holds the endpoint (the virtual IP) and each host's state */
  pool?: PoolItem;
  /** with spec.backup: WAL archiving to the pgBackRest repository, as last observed */
  archive?: ArchiveItem;
  provider: string;
  nodes: number;
  replication: string;
  deletion_requested: boolean;
  /** whether a `pgop serve` is working on the store (its lock's heartbeat) */
  operator: OperatorItem;
  message: string;
}

export interface ArchiveItem {
  /** ok: the primary's last attempt succeeded; failing: it failed (see last_failed_wal);
   *  waiting: nothing archived yet; no-stanza / server-down: the repository is not ready;
   *  foreign-stanza: the repository's stanza of this name holds another database system's WAL
   *  (a cluster made again under the same name: choose another repo.path, or remove the old
   *  stanza with pgbackrest stanza-delete once its backups are no longer wanted) */
  state: 'ok' | 'failing' | 'waiting' | 'no-stanza' | 'foreign-stanza' | 'server-down' | 'unknown';
  repository: string;
  last_archived_wal: string | null;
  last_archived_at: string | null;
  archived: number | null;
  failed: number | null;
  last_failed_wal: string | null;
  last_failed_at: string | null;
  /** why the repository's server is down, when known */
  error?: string;
  /** what `pgbackrest info` says is wrong with the stanza, when it says so */
  stanza_problem?: string;
  /** the newest backup the repository lists (pgop get backups shows them all) */
  last_backup: { label: string; type: string; stopped: string } | null;
  backups: number;
  /** the next backup spec.backup.schedule takes (null: no schedule) */
  next_backup: { type: string; at: string } | null;
}

export interface PoolItem {
  /** the pool host holding the virtual IP, or null (none, or more than one: see hosts) */
  holder: string | null;
  hosts: PoolHostItem[];
}

export interface PoolHostItem {
  name: string;
  address: string;
  holds_vip: boolean | null;
  /** pgpool there: 'routing' (answers, routes writes to the primary), 'up' (answers), 'down' */
  pgpool: 'routing' | 'up' | 'down';
  port: string;
  machine: string;
  routes_to: string | null;
}

export interface OperatorItem {
  state: 'serving' | 'stale' | 'none';
  pid: number | null;
  host: string | null;
  heartbeat_age_s: number | null;
}

/** A serve writes its lock's heartbeat every second; one silent this long is gone or stuck. */
const OPERATOR_STALE_MS = 10_000;

export function operatorItem(
  holder: { pid: number; hostname: string; heartbeatAt: number } | undefined,
  now: number,
): OperatorItem {
  if (!holder) return { state: 'none', pid: null, host: null, heartbeat_age_s: null };
  const age = Math.max(0, now - holder.heartbeatAt);
  const state = age > OPERATOR_STALE_MS ? 'stale' : 'serving';
  return { state, pid: holder.pid, host: holder.hostname, heartbeat_age_s: Math.round(age / 100) / 10 };
}

/** "serving", "stale 12s", "none". */
export function operatorText(o: OperatorItem): string {
  return o.state === 'stale' ? `stale ${Math.round(o.heartbeat_age_s ?? 0)}s` : o.state;
}

export interface EventItem {
  id: number;
  time: string;
  cluster: string;
  node: string | null;
  from: string | null;
  to: string | null;
  rule: string;
  reason: string;
}

export function nodeItems(
  records: NodeRecord[],
  clusters: Map<string, StoredCluster>,
  observations: Map<string, ClusterObservation | undefined>,
): NodeItem[] {
  return records.map((r) => {
    const cluster = clusters.get(r.cluster);
    const spec = cluster?.spec.nodes.find((n) => n.name === r.name);
    const obs = observations.get(r.cluster);
    const o = obs?.nodes[r.name];
    const pg = o?.postgres ?? null;
    const running = !!pg?.running && !!o?.reachable;
    const role: NodeItem['role'] = !o
      ? 'unknown'
      : !running
        ? 'down'
        : pg!.inRecovery
          ? 'standby'
          : 'primary';
    // Lag: bytes the standby has yet to replay, against the primary's current WAL position.
    const primaryName = cluster?.primary;
    const primaryPg = primaryName ? obs?.nodes[primaryName]?.postgres : null;
    const lag =
      role === 'standby' && primaryPg?.running
        ? Math.max(0, primaryPg.lsn - pg!.lsn)
        : role === 'primary'
          ? 0
          : null;
    return {
      cluster: r.cluster,
      name: r.name,
      state: r.state,
      role,
      goal: r.goal,
      address: spec?.address ?? '-',
      reachable: !!o?.reachable,
      machine: o?.machine.state ?? 'unknown',
      timeline: running ? pg!.timeline : null,
      lsn: running ? formatLsn(pg!.lsn) : null,
      lag_bytes: lag,
      streaming: role === 'standby' ? pg!.streaming : null,
      upstream: role === 'standby' ? pg!.upstream : null,
      last_transition: new Date(r.lastTransitionAt).toISOString(),
      message: o?.error && !running ? o.error : r.message,
    };
  });
}

/** WAL archiving as last observed: the repository's server and stanza, and the primary's
 *  pg_stat_archiver (only a primary archives: archive_mode=on). */
export function archiveItem(
  c: StoredCluster,
  obs: ClusterObservation | undefined,
  backupStarts: LastBackupStarts = {},
  now = Date.now(),
): ArchiveItem {
  const pg = c.primary ? obs?.nodes[c.primary]?.postgres : undefined;
  const a = pg?.archiver;
  const iso = (ms: number | null | undefined) => (ms ? new Date(ms).toISOString() : null);
  const b = obs?.backup;
  const lastBackup = b?.backups?.at(-1);
  const state: ArchiveItem['state'] = !b
    ? 'unknown'
    : b.server !== 'running'
      ? 'server-down'
      : !b.stanza
        ? 'no-stanza'
        : b.stanzaSystemId && pg?.systemId && b.stanzaSystemId !== pg.systemId
          ? 'foreign-stanza'
          : !a
            ? 'unknown'
            : archivingFails(a)
              ? 'failing'
              : a.lastArchivedAt
                ? 'ok'
                : 'waiting';
  return {
    state,
    repository: c.spec.backup?.repo.path ?? '-',
    last_archived_wal: a?.lastArchivedWal ?? null,
    last_archived_at: iso(a?.lastArchivedAt),
    archived: a?.archivedCount ?? null,
    failed: a?.failedCount ?? null,
    last_failed_wal: a?.lastFailedWal ?? null,
    last_failed_at: iso(a?.lastFailedAt),
    ...(b?.error ? { error: b.error } : {}),
    last_backup: lastBackup
      ? { label: lastBackup.label, type: lastBackup.type, stopped: iso(lastBackup.stoppedAt)! }
      : null,
    backups: b?.backups?.length ?? 0,
    ...(b?.stanzaProblem ? { stanza_problem: b.stanzaProblem } : {}),
    next_backup: nextBackupItem(c.spec.backup?.schedule, backupStarts, now),
  };
}

function nextBackupItem(
  schedule: BackupSchedule | undefined,
  starts: LastBackupStarts,
  now: number,
): ArchiveItem['next_backup'] {
  const next = schedule ? nextBackup(schedule, now, starts) : undefined;
  return next ? { type: next.type, at: new Date(next.at).toISOString() } : null;
}

/** The pool hosts as last observed (only with several: spec.pgpool.hosts). */
export function poolItem(c: StoredCluster, obs: ClusterObservation | undefined): PoolItem | undefined {
  const hosts = poolHosts(c.spec);
  if (!poolVip(c.spec)) return undefined;
  const seen = new Map((obs?.pool?.hosts ?? []).map((h) => [h.name, h]));
  const items = hosts.map((h): PoolHostItem => {
    const o = seen.get(h.name);
    const pgpool = !o?.reachable ? 'down' : o.primary !== null && o.primary === c.primary ? 'routing' : 'up';
    return {
      name: h.name,
      address: h.address,
      holds_vip: o?.holdsVip ?? null,
      pgpool,
      port: o?.port ?? 'unknown',
      machine: o?.machine ?? 'unknown',
      routes_to: o?.primary ?? null,
    };
  });
  const holders = items.filter((h) => h.holds_vip === true);
  return { holder: holders.length === 1 ? holders[0]!.name : null, hosts: items };
}

export function clusterItem(
  c: StoredCluster,
  nodeCount: number,
  operator: OperatorItem,
  obs?: ClusterObservation,
  backupStarts?: LastBackupStarts,
): ClusterItem {
  const spec = c.spec;
  const pool = poolItem(c, obs);
  const primaryAddress = spec.nodes.find((n) => n.name === c.primary)?.address;
  const endpoint =
    spec.pgpool.enabled && spec.pgpool.address
      ? `${spec.pgpool.address}:${spec.pgpool.port}`
      : primaryAddress
        ? `${primaryAddress}:5432`
        : null;
  return {
    name: c.name,
    generation: c.generation,
    observed_generation: c.observedGeneration,
    phase: c.deletionRequested && c.phase !== 'Deleting' ? 'Deleting' : c.phase,
    primary: c.primary,
    endpoint,
    ...(pool ? { pool } : {}),
    ...(spec.backup ? { archive: archiveItem(c, obs, backupStarts) } : {}),
    provider: spec.provider.type,
    nodes: nodeCount,
    replication: spec.replication.mode === 'sync' ? `sync (ANY ${spec.replication.syncQuorum})` : 'async',
    deletion_requested: c.deletionRequested,
    operator,
    // a cluster on its way somewhere with nobody to take it there says so
    message:
      operator.state !== 'serving' && c.phase !== 'Healthy'
        ? `no operator is serving this store (run pgop serve); last: ${c.message}`
        : c.message,
  };
}

export function eventItem(e: EventRecord): EventItem {
  return {
    id: e.id,
    time: new Date(e.time).toISOString(),
    cluster: e.cluster,
    node: e.node,
    from: e.from,
    to: e.to,
    rule: e.ruleId,
    reason: e.reason,
  };
}

export function age(iso: string, now: number): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

/** How long until `iso` (0s when past), as `age` says it. */
export const until = (iso: string, now: number): string => age(new Date(now).toISOString(), Date.parse(iso));

export function humanBytes(n: number | null): string {
  if (n === null) return '-';
  if (n < 1024) return `${n}B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)}K`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)}M`;
  return `${(n / 1024 ** 3).toFixed(1)}G`;
}

export interface JobItem {
  id: number;
  cluster: string;
  node: string;
  kind: string;
  state: string;
  rule: string;
  source: string | null;
  started: string;
  finished: string | null;
  deadline: string;
  done_bytes: number | null;
  total_bytes: number | null;
  /** 0..100 when the total is known */
  percent: number | null;
  message: string;
}

export function jobItem(j: JobRecord): JobItem {
  const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
  return {
    id: j.id,
    cluster: j.cluster,
    node: j.node,
    kind: j.kind,
    state: j.state,
    rule: j.ruleId,
    source: j.source,
    started: iso(j.startedAt)!,
    finished: iso(j.finishedAt),
    deadline: iso(j.deadlineAt)!,
    done_bytes: j.doneBytes,
    total_bytes: j.totalBytes,
    percent:
      j.totalBytes && j.doneBytes !== null
        ? Math.min(100, Math.floor((100 * j.doneBytes) / j.totalBytes))
        : null,
    message: j.message,
  };
}

/** "45% of 300.0M", "120.3M", or "-". */
export function jobProgress(j: JobItem): string {
  if (j.percent !== null) return `${j.percent}% of ${humanBytes(j.total_bytes)}`;
  return j.done_bytes !== null ? humanBytes(j.done_bytes) : '-';
}
