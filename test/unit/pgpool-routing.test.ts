import { describe, expect, it } from 'vitest';
import type { PoolBackend } from '../../src/observe/types.js';
import {
  NO_ANSWER_BACKOFF_MS,
  POLL_MS,
  RESEND_AFTER_MS,
  knownReach,
  mustProbePrimary,
  nextRoutingStep,
  primaryGoneSince,
  requestKey,
  type PoolLook,
  type RoutingClock,
  type RoutingGoal,
} from '../../src/drivers/pgpool/routing.js';
import { PoolClusterState } from '../../src/drivers/pgpool/state.js';

const nodes = ['pg01', 'pg02', 'pg03'];
const goal = (
  primary: string | null,
  failed: string[] = [],
  standbys: RoutingGoal['standbys'] = 'attached',
): RoutingGoal => ({ nodes, primary, failed, standbys });

const b = (name: string, status: PoolBackend['status'], role: PoolBackend['role'] = 'standby') => ({
  name,
  status,
  role,
});

const NOW = 100_000;
const clock = (over: Partial<RoutingClock> = {}): RoutingClock => ({
  now: NOW,
  deadline: NOW + 6000,
  restarted: false,
  primaryGoneSince: null,
  primaryGoneLimitMs: 1000,
  sent: new Map(),
  ...over,
});

const look = (backends: PoolBackend[] | null, reach: boolean[] = [true, true, true]): PoolLook =>
  backends ? { backends, reach } : { backends: null, error: 'connection refused', reach: [] };

const routed = [b('pg01', 'up', 'primary'), b('pg02', 'up'), b('pg03', 'up')];

