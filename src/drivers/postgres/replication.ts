// Streaming replication: a node made (and kept) a standby of the primary, by a repoint in place,
// a pg_rewind or a fresh clone; the primary's synchronous standbys. Promotion: promote.ts.

import type pg from 'pg';
import type { ClusterSpec, NodeSpec } from '../../spec/types.js';
import type { PostgresObservation } from '../../observe/types.js';
import { type PgopError, internal, messageOf, transient } from '../../errors.js';
import { connectClient, endClient, newClient } from '../pg-clients.js';
import { sleep, tail } from '../remote/run.js';
import {
  CONF_DIR,
  STANDBY_CONF_FILE,
  SYNC_CONF_FILE,
  binDir,
  canFollowTimeline,
  nodeSslConninfo,
  parseLsn,
  parseTimelineHistory,
  pgPort,
  renderStandbyConf,
  renderSyncConf,
  slotName,
  syncStandbyNamesValue,
  tlsNodePaths,
} from './config.js';
import { checkpoint, ms, socketDir, type NodeAccess, type NodeState } from './node-access.js';
import type { Lifecycle } from './lifecycle.js';
import type { Prober } from './probe.js';
import {
  basebackupScript,
  prepareDataDirScript,
  rewindScript,
  recoveryTitleScript,
  stopCopyScript,
  waitGoneScript,
} from './scripts.js';
import type { JobContext } from '../types.js';
import { createSlots } from './sql-objects.js';

interface PrimaryInfo {
  timeline: number;
  /** parent timeline -> switch point */
  history: Map<number, number>;
  lsn: number;
  systemId: string;
}

/** How long a standby that takes no session may replay one WAL segment before it counts as
 *  stuck (a diverged one never gets consistent) and is rewound. */
const STUCK_STARTING_MS = 10_000;

/** What ensureStandby does after its look at the node. `repointed`: nothing more (it streams). */
interface StandbyStep {
  action: 'clone' | 'rewind' | 'start' | 'done' | 'repointed';
  reason: string;
}

export class Replication {
  /** cluster/node keys whose last pg_rewind found nothing to rewind (see ensureStandby) */
  private readonly noopRewinds = new Set<string>();

  constructor(
    private readonly a: NodeAccess,
    private readonly prober: Prober,
    private readonly life: Lifecycle,
    private readonly streamTimeoutMs: number,
  ) {}

  // ---------------------------------------------------------------------- standby

  async ensureStandby(
    cluster: ClusterSpec,
    node: NodeSpec,
    primary: NodeSpec,
    job?: JobContext,
  ): Promise<void> {
    if (node.name === primary.name) throw internal(`cannot make ${node.name} a standby of itself`);
    const t0 = performance.now();
    await this.a.ensureTls(cluster);
    // The primary's timeline and history, and the node's slot on it (slots are not replicated:
    // after a failover the new primary gets it before the standby is pointed at it).
    const pinfo = await this.primaryInfo(cluster, primary, node.name);
    const st = await this.a.nodeState(cluster, node);
    let step: StandbyStep;
    if (!st.initialized) {
      const reason = st.partial
        ? 'an interrupted clone (partial data directory)'
        : st.nonEmpty
          ? 'data directory holds no cluster'
          : 'no data';
      step = { action: 'clone', reason };
    } else if (st.running) step = await this.runningStandbyStep(cluster, node, primary, pinfo, t0);
    else step = await this.stoppedStandbyStep(cluster, node, st, pinfo);

    if (step.action === 'repointed') return;
    if (step.action === 'done') {
      const files = [
        ...this.life.standbyFiles(cluster, node, primary, false),
        this.life.confHashFile(cluster, node),
      ];
      if (await this.life.writeManagedFiles(cluster, node, files)) await this.life.reload(cluster, node);
      return;
    }
    await this.copyAndStart(cluster, node, primary, pinfo, step, job);
    this.a.log.info({ node: node.name, primary: primary.name, ms: ms(t0) }, 'standby ensured');
  }

