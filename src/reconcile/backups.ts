// Backups as jobs of the cluster (src/plan/backup.ts decides, the backup driver copies): what
// the planner is told of them, and how one starts.

import type { World } from '../drivers/types.js';
import type { ClusterObservation } from '../observe/types.js';
import type { BackupJobView, ClusterAction, WalPushView } from '../plan/types.js';
import type { RuleId } from '../plan/rule-ids.js';
import { internal } from '../errors.js';
import { BACKUP_TYPES, type BackupType, type ClusterSpec } from '../spec/types.js';
import type { Store } from '../store/store.js';
import { nodeOf } from './execute.js';
import type { JobRunner } from './jobs.js';
import { backupJobHeadline, backupJobKind, lastBackupStarts } from '../plan/backup-schedule.js';

/** The running backup job (at most one per cluster) and when each type was last started: by a
 *  job of this store, or as the repository lists it (backups taken by hand count too). */
export function backupPlanInput(
  store: Store,
  jobs: JobRunner,
  cluster: string,
  observation: ClusterObservation,
): {
  backupJob?: BackupJobView;
  backupStarts: Partial<Record<BackupType, number>>;
  walPush: WalPushView;
} {
  const started = store.jobs.lastStarts(cluster, BACKUP_TYPES.map(backupJobKind));
  const backupStarts = lastBackupStarts(started, observation.backup?.backups ?? []);
  const walPush = walPushView(store, jobs, cluster);
  const running = jobs.clusterJobs(cluster, 'backup.')[0];
  if (!running) return { backupStarts, walPush };
  const backupJob: BackupJobView = {
    id: running.record.id,
    type: running.record.kind.slice('backup.'.length) as BackupType,
    source: running.record.node,
    ...(running.cancelling ? { cancelling: true } : {}),
  };
  return { backupJob, backupStarts, walPush };
}

export function startBackupJob(
  jobs: JobRunner,
  spec: ClusterSpec,
  world: World,
  action: Extract<ClusterAction, { type: 'startBackup' }>,
  decision: { ruleId: RuleId; reason: string },
): number {
  const driver = world.backup;
  if (!driver) throw internal('this world has no backup driver');
  const source = nodeOf(spec, action.source, {});
  return jobs.startClusterJob({
    cluster: spec.name,
    kind: backupJobKind(action.backupType),
    node: action.source,
    ruleId: decision.ruleId,
    reason: decision.reason,
    ...(action.requestId !== undefined ? { requestId: action.requestId } : {}),
    done: { ruleId: 'backup.succeeded' },
    run: async (job) => {
      const b = await driver.backup(spec, source, action.backupType, job);
      const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
      const sizes = `${mib(b.delta)} copied of ${mib(b.size)}, ${mib(b.repoDelta)} in the repository`;
      return `${backupJobHeadline(b.type, b.label)}: ${sizes}, WAL ${b.walStart}..${b.walStop}`;
    },
  });
}

export const WAL_PUSH_KIND = 'archive.earlier-timelines';

/** The promoted primary's push of earlier timelines' WAL (src/drivers/backup/timeline-wal.ts). */
export function startWalPushJob(
  jobs: JobRunner,
  spec: ClusterSpec,
  world: World,
  action: Extract<ClusterAction, { type: 'pushEarlierTimelines' }>,
  decision: { ruleId: RuleId; reason: string },
): number {
  const driver = world.backup;
  if (!driver) throw internal('this world has no backup driver');
  const primary = nodeOf(spec, action.primary, {});
  return jobs.startClusterJob({
    cluster: spec.name,
    kind: WAL_PUSH_KIND,
    node: action.primary,
    subject: String(action.timeline),
    ruleId: decision.ruleId,
    reason: decision.reason,
    done: { ruleId: 'backup.timelines-pushed' },
    run: () => driver.pushEarlierTimelines(spec, primary, action.timeline),
  });
}

/** The newest push of earlier timelines (this store's history) and whether one runs. */
export function walPushView(store: Store, jobs: JobRunner, cluster: string): WalPushView {
  const running = jobs.clusterJobs(cluster, WAL_PUSH_KIND).length > 0;
  const last = store.jobs.lastFinished(cluster, WAL_PUSH_KIND);
  if (!last) return { running };
  return {
    running,
    last: {
      primary: last.node,
      timeline: Number(last.to),
      succeeded: last.state === 'succeeded',
      finishedAt: last.finishedAt ?? last.startedAt,
    },
  };
}
