// Invariant 4: from every state of the node machine, every goal the planner may assign is
// reachable. Walked on the xstate machine itself (xstate/graph), not on the edge table, so
// removing an edge from the machine breaks this test.

import { describe, expect, it } from 'vitest';
import { getShortestPaths } from 'xstate/graph';
import { createMachine } from 'xstate';
import { nodeMachine, snapshotFor, stepNode } from '../../machines/node-machine.js';
import { NODE_EDGES, NODE_EVENTS, NODE_GOALS, NODE_STATES, type NodeState } from '../../machines/node-edges.js';

const allEvents = NODE_EVENTS.map((type) => ({ type }));

/** Goals reachable from `from` in `machine`, by its own transition function. */
function reachableStates(machine: typeof nodeMachine, from: NodeState): Set<string> {
  const paths = getShortestPaths(machine, { events: allEvents, fromState: machine.resolveState({ value: from, context: {} }) });
  return new Set(paths.map((p) => String(p.state.value)));
}

describe('node machine graph', () => {
  it('has every state of the table and no dead end: every state reaches every goal', () => {
    const problems: string[] = [];
    for (const s of NODE_STATES) {
      const reach = reachableStates(nodeMachine, s);
      for (const g of NODE_GOALS) if (!reach.has(g)) problems.push(`${s} cannot reach goal ${g}`);
    }
    expect(problems).toEqual([]);
  });

  it('every state has at least one way out', () => {
    for (const s of NODE_STATES) {
      const snap = snapshotFor(s);
      expect(allEvents.some((e) => snap.can(e)), `${s} has no outgoing edge`).toBe(true);
    }
  });

  it('detects a removed edge: dropping any edge that the goals depend on is caught', () => {
    // Rebuild the machine without one edge at a time; the reachability check must flag every
    // edge whose loss strands a state (this is the test's own mutation check).
    let caught = 0;
    for (const skip of NODE_EDGES) {
      const states: Record<string, { on: Record<string, { target: string }> }> = {};
      for (const s of NODE_STATES) states[s] = { on: {} };
      for (const e of NODE_EDGES) if (e !== skip) states[e.from]!.on[e.event] = { target: e.to };
      const m = createMachine({ id: 'mutant', initial: 'absent', states }) as unknown as typeof nodeMachine;
      const stranded = NODE_STATES.some((s) => {
        const reach = reachableStates(m, s);
        return NODE_GOALS.some((g) => !reach.has(g));
      });
      if (stranded) caught++;
    }
    // The edges on the only path to a goal (absent -> provisioned, for one) must be caught.
    expect(caught).toBeGreaterThan(0);
    const removed = NODE_EDGES.find((e) => e.from === 'absent' && e.event === 'node.wanted')!;
    const states: Record<string, { on: Record<string, { target: string }> }> = {};
    for (const s of NODE_STATES) states[s] = { on: {} };
    for (const e of NODE_EDGES) if (e !== removed) states[e.from]!.on[e.event] = { target: e.to };
    const mutant = createMachine({ id: 'mutant', initial: 'absent', states }) as unknown as typeof nodeMachine;
    expect(reachableStates(mutant, 'absent').has('primary')).toBe(false);
  });

  it('stepping is pure and returns the edge actor', () => {
    expect(stepNode('absent', 'node.wanted')).toEqual({ from: 'absent', to: 'provisioned', event: 'node.wanted', actor: 'provisionVm' });
    expect(stepNode('primary', 'probe.failed')).toEqual({ from: 'primary', to: 'fenced', event: 'probe.failed', actor: 'fenceNode' });
    expect(stepNode('absent', 'probe.failed')).toBeNull();
  });

  it('a failed primary is always fenced before anything else happens to it', () => {
    const out = NODE_EDGES.filter((e) => e.from === 'primary' && e.to !== 'primary');
    for (const e of out) expect(['fenceNode', 'demotePrimary', null]).toContain(e.actor);
  });
});