  /** A running node: done when it streams from the primary, repointed in place when it can
   *  follow, else stopped for a rewind. */
  private async runningStandbyStep(
    cluster: ClusterSpec,
    node: NodeSpec,
    primary: NodeSpec,
    pinfo: PrimaryInfo,
    t0: number,
  ): Promise<StandbyStep> {
    let obs: PostgresObservation | null = null;
    let reason = '';
    try {
      obs = await this.prober.look(cluster, node);
    } catch (err) {
      // Only "the database system is starting up" (a standby that cannot reach a consistent
      // state, e.g. after it diverged) is a reason to rewind; anything else (auth, network)
      // is not something a rewind fixes.
      const code = ((err as PgopError).cause as { code?: string } | undefined)?.code;
      if (code !== '57P03') throw err;
      // still replaying (a rewind's restart that an earlier try gave up waiting for): a rewind
      // now would throw its progress away and start it again
      if (await this.waitStreaming(cluster, node, primary, STUCK_STARTING_MS)) {
        obs = await this.prober.look(cluster, node);
      } else reason = `stuck starting up (${messageOf(err)})`;
    }
    if (!obs || !obs.inRecovery) {
      if (obs) reason = 'it runs as a primary';
      await this.life.stop(cluster, node);
      return { action: 'rewind', reason };
    }
    const standby = obs;
    const want = renderStandbyConf(cluster, node, primary);
    const have = await this.a.shell.readFile(
      this.a.host(cluster, node),
      `${this.a.dataDir(cluster)}/${CONF_DIR}/${STANDBY_CONF_FILE}`,
    );
    const confOk = have === want;
    const streams = () => standby.streaming || this.waitStreaming(cluster, node, primary, 6000);
    if (confOk && obs.upstream === primary.name && (await streams())) return { action: 'done', reason };
    const pos = Math.max(obs.lsn, obs.receiveLsn);
    if (canFollowTimeline(obs.timeline, pos, pinfo.timeline, pinfo.history)) {
      if (!confOk && (await this.repointInPlace(cluster, node, primary))) {
        this.a.log.info({ node: node.name, primary: primary.name, ms: ms(t0) }, 'standby repointed');
        return { action: 'repointed', reason };
      }
      reason = `not streaming from ${primary.name}`;
    } else {
      reason = `diverged (timeline ${obs.timeline} at ${pos}, primary on timeline ${pinfo.timeline})`;
    }
    await this.life.stop(cluster, node);
    return { action: 'rewind', reason };
  }

  /** primary_conninfo / primary_slot_name reload (PG >= 13): true when it then streams. */
  private async repointInPlace(cluster: ClusterSpec, node: NodeSpec, primary: NodeSpec): Promise<boolean> {
    const files = [
      ...this.life.standbyFiles(cluster, node, primary, false),
      this.life.confHashFile(cluster, node),
    ];
    await this.life.writeManagedFiles(cluster, node, files);
    await this.life.reload(cluster, node);
    return this.waitStreaming(cluster, node, primary, 10_000);
  }

  /** A stopped node: started as it is when it is a standby on the primary's timeline. */
  private async stoppedStandbyStep(
    cluster: ClusterSpec,
    node: NodeSpec,
    st: NodeState,
    pinfo: PrimaryInfo,
  ): Promise<StandbyStep> {
    const cd = await this.a.controlData(cluster, node);
    const tli = cd.latestTimeline;
    if (st.standbySignal && tli === pinfo.timeline) return { action: 'start', reason: '' };
    const reason = st.standbySignal
      ? `stopped standby on timeline ${tli}, primary on ${pinfo.timeline}`
      : `stopped former primary (${cd.state})`;
    return { action: 'rewind', reason };
  }

