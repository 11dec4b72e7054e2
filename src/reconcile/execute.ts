// Run the side effect a decision names through the drivers. Each mapping is one idempotent
// driver operation, so a pass that died half-way can simply run again.

import type { NodeActor } from '../../machines/node-edges.js';
import type { BackupDriver, JobContext, World } from '../drivers/types.js';
import { AFTER_FAILOVER_MS } from '../drivers/types.js';
import type { ClusterSpec, NodeSpec } from '../spec/types.js';
import type { ClusterAction, NodeDecision } from '../plan/types.js';
import { internal, terminal } from '../errors.js';

/** Nodes that left the spec, by name, as the observation found them (see observeCluster). */
export type StrayNodes = Record<string, NodeSpec>;

export function nodeOf(spec: ClusterSpec, name: string, strays: StrayNodes): NodeSpec {
  const node = spec.nodes.find((n) => n.name === name);
  if (node) return node;
  // A node removed from the spec: reached through the NodeSpec it was made with (its real
  // address and host), never a made-up one.
  const stray = strays[name];
  if (stray) return stray;
  throw terminal(
    `cannot reach node ${name} of cluster ${spec.name}: it left the spec, and neither the store nor ` +
      'the provider knows its address',
  );
}

export async function runActor(
  actor: NodeActor,
  decision: NodeDecision,
  spec: ClusterSpec,
  world: World,
  strays: StrayNodes = {},
  job?: JobContext,
): Promise<void> {
  const node = nodeOf(spec, decision.node, strays);
  const primary = () => {
    if (!decision.primary) {
      throw internal(`decision ${decision.ruleId} for ${decision.node} runs ${actor} without a primary`);
    }
    return nodeOf(spec, decision.primary, strays);
  };
  switch (actor) {
    case 'provisionVm':
    case 'startMachine':
      return world.provider.ensureMachine(spec, node, job);
    case 'installPostgres':
      return world.postgres.ensureInstalled(spec, node, job);
    case 'initPrimary':
      return world.postgres.ensurePrimary(spec, node, decision.standbys ?? [], job);
    case 'cloneStandby':
    case 'repointStandby':
    case 'rejoinStandby':
      return world.postgres.ensureStandby(spec, node, primary(), job);
    case 'promoteStandby':
      return promoteStandby(spec, node, world);
    case 'configureNode':
    case 'restartPostgres':
      return world.postgres.ensureConfigured(spec, node);
    case 'demotePrimary':
      return world.postgres.demote(spec, node);
    case 'fenceNode':
      return fenceNode(spec, node, decision, world, strays);
    case 'deleteMachine':
      return world.provider.deleteMachine(spec, node, job);
    default: {
      // A new actor must be mapped here: the reconciler commits the step once this returns.
      const unmapped: never = actor;
      throw internal(`actor ${String(unmapped)} (rule ${decision.ruleId}) has no driver operation`);
    }
  }
}

/** Clients first: pgpool is switched to the new primary in the same step (one PCP request,
 *  overlapping the promotion where that is safe), before the commit and before the other standbys
 *  are repointed. The old primary is fenced already: nothing routed anywhere can reach it. */
async function promoteStandby(spec: ClusterSpec, node: NodeSpec, world: World): Promise<void> {
  const promoted = world.postgres.promote(spec, node);
  const routed = world.pool.routeToPrimary?.(spec, node, promoted);
  await promoted;
  await routed;
}

/** Fenced means no process of it runs (the provider's part, awaited: the safety) and no client
 *  reaches it. The pool host's part (cut its sessions there, switch pgpool to the likely
 *  successor) only takes traffic away from the node, so it starts alongside and runs on into the
 *  promotion that follows; it never throws. */
async function fenceNode(
  spec: ClusterSpec,
  node: NodeSpec,
  decision: NodeDecision,
  world: World,
  strays: StrayNodes,
): Promise<void> {
  const successor = decision.successor ? nodeOf(spec, decision.successor, strays) : undefined;
  const cutOff = decision.postmasterDeathReported ? { cutOffAfterMs: AFTER_FAILOVER_MS } : {};
  if (!decision.leavingSpec) void world.pool.detachBackend?.(spec, node, successor, cutOff);
  await world.provider.fenceMachine(spec, node);
}

function backupDriver(world: World): BackupDriver {
  if (!world.backup) throw internal('this world has no backup driver');
  return world.backup;
}

export async function runClusterAction(
  action: ClusterAction,
  spec: ClusterSpec,
  world: World,
  strays: StrayNodes = {},
): Promise<void> {
  switch (action.type) {
    case 'ensurePool':
      return world.pool.ensurePool(spec, action.primary, action.failed ?? [], action.host);
    case 'moveVip':
      if (!world.pool.moveVip) throw internal(`this pool driver cannot move a virtual IP`);
      return world.pool.moveVip(spec, action.to);
    case 'removePoolHost':
      if (!world.pool.removeHost) throw internal(`this pool driver cannot remove pool host ${action.host}`);
      return world.pool.removeHost(spec, action.host);
    case 'startPoolHost':
      if (!world.pool.startHost) throw internal(`this pool driver cannot start pool host ${action.host}`);
      return world.pool.startHost(spec, action.host);
    case 'ensureSyncStandbys': {
      const primary = nodeOf(spec, action.primary, strays);
      return world.postgres.ensureSyncStandbys(spec, primary, action.names, action.quorum);
    }
    case 'dropSlots':
      // drops the slots of every node no longer in the spec (no slot is created: standbys = [])
      return world.postgres.ensureSlots(spec, nodeOf(spec, action.primary, strays), []);
    case 'forgetNode':
      return; // bookkeeping only: the reconciler deletes the node's record
    case 'ensureBackupRepo':
      return backupDriver(world).ensureRepoServer(spec);
    case 'createStanza':
      return backupDriver(world).ensureStanza(spec, nodeOf(spec, action.primary, strays));
    case 'deleteClusterResources':
      if (spec.backup && world.backup) await world.backup.stopRepoServer(spec);
      if (spec.pgpool.enabled) await world.pool.deletePool(spec);
      for (const node of spec.nodes) await world.provider.deleteMachine(spec, node);
      return world.provider.deleteClusterResources(spec);
    case 'completeRequest':
      return; // bookkeeping only: the reconciler marks the request done
    case 'cancelJob':
      return; // the reconciler's job runner cancels it
    case 'startBackup':
    case 'pushEarlierTimelines':
    case 'configurePoolHost':
      return; // the reconciler starts it as a job of the cluster
    default: {
      const unmapped: never = action;
      throw internal(`cluster action ${JSON.stringify(unmapped)} has no driver operation`);
    }
  }
}
