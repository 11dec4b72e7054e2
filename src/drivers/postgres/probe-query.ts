// The probe's one query (role, positions, timeline, WAL receiver, replicas, config hash in one
// round trip) and how its row becomes an observation. Pure but for the query itself.

import type pg from 'pg';
import type { ClusterSpec } from '../../spec/types.js';
import type { ArchiverStatus, PostgresObservation, ReplicaStatus } from '../../observe/types.js';
import { internal } from '../../errors.js';
import { CONFHASH_FILE, CONF_DIR, CONF_FILE, archiveFilePath, parseLsn, tlsNodePaths } from './config.js';

interface ProbeRow {
  in_recovery: boolean;
  cur_lsn: string | null;
  walfile: string | null;
  replay_lsn: string | null;
  receive_lsn: string | null;
  ckpt_tli: number | null;
  minrec_tli: number | null;
  last_segment: string | null;
  wr_status: string | null;
  received_tli: number | null;
  sender_host: string | null;
  primary_conninfo: string | null;
  ssn: string;
  replicas:
    { name: string; state: string; sync: string; flush: string | null; replay: string | null }[] | null;
  slots: string[] | null;
  live_hash: string;
  recorded_hash: string | null;
  pending_restart: boolean | null;
  sysid: string | null;
  archiver: {
    archived: string | number;
    lastWal: string | null;
    lastAt: number | null;
    failed: string | number;
    lastFailedWal: string | null;
    lastFailedAt: number | null;
  } | null;
}

// One round trip: role, positions, timeline, WAL receiver, replicas, config hash.
const PROBE_SQL = `
WITH r AS (SELECT pg_is_in_recovery() AS rec)
SELECT r.rec AS in_recovery,
  CASE WHEN NOT r.rec THEN pg_current_wal_lsn()::text END AS cur_lsn,
  CASE WHEN NOT r.rec THEN pg_walfile_name(pg_current_wal_lsn()) END AS walfile,
  CASE WHEN r.rec THEN pg_last_wal_replay_lsn()::text END AS replay_lsn,
  CASE WHEN r.rec THEN pg_last_wal_receive_lsn()::text END AS receive_lsn,
  (SELECT timeline_id FROM pg_control_checkpoint()) AS ckpt_tli,
  CASE WHEN r.rec THEN (SELECT min_recovery_end_timeline FROM pg_control_recovery()) END AS minrec_tli,
  CASE WHEN r.rec AND w.received_tli IS NULL THEN
    (SELECT max(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$') END AS last_segment,
  w.status AS wr_status, w.received_tli, w.sender_host,
  CASE WHEN r.rec THEN current_setting('primary_conninfo') END AS primary_conninfo,
  current_setting('synchronous_standby_names') AS ssn,
  (SELECT json_agg(json_build_object('name', application_name, 'state', state, 'sync', sync_state,
      'flush', flush_lsn::text, 'replay', replay_lsn::text) ORDER BY application_name)
     FROM pg_stat_replication) AS replicas,
  (SELECT json_agg(slot_name ORDER BY slot_name) FROM pg_replication_slots
     WHERE slot_type = 'physical') AS slots,
  encode(sha256(
      coalesce(pg_read_binary_file('${CONF_DIR}/${CONF_FILE}', 0, 16777216, true), ''::bytea)
        || '\\x00'::bytea ||
      coalesce(pg_read_binary_file(current_setting('hba_file'), 0, 16777216, true), ''::bytea)
        || '\\x00'::bytea ||
      coalesce(CASE WHEN $1::text <> '' THEN pg_read_binary_file($1::text, 0, 16777216, true) END,
               ''::bytea) ||
      coalesce((SELECT string_agg('\\x00'::bytea || coalesce(pg_read_binary_file(f, 0, 16777216, true),
                                                          ''::bytea), ''::bytea ORDER BY o)
                  FROM unnest($2::text[]) WITH ORDINALITY AS u(f, o)), ''::bytea)), 'hex') AS live_hash,
  convert_from(pg_read_binary_file('${CONFHASH_FILE}', 0, 1024, true), 'UTF8') AS recorded_hash,
  (SELECT bool_or(pending_restart) FROM pg_settings) AS pending_restart,
  (SELECT system_identifier::text FROM pg_control_system()) AS sysid,
  CASE WHEN NOT r.rec THEN (SELECT json_build_object('archived', archived_count,
      'lastWal', last_archived_wal, 'lastAt', extract(epoch FROM last_archived_time) * 1000,
      'failed', failed_count, 'lastFailedWal', last_failed_wal,
      'lastFailedAt', extract(epoch FROM last_failed_time) * 1000) FROM pg_stat_archiver) END AS archiver
FROM r LEFT JOIN pg_stat_wal_receiver w ON true`;

