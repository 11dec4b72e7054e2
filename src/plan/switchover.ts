// Planned switchover: the operator asked for another primary (`pgop switchover`). The demoted
// primary shuts down cleanly; the election (failover.ts) then promotes the target.

import { act, clusterAction, lsnOf, wait, type PlanContext } from './context.js';
import type { OperatorRequest, Verdict } from './types.js';

type Stage =
  | { stage: 'rejected'; request: OperatorRequest; target: string }
  | { stage: 'done'; request: OperatorRequest; primary: string }
  | { stage: 'wait-target'; target: string | undefined }
  | { stage: 'demote'; primary: string; to: string };

/** Where a pending switchover request stands, while a spec node is a healthy primary. */
function switchoverStage(ctx: PlanContext): Stage | undefined {
  const { primary, switchoverRequest: request } = ctx;
  if (!request || !primary || !ctx.primaryHealthy || !ctx.specNames.includes(primary)) return undefined;
  // args.from: the primary when the request was made; args.to: the wanted one, if named
  const { to: target, from } = request.args;
  if (target && !ctx.specNames.includes(target)) return { stage: 'rejected', request, target };
  if (target ? target === primary : !from || from !== primary) return { stage: 'done', request, primary };
  const candidates = ctx.streaming;
  const to = target ?? [...candidates].sort((a, b) => lsnOf(ctx.obs(b)) - lsnOf(ctx.obs(a)))[0];
  if (!to || !candidates.includes(to)) return { stage: 'wait-target', target };
  return { stage: 'demote', primary, to };
}

export function rejectSwitchover(ctx: PlanContext): Verdict | undefined {
  const s = switchoverStage(ctx);
  if (s?.stage !== 'rejected') return undefined;
  return clusterAction(
    { type: 'completeRequest', requestId: s.request.id },
    `switchover to ${s.target} dropped: no such node in the spec`,
  );
}

export function completeSwitchover(ctx: PlanContext): Verdict | undefined {
  const s = switchoverStage(ctx);
  if (s?.stage !== 'done') return undefined;
  return clusterAction(
    { type: 'completeRequest', requestId: s.request.id },
    `switchover complete: ${s.primary} is primary`,
  );
}

export function waitForSwitchoverTarget(ctx: PlanContext): Verdict | undefined {
  const s = switchoverStage(ctx);
  if (s?.stage !== 'wait-target') return undefined;
  const to = s.target ? ` to ${s.target}` : '';
  return wait(`switchover requested${to}: no streaming standby to hand over to yet`, undefined, ctx.probeMs);
}

export function demoteForSwitchover(ctx: PlanContext): Verdict | undefined {
  const s = switchoverStage(ctx);
  if (s?.stage !== 'demote') return undefined;
  return act(
    s.primary,
    'switchover.requested',
    `switchover to ${s.to} requested: shutting ${s.primary} down cleanly so ${s.to} receives every commit`,
  );
}

/** A request whose target did not become primary (another won) is closed once all is settled. */
export function closeSettledSwitchover(ctx: PlanContext): Verdict | undefined {
  const request = ctx.switchoverRequest;
  if (!request) return undefined;
  return clusterAction(
    { type: 'completeRequest', requestId: request.id },
    `switchover settled: ${ctx.primary} is primary`,
  );
}
