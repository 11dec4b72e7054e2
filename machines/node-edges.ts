// The node lifecycle as data: every legal (state, event) -> (state, actor) edge. The xstate
// machine (node-machine.ts) is built from this table, the graph test (test/unit/machine-graph)
// walks the machine built from it, and the planner only ever sends events that appear here.
// States are the spec's words; events are past-tense facts the planner concluded; actors are
// verb-object names the reconciler maps to driver calls.

export const NODE_STATES = [
  'absent', // no machine
  'provisioned', // machine exists and was started; postgres not installed yet
  'installed', // packages, directories and config in place; no role yet
  'primary', // the writable node
  'standby', // streams from the primary
  'degraded', // was healthy, now fails its probes (not the primary: a failing primary is fenced)
  'fenced', // powered off by the operator; must never run as primary again unless rewound
  'rejoining', // machine restarted after fencing/degradation; to be rewound into a standby
  'deleting', // fenced on the way out of the spec; its machine is removed next
] as const;
export type NodeState = (typeof NODE_STATES)[number];

/** The goals the planner may assign a node. */
export const NODE_GOALS = ['primary', 'standby', 'absent', 'fenced'] as const;
export type NodeGoal = (typeof NODE_GOALS)[number];

export const NODE_ACTORS = [
  'provisionVm',
  'installPostgres',
  'initPrimary',
  'cloneStandby',
  'promoteStandby',
  'repointStandby',
  'configureNode',
  'fenceNode',
  'demotePrimary',
  'startMachine',
  'rejoinStandby',
  'deleteMachine',
  'restartPostgres',
] as const;
export type NodeActor = (typeof NODE_ACTORS)[number];

export const NODE_EVENTS = [
  'node.wanted', // in the spec, no machine
  'machine.reachable', // machine answers SSH
  'primary.elected', // planner chose this node as (first or new) primary
  'primary.found', // a primary exists; this node should follow it
  'primary.changed', // the standby follows an old primary
  'config.drifted', // managed config differs from the spec
  'probe.failed', // health probes missed past the budget
  'switchover.requested', // planned handover away from this primary
  'machine.down', // a degraded node's machine is not running
  'fence.released', // a fenced node may come back (a new primary exists)
  'machine.vanished', // the machine disappeared under us
  'node.unwanted', // no longer in the spec
  'machine.fenced', // a node on its way out is powered off
  'postgres.stopped', // reachable, postgres down, and no other node can serve: start it in place
  'standby.found', // an installed node already runs as a standby (clone finished, commit lost)
] as const;
export type NodeEvent = (typeof NODE_EVENTS)[number];

export interface NodeEdge {
  from: NodeState;
  event: NodeEvent;
  to: NodeState;
  /** The side effect that must succeed before the new state is committed (none: bookkeeping). */
  actor: NodeActor | null;
}

const live: NodeState[] = [
  'provisioned',
  'installed',
  'primary',
  'standby',
  'degraded',
  'fenced',
  'rejoining',
];

export const NODE_EDGES: readonly NodeEdge[] = [
  { from: 'absent', event: 'node.wanted', to: 'provisioned', actor: 'provisionVm' },
  { from: 'provisioned', event: 'machine.reachable', to: 'installed', actor: 'installPostgres' },
  { from: 'installed', event: 'primary.elected', to: 'primary', actor: 'initPrimary' },
  { from: 'installed', event: 'primary.found', to: 'standby', actor: 'cloneStandby' },
  { from: 'installed', event: 'machine.down', to: 'installed', actor: 'startMachine' },
  // The operator died after a clone succeeded: adopt what the world shows.
  { from: 'installed', event: 'standby.found', to: 'standby', actor: null },
  { from: 'installed', event: 'postgres.stopped', to: 'installed', actor: 'restartPostgres' },
  { from: 'standby', event: 'primary.elected', to: 'primary', actor: 'promoteStandby' },
  { from: 'standby', event: 'primary.changed', to: 'standby', actor: 'repointStandby' },
  { from: 'primary', event: 'config.drifted', to: 'primary', actor: 'configureNode' },
  { from: 'standby', event: 'config.drifted', to: 'standby', actor: 'configureNode' },
  { from: 'primary', event: 'probe.failed', to: 'fenced', actor: 'fenceNode' },
  { from: 'standby', event: 'probe.failed', to: 'degraded', actor: null },
  { from: 'primary', event: 'switchover.requested', to: 'rejoining', actor: 'demotePrimary' },
  { from: 'degraded', event: 'machine.down', to: 'rejoining', actor: 'startMachine' },
  { from: 'degraded', event: 'machine.reachable', to: 'standby', actor: 'rejoinStandby' },
  { from: 'fenced', event: 'fence.released', to: 'rejoining', actor: 'startMachine' },
  { from: 'rejoining', event: 'machine.reachable', to: 'standby', actor: 'rejoinStandby' },
  { from: 'rejoining', event: 'machine.down', to: 'rejoining', actor: 'startMachine' },
  // No other node can serve: bring a node's own postgres back in place (a primary stays
  // primary, a standby restarts in recovery), rather than waiting forever for a primary.
  { from: 'primary', event: 'machine.down', to: 'primary', actor: 'startMachine' },
  { from: 'primary', event: 'postgres.stopped', to: 'primary', actor: 'restartPostgres' },
  { from: 'degraded', event: 'postgres.stopped', to: 'standby', actor: 'restartPostgres' },
  { from: 'rejoining', event: 'postgres.stopped', to: 'standby', actor: 'restartPostgres' },
  // A node lost before it ever held data (machine gone while provisioning/installing, or a
  // degraded standby's machine vanished) starts again from nothing.
  ...live.map((from): NodeEdge => ({ from, event: 'machine.vanished', to: 'absent', actor: null })),
  ...live.map((from): NodeEdge => ({ from, event: 'node.unwanted', to: 'deleting', actor: 'fenceNode' })),
  { from: 'deleting', event: 'machine.fenced', to: 'absent', actor: 'deleteMachine' },
  // A machine made for a node that left the spec before its creation was recorded.
  { from: 'absent', event: 'node.unwanted', to: 'deleting', actor: 'fenceNode' },
];
