// Invariant 4: from every state of the node machine, every goal the planner may assign is
// reachable. Walked on the xstate machine itself (xstate/graph), not on the edge table, so
// removing an edge from the machine breaks this test.

import { describe, expect, it } from 'vitest';
import { getShortestPaths } from 'xstate/graph';
import { createMachine } from 'xstate';
import { nodeMachine, snapshotFor, stepNode } from '../../machines/node-machine.js';
import {
  NODE_EDGES,
  NODE_EVENTS,
  NODE_GOALS,
  NODE_STATES,
  type NodeState,
} from '../../machines/node-edges.js';

const allEvents = NODE_EVENTS.map((type) => ({ type }));
/** Reaching a serving goal must not go through removing the node or losing its machine: those
 *  are ways out, not ways back. */
const servingEvents = allEvents.filter((e) => e.type !== 'node.unwanted' && e.type !== 'machine.vanished');

/** States reachable from `from` in `machine`, by its own transition function. */
function reachableStates(machine: typeof nodeMachine, from: NodeState, events = allEvents): Set<string> {
  const paths = getShortestPaths(machine, {
    events,
    fromState: machine.resolveState({ value: from, context: {} }),
  });
  return new Set(paths.map((p) => String(p.state.value)));
}

/** Every (state, goal) pair that cannot be reached. */
function dead(machine: typeof nodeMachine): string[] {
  const problems: string[] = [];
  for (const s of NODE_STATES) {
    const any = reachableStates(machine, s);
    const serving = reachableStates(machine, s, servingEvents);
    for (const g of NODE_GOALS) {
      const ok = g === 'absent' ? any.has(g) : serving.has(g) || s === g;
      if (!ok) problems.push(`${s} cannot reach goal ${g}`);
    }
  }
  return problems;
}

describe('node machine graph', () => {
  it('has every state of the table and no dead end: every state reaches every goal', () => {
    expect(dead(nodeMachine)).toEqual([]);
  });

  it('every state has at least one way out', () => {
    for (const s of NODE_STATES) {
      const snap = snapshotFor(s);
      expect(
        allEvents.some((e) => snap.can(e)),
        `${s} has no outgoing edge`,
      ).toBe(true);
    }
  });

  it('detects a removed edge: most single-edge deletions strand some state', () => {
    // Rebuild the machine without one edge at a time (the test's own mutation check).
    const caught: string[] = [];
    for (const skip of NODE_EDGES) {
      const states: Record<string, { on: Record<string, { target: string }> }> = {};
      for (const s of NODE_STATES) states[s] = { on: {} };
      for (const e of NODE_EDGES) if (e !== skip) states[e.from]!.on[e.event] = { target: e.to };
      const m = createMachine({ id: 'mutant', initial: 'absent', states }) as unknown as typeof nodeMachine;
      if (dead(m).length > 0) caught.push(`${skip.from} --${skip.event}-->`);
    }
    // The edges every recovery depends on must be among them.
    for (const e of [
      'absent --node.wanted-->',
      'fenced --fence.released-->',
      'standby --primary.elected-->',
      'primary --probe.failed-->',
      'deleting --machine.fenced-->',
    ]) {
      expect(caught).toContain(e);
    }
  });

  it('stepping is pure and returns the edge actor', () => {
    expect(stepNode('absent', 'node.wanted')).toEqual({
      from: 'absent',
      to: 'provisioned',
      event: 'node.wanted',
      actor: 'provisionVm',
    });
    expect(stepNode('primary', 'probe.failed')).toEqual({
      from: 'primary',
      to: 'fenced',
      event: 'probe.failed',
      actor: 'fenceNode',
    });
    expect(stepNode('absent', 'probe.failed')).toBeNull();
  });

  it('a failed primary is always fenced before anything else happens to it', () => {
    const out = NODE_EDGES.filter((e) => e.from === 'primary' && e.to !== 'primary');
    for (const e of out) expect(['fenceNode', 'demotePrimary', null]).toContain(e.actor);
  });
});
