// The operator's durable state: one SQLite file (better-sqlite3, WAL mode). Every method is
// synchronous; statements are prepared once and cached. Multi-statement writes run in IMMEDIATE
// transactions so a concurrent writer waits on busy_timeout instead of failing on lock upgrade.
//
// Keep this module cheap to import: `pgop get nodes` opens the store and must start in ~2x
// `node -e 0`. Runtime imports: better-sqlite3, node builtins and errors.ts (no imports) only.

import Database from 'better-sqlite3';
import { chmodSync, closeSync, existsSync, openSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

import { internal, PgopError, terminal } from '../errors.js';
import { makeDirs } from '../state-dirs.js';
import type { ClusterSpec, NodeSpec } from '../spec/types.js';
import type { ClusterObservation, SyncSet } from '../observe/types.js';
import type { NodeGoal, NodeState } from '../../machines/node-edges.js';
import type {
  ApplyResult,
  ClusterStatus,
  EventRecord,
  HostKeyRecord,
  ListEventsOptions,
  NodeRecord,
  OperatorRequest,
  ServeLockResult,
  SpecHistoryEntry,
  StepCommit,
  StoreOpenOptions,
  StoredCluster,
} from './types.js';
export type {
  StoreOpenOptions,
  SpecHistoryEntry,
  HostKeyRecord,
  ClusterStatus,
  StepEvent,
  StepCommit,
  ServeLockResult,
  ListEventsOptions,
} from './types.js';
import { listMigrations, migrate, migrationsDirectory } from './migrations.js';
import { JobTable } from './jobs.js';
import {
  CLUSTER_COLS,
  EVENT_COLS,
  NODE_COLS,
  toCluster,
  toEvent,
  toNode,
  type ClusterRow,
  type EventRow,
  type LockRow,
  type NodeRow,
} from './rows.js';

/** The message of a write refused because this serve lost its lock (guardWithServeLock). */
export const SERVE_LOCK_LOST = 'pgop: this serve no longer holds the serve lock';

/** True when err is a write refused by guardWithServeLock. */
export function isServeLockLost(err: unknown): boolean {
  return err instanceof Error && err.message.includes(SERVE_LOCK_LOST);
}

/** `$PGOP_DB`, else /var/lib/pgop/pgop.db for root, else ${XDG_STATE_HOME:-~/.local/state}/pgop/pgop.db. */
export function defaultDbPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.PGOP_DB) return env.PGOP_DB;
  if (process.getuid?.() === 0) return '/var/lib/pgop/pgop.db';
  const state = env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(state, 'pgop', 'pgop.db');
}

/** Default liveness probe for acquireServeLock: signal 0 (EPERM means it exists, owned by another user). */
export function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A string-valued key ending in "password" (password, superuserPassword) is a plaintext secret. */
function findPlaintextSecret(value: unknown, path: string): string | null {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const hit = findPlaintextSecret(value[i], `${path}[${i}]`);
      if (hit) return hit;
    }
  } else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const p = `${path}.${k}`;
      if (/password$/i.test(k) && typeof v === 'string') return p;
      const hit = findPlaintextSecret(v, p);
      if (hit) return hit;
    }
  }
  return null;
}

export class Store {
  private readonly stmts = new Map<string, Database.Statement>();
  private closed = false;
  /** long actions the loop started (src/reconcile/jobs.ts) */
  readonly jobs = new JobTable((sql) => this.stmt(sql));

  private constructor(
    private readonly db: Database.Database,
    /** The file backing the store (':memory:' for an in-memory or not-yet-created readonly store). */
    readonly path: string,
    readonly readonly: boolean,
  ) {}

