// The jobs table (schema/migrations/004_jobs.sql): long actions the loop started and does not
// wait on, with their progress and outcome. Store.jobs is the one instance per store.

import type Database from 'better-sqlite3';

export type JobState = 'running' | 'succeeded' | 'failed' | 'cancelled' | 'interrupted';

export interface JobRecord {
  id: number;
  cluster: string;
  node: string;
  /** the node machine's actor it runs (cloneStandby, installPostgres, ...) */
  kind: string;
  ruleId: string;
  from: string;
  to: string;
  /** the primary a standby is cloned or rewound from */
  source: string | null;
  startedAt: number;
  deadlineAt: number;
  doneBytes: number | null;
  totalBytes: number | null;
  progressAt: number | null;
  state: JobState;
  finishedAt: number | null;
  message: string;
  owner: string;
  /** the operator request it was started for (`pgop backup`), if any */
  requestId: number | null;
}

export type NewJob = Omit<
  JobRecord,
  'id' | 'doneBytes' | 'totalBytes' | 'progressAt' | 'state' | 'finishedAt' | 'message' | 'requestId'
> & { requestId?: number };

interface JobRow {
  id: number;
  cluster: string;
  node: string;
  kind: string;
  rule_id: string;
  from_state: string;
  to_state: string;
  source: string | null;
  started_at: number;
  deadline_at: number;
  done_bytes: number | null;
  total_bytes: number | null;
  progress_at: number | null;
  state: JobState;
  finished_at: number | null;
  message: string;
  owner: string;
  request_id: number | null;
}

const toJob = (r: JobRow): JobRecord => ({
  id: r.id,
  cluster: r.cluster,
  node: r.node,
  kind: r.kind,
  ruleId: r.rule_id,
  from: r.from_state,
  to: r.to_state,
  source: r.source,
  startedAt: r.started_at,
  deadlineAt: r.deadline_at,
  doneBytes: r.done_bytes,
  totalBytes: r.total_bytes,
  progressAt: r.progress_at,
  state: r.state,
  finishedAt: r.finished_at,
  message: r.message,
  owner: r.owner,
  requestId: r.request_id,
});

/** Finished jobs kept per cluster (`get jobs` shows recent history; events keep the rest). */
const KEEP_FINISHED = 100;

export class JobTable {
  constructor(private readonly stmt: (sql: string) => Database.Statement) {}

  create(job: NewJob): number {
    const info = this.stmt(
      `INSERT INTO jobs (cluster, node, kind, rule_id, from_state, to_state, source, started_at,
         deadline_at, state, owner, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)`,
    ).run(
      job.cluster,
      job.node,
      job.kind,
      job.ruleId,
      job.from,
      job.to,
      job.source,
      job.startedAt,
      job.deadlineAt,
      job.owner,
      job.requestId ?? null,
    );
    this.prune(job.cluster);
    return Number(info.lastInsertRowid);
  }

  get(id: number): JobRecord | undefined {
    const row = this.stmt('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
    return row && toJob(row);
  }

  /** The job started for an operator request, if one was. */
  forRequest(requestId: number): JobRecord | undefined {
    const row = this.stmt('SELECT * FROM jobs WHERE request_id = ? ORDER BY id DESC LIMIT 1').get(
      requestId,
    ) as JobRow | undefined;
    return row && toJob(row);
  }

  /** When the newest job of each of these kinds started (kept history only): one query, as the
   *  loop asks every pass. */
  lastStarts(cluster: string, kinds: readonly string[]): Record<string, number> {
    const rows = this.stmt(
      `SELECT kind, MAX(started_at) AS at FROM jobs
       WHERE cluster = ? AND kind IN (SELECT value FROM json_each(?)) GROUP BY kind`,
    ).all(cluster, JSON.stringify(kinds)) as { kind: string; at: number }[];
    return Object.fromEntries(rows.map((r) => [r.kind, r.at]));
  }

  /** The newest finished job of this kind, if the history keeps one. */
  lastFinished(cluster: string, kind: string): JobRecord | undefined {
    const row = this.stmt(
      `SELECT * FROM jobs WHERE cluster = ? AND kind = ? AND state != 'running' ORDER BY id DESC LIMIT 1`,
    ).get(cluster, kind) as JobRow | undefined;
    return row && toJob(row);
  }

  /** Newest first. `running`: only jobs still running (by their record). */
  list(opts: { cluster?: string; running?: boolean; limit?: number } = {}): JobRecord[] {
    const rows = this.stmt(
      `SELECT * FROM jobs WHERE (@cluster IS NULL OR cluster = @cluster)
       AND (@running = 0 OR state = 'running') ORDER BY id DESC LIMIT @limit`,
    ).all({
      cluster: opts.cluster ?? null,
      running: opts.running ? 1 : 0,
      limit: opts.limit ?? -1,
    }) as JobRow[];
    return rows.map(toJob);
  }

  progress(id: number, doneBytes: number, totalBytes: number | null, deadlineAt: number, now: number): void {
    this.stmt(
      `UPDATE jobs SET done_bytes = ?, total_bytes = COALESCE(?, total_bytes), deadline_at = ?,
         progress_at = ? WHERE id = ? AND state = 'running'`,
    ).run(doneBytes, totalBytes, deadlineAt, now, id);
  }

  /** Record the outcome of a running job; false when it was no longer running. */
  finish(id: number, state: Exclude<JobState, 'running'>, message: string, now: number): boolean {
    return (
      this.stmt(
        `UPDATE jobs SET state = ?, message = ?, finished_at = ? WHERE id = ? AND state = 'running'`,
      ).run(state, message, now, id).changes > 0
    );
  }

  removeCluster(cluster: string): void {
    this.stmt('DELETE FROM jobs WHERE cluster = ?').run(cluster);
  }

  private prune(cluster: string): void {
    this.stmt(
      `DELETE FROM jobs WHERE cluster = @cluster AND state != 'running' AND id NOT IN
         (SELECT id FROM jobs WHERE cluster = @cluster AND state != 'running' ORDER BY id DESC LIMIT @keep)`,
    ).run({ cluster, keep: KEEP_FINISHED });
  }
}
