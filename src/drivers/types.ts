// The driver contracts. Every implementation (sim, lab, libvirt) satisfies the same contract
// suite (test/contract). Mutating methods are idempotent `ensure*`/verb operations: running one
// again after a crash half-way is always safe. They throw PgopError (src/errors.ts) on failure.

import type { BackupType, ClusterSpec, NodeSpec } from '../spec/types.js';
import type {
  BackupObservation,
  BackupRecord,
  MachineObservation,
  PoolObservation,
  PostgresObservation,
} from '../observe/types.js';

/** A machine: a node of the spec, or a pool host by name (poolHosts in src/spec/types.ts). */
export type MachineRef = NodeSpec | string;

/** A machine as listed by the provider (see ProviderDriver.listMachines). */
export interface ListedMachine extends MachineObservation {
  address?: string;
  /** the hypervisor URI it lives on, when not the provider's default (libvirt) */
  hypervisor?: string;
}

/** What drivers log through (pino's shape; the reconciler passes its logger). */
export interface DriverLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  /** detail shown with PGOP_LOG_LEVEL=debug (every remote command and its run time) */
  debug?(obj: object, msg?: string): void;
}

/** What a long operation running as a job (src/reconcile/jobs.ts) gets from the loop: a signal
 *  that cancels it (the driver stops its remote work, e.g. kills pg_basebackup, and throws) and a
 *  place to report progress in bytes (pg_basebackup / pg_rewind report them). */
export interface JobContext {
  signal: AbortSignal;
  progress(doneBytes: number, totalBytes?: number): void;
}

/** Where node machines live: libvirt domains, lab namespaces, or the simulated hypervisor. */
export interface ProviderDriver {
  /** State of every node machine the spec names (missing ones included). */
  observeMachines(cluster: ClusterSpec): Promise<Record<string, MachineObservation>>;
  /** Every node machine the provider really holds for the cluster, whether the spec names it or
   *  not (the pool host excluded), by node name: how a node that left the spec is found for its
   *  removal (lab: the cluster's recorded hosts; libvirt: domains carrying pgop's ownership
   *  metadata for the cluster). `address` is the one the machine was made with, when known. */
  listMachines(cluster: ClusterSpec): Promise<Record<string, ListedMachine>>;
  /** Create the machine if missing and start it if stopped; returns once it is started
   *  (not necessarily reachable yet). */
  ensureMachine(cluster: ClusterSpec, node: NodeSpec, job?: JobContext): Promise<void>;
  /** Fence: power the machine off at once. After this returns no process of the node runs and
   *  it accepts no connection. Idempotent; succeeds on a missing machine. */
  fenceMachine(cluster: ClusterSpec, node: NodeSpec): Promise<void>;
  /** Remove the machine and everything it owns (disks, directories). Idempotent. */
  deleteMachine(cluster: ClusterSpec, node: NodeSpec, job?: JobContext): Promise<void>;
  /** Remove cluster-wide resources (networks, pgpool host) after every node is deleted. */
  deleteClusterResources(cluster: ClusterSpec): Promise<void>;
  /** Release connections and child processes. */
  close(): Promise<void>;
}

export interface ProbeResult {
  reachable: boolean;
  postgres: PostgresObservation | null;
  error?: string;
  /** The failure is certain, not a slow answer: the host refused the port of a postgres that
   *  answered moments ago (its postmaster is gone). It counts as the whole miss budget. */
  gone?: boolean;
  /** Its postmaster runs (the SSH look) yet postgres gave no answer within the probe's budget:
   *  it hangs (stopped, stuck). Its state cannot be read (postgres: null). */
  hung?: boolean;
}

export interface ProbeOptions {
  /** Accept the last probe's result if it is at most this old (ms): a pass that must not wait
   *  for every node (see observeCluster's urgent passes). */
  maxAgeMs?: number;
  /** Accept, once, the probe started when another node's postmaster was reported dead: the look
   *  right after an urgent fence plans the promotion on those answers. */
  afterDeath?: boolean;
}