  static open(path: string, opts: StoreOpenOptions = {}): Store {
    const readonly = opts.readonly === true;
    const memory = path === ':memory:';
    let db: Database.Database;

    if (readonly && (memory || !existsSync(path))) {
      // Nothing applied yet: read as an empty store without creating a file.
      db = new Database(':memory:');
      db.pragma('foreign_keys = ON');
      migrate(db, listMigrations(opts.migrationsDir ?? migrationsDirectory()), false);
      db.pragma('query_only = ON');
      return new Store(db, ':memory:', true);
    }

    if (!memory && !readonly) {
      // private (0700), except /var/lib/pgop itself: 0711, qemu traverses it (src/state-dirs.ts)
      makeDirs(dirname(path), 0o700);
      if (!existsSync(path)) {
        // Create it ourselves so it is never world-readable, not even for an instant. SQLite
        // gives the -wal and -shm files the database file's mode.
        closeSync(openSync(path, 'a', 0o600));
      } else if ((statSync(path).mode & 0o077) !== 0) {
        try {
          chmodSync(path, 0o600);
        } catch {
          // not ours to tighten (e.g. root's store opened by an operator with write access)
        }
      }
    }

    try {
      db = new Database(path, readonly ? { readonly: true, fileMustExist: true } : {});
    } catch (err) {
      throw terminal(`cannot open store ${path}: ${(err as Error).message}`, err);
    }
    try {
      db.pragma('busy_timeout = 5000');
      db.pragma('foreign_keys = ON');
      if (!readonly) db.pragma('journal_mode = WAL');
      migrate(db, listMigrations(opts.migrationsDir ?? migrationsDirectory()), readonly);
    } catch (err) {
      db.close();
      if (err instanceof PgopError) throw err;
      throw terminal(`cannot open store ${path}: ${(err as Error).message}`, err);
    }
    return new Store(db, path, readonly);
  }

