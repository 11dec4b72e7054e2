// What the operator saw of the world in one pass. Errors are data here: a probe that failed is an
// observation ("unreachable: connect ECONNREFUSED"), not an exception.

/** Provider view of a node's machine (libvirt domain, lab namespace, simulated VM). */
export type MachineState = 'missing' | 'running' | 'stopped';

export interface MachineObservation {
  state: MachineState;
  /** Provider detail for humans, e.g. "domain shut off (destroyed)". */
  detail?: string;
}

/** LSNs are byte positions (pg_lsn as a number; 2^53 bytes is ~9 PB, far beyond a WAL lifetime). */
export type Lsn = number;

export interface ReplicaStatus {
  /** application_name = the standby's node name */
  name: string;
  state: string; // pg_stat_replication.state: streaming, catchup, ...
  syncState: 'async' | 'sync' | 'quorum' | 'potential';
  flushLsn: Lsn;
  replayLsn: Lsn;
}

export interface PostgresObservation {
  /** The data directory exists and holds an initialised cluster. */
  initialized: boolean;
  running: boolean;
  /** Running, but it refuses every session (57P03: starting up, not yet consistent, shutting
   *  down): pgpool fails every session while it holds such a node up. */
  refusesSessions?: true;
  /** pg_is_in_recovery(); meaningful only when running. */
  inRecovery: boolean;
  timeline: number;
  /** Primary: pg_current_wal_lsn(); standby: last replayed. */
  lsn: Lsn;
  /** Standby: pg_last_wal_receive_lsn() (0 when not streaming). */
  receiveLsn: Lsn;
  /** Standby: the node name its primary_conninfo points at, or null. */
  upstream: string | null;
  /** Standby: the WAL receiver is streaming. */
  streaming: boolean;
  /** Primary: connected standbys. */
  replicas: ReplicaStatus[];
  /** Primary: current synchronous_standby_names ('' when async). */
  syncStandbyNames: string;
  /** Hash of the configuration pgop manages on the node; differs from the desired one on drift. */
  configHash: string;
  /** The physical replication slots on the node (a primary's: one per standby). Absent when not
   *  read. */
  slots?: string[];
  /** Primary: pg_stat_archiver (WAL archiving's health). */
  archiver?: ArchiverStatus;
  /** pg_control_system().system_identifier: which database system this is (a backup repository
   *  keeps one per stanza). */
  systemId?: string;
}

export interface ArchiverStatus {
  archivedCount: number;
  lastArchivedWal: string | null;
  /** ms since the epoch */
  lastArchivedAt: number | null;
  failedCount: number;
  lastFailedWal: string | null;
  lastFailedAt: number | null;
}

export interface NodeObservation {
  name: string;
  machine: MachineObservation;
  /** The operator can reach the node's management plane (SSH). */
  reachable: boolean;
  /** null when it could not be read (unreachable, not installed). */
  postgres: PostgresObservation | null;
  /** Consecutive failed health probes (kept by the loop across passes, 0 after a success). */
  misses: number;
  /** Why the last probe failed, for `get nodes` and event reasons. */
  error?: string;
  /** Its postmaster runs but postgres answered no probe in time (ProbeResult.hung). */
  hung?: boolean;
}

export interface PoolBackend {
  name: string;
  status: 'up' | 'down' | 'unused';
  role: 'primary' | 'standby' | 'unknown';
}

export interface PoolObservation {
  reachable: boolean;
  /** The node pgpool sends writes to, or null. */
  primary: string | null;
  backends: PoolBackend[];
  configHash: string;
  error?: string;
  /** pgpool shows an attached node up but may still be handling the attach, ending every new
   *  session meanwhile (src/drivers/pgpool/failback.ts) */
  handlingAttach?: boolean;
  /** With several pool hosts: each one's pgpool (the fields above are those of the one serving
   *  clients: the virtual IP's holder, else the first that answers). */
  hosts?: PoolHostObservation[];
  /** pool host machines that the spec no longer names (they are removed) */
  leftHosts?: string[];
}

