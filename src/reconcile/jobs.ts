// Long actions as jobs: a pass starts one and goes on; the loop never waits on it. The job's
// row in the store says what runs where, its progress and its outcome; the node's step is
// committed when the job succeeds (and only if the node is still where the step started). A
// failed job cools its node down before the planner may try again; a cancelled one is planned
// afresh. Jobs of an earlier operator process that never finished are marked interrupted and
// their step is redone (the drivers' ensure* adopt work still running on the node).

import { randomUUID } from 'node:crypto';
import type { NodeActor, NodeGoal, NodeState } from '../../machines/node-edges.js';
import type { JobContext } from '../drivers/types.js';
import type { ClusterSpec } from '../spec/types.js';
import type { Store } from '../store/store.js';
import type { JobRecord } from '../store/jobs.js';
import type { JobView, NodeDecision } from '../plan/types.js';
import type { RuleId } from '../plan/rule-ids.js';
import { PgopError, messageOf, type ErrorKind } from '../errors.js';
import { cloneRateKBps } from '../spec/rates.js';
import { backoffMs, type Backoff } from './backoff.js';
import type { Clock, Log } from './reconciler.js';

/** Actors that can take longer than about a second: boots, packages, initdb, copies. A fence and
 *  a promotion stay in the pass (short, bounded, and a failover waits for them), and so do a
 *  restart, a reload and a switchover's clean shutdown: they stop postgres on purpose, and as jobs
 *  the probes meanwhile would take the stopped primary for a failed one. */
export const JOB_ACTORS: ReadonlySet<NodeActor> = new Set<NodeActor>([
  'provisionVm',
  'startMachine',
  'installPostgres',
  'initPrimary',
  'cloneStandby',
  'repointStandby',
  'rejoinStandby',
  'deleteMachine',
]);

const MINUTE = 60_000;
/** Until a copy reports its size: enough for a VM boot under TCG or a package install. */
const FIRST_DEADLINE_MS = { copy: 10 * MINUTE, other: 20 * MINUTE };
/** A copy's deadline once its size is known: this long plus the size at the slowest rate a
 *  healthy copy runs at (a quarter of cloneMaxRate when that is lower). A copy slower than that
 *  which still moves is not cancelled (its copied bytes would be lost) until it stalls for
 *  COPY_SLACK_MS, or until the size at a sixteenth of that rate has passed. */
const COPY_SLACK_MS = 2 * MINUTE;
const SLOWEST_COPY_BYTES_PER_S = 1 * 2 ** 20;
const CRAWL_FACTOR = 16;
/** A job's progress is written at most this often. */
const PROGRESS_WRITE_MS = 1_000;
/** After a failed job its node waits this long (doubling per failure in a row) before a retry. */
const COOLING: Backoff = { baseMs: 1_000, maxMs: 30_000, terminalMs: 30_000, terminalMaxMs: 300_000 };

const COPY_ACTORS: ReadonlySet<string> = new Set(['cloneStandby', 'repointStandby', 'rejoinStandby']);

export interface JobStart {
  cluster: string;
  spec: ClusterSpec;
  decision: NodeDecision;
  actor: NodeActor;
  from: NodeState;
  to: NodeState;
  goal: NodeGoal | null;
  run(job: JobContext): Promise<void>;
}

/** A job of the cluster rather than a step of a node (a backup): it blocks no node's steps and
 *  commits no state; its outcome is its row and an event. */
export interface ClusterJobStart {
  cluster: string;
  kind: string;
  /** the node it works on (a backup's source), shown with it */
  node: string;
  /** how the started event names the node: "from" it (a backup's source, default) or "on" it */
  nodeIs?: 'from' | 'on';
  ruleId: RuleId;
  reason: string;
  requestId?: number;
  /** what it is for, kept in the job row's `to` (e.g. the timeline a WAL push is for) */
  subject?: string;
  /** the event its success records */
  done: { ruleId: RuleId };
  /** runs the work; resolves to what the success event says */
  run(job: JobContext): Promise<string>;
  /** after a failure, the planner is told the job cools down (clusterJobViews) before a retry */
  coolsDown?: true;
}

export interface JobRunnerOptions {
  store: Store;
  clock: Clock;
  log: Log;
  /** test hook, as the reconciler's: throwing here is the operator dying before the commit */
  beforeCommit?: (cluster: string, decision: NodeDecision) => void;
}

interface Cooling {
  until: number;
  failures: number;
  jobId: number;
  kind: string;
  lastMessage: string;
}

