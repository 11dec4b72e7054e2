// Backups (spec.backup): the repository's server on the operator's host runs with the current
// configuration, and the cluster's stanza exists in the repository (archive-push fails until it
// does: WAL waits in pg_wal meanwhile, nothing is lost). Neither step is urgent: both come after
// every failover and pool rule.

import { clusterAction, wait, type PlanContext } from './context.js';
import type { Verdict, WalPushView } from './types.js';
import type { BackupType } from '../spec/types.js';
import { dueBackup } from './backup-schedule.js';

/** Once there is a primary: its network (the gateway address the server listens on) exists by
 *  then, and nothing archives before. */
export function ensureRepoServer(ctx: PlanContext): Verdict | undefined {
  const b = ctx.input.observation.backup;
  if (!ctx.input.spec.backup || !b || b.server === 'running' || !ctx.primary) return undefined;
  return clusterAction(
    { type: 'ensureBackupRepo' },
    b.server === 'outdated'
      ? "restarting the backup repository's server: its configuration or certificate changed"
      : `starting the backup repository's server${b.error ? ` (${b.error})` : ''}`,
  );
}

/** A cluster restored from another stanza: its own repository server serves the restore, so it
 *  runs before the first primary is made (once a node is installed: the network exists then). */
export function ensureRepoServerForRestore(ctx: PlanContext): Verdict | undefined {
  const b = ctx.input.observation.backup;
  const source = ctx.input.spec.bootstrap?.restore.stanza;
  if (!source || !b || b.server === 'running' || ctx.primary) return undefined;
  if (!Object.values(ctx.input.states).includes('installed')) return undefined;
  return clusterAction(
    { type: 'ensureBackupRepo' },
    `starting the backup repository's server: it serves the restore from stanza ${source}`,
  );
}

/** stanza-create runs on the primary once it archives with pgBackRest (its configuration is the
 *  one the spec asks for), so the stanza records the cluster's system identifier. */
export function createStanza(ctx: PlanContext): Verdict | undefined {
  const b = ctx.input.observation.backup;
  const { primary, primaryPg } = ctx;
  if (!ctx.input.spec.backup || !b || b.server !== 'running' || b.stanza) return undefined;
  if (!primary || !ctx.primaryHealthy || !primaryPg) return undefined;
  if (primaryPg.configHash !== ctx.input.desiredConfigHash[primary]) return undefined;
  return clusterAction(
    { type: 'createStanza', primary },
    `creating the backup stanza ${ctx.input.spec.name} from primary ${primary}`,
  );
}

/** Backups copy from the primary, once the stanza holds this database system (a foreign stanza
 *  would refuse them anyway). */
function backupSource(ctx: PlanContext): string | undefined {
  const b = ctx.input.observation.backup;
  const { primary, primaryPg } = ctx;
  if (!ctx.input.spec.backup || !b || b.server !== 'running' || !b.stanza) return undefined;
  if (!primary || !ctx.primaryHealthy || !primaryPg) return undefined;
  if (b.stanzaSystemId && primaryPg.systemId && b.stanzaSystemId !== primaryPg.systemId) return undefined;
  return primary;
}

/** How long a failed push of earlier timelines waits before it is tried again */
const WAL_PUSH_RETRY_MS = 60_000;

/** After a promotion, the earlier timelines' segments the old primary completed but may not have
 *  pushed are still on the new primary (it streamed them): pushed from there, once per primary
 *  and timeline, so that a restore through the new timeline finds every segment. */
export function pushEarlierTimelines(ctx: PlanContext): Verdict | undefined {
  const owed = owedPush(ctx);
  if (!owed || owed.running) return undefined;
  if (owed.lastTry && ctx.input.now - owed.lastTry.finishedAt < WAL_PUSH_RETRY_MS) return undefined;
  const { source, timeline } = owed;
  return clusterAction(
    { type: 'pushEarlierTimelines', primary: source, timeline },
    `${source} is primary on timeline ${timeline}: pushing the earlier timelines' segments it holds`,
  );
}

/** The push of earlier timelines from this primary runs or has not been tried yet: a CHECKPOINT
 *  there (a rewind's, a backup's) would delete those segments first (it streamed them, so it
 *  counts them as archived). What checkpoints on the new primary waits for its first try; a
 *  failed try holds nothing (its event says so; the push is tried again). */
export function earlierTimelinesPending(ctx: PlanContext): boolean {
  const owed = owedPush(ctx);
  return owed !== undefined && (owed.running || !owed.lastTry);
}

interface OwedPush {
  source: string;
  timeline: number;
  running: boolean;
  /** the last push from this primary for this timeline, a failed one */
  lastTry?: WalPushView['last'];
}

/** The push owed for the primary's timeline, unless one succeeded or none can run. */
function owedPush(ctx: PlanContext): OwedPush | undefined {
  const source = backupSource(ctx);
  const timeline = ctx.primaryPg?.timeline ?? 1;
  const push = ctx.input.walPush;
  if (!source || timeline <= 1 || !push) return undefined;
  const last = push.last;
  const lastTry = last && last.primary === source && last.timeline === timeline ? last : undefined;
  if (lastTry?.succeeded) return undefined;
  return { source, timeline, running: push.running, ...(lastTry ? { lastTry } : {}) };
}

/** A backup copying from a node that is no longer the primary cannot finish as meant. */
export function cancelStaleBackup(ctx: PlanContext): Verdict | undefined {
  const job = ctx.input.backupJob;
  if (!job || job.cancelling || !ctx.primary || job.source === ctx.primary) return undefined;
  return clusterAction(
    { type: 'cancelJob', jobId: job.id, node: job.source },
    `backup job #${job.id} copies from ${job.source}, but ${ctx.primary} is the primary now: cancelled`,
  );
}

/** `pgop backup`: the oldest request starts once nothing else backs the cluster up. */
export function startRequestedBackup(ctx: PlanContext): Verdict | undefined {
  const request = ctx.input.requests.find((r) => r.kind === 'backup');
  if (!request || ctx.input.backupJob || earlierTimelinesPending(ctx)) return undefined;
  const source = backupSource(ctx);
  if (!source) {
    // said, not silently held: `pgop backup` waits for this request
    const b = ctx.input.observation.backup;
    const foreign =
      b?.stanzaSystemId && ctx.primaryPg?.systemId && b.stanzaSystemId !== ctx.primaryPg.systemId;
    if (!foreign) return undefined;
    return wait(
      `a backup is requested, but the stanza ${ctx.input.spec.name} holds another database system's WAL`,
      undefined,
      ctx.probeMs,
    );
  }
  const backupType = parseBackupType(request.args.type);
  return clusterAction(
    { type: 'startBackup', backupType, source, requestId: request.id },
    `${backupType} backup requested: copying from primary ${source}`,
  );
}

/** spec.backup.schedule: the strongest backup due starts (one at a time). */
export function startScheduledBackup(ctx: PlanContext): Verdict | undefined {
  const schedule = ctx.input.spec.backup?.schedule;
  if (!schedule || Object.keys(schedule).length === 0 || ctx.input.backupJob) return undefined;
  if (earlierTimelinesPending(ctx)) return undefined;
  const source = backupSource(ctx);
  if (!source) return undefined;
  const due = dueBackup(schedule, ctx.input.now, ctx.input.backupStarts ?? {});
  if (!due) return undefined;
  return clusterAction(
    { type: 'startBackup', backupType: due.type, source },
    `${due.reason}: copying from primary ${source}`,
  );
}

function parseBackupType(value: string | undefined): BackupType {
  return value === 'diff' || value === 'incr' ? value : 'full';
}