/** host=... out of a conninfo string (keyword/value form). */
export function conninfoHost(conninfo: string | null | undefined): string | null {
  if (!conninfo) return null;
  const m = /(?:^|\s)host\s*=\s*(?:'((?:[^'\\]|\\.)*)'|([^\s']+))/.exec(conninfo);
  if (!m) return null;
  return (m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]) ?? null;
}

/** What a probe reports for a node whose postgres does not answer. */
export function downObservation(
  initialized: boolean,
  inRecovery: boolean,
  running = false,
): PostgresObservation {
  return {
    initialized,
    running,
    inRecovery,
    timeline: 0,
    lsn: 0,
    receiveLsn: 0,
    upstream: null,
    streaming: false,
    replicas: [],
    syncStandbyNames: '',
    configHash: '',
  };
}

/** The probe query on an open session; `tlsOn`: the TLS files count in the config hash. */
export async function queryObservation(
  cluster: ClusterSpec,
  client: pg.Client,
  tlsOn: boolean,
): Promise<PostgresObservation> {
  const script = archiveFilePath(cluster) ?? '';
  const t = tlsNodePaths(cluster);
  const res = await client.query<ProbeRow>(PROBE_SQL, [script, tlsOn ? [t.cert, t.key, t.ca] : []]);
  const r = res.rows[0];
  if (!r) throw internal('probe query returned no row');
  return observationOf(cluster, r);
}

/** The observation a probe row tells (timeline, positions, upstream, replicas, config drift). */
function observationOf(cluster: ClusterSpec, r: ProbeRow): PostgresObservation {
  let timeline: number;
  if (!r.in_recovery && r.walfile) timeline = parseInt(r.walfile.slice(0, 8), 16);
  // A standby: the WAL receiver's timeline; without one (its primary is gone), the newest of
  // the last restartpoint's, the minimum recovery point's and that of the newest WAL segment it
  // holds (pg_control_checkpoint alone lags behind a timeline switch until a restartpoint).
  else {
    const segTli = r.last_segment ? parseInt(r.last_segment.slice(0, 8), 16) : 0;
    timeline = r.received_tli ?? Math.max(r.ckpt_tli ?? 0, r.minrec_tli ?? 0, segTli);
  }
  const upstreamAddr = r.in_recovery ? (r.sender_host ?? conninfoHost(r.primary_conninfo)) : null;
  const upstream = upstreamAddr
    ? (cluster.nodes.find((n) => n.address === upstreamAddr)?.name ?? upstreamAddr)
    : null;
  const replicas: ReplicaStatus[] = (r.replicas ?? []).map((x) => ({
    name: x.name,
    state: x.state,
    syncState: (['async', 'sync', 'quorum', 'potential'].includes(x.sync)
      ? x.sync
      : 'async') as ReplicaStatus['syncState'],
    flushLsn: parseLsn(x.flush),
    replayLsn: parseLsn(x.replay),
  }));
  const live = r.live_hash;
  const recorded = (r.recorded_hash ?? '').trim();
  const configHash = r.pending_restart
    ? `pending-restart:${live}`
    : recorded === live
      ? live
      : `unapplied:${live}`;
  return {
    initialized: true,
    running: true,
    inRecovery: r.in_recovery,
    timeline,
    lsn: parseLsn(r.in_recovery ? r.replay_lsn : r.cur_lsn),
    receiveLsn: r.in_recovery ? parseLsn(r.receive_lsn) : 0,
    upstream,
    streaming: r.wr_status === 'streaming',
    replicas,
    syncStandbyNames: r.ssn ?? '',
    configHash,
    slots: r.slots ?? [],
    ...(r.archiver ? { archiver: archiverOf(r.archiver) } : {}),
    ...(r.sysid ? { systemId: r.sysid } : {}),
  };
}

function archiverOf(a: NonNullable<ProbeRow['archiver']>): ArchiverStatus {
  const at = (v: number | null) => (v === null ? null : Math.round(Number(v)));
  return {
    archivedCount: Number(a.archived),
    lastArchivedWal: a.lastWal,
    lastArchivedAt: at(a.lastAt),
    failedCount: Number(a.failed),
    lastFailedWal: a.lastFailedWal,
    lastFailedAt: at(a.lastFailedAt),
  };
}
