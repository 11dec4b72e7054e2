// PostgresDriver over SSH (NodeShell) + the pg wire protocol: a thin class over the parts in this
// directory (README.md says what lives where).
//
// - Every remote command is an argv array; shell scripts are constant strings that get their
//   values as positional parameters ($1...), never by interpolation (scripts.ts).
// - Secrets never appear on a command line, in an env assignment on a command line, or in an SQL
//   statement: pg_basebackup/pg_rewind read PGPASSWORD from stdin inside the remote shell, and
//   role passwords are sent as SCRAM verifiers computed here.
// - Per-node settings go on the postmaster command line (pg_ctl -o), never into a file that a
//   clone or a rewind copies. Layout of the files pgop writes: config.ts.

import type pg from 'pg';
import type { ClusterSpec, NodeSpec } from '../../spec/types.js';
import type {
  DriverLog,
  JobContext,
  HostRef,
  NodeShell,
  PostgresDriver,
  ProbeOptions,
  ProbeResult,
  Signals,
} from '../types.js';
import { resolveSecret } from '../../spec/secrets.js';
import { ClusterTls } from '../../tls/material.js';
import { pgPort, slotName } from './config.js';
import { Lifecycle } from './lifecycle.js';
import { NodeAccess } from './node-access.js';
import { Prober } from './probe.js';
import { Promotion } from './promote.js';
import { Replication } from './replication.js';
import { ensureSlots } from './sql-objects.js';

export type { DriverLog };

export interface SshPostgresDriverOptions {
  shell: NodeShell;
  /** How to reach a node's management plane (SSH). */
  hostRef(cluster: ClusterSpec, node: NodeSpec): HostRef;
  /** pg client options for the operator's superuser connection to a node (default: node
   *  address, the cluster's port, user postgres, spec.postgres.superuserPassword). */
  connect?(cluster: ClusterSpec, node: NodeSpec): pg.ClientConfig;
  logger?: DriverLog;
  /** Upper bound for "wait until the standby streams" (default 30 s). */
  streamTimeoutMs?: number;
  /** Where a dropped probe session is reported (the loop then looks at once). */
  signals?: Signals;
  /** The clusters' CAs and certificates (default: in each provider's state directory). */
  tls?: ClusterTls;
}

/** The default `connect`: superuser over TCP to the node's address. */
export function defaultConnect(cluster: ClusterSpec, node: NodeSpec): pg.ClientConfig {
  return {
    host: node.address,
    port: pgPort(cluster),
    user: 'postgres',
    database: 'postgres',
    password: resolveSecret(cluster.postgres.superuserPassword, 'the postgres superuser password'),
  };
}

const silent: DriverLog = { info() {}, warn() {} };

export class SshPostgresDriver implements PostgresDriver {
  private readonly access: NodeAccess;
  private readonly prober: Prober;
  private readonly life: Lifecycle;
  private readonly replication: Replication;
  private readonly promotion: Promotion;

  constructor(opts: SshPostgresDriverOptions) {
    const log = opts.logger ?? silent;
    this.access = new NodeAccess({
      shell: opts.shell,
      hostRef: opts.hostRef,
      connect: opts.connect ?? defaultConnect,
      log,
      tls: opts.tls ?? new ClusterTls({ log }),
    });
    this.prober = new Prober(this.access, opts.signals);
    this.life = new Lifecycle(this.access, this.prober);
    this.replication = new Replication(this.access, this.prober, this.life, opts.streamTimeoutMs ?? 30_000);
    this.promotion = new Promotion(this.access, this.prober);
  }

  desiredConfigHash(cluster: ClusterSpec, node: NodeSpec): string {
    return this.life.desiredConfigHash(cluster, node);
  }

  // ---------------------------------------------------------------------- probe

  probe(cluster: ClusterSpec, node: NodeSpec, opts: ProbeOptions = {}): Promise<ProbeResult> {
    return this.prober.probe(cluster, node, opts);
  }

  watchPostmasterDeaths(cluster: ClusterSpec, listener: (node: string) => void): () => void {
    return this.prober.watchPostmasterDeaths(cluster, listener);
  }

  postmasterDeaths(cluster: ClusterSpec): string[] {
    return this.prober.postmasterDeaths(cluster);
  }

  // ---------------------------------------------------------------------- lifecycle

  ensureInstalled(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    return this.life.ensureInstalled(cluster, node);
  }

  ensurePrimary(cluster: ClusterSpec, node: NodeSpec, standbys: string[]): Promise<void> {
    return this.life.ensurePrimary(cluster, node, standbys);
  }

  ensureConfigured(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    return this.life.ensureConfigured(cluster, node);
  }

  demote(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    return this.life.demote(cluster, node);
  }

  // ---------------------------------------------------------------------- replication

  slotName(node: string): string {
    return slotName(node);
  }

  ensureSlots(cluster: ClusterSpec, primary: NodeSpec, standbys: string[]): Promise<void> {
    return ensureSlots(this.access, cluster, primary, standbys);
  }

  ensureSyncStandbys(
    cluster: ClusterSpec,
    primary: NodeSpec,
    names: string[],
    quorum: number,
  ): Promise<void> {
    return this.replication.ensureSyncStandbys(cluster, primary, names, quorum);
  }

  ensureStandby(cluster: ClusterSpec, node: NodeSpec, primary: NodeSpec, job?: JobContext): Promise<void> {
    return this.replication.ensureStandby(cluster, node, primary, job);
  }

  promote(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    return this.promotion.promote(cluster, node);
  }

  close(): Promise<void> {
    return this.prober.close();
  }
}