  /** Rewind (or clone when that fails), write the standby files, start, and wait to stream. */
  private async copyAndStart(
    cluster: ClusterSpec,
    node: NodeSpec,
    primary: NodeSpec,
    pinfo: PrimaryInfo,
    step: StandbyStep,
    job?: JobContext,
  ): Promise<void> {
    let { action, reason } = step;
    let fresh = false;
    if (action === 'rewind') {
      fresh = await this.rewind(cluster, node, primary, reason, job);
      if (!fresh) {
        action = 'clone';
        reason = 'rewind failed';
      }
    }
    if (action === 'clone') {
      await this.clone(cluster, node, primary, pinfo.systemId, reason, job);
      fresh = true;
    }
    // One round trip: managed files, standby conf + signal + passfile, and after a copy an empty
    // sync conf and auto.conf and no copied slots; then start (which clears a dead postmaster's
    // stale lock files first).
    await this.writeStandbyAndStart(cluster, node, primary, fresh);
    const key = `${cluster.name}/${node.name}`;
    if (await this.waitStreaming(cluster, node, primary, this.streamTimeoutMs)) {
      this.noopRewinds.delete(key);
      return;
    }
    if (!this.noopRewinds.delete(key)) {
      throw transient(
        `cannot make ${node.name} a standby of ${primary.name}: ` +
          `not streaming after ${this.streamTimeoutMs} ms`,
      );
    }
    // pg_rewind found "no rewind required" (same timeline ID, even the same history: two
    // promotions from one switch point picked the same new ID) yet the node cannot follow: its
    // WAL diverged after the switch. Only a fresh copy of the primary is right.
    this.a.log.warn(
      { node: node.name, primary: primary.name },
      'not streaming after a rewind that found nothing to rewind: ' +
        'the timelines diverged under one ID; cloning afresh',
    );
    await this.life.stop(cluster, node, 'fast');
    await this.clone(cluster, node, primary, pinfo.systemId, 'diverged under the same timeline ID');
    await this.writeStandbyAndStart(cluster, node, primary, true);
    if (!(await this.waitStreaming(cluster, node, primary, this.streamTimeoutMs))) {
      const after = `not streaming after ${this.streamTimeoutMs} ms (after a fresh clone)`;
      throw transient(`cannot make ${node.name} a standby of ${primary.name}: ${after}`);
    }
  }

  private async writeStandbyAndStart(
    cluster: ClusterSpec,
    node: NodeSpec,
    primary: NodeSpec,
    fresh: boolean,
  ): Promise<void> {
    const files = [
      ...this.life.standbyFiles(cluster, node, primary, fresh),
      this.life.confHashFile(cluster, node),
    ];
    await this.life.writeManagedFiles(cluster, node, files, fresh);
    await this.life.start(cluster, node);
  }

  /** The primary's timeline and the history of that timeline; creates `slotFor`'s slot. */
  private async primaryInfo(cluster: ClusterSpec, primary: NodeSpec, slotFor?: string): Promise<PrimaryInfo> {
    return this.a.withAdmin(cluster, primary, async (c) => {
      const r = await c.query<{ rec: boolean; walfile: string | null; lsn: string | null; sysid: string }>(
        `SELECT pg_is_in_recovery() AS rec,
                CASE WHEN NOT pg_is_in_recovery() THEN pg_walfile_name(pg_current_wal_lsn()) END AS walfile,
                CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn()::text END AS lsn,
                (SELECT system_identifier::text FROM pg_control_system()) AS sysid`,
      );
      const row = r.rows[0]!;
      if (row.rec || !row.walfile)
        throw transient(`cannot follow ${primary.name}: it is not a primary (in recovery)`);
      const timeline = parseInt(row.walfile.slice(0, 8), 16);
      let history = new Map<number, number>();
      if (timeline > 1) history = parseTimelineHistory((await readHistoryFile(c, timeline)) ?? '');
      if (slotFor && cluster.replication.slots) await createSlots(c, primary, [slotFor], this.a.log);
      return { timeline, history, lsn: parseLsn(row.lsn), systemId: row.sysid };
    });
  }

  /** pg_rewind against the primary; false when it failed (the caller clones instead). */
  private async rewind(
    cluster: ClusterSpec,
    node: NodeSpec,
    primary: NodeSpec,
    reason: string,
    job?: JobContext,
  ): Promise<boolean> {
    const t0 = performance.now();
    const d = this.a.dataDir(cluster);
    const gone = waitGoneScript(d, socketDir(cluster), pgPort(cluster));
    await this.a.must(cluster, node, 'wait for the old postmaster to go', gone, {
      user: 'postgres',
      timeoutMs: 15_000,
    });
    // pg_rewind (15) reads the source's timeline from its control file, which a freshly promoted
    // primary updates only at its first checkpoint: without this, "no rewind required".
    await this.a.withAdmin(cluster, primary, checkpoint);
    const src = [
      `host=${primary.address} port=${pgPort(cluster)} user=postgres dbname=postgres connect_timeout=5`,
      ...nodeSslConninfo(cluster),
    ].join(' ');
    await this.stopLeftoverCopy(cluster, node);
    const rewinding = this.a.run(cluster, node, rewindScript(d, binDir(cluster), src, copyPidFile(cluster)), {
      user: 'postgres',
      input: `${this.a.superuserPassword(cluster)}\n`,
      timeoutMs: 30 * 60_000,
    });
    const res = await this.whileCopying(cluster, node, job, rewinding, `rewind of ${node.name}`);
    if (res.code !== 0) {
      this.a.log.warn(
        { node: node.name, primary: primary.name, reason, error: tail(res.stderr) },
        'pg_rewind failed: cloning instead',
      );
      return false;
    }
    const noop = /no rewind required/i.test(res.stdout + res.stderr);
    if (noop) this.noopRewinds.add(`${cluster.name}/${node.name}`);
    if (noop && !(await this.sameTimelineHistory(cluster, node, primary))) {
      // Two promotions from the same timeline picked the same new timeline ID (no shared
      // archive): pg_rewind compares IDs, sees one timeline and rewinds nothing, and the node
      // would never stream. Its history differs from the primary's: copy the primary afresh.
      this.a.log.warn(
        { node: node.name, primary: primary.name },
        'same timeline ID as the primary but a different history: cloning instead of trusting pg_rewind',
      );
      return false;
    }
    const output = tail(res.stdout + res.stderr);
    this.a.log.info({ node: node.name, primary: primary.name, reason, ms: ms(t0), output }, 'rewound');
    return true;
  }

