// The store's public shape. Implementation: src/store/store.ts (better-sqlite3, WAL mode,
// migrations in schema/migrations/*.sql applied in order at open).

import type { ClusterSpec } from '../spec/types.js';
import type { ClusterObservation } from '../observe/types.js';
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
