// Table rows as SQLite returns them, and their typed records. Types only at run time but for
// the mappers (cheap to import, see store.ts).

import type { ClusterSpec } from '../spec/types.js';
import type { NodeGoal, NodeState } from '../../machines/node-edges.js';
import type { EventRecord, NodeRecord, StoredCluster } from './types.js';

export interface ClusterRow {
  name: string;
  generation: number;
  spec_json: string;
  spec_hash: string;
  created_at: number;
  updated_at: number;
  deletion_requested: number;
  phase: string;
  primary_node: string | null;
  observed_generation: number;
  message: string;
}

export interface NodeRow {
  cluster: string;
  name: string;
  state: string;
  goal: string | null;
  last_transition_at: number;
  message: string;
}

export interface EventRow {
  id: number;
  time: number;
  cluster: string;
  node: string | null;
  from_state: string | null;
  to_state: string | null;
  rule_id: string;
  reason: string;
}

export interface LockRow {
  pid: number;
  hostname: string;
  started_at: number;
  heartbeat_at: number;
}

export const toCluster = (r: ClusterRow): StoredCluster => ({
  name: r.name,
  generation: r.generation,
  spec: JSON.parse(r.spec_json) as ClusterSpec,
  specHash: r.spec_hash,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
  deletionRequested: r.deletion_requested !== 0,
  phase: r.phase,
  primary: r.primary_node,
  observedGeneration: r.observed_generation,
  message: r.message,
});

export const toNode = (r: NodeRow): NodeRecord => ({
  cluster: r.cluster,
  name: r.name,
  state: r.state as NodeState,
  goal: r.goal as NodeGoal | null,
  lastTransitionAt: r.last_transition_at,
  message: r.message,
});

export const toEvent = (r: EventRow): EventRecord => ({
  id: r.id,
  time: r.time,
  cluster: r.cluster,
  node: r.node,
  from: r.from_state,
  to: r.to_state,
  ruleId: r.rule_id,
  reason: r.reason,
});

export const CLUSTER_COLS =
  'name, generation, spec_json, spec_hash, created_at, updated_at, deletion_requested, ' +
  'phase, primary_node, observed_generation, message';
export const NODE_COLS = 'cluster, name, state, goal, last_transition_at, message';
export const EVENT_COLS = 'id, time, cluster, node, from_state, to_state, rule_id, reason';
