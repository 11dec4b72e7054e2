// The planner's rules in priority order: the first that returns a decision decides. Safety
// (fence before promote, sync evidence before promote) comes before liveness. `eachNode` runs
// NODE_RULES over the spec's nodes in spec order; `eachStray` runs STRAY_RULES over the nodes
// that left the spec. An id may appear twice when one outcome has two places in the order.

import type { PlanContext } from './context.js';
import type { RuleId } from './rule-ids.js';
import type { Verdict } from './types.js';
import { deleteClusterResources, fenceOnDeletion, removeMachineOnDeletion } from './deletion.js';
import * as failover from './failover.js';
import { initPrimary, startMachineForBootstrap, waitForUnseen } from './bootstrap.js';
import * as node from './node.js';
import * as rejoin from './rejoin.js';
import * as scale from './scale.js';
import { clearSyncNames, setSyncQuorum } from './sync.js';
import {
  detachFailedFromPool,
  holdVirtualIp,
  waitForSilentHolder,
  removeLeftPoolHost,
  waitForPoolAttach,
  waitForPoolHosts,
  reconfigurePool,
  routeOtherPoolHosts,
  routePool,
  startPoolHost,
} from './pool.js';
import * as switchover from './switchover.js';
import { cancelStaleJob, waitForJobs } from './jobs.js';
import * as backup from './backup.js';

export interface Rule {
  id: RuleId;
  decide(ctx: PlanContext): Verdict | undefined;
}
export interface NodeRule {
  id: RuleId;
  decide(ctx: PlanContext, node: string): Verdict | undefined;
  /** touches only its own node: may run on several nodes (not the primary) in the same pass */
  parallel?: true;
}
export type Step = Rule | { eachNode: readonly NodeRule[] } | { eachStray: readonly NodeRule[] };

const rule = (id: RuleId, decide: Rule['decide']): Rule => ({ id, decide });
const nodeRule = (id: RuleId, decide: NodeRule['decide'], parallel?: 'parallel'): NodeRule =>
  parallel ? { id, decide, parallel: true } : { id, decide };

/** Per node, in this order; the first that applies to a node decides for it. */
export const NODE_RULES: readonly NodeRule[] = [
  nodeRule('node.provision', node.provision, 'parallel'),
  nodeRule('node.install', node.install, 'parallel'),
  nodeRule('node.reprovision', node.reprovision),
  nodeRule('node.start-machine', node.startMachine, 'parallel'),
  nodeRule('node.clone-standby', node.cloneStandby, 'parallel'),
  nodeRule('standby.failed', node.markStandbyFailed),
  nodeRule('standby.repoint', node.repointStandby, 'parallel'),
  nodeRule('node.config-drift', node.repairConfigDrift, 'parallel'),
  nodeRule('rejoin.start-machine', rejoin.startMachineToRejoin, 'parallel'),
  nodeRule('rejoin.standby', rejoin.rejoinAsStandby, 'parallel'),
  nodeRule('recover.restart-in-place', rejoin.restartInPlace),
  nodeRule('rejoin.release-fence', rejoin.releaseFence),
  nodeRule('recover.release-last-primary', rejoin.releaseLastPrimary),
  nodeRule('node.remove-machine', node.removeMachine),
];

/** Per node that left the spec: one step of its removal (scale.ts). */
export const STRAY_RULES: readonly NodeRule[] = [
  nodeRule('scale.sync-remove', scale.removeFromSyncSet),
  nodeRule('scale.pool-remove', scale.removeFromPool),
  nodeRule('scale.fence', scale.fenceLeaving),
  nodeRule('scale.remove-machine', scale.removeLeavingMachine),
  nodeRule('scale.drop-slot', scale.dropLeavingSlot),
  nodeRule('scale.forget', scale.forgetLeaving),
];

export const RULES: readonly Step[] = [
  rule('delete.remove-machine', removeMachineOnDeletion),
  rule('delete.fence', fenceOnDeletion),
  rule('delete.resources', deleteClusterResources),
  rule('node.machine-vanished', node.machineVanished),
  rule('node.adopt-clone', node.adoptClone),
  rule('node.start-unrecorded', node.startUnrecorded),
  rule('failover.fence-primary', failover.fencePrimary),
  rule('pool.host-remove', removeLeftPoolHost),
  rule('pool.vip-holder', holdVirtualIp),
  rule('job.cancel', cancelStaleJob),
  rule('recover.start-primary', failover.startFailedPrimary),
  rule('recover.restart-primary', failover.restartFailedPrimary),
  rule('failover.no-candidate', failover.waitForCandidate),
  rule('failover.adopt-promoted', failover.adoptPromoted),
  rule('node.start-machine', startMachineForBootstrap),
  rule('bootstrap.wait-unseen', waitForUnseen),
  rule('backup.restore-server', backup.ensureRepoServerForRestore),
  rule('bootstrap.init-primary', initPrimary),
  rule('switchover.promote', failover.promoteForSwitchover),
  rule('failover.promote', failover.promoteForFailover),
  rule('failover.pool-route', failover.routePoolAfterFailover),
  rule('pool.detach-failed', detachFailedFromPool),
  { eachNode: NODE_RULES },
  rule('failover.sync-evidence', failover.waitForSyncEvidence),
  { eachStray: STRAY_RULES },
  rule('sync.quorum', setSyncQuorum),
  rule('sync.off', clearSyncNames),
  rule('pool.route', routePool),
  rule('pool.reconfigure', reconfigurePool),
  rule('pool.host-start', startPoolHost),
  rule('pool.host-route', routeOtherPoolHosts),
  rule('backup.repo-server', backup.ensureRepoServer),
  rule('backup.stanza', backup.createStanza),
  rule('backup.cancel', backup.cancelStaleBackup),
  rule('backup.push-timelines', backup.pushEarlierTimelines),
  rule('backup.requested', backup.startRequestedBackup),
  rule('backup.scheduled', backup.startScheduledBackup),
  rule('scale.wait-handover', scale.waitForHandover),
  rule('scale.handover', scale.handOver),
  rule('switchover.rejected', switchover.rejectSwitchover),
  rule('switchover.done', switchover.completeSwitchover),
  rule('switchover.wait-target', switchover.waitForSwitchoverTarget),
  rule('switchover.demote', switchover.demoteForSwitchover),
  rule('primary.unhealthy', failover.waitForPrimary),
  rule('pool.holder-unanswered', waitForSilentHolder),
  rule('job.running', waitForJobs),
  rule('node.waiting', node.waitForNodes),
  rule('switchover.done', switchover.closeSettledSwitchover),
  rule('pool.hosts-waiting', waitForPoolHosts),
  rule('pool.attach-settling', waitForPoolAttach),
  rule('cluster.converged', node.converged),
];
