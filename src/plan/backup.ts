// Backups (spec.backup): the repository's server on the operator's host runs with the current
// configuration, and the cluster's stanza exists in the repository (archive-push fails until it
// does: WAL waits in pg_wal meanwhile, nothing is lost). Neither step is urgent: both come after
// every failover and pool rule.

import { clusterAction, type PlanContext } from './context.js';
import type { Verdict } from './types.js';

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
