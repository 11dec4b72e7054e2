// A complete ClusterSpec for tests, every default filled in (src/spec/types.ts), without going
// through the spec parser: the drivers and the loop are tested on typed specs directly.

import type { ClusterSpec, NodeSpec } from '../../src/spec/types.js';

export type DeepPartial<T> = T extends (infer U)[]
  ? U[] // arrays are replaced, never merged
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

function merge<T>(base: T, over: unknown): T {
  if (over === undefined) return base;
  if (
    Array.isArray(over) ||
    over === null ||
    typeof over !== 'object' ||
    typeof base !== 'object' ||
    base === null ||
    Array.isArray(base)
  ) {
    return over as T;
  }
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(over)) out[k] = merge(out[k], v);
  return out as T;
}

/** Three nodes pg01..pg03 on 10.0.0.11-13, provider sim, async replication with slots, pgpool on.
 *  Overrides merge deeply; arrays (nodes, hba, roles, ...) replace the default. */
export function simSpec(overrides: DeepPartial<ClusterSpec> = {}): ClusterSpec {
  const base: ClusterSpec = {
    apiVersion: 'pgop.dev/v1',
    kind: 'Cluster',
    name: 'sim1',
    provider: { type: 'sim' },
    postgres: {
      version: 15,
      parameters: {
        max_connections: 100,
        shared_buffers: '128MB',
        wal_level: 'replica',
        wal_log_hints: true,
        hot_standby: true,
        max_wal_senders: 10,
        max_replication_slots: 10,
      },
      dataDir: '/u01/pg15/data',
      archiveDir: '/u02/archive',
      backupDir: '/u02/backup',
      logDir: '/var/log/postgres',
      archiveScript: true,
      superuserPassword: { env: 'PGOP_SUPERUSER_PASSWORD' },
      hba: [
        { type: 'local', database: 'all', user: 'postgres', method: 'peer' },
        {
          type: 'host',
          database: 'replication',
          user: 'replicator',
          address: '10.0.0.0/24',
          method: 'scram-sha-256',
        },
        { type: 'host', database: 'all', user: 'all', address: '10.0.0.0/24', method: 'scram-sha-256' },
      ],
    },
    nodes: [
      { name: 'pg01', address: '10.0.0.11', vcpus: 2, memoryMiB: 2048, rootDiskGiB: 10, dataDiskGiB: 20 },
      { name: 'pg02', address: '10.0.0.12', vcpus: 2, memoryMiB: 2048, rootDiskGiB: 10, dataDiskGiB: 20 },
      { name: 'pg03', address: '10.0.0.13', vcpus: 2, memoryMiB: 2048, rootDiskGiB: 10, dataDiskGiB: 20 },
    ],
    replication: {
      mode: 'async',
      syncQuorum: 1,
      user: 'replicator',
      password: { env: 'PGOP_REPLICATION_PASSWORD' },
      slots: true,
    },
    pgpool: {
      enabled: true,
      address: '10.0.0.10',
      port: 9999,
      pcpPort: 9898,
      loadBalancing: true,
      primaryApplications: [],
      watchdog: { enabled: false },
      numInitChildren: 32,
    },
    roles: [
      {
        name: 'app',
        login: true,
        superuser: false,
        createdb: false,
        password: { env: 'APP_PASSWORD' },
        searchPath: ['app', 'public'],
      },
    ],
    databases: [
      {
        name: 'appdb',
        owner: 'app',
        encoding: 'UTF8',
        locale: 'C.UTF-8',
        schemas: [{ name: 'app', owner: 'app' }],
      },
    ],
    grants: [
      {
        role: 'app',
        database: 'appdb',
        schema: 'app',
        schemaPrivileges: ['USAGE'],
        tablePrivileges: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'],
      },
    ],
    failureDetection: {
      probeIntervalMs: 1000,
      missesBeforeFailover: 3,
      connectTimeoutMs: 2000,
      retryIntervalMs: 100,
    },
  };
  return merge(base, overrides);
}

/** A fourth node on simSpec's network (smaller than pg01..pg03): what scaling out adds and scaling
 *  in removes. */
export const SIM_PG04: NodeSpec = {
  name: 'pg04',
  address: '10.0.0.14',
  vcpus: 1,
  memoryMiB: 1024,
  rootDiskGiB: 10,
  dataDiskGiB: 10,
};

/** The least a sim spec can say: one node; the parser fills in the rest. */
export function minimalSimYaml(name: string): string {
  return `apiVersion: pgop.dev/v1
kind: Cluster
metadata: {name: ${name}}
spec:
  provider: {type: sim}
  nodes: [{name: a, address: 10.0.0.1}]
`;
}