  /** False when node and primary are on the same timeline ID > 1 whose history files differ
   *  (or the node's is missing): the same ID was chosen by two different promotions. */
  private async sameTimelineHistory(
    cluster: ClusterSpec,
    node: NodeSpec,
    primary: NodeSpec,
  ): Promise<boolean> {
    const tli = (await this.a.controlData(cluster, node)).latestTimeline;
    const p = await this.primaryInfo(cluster, primary);
    if (tli !== p.timeline || tli <= 1) return true;
    const theirs = await this.a.withAdmin(cluster, primary, (c) => readHistoryFile(c, tli));
    const ours = await this.a.shell.readFile(
      this.a.host(cluster, node),
      `${this.a.dataDir(cluster)}/${historyFile(tli)}`,
    );
    return ours !== null && theirs !== null && ours === theirs;
  }

  /** Fresh copy of the primary (pg_basebackup -X stream): an interrupted clone is emptied first,
   *  a database cluster moved aside, anything else refused (prepareDataDirScript). A clone killed
   *  midway leaves a partial directory that the next look reports as such (nodeStateScript), and
   *  the next pass clones again. */
  private async clone(
    cluster: ClusterSpec,
    node: NodeSpec,
    primary: NodeSpec,
    systemId: string,
    reason: string,
    job?: JobContext,
  ): Promise<void> {
    const t0 = performance.now();
    const d = this.a.dataDir(cluster);
    throwIfCancelled(job, `clone of ${node.name}`);
    // A copy an earlier operator started may still run (its SSH session died with it, the
    // process did not): stopped before its directory is emptied and copied into afresh.
    await this.stopLeftoverCopy(cluster, node);
    const prepare = prepareDataDirScript(d, systemId, binDir(cluster));
    const prep = await this.a.must(cluster, node, 'prepare the data directory', prepare, {
      user: 'root',
      kind: 'terminal',
      timeoutMs: 600_000,
    });
    for (const line of prep.stdout.split('\n'))
      if (line.startsWith('keeping ')) this.a.log.warn({ node: node.name }, line);
    // pg_basebackup checks the primary's certificate against the CA file (verify-full)
    const tlsOn = this.a.tls.enabled(cluster);
    if (tlsOn) {
      await this.a.ensureTls(cluster);
      await this.a.apply(cluster, node, this.a.tlsFiles(cluster, node), { dataDir: false });
    }
    const script = basebackupScript({
      dataDir: d,
      binDir: binDir(cluster),
      host: primary.address,
      port: pgPort(cluster),
      user: cluster.replication.user,
      slot: cluster.replication.slots ? slotName(node.name) : '',
      applicationName: cloneAppName(node),
      maxRate: cluster.replication.cloneMaxRate ?? '',
      pidFile: copyPidFile(cluster),
    });
    const copying = this.a.must(cluster, node, `clone ${primary.name}`, script, {
      user: 'postgres',
      input: `${this.a.replicationPassword(cluster)}\n`,
      timeoutMs: 6 * 3600_000,
      ...(tlsOn ? { env: { PGSSLMODE: 'verify-full', PGSSLROOTCERT: tlsNodePaths(cluster).ca } } : {}),
    });
    const progress = job && this.reportCloneProgress(cluster, node, primary, job);
    try {
      await this.whileCopying(cluster, node, job, copying, `clone of ${node.name}`);
    } finally {
      progress?.stop();
    }
    this.a.log.info({ node: node.name, primary: primary.name, reason, ms: ms(t0) }, 'cloned');
  }