/** PostgreSQL on a node, reached over SSH (real) or in memory (sim). */
export interface PostgresDriver {
  /** Health probe: null when the node cannot be reached at all (throws nothing). The error
   *  string says why. */
  probe(cluster: ClusterSpec, node: NodeSpec, opts?: ProbeOptions): Promise<ProbeResult>;
  /** Nodes whose postmaster is known to have died since their last probe: a backend of theirs
   *  said so in its last words ("terminating connection due to unexpected postmaster exit").
   *  The next probe of such a node reports it gone without a connect (and forgets the news). */
  postmasterDeaths?(cluster: ClusterSpec): string[];
  /** Call `listener` with the node's name whenever such news comes; returns the unsubscribe. */
  watchPostmasterDeaths?(cluster: ClusterSpec, listener: (node: string) => void): () => void;
  /** The configHash a correctly configured node reports (for drift detection). */
  desiredConfigHash(cluster: ClusterSpec, node: NodeSpec): string;
  /** Packages, OS user, directories, archive script. Postgres is NOT started at boot: only the
   *  operator starts it, so a fenced old primary can never come back as a primary by itself. */
  ensureInstalled(cluster: ClusterSpec, node: NodeSpec, job?: JobContext): Promise<void>;
  /** initdb if needed (checksums on, for pg_rewind), configuration, start, roles/databases/
   *  schemas/grants from the spec, replication slots for `standbys`. */
  ensurePrimary(cluster: ClusterSpec, node: NodeSpec, standbys: string[], job?: JobContext): Promise<void>;
  /** Make the node a streaming standby of `primary`: clone with pg_basebackup if it has no data,
   *  pg_rewind if it diverged (falling back to a fresh clone), point primary_conninfo/slot at
   *  `primary`, start. Also the repoint operation after a failover. */
  ensureStandby(cluster: ClusterSpec, node: NodeSpec, primary: NodeSpec, job?: JobContext): Promise<void>;
  /** Rewrite managed configuration (conf.d, pg_hba) and reload; restart when a setting needs it.
   *  Starts postgres in place when it is not running (a primary as primary, a standby in
   *  recovery): the operator's way back when no other node can serve. */
  ensureConfigured(cluster: ClusterSpec, node: NodeSpec): Promise<void>;
  /** Promote a standby and wait until it accepts writes. */
  promote(cluster: ClusterSpec, node: NodeSpec): Promise<void>;
  /** Clean shutdown of a primary for switchover (fast mode, after a checkpoint). */
  demote(cluster: ClusterSpec, node: NodeSpec): Promise<void>;
  /** synchronous_standby_names = `ANY quorum (names)` or '' when names is empty. */
  ensureSyncStandbys(cluster: ClusterSpec, primary: NodeSpec, names: string[], quorum: number): Promise<void>;
  /** One physical slot per standby on the primary; drops slots of nodes no longer in the spec. */
  ensureSlots(cluster: ClusterSpec, primary: NodeSpec, standbys: string[]): Promise<void>;
  /** The name of the replication slot a standby of this name streams through (as listed in
   *  PostgresObservation.slots): how the planner sees that a removed node's slot is left. */
  slotName(node: string): string;
  close(): Promise<void>;
}

/** Work a failover does not wait for (the pool host's cut-off of a node whose postmaster
 *  died, the promoted node's leftover standby conf) runs this long after it began: the promotion
 *  follows the fence within ~0.5 s, pgpool's restart of its children within ~1 s, and each SSH
 *  command's processes (sshd, shells) took CPU from both on a host busy with the failure. */
export const AFTER_FAILOVER_MS = 3_000;

/** pgpool-II in front of the cluster. */
export interface PoolDriver {
  observe(cluster: ClusterSpec): Promise<PoolObservation>;
  /** The configHash pgpool reports once configured from this spec (drift detection). */
  desiredConfigHash(cluster: ClusterSpec): string;
  /** pgpool's most recent view (from observe or from routing it), without asking it again:
   *  what a pass uses while pgpool is too busy to answer at once. */
  latest?(cluster: ClusterSpec): PoolObservation | null;
  /** Cut the pool host off a node being fenced and, given the standby about to be promoted,
   *  make pgpool route to it at once; best effort, never throws. */
  detachBackend?(
    cluster: ClusterSpec,
    node: NodeSpec,
    successor?: NodeSpec,
    opts?: { cutOffAfterMs?: number },
  ): Promise<void>;
  /** Route writes to a node being promoted (`promoted` settles when it is writable), as soon
   *  as possible; best effort, never throws (the pool-route step that follows checks and
   *  repairs pgpool's routing). */
  routeToPrimary?(cluster: ClusterSpec, node: NodeSpec, promoted: Promise<void>): Promise<void>;
  /** Configure backends (every node of the spec), health checks, load balancing, pool_passwd,
   *  pcp; start if stopped; make it route writes to `primary`. Idempotent. On one pool host,
   *  or on every one (host undefined). */
  ensurePool(cluster: ClusterSpec, primary: string | null, failed?: string[], host?: string): Promise<void>;
  /** With several pool hosts (spec.pgpool.hosts): the virtual IP on `holder` alone, every other
   *  host made to drop it first (powered off when it cannot be reached). */
  moveVip?(cluster: ClusterSpec, holder: string): Promise<void>;
  /** Start a pool host's machine again (one fenced or stopped). */
  startHost?(cluster: ClusterSpec, host: string): Promise<void>;
  /** Remove a pool host machine the spec no longer names (PoolObservation.leftHosts). */
  removeHost?(cluster: ClusterSpec, host: string): Promise<void>;
  deletePool(cluster: ClusterSpec): Promise<void>;
  close(): Promise<void>;
}

/** Something the world told without being asked: a probe session dropped, a machine changed
 *  state. A hint to look again NOW; the planner acts on the observation it triggers, not on the
 *  signal (a forged or stale one costs one extra pass). One kind of news is an observation in
 *  itself: a backend's last words that its postmaster died (see postmasterDeaths). */