  private stmt(sql: string): Database.Statement {
    let s = this.stmts.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.stmts.set(sql, s);
    }
    return s;
  }

  /**
   * Run fn in one transaction (a savepoint when nested); a throw rolls it back. IMMEDIATE, so a
   * concurrent writer waits on busy_timeout rather than failing when a read upgrades to a write.
   */
  transaction<T>(fn: () => T): T {
    const t = this.db.transaction(fn);
    return this.readonly ? t.deferred() : t.immediate();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stmts.clear();
    this.db.close();
  }

  // ---------------------------------------------------------------- clusters

  applySpec(
    spec: ClusterSpec,
    hash: string,
    source: string,
    now: number,
  ): { result: ApplyResult; generation: number } {
    const json = JSON.stringify(spec);
    const leak = findPlaintextSecret(JSON.parse(json), 'spec');
    if (leak)
      throw internal(
        `refusing to store a plaintext secret at ${leak}: specs hold {env}|{file} references only`,
      );

    return this.transaction(() => {
      const cur = this.stmt('SELECT generation, spec_hash FROM clusters WHERE name = ?').get(spec.name) as
        { generation: number; spec_hash: string } | undefined;
      let result: ApplyResult;
      let generation: number;
      if (!cur) {
        generation = 1;
        result = 'created';
        this.stmt(
          `INSERT INTO clusters (name, generation, spec_json, spec_hash, spec_source, ` +
            `created_at, updated_at, events_after_id)
           VALUES (?, ?, ?, ?, ?, ?, ?, (SELECT coalesce(max(id), 0) FROM events))`,
        ).run(spec.name, generation, json, hash, source, now, now);
      } else if (cur.spec_hash === hash) {
        return { result: 'unchanged' as const, generation: cur.generation };
      } else {
        generation = cur.generation + 1;
        result = 'configured';
        this.stmt(
          `UPDATE clusters SET generation = ?, spec_json = ?, spec_hash = ?, spec_source = ?, updated_at = ?,
             deletion_requested = 0
           WHERE name = ?`,
        ).run(generation, json, hash, source, now, spec.name);
      }
      this.stmt(
        `INSERT INTO spec_history (cluster, generation, spec_hash, spec_json, spec_source, applied_at)
         VALUES (?, ?, ?, ?, ?, ?)`,
      ).run(spec.name, generation, hash, json, source, now);
      return { result, generation };
    });
  }

  getCluster(name: string): StoredCluster | undefined {
    const row = this.stmt(`SELECT ${CLUSTER_COLS} FROM clusters WHERE name = ?`).get(name) as
      ClusterRow | undefined;
    return row && toCluster(row);
  }

  listClusters(): StoredCluster[] {
    return (this.stmt(`SELECT ${CLUSTER_COLS} FROM clusters ORDER BY name`).all() as ClusterRow[]).map(
      toCluster,
    );
  }

  /** Every applied generation, oldest first. */
  specHistory(name: string): SpecHistoryEntry[] {
    const rows = this.stmt(
      `SELECT cluster, generation, spec_hash, spec_json, spec_source, applied_at
       FROM spec_history WHERE cluster = ? ORDER BY generation`,
    ).all(name) as {
      cluster: string;
      generation: number;
      spec_hash: string;
      spec_json: string;
      spec_source: string;
      applied_at: number;
    }[];
    return rows.map((r) => ({
      cluster: r.cluster,
      generation: r.generation,
      specHash: r.spec_hash,
      spec: JSON.parse(r.spec_json) as ClusterSpec,
      specSource: r.spec_source,
      appliedAt: r.applied_at,
    }));
  }

  /** Marks the cluster for teardown; false when there is no such cluster. */
  requestDeletion(name: string, now: number): boolean {
    return (
      this.stmt('UPDATE clusters SET deletion_requested = 1, updated_at = ? WHERE name = ?').run(now, name)
        .changes > 0
    );
  }

  /** Deletes the cluster, its spec history, nodes, observation, host keys, requests and jobs.
   *  Events stay. */
  removeCluster(name: string): boolean {
    return this.transaction(() => {
      for (const table of ['nodes', 'observations', 'host_keys', 'requests', 'jobs']) {
        this.stmt(`DELETE FROM ${table} WHERE cluster = ?`).run(name);
      }
      this.stmt('DELETE FROM spec_history WHERE cluster = ?').run(name);
      return this.stmt('DELETE FROM clusters WHERE name = ?').run(name).changes > 0;
    });
  }

  /** false when there is no such cluster. observedGeneration is left as is when omitted. */
  setClusterStatus(name: string, status: ClusterStatus): boolean {
    return (
      this.stmt(
        `UPDATE clusters SET phase = ?, primary_node = ?, message = ?,
           observed_generation = COALESCE(?, observed_generation)
         WHERE name = ?`,
      ).run(status.phase, status.primary, status.message, status.observedGeneration ?? null, name).changes > 0
    );
  }

  // ---------------------------------------------------------------- nodes

  listNodes(cluster?: string): NodeRecord[] {
    const rows =
      cluster === undefined
        ? this.stmt(`SELECT ${NODE_COLS} FROM nodes ORDER BY cluster, name`).all()
        : this.stmt(`SELECT ${NODE_COLS} FROM nodes WHERE cluster = ? ORDER BY cluster, name`).all(cluster);
    return (rows as NodeRow[]).map(toNode);
  }

  getNode(cluster: string, name: string): NodeRecord | undefined {
    const row = this.stmt(`SELECT ${NODE_COLS} FROM nodes WHERE cluster = ? AND name = ?`).get(
      cluster,
      name,
    ) as NodeRow | undefined;
    return row && toNode(row);
  }

  /** Upsert; last_transition_at moves only when the state changes. The cluster must exist. */
  saveNodeState(
    cluster: string,
    name: string,
    state: NodeState,
    opts: { goal: NodeGoal | null; message: string; now: number },
  ): void {
    this.stmt(
      `INSERT INTO nodes (cluster, name, state, goal, last_transition_at, message) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (cluster, name) DO UPDATE SET
         last_transition_at = CASE WHEN nodes.state = excluded.state THEN nodes.last_transition_at
                                   ELSE excluded.last_transition_at END,
         state = excluded.state, goal = excluded.goal, message = excluded.message`,
    ).run(cluster, name, state, opts.goal, opts.now, opts.message);
  }

  /** Only the goal: a job may commit the node's state at any time, never overwritten here. */
  setNodeGoal(cluster: string, name: string, goal: NodeGoal | null): void {
    this.stmt('UPDATE nodes SET goal = ? WHERE cluster = ? AND name = ?').run(goal, cluster, name);
  }

  /** Remember the NodeSpec a node was provisioned (or last acted on) with: once it leaves the
   *  spec, its removal must still reach its real host. */
  saveNodeSpec(cluster: string, node: NodeSpec): void {
    this.stmt('UPDATE nodes SET spec_json = ? WHERE cluster = ? AND name = ?').run(
      JSON.stringify(node),
      cluster,
      node.name,
    );
  }

  /** The last NodeSpec recorded for a node, or undefined (never recorded, or no such node). */
  getNodeSpec(cluster: string, name: string): NodeSpec | undefined {
    const json = this.stmt('SELECT spec_json FROM nodes WHERE cluster = ? AND name = ?')
      .pluck()
      .get(cluster, name) as string | null | undefined;
    return json ? (JSON.parse(json) as NodeSpec) : undefined;
  }

  deleteNodeRecord(cluster: string, name: string): boolean {
    return this.stmt('DELETE FROM nodes WHERE cluster = ? AND name = ?').run(cluster, name).changes > 0;
  }

  // ---------------------------------------------------------------- events

  recordEvent(e: Omit<EventRecord, 'id'>): number {
    const info = this.stmt(
      `INSERT INTO events (time, cluster, node, from_state, to_state, rule_id, reason) ` +
        `VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ).run(e.time, e.cluster, e.node, e.from, e.to, e.ruleId, e.reason);
    return Number(info.lastInsertRowid);
  }

  /** Ascending by id. With limit, the LAST `limit` matching events. */
  listEvents(opts: ListEventsOptions = {}): EventRecord[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (opts.cluster !== undefined) {
      where.push('cluster = ?');
      args.push(opts.cluster);
      if (!opts.allIncarnations) {
        // the current incarnation's (a cluster that no longer exists: all of its history)
        where.push('id > coalesce((SELECT events_after_id FROM clusters WHERE name = ?), 0)');
        args.push(opts.cluster);
      }
    }
    if (opts.afterId !== undefined) {
      where.push('id > ?');
      args.push(opts.afterId);
    }
    const cond = where.length ? `WHERE ${where.join(' AND ')}` : '';
    let rows: EventRow[];
    if (opts.limit !== undefined) {
      if (!Number.isInteger(opts.limit) || opts.limit < 0)
        throw internal(`listEvents: bad limit ${opts.limit}`);
      rows = this.stmt(
        `SELECT * FROM (SELECT ${EVENT_COLS} FROM events ${cond} ORDER BY id DESC LIMIT ?) ORDER BY id ASC`,
      ).all(...args, opts.limit) as EventRow[];
    } else {
      rows = this.stmt(`SELECT ${EVENT_COLS} FROM events ${cond} ORDER BY id ASC`).all(...args) as EventRow[];
    }
    return rows.map(toEvent);
  }

  /**
   * The reconciler's commit after a successful side effect: the node's new state and the event
   * that explains it, in one transaction (both or neither). Returns the event id.
   */
  commitStep(step: StepCommit): number {
    return this.transaction(() => {
      const before = this.getNode(step.cluster, step.node);
      this.saveNodeState(step.cluster, step.node, step.state, {
        goal: step.goal,
        message: step.message,
        now: step.now,
      });
      if (step.lastSync) this.saveSyncSet(step.cluster, step.lastSync);
      return this.recordEvent({
        time: step.now,
        cluster: step.cluster,
        node: step.node,
        from: step.event.from !== undefined ? step.event.from : (before?.state ?? null),
        to: step.event.to !== undefined ? step.event.to : step.state,
        ruleId: step.event.ruleId,
        reason: step.event.reason,
      });
    });
  }

  // ---------------------------------------------------------------- observations

  /** The simulated provider's world (JSON), or undefined when none was saved. */
  loadSimWorld(): string | undefined {
    return (this.db.prepare('SELECT json FROM sim_world WHERE id = 1').get() as { json: string } | undefined)
      ?.json;
  }

  saveSimWorld(json: string, now: number): void {
    this.db
      .prepare(
        'INSERT INTO sim_world (id, json, saved_at) VALUES (1, ?, ?) ' +
          'ON CONFLICT(id) DO UPDATE SET json = excluded.json, saved_at = excluded.saved_at',
      )
      .run(json, now);
  }

  saveObservation(obs: ClusterObservation): void {
    this.stmt(
      `INSERT INTO observations (cluster, at, json) VALUES (?, ?, ?)
       ON CONFLICT (cluster) DO UPDATE SET at = excluded.at, json = excluded.json`,
    ).run(obs.cluster, obs.at, JSON.stringify(obs));
  }

  /** The sync evidence an election leaves (the stored observation carries it to the next pass). */
  private saveSyncSet(cluster: string, lastSync: SyncSet): void {
    const obs = this.getObservation(cluster);
    if (obs) this.saveObservation({ ...obs, lastSync });
  }

  getObservation(cluster: string): ClusterObservation | undefined {
    const row = this.stmt('SELECT json FROM observations WHERE cluster = ?').get(cluster) as
      { json: string } | undefined;
    return row && (JSON.parse(row.json) as ClusterObservation);
  }

  // ---------------------------------------------------------------- host keys

  getHostKey(cluster: string, node: string): HostKeyRecord | undefined {
    const row = this.stmt(
      'SELECT cluster, node, algo, key_b64, pinned_at FROM host_keys WHERE cluster = ? AND node = ?',
    ).get(cluster, node) as
      { cluster: string; node: string; algo: string; key_b64: string; pinned_at: number } | undefined;
    return (
      row && {
        cluster: row.cluster,
        node: row.node,
        algo: row.algo,
        keyB64: row.key_b64,
        pinnedAt: row.pinned_at,
      }
    );
  }

  /** Every pinned host key, by cluster and node (`pgop host-key list`). */
  listHostKeys(cluster?: string): HostKeyRecord[] {
    const rows = (
      cluster === undefined
        ? this.stmt(
            'SELECT cluster, node, algo, key_b64, pinned_at FROM host_keys ORDER BY cluster, node',
          ).all()
        : this.stmt(
            'SELECT cluster, node, algo, key_b64, pinned_at FROM host_keys ' +
              'WHERE cluster = ? ORDER BY cluster, node',
          ).all(cluster)
    ) as { cluster: string; node: string; algo: string; key_b64: string; pinned_at: number }[];
    return rows.map((r) => ({
      cluster: r.cluster,
      node: r.node,
      algo: r.algo,
      keyB64: r.key_b64,
      pinnedAt: r.pinned_at,
    }));
  }

  /**
   * Pin a host key. Pinning the same key again is a no-op. With `replace` (the key pgop made
   * for a machine it creates, or a rotated key that answered) any older pin is replaced;
   * without it, a different key over an existing pin throws a terminal error.
   */
  pinHostKey(
    cluster: string,
    node: string,
    algo: string,
    keyB64: string,
    now: number,
    opts: { replace?: boolean } = {},
  ): void {
    this.transaction(() => {
      const cur = this.getHostKey(cluster, node);
      if (cur) {
        if (cur.algo === algo && cur.keyB64 === keyB64) return;
        if (!opts.replace) {
          throw terminal(
            `host key of ${cluster}/${node} is already pinned (${cur.algo}) and differs; ` +
              `\`pgop host-key rotate\` replaces it with a new one, ` +
              `\`pgop host-key forget\` accepts the next one presented`,
          );
        }
        this.stmt(
          'UPDATE host_keys SET algo = ?, key_b64 = ?, pinned_at = ? WHERE cluster = ? AND node = ?',
        ).run(algo, keyB64, now, cluster, node);
        return;
      }
      this.stmt('INSERT INTO host_keys (cluster, node, algo, key_b64, pinned_at) VALUES (?, ?, ?, ?, ?)').run(
        cluster,
        node,
        algo,
        keyB64,
        now,
      );
    });
  }

  forgetHostKey(cluster: string, node: string): boolean {
    return this.stmt('DELETE FROM host_keys WHERE cluster = ? AND node = ?').run(cluster, node).changes > 0;
  }

  // ---------------------------------------------------------------- operator requests

  enqueueRequest(
    cluster: string,
    kind: OperatorRequest['kind'],
    args: Record<string, string>,
    now: number,
  ): number {
    const info = this.stmt(
      'INSERT INTO requests (cluster, kind, args_json, created_at) VALUES (?, ?, ?, ?)',
    ).run(cluster, kind, JSON.stringify(args), now);
    return Number(info.lastInsertRowid);
  }

  /** Not yet taken, oldest first. */
  pendingRequests(cluster: string): OperatorRequest[] {
    const rows = this.stmt(
      'SELECT id, cluster, kind, args_json, created_at FROM requests ' +
        'WHERE cluster = ? AND taken_at IS NULL ORDER BY id',
    ).all(cluster) as { id: number; cluster: string; kind: string; args_json: string; created_at: number }[];
    return rows.map((r) => ({
      id: r.id,
      cluster: r.cluster,
      kind: r.kind as OperatorRequest['kind'],
      args: JSON.parse(r.args_json) as Record<string, string>,
      createdAt: r.created_at,
    }));
  }

  /** false when the request does not exist or was already taken. */
  completeRequest(id: number, now: number): boolean {
    return (
      this.stmt('UPDATE requests SET taken_at = ? WHERE id = ? AND taken_at IS NULL').run(now, id).changes > 0
    );
  }

  // ---------------------------------------------------------------- serve lock

  /**
   * Take the single `serve` lock. Re-acquiring by the current holder (same pid and hostname)
   * succeeds. A holder on this host whose pid is no longer alive is stale and replaced; a holder
   * on another host is never judged (its pid means nothing here).
   */
  acquireServeLock(
    pid: number,
    hostname: string,
    now: number,
    isAlive: (pid: number) => boolean,
  ): ServeLockResult {
    return this.transaction((): ServeLockResult => {
      const cur = this.stmt(
        'SELECT pid, hostname, started_at, heartbeat_at FROM serve_lock WHERE id = 1',
      ).get() as LockRow | undefined;
      if (cur) {
        const self = cur.pid === pid && cur.hostname === hostname;
        if (self) {
          this.stmt('UPDATE serve_lock SET heartbeat_at = ? WHERE id = 1').run(now);
          return { ok: true };
        }
        const stale = cur.hostname === hostname && !isAlive(cur.pid);
        if (!stale) return { ok: false, pid: cur.pid, hostname: cur.hostname, startedAt: cur.started_at };
      }
      this.stmt(
        `INSERT INTO serve_lock (id, pid, hostname, started_at, heartbeat_at) VALUES (1, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, hostname = excluded.hostname,
           started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at`,
      ).run(pid, hostname, now, now);
      return { ok: true };
    });
  }

  /**
   * false when `pid` (on `hostname`, when given) no longer holds the lock (it was taken over):
   * the caller must stop serving at once.
   */
  heartbeat(pid: number, now: number, hostname?: string): boolean {
    if (hostname === undefined)
      return (
        this.stmt('UPDATE serve_lock SET heartbeat_at = ? WHERE id = 1 AND pid = ?').run(now, pid).changes > 0
      );
    return (
      this.stmt('UPDATE serve_lock SET heartbeat_at = ? WHERE id = 1 AND pid = ? AND hostname = ?').run(
        now,
        pid,
        hostname,
      ).changes > 0
    );
  }

  /** The current holder of the serve lock, if any. */
  serveLockHolder(): { pid: number; hostname: string; startedAt: number; heartbeatAt: number } | undefined {
    const r = this.stmt(
      'SELECT pid, hostname, started_at, heartbeat_at FROM serve_lock WHERE id = 1',
    ).get() as LockRow | undefined;
    return r && { pid: r.pid, hostname: r.hostname, startedAt: r.started_at, heartbeatAt: r.heartbeat_at };
  }

  /**
   * Fence this connection's writes with the serve lock: from now on every INSERT, UPDATE or
   * DELETE this Store makes (to any table but the lock's own) aborts, inside its own
   * transaction, unless `pid` on `hostname` still holds the lock. A serve whose lock was taken
   * over can then commit nothing more, not even a pass already under way when it happened
   * (SQLite serialises the check with the takeover). The triggers are TEMP: they live in this
   * connection only, so other commands (apply, get) are not affected.
   */
  guardWithServeLock(pid: number, hostname: string): void {
    if (!Number.isInteger(pid)) throw internal(`guardWithServeLock: bad pid ${pid}`);
    const host = `'${hostname.replace(/'/g, "''")}'`;
    const tables = this.db
      .prepare(
        "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' " +
          "AND name NOT IN ('serve_lock', 'schema_migrations')",
      )
      .pluck()
      .all() as string[];
    const owner = `id = 1 AND pid = ${pid} AND hostname = ${host}`;
    const held = `EXISTS (SELECT 1 FROM main.serve_lock WHERE ${owner})`;
    this.db.transaction(() => {
      for (const t of tables) {
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(t))
          throw internal(`guardWithServeLock: odd table name ${JSON.stringify(t)}`);
        for (const op of ['INSERT', 'UPDATE', 'DELETE']) {
          const name = `pgop_serve_guard_${t}_${op.toLowerCase()}`;
          this.db.exec(`DROP TRIGGER IF EXISTS temp.${name}`);
          this.db.exec(
            `CREATE TEMP TRIGGER ${name} BEFORE ${op} ON main.${t} WHEN NOT ${held} ` +
              `BEGIN SELECT RAISE(ABORT, '${SERVE_LOCK_LOST}'); END`,
          );
        }
      }
    })();
  }

  releaseServeLock(pid: number, hostname?: string): boolean {
    if (hostname === undefined)
      return this.stmt('DELETE FROM serve_lock WHERE id = 1 AND pid = ?').run(pid).changes > 0;
    return (
      this.stmt('DELETE FROM serve_lock WHERE id = 1 AND pid = ? AND hostname = ?').run(pid, hostname)
        .changes > 0
    );
  }
}
