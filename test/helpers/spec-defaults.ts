// What the spec parser fills in where a spec says nothing (src/spec/parse.ts), for tests that
// build complete specs by hand and for the test that checks the parser fills exactly this.

import type { ClusterSpec, PgpoolSpec, PostgresSpec, ReplicationSpec } from '../../src/spec/types.js';

export interface SpecDefaults extends Pick<
  ClusterSpec,
  'roles' | 'databases' | 'grants' | 'failureDetection'
> {
  postgres: Pick<PostgresSpec, 'version' | 'parameters' | 'dataDir' | 'archiveDir' | 'backupDir' | 'logDir'>;
  replication: Omit<ReplicationSpec, 'password'>;
  pgpool: Pick<PgpoolSpec, 'port' | 'pcpPort' | 'loadBalancing' | 'primaryApplications' | 'watchdog'>;
}

/** The defaults, each call a fresh copy: postgres 15's layout, async replication with slots,
 *  pgpool's ports, no roles, databases or grants, the failure detection timings. */
export function specDefaults(): SpecDefaults {
  return {
    postgres: {
      version: 15,
      parameters: {},
      dataDir: '/u01/pg15/data',
      archiveDir: '/u02/archive',
      backupDir: '/u02/backup',
      logDir: '/var/log/postgres',
    },
    replication: { mode: 'async', syncQuorum: 1, user: 'replicator', slots: true },
    pgpool: {
      port: 9999,
      pcpPort: 9898,
      loadBalancing: true,
      primaryApplications: [],
      watchdog: { enabled: false },
    },
    roles: [],
    databases: [],
    grants: [],
    failureDetection: {
      probeIntervalMs: 1000,
      missesBeforeFailover: 3,
      connectTimeoutMs: 1000,
      retryIntervalMs: 100,
    },
  };
}
