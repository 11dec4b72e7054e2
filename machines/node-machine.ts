// The node statechart in xstate v5, built from the edge table. Pure: stepping it with
// `transition` performs nothing; the actions it returns name the actor the reconciler runs.

import { createMachine, initialTransition, transition, type AnyMachineSnapshot } from 'xstate';
import { NODE_EDGES, NODE_STATES, type NodeActor, type NodeEvent, type NodeState } from './node-edges.js';

function buildStates() {
  const states: Record<string, { on: Record<string, { target: string; actions: { type: string }[] }> }> = {};
  for (const s of NODE_STATES) states[s] = { on: {} };
  for (const e of NODE_EDGES) {
    const state = states[e.from]!;
    if (state.on[e.event]) throw new Error(`duplicate edge ${e.from} --${e.event}-->`);
    state.on[e.event] = { target: e.to, actions: e.actor ? [{ type: e.actor }] : [] };
  }
  return states;
}

export const nodeMachine = createMachine({
  id: 'node',
  initial: 'absent',
  states: buildStates(),
});

export type NodeSnapshot = AnyMachineSnapshot;

export function snapshotFor(state: NodeState): NodeSnapshot {
  return nodeMachine.resolveState({ value: state, context: {} });
}

export function initialNodeSnapshot(): NodeSnapshot {
  return initialTransition(nodeMachine)[0];
}

export interface Step {
  from: NodeState;
  to: NodeState;
  event: NodeEvent;
  actor: NodeActor | null;
}

/** Step the machine purely. Returns null when the event is not legal in that state (the
 *  planner sent a missing edge: a bug the reconciler logs as internal). */
export function stepNode(state: NodeState, event: NodeEvent): Step | null {
  const snap = snapshotFor(state);
  if (!snap.can({ type: event })) return null;
  const [next, actions] = transition(nodeMachine, snap, { type: event });
  const actor = (actions.find((a) => typeof a.type === 'string')?.type ?? null) as NodeActor | null;
  return { from: state, to: next.value as NodeState, event, actor };
}
