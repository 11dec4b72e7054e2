// The planner with jobs as input: a busy node gets no other step (but a fence), a clone that
// follows a fenced or replaced primary is cancelled, a failover never waits for a clone, and
// nothing converges while a job runs.

import { describe, expect, it } from 'vitest';
import { plan } from '../../src/plan/plan.js';
import type { JobView } from '../../src/plan/types.js';
import { healthy3, input, node, off, primaryPg, states3 } from '../helpers/plan-input.js';

const clone = (over: Partial<JobView> = {}): JobView => ({
  id: 7,
  kind: 'cloneStandby',
  state: 'running',
  source: 'pg01',
  deadlineAt: 10_000_000,
  ...over,
});

describe('plan with jobs', () => {
  it('plans nothing else for a node whose clone runs, and waits for it instead of converging', () => {
    const nodes = { ...healthy3(), pg03: node('pg03', { postgres: null }) };
    const states = { ...states3, pg03: 'installed' as const };
    const without = plan(input(states, nodes));
    expect(without.decision).toMatchObject({ kind: 'act', node: 'pg03', ruleId: 'node.clone-standby' });
    const r = plan(input(states, nodes, { jobs: { pg03: clone({ doneBytes: 50 * 2 ** 20 }) } }));
    expect(r.decision).toMatchObject({ kind: 'wait', ruleId: 'job.running', node: 'pg03' });
    expect(r.decision.reason).toContain('job #7 (cloneStandby) running, 50 MiB done');
  });

  it('fences a failed primary while a standby clones from it, then cancels the clone', () => {
    const dead = { ...off, misses: 3 };
    const nodes = { ...healthy3(), pg01: node('pg01', dead), pg03: node('pg03', { postgres: null }) };
    const states = { ...states3, pg03: 'installed' as const };
    const jobs = { pg03: clone() };
    const fence = plan(input(states, nodes, { jobs }));
    expect(fence.decision).toMatchObject({ kind: 'act', node: 'pg01', ruleId: 'failover.fence-primary' });
    const afterFence = plan(input({ ...states, pg01: 'fenced' }, nodes, { jobs }));
    expect(afterFence.decision).toMatchObject({
      kind: 'cluster',
      ruleId: 'job.cancel',
      action: { type: 'cancelJob', jobId: 7, node: 'pg03' },
    });
    expect(afterFence.decision.reason).toContain('there is no primary now');
    // once cancellation is under way the promotion goes ahead
    const cancelling = { pg03: clone({ cancelling: true }) };
    const promote = plan(input({ ...states, pg01: 'fenced' }, nodes, { jobs: cancelling }));
    expect(promote.decision).toMatchObject({ kind: 'act', node: 'pg02', ruleId: 'failover.promote' });
  });

  it('does not converge while the removal of a node that left the spec cools down after a failure', () => {
    const states = { ...states3, pg04: 'deleting' as const };
    const removal: JobView = { id: 9, kind: 'deleteMachine', state: 'cooling', deadlineAt: 30_000 };
    const r = plan(input(states, healthy3(), { jobs: { pg04: removal }, now: 10_000 }));
    expect(r.decision).toMatchObject({
      kind: 'wait',
      ruleId: 'job.running',
      node: 'pg04',
      requeueAfterMs: 20_000,
    });
    expect(r.decision.reason).toContain('failed; cooling down');
  });

  it('cancels a clone from an old primary once another node is primary', () => {
    const nodes = {
      pg01: node('pg01', { ...off }),
      pg02: node('pg02', { postgres: primaryPg() }),
      pg03: node('pg03', { postgres: null }),
    };
    const states = { pg01: 'fenced', pg02: 'primary', pg03: 'installed' } as const;
    const r = plan(input(states, nodes, { jobs: { pg03: clone() } }));
    expect(r.decision).toMatchObject({ ruleId: 'job.cancel', action: { type: 'cancelJob', jobId: 7 } });
    expect(r.decision.reason).toContain('pg02 is the primary now');
  });

  it('cancels a job past its deadline', () => {
    const nodes = { ...healthy3(), pg03: node('pg03', { postgres: null }) };
    const states = { ...states3, pg03: 'installed' as const };
    const r = plan(input(states, nodes, { now: 500, jobs: { pg03: clone({ deadlineAt: 400 }) } }));
    expect(r.decision).toMatchObject({ ruleId: 'job.cancel' });
    expect(r.decision.reason).toContain('deadline');
  });

  it('looks at a node cooling down after a failed job again when its cooling ends', () => {
    const nodes = { ...healthy3(), pg03: node('pg03', { postgres: null }) };
    const states = { ...states3, pg03: 'installed' as const };
    const cooling = clone({ state: 'cooling', deadlineAt: 30_000 });
    const r = plan(input(states, nodes, { now: 1_000, jobs: { pg03: cooling } }));
    expect(r.decision.kind).toBe('wait');
    expect(r.decision).not.toMatchObject({ kind: 'done' });
    const later = plan(input(states, nodes, { now: 31_000, jobs: {} }));
    expect(later.decision).toMatchObject({ kind: 'act', node: 'pg03', ruleId: 'node.clone-standby' });
  });

  it('runs other nodes’ steps alongside a busy node', () => {
    const nodes = {
      ...healthy3(),
      pg02: node('pg02', { postgres: null }),
      pg03: node('pg03', { postgres: null }),
    };
    const states = { ...states3, pg02: 'installed', pg03: 'installed' } as const;
    const r = plan(input(states, nodes, { jobs: { pg02: clone() } }));
    expect(r.decision).toMatchObject({ kind: 'act', node: 'pg03', ruleId: 'node.clone-standby' });
    expect(r.also ?? []).toEqual([]);
  });
});

describe('plan with a node cooling down', () => {
  it('promotes the best standby even while a failed job of its cools down', () => {
    const dead = { ...off, misses: 3 };
    const nodes = { ...healthy3(), pg01: node('pg01', dead) };
    const states = { ...states3, pg01: 'fenced' as const };
    const cooling: JobView = { id: 9, kind: 'repointStandby', state: 'cooling', deadlineAt: 30_000 };
    const r = plan(input(states, nodes, { now: 1_000, jobs: { pg02: cooling, pg03: cooling } }));
    expect(r.decision).toMatchObject({ kind: 'act', ruleId: 'failover.promote' });
  });
});