interface LiveJob {
  record: JobRecord;
  /** a node's step; absent for a job of the cluster */
  start?: JobStart;
  clusterJob?: ClusterJobStart;
  /** what the success event says (a cluster job's result) */
  outcome?: string;
  controller: AbortController;
  cancelReason: string | null;
  lastProgressWrite: number;
  maxBytesPerS: number | null;
}

export class JobRunner {
  /** a token unique to this operator process: a running job with another owner was interrupted */
  readonly owner = randomUUID();
  private live = new Map<number, LiveJob>();
  private cooling = new Map<string, Cooling>();
  /** cluster jobs that cool down after a failure, by key(cluster, kind + NUL + node) */
  private clusterCooling = new Map<string, Cooling>();
  private orphansSettled = new Set<string>();
  private listeners = new Set<(cluster: string) => void>();
  private settledCount = new Map<string, number>();

  constructor(private readonly opts: JobRunnerOptions) {}

  /** How many of the cluster's jobs have settled so far: a pass whose look at the world spans a
   *  settle pairs an older look with newer stored states, and looks again. */
  settledSoFar(cluster: string): number {
    return this.settledCount.get(cluster) ?? 0;
  }

  /** Called with the cluster's name whenever one of its jobs settles (the loop wakes it). */
  onSettled(listener: (cluster: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The planner's view of the cluster's busy nodes: running jobs and failed ones cooling down. */
  views(cluster: string, now: number): Record<string, JobView> {
    const views: Record<string, JobView> = {};
    for (const [key, c] of this.cooling) {
      const [owner, node] = splitKey(key);
      if (owner !== cluster) continue;
      if (c.until <= now) continue;
      views[node] = { id: c.jobId, kind: c.kind, state: 'cooling', deadlineAt: c.until };
    }
    for (const job of this.live.values()) {
      const r = job.record;
      if (r.cluster !== cluster || job.clusterJob) continue;
      views[r.node] = {
        id: r.id,
        kind: r.kind,
        state: 'running',
        deadlineAt: r.deadlineAt,
        ...(r.source ? { source: r.source } : {}),
        ...(job.cancelReason !== null ? { cancelling: true } : {}),
        ...(r.doneBytes !== null ? { doneBytes: r.doneBytes } : {}),
        ...(r.totalBytes !== null ? { totalBytes: r.totalBytes } : {}),
      };
    }
    return views;
  }

  /** The running job of a node in this process, if any (a job of the cluster is no node's). */
  runningOn(cluster: string, node: string): JobRecord | undefined {
    for (const j of this.live.values())
      if (j.record.cluster === cluster && j.record.node === node && !j.clusterJob) return j.record;
    return undefined;
  }

  /** The cluster's running jobs of this kind prefix (e.g. `backup.`), in this process. */
  clusterJobs(cluster: string, kindPrefix: string): { record: JobRecord; cancelling: boolean }[] {
    return [...this.live.values()]
      .filter((j) => j.clusterJob && j.record.cluster === cluster && j.record.kind.startsWith(kindPrefix))
      .map((j) => ({ record: j.record, cancelling: j.cancelReason !== null }));
  }

  /** The cluster's jobs of this kind, running or cooling down after a failure, by their node. */
  clusterJobViews(cluster: string, kind: string, now: number): Record<string, JobView> {
    const views: Record<string, JobView> = {};
    for (const [k, c] of this.clusterCooling) {
      const [owner, coolingKind, node = ''] = k.split('\u0000');
      if (owner !== cluster || coolingKind !== kind || c.until <= now) continue;
      views[node] = { id: c.jobId, kind, state: 'cooling', deadlineAt: c.until };
    }
    for (const { record: r } of this.clusterJobs(cluster, kind)) {
      if (r.kind !== kind) continue;
      views[r.node] = { id: r.id, kind, state: 'running', deadlineAt: r.deadlineAt };
    }
    return views;
  }

  /** Start a job of the cluster (not a node's step); its outcome is recorded when it settles. */
  startClusterJob(s: ClusterJobStart): number {
    const { store, clock } = this.opts;
    const now = clock.now();
    const record = store.transaction(() => {
      const id = store.jobs.create({
        cluster: s.cluster,
        node: s.node,
        kind: s.kind,
        ruleId: s.ruleId,
        from: '',
        to: s.subject ?? '',
        source: s.node,
        startedAt: now,
        deadlineAt: now + FIRST_DEADLINE_MS.copy,
        owner: this.owner,
        ...(s.requestId !== undefined ? { requestId: s.requestId } : {}),
      });
      if (s.requestId !== undefined) store.completeRequest(s.requestId, now);
      const reason = `job #${id} (${s.kind} ${s.nodeIs ?? 'from'} ${s.node}): ${s.reason}`;
      this.event({ cluster: s.cluster, node: s.node, ruleId: 'job.started', reason });
      return store.jobs.get(id)!;
    });
    const job: LiveJob = {
      record,
      clusterJob: s,
      controller: new AbortController(),
      cancelReason: null,
      lastProgressWrite: 0,
      maxBytesPerS: null,
    };
    this.live.set(record.id, job);
    this.opts.log.info(
      { cluster: s.cluster, node: s.node, job: record.id, kind: s.kind },
      `job started: ${s.reason}`,
    );
    void s
      .run({
        signal: job.controller.signal,
        progress: (done, total) => this.progress(job, done, total),
      })
      .then(
        (outcome) => {
          job.outcome = outcome;
          this.settle(job, null);
        },
        (err: unknown) => this.settle(job, err),
      );
    return record.id;
  }

  /** Start the job and return its id; its outcome is recorded when it settles. */
  start(s: JobStart): number {
    const { store, clock } = this.opts;
    const now = clock.now();
    const source = s.decision.primary ?? null;
    const record = store.transaction(() => {
      const id = store.jobs.create({
        cluster: s.cluster,
        node: s.decision.node,
        kind: s.actor,
        ruleId: s.decision.ruleId,
        from: s.from,
        to: s.to,
        source,
        startedAt: now,
        deadlineAt: now + firstDeadlineMs(s.actor),
        owner: this.owner,
      });
      const from = source ? ` from ${source}` : '';
      const reason = `job #${id} (${s.actor}${from}): ${s.decision.reason}`;
      this.event({ cluster: s.cluster, node: s.decision.node, ruleId: 'job.started', reason });
      return store.jobs.get(id)!;
    });
    const controller = new AbortController();
    const job: LiveJob = {
      record,
      start: s,
      controller,
      cancelReason: null,
      lastProgressWrite: 0,
      maxBytesPerS: maxRateOf(s.spec),
    };
    this.live.set(record.id, job);
    const context: JobContext = {
      signal: controller.signal,
      progress: (done, total) => this.progress(job, done, total),
    };
    const fields = { cluster: s.cluster, node: s.decision.node, job: record.id, kind: s.actor };
    this.opts.log.info(fields, `job started: ${s.decision.reason}`);
    // settle() never throws: a failure to record is logged there
    void s.run(context).then(
      () => this.settle(job, null),
      (err: unknown) => this.settle(job, err),
    );
    return record.id;
  }

  /** Ask a running job to stop; its outcome (cancelled) is recorded when it has stopped. */
  cancel(jobId: number, reason: string): boolean {
    const job = this.live.get(jobId);
    if (!job || job.cancelReason !== null) return false;
    job.cancelReason = reason;
    job.controller.abort(new PgopError('transient', `job #${jobId} cancelled: ${reason}`));
    return true;
  }

  cancelNode(cluster: string, node: string, reason: string): void {
    const running = this.runningOn(cluster, node);
    if (running) this.cancel(running.id, reason);
  }

  cancelCluster(cluster: string, reason: string): void {
    for (const j of [...this.live.values()])
      if (j.record.cluster === cluster) this.cancel(j.record.id, reason);
  }

  /** Once per cluster and process: jobs an earlier operator left running are interrupted; the
   *  planner redoes their steps (the drivers adopt or clean up what still runs on the node). */
  settleOrphans(cluster: string): void {
    if (this.orphansSettled.has(cluster)) return;
    const { store, clock } = this.opts;
    const now = clock.now();
    store.transaction(() => {
      for (const r of store.jobs.list({ cluster, running: true })) {
        if (r.owner === this.owner) continue;
        const msg = 'the operator that ran it stopped before it finished; its step is redone';
        store.jobs.finish(r.id, 'interrupted', msg, now);
        const reason = `job #${r.id} (${r.kind}): ${msg}`;
        this.event({ cluster, node: r.node, ruleId: 'job.interrupted', reason });
      }
    });
    this.orphansSettled.add(cluster);
  }

  /** Forget a removed cluster's in-memory state. */
  forgetCluster(cluster: string): void {
    this.cancelCluster(cluster, 'the cluster was removed');
    this.resetCooling(cluster);
    this.orphansSettled.delete(cluster);
  }

  private progress(job: LiveJob, doneBytes: number, totalBytes?: number): void {
    const r = job.record;
    const now = this.opts.clock.now();
    const total = totalBytes ?? r.totalBytes;
    if (doneBytes === r.doneBytes && total === r.totalBytes) return;
    r.doneBytes = doneBytes;
    r.totalBytes = total ?? null;
    r.progressAt = now;
    const finished = total !== undefined && total !== null && doneBytes >= total;
    if (total && (COPY_ACTORS.has(r.kind) || job.clusterJob)) {
      r.deadlineAt = copyDeadline(r.startedAt, total, job.maxBytesPerS, now);
      // every byte copied: what is left (postgres's start, its catch-up) gets the slack from now
      if (finished) r.deadlineAt = Math.max(r.deadlineAt, now + COPY_SLACK_MS);
    }
    if (now - job.lastProgressWrite < PROGRESS_WRITE_MS && !finished) return;
    job.lastProgressWrite = now;
    try {
      this.opts.store.jobs.progress(r.id, doneBytes, total ?? null, r.deadlineAt, now);
    } catch (err) {
      this.opts.log.warn({ job: r.id, err: messageOf(err) }, 'cannot record job progress');
    }
  }

  private settle(job: LiveJob, err: unknown): void {
    const r = job.record;
    this.live.delete(r.id);
    try {
      if (err === null && job.clusterJob) this.clusterJobSucceeded(job, job.clusterJob);
      else if (err === null) this.succeeded(job);
      else if (job.cancelReason !== null) this.cancelled(job, job.cancelReason);
      else this.failed(job, err);
    } catch (e) {
      // the operator "died" before the commit (test hook) or the store failed: the record stays
      // running and the next operator process redoes the step
      this.opts.log.error({ cluster: r.cluster, job: r.id, err: messageOf(e) }, 'job outcome not recorded');
      return;
    }
    this.settledCount.set(r.cluster, this.settledSoFar(r.cluster) + 1);
    for (const l of this.listeners) l(r.cluster);
  }

  private clusterJobSucceeded(job: LiveJob, s: ClusterJobStart): void {
    const { store, clock, log } = this.opts;
    const r = job.record;
    this.clusterCooling.delete(clusterKey(r));
    const now = clock.now();
    const reason = `job #${r.id}, ${((now - r.startedAt) / 1000).toFixed(1)} s: ${job.outcome ?? 'done'}`;
    store.transaction(() => {
      // the last figures (progress is written once a second at most)
      if (r.doneBytes !== null)
        store.jobs.progress(r.id, r.totalBytes ?? r.doneBytes, null, r.deadlineAt, now);
      store.jobs.finish(r.id, 'succeeded', job.outcome ?? '', now);
      this.event({ cluster: r.cluster, node: r.node, ruleId: s.done.ruleId, reason });
    });
    log.info({ cluster: r.cluster, node: r.node, job: r.id, kind: r.kind, actMs: now - r.startedAt }, reason);
  }

  private succeeded(job: LiveJob): void {
    const { store, clock, log } = this.opts;
    const { record: r } = job;
    const s = job.start!;
    this.opts.beforeCommit?.(r.cluster, s.decision);
    const now = clock.now();
    const took = `job #${r.id}, ${((now - r.startedAt) / 1000).toFixed(1)} s`;
    store.transaction(() => {
      const current = store.getNode(r.cluster, r.node)?.state;
      if (current !== s.from) {
        // something else moved the node meanwhile (a fence, a removal): the step no longer applies
        store.jobs.finish(r.id, 'succeeded', `not committed: the node is ${current ?? 'gone'} now`, now);
        return;
      }
      store.commitStep({
        cluster: r.cluster,
        node: r.node,
        state: s.to,
        goal: s.goal,
        message: s.decision.reason,
        event: {
          ruleId: s.decision.ruleId,
          reason: `${s.decision.reason} (${took})`,
          from: s.from,
          to: s.to,
        },
        now,
      });
      store.jobs.finish(r.id, 'succeeded', '', now);
    });
    this.cooling.delete(key(r.cluster, r.node));
    const fields = {
      cluster: r.cluster,
      node: r.node,
      from: s.from,
      to: s.to,
      actor: s.actor,
      rule: r.ruleId,
    };
    log.info({ ...fields, job: r.id, actMs: now - r.startedAt }, s.decision.reason);
  }

  private failed(job: LiveJob, err: unknown): void {
    const r = job.record;
    const kind = err instanceof PgopError ? err.kind : 'internal';
    if (job.clusterJob) {
      const message = `${kind}: ${messageOf(err)}`;
      if (job.clusterJob.coolsDown) this.coolDown(this.clusterCooling, clusterKey(r), kind, r, message);
      this.record(job, 'failed', message, {
        ruleId: 'job.failed',
        reason: `job #${r.id} (${r.kind}): ${message}`,
      });
      return;
    }
    const message = `${kind}: ${messageOf(err)}`;
    // the event says a repeated failure once (the job rows and the log keep every one)
    const repeated = this.coolDown(this.cooling, key(r.cluster, r.node), kind, r, message);
    const reason = `job #${r.id} (${r.kind}): ${message}`;
    this.record(job, 'failed', message, repeated ? null : { ruleId: 'job.failed', reason });
  }

  /** Cool the job's node down, longer after each failure in a row; true when the failure
   *  repeats the last one's message. */
  private coolDown(
    map: Map<string, Cooling>,
    k: string,
    kind: ErrorKind,
    r: JobRecord,
    message: string,
  ): boolean {
    const last = map.get(k);
    const failures = (last?.failures ?? 0) + 1;
    const until = this.opts.clock.now() + backoffMs(COOLING, kind, failures);
    map.set(k, { until, failures, jobId: r.id, kind: r.kind, lastMessage: message });
    return last?.lastMessage === message;
  }

  private cancelled(job: LiveJob, message: string): void {
    const reason = `job #${job.record.id} (${job.record.kind}): ${message}`;
    this.record(job, 'cancelled', message, { ruleId: 'job.cancelled', reason });
  }

  private record(
    job: LiveJob,
    state: 'failed' | 'cancelled',
    message: string,
    event: { ruleId: RuleId; reason: string } | null,
  ): void {
    const { store, clock, log } = this.opts;
    const r = job.record;
    store.transaction(() => {
      store.jobs.finish(r.id, state, message, clock.now());
      if (event) this.event({ cluster: r.cluster, node: r.node, ...event });
    });
    const logFn = state === 'failed' ? log.warn : log.info;
    logFn.call(
      log,
      { cluster: r.cluster, node: r.node, job: r.id, kind: r.kind },
      `job ${state}: ${message}`,
    );
  }

  /** A new spec generation: failed jobs are tried again at once. */
  resetCooling(cluster: string): void {
    for (const map of [this.cooling, this.clusterCooling])
      for (const k of [...map.keys()]) if (splitKey(k)[0] === cluster) map.delete(k);
  }

  private event(e: { cluster: string; node: string; ruleId: RuleId; reason: string }): void {
    const time = this.opts.clock.now();
    this.opts.store.recordEvent({ time, from: null, to: null, ...e });
  }
}

const key = (cluster: string, node: string) => `${cluster}\u0000${node}`;
const clusterKey = (r: JobRecord) => key(r.cluster, `${r.kind}\u0000${r.node}`);
const splitKey = (k: string) => k.split('\u0000') as [string, string];

function firstDeadlineMs(actor: NodeActor): number {
  return COPY_ACTORS.has(actor) ? FIRST_DEADLINE_MS.copy : FIRST_DEADLINE_MS.other;
}

/** Deadlines scale with the data: the bytes to copy at the slowest healthy rate, plus slack; a
 *  slower copy gets the slack from its latest progress, up to the bytes at a crawl's rate. */
export function copyDeadline(
  startedAt: number,
  totalBytes: number,
  maxBytesPerS: number | null,
  progressAt: number,
): number {
  const slowest = Math.min(SLOWEST_COPY_BYTES_PER_S, maxBytesPerS ? maxBytesPerS / 4 : Infinity);
  const atRate = (bytesPerS: number) =>
    startedAt + COPY_SLACK_MS + Math.ceil((totalBytes / bytesPerS) * 1000);
  return Math.min(atRate(slowest / CRAWL_FACTOR), Math.max(atRate(slowest), progressAt + COPY_SLACK_MS));
}

/** replication.cloneMaxRate (pg_basebackup --max-rate: kB/s, or with a k or M suffix) in bytes/s. */
function maxRateOf(spec: ClusterSpec): number | null {
  const kBps = cloneRateKBps(spec.replication.cloneMaxRate);
  return kBps === null ? null : kBps * 2 ** 10;
}
