// Jobs: long actions (provision, install, initdb, clone, rewind, removal) run while the loop goes
// on. A node whose job runs is busy: no other step is planned for it, except the ones that take
// the node away anyway (fence, removal), so a failover never waits for a clone. A job that can
// no longer succeed as meant is cancelled, and its step is planned afresh.

import { clusterAction, wait, type PlanContext } from './context.js';
import type { RuleId } from './rule-ids.js';
import type { JobView, Verdict } from './types.js';

/** Rules that act on a node even while its job runs: they take the node away (its job is
 *  cancelled by the reconciler before the step). */
export const PREEMPTS_JOBS: ReadonlySet<RuleId> = new Set<RuleId>([
  'delete.fence',
  'delete.remove-machine',
  'failover.fence-primary',
  'scale.fence',
  'scale.remove-machine',
]);

export function jobOf(ctx: PlanContext, node: string): JobView | undefined {
  return ctx.input.jobs?.[node];
}

/** The node's job that a rule must wait for: any, except that a rule taking the node away
 *  pre-empts it; a removal already running is never pre-empted (its own rule would cancel it
 *  and start it again, pass after pass, and a slow removal would never end). */
export function blockingJob(ctx: PlanContext, node: string, ruleId: RuleId): JobView | undefined {
  const job = jobOf(ctx, node);
  if (!job || (PREEMPTS_JOBS.has(ruleId) && job.kind !== 'deleteMachine')) return undefined;
  // a failed repoint or rewind cooling down must not hold up the promotion of that standby
  if (job.state === 'cooling' && PROMOTIONS.has(ruleId)) return undefined;
  return job;
}

const PROMOTIONS: ReadonlySet<RuleId> = new Set<RuleId>([
  'failover.promote',
  'switchover.promote',
  'failover.adopt-promoted',
]);

export function describeJob(node: string, job: JobView): string {
  const what = `${node}: job #${job.id} (${job.kind})`;
  if (job.state === 'cooling') return `${what} failed; cooling down before it is tried again`;
  const progress =
    job.totalBytes && job.doneBytes !== undefined
      ? `, ${Math.min(100, Math.floor((100 * job.doneBytes) / job.totalBytes))}% of ${mib(job.totalBytes)}`
      : job.doneBytes
        ? `, ${mib(job.doneBytes)} done`
        : '';
  return `${what} running${progress}`;
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

/** A running job that cannot succeed as meant: it follows a primary that is no longer the
 *  primary (fenced, or a failover happened meanwhile), or it passed its deadline. */
export function cancelStaleJob(ctx: PlanContext): Verdict | undefined {
  for (const [node, job] of Object.entries(ctx.input.jobs ?? {})) {
    if (job.state !== 'running' || job.cancelling) continue;
    const cancel = (why: string) =>
      clusterAction({ type: 'cancelJob', jobId: job.id, node }, `${describeJob(node, job)}: ${why}`);
    if (ctx.input.now >= job.deadlineAt) {
      return cancel('it passed its deadline; cancelled, to be tried again');
    }
    // the primary it follows was fenced (or replaced): it cannot finish, and it must not hold
    // up the promotion that follows (a standby being repointed may be the best candidate)
    if (job.source && job.source !== ctx.primary) {
      const now = ctx.primary ? `${ctx.primary} is the primary now` : 'there is no primary now';
      return cancel(`it follows ${job.source}, but ${now}; cancelled`);
    }
  }
  return undefined;
}

/** Nothing else to do while jobs run: wait for them (the loop is woken when one settles). A node
 *  that left the spec and whose job failed (its removal) is not done with either: no other rule
 *  waits for it, so the cluster would be called converged with its machine still there. */
export function waitForJobs(ctx: PlanContext): Verdict | undefined {
  const pending = Object.entries(ctx.input.jobs ?? {}).filter(
    ([n, j]) => j.state === 'running' || !ctx.specNames.includes(n),
  );
  if (pending.length === 0) return undefined;
  const cooledAt = Math.min(...pending.map(([, j]) => (j.state === 'running' ? Infinity : j.deadlineAt)));
  const requeueAfterMs = pending.some(([, j]) => j.state === 'running')
    ? 1_000
    : Math.max(200, cooledAt - ctx.input.now);
  return wait(pending.map(([n, j]) => describeJob(n, j)).join('; '), pending[0]![0], requeueAfterMs);
}