  /** Wait for a copy (pg_basebackup / pg_rewind) to end; when its job is cancelled meanwhile, stop
   *  the copy on the node and reject (the data directory is left partial: redone next time). */
  private async whileCopying<T>(
    cluster: ClusterSpec,
    node: NodeSpec,
    job: JobContext | undefined,
    copying: Promise<T>,
    what: string,
  ): Promise<T> {
    if (!job) return copying;
    const stop = () =>
      void this.a
        .run(cluster, node, stopCopyScript(copyPidFile(cluster), this.a.dataDir(cluster)), {
          user: 'postgres',
        })
        .catch((err: unknown) =>
          this.a.log.warn({ node: node.name, err: messageOf(err) }, `cannot stop the ${what}`),
        );
    // a copy that does not stop (its node gone) is abandoned: the job ends anyway
    let giveUp: NodeJS.Timeout | undefined;
    let give = () => {};
    const abandoned = new Promise<never>((_, reject) => {
      give = () => {
        giveUp = setTimeout(() => reject(transient(`${what} did not stop; abandoned`)), STOP_GRACE_MS);
      };
    });
    job.signal.addEventListener('abort', give, { once: true });
    if (job.signal.aborted) give();
    abandoned.catch(() => undefined); // only ever raced below
    job.signal.addEventListener('abort', stop, { once: true });
    if (job.signal.aborted) stop();
    try {
      const done = await Promise.race([copying, abandoned]);
      throwIfCancelled(job, what);
      return done;
    } catch (err) {
      throwIfCancelled(job, what);
      throw err;
    } finally {
      job.signal.removeEventListener('abort', stop);
      job.signal.removeEventListener('abort', give);
      clearTimeout(giveUp);
    }
  }

  private async stopLeftoverCopy(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const stop = stopCopyScript(copyPidFile(cluster), this.a.dataDir(cluster));
    await this.a.must(cluster, node, 'stop a copy left running', stop, { user: 'postgres' });
  }

  /** pg_basebackup's bytes, as the primary counts them (pg_stat_progress_basebackup), every second. */
  private reportCloneProgress(
    cluster: ClusterSpec,
    node: NodeSpec,
    primary: NodeSpec,
    job: JobContext,
  ): { stop(): void } {
    let stopped = false;
    const poll = async () => {
      while (!stopped && !job.signal.aborted) {
        await sleep(CLONE_PROGRESS_MS);
        if (stopped) return;
        try {
          const row = await this.a.withAdmin(cluster, primary, (c) => cloneProgress(c, cloneAppName(node)));
          if (row) job.progress(row.done, row.total ?? undefined);
        } catch {
          // progress is a nicety: a failed look is tried again next second
        }
      }
    };
    void poll();
    return { stop: () => void (stopped = true) };
  }

  /** Poll until the node streams from `primary` (true) or `timeoutMs` passes (false). While it
   *  takes no session because it still replays towards a consistent state (after a rewind: all
   *  the WAL since the last common checkpoint, hundreds of MB after a bulk load), the time
   *  starts again each time its replay moves on to another WAL segment. */
  private async waitStreaming(
    cluster: ClusterSpec,
    node: NodeSpec,
    primary: NodeSpec,
    timeoutMs: number,
  ): Promise<boolean> {
    let deadline = Date.now() + timeoutMs;
    const replay = new ReplayWatch(() => this.recoveryTitle(cluster, node));
    let client: pg.Client | null = null;
    try {
      for (;;) {
        try {
          if (!client) {
            client = newClient(this.a.clientConfig(cluster, node, { connectionTimeoutMillis: 2000 }));
            client.on('error', () => {});
            await connectClient(client);
          }
          const r = await client.query<{ rec: boolean; status: string | null; host: string | null }>(
            'SELECT pg_is_in_recovery() AS rec, w.status, w.sender_host AS host ' +
              'FROM (SELECT 1) x LEFT JOIN pg_stat_wal_receiver w ON true',
          );
          const row = r.rows[0];
          if (row?.rec && row.status === 'streaming' && row.host === primary.address) return true;
        } catch (err) {
          if (client) await endClient(client);
          client = null;
          if (sqlState(err) === '57P03' && (await replay.movedOn())) deadline = Date.now() + timeoutMs;
        }
        if (Date.now() > deadline) return false;
        await sleep(50);
      }
    } finally {
      if (client) await endClient(client);
    }
  }