describe('nextRoutingStep', () => {
  it('is done when pgpool routes to the primary and holds up exactly the nodes that answer', () => {
    expect(nextRoutingStep(goal('pg01'), look(routed), clock())).toEqual({
      send: [],
      next: { kind: 'done' },
      why: '',
    });
    const pg03Down = [b('pg01', 'up', 'primary'), b('pg02', 'up'), b('pg03', 'down')];
    expect(nextRoutingStep(goal('pg01'), look(pg03Down, [true, true, false]), clock()).next).toEqual({
      kind: 'done',
    });
  });

  it('waits longer after a look pgpool did not answer, and says why', () => {
    const step = nextRoutingStep(goal('pg01'), look(null), clock());
    expect(step.send).toEqual([]);
    expect(step.next).toEqual({ kind: 'wait', ms: NO_ANSWER_BACKOFF_MS + POLL_MS });
    expect(step.why).toBe('pgpool does not answer: connection refused');
  });

  it('promotes the wanted primary when pgpool holds it up but routes writes elsewhere', () => {
    const backends = [b('pg01', 'up', 'primary'), b('pg02', 'up'), b('pg03', 'up')];
    const step = nextRoutingStep(goal('pg02'), look(backends), clock());
    expect(step.send).toEqual([{ kind: 'promote', node: 'pg02', nodeId: 1 }]);
    expect(step.next).toEqual({ kind: 'wait', ms: POLL_MS });
    expect(step.why).toBe('pgpool sees pg01:up/primary pg02:up/standby pg03:up/standby, want primary pg02');
  });

  it('attaches the wanted primary when pgpool holds it down', () => {
    const backends = [b('pg01', 'down', 'standby'), b('pg02', 'down'), b('pg03', 'up', 'primary')];
    const step = nextRoutingStep(goal('pg02'), look(backends, [false, true, true]), clock());
    expect(step.send).toEqual([{ kind: 'attach', node: 'pg02', nodeId: 1 }]);
  });

  it('sends nothing for a wanted primary whose postgres does not answer, nor for one not in the spec', () => {
    const backends = [b('pg01', 'up', 'primary'), b('pg02', 'up'), b('pg03', 'up')];
    const silent = nextRoutingStep(goal('pg02'), look(backends, [true, false, true]), clock());
    expect(silent.send).toEqual([]);
    expect(silent.next).toEqual({ kind: 'wait', ms: POLL_MS });
    const unknown = nextRoutingStep(goal('pg09'), look(backends), clock());
    expect(unknown.send).toEqual([]);
    expect(unknown.next.kind).toBe('wait');
  });

  it('leaves the other nodes alone until the primary is routed', () => {
    const backends = [b('pg01', 'up', 'standby'), b('pg02', 'up'), b('pg03', 'down')];
    const step = nextRoutingStep(goal('pg01'), look(backends, [true, false, true]), clock());
    expect(step.send).toEqual([{ kind: 'promote', node: 'pg01', nodeId: 0 }]);
  });

  it('attaches a node held down whose postgres answers and detaches one held up that does not', () => {
    const backends = [b('pg01', 'up', 'primary'), b('pg02', 'down'), b('pg03', 'up')];
    const step = nextRoutingStep(goal('pg01'), look(backends, [true, true, false]), clock());
    expect(step.send).toEqual([
      { kind: 'attach', node: 'pg02', nodeId: 1 },
      { kind: 'detach', node: 'pg03', nodeId: 2 },
    ]);
    expect(step.next).toEqual({ kind: 'wait', ms: POLL_MS });
  });

  it('with load balancing off holds only the primary: detaches standbys, attaches none, probes none', () => {
    const backends = [b('pg01', 'up', 'primary'), b('pg02', 'down'), b('pg03', 'up')];
    const g = goal('pg01', [], 'detached');
    expect(knownReach(g, backends, undefined)).toEqual([true, false, false]);
    const step = nextRoutingStep(g, look(backends, [true, false, false]), clock());
    expect(step.send).toEqual([{ kind: 'detach', node: 'pg03', nodeId: 2 }]);
    const settled = [b('pg01', 'up', 'primary'), b('pg02', 'down'), b('pg03', 'down')];
    expect(nextRoutingStep(g, look(settled, [true, false, false]), clock()).next).toEqual({ kind: 'done' });
    // a primary held down is still attached
    const primaryDown = [b('pg01', 'down'), b('pg02', 'down'), b('pg03', 'down')];
    const again = nextRoutingStep(
      g,
      { ...look(primaryDown, [true, false, false]), primaryAnswers: true },
      clock(),
    );
    expect(again.send).toEqual([{ kind: 'attach', node: 'pg01', nodeId: 0 }]);
  });

  it('never attaches a node pgpool marks unused', () => {
    const backends = [b('pg01', 'up', 'primary'), b('pg02', 'unused'), b('pg03', 'up')];
    const step = nextRoutingStep(goal('pg01'), look(backends), clock());
    expect(step.send).toEqual([]);
    expect(step.next.kind).toBe('wait');
  });

  it('routes the other nodes when no primary is wanted', () => {
    const backends = [b('pg01', 'down'), b('pg02', 'up'), b('pg03', 'up')];
    expect(nextRoutingStep(goal(null), look(backends, [true, true, true]), clock()).send).toEqual([
      { kind: 'attach', node: 'pg01', nodeId: 0 },
    ]);
    expect(nextRoutingStep(goal(null), look(backends, [false, true, true]), clock()).next).toEqual({
      kind: 'done',
    });
  });

  it('does not repeat a request within RESEND_AFTER_MS, and repeats it after', () => {
    const backends = [b('pg01', 'up', 'primary'), b('pg02', 'up'), b('pg03', 'up')];
    const key = requestKey({ kind: 'promote', node: 'pg02' });
    const recent = clock({ sent: new Map([[key, NOW - RESEND_AFTER_MS]]) });
    expect(nextRoutingStep(goal('pg02'), look(backends), recent).send).toEqual([]);
    const old = clock({ sent: new Map([[key, NOW - RESEND_AFTER_MS - 1]]) });
    expect(nextRoutingStep(goal('pg02'), look(backends), old).send).toHaveLength(1);
  });

  it('restarts pgpool once past the deadline, still sending what is due', () => {
    const backends = [b('pg01', 'up', 'primary'), b('pg02', 'up'), b('pg03', 'up')];
    const step = nextRoutingStep(goal('pg02'), look(backends), clock({ deadline: NOW - 1 }));
    expect(step.next).toEqual({ kind: 'restart' });
    expect(step.send).toEqual([{ kind: 'promote', node: 'pg02', nodeId: 1 }]);
    expect(nextRoutingStep(goal('pg01'), look(null), clock({ deadline: NOW - 1 })).next).toEqual({
      kind: 'restart',
    });
    expect(nextRoutingStep(goal('pg02'), look(backends), clock({ deadline: NOW })).next.kind).toBe('wait');
  });

  it('gives up past the deadline after a restart', () => {
    const step = nextRoutingStep(goal('pg01'), look(null), clock({ deadline: NOW - 1, restarted: true }));
    expect(step.next).toEqual({ kind: 'give-up', cause: 'stuck' });
    expect(step.why).toBe('pgpool does not answer: connection refused');
  });

  it('gives up at once when the wanted primary stays silent beyond the limit', () => {
    const gone = clock({ primaryGoneSince: NOW - 1001 });
    expect(nextRoutingStep(goal('pg01'), look(null), gone)).toEqual({
      send: [],
      next: { kind: 'give-up', cause: 'primary-silent' },
      why: 'the primary does not answer',
    });
    const recently = clock({ primaryGoneSince: NOW - 1000 });
    expect(nextRoutingStep(goal('pg01'), look(null), recently).next.kind).toBe('wait');
  });
});