export interface WorldSignal {
  cluster: string;
  node?: string;
  kind: 'connection.lost' | 'machine.lifecycle';
  detail: string;
}

export type SignalListener = (signal: WorldSignal) => void;

/** A fan-out of signals; drivers emit, the reconcile loop listens. */
export class Signals {
  private readonly listeners = new Set<SignalListener>();
  on(listener: SignalListener): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }
  emit(signal: WorldSignal): void {
    for (const l of this.listeners) {
      try {
        l(signal);
      } catch {
        // a listener's bug must not break the driver that emitted
      }
    }
  }
}

/** Backups with pgBackRest (spec.backup): the repository's server on the operator's host and the
 *  cluster's stanza in it (src/drivers/backup/). */
export interface BackupDriver {
  /** What the operator's host holds: no SSH, no network (a look every pass). */
  observe(cluster: ClusterSpec): Promise<BackupObservation>;
  /** The repository's server runs with the current configuration and answers on its port. */
  ensureRepoServer(cluster: ClusterSpec): Promise<void>;
  /** The stanza exists (stanza-create on the primary, over SSH as postgres). */
  ensureStanza(cluster: ClusterSpec, primary: NodeSpec): Promise<void>;
  /** The server stops; the repository (WAL and backups) stays. */
  stopRepoServer(cluster: ClusterSpec): Promise<void>;
  /** One backup of this type, copied from `source` (the primary): its pgbackrest server is
   *  started first; progress is reported in bytes; the signal stops it (pgBackRest resumes or
   *  discards the partial backup at the next one). Returns the backup as the repository lists it. */
  backup(cluster: ClusterSpec, source: NodeSpec, type: BackupType, job: JobContext): Promise<BackupRecord>;
  /** After a promotion: push the segments of earlier timelines that the new primary holds and
   *  the old one may not have pushed (archive_mode=on archives only what a primary wrote).
   *  Returns what it did, for the event. */
  pushEarlierTimelines(cluster: ClusterSpec, primary: NodeSpec, timeline: number): Promise<string>;
}

export interface World {
  provider: ProviderDriver;
  postgres: PostgresDriver;
  pool: PoolDriver;
  /** Absent where no backups can be taken (the sim: the schema refuses spec.backup there). */
  backup?: BackupDriver;
  /** Where drivers report what they noticed between passes (optional: sim has none). */
  signals?: Signals;
}

/** Running commands on a node host. The real one is SSH (src/drivers/ssh) with a pinned host
 *  key; arguments are passed as an argv array and quoted by one helper (no shell injection). */
export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  timeoutMs?: number;
  /** run as this OS user (via sudo -u / runuser on the node) */
  user?: string;
  input?: string;
  /** environment for the command. Values are never logged, but they travel on the remote
   *  command line (visible in the node's process list): never pass a secret here; send
   *  secrets on `input` and read them in the remote shell. */
  env?: Record<string, string>;
}

export interface NodeShell {
  /** Run argv on the host. Throws a transient PgopError when the host cannot be reached or the
   *  command times out; a non-zero exit is returned, not thrown. */
  exec(host: HostRef, argv: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Write a file atomically (temp + rename) with mode and owner, never through a link another
   *  user planted: as postgres in postgres's directories, as root only where only root can change
   *  the way to the directory, refused elsewhere (src/drivers/ssh/node-fs.ts). Without an owner,
   *  the file is root's in a root-only directory, else postgres's. Returns true if it changed. */
  writeFile(
    host: HostRef,
    path: string,
    content: string,
    opts?: { mode?: number; owner?: string },
  ): Promise<boolean>;
  /** File content or null when missing. */
  readFile(host: HostRef, path: string): Promise<string | null>;
  close(): Promise<void>;
}

/** How to reach one host's management plane. */
export interface HostRef {
  /** cluster/node, for logs and host-key pinning */
  id: string;
  address: string;
  port: number;
  user: string;
  privateKeyPath: string;
}

/** Fault injection: one path for `pgop lab fault`, tests and benchmarks (sim and lab). */
export interface FaultInjector {
  /** SIGKILL the node's postmaster (its children die with it). */
  kill(cluster: ClusterSpec, node: NodeSpec): Promise<void>;
  /** Take the node's network link down / up again. */
  partition(cluster: ClusterSpec, node: NodeSpec): Promise<void>;
  heal(cluster: ClusterSpec, node: NodeSpec): Promise<void>;
  /** Stop / start the whole node (every process of it / the machine only: postgres stays down
   *  until the operator starts it). */
  stop(cluster: ClusterSpec, node: NodeSpec): Promise<void>;
  start(cluster: ClusterSpec, node: NodeSpec): Promise<void>;
  /** SIGSTOP / SIGCONT the node's postmaster and its children: postgres hangs with its ports
   *  open (connects succeed, nothing answers). Absent where it cannot be modelled (sim). */
  hang?(cluster: ClusterSpec, node: NodeSpec): Promise<void>;
  resume?(cluster: ClusterSpec, node: NodeSpec): Promise<void>;
}