  /** The startup process's title on the node ('' when none or the look failed). */
  private async recoveryTitle(cluster: ClusterSpec, node: NodeSpec): Promise<string> {
    const script = recoveryTitleScript(this.a.dataDir(cluster));
    try {
      const res = await this.a.run(cluster, node, script, { user: 'postgres', timeoutMs: 5000 });
      return res.code === 0 ? res.stdout.trim() : '';
    } catch {
      return '';
    }
  }

  // ---------------------------------------------------------------------- sync standbys

  async ensureSyncStandbys(
    cluster: ClusterSpec,
    primary: NodeSpec,
    names: string[],
    quorum: number,
  ): Promise<void> {
    const want = syncStandbyNamesValue(names, quorum);
    const path = `${this.a.dataDir(cluster)}/${CONF_DIR}/${SYNC_CONF_FILE}`;
    const file = { op: 'write' as const, path, content: renderSyncConf(names, quorum) };
    const changed = (await this.a.apply(cluster, primary, [file], { dataDir: false })).size > 0;
    await this.a.withAdmin(cluster, primary, async (c) => {
      const current = async () =>
        (await c.query<{ v: string }>("SELECT current_setting('synchronous_standby_names') AS v")).rows[0]?.v;
      if (!changed && (await current()) === want) return;
      await c.query('SELECT pg_reload_conf()');
      const deadline = Date.now() + 10_000;
      for (;;) {
        await sleep(20);
        const v = await current();
        if (v === want) break;
        if (Date.now() > deadline)
          throw transient(
            `cannot set synchronous_standby_names on ${primary.name}: ` +
              `still ${JSON.stringify(v)} after reload`,
          );
      }
      this.a.log.info({ node: primary.name, synchronous_standby_names: want }, 'sync standbys set');
    });
  }
}

function historyFile(timeline: number): string {
  return `pg_wal/${timeline.toString(16).toUpperCase().padStart(8, '0')}.history`;
}

/** A timeline's history file as the server holds it (null: none). */
async function readHistoryFile(c: pg.Client, timeline: number): Promise<string | null> {
  const sql = "SELECT convert_from(pg_read_binary_file($1, 0, 16777216, true), 'UTF8') AS t";
  return (await c.query<{ t: string | null }>(sql, [historyFile(timeline)])).rows[0]?.t ?? null;
}

/** How long a cancelled copy may take to stop before its job stops waiting for it. */
const STOP_GRACE_MS = 5_000;

/** How often a running clone's bytes are read on the primary. */
const CLONE_PROGRESS_MS = 1_000;

/** pg_basebackup's application_name: how its walsender is found on the primary. */
const cloneAppName = (node: NodeSpec) => `pgop_clone_${node.name}`;

/** Where a copy's script leaves its pid (the socket directory: postgres's, one per node). */
const copyPidFile = (cluster: ClusterSpec) => `${socketDir(cluster)}/pgop-copy.pid`;

function throwIfCancelled(job: JobContext | undefined, what: string): void {
  if (!job?.signal.aborted) return;
  const why = job.signal.reason instanceof Error ? job.signal.reason.message : 'cancelled';
  throw transient(`${what} stopped: ${why}`);
}

async function cloneProgress(
  c: pg.Client,
  appName: string,
): Promise<{ done: number; total: number | null } | null> {
  const r = await c.query<{ done: string; total: string | null }>(
    `SELECT p.backup_streamed::text AS done, p.backup_total::text AS total
       FROM pg_stat_progress_basebackup p JOIN pg_stat_replication r USING (pid)
      WHERE r.application_name = $1`,
    [appName],
  );
  const row = r.rows[0];
  return row ? { done: Number(row.done), total: row.total === null ? null : Number(row.total) } : null;
}

/** Whether a recovering standby's replay moves on: its startup process names the WAL segment it
 *  replays; looked at every 2 s at most. */
class ReplayWatch {
  private last = '';
  private lookedAt = 0;
  constructor(private readonly title: () => Promise<string>) {}

  async movedOn(): Promise<boolean> {
    if (Date.now() - this.lookedAt < 2000) return false;
    this.lookedAt = Date.now();
    const title = await this.title();
    const moved = /recovering \S+/.test(title) && title !== this.last && this.last !== '';
    if (title) this.last = title;
    return moved;
  }
}

const sqlState = (err: unknown) => (err as { code?: string } | undefined)?.code;
