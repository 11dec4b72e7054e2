// PostgresDriver over SSH (NodeShell) + the pg wire protocol.
//
// - Every remote command is an argv array; shell snippets are constant strings that get their
//   values as positional parameters ($1...), never by interpolation.
// - Secrets never appear on a command line, in an env assignment on a command line, or in an SQL
//   statement: pg_basebackup/pg_rewind read PGPASSWORD from stdin inside the remote shell, and
//   role passwords are sent as SCRAM verifiers computed here.
// - Per-node settings go on the postmaster command line (pg_ctl -o), never into a file that a
//   clone or a rewind copies.
// Layout of the files pgop writes: config.ts.

import { createHash } from 'node:crypto';
import pg from 'pg';
import type { ClusterSpec, NodeSpec } from '../../spec/types.js';
import type { PostgresObservation, ReplicaStatus } from '../../observe/types.js';
import { ClientCache, endClient, newClient } from '../pg-clients.js';
import { ClusterTls, nodeHostId } from '../../tls/material.js';
import { clientTls, explainTlsError } from '../../tls/client.js';
import type { DriverLog, ExecOptions, ExecResult, HostRef, NodeShell, PostgresDriver, ProbeOptions, ProbeResult, Signals } from '../types.js';
import { AFTER_FAILOVER_MS } from '../types.js';
import { PgopError, internal, messageOf, terminal, transient } from '../../errors.js';
import { resolveSecret } from '../../spec/secrets.js';
import { NODE_FS_FUNCS, SAFE_PATH, assertSafePath, shVar } from '../ssh/node-fs.js';
import {
  archiveScriptPath,
  CONFHASH_FILE,
  CONF_DIR,
  CONF_FILE,
  EMPTY_AUTO_CONF,
  INCLUDE_DIR_LINE,
  scriptDir,
  SOCKET_DIR,
  STANDBY_CONF_FILE,
  SYNC_CONF_FILE,
  binDir,
  canFollowTimeline,
  desiredConfigHash,
  nodeOptionString,
  parseLsn,
  parseTimelineHistory,
  pgPort,
  quoteIdent,
  quoteLiteral,
  renderArchiveScript,
  renderConf,
  renderHba,
  renderStandbyConf,
  renderReplicationPassfile,
  replicationPassfilePath,
  renderSyncConf,
  scramVerifier,
  slotName,
  nodeSslConninfo,
  tlsNodePaths,
  type NodeTlsFiles,
  syncStandbyNamesValue,
  verifyScram,
} from './config.js';

export type { DriverLog };

export interface SshPostgresDriverOptions {
  shell: NodeShell;
  /** How to reach a node's management plane (SSH). */
  hostRef(cluster: ClusterSpec, node: NodeSpec): HostRef;
  /** pg client options for the operator's superuser connection to a node (default: node
   *  address, the cluster's port, user postgres, spec.postgres.superuserPassword). */
  connect?(cluster: ClusterSpec, node: NodeSpec): pg.ClientConfig;
  logger?: DriverLog;
  /** Upper bound for "wait until the standby streams" (default 30 s). */
  streamTimeoutMs?: number;
  /** Where a dropped probe session is reported (the loop then looks at once). */
  signals?: Signals;
  /** The clusters' CAs and certificates (default: in each provider's state directory). */
  tls?: ClusterTls;
}

