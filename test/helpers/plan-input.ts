// Planner inputs for unit tests: observations of healthy nodes and a PlanInput around them.

import type { PlanInput } from '../../src/plan/types.js';
import type { NodeObservation, PostgresObservation } from '../../src/observe/types.js';
import type { NodeState } from '../../machines/node-edges.js';
import { simSpec } from './sim-spec.js';

export const HASH = 'h';

export function pg(over: Partial<PostgresObservation> = {}): PostgresObservation {
  return {
    initialized: true,
    running: true,
    inRecovery: true,
    timeline: 1,
    lsn: 1000,
    receiveLsn: 1000,
    upstream: 'pg01',
    streaming: true,
    replicas: [],
    syncStandbyNames: '',
    configHash: HASH,
    ...over,
  };
}
export function node(name: string, over: Partial<NodeObservation> = {}): NodeObservation {
  return { name, machine: { state: 'running' }, reachable: true, postgres: pg(), misses: 0, ...over };
}
export const primaryPg = (over: Partial<PostgresObservation> = {}) =>
  pg({ inRecovery: false, upstream: null, streaming: false, lsn: 2000, ...over });
/** A node whose machine is off: unreachable, no postgres. */
export const off = { machine: { state: 'stopped' as const }, reachable: false, postgres: null };
/** pgpool reachable, routing to `primary`, every backend in `names` up. */
export const poolUp = (primary: string, names: string[]) => ({
  reachable: true,
  primary,
  backends: names.map((name) => ({
    name,
    status: 'up' as const,
    role: name === primary ? ('primary' as const) : ('standby' as const),
  })),
  configHash: '',
});

export function input(
  states: Record<string, NodeState>,
  nodes: Record<string, NodeObservation>,
  over: Partial<PlanInput> = {},
): PlanInput {
  const spec = over.spec ?? simSpec();
  return {
    spec,
    deletionRequested: false,
    observation: {
      cluster: spec.name,
      at: 0,
      nodes,
      pool: { reachable: true, primary: 'pg01', backends: [], configHash: '' },
    },
    states,
    desiredConfigHash: Object.fromEntries(spec.nodes.map((n) => [n.name, HASH])),
    requests: [],
    now: 0,
    ...over,
  };
}

export const healthy3 = () => ({
  pg01: node('pg01', { postgres: primaryPg() }),
  pg02: node('pg02'),
  pg03: node('pg03'),
});
export const states3: Record<string, NodeState> = { pg01: 'primary', pg02: 'standby', pg03: 'standby' };
