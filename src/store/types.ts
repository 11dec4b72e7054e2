// The store's public shape. Implementation: src/store/store.ts (better-sqlite3, WAL mode,
// migrations in schema/migrations/*.sql applied in order at open).

import type { ClusterSpec } from '../spec/types.js';
import type { SyncSet } from '../observe/types.js';
import type { NodeGoal, NodeState } from '../../machines/node-edges.js';

export type ApplyResult = 'created' | 'configured' | 'unchanged';

export interface StoredCluster {
  name: string;
  generation: number;
  spec: ClusterSpec;
  specHash: string;
  createdAt: number;
  updatedAt: number;
  /** set by `pgop delete cluster`; the loop tears the cluster down, then removes it */
  deletionRequested: boolean;
  /** e.g. Provisioning, Healthy, Degraded, FailingOver, Deleting */
  phase: string;
  primary: string | null;
  /** generation the loop last converged (all nodes at their goals) */
  observedGeneration: number;
  message: string;
}

export interface NodeRecord {
  cluster: string;
  name: string;
  state: NodeState;
  goal: NodeGoal | null;
  lastTransitionAt: number;
  message: string;
}

export interface EventRecord {
  id: number;
  time: number;
  cluster: string;
  node: string | null;
  from: string | null;
  to: string | null;
  ruleId: string;
  reason: string;
}

export type { OperatorRequest } from '../plan/types.js';

export interface StoreOpenOptions {
  /**
   * Open for reading only (`pgop get ...`): no migrations are applied and writes throw. A store
   * file that does not exist yet reads as an empty store (nothing has been applied) and no file
   * is created. A store whose schema is older than this pgop throws a terminal error.
   */
  readonly?: boolean;
  /** Override where migrations are read from (tests). */
  migrationsDir?: string;
}

export interface SpecHistoryEntry {
  cluster: string;
  generation: number;
  specHash: string;
  spec: ClusterSpec;
  specSource: string;
  appliedAt: number;
}

export interface HostKeyRecord {
  cluster: string;
  node: string;
  algo: string;
  keyB64: string;
  pinnedAt: number;
}

export interface ClusterStatus {
  phase: string;
  primary: string | null;
  message: string;
  observedGeneration?: number;
}

/** The event written by commitStep; cluster, node and time come from the step. */
export interface StepEvent {
  ruleId: string;
  reason: string;
  /** defaults to the node's state before the step (null for a node not yet recorded) */
  from?: string | null;
  /** defaults to the step's state */
  to?: string | null;
}

export interface StepCommit {
  cluster: string;
  node: string;
  state: NodeState;
  goal: NodeGoal | null;
  message: string;
  event: StepEvent;
  now: number;
  /** a promotion's sync evidence, stored with the step (see ClusterObservation.lastSync) */
  lastSync?: SyncSet;
}

export type ServeLockResult = { ok: true } | { ok: false; pid: number; hostname: string; startedAt: number };

export interface ListEventsOptions {
  cluster?: string;
  /** only events with id > afterId (follow mode) */
  afterId?: number;
  /** keep only the last `limit` matching events (still returned in ascending id order) */
  limit?: number;
  /** with `cluster`: also the events of earlier clusters of that name (deleted, then created
   *  again); by default only the current incarnation's */
  allIncarnations?: boolean;
}