describe('what the routing loop probes', () => {
  it('probes the wanted primary unless pgpool routes to it', () => {
    expect(mustProbePrimary(goal('pg01'), routed)).toBe(false);
    expect(mustProbePrimary(goal('pg02'), routed)).toBe(true);
    expect(mustProbePrimary(goal('pg01'), null)).toBe(true);
    expect(mustProbePrimary(goal(null), null)).toBe(false);
    expect(mustProbePrimary(goal('pg09'), null)).toBe(false);
  });

  it('probes only the nodes pgpool holds down and the operator did not see fail', () => {
    const backends = [b('pg01', 'up', 'primary'), b('pg02', 'down'), b('pg03', 'up')];
    expect(knownReach(goal('pg01'), backends, undefined)).toEqual([true, undefined, true]);
    expect(knownReach(goal('pg01', ['pg03']), backends, undefined)).toEqual([true, undefined, false]);
    expect(knownReach(goal('pg01', ['pg02']), backends, undefined)).toEqual([true, false, true]);
    // the primary's own probe wins; a failed primary is not taken as unreachable
    expect(knownReach(goal('pg02', ['pg02']), backends, true)).toEqual([true, true, true]);
    expect(knownReach(goal('pg02', ['pg02']), backends, undefined)).toEqual([true, undefined, true]);
    expect(knownReach(goal('pg03'), backends, false)).toEqual([true, undefined, false]);
  });

  it('tracks since when the primary has been silent', () => {
    const silent: PoolLook = { backends: null, reach: [], primaryAnswers: false };
    expect(primaryGoneSince(null, silent, NOW)).toBe(NOW);
    expect(primaryGoneSince(NOW - 500, silent, NOW)).toBe(NOW - 500);
    expect(primaryGoneSince(NOW - 500, { ...silent, primaryAnswers: true }, NOW)).toBeNull();
    expect(primaryGoneSince(NOW - 500, { ...silent, primaryAnswers: undefined }, NOW)).toBeNull();
  });
});

