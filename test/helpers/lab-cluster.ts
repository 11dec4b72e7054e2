// A cluster pgop runs on the lab, driven as a user drives it: its spec as the YAML a user writes,
// and one-statement clients of its nodes and pgpool.

import type pg from 'pg';
import { withPg } from './eventually.js';

export interface LabClusterYaml {
  name: string;
  /** e.g. 10.81.0.0/24: the provider's network, and the one hba rule's */
  network: string;
  /** the directory whose secrets/ holds postgres and replicator (writeSecretFiles) */
  work: string;
  nodes: string[];
  addr: (node: string) => string;
  /** postgres parameters as YAML flow entries, e.g. `wal_level: replica` */
  parameters: string[];
  /** pgpool's address */
  pool: string;
  /** more of `spec:`, each line indented by two, ending in a newline */
  more?: string;
}

/** A sync cluster with pgpool, every network client over scram-sha-256, passwords from files. */
export function labClusterYaml(o: LabClusterYaml): string {
  return `apiVersion: pgop.dev/v1
kind: Cluster
metadata: {name: ${o.name}}
spec:
  provider: {type: lab, network: ${o.network}}
  postgres:
    superuserPassword: {file: ${o.work}/secrets/postgres}
    parameters: {${o.parameters.join(', ')}}
    hba: [{type: host, database: all, user: all, address: ${o.network}, method: scram-sha-256}]
  nodes:
${o.nodes.map((n) => `    - {name: ${n}, address: ${o.addr(n)}}`).join('\n')}
  replication: {mode: sync, syncQuorum: 1, password: {file: ${o.work}/secrets/replicator}}
  pgpool: {enabled: true, address: ${o.pool}, numInitChildren: 8}
${o.more ?? ''}`;
}

/** The rows of one statement, on a client of its own (10 s statement timeout). */
export function labQuery<T extends pg.QueryResultRow>(
  cfg: pg.ClientConfig,
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  return withPg({ statement_timeout: 10_000, ...cfg }, async (c) => (await c.query<T>(sql, params)).rows);
}