/** The default `connect`: superuser over TCP to the node's address. */
export function defaultConnect(cluster: ClusterSpec, node: NodeSpec): pg.ClientConfig {
  return {
    host: node.address,
    port: pgPort(cluster),
    user: 'postgres',
    database: 'postgres',
    password: resolveSecret(cluster.postgres.superuserPassword, 'the postgres superuser password'),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const silent: DriverLog = { info() {}, warn() {} };

/** One file operation of apply(): write (replace when different), create (only when missing),
 *  delete. Mode defaults to 0600, owner to postgres:postgres. */
export interface FileOp {
  op: 'write' | 'create' | 'delete';
  path: string;
  content?: string;
  mode?: number;
  owner?: string;
}

/** What one SSH look at a node tells. */
interface NodeState {
  initialized: boolean;
  nonEmpty: boolean;
  standbySignal: boolean;
  running: boolean;
  /** pg_ctl status exit code (0 running, 3 not running, 4 no data dir) */
  status: number;
  /** an interrupted clone (or rewind) that never became a standby: cloned again */
  partial: boolean;
}

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
  replicas: { name: string; state: string; sync: string; flush: string | null; replay: string | null }[] | null;
  slots: string[] | null;
  live_hash: string;
  recorded_hash: string | null;
  pending_restart: boolean | null;
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
  (SELECT json_agg(slot_name ORDER BY slot_name) FROM pg_replication_slots WHERE slot_type = 'physical') AS slots,
  encode(sha256(
      coalesce(pg_read_binary_file('${CONF_DIR}/${CONF_FILE}', 0, 16777216, true), ''::bytea) || '\\x00'::bytea ||
      coalesce(pg_read_binary_file(current_setting('hba_file'), 0, 16777216, true), ''::bytea) || '\\x00'::bytea ||
      coalesce(CASE WHEN $1::text <> '' THEN pg_read_binary_file($1::text, 0, 16777216, true) END, ''::bytea) ||
      coalesce((SELECT string_agg('\\x00'::bytea || coalesce(pg_read_binary_file(f, 0, 16777216, true), ''::bytea), ''::bytea ORDER BY o)
                  FROM unnest($2::text[]) WITH ORDINALITY AS u(f, o)), ''::bytea)), 'hex') AS live_hash,
  convert_from(pg_read_binary_file('${CONFHASH_FILE}', 0, 1024, true), 'UTF8') AS recorded_hash,
  (SELECT bool_or(pending_restart) FROM pg_settings) AS pending_restart
FROM r LEFT JOIN pg_stat_wal_receiver w ON true`;

/** host=... out of a conninfo string (keyword/value form). */
export function conninfoHost(conninfo: string | null | undefined): string | null {
  if (!conninfo) return null;
  const m = /(?:^|\s)host\s*=\s*(?:'((?:[^'\\]|\\.)*)'|([^\s']+))/.exec(conninfo);
  if (!m) return null;
  return (m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]) ?? null;
}

/** What a probe reports for a node whose postgres does not answer. */
function downObservation(initialized: boolean, inRecovery: boolean, running = false): PostgresObservation {
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

/** How long a backend's report of its postmaster's death stays news (a probe has looked since). */
const DEATH_NEWS_MS = 5_000;
/** How long after the news of a postmaster's death the node's SSH look waits. */
const LOOK_AFTER_DEATH_MS = 1_500;

export class SshPostgresDriver implements PostgresDriver {
  private readonly shell: NodeShell;
  private readonly hostRefOf: (cluster: ClusterSpec, node: NodeSpec) => HostRef;
  private readonly connectOf: (cluster: ClusterSpec, node: NodeSpec) => pg.ClientConfig;
  private readonly log: DriverLog;
  private readonly streamTimeoutMs: number;
  /** probe connections, one per cluster/node */
  private readonly probes: ClientCache;
  /** serialise probes per node */
  private readonly probing = new Map<string, Promise<unknown>>();
  /** per cluster/node: when postgres last answered a probe (ms since the epoch) */
  private readonly lastAnswer = new Map<string, number>();
  /** cluster/node keys whose last pg_rewind found nothing to rewind (see ensureStandby) */
  private readonly noopRewinds = new Set<string>();
  /** per cluster/node: when a backend reported its postmaster dead, not yet told by a probe */
  private readonly deaths = new Map<string, number>();
  /** per cluster/node: the last probe's result and when it came */
  private readonly lastProbe = new Map<string, { at: number; result: ProbeResult }>();
  /** per cluster/node: a probe started when another node's postmaster was reported dead, for
   *  the next probe call to take (once) */
  private readonly postDeath = new Map<string, { at: number; p: Promise<ProbeResult> }>();
  /** per cluster: who wants to hear of a postmaster's death at once (observeCluster) */
  private readonly deathWatchers = new Map<string, Set<(node: string) => void>>();
  /** per cluster: the spec of the last probe (a signal names only the cluster) */
  private readonly probedSpecs = new Map<string, ClusterSpec>();
  /** per cluster/node: the last SSH look after a failed probe (null: SSH did not answer) */
  private readonly looks = new Map<string, { at: number; state: NodeState | null; error: string; pending?: Promise<void> }>();
  /** Nodes not to look at over SSH for now (their postmaster was reported dead: see probeOnce). */
  private readonly lookLater = new Set<string>();
  private readonly tls: ClusterTls;
  /** per cluster/node: when the TLS files were last restored after a refused certificate */
  private readonly tlsRepairs = new Map<string, number>();

  constructor(opts: SshPostgresDriverOptions) {
    this.shell = opts.shell;
    this.hostRefOf = opts.hostRef;
    this.connectOf = opts.connect ?? defaultConnect;
    this.log = opts.logger ?? silent;
    this.streamTimeoutMs = opts.streamTimeoutMs ?? 30_000;
    this.tls = opts.tls ?? new ClusterTls({ log: this.log });
    const signals = opts.signals;
    this.probes = new ClientCache((key, why) => {
      const i = key.indexOf('/');
      // A backend's last words when its postmaster is gone (postgres.c): as certain as a
      // refused port, and here ~100 ms sooner than a connect on a host busy with the failure.
      if (/unexpected postmaster exit/.test(why)) this.onPostmasterDeath(key);
      signals?.emit({ cluster: key.slice(0, i), node: key.slice(i + 1), kind: 'connection.lost', detail: `probe session to postgres lost: ${why}` });
    });
  }

  desiredConfigHash(cluster: ClusterSpec, node: NodeSpec): string {
    return desiredConfigHash(cluster, node, this.nodeTls(cluster, node));
  }

  // ======================================================================== TLS

  /** The node's TLS files as pgop issued them (null: none yet, or TLS off). */
  private nodeTls(cluster: ClusterSpec, node: NodeSpec): NodeTlsFiles {
    if (!this.tls.enabled(cluster)) return null;
    const m = this.tls.peek(cluster);
    const h = m?.hosts.get(nodeHostId(node.name));
    return m && h ? { cert: h.cert, key: h.key, ca: m.caBundle } : null;
  }

  /** Issue or renew what the cluster needs (cheap when nothing is due: see ClusterTls). */
  private async ensureTls(cluster: ClusterSpec): Promise<void> {
    if (this.tls.enabled(cluster)) await this.tls.ensure(cluster);
  }

  /** An operation found the node serving a certificate pgop refuses (the probe only reports
   *  it: the refusal is the operation's error, so it shows in the events). The files are pgop's
   *  (config drift): rewrite them over SSH, whose host key is pinned (so this is the node, not
   *  whoever took its address), and reload postgres there. Nothing is trusted meanwhile: the
   *  operation fails, and the next one connects only if the certificate verifies. At most every
   *  30 s per node. Returns what to add to the error. */
  private async repairTls(cluster: ClusterSpec, node: NodeSpec, why: string): Promise<string> {
    const key = `${cluster.name}/${node.name}`;
    const last = this.tlsRepairs.get(key) ?? 0;
    if (!this.tls.enabled(cluster) || Date.now() - last < 30_000) return '';
    this.tlsRepairs.set(key, Date.now());
    try {
      await this.ensureTls(cluster);
      const changed = await this.apply(cluster, node, this.tlsFiles(cluster, node), { dataDir: false });
      // Reloaded even when the files were right already: an earlier repair may have rewritten
      // them and then failed to reload, and postgres reads its certificate only at a reload.
      await this.must(cluster, node, 'reload postgres', '"$2/pg_ctl" -D "$1" reload >/dev/null', [this.dataDir(cluster), binDir(cluster)], { user: 'postgres', timeoutMs: 10_000 });
      if (changed.size === 0) {
        this.log.warn({ node: node.name, why }, 'tls: the node holds the certificate pgop issued, yet what answers at its address does not present it; postgres reloaded');
        return '; the node holds the certificate pgop issued (postgres reloaded): if this persists, something else answers at its address';
      }
      this.log.warn({ node: node.name, why, rewritten: [...changed] }, 'tls: the node served a certificate pgop did not issue; its certificate files were rewritten over SSH and postgres reloaded');
      return '; pgop rewrote its certificate files on the node over SSH and reloaded postgres';
    } catch (err) {
      this.log.warn({ node: node.name, error: messageOf(err) }, 'tls: cannot restore the certificate files of the node');
      return '';
    }
  }

  /** The TLS files of a node (certificate, key, CA bundle; owner postgres, 0600). */
  private tlsFiles(cluster: ClusterSpec, node: NodeSpec): FileOp[] {
    if (!this.tls.enabled(cluster)) return [];
    const t = this.nodeTls(cluster, node);
    if (!t) throw transient(`cannot configure TLS on ${node.name}: no certificate issued yet`);
    const p = tlsNodePaths(cluster);
    return [
      { op: 'write', path: p.ca, content: t.ca },
      { op: 'write', path: p.cert, content: t.cert },
      { op: 'write', path: p.key, content: t.key },
    ];
  }

  // ======================================================================== remote helpers

  private host(cluster: ClusterSpec, node: NodeSpec): HostRef {
    return this.hostRefOf(cluster, node);
  }

  /** Run a constant shell script with positional arguments: sh -c <script> pgop <args...>. */
  private sh(cluster: ClusterSpec, node: NodeSpec, script: string, args: (string | number)[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.shell.exec(this.host(cluster, node), ['sh', '-c', `cd / || exit 1\n${script}`, 'pgop', ...args.map(String)], opts);
  }

  /** As sh(), throwing `cannot <what> on <node>: <stderr>` on a non-zero exit. */
  private async must(
    cluster: ClusterSpec,
    node: NodeSpec,
    what: string,
    script: string,
    args: (string | number)[],
    opts: ExecOptions & { kind?: 'transient' | 'terminal' } = {},
  ): Promise<ExecResult> {
    const { kind = 'transient', ...execOpts } = opts;
    const res = await this.sh(cluster, node, script, args, execOpts);
    if (res.code !== 0) {
      const detail = tail(res.stderr) || tail(res.stdout) || `exit ${res.code}`;
      throw new PgopError(kind, `cannot ${what} on ${node.name}: ${detail}`);
    }
    return res;
  }

  // Every spec path passes assertSafePath (one check, terminal) before it reaches a script:
  // the schema constrains them first, this is the driver's own guard (pg_ctl and pg_rewind hand
  // the data directory to sh -c).
  private dataDir(cluster: ClusterSpec): string {
    return assertSafePath('postgres.dataDir', cluster.postgres.dataDir);
  }

  private logDir(cluster: ClusterSpec): string {
    return assertSafePath('postgres.logDir', cluster.postgres.logDir);
  }

  private superuserPassword(cluster: ClusterSpec): string {
    return resolveSecret(cluster.postgres.superuserPassword, 'the postgres superuser password');
  }

  private replicationPassword(cluster: ClusterSpec): string {
    return resolveSecret(cluster.replication.password, 'the replication password');
  }

  /** One SSH round trip: is the data directory initialised, does postgres run? */
  private async nodeState(cluster: ClusterSpec, node: NodeSpec, timeoutMs?: number): Promise<NodeState> {
    const res = await this.sh(cluster, node, NODE_STATE_SH, [this.dataDir(cluster), binDir(cluster)], { user: 'postgres', timeoutMs });
    const m = /init=(\d) nonempty=(\d) standby=(\d) status=(\d+) partial=(\d)/.exec(res.stdout);
    if (!m) throw transient(`cannot inspect ${node.name}: ${tail(res.stderr) || `exit ${res.code}`}`);
    return {
      initialized: m[1] === '1',
      nonEmpty: m[2] === '1',
      standbySignal: m[3] === '1',
      status: Number(m[4]),
      running: m[4] === '0',
      partial: m[5] === '1',
    };
  }

  private async controlData(cluster: ClusterSpec, node: NodeSpec): Promise<{ state: string; timeline: number; checkpoint: number; minRecovery: number; minRecoveryTli: number }> {
    const res = await this.must(cluster, node, 'read pg_controldata', '"$1/pg_controldata" -D "$2"', [binDir(cluster), this.dataDir(cluster)], {
      user: 'postgres',
      env: { LC_ALL: 'C' },
    });
    const get = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(res.stdout)?.[1]?.trim() ?? '';
    return {
      state: get('Database cluster state'),
      timeline: Number(get("Latest checkpoint's TimeLineID")) || 0,
      checkpoint: parseLsn(get('Latest checkpoint location')),
      minRecovery: parseLsn(get('Minimum recovery ending location')),
      minRecoveryTli: Number(get("Min recovery ending loc's timeline")) || 0,
    };
  }

  // ======================================================================== pg connections

  private clientConfig(cluster: ClusterSpec, node: NodeSpec, extra: Partial<pg.ClientConfig> = {}): pg.ClientConfig {
    const timeout = cluster.failureDetection.connectTimeoutMs;
    const base = this.connectOf(cluster, node);
    let ssl: Partial<pg.ClientConfig> = {};
    if (this.tls.enabled(cluster) && !String(base.host ?? '').startsWith('/')) {
      // verify-full against the cluster CA; SCRAM with channel binding where offered (a unix
      // socket, which a custom connect() may name, has no TLS)
      const m = this.tls.peek(cluster);
      if (!m) throw transient(`cannot connect to postgres on ${node.name}: the cluster CA is not issued yet`);
      ssl = { ssl: clientTls(m.caBundle, { name: node.name, address: base.host ?? node.address }), enableChannelBinding: true } as Partial<pg.ClientConfig>;
    }
    return {
      port: pgPort(cluster),
      ...base,
      ...ssl,
      connectionTimeoutMillis: timeout,
      keepAlive: true,
      application_name: 'pgop',
      ...extra,
    };
  }

  /** A fresh superuser session for a mutating operation; always ended. */
  private async withAdmin<T>(cluster: ClusterSpec, node: NodeSpec, fn: (c: pg.Client) => Promise<T>, database?: string): Promise<T> {
    const cfg = this.clientConfig(cluster, node, {
      connectionTimeoutMillis: Math.max(5000, cluster.failureDetection.connectTimeoutMs),
      ...(database ? { database } : {}),
    });
    const client = newClient(cfg);
    client.on('error', () => {});
    try {
      await client.connect();
    } catch (err) {
      await endClient(client);
      const repaired = explainTlsError(err) ? await this.repairTls(cluster, node, pgMessage(err)) : '';
      throw transient(`cannot connect to postgres on ${node.name}${database ? ` (database ${database})` : ''}: ${pgMessage(err)}${repaired}`, err);
    }
    try {
      return await fn(client);
    } finally {
      await endClient(client);
    }
  }

  private probeClient(cluster: ClusterSpec, node: NodeSpec): Promise<pg.Client> {
    const timeout = cluster.failureDetection.connectTimeoutMs;
    return this.probes.get(`${cluster.name}/${node.name}`, () =>
      newClient(
        this.clientConfig(cluster, node, {
          // One probe's budget is the spec's timeout: a link that went down shows as a miss
          // after that long, not after TCP gives up.
          statement_timeout: timeout,
          query_timeout: timeout,
          application_name: 'pgop-probe',
        }),
      ),
    );
  }

  private dropProbe(cluster: ClusterSpec, node: NodeSpec): void {
    this.probes.drop(`${cluster.name}/${node.name}`);
  }

  // ======================================================================== probe

  async probe(cluster: ClusterSpec, node: NodeSpec, opts: ProbeOptions = {}): Promise<ProbeResult> {
    const key = `${cluster.name}/${node.name}`;
    this.probedSpecs.set(cluster.name, cluster);
    const last = this.lastProbe.get(key);
    if (opts.maxAgeMs !== undefined && last && Date.now() - last.at <= opts.maxAgeMs) return last.result;
    // certificates issued or renewed when due (an in-memory check when nothing is)
    await this.ensureTls(cluster).catch((err) => this.log.warn({ cluster: cluster.name, error: messageOf(err) }, 'tls: cannot issue certificates'));
    // Right after an urgent fence, the probe started at the news of the postmaster's death
    // serves as fresh, once (see onPostmasterDeath), if it found postgres running: one that
    // failed in the thick of the failure (a timeout while the host is busiest) is asked again.
    // Any other look drops it: the operator may have acted on the node since.
    const early = this.postDeath.get(key);
    this.postDeath.delete(key);
    if (opts.afterDeath && early && Date.now() - early.at < 2_000) {
      const r = await early.p.catch(() => null);
      if (r?.reachable && r.postgres?.running) return r;
    }
    return this.probeNow(cluster, node);
  }

  private async probeNow(cluster: ClusterSpec, node: NodeSpec): Promise<ProbeResult> {
    const key = `${cluster.name}/${node.name}`;
    // news of its postmaster's death answers at once, not after a probe still connecting
    const prev = this.deaths.has(key) ? undefined : this.probing.get(key);
    if (prev) await prev.catch(() => {});
    const p = this.probeOnce(cluster, node);
    this.probing.set(key, p);
    try {
      const result = await p;
      this.lastProbe.set(key, { at: Date.now(), result });
      return result;
    } finally {
      if (this.probing.get(key) === p) this.probing.delete(key);
    }
  }

  /** A backend reported its postmaster gone: remember it for the node's next probe, and probe
   *  the cluster's other nodes at once. The promotion that follows the fence is then planned on
   *  answers already there (fresh ones take 50-170 ms on a host busy with the failure). Their
   *  WAL positions are final enough to elect on: a primary whose postmaster is dead acknowledges
   *  no more commits (a backend waiting for its synchronous standbys exits without an answer),
   *  so every acknowledged commit lies at or below what some standby had flushed by then. */
  private onPostmasterDeath(key: string): void {
    const now = Date.now();
    this.deaths.set(key, now);
    const cluster = key.slice(0, key.indexOf('/'));
    for (const w of this.deathWatchers.get(cluster) ?? []) w(key.slice(cluster.length + 1));
    const spec = this.probedSpecs.get(cluster);
    for (const n of spec?.nodes ?? []) {
      const k = `${cluster}/${n.name}`;
      if (k === key || this.deaths.has(k)) continue;
      const p = this.probeNow(spec!, n);
      p.catch(() => undefined);
      this.postDeath.set(k, { at: now, p });
    }
  }

  watchPostmasterDeaths(cluster: ClusterSpec, listener: (node: string) => void): () => void {
    const set = this.deathWatchers.get(cluster.name) ?? new Set();
    this.deathWatchers.set(cluster.name, set);
    set.add(listener);
    return () => void set.delete(listener);
  }

  postmasterDeaths(cluster: ClusterSpec): string[] {
    // news older than a few seconds is no longer news: a probe has looked since, or will
    const now = Date.now();
    return cluster.nodes.filter((n) => now - (this.deaths.get(`${cluster.name}/${n.name}`) ?? -Infinity) < DEATH_NEWS_MS).map((n) => n.name);
  }

  private async probeOnce(cluster: ClusterSpec, node: NodeSpec): Promise<ProbeResult> {
    const key = `${cluster.name}/${node.name}`;
    let pgError = '';
    let refused = false;
    const death = this.deaths.get(key);
    this.deaths.delete(key);
    if (death !== undefined && Date.now() - death < DEATH_NEWS_MS) {
      // told, not asked: this probe takes the news instead of a connect (the next one connects)
      pgError = 'postgres: the postmaster exited (its backend said: terminating connection due to unexpected postmaster exit)';
      refused = true;
      // The SSH look that tells "node up, postgres down" waits a moment: the failover needs
      // none (the news is the whole miss budget) and a primary is fenced meanwhile, while a
      // look's processes on the node (sshd, shells) took CPU from the promotion and pgpool's
      // restart on a host busy with the failure.
      if (!this.lookLater.has(key)) {
        this.lookLater.add(key);
        setTimeout(() => this.lookLater.delete(key), LOOK_AFTER_DEATH_MS).unref();
      }
    }
    // A cached session may have died with a restart since the last probe: one fresh try then.
    const cached = this.probes.has(key);
    for (let attempt = 0; !refused && attempt < (cached ? 2 : 1); attempt++) {
      try {
        const client = await this.probeClient(cluster, node);
        const obs = await this.query(cluster, client);
        this.lastAnswer.set(key, Date.now());
        this.looks.delete(key);
        return { reachable: true, postgres: obs };
      } catch (err) {
        this.dropProbe(cluster, node);
        pgError = `postgres: ${pgMessage(err)}`;
        const e = err as { code?: string; message?: string };
        refused = e.code === 'ECONNREFUSED';
        // the server is there but refuses us: no point in a second connect
        if (refused || e.code === 'ETIMEDOUT' || /timeout/i.test(e.message ?? '')) break;
      }
    }
    const last = this.lastAnswer.get(key);
    const recent = last !== undefined && Date.now() - last < 10_000;
    // A refused port on a postgres that answered moments ago: its postmaster is gone for certain
    // (`gone`: the whole miss budget at once). Whether the node itself still answers (postgres
    // crashed) or not (fenced, sshd gone too) is the SSH look's to say, not the kernel's.
    const gone = refused && recent ? { gone: true as const } : {};
    // ONE ssh look tells "node up, postgres down" from "node gone". For a node that was healthy
    // moments ago it runs in the background (its answer serves the next probes): a failed
    // primary is confirmed at the probe cadence, not at SSH's.
    const look = this.looks.get(key);
    const lookFresh = !!look && look.at !== 0 && Date.now() - look.at < 3_000;
    if (recent || lookFresh) {
      if (!this.lookLater.has(key)) void this.refreshLook(cluster, node);
      // an older look (from a failure long ago) says nothing about now
      if (!lookFresh) return { reachable: false, postgres: null, error: `${pgError}; ssh: not checked yet`, ...gone };
      return { ...this.fromLook(look, pgError), ...gone };
    }
    await this.refreshLook(cluster, node);
    return this.fromLook(this.looks.get(key)!, pgError);
  }

  private fromLook(look: { state: NodeState | null; error: string }, pgError: string) {
    if (!look.state) return { reachable: false, postgres: null, error: `${pgError}; ssh: ${look.error}` };
    return { reachable: true, postgres: downObservation(look.state.initialized, look.state.standbySignal, look.state.running), error: pgError };
  }

  /** Start (or join) an SSH look at the node; its result lands in `looks`. */
  private refreshLook(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const key = `${cluster.name}/${node.name}`;
    const have = this.looks.get(key);
    if (have?.pending) return have.pending;
    const pending = this.nodeState(cluster, node, Math.max(2000, cluster.failureDetection.connectTimeoutMs * 2)).then(
      (state) => void this.looks.set(key, { at: Date.now(), state, error: '' }),
      (err) => void this.looks.set(key, { at: Date.now(), state: null, error: messageOf(err) }),
    );
    if (have) have.pending = pending;
    else this.looks.set(key, { at: 0, state: null, error: 'not checked yet', pending });
    return pending;
  }

  /** The probe query on an open session. */
  private async query(cluster: ClusterSpec, client: pg.Client): Promise<PostgresObservation> {
    const script = cluster.postgres.archiveScript ? archiveScriptPath(cluster) : '';
    const t = tlsNodePaths(cluster);
    const res = await client.query<ProbeRow>(PROBE_SQL, [script, this.tls.enabled(cluster) ? [t.cert, t.key, t.ca] : []]);
    const r = res.rows[0];
    if (!r) throw internal('probe query returned no row');
    return this.observationOf(cluster, r);
  }

  private observationOf(cluster: ClusterSpec, r: ProbeRow): PostgresObservation {
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
    const upstream = upstreamAddr ? (cluster.nodes.find((n) => n.address === upstreamAddr)?.name ?? upstreamAddr) : null;
    const replicas: ReplicaStatus[] = (r.replicas ?? []).map((x) => ({
      name: x.name,
      state: x.state,
      syncState: (['async', 'sync', 'quorum', 'potential'].includes(x.sync) ? x.sync : 'async') as ReplicaStatus['syncState'],
      flushLsn: parseLsn(x.flush),
      replayLsn: parseLsn(x.replay),
    }));
    const live = r.live_hash;
    const recorded = (r.recorded_hash ?? '').trim();
    const configHash = r.pending_restart ? `pending-restart:${live}` : recorded === live ? live : `unapplied:${live}`;
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
    };
  }

  /** The probe's view, through a fresh admin session (used by the ensure* operations). */
  private async look(cluster: ClusterSpec, node: NodeSpec): Promise<PostgresObservation> {
    return this.withAdmin(cluster, node, (c) => this.query(cluster, c));
  }

  // ======================================================================== install

  async ensureInstalled(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const t0 = performance.now();
    const family = cluster.provider.type === 'libvirt' ? cluster.provider.osFamily : 'debian';
    const p = cluster.postgres;
    const dirs = [this.dataDir(cluster), assertSafePath('postgres.archiveDir', p.archiveDir), assertSafePath('postgres.backupDir', p.backupDir), this.logDir(cluster)];
    const res = await this.sh(
      cluster,
      node,
      INSTALL_SH,
      [binDir(cluster), p.version, ...dirs, family, scriptDir(cluster), SOCKET_DIR, cluster.provider.type === 'libvirt' ? 1 : 0],
      { user: 'root', timeoutMs: 15 * 60_000 },
    );
    if (res.code !== 0) {
      // exit 3: a directory the install refuses to hand to postgres, or no binaries: retrying
      // cannot help; anything else (a package download) may
      const detail = tail(res.stderr) || tail(res.stdout) || `exit ${res.code}`;
      throw new PgopError(res.code === 3 ? 'terminal' : 'transient', `cannot install postgres on ${node.name}: ${detail}`);
    }
    if (p.archiveScript) await this.apply(cluster, node, [this.scriptFile(cluster)], { dataDir: false });
    this.log.info({ node: node.name, ms: ms(t0) }, 'postgres installed');
  }

  // ======================================================================== managed files

  /** Write, create-if-missing or delete files on a node (as root) in one round trip when nothing
   *  changed, two when something did: the first compares (stat + sha256sum of every path, and
   *  makes sure conf.d exists and postgresql.conf includes it, and after a copy drops the copied
   *  replication slots), the second writes only what differs (temp file + rename; contents travel
   *  on stdin, never on a command line). Returns the paths that changed. */
  private async apply(cluster: ClusterSpec, node: NodeSpec, files: FileOp[], opts: { dataDir: boolean; clean?: boolean }): Promise<Set<string>> {
    const pre = opts.dataDir ? { dataDir: this.dataDir(cluster), confDir: CONF_DIR, includeLine: INCLUDE_DIR_LINE, clean: !!opts.clean } : undefined;
    return putFiles(this.shell, this.host(cluster, node), files, pre);
  }

  /** archive.sh: root's in a root-only directory (/opt/pgop/scripts), so that postgres cannot
   *  change what it runs; on a lab node the directory is the seed's /opt/postgres/scripts,
   *  postgres's, and the script is postgres's too (postgres runs it as itself). */
  private scriptFile(cluster: ClusterSpec): FileOp {
    assertSafePath('postgres.archiveDir', cluster.postgres.archiveDir);
    this.logDir(cluster);
    const owner = cluster.provider.type === 'lab' ? 'postgres:postgres' : 'root:root';
    return { op: 'write', path: archiveScriptPath(cluster), content: renderArchiveScript(cluster), mode: 0o755, owner };
  }

  /** conf.d/pgop.conf, pg_hba.conf, archive script. */
  private managedFiles(cluster: ClusterSpec, node: NodeSpec): FileOp[] {
    const d = this.dataDir(cluster);
    const files: FileOp[] = [
      ...this.tlsFiles(cluster, node),
      { op: 'write', path: `${d}/${CONF_DIR}/${CONF_FILE}`, content: renderConf(cluster, node) },
      { op: 'write', path: `${d}/pg_hba.conf`, content: renderHba(cluster) },
    ];
    if (cluster.postgres.archiveScript) files.push(this.scriptFile(cluster));
    return files;
  }

  private confHashFile(cluster: ClusterSpec, node: NodeSpec): FileOp {
    return { op: 'write', path: `${this.dataDir(cluster)}/${CONFHASH_FILE}`, content: `${desiredConfigHash(cluster, node, this.nodeTls(cluster, node))}\n` };
  }

  /** Managed files (+ extra), include_dir; true when a setting file changed (reload needed). */
  private async writeManagedFiles(cluster: ClusterSpec, node: NodeSpec, extra: FileOp[] = [], clean = false): Promise<boolean> {
    await this.ensureTls(cluster);
    const changed = await this.apply(cluster, node, [...this.managedFiles(cluster, node), ...extra], { dataDir: true, clean });
    changed.delete(`${this.dataDir(cluster)}/${CONFHASH_FILE}`);
    changed.delete(replicationPassfilePath(cluster));
    return changed.size > 0;
  }

  private async writeConfHash(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    await this.apply(cluster, node, [this.confHashFile(cluster, node)], { dataDir: false });
  }

  /** Standby files (after a clone or rewind, or for a repoint): standby conf + signal + passfile,
   *  and after a copy an empty sync conf and auto.conf and no copied replication slots. */
  private standbyFiles(cluster: ClusterSpec, node: NodeSpec, primary: NodeSpec, fresh: boolean): FileOp[] {
    const d = this.dataDir(cluster);
    const files: FileOp[] = [];
    if (fresh) {
      files.push(
        { op: 'write', path: `${d}/postgresql.auto.conf`, content: EMPTY_AUTO_CONF },
        { op: 'write', path: `${d}/${CONF_DIR}/${SYNC_CONF_FILE}`, content: renderSyncConf([], 1) },
      );
    }
    files.push(
      { op: 'write', path: replicationPassfilePath(cluster), content: renderReplicationPassfile(cluster, this.replicationPassword(cluster)) },
      { op: 'write', path: `${d}/${CONF_DIR}/${STANDBY_CONF_FILE}`, content: renderStandbyConf(cluster, node, primary) },
      { op: 'write', path: `${d}/standby.signal`, content: '' },
    );
    return files;
  }

  // ======================================================================== start / stop

  private async start(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const t0 = performance.now();
    const res = await this.sh(
      cluster,
      node,
      START_SH,
      [this.dataDir(cluster), binDir(cluster), nodeOptionString(cluster, node), `${this.logDir(cluster)}/startup.log`, socketDir(cluster), pgPort(cluster)],
      { user: 'postgres', timeoutMs: 90_000 },
    );
    if (res.code !== 0) {
      // pg_ctl -w gives up after 60 s while a standby may still be catching up: running is fine.
      const st = await this.nodeState(cluster, node);
      if (!st.running) {
        const log = await this.sh(
          cluster,
          node,
          'tail -n 3 "$1/startup.log" 2>/dev/null; f=$(ls -t "$1"/postgresql-* 2>/dev/null | head -n 1); [ -n "$f" ] && grep -E "FATAL|PANIC|ERROR" "$f" | tail -n 3',
          [this.logDir(cluster)],
          { user: 'postgres' },
        );
        throw transient(`cannot start postgres on ${node.name}: ${tail(res.stderr) || tail(res.stdout) || `exit ${res.code}`} ${tail(log.stdout)}`.trim());
      }
    }
    this.log.info({ node: node.name, ms: ms(t0) }, 'postgres started');
  }

  private async stop(cluster: ClusterSpec, node: NodeSpec, mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    const t0 = performance.now();
    this.dropProbe(cluster, node);
    await this.must(cluster, node, 'stop postgres', STOP_SH, [this.dataDir(cluster), binDir(cluster), mode, socketDir(cluster), pgPort(cluster)], { user: 'postgres', timeoutMs: 120_000 });
    this.log.info({ node: node.name, ms: ms(t0), mode }, 'postgres stopped');
  }

  // ======================================================================== primary

  async ensurePrimary(cluster: ClusterSpec, node: NodeSpec, standbys: string[]): Promise<void> {
    const t0 = performance.now();
    await this.ensureTls(cluster);
    const d = this.dataDir(cluster);
    let st = await this.nodeState(cluster, node);
    if (!st.initialized) {
      if (st.nonEmpty) throw terminal(`cannot initialise ${node.name}: data directory ${d} is not empty and holds no database cluster${st.partial ? ' (an interrupted clone)' : ''}`);
      await this.must(cluster, node, 'initdb', INITDB_SH, [d, binDir(cluster)], { user: 'postgres', kind: 'terminal', timeoutMs: 300_000 });
      this.log.info({ node: node.name, ms: ms(t0) }, 'initdb done');
      st = { ...st, initialized: true, nonEmpty: true };
    } else if (st.standbySignal) {
      throw terminal(`cannot make ${node.name} a primary: it is a standby (standby.signal present); promote it instead`);
    }
    const extra: FileOp[] = [
      { op: 'delete', path: `${d}/${CONF_DIR}/${STANDBY_CONF_FILE}` },
      { op: 'create', path: `${d}/${CONF_DIR}/${SYNC_CONF_FILE}`, content: renderSyncConf([], 1) },
    ];
    if (!st.running) extra.push(this.confHashFile(cluster, node));
    const changed = await this.writeManagedFiles(cluster, node, extra);
    if (!st.running) await this.start(cluster, node);
    await this.ensureSuperuserPassword(cluster, node);
    if (st.running && changed) await this.withAdmin(cluster, node, (c) => this.reloadAndCheck(cluster, node, c));
    await this.withAdmin(cluster, node, async (c) => {
      const rec = await c.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
      if (rec.rows[0]?.rec) throw terminal(`cannot make ${node.name} a primary: it runs in recovery; promote it instead`);
      await c.query("SET log_statement = 'none'");
      await this.ensureRole(c, cluster.replication.user, { login: true, superuser: false, createdb: false, replication: true }, this.replicationPassword(cluster));
      for (const r of cluster.roles) {
        const pw = r.password ? resolveSecret(r.password, `the password of role ${r.name}`) : undefined;
        await this.ensureRole(c, r.name, { login: r.login, superuser: r.superuser, createdb: r.createdb, replication: false }, pw);
      }
      for (const r of cluster.roles) {
        if (!r.searchPath || r.searchPath.length === 0) continue;
        // pg stores the setting as quote_ident()s joined by ", ": compare before altering
        const same = await c.query<{ same: boolean }>(
          `SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
              WHERE r.rolname = $1 AND s.setdatabase = 0
                AND ('search_path=' || (SELECT string_agg(quote_ident(x), ', ' ORDER BY o) FROM unnest($2::text[]) WITH ORDINALITY AS u(x, o))) = ANY (s.setconfig)) AS same`,
          [r.name, r.searchPath],
        );
        if (!same.rows[0]?.same) {
          await c.query(`ALTER ROLE ${quoteIdent(r.name)} SET search_path TO ${r.searchPath.map(quoteIdent).join(', ')}`);
          this.log.info({ node: node.name, role: r.name }, 'search_path set');
        }
      }
      for (const db of cluster.databases) await this.ensureDatabase(c, node, db);
    });
    for (const db of cluster.databases) {
      const grants = cluster.grants.filter((g) => g.database === db.name);
      if (db.schemas.length === 0 && grants.length === 0) continue;
      await this.withAdmin(
        cluster,
        node,
        async (c) => {
          for (const s of db.schemas) await this.ensureSchema(c, s.name, s.owner);
          for (const g of grants) {
            const owner = db.schemas.find((s) => s.name === g.schema)?.owner ?? (await this.schemaOwner(c, g.schema));
            if (!owner) throw terminal(`cannot grant on schema ${g.schema} of ${db.name}: it does not exist`);
            const sp = privileges(g.schemaPrivileges, SCHEMA_PRIVS, `schema privileges for ${g.role}`);
            const tp = privileges(g.tablePrivileges, TABLE_PRIVS, `table privileges for ${g.role}`);
            if (sp) await c.query(`GRANT ${sp} ON SCHEMA ${quoteIdent(g.schema)} TO ${quoteIdent(g.role)}`);
            if (tp) {
              await c.query(`ALTER DEFAULT PRIVILEGES FOR ROLE ${quoteIdent(owner)} IN SCHEMA ${quoteIdent(g.schema)} GRANT ${tp} ON TABLES TO ${quoteIdent(g.role)}`);
              await c.query(`GRANT ${tp} ON ALL TABLES IN SCHEMA ${quoteIdent(g.schema)} TO ${quoteIdent(g.role)}`);
            }
          }
        },
        db.name,
      );
    }
    await this.ensureSlots(cluster, node, standbys);
    if (st.running) await this.writeConfHash(cluster, node);
    this.log.info({ node: node.name, ms: ms(t0) }, 'primary ensured');
  }

  /** The superuser's password (SCRAM verifier) over the local socket with peer auth, when the
   *  operator's TCP login does not work yet (fresh initdb) or the password changed. */
  private async ensureSuperuserPassword(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const password = this.superuserPassword(cluster);
    try {
      await this.withAdmin(cluster, node, async () => {});
      return;
    } catch (err) {
      const cause = (err as PgopError).cause as { code?: string } | undefined;
      if (cause?.code !== '28P01' && cause?.code !== '28000' && !/password/i.test(messageOf(err))) throw err;
    }
    const sql = `SET log_statement = 'none';\nALTER ROLE postgres PASSWORD ${quoteLiteral(scramVerifier(password))};\n`;
    await this.must(cluster, node, 'set the superuser password', PSQL_SH, [binDir(cluster), socketDir(cluster), pgPort(cluster)], {
      user: 'postgres',
      input: sql,
      kind: 'terminal',
    });
  }

  private async ensureRole(
    c: pg.Client,
    name: string,
    a: { login: boolean; superuser: boolean; createdb: boolean; replication: boolean },
    password?: string,
  ): Promise<void> {
    const cur = await c.query<{ rolcanlogin: boolean; rolsuper: boolean; rolcreatedb: boolean; rolreplication: boolean; rolpassword: string | null }>(
      'SELECT rolcanlogin, rolsuper, rolcreatedb, rolreplication, rolpassword FROM pg_authid WHERE rolname = $1',
      [name],
    );
    const attrs = [a.login ? 'LOGIN' : 'NOLOGIN', a.superuser ? 'SUPERUSER' : 'NOSUPERUSER', a.createdb ? 'CREATEDB' : 'NOCREATEDB', a.replication ? 'REPLICATION' : 'NOREPLICATION'];
    const row = cur.rows[0];
    const pwClause = password !== undefined && !(row && verifyScram(row.rolpassword, password)) ? ` PASSWORD ${quoteLiteral(scramVerifier(password))}` : '';
    if (!row) {
      await c.query(`CREATE ROLE ${quoteIdent(name)} WITH ${attrs.join(' ')}${pwClause}`);
      this.log.info({ role: name }, 'role created');
      return;
    }
    const same = row.rolcanlogin === a.login && row.rolsuper === a.superuser && row.rolcreatedb === a.createdb && row.rolreplication === a.replication;
    if (!same || pwClause) await c.query(`ALTER ROLE ${quoteIdent(name)} WITH ${attrs.join(' ')}${pwClause}`);
  }

  private async ensureDatabase(c: pg.Client, node: NodeSpec, db: ClusterSpec['databases'][number]): Promise<void> {
    const cur = await c.query<{ owner: string }>('SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = $1', [db.name]);
    const row = cur.rows[0];
    if (row) {
      if (row.owner !== db.owner) await c.query(`ALTER DATABASE ${quoteIdent(db.name)} OWNER TO ${quoteIdent(db.owner)}`);
      return;
    }
    if (!/^[A-Za-z0-9_-]+$/.test(db.encoding)) throw terminal(`cannot create database ${db.name}: bad encoding ${JSON.stringify(db.encoding)}`);
    const create = (locale?: string) =>
      c.query(
        `CREATE DATABASE ${quoteIdent(db.name)} OWNER ${quoteIdent(db.owner)} TEMPLATE template0 ENCODING ${quoteLiteral(db.encoding)}` +
          (locale ? ` LC_COLLATE ${quoteLiteral(locale)} LC_CTYPE ${quoteLiteral(locale)}` : ''),
      );
    try {
      await create(db.locale);
    } catch (err) {
      const e = err as { code?: string; message?: string };
      if (db.locale && /locale/i.test(e.message ?? '')) {
        this.log.warn({ node: node.name, database: db.name, locale: db.locale }, `locale ${db.locale} is missing on ${node.name}: using C.UTF-8`);
        await create('C.UTF-8');
      } else throw terminal(`cannot create database ${db.name} on ${node.name}: ${pgMessage(err)}`, err);
    }
    this.log.info({ node: node.name, database: db.name }, 'database created');
  }

  private async schemaOwner(c: pg.Client, schema: string): Promise<string | null> {
    const r = await c.query<{ owner: string }>('SELECT pg_get_userbyid(nspowner) AS owner FROM pg_namespace WHERE nspname = $1', [schema]);
    return r.rows[0]?.owner ?? null;
  }

  private async ensureSchema(c: pg.Client, name: string, owner: string): Promise<void> {
    const cur = await this.schemaOwner(c, name);
    if (cur === null) await c.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(name)} AUTHORIZATION ${quoteIdent(owner)}`);
    else if (cur !== owner) await c.query(`ALTER SCHEMA ${quoteIdent(name)} OWNER TO ${quoteIdent(owner)}`);
  }

  // ======================================================================== slots / sync

  slotName(node: string): string {
    return slotName(node);
  }

  async ensureSlots(cluster: ClusterSpec, primary: NodeSpec, standbys: string[]): Promise<void> {
    if (!cluster.replication.slots) return;
    await this.withAdmin(cluster, primary, async (c) => {
      const have = await this.createSlots(c, primary, standbys);
      const keep = new Set(cluster.nodes.filter((n) => n.name !== primary.name).map((n) => slotName(n.name)));
      for (const r of have) {
        if (r.slot_name.startsWith('pgop_') && !keep.has(r.slot_name) && !r.active) {
          await c.query('SELECT pg_drop_replication_slot($1)', [r.slot_name]).catch(() => {});
          this.log.info({ node: primary.name, slot: r.slot_name }, 'replication slot dropped');
        }
      }
    });
  }

  /** Create the missing physical slots of `standbys`; returns the slots that existed before. */
  private async createSlots(c: pg.Client, primary: NodeSpec, standbys: string[]): Promise<{ slot_name: string; active: boolean }[]> {
    const have = await c.query<{ slot_name: string; active: boolean }>("SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical'");
    const names = new Set(have.rows.map((r) => r.slot_name));
    for (const s of standbys) {
      if (s === primary.name) continue;
      const slot = slotName(s);
      if (names.has(slot)) continue;
      await c.query('SELECT pg_create_physical_replication_slot($1, true)', [slot]).catch((err: { code?: string }) => {
        if (err.code !== '42710') throw err; // created meanwhile
      });
      this.log.info({ node: primary.name, slot }, 'replication slot created');
    }
    return have.rows;
  }

  async ensureSyncStandbys(cluster: ClusterSpec, primary: NodeSpec, names: string[], quorum: number): Promise<void> {
    const want = syncStandbyNamesValue(names, quorum);
    const path = `${this.dataDir(cluster)}/${CONF_DIR}/${SYNC_CONF_FILE}`;
    const changed = (await this.apply(cluster, primary, [{ op: 'write', path, content: renderSyncConf(names, quorum) }], { dataDir: false })).size > 0;
    await this.withAdmin(cluster, primary, async (c) => {
      const cur = await c.query<{ v: string }>("SELECT current_setting('synchronous_standby_names') AS v");
      if (!changed && cur.rows[0]?.v === want) return;
      await c.query('SELECT pg_reload_conf()');
      const deadline = Date.now() + 10_000;
      for (;;) {
        await sleep(20);
        const r = await c.query<{ v: string }>("SELECT current_setting('synchronous_standby_names') AS v");
        if (r.rows[0]?.v === want) break;
        if (Date.now() > deadline) throw transient(`cannot set synchronous_standby_names on ${primary.name}: still ${JSON.stringify(r.rows[0]?.v)} after reload`);
      }
      this.log.info({ node: primary.name, synchronous_standby_names: want }, 'sync standbys set');
    });
  }

  // ======================================================================== configuration

  /** pg_reload_conf(), wait until this session re-read the files, then report file errors. */
  private async reloadAndCheck(cluster: ClusterSpec, node: NodeSpec, c: pg.Client): Promise<{ pendingRestart: boolean }> {
    const before = await c.query<{ t: Date }>('SELECT pg_conf_load_time() AS t');
    await c.query('SELECT pg_reload_conf()');
    const deadline = Date.now() + 5000;
    for (;;) {
      await sleep(20);
      const r = await c.query<{ t: Date }>('SELECT pg_conf_load_time() AS t');
      if (r.rows[0]!.t.getTime() !== before.rows[0]!.t.getTime()) break;
      if (Date.now() > deadline) break; // nothing re-read (no change seen by this backend): check anyway
    }
    // Errors in the files pgop wrote are terminal; "needs a restart" is not an error here.
    const errs = await c.query<{ where: string; error: string }>(
      `SELECT coalesce(sourcefile, '?') || ':' || coalesce(sourceline::text, '?') || ' ' || coalesce(name, '') AS where, error
         FROM pg_file_settings
        WHERE error IS NOT NULL AND error <> 'setting could not be applied' AND error NOT LIKE '%without restarting the server%'
       UNION ALL
       SELECT 'pg_hba.conf:' || line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL`,
    );
    if (errs.rows.length > 0) {
      throw terminal(`cannot configure postgres on ${node.name}: ${errs.rows.map((e) => `${e.where}: ${e.error}`).join('; ')}`);
    }
    const pending = await c.query<{ p: boolean | null }>(
      `SELECT (SELECT bool_or(pending_restart) FROM pg_settings)
           OR EXISTS (SELECT 1 FROM pg_file_settings WHERE error LIKE '%without restarting the server%') AS p`,
    );
    return { pendingRestart: pending.rows[0]?.p === true };
  }

  async ensureConfigured(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const t0 = performance.now();
    await this.ensureTls(cluster);
    const st = await this.nodeState(cluster, node);
    if (!st.initialized) throw transient(`cannot configure ${node.name}: its data directory is not initialised yet`);
    const changed = await this.writeManagedFiles(cluster, node);
    if (st.running) {
      const { pendingRestart } = await this.withAdmin(cluster, node, (c) => this.reloadAndCheck(cluster, node, c));
      if (pendingRestart) {
        this.log.info({ node: node.name }, 'restarting postgres: a changed setting needs it');
        await this.stop(cluster, node, 'fast');
        await this.start(cluster, node);
      }
    } else {
      // The way back when nobody else can serve: start it in place, in whatever role its data
      // directory says (standby.signal or not). start() clears a dead postmaster's stale pid file.
      this.log.info({ node: node.name, standby: st.standbySignal }, 'postgres is down: starting it in place');
      await this.start(cluster, node);
    }
    await this.writeConfHash(cluster, node);
    this.log.info({ node: node.name, changed, ms: ms(t0) }, 'configuration ensured');
  }

  // ======================================================================== standby

  /** The primary's timeline and the history of that timeline; creates `slotFor`'s slot. */
  private async primaryInfo(cluster: ClusterSpec, primary: NodeSpec, slotFor?: string): Promise<{ timeline: number; history: Map<number, number>; lsn: number; systemId: string }> {
    return this.withAdmin(cluster, primary, async (c) => {
      const r = await c.query<{ rec: boolean; walfile: string | null; lsn: string | null; sysid: string }>(
        `SELECT pg_is_in_recovery() AS rec,
                CASE WHEN NOT pg_is_in_recovery() THEN pg_walfile_name(pg_current_wal_lsn()) END AS walfile,
                CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn()::text END AS lsn,
                (SELECT system_identifier::text FROM pg_control_system()) AS sysid`,
      );
      const row = r.rows[0]!;
      if (row.rec || !row.walfile) throw transient(`cannot follow ${primary.name}: it is not a primary (in recovery)`);
      const timeline = parseInt(row.walfile.slice(0, 8), 16);
      let history = new Map<number, number>();
      if (timeline > 1) {
        const f = `pg_wal/${timeline.toString(16).toUpperCase().padStart(8, '0')}.history`;
        const h = await c.query<{ t: string | null }>("SELECT convert_from(pg_read_binary_file($1, 0, 16777216, true), 'UTF8') AS t", [f]);
        history = parseTimelineHistory(h.rows[0]?.t ?? '');
      }
      if (slotFor && cluster.replication.slots) await this.createSlots(c, primary, [slotFor]);
      return { timeline, history, lsn: parseLsn(row.lsn), systemId: row.sysid };
    });
  }

  async ensureStandby(cluster: ClusterSpec, node: NodeSpec, primary: NodeSpec): Promise<void> {
    if (node.name === primary.name) throw internal(`cannot make ${node.name} a standby of itself`);
    const t0 = performance.now();
    await this.ensureTls(cluster);
    const d = this.dataDir(cluster);
    // The primary's timeline and history, and the node's slot on it (slots are not replicated:
    // after a failover the new primary gets it before the standby is pointed at it).
    const pinfo = await this.primaryInfo(cluster, primary, node.name);

    const st = await this.nodeState(cluster, node);
    let action: 'clone' | 'rewind' | 'start' | 'done' = 'start';
    let reason = '';
    if (!st.initialized) {
      action = 'clone';
      reason = st.partial ? 'an interrupted clone (partial data directory)' : st.nonEmpty ? 'data directory holds no cluster' : 'no data';
    } else if (st.running) {
      let obs: PostgresObservation | null = null;
      try {
        obs = await this.look(cluster, node);
      } catch (err) {
        // Only "the database system is starting up" (a standby that cannot reach a consistent
        // state, e.g. after it diverged) is a reason to rewind; anything else (auth, network)
        // is not something a rewind fixes.
        const code = ((err as PgopError).cause as { code?: string } | undefined)?.code;
        if (code !== '57P03') throw err;
        reason = `stuck starting up (${messageOf(err)})`;
      }
      if (!obs) {
        await this.stop(cluster, node);
        action = 'rewind';
      } else if (!obs.inRecovery) {
        reason = 'it runs as a primary';
        await this.stop(cluster, node);
        action = 'rewind';
      } else {
        const want = renderStandbyConf(cluster, node, primary);
        const have = await this.shell.readFile(this.host(cluster, node), `${d}/${CONF_DIR}/${STANDBY_CONF_FILE}`);
        const confOk = have === want;
        if (confOk && obs.upstream === primary.name && (obs.streaming || (await this.waitStreaming(cluster, node, primary, 6000, false)))) {
          action = 'done';
        } else {
          const pos = Math.max(obs.lsn, obs.receiveLsn);
          if (canFollowTimeline(obs.timeline, pos, pinfo.timeline, pinfo.history)) {
            if (!confOk) {
              // Repoint in place: primary_conninfo / primary_slot_name reload (PG >= 13).
              await this.writeManagedFiles(cluster, node, [...this.standbyFiles(cluster, node, primary, false), this.confHashFile(cluster, node)]);
              await this.withAdmin(cluster, node, (c) => this.reloadAndCheck(cluster, node, c));
              if (await this.waitStreaming(cluster, node, primary, 10_000, false)) {
                this.log.info({ node: node.name, primary: primary.name, ms: ms(t0) }, 'standby repointed');
                return;
              }
            }
            reason = `not streaming from ${primary.name}`;
          } else {
            reason = `diverged (timeline ${obs.timeline} at ${pos}, primary on timeline ${pinfo.timeline})`;
          }
          await this.stop(cluster, node);
          action = 'rewind';
        }
      }
    } else {
      const cd = await this.controlData(cluster, node);
      const tli = Math.max(cd.timeline, cd.minRecoveryTli);
      if (st.standbySignal && tli === pinfo.timeline) action = 'start';
      else {
        action = 'rewind';
        reason = st.standbySignal ? `stopped standby on timeline ${tli}, primary on ${pinfo.timeline}` : `stopped former primary (${cd.state})`;
      }
    }

    if (action === 'done') {
      const changed = await this.writeManagedFiles(cluster, node, [...this.standbyFiles(cluster, node, primary, false), this.confHashFile(cluster, node)]);
      if (changed) await this.withAdmin(cluster, node, (c) => this.reloadAndCheck(cluster, node, c));
      return;
    }
    let fresh = false;
    if (action === 'rewind') {
      fresh = await this.rewind(cluster, node, primary, reason);
      if (!fresh) {
        action = 'clone';
        reason = 'rewind failed';
      }
    }
    if (action === 'clone') {
      await this.clone(cluster, node, primary, pinfo.systemId, reason);
      fresh = true;
    }
    // One round trip: managed files, standby conf + signal + passfile, and after a copy an empty
    // sync conf and auto.conf and no copied slots; then start (which clears a dead postmaster's
    // stale lock files first).
    await this.writeManagedFiles(cluster, node, [...this.standbyFiles(cluster, node, primary, fresh), this.confHashFile(cluster, node)], fresh);
    await this.start(cluster, node);
    if (!(await this.waitStreaming(cluster, node, primary, this.streamTimeoutMs, true))) {
      const key = `${cluster.name}/${node.name}`;
      if (!this.noopRewinds.delete(key)) throw transient(`cannot make ${node.name} a standby of ${primary.name}: not streaming after ${this.streamTimeoutMs} ms`);
      // pg_rewind found "no rewind required" (same timeline ID, even the same history: two
      // promotions from one switch point picked the same new ID) yet the node cannot follow: its
      // WAL diverged after the switch. Only a fresh copy of the primary is right.
      this.log.warn({ node: node.name, primary: primary.name }, 'not streaming after a rewind that found nothing to rewind: the timelines diverged under one ID; cloning afresh');
      await this.stop(cluster, node, 'fast');
      await this.clone(cluster, node, primary, pinfo.systemId, 'diverged under the same timeline ID');
      await this.writeManagedFiles(cluster, node, [...this.standbyFiles(cluster, node, primary, true), this.confHashFile(cluster, node)], true);
      await this.start(cluster, node);
      if (!(await this.waitStreaming(cluster, node, primary, this.streamTimeoutMs, true))) {
        throw transient(`cannot make ${node.name} a standby of ${primary.name}: not streaming after ${this.streamTimeoutMs} ms (after a fresh clone)`);
      }
    } else {
      this.noopRewinds.delete(`${cluster.name}/${node.name}`);
    }
    this.log.info({ node: node.name, primary: primary.name, ms: ms(t0) }, 'standby ensured');
  }

  private async waitChildrenGone(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    await this.must(cluster, node, 'wait for the old postmaster to go', WAIT_GONE_SH, [this.dataDir(cluster), socketDir(cluster), pgPort(cluster)], { user: 'postgres', timeoutMs: 15_000 });
  }

  /** pg_rewind against the primary; false when it failed (the caller clones instead). */
  private async rewind(cluster: ClusterSpec, node: NodeSpec, primary: NodeSpec, reason: string): Promise<boolean> {
    const t0 = performance.now();
    await this.waitChildrenGone(cluster, node);
    // pg_rewind (15) reads the source's timeline from its control file, which a freshly promoted
    // primary updates only at its first checkpoint: without this, "no rewind required".
    await this.withAdmin(cluster, primary, (c) => c.query('CHECKPOINT'));
    const src = [`host=${primary.address} port=${pgPort(cluster)} user=postgres dbname=postgres connect_timeout=5`, ...nodeSslConninfo(cluster)].join(' ');
    const res = await this.sh(cluster, node, REWIND_SH, [this.dataDir(cluster), binDir(cluster), src], {
      user: 'postgres',
      input: `${this.superuserPassword(cluster)}\n`,
      timeoutMs: 30 * 60_000,
    });
    if (res.code !== 0) {
      this.log.warn({ node: node.name, primary: primary.name, reason, error: tail(res.stderr) }, 'pg_rewind failed: cloning instead');
      return false;
    }
    const noop = /no rewind required/i.test(res.stdout + res.stderr);
    if (noop) this.noopRewinds.add(`${cluster.name}/${node.name}`);
    if (noop && !(await this.sameTimelineHistory(cluster, node, primary))) {
      // Two promotions from the same timeline picked the same new timeline ID (no shared
      // archive): pg_rewind compares IDs, sees one timeline and rewinds nothing, and the node
      // would never stream. Its history differs from the primary's: copy the primary afresh.
      this.log.warn({ node: node.name, primary: primary.name }, 'same timeline ID as the primary but a different history: cloning instead of trusting pg_rewind');
      return false;
    }
    this.log.info({ node: node.name, primary: primary.name, reason, ms: ms(t0), output: tail(res.stdout + res.stderr) }, 'rewound');
    return true;
  }

  /** False when node and primary are on the same timeline ID > 1 whose history files differ
   *  (or the node's is missing): the same ID was chosen by two different promotions. */
  private async sameTimelineHistory(cluster: ClusterSpec, node: NodeSpec, primary: NodeSpec): Promise<boolean> {
    const cd = await this.controlData(cluster, node);
    const tli = Math.max(cd.timeline, cd.minRecoveryTli);
    const p = await this.primaryInfo(cluster, primary);
    if (tli !== p.timeline || tli <= 1) return true;
    const file = `pg_wal/${tli.toString(16).toUpperCase().padStart(8, '0')}.history`;
    const theirs = await this.withAdmin(cluster, primary, async (c) => (await c.query<{ t: string | null }>("SELECT convert_from(pg_read_binary_file($1, 0, 16777216, true), 'UTF8') AS t", [file])).rows[0]?.t ?? null);
    const ours = await this.shell.readFile(this.host(cluster, node), `${this.dataDir(cluster)}/${file}`);
    return ours !== null && theirs !== null && ours === theirs;
  }

  /** Fresh copy of the primary (pg_basebackup -X stream): an interrupted clone is emptied first,
   *  a database cluster moved aside, anything else refused (PREPARE_DATADIR_SH). A clone killed
   *  midway leaves a partial directory that the next look reports as such (NODE_STATE_SH), and
   *  the next pass clones again. */
  private async clone(cluster: ClusterSpec, node: NodeSpec, primary: NodeSpec, systemId: string, reason: string): Promise<void> {
    const t0 = performance.now();
    const d = this.dataDir(cluster);
    const prep = await this.must(cluster, node, 'prepare the data directory', PREPARE_DATADIR_SH, [d, systemId, binDir(cluster)], { user: 'root', kind: 'terminal', timeoutMs: 600_000 });
    for (const line of prep.stdout.split('\n')) if (line.startsWith('keeping ')) this.log.warn({ node: node.name }, line);
    // pg_basebackup checks the primary's certificate against the CA file (verify-full)
    const tlsOn = this.tls.enabled(cluster);
    if (tlsOn) {
      await this.ensureTls(cluster);
      await this.apply(cluster, node, this.tlsFiles(cluster, node), { dataDir: false });
    }
    const slot = cluster.replication.slots ? slotName(node.name) : '';
    await this.must(
      cluster,
      node,
      `clone ${primary.name}`,
      BASEBACKUP_SH,
      [d, binDir(cluster), primary.address, pgPort(cluster), cluster.replication.user, slot, `pgop_clone_${node.name}`],
      {
        user: 'postgres',
        input: `${this.replicationPassword(cluster)}\n`,
        timeoutMs: 6 * 3600_000,
        ...(tlsOn ? { env: { PGSSLMODE: 'verify-full', PGSSLROOTCERT: tlsNodePaths(cluster).ca } } : {}),
      },
    );
    this.log.info({ node: node.name, primary: primary.name, reason, ms: ms(t0) }, 'cloned');
  }

  /** Poll until the node streams from `primary` (true) or `timeoutMs` passes (false). */
  private async waitStreaming(cluster: ClusterSpec, node: NodeSpec, primary: NodeSpec, timeoutMs: number, _starting: boolean): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    let client: pg.Client | null = null;
    try {
      for (;;) {
        try {
          if (!client) {
            client = newClient(this.clientConfig(cluster, node, { connectionTimeoutMillis: 2000 }));
            client.on('error', () => {});
            await client.connect();
          }
          const r = await client.query<{ rec: boolean; status: string | null; host: string | null }>(
            'SELECT pg_is_in_recovery() AS rec, w.status, w.sender_host AS host FROM (SELECT 1) x LEFT JOIN pg_stat_wal_receiver w ON true',
          );
          const row = r.rows[0];
          if (row?.rec && row.status === 'streaming' && row.host === primary.address) return true;
        } catch {
          if (client) await endClient(client);
          client = null;
        }
        if (Date.now() > deadline) return false;
        await sleep(50);
      }
    } finally {
      if (client) await endClient(client);
    }
  }

  // ======================================================================== promote / demote

  async promote(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const t0 = performance.now();
    const d = this.dataDir(cluster);
    const dropStandbyConf = () => this.apply(cluster, node, [{ op: 'delete', path: `${d}/${CONF_DIR}/${STANDBY_CONF_FILE}` }], { dataDir: false });
    let done = false;
    const phases: Record<string, number> = {};
    try {
      // On the probe session when it is open (no new connection + SCRAM on the failover's
      // critical path), else on a fresh one; the steps are idempotent, so a retry is safe.
      const session = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
        let c: pg.Client | null = null;
        try {
          c = await this.probeClient(cluster, node);
        } catch {
          this.dropProbe(cluster, node);
        }
        if (c) {
          try {
            return await fn(c);
          } catch (err) {
            this.dropProbe(cluster, node);
            this.log.warn({ node: node.name, error: messageOf(err) }, 'promote on the probe session failed: again on a fresh session');
          }
        }
        return this.withAdmin(cluster, node, fn);
      };
      done = await session(async (c) => {
        phases.connectMs = ms(t0);
        const r = await c.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
        if (r.rows[0]?.rec) {
          // pg_promote(wait) polls every 100 ms; polling ourselves every 5 ms saves most of it.
          const p = await c.query<{ ok: boolean }>('SELECT pg_promote(false) AS ok');
          if (p.rows[0]?.ok !== true) return false;
          const deadline = Date.now() + 10_000;
          // PostgreSQL 15's startup process can take the request and then sleep out the rest of
          // wal_retrieve_retry_interval (5 s) in its wait for WAL before it ends recovery (seen
          // here: 0.55 s, until a SIGHUP happened to wake it). Asking again wakes it.
          let askAgainAt = Date.now() + 40;
          while ((await c.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec')).rows[0]?.rec) {
            if (Date.now() > deadline) return false;
            if (Date.now() >= askAgainAt) {
              // fails once recovery is over ("recovery is not in progress"): the loop ends then
              await c.query('SELECT pg_promote(false)').catch(() => undefined);
              askAgainAt = Date.now() + 40;
            }
            await sleep(5);
          }
          phases.writableMs = ms(t0);
        }
        return true;
      });
    } catch (err) {
      this.log.warn({ node: node.name, error: messageOf(err) }, 'pg_promote failed: trying pg_ctl promote');
    }
    if (done) {
      // The standby conf (primary_conninfo of the old primary) is removed once the failover is
      // over: on a primary it is inert (read only in recovery), and the SSH round trips'
      // processes took CPU from the promotion and pgpool's restart on a busy host. A later
      // rejoin as a standby rewrites it anyway.
      setTimeout(() => {
        // unless it is a standby again by then (a quick switchover back): its conf is current
        void this.withAdmin(cluster, node, (a) => a.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec'))
          .then((rec) => (rec.rows[0]?.rec === false ? dropStandbyConf() : null))
          .then((changed) => (changed?.size ? this.withAdmin(cluster, node, (a) => a.query('SELECT pg_reload_conf()')) : undefined))
          .catch((err) => this.log.warn({ node: node.name, error: messageOf(err) }, 'cannot remove the standby configuration of the promoted node (inert on a primary)'));
      }, AFTER_FAILOVER_MS).unref();
    } else {
      const st = await this.nodeState(cluster, node);
      if (!st.running) throw transient(`cannot promote ${node.name}: postgres is not running`);
      if (st.standbySignal) {
        await this.must(cluster, node, 'promote', '"$2/pg_ctl" -D "$1" -w -t 30 promote', [d, binDir(cluster)], { user: 'postgres', timeoutMs: 60_000 });
      }
      await dropStandbyConf();
      await this.withAdmin(cluster, node, async (c) => {
        const deadline = Date.now() + 30_000;
        while ((await c.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec')).rows[0]?.rec) {
          if (Date.now() > deadline) throw transient(`cannot promote ${node.name}: still in recovery after 30 s`);
          await sleep(20);
        }
        await c.query('SELECT pg_reload_conf()');
      });
    }
    this.log.info({ node: node.name, ms: ms(t0), ...phases }, 'promoted');
  }

  async demote(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const t0 = performance.now();
    const st = await this.nodeState(cluster, node);
    if (!st.running) return;
    try {
      await this.withAdmin(cluster, node, (c) => c.query('CHECKPOINT'));
    } catch (err) {
      this.log.warn({ node: node.name, error: messageOf(err) }, 'checkpoint before demote failed');
    }
    await this.stop(cluster, node, 'fast');
    this.log.info({ node: node.name, ms: ms(t0) }, 'demoted (stopped)');
  }

  async close(): Promise<void> {
    await this.probes.close();
  }
}


// ============================================================================ helpers

/** Write, create-if-missing or delete files on a host in one round trip when nothing changed, two
 *  when something did: the first compares (stat + sha256sum of every path; with `pre`, it also
 *  makes sure conf.d exists and postgresql.conf includes it, and after a copy drops the copied
 *  replication slots, as postgres), the second writes only what differs (contents travel on
 *  stdin, never on a command line). A file of postgres's in a directory of postgres's is written
 *  by postgres; any other only where nobody but root can change the way to its directory, by
 *  root (temp file with a random name, then a rename); anything else is refused
 *  (src/drivers/ssh/node-fs.ts). Returns the paths that changed. */
export async function putFiles(
  shell: NodeShell,
  host: HostRef,
  files: FileOp[],
  pre?: { dataDir: string; confDir: string; includeLine: string; clean: boolean },
): Promise<Set<string>> {
  for (const f of files) if (!SAFE_PATH.test(f.path)) throw internal(`cannot write ${JSON.stringify(f.path)}: unsafe path`);
  const run = async (what: string, script: string, args: string[], input?: string) => {
    const res = await shell.exec(host, ['sh', '-c', `cd / || exit 1\n${script}`, 'pgop', ...args], { user: 'root', input });
    if (res.code !== 0) throw terminal(`cannot ${what} on ${host.id}: ${tail(res.stderr) || tail(res.stdout) || `exit ${res.code}`}`);
    return res;
  };
  const paths = files.map((f) => f.path);
  const res = await run('check files', CHECK_FILES_SH, [pre?.dataDir ?? '', pre?.confDir ?? '', pre?.includeLine ?? '', pre?.clean ? '1' : '0', ...paths]);
  const changed = new Set<string>();
  const stat = new Map<string, string>();
  const sums = new Map<string, string>();
  for (const line of res.stdout.split('\n')) {
    if (line === 'include added' && pre) changed.add(`${pre.dataDir}/postgresql.conf`);
    // anything but a regular file (a symlink someone planted) never matches: it is replaced
    let m = /^S (\d+) (\S+) ([^|]+)\|(\S+)$/.exec(line);
    if (m) stat.set(m[4]!, m[3]!.startsWith('regular') ? `${m[1]} ${m[2]}` : `not a regular file: ${m[3]}`);
    m = /^([0-9a-f]{64}) {2}(\S+)$/.exec(line);
    if (m) sums.set(m[2]!, m[1]!);
  }
  const todo: string[] = [];
  for (const f of files) {
    const have = stat.get(f.path);
    if (f.op === 'delete') {
      if (have !== undefined) todo.push(`d 0 - ${f.path} -`);
      continue;
    }
    if (f.op === 'create' && have !== undefined) continue;
    const mode = (f.mode ?? 0o600).toString(8);
    const owner = f.owner ?? 'postgres:postgres';
    if (!/^[0-7]{3,4}$/.test(mode) || !/^[a-z_][a-z0-9_-]*:[a-z_][a-z0-9_-]*$/.test(owner)) throw internal(`bad file mode/owner for ${f.path}`);
    const content = f.content ?? '';
    const sum = createHash('sha256').update(content, 'utf8').digest('hex');
    if (have === `${mode} ${owner}` && sums.get(f.path) === sum) continue;
    todo.push(`w ${mode} ${owner} ${f.path} ${printfEscape(content)}`);
  }
  if (todo.length === 0) return changed;
  const w = await run('write files', WRITE_FILES_SH, [], `${todo.join('\n')}\n`);
  for (const line of w.stdout.split('\n')) if (line.startsWith('changed ')) changed.add(line.slice(8));
  return changed;
}

const SCHEMA_PRIVS = ['USAGE', 'CREATE', 'ALL', 'ALL PRIVILEGES'];
const TABLE_PRIVS = ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER', 'ALL', 'ALL PRIVILEGES'];

/** Content for dash/bash `printf '%b'` on ONE line: printable ASCII as is (backslash doubled),
 *  everything else (newline, space, tab, bytes >= 0x7f) as \0NNN octal escapes. */
export function printfEscape(content: string): string {
  let out = '';
  for (const b of Buffer.from(content, 'utf8')) {
    if (b === 0x5c) out += '\\\\';
    else if (b > 0x20 && b < 0x7f) out += String.fromCharCode(b);
    else out += `\\0${b.toString(8).padStart(3, '0')}`;
  }
  return out;
}

function privileges(list: string[], allowed: string[], what: string): string {
  const out = list.map((p) => p.trim().toUpperCase());
  for (const p of out) if (!allowed.includes(p)) throw terminal(`cannot grant ${what}: unknown privilege ${JSON.stringify(p)}`);
  return out.join(', ');
}

function socketDir(cluster: ClusterSpec): string {
  const s = cluster.postgres.parameters.unix_socket_directories;
  return s === undefined ? SOCKET_DIR : String(s).split(',')[0]!.trim();
}

function ms(t0: number): number {
  return Math.round(performance.now() - t0);
}

function tail(s: string, n = 400): string {
  const t = s.trim();
  return t.length > n ? `...${t.slice(-n)}` : t;
}

function pgMessage(err: unknown): string {
  const e = err as { message?: string; code?: string };
  const tls = explainTlsError(err);
  if (tls) return tls;
  const msg = e?.message ?? String(err);
  return e?.code && /^[0-9A-Z]{5}$/.test(e.code) ? `${msg} (${e.code})` : msg;
}

// ============================================================================ node scripts
// Constant scripts; values arrive as $1, $2, ... (never interpolated).

/** Shell functions shared by the scripts below. A postmaster killed with -9 stays a zombie until
 *  its parent (init) reaps it, and pg_ctl/postgres take a zombie for a live server (kill -0
 *  succeeds): liveness here is "pid alive, not a zombie, named postgres". */
const PM_FUNCS = `
pid_alive() {
  # $1: a postgres lock file (postmaster.pid, .s.PGSQL.<port>.lock): is the pid on its line 1 alive?
  [ -f "$1" ] || return 1
  pid=$(sed -n 1p "$1" 2>/dev/null | tr -d ' -')
  case "$pid" in ''|*[!0-9]*) return 1;; esac
  [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)
  [ "$state" != Z ] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null)
  [ "$comm" = postgres ] || [ "$comm" = postmaster ]
}
pm_alive() { pid_alive "$1/postmaster.pid"; }
shm_attached() {
  # children of a dead postmaster keep its shared memory attached for a moment
  f="$1/postmaster.pid"
  [ -f "$f" ] || return 1
  shmid=$(sed -n 7p "$f" 2>/dev/null | awk '{print $2}')
  [ -n "$shmid" ] || return 1
  n=$(awk -v id="$shmid" '$2==id {print $7}' /proc/sysvipc/shm 2>/dev/null)
  [ -n "$n" ] && [ "$n" != 0 ]
}
clear_stale() {
  # $1 data dir, $2 socket dir, $3 port. No live postmaster: wait (up to 10 s) for its children
  # to go, then drop the stale lock files (postmaster.pid, the socket's .lock).
  pm_alive "$1" && return 0
  if [ -f "$1/postmaster.pid" ]; then
    i=0
    while shm_attached "$1" && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
    if shm_attached "$1"; then echo "children of the old postmaster still hold its shared memory" >&2; return 1; fi
    rm -f "$1/postmaster.pid"
  fi
  if [ -n "$2" ] && [ -n "$3" ] && [ -f "$2/.s.PGSQL.$3.lock" ] && ! pid_alive "$2/.s.PGSQL.$3.lock"; then
    rm -f "$2/.s.PGSQL.$3.lock" "$2/.s.PGSQL.$3"
  fi
  return 0
}
`;

/** pgdata_kind DIR: what a data directory holds. missing | empty | cluster (a database cluster
 *  postgres can start) | partial (only what a data directory or a copy of one has, but no
 *  global/pg_control, or a backup_label without a recovery signal: a pg_basebackup or pg_rewind
 *  that did not finish, or whose standby files were never written; pg_basebackup sends
 *  pg_control last) | other (anything else). */
const PGDATA_KIND_FN = `
pgdata_kind() {
  [ -d "$1" ] || { echo missing; return 0; }
  [ -n "$(ls -A -- "$1" 2>/dev/null)" ] || { echo empty; return 0; }
  if [ -f "$1/PG_VERSION" ] && [ -f "$1/global/pg_control" ] && { [ ! -f "$1/backup_label" ] || [ -f "$1/standby.signal" ] || [ -f "$1/recovery.signal" ]; }; then
    echo cluster; return 0
  fi
  for _e in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    [ -e "$_e" ] || [ -L "$_e" ] || continue
    case "\${_e##*/}" in
      PG_VERSION|backup_label|backup_label.old|backup_manifest|backup_manifest.tmp|base|global|pg_*|postgresql.conf|postgresql.auto.conf|postmaster.opts|postmaster.pid|tablespace_map|tablespace_map.old|standby.signal|recovery.signal|current_logfiles|log|conf.d|pgop.confhash) ;;
      *) echo other; return 0;;
    esac
  done
  echo partial
}
`;

/** $1 data dir, $2 bin dir -> "init=0|1 nonempty=0|1 standby=0|1 status=N partial=0|1". A
 *  partial data directory (an interrupted clone) is not initialised: it is cloned again. */
const NODE_STATE_SH = `${PM_FUNCS}${PGDATA_KIND_FN}
d="$1"
k=$(pgdata_kind "$d")
init=0; [ "$k" = cluster ] && init=1
nonempty=1; case "$k" in missing|empty) nonempty=0;; esac
partial=0; [ "$k" = partial ] && partial=1
sb=0; [ -f "$d/standby.signal" ] && sb=1
st=4
if [ -d "$d" ]; then if pm_alive "$d"; then st=0; else st=3; fi; fi
echo "init=$init nonempty=$nonempty standby=$sb status=$st partial=$partial"
`;

/** As postgres (the data directory's owner), from CHECK_FILES_SH. $1 data dir $2 conf.d name
 *  $3 include line $4 clean (1) after a copy. */
const PRE_AS_PG = `d="$1"; c="$2"; line="$3"
[ -f "$d/postgresql.conf" ] || { echo "no postgresql.conf in $d" >&2; exit 3; }
if [ ! -d "$d/$c" ]; then mkdir -m 700 -- "$d/$c" || exit 1; fi
if ! grep -qxF -- "$line" "$d/postgresql.conf"; then
  printf "\\n# pgop: managed settings\\n%s\\n" "$line" >> "$d/postgresql.conf" || exit 1
  echo "include added"
fi
if [ "$4" = 1 ]; then
  if [ -d "$d/pg_replslot" ]; then find "$d/pg_replslot" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} + || exit 1; fi
  rm -f -- "$d/postmaster.opts"
fi
exit 0`;

/** As root. $1 data dir ('' = none) $2 conf.d name $3 include line $4 clean (1) after a copy,
 *  $5... paths: "S <mode> <owner:group> <type>|<path>" for each existing one and
 *  "<sha256>  <path>" for each regular file. The data directory's part (conf.d exists,
 *  postgresql.conf includes it, after a copy no copied slots) runs as postgres, its owner:
 *  root never writes in a directory postgres can change. */
const CHECK_FILES_SH = `${NODE_FS_FUNCS}
${shVar('PRE_AS_PG', PRE_AS_PG)}
d="$1"; c="$2"; line="$3"; clean="$4"
shift 4
if [ -n "$d" ]; then
  [ -d "$d" ] && [ "$(stat -L -c %U -- "$d")" = postgres ] || fs_die "cannot configure $d: not a directory of postgres"
  as_user postgres postgres sh -c "$PRE_AS_PG" pre "$d" "$c" "$line" "$clean" || exit $?
fi
[ $# -gt 0 ] || exit 0
stat -c 'S %a %U:%G %F|%n' -- "$@" 2>/dev/null
n=$#
for p in "$@"; do if [ -f "$p" ] && [ ! -L "$p" ]; then set -- "$@" "$p"; fi; done
shift $n
[ $# -gt 0 ] && sha256sum -- "$@" 2>/dev/null
exit 0
`;

/** As root. stdin: "w <mode> <owner> <path> <printf %b content>" or "d 0 - <path> -" lines.
 *  Each file is written by put_file / removed by del_file (src/drivers/ssh/node-fs.ts): as
 *  postgres in postgres's directories, by root in root-only ones; never through a link. */
const WRITE_FILES_SH = `${NODE_FS_FUNCS}
au_ids postgres postgres 2>/dev/null
while read -r op mode owner path content; do
  case "$op" in
    d)
      (del_file "$path") || exit $?
      echo "changed $path";;
    w)
      printf '%b' "$content" | (put_file "$mode" "$owner" "$path") || exit $?
      echo "changed $path";;
  esac
done
exit 0
`;

/** As root. $1 bin $2 version $3 data $4 archive $5 backup $6 log $7 family $8 script dir $9 socket dir
 *  ${10} wait for cloud-init. The spec's directories become postgres's through pg_dir
 *  (src/drivers/ssh/node-fs.ts): created by the owner of their parent, handed over (chown, never
 *  -R) only when root made them in a root-only directory; a system directory, a symlink another
 *  user could have made, or a non-empty directory of root's or of another user is refused. */
const INSTALL_SH = `${NODE_FS_FUNCS}
set -e
b="$1"; v="$2"; d="$3"; arch="$4"; bk="$5"; logd="$6"; fam="$7"; sdir="$8"; sock="$9"
# A guest answers SSH before cloud-init's last stage (runcmd) has mounted the data disk on /u01:
# directories made now would end up hidden under that mount. Wait for cloud-init to finish.
if [ "\${10}" = 1 ] && command -v cloud-init >/dev/null 2>&1; then
  timeout 900 cloud-init status --wait >/dev/null 2>&1 || true
fi
if [ ! -x "$b/postgres" ]; then
  if [ "$fam" = rhel ]; then
    dnf -y -q install "postgresql$v-server" "postgresql$v-contrib"
  else
    mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/pgop.conf
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "postgresql-$v" >/dev/null
  fi
fi
[ -x "$b/postgres" ] || { echo "postgres binaries missing in $b" >&2; exit 3; }
# Postgres never starts at boot: only the operator starts it.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  for u in postgresql.service "postgresql@$v-main.service" "postgresql-$v.service"; do
    systemctl disable --now "$u" >/dev/null 2>&1 || true
    systemctl mask "$u" >/dev/null 2>&1 || true
  done
fi
id postgres >/dev/null 2>&1 || useradd --system --create-home --home-dir /var/lib/postgresql --shell /bin/bash postgres
set +e
pg_dir "$d" 700
pg_dir "$arch" 700
pg_dir "$bk" -
pg_dir "$logd" -
# the socket directory is pgop's own constant (/var/run/postgresql), not a spec value
pg_dir "$sock" 2775 fixed
# The script directory: root's (755) in a root-only directory, so that postgres cannot change
# what it runs; on a lab node it lies in the seed's /opt/postgres, which is postgres's, and is
# then postgres's too (postgres runs the script as itself: nothing to protect from it there).
mk_parents "$sdir"
if [ "$(stat -L -c %U -- "$sdir")" = root ]; then
  root_only "$sdir" >/dev/null || fs_die "cannot use $sdir for scripts: others than root can change it"
  chmod 755 -- "$sdir" || exit 1
fi
set -e
if [ -d /usr/lib/tmpfiles.d ] && [ ! -f /usr/lib/tmpfiles.d/postgresql.conf ] && [ ! -f /etc/tmpfiles.d/pgop-postgresql.conf ]; then
  echo "d $sock 2775 postgres postgres -" > /etc/tmpfiles.d/pgop-postgresql.conf 2>/dev/null || true
fi
`;

/** As postgres. $1 data dir, $2 bin dir. No password: it is set as a SCRAM verifier after start. */
const INITDB_SH = `
set -e
umask 077
"$2/initdb" -D "$1" --data-checksums --auth-local=peer --auth-host=scram-sha-256 --username=postgres --encoding=UTF8 --locale=C.UTF-8 >/dev/null
`;

/** As postgres. $1 data dir, $2 bin dir, $3 -o options, $4 log file, $5 socket dir, $6 port.
 *  `pg_ctl start` runs the postmaster through `/bin/sh -c` with its -D and -l values inside
 *  double quotes: the data directory goes in PGDATA instead (pg_ctl then puts no -D on that
 *  line) and the output is redirected here, so no spec path is ever shell text. The -o string is
 *  shell-quoted word by word (nodeOptionString). */
const START_SH = `${PM_FUNCS}
d="$1"; b="$2"; o="$3"; log="$4"
if pm_alive "$d"; then exit 0; fi
clear_stale "$d" "$5" "$6" || exit 1
PGDATA="$d"; export PGDATA
"$b/pg_ctl" -w -t 60 -o "$o" start >> "$log" 2>&1 < /dev/null && exit 0
rc=$?
tail -n 5 "$log" >&2
exit $rc
`;

/** As postgres. $1 data dir, $2 bin dir, $3 mode, $4 socket dir, $5 port. Stops and waits until
 *  no child is left. */
const STOP_SH = `${PM_FUNCS}
d="$1"; b="$2"; m="$3"
if pm_alive "$d"; then
  if ! "$b/pg_ctl" -D "$d" -w -t 60 -m "$m" stop >/dev/null; then
    "$b/pg_ctl" -D "$d" -w -t 30 -m immediate stop >/dev/null || exit 1
  fi
fi
clear_stale "$d" "$4" "$5"
`;

/** As postgres. $1 data dir, $2 socket dir, $3 port. After a kill -9 the children linger: wait
 *  until they detached. */
const WAIT_GONE_SH = `${PM_FUNCS}
clear_stale "$1" "$2" "$3"
`;

/** As postgres; password on stdin. $1 data dir, $2 bin dir, $3 source conninfo (no password). */
const REWIND_SH = `
IFS= read -r PGPASSWORD; export PGPASSWORD
d="$1"; b="$2"; src="$3"
rm -f "$d/standby.signal" "$d/recovery.signal"
exec "$b/pg_rewind" --target-pgdata="$d" --source-server="$src"
`;

/** As root. $1 data dir, $2 the primary's system identifier, $3 bin dir. Leaves an empty
 *  directory of postgres (mode 0700) for pg_basebackup:
 *  - missing or empty: made so (pg_dir);
 *  - an interrupted clone (pgdata_kind partial): emptied, as postgres;
 *  - a database cluster (a diverged copy, another cluster's data): moved aside to
 *    <dir>.pgop-old-<time>, and kept. Older copies of this cluster (same system identifier as
 *    the primary) are removed as postgres (root never recurses into a tree postgres can write);
 *    a copy of another cluster is kept ("keeping ..." on stdout). The rename runs as postgres
 *    when the parent is postgres's, as root when only root can change the way to it;
 *  - anything else: refused (exit 3): pgop does not move or delete what it does not recognise. */
const PREPARE_DATADIR_SH = `${NODE_FS_FUNCS}${PGDATA_KIND_FN}
d="$1"; sysid="$2"; b="$3"
k=$(pgdata_kind "$d")
case "$k" in
  other) fs_die "cannot clone into $d: it is not empty and holds neither a database cluster nor an interrupted clone (move it away or empty it)";;
  partial|cluster)
    [ ! -L "$d" ] && [ "$(stat -c %U -- "$d")" = postgres ] || fs_die "cannot clone into $d: not a directory of postgres";;
esac
if [ "$k" = partial ]; then
  as_user postgres postgres find "$d" -mindepth 1 -delete || fs_die "cannot empty the interrupted clone in $d"
elif [ "$k" = cluster ]; then
  parent=\${d%/*}; [ -n "$parent" ] || parent=/
  aside="$d.pgop-old-$(date +%Y%m%d%H%M%S)"
  for old in "$d".pgop-old-*; do
    [ -e "$old" ] || continue
    old_id=$(as_user postgres postgres env LC_ALL=C "$b/pg_controldata" -D "$old" 2>/dev/null | sed -n "s/^Database system identifier: *//p")
    if [ -n "$sysid" ] && [ "$old_id" = "$sysid" ]; then pg_rmtree "$old" || true
    else echo "keeping $old: not a copy of this cluster (system identifier \${old_id:-unknown})"; fi
  done
  if [ "$(stat -L -c %U -- "$parent")" = postgres ]; then
    as_user postgres postgres mv -T -- "$d" "$aside" || fs_die "cannot move $d aside"
  elif rparent=$(root_only "$parent"); then
    mv -T -- "$rparent/\${d##*/}" "$rparent/\${aside##*/}" || fs_die "cannot move $d aside"
  else
    fs_die "cannot move $d aside: others than root can change $parent"
  fi
fi
pg_dir "$d" 700
`;

/** As postgres; password on stdin. $1 data $2 bin $3 host $4 port $5 user $6 slot ('' = none) $7 app name. */
const BASEBACKUP_SH = `
IFS= read -r PGPASSWORD; export PGPASSWORD
d="$1"; b="$2"
if [ -n "$6" ]; then
  exec "$b/pg_basebackup" -D "$d" -h "$3" -p "$4" -U "$5" -d "application_name=$7" -X stream -c fast -w -S "$6"
else
  exec "$b/pg_basebackup" -D "$d" -h "$3" -p "$4" -U "$5" -d "application_name=$7" -X stream -c fast -w
fi
`;

/** As postgres; SQL on stdin. $1 bin $2 socket dir $3 port. */
const PSQL_SH = `exec "$1/psql" -X -q -v ON_ERROR_STOP=1 -h "$2" -p "$3" -d postgres -f -`;
