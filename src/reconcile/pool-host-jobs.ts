// A pool host that serves no client is configured as a job of the cluster: on a VM that just
// booted, preparing and starting its pgpool can take a minute, and the loop must see (and fail
// over) meanwhile. The serving holder's routing stays in the pass: clients wait on it.

import type { World } from '../drivers/types.js';
import type { ClusterAction } from '../plan/types.js';
import type { RuleId } from '../plan/rule-ids.js';
import type { ClusterSpec } from '../spec/types.js';
import type { JobRunner } from './jobs.js';

export const POOL_HOST_JOB_KIND = 'pool.configure';

export function startPoolHostJob(
  jobs: JobRunner,
  spec: ClusterSpec,
  world: World,
  action: Extract<ClusterAction, { type: 'configurePoolHost' }>,
  decision: { ruleId: RuleId; reason: string },
): number {
  const { host, primary, failed = [] } = action;
  return jobs.startClusterJob({
    cluster: spec.name,
    kind: POOL_HOST_JOB_KIND,
    node: host,
    nodeIs: 'on',
    subject: primary,
    ruleId: decision.ruleId,
    reason: decision.reason,
    done: { ruleId: 'pool.host-configured' },
    coolsDown: true,
    run: async () => {
      await world.pool.ensurePool(spec, primary, failed, host);
      return `pgpool on pool host ${host} is configured and routes writes to ${primary}`;
    },
  });
}