/** One pool host's pgpool and its part in the virtual IP. */
export interface PoolHostObservation extends Omit<PoolObservation, 'hosts' | 'leftHosts'> {
  name: string;
  /** pgpool's port: 'open' (a connect succeeds), 'refused' (nothing listens: pgpool is dead on a
   *  live host), 'silent' (no answer within connectTimeoutMs: host down or cut off) */
  port: 'open' | 'refused' | 'silent';
  /** looks in a row the port was silent */
  silentLooks: number;
  /** looks in a row its port accepted but pgpool did not answer over PCP, not while pgop
   *  switched it (a pgpool just killed: the port lingers a moment; or a hung one) */
  unansweredLooks: number;
  /** PCP's port, connected at the same time: pgpool's own process answers there while every
   *  child is busy and a full listen backlog leaves the clients' port silent under load */
  pcpPort: 'open' | 'refused' | 'silent';
  /** holds the virtual IP, as last read over SSH (null: never read) */
  holdsVip: boolean | null;
  /** the host's shell answered at the last look (holdsVip is current) */
  shellReachable: boolean;
  /** the machine's state as the provider reports it, when it can */
  machine?: MachineObservation['state'];
}

export interface SyncSet {
  names: string[];
  quorum: number;
  primary: string;
  elected?: true;
}

export interface ClusterObservation {
  cluster: string;
  at: number; // ms since epoch (injected clock)
  nodes: Record<string, NodeObservation>;
  pool: PoolObservation | null;
  /** An urgent look: these nodes' postmasters were reported dead, and the other nodes' probes
   *  may be up to two probe intervals old (their last answers, not waited for afresh). */
  urgent?: string[];
  /** The primary's synchronous standby set as last seen while it was healthy (carried across
   *  passes and operator restarts through the store): which nodes may hold acknowledged commits
   *  when the primary is lost. Absent when never seen. Right after an election, until the new
   *  primary's own set is seen: the promoted node and the standbys that were level with it
   *  (`elected`, quorum = all of them: each holds every commit acknowledged before). */
  lastSync?: SyncSet;
  /** Nodes that left the spec but still have a record or a machine, with the NodeSpec they are
   *  reached by (the one recorded when they were made, else the provider's address): their
   *  removal acts on these. They are observed like spec nodes (in `nodes`). */
  strays?: Record<string, import('../spec/types.js').NodeSpec>;
  /** spec.backup: the repository's server and stanza, as the operator's host sees them */
  backup?: BackupObservation;
}

export interface BackupObservation {
  /** outdated: it runs with a configuration or certificate older than the one wanted */
  server: 'running' | 'stopped' | 'outdated';
  /** the cluster's stanza exists in the repository */
  stanza: boolean;
  /** the database system the stanza holds WAL of (archive.info's db-system-id) */
  stanzaSystemId?: string;
  /** why the server is not running, when known (its last words) */
  error?: string;
  /** what `pgbackrest info` said is wrong with the stanza (it exits 0 on such errors) */
  stanzaProblem?: string;
  /** the stanza's backups, oldest first, as `pgbackrest info` last listed them */
  backups?: BackupRecord[];
  /** when that list was read (ms) */
  listedAt?: number;
}

/** One backup in the repository (pgbackrest info). Times in ms, sizes in bytes. */
export interface BackupRecord {
  label: string;
  type: 'full' | 'diff' | 'incr';
  /** the backup it depends on (diff, incr) */
  prior?: string;
  startedAt: number;
  stoppedAt: number;
  lsnStart: string;
  lsnStop: string;
  walStart: string;
  walStop: string;
  /** the database's size, and what this backup copied of it */
  size: number;
  delta: number;
  /** in the repository: the whole set this backup needs, and this backup's own part */
  repoSize: number;
  repoDelta: number;
  /** pgBackRest found page checksum errors while copying */
  error: boolean;
}