describe('PoolClusterState', () => {
  it('takes a promote as pgpool carries it out: the node primary, every other one held down', () => {
    const s = new PoolClusterState();
    s.remember(routed, 'h');
    expect(s.heldDown('pg02')).toBe(false);
    s.markPromoted('pg02');
    expect(s.view?.primary).toBe('pg02');
    expect(s.heldDown('pg01')).toBe(true);
    expect(s.heldDown('pg02')).toBe(false);
    expect(s.upBackends()).toEqual(['pg02']);
  });

  it('takes a detach as the node held down and no primary', () => {
    const s = new PoolClusterState();
    s.remember([b('pg01', 'up', 'primary'), b('pg02', 'down'), b('pg03', 'down')], 'h');
    s.markDetached('pg01');
    expect(s.view).toMatchObject({ primary: null, reachable: true });
    expect(s.upBackends()).toEqual([]);
  });

  it('shows a node this pool host has cut off as down until it is routed back', () => {
    const s = new PoolClusterState();
    const view = s.remember(routed, 'h');
    expect(s.shownWithCutOffs(view)).toBe(view);
    s.cutOffNodes.add('pg02'); // a dead standby: pgpool still holds it up
    const standbyCut = s.shownWithCutOffs(view);
    expect(standbyCut.primary).toBe('pg01');
    expect(standbyCut.backends.map((x) => x.status)).toEqual(['up', 'down', 'up']);
    s.cutOffNodes.add('pg01');
    const shown = s.shownWithCutOffs(view);
    expect(shown.primary).toBeNull();
    expect(shown.backends.map((x) => x.status)).toEqual(['down', 'down', 'up']);
    expect(s.upBackends()).toEqual(['pg01', 'pg02', 'pg03']);
  });
  it('keeps a node from sessions by a route alone only while a lower-numbered node serves', () => {
    const s = new PoolClusterState();
    s.remember(routed, 'h'); // pg01 primary, pg02 and pg03 standbys, all up
    expect(s.mainStaysWithout('pg01')).toBe(false); // pgpool's main node: a skip moves it
    expect(s.mainStaysWithout('pg02')).toBe(true);
    expect(s.mainStaysWithout('pg03')).toBe(true);
    s.cutOffNodes.add('pg01'); // cut off: it serves no session, so it keeps nothing in place
    expect(s.mainStaysWithout('pg02')).toBe(false);
    expect(s.mainStaysWithout('pg03')).toBe(true);
    s.remember([b('pg01', 'down'), b('pg02', 'up', 'primary'), b('pg03', 'up')], 'h');
    s.cutOffNodes.clear();
    expect(s.mainStaysWithout('pg02')).toBe(false);
    expect(s.mainStaysWithout('pg03')).toBe(true);
    expect(s.mainStaysWithout('pg09')).toBe(false);
  });

  it("holds pgpool's first node up behind an alias to a standby, never to the primary", () => {
    const s = new PoolClusterState();
    s.remember(routed, 'h'); // pg01 primary, pg02 and pg03 standbys, all up
    expect(s.aliasTargetFor('pg01', 'pg02')).toBe('pg03');
    expect(s.aliasTargetFor('pg01', 'pg03')).toBe('pg02');
    s.cutOffNodes.add('pg03'); // a standby cut off serves nothing in its place
    expect(s.aliasTargetFor('pg01', 'pg02')).toBeUndefined();
    s.cutOffNodes.clear();
    s.remember([b('pg01', 'up', 'primary'), b('pg02', 'up'), b('pg03', 'down')], 'h');
    expect(s.aliasTargetFor('pg01', 'pg02')).toBeUndefined(); // two nodes: no standby besides
    s.remember([b('pg01', 'up'), b('pg02', 'up', 'primary'), b('pg03', 'up')], 'h');
    expect(s.aliasTargetFor('pg03', 'pg01')).toBeUndefined(); // pg02, pgpool's primary, is never one
  });

  it("trusts an alias to have kept pgpool's main node only while no other node moved", () => {
    const s = new PoolClusterState();
    s.remember(routed, 'h');
    s.cuttingOff('pg01');
    s.aliased('pg01', true);
    expect(s.cutOffNodes.has('pg01')).toBe(true); // shown down, routing brings it back
    s.markDetached('pg01'); // its own detach, the alias set first: still whole
    expect(s.aliasIntact('pg01')).toBe(true);
    s.cuttingOff('pg03'); // the target cut off: connects to pg01 fail, a child skips it
    expect(s.aliasIntact('pg01')).toBe(false);

    s.aliased('pg01', true);
    s.markDetached('pg02');
    expect(s.aliasIntact('pg01')).toBe(false);
    s.aliased('pg01', true);
    s.markPromoted('pg03');
    expect(s.aliasIntact('pg01')).toBe(false);
    s.aliased('pg01', false); // left by an earlier operator process: the target unknown
    expect(s.aliasIntact('pg01')).toBe(false);
    s.aliased('pg01', true);
    s.routedBackDone(['pg01'], s.needRouteBack(['pg01']).token);
    expect(s.aliasIntact('pg01')).toBe(false);
    expect(s.cutOffNodes.has('pg01')).toBe(false);
  });

  it('reads the rules in place again after a command setting one went unanswered', () => {
    const s = new PoolClusterState();
    const first = s.rulesReadStarts();
    s.rulesReadDone(first);
    expect(s.routesRead).toBe(true);
    const during = s.rulesReadStarts();
    s.rulesUnknown(); // an alias command timed out while a read ran: that read proves nothing
    s.rulesReadDone(during);
    expect(s.routesRead).toBe(false);
    s.rulesReadDone(s.rulesReadStarts());
    expect(s.routesRead).toBe(true);
    // what it finds must be routed back before the node is used, even one routed back before
    s.routedBackDone(['pg01'], s.needRouteBack(['pg01']).token);
    s.foundCutOff('pg01', true);
    expect(s.cutOffNodes.has('pg01')).toBe(true);
    expect(s.aliasIntact('pg01')).toBe(false);
    expect(s.needRouteBack(['pg01']).nodes).toEqual(['pg01']);
  });

  it('names the old primary to detach when a promote would also mark a standby down', () => {
    const s = new PoolClusterState();
    s.remember(routed, 'h');
    expect(s.promoteWouldDrop('pg02')).toBe('pg01'); // pg03 would be marked down
    expect(s.promoteWouldDrop('pg01')).toBeUndefined(); // routed there already
    s.remember([b('pg01', 'up', 'primary'), b('pg02', 'up'), b('pg03', 'down')], 'h');
    expect(s.promoteWouldDrop('pg02')).toBeUndefined(); // nobody else to keep: promote
    expect(s.promoteWouldDrop('pg03')).toBeUndefined(); // held down: attached instead
    s.remember([b('pg01', 'down', 'primary'), b('pg02', 'up'), b('pg03', 'up')], 'h');
    expect(s.promoteWouldDrop('pg02')).toBeUndefined(); // no primary to detach
  });

  it('routes back to a node once after each cut-off, not on every routing', () => {
    const s = new PoolClusterState();
    const first = s.needRouteBack(['pg01', 'pg02']);
    expect(first.nodes).toEqual(['pg01', 'pg02']); // never checked by this process
    s.routedBackDone(first.nodes, first.token);
    expect(s.needRouteBack(['pg01', 'pg02']).nodes).toEqual([]);
    s.cuttingOff('pg01');
    s.cutOffNodes.add('pg01');
    const again = s.needRouteBack(['pg01', 'pg02']);
    expect(again.nodes).toEqual(['pg01']);
    s.routedBackDone(again.nodes, again.token);
    expect(s.cutOffNodes.has('pg01')).toBe(false);
    expect(s.needRouteBack(['pg01']).nodes).toEqual([]);
  });

  it('does not count a route back that overlapped a cut-off', () => {
    const s = new PoolClusterState();
    const due = s.needRouteBack(['pg01']);
    s.cuttingOff('pg01'); // a fence's cut-off while the route back ran
    s.routedBackDone(due.nodes, due.token);
    expect(s.needRouteBack(['pg01']).nodes).toEqual(['pg01']);
  });
});
