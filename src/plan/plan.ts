// The monitor: a pure, synchronous function from (spec, fresh observation, stored node states)
// to ONE decision with a reason and a rule id. It never performs anything; the reconciler steps
// the node machine with the decision's event and runs the edge's actor.

import { buildContext, holdsData, type PlanContext } from './context.js';
import type { RuleId } from './rule-ids.js';
import { NODE_RULES, RULES, type NodeRule, type Step } from './rules.js';
import { blockingJob, describeJob, jobOf } from './jobs.js';
import type { Decision, NodeDecision, PlanInput, PlanResult, Verdict } from './types.js';

export { REQUEUE, healthy } from './context.js';
export { parseSyncNames } from './sync.js';

export function plan(input: PlanInput): PlanResult {
  const ctx = buildContext(input);
  for (const step of RULES) {
    const decided = decideStep(ctx, step);
    if (!decided) continue;
    const { decision, also } = decided;
    return {
      decision,
      ...(also && also.length > 0 ? { also } : {}),
      goals: ctx.goals,
      primary: ctx.primary,
      phase: phaseOf(ctx, decision),
    };
  }
  // cluster.converged, the last rule, always decides
  throw new Error('plan: no rule decided');
}

interface Decided {
  decision: Decision;
  also?: NodeDecision[] | undefined;
}

function stamp(verdict: Verdict, ruleId: RuleId): Decided {
  const { also, setUpMeanwhile: _, ...rest } = verdict;
  return { decision: { ...rest, ruleId } as Decision, also };
}

/** Node-local set-up steps (provision, install) of the nodes not installed yet: they may run
 *  while the cluster waits for something else, since none of them makes a primary. */
function setUpSteps(ctx: PlanContext): NodeDecision[] {
  return ctx.specNames
    .filter((n) => ctx.state(n) === 'absent' || ctx.state(n) === 'provisioned')
    .map((n) => firstForNode(ctx, NODE_RULES, n))
    .filter((d) => d?.parallel && d.decision.kind === 'act')
    .map((d) => d!.decision as NodeDecision);
}

function decideStep(ctx: PlanContext, step: Step): Decided | undefined {
  if ('eachNode' in step) return decideEachNode(ctx, step.eachNode);
  if ('eachStray' in step) {
    for (const n of ctx.strayNames) {
      const first = firstForNode(ctx, step.eachStray, n);
      if (first) return { decision: first.decision };
    }
    return undefined;
  }
  const verdict = step.decide(ctx);
  if (!verdict) return undefined;
  const job = verdict.kind === 'act' ? blockingJob(ctx, verdict.node, step.id) : undefined;
  if (job && verdict.kind === 'act') {
    // the node is busy with its job: its next step waits for the job's outcome
    const reason = `${describeJob(verdict.node, job)}; then: ${verdict.reason}`;
    // a cooling node is looked at again when its cooling ends; a running job wakes the loop
    const requeueAfterMs = job.state === 'cooling' ? Math.max(200, job.deadlineAt - ctx.input.now) : 1_000;
    return { decision: { kind: 'wait', node: verdict.node, reason, requeueAfterMs, ruleId: 'job.running' } };
  }
  const decided = stamp(verdict, step.id);
  if (verdict.kind === 'wait' && verdict.setUpMeanwhile) {
    const also = setUpSteps(ctx);
    if (also.length > 0) decided.also = also;
  }
  return decided;
}

function firstForNode(ctx: PlanContext, rules: readonly NodeRule[], n: string) {
  const busy = jobOf(ctx, n) !== undefined;
  for (const rule of rules) {
    // a busy node's only steps are the ones that take it away (its job is cancelled first)
    if (busy && blockingJob(ctx, n, rule.id)) continue;
    const verdict = rule.decide(ctx, n);
    if (verdict) return { decision: stamp(verdict, rule.id).decision, parallel: !!rule.parallel };
  }
  return undefined;
}

/** Per-node convergence in spec order. Actions that touch only their own node (provision,
 *  install, clone, restart, rewind, reconfigure a standby) on several nodes run together, one per
 *  node: bring-up and rejoin do not wait for each other. Never on the primary. */
function decideEachNode(ctx: PlanContext, rules: readonly NodeRule[]): Decided | undefined {
  for (const [i, n] of ctx.specNames.entries()) {
    const first = firstForNode(ctx, rules, n);
    if (!first) continue;
    const alone = !first.parallel || n === ctx.primary || first.decision.kind !== 'act';
    if (alone) return { decision: first.decision };
    const also = ctx.specNames
      .slice(i + 1)
      .filter((x) => x !== ctx.primary)
      .map((x) => firstForNode(ctx, rules, x))
      .filter((d) => d?.parallel && d.decision.kind === 'act')
      .map((d) => d!.decision as NodeDecision);
    return { decision: first.decision, also };
  }
  return undefined;
}

function phaseOf(ctx: PlanContext, d: Decision): PlanResult['phase'] {
  if (ctx.input.deletionRequested) return d.kind === 'done' ? 'Deleted' : 'Deleting';
  if (d.kind === 'done') return 'Healthy';
  if (d.ruleId.startsWith('failover.')) return 'FailingOver';
  if (d.ruleId.startsWith('switchover.')) return 'SwitchingOver';
  const everStarted = ctx.specNames.some((n) => ctx.state(n) === 'primary' || holdsData(ctx.state(n)));
  return everStarted ? 'Degraded' : 'Provisioning';
}
