// The typed form of a Cluster spec, after YAML parsing, JSON Schema validation, defaults and
// semantic checks (src/spec/parse.ts). schema/cluster.schema.json is the source of truth for
// what a user may write; these types mirror it with every default filled in.

import { internal, terminal } from '../errors.js';
import { formatIpv4, networkOf, parseCidr } from '../net/ipv4.js';

/** A secret is never written in a spec: it is referenced and resolved at use time only. */
export type SecretRef = { env: string } | { file: string };

export type PgParameterValue = string | number | boolean;

export interface NodeSpec {
  name: string;
  address: string; // IPv4, inside the provider's network
  vcpus: number;
  memoryMiB: number;
  rootDiskGiB: number;
  dataDiskGiB: number;
  /** libvirt only: which hypervisor URI this node lives on (defaults to the provider's uri). */
  hypervisor?: string;
}

export interface SimProviderSpec {
  type: 'sim';
}

export interface LabProviderSpec {
  type: 'lab';
  /** CIDR of the lab bridge network, e.g. 10.77.0.0/24; node addresses must be inside it. */
  network: string;
  /** Where per-node directories (the seed's /u01, /u02), keys and sockets live. */
  stateDir?: string;
}

export interface LibvirtProviderSpec {
  type: 'libvirt';
  uri: string;
  baseImage: string;
  pool: { name: string; path: string };
  network: { name: string; cidr: string; gateway: string; bridge?: string };
  dataDisk: { layout: 'lvm' | 'plain'; filesystem: 'xfs' | 'ext4' };
  osFamily: 'debian' | 'rhel';
  domainType: 'auto' | 'kvm' | 'qemu';
  sshUser: string;
}

export type ProviderSpec = SimProviderSpec | LabProviderSpec | LibvirtProviderSpec;

export interface HbaRule {
  type: 'local' | 'host' | 'hostssl' | 'hostnossl';
  database: string;
  user: string;
  address?: string;
  method: 'scram-sha-256' | 'peer' | 'reject' | 'cert';
}

export interface PostgresSpec {
  version: number;
  /** postgresql.conf settings, written to conf.d/pgop.conf (seed: conf.d/custom.conf). */
  parameters: Record<string, PgParameterValue>;
  dataDir: string; // seed: /u01/pg11/data
  archiveDir: string; // seed: /u02/archive
  backupDir: string; // seed: /u02/backup
  logDir: string; // seed: /var/log/postgres
  /** The archive script (seed: /opt/postgres/scripts/archive.sh); %p %f are passed to it. */
  archiveScript: boolean;
  superuserPassword: SecretRef;
  hba: HbaRule[];
}

export interface ReplicationSpec {
  mode: 'async' | 'sync';
  /** sync only: ANY <quorum> (standbys...) */
  syncQuorum: number;
  user: string;
  password: SecretRef;
  slots: boolean;
  /** pg_basebackup --max-rate for a standby's clone (kB/s, or with a k or M suffix) */
  cloneMaxRate?: string;
}

export interface PgpoolSpec {
  enabled: boolean;
  /** The address clients use: the one pool host's own, or with `hosts` a virtual IP. */
  address?: string;
  /** pgpool on these machines, the virtual IP `address` held by one of them at a time */
  hosts?: PoolHostSpec[];
  /** pgpool on every node (the seed's layout), the virtual IP `address` held by one of them */
  onNodes?: boolean;
  port: number;
  pcpPort: number;
  loadBalancing: boolean;
  /** application_names whose sessions pgpool sends to the primary only */
  primaryApplications: string[];
  watchdog: { enabled: boolean; vip?: string };
  numInitChildren: number;
}

export interface PoolHostSpec {
  name: string;
  address: string;
}

/** The name of the one pool host of a spec without `pgpool.hosts` (no node may be called so). */
export const SINGLE_POOL_HOST = 'pool';

type PoolPlacement = { pgpool: PgpoolSpec; nodes: readonly NodeSpec[] };

/** The machines pgpool runs on: every node (onNodes), the spec's hosts, or the one pool host at
 *  `address`. */
export function poolHosts(spec: PoolPlacement): PoolHostSpec[] {
  const pp = spec.pgpool;
  if (!pp.enabled) return [];
  if (pp.onNodes) return spec.nodes.map((n) => ({ name: n.name, address: n.address }));
  if (pp.hosts && pp.hosts.length > 0) return pp.hosts;
  return pp.address ? [{ name: SINGLE_POOL_HOST, address: pp.address }] : [];
}

/** The pool hosts that are machines of their own, made and removed by the provider for pgpool
 *  (none when pgpool runs on the nodes: their machines are the nodes'). */
export function poolMachines(spec: PoolPlacement): PoolHostSpec[] {
  return spec.pgpool.onNodes ? [] : poolHosts(spec);
}

/** The pool host machines to make or start: `host`, or every one. A node's machine is the node's
 *  rules' to start (pgpool on the nodes), never marked a pool host's. */
export function poolMachineNames(spec: PoolPlacement & { name: string }, host?: string): string[] {
  const machines = poolMachines(spec).map((h) => h.name);
  if (host !== undefined && !machines.includes(host))
    throw internal(`${host} of ${spec.name} is no pool host machine`);
  return host === undefined ? machines : [host];
}

/** The node a pool host runs on, when pgpool runs on the nodes. */
export function poolHostNode(spec: PoolPlacement, host: string): NodeSpec | undefined {
  return spec.pgpool.enabled && spec.pgpool.onNodes ? spec.nodes.find((n) => n.name === host) : undefined;
}

/** The virtual IP pgop moves among the pool hosts, when there are several (or pgpool runs on
 *  the nodes). */
export function poolVip(spec: { pgpool: PgpoolSpec }): string | undefined {
  const pp = spec.pgpool;
  return pp.enabled && (pp.onNodes || (pp.hosts && pp.hosts.length > 0)) ? pp.address : undefined;
}

/** Whether pgpool holds the standbys up: only when it load-balances reads to them. Otherwise they
 *  serve no pgpool client, and keeping them out of pgpool spares its clients every attach and
 *  detach (pgpool 4.3 ends each session that runs a query while it carries one out). */
export const poolHoldsStandbys = (pgpool: Pick<PgpoolSpec, 'loadBalancing'>): boolean => pgpool.loadBalancing;

/** Whether a failed node can be kept from pgpool's sessions by a route on its pool hosts alone:
 *  pool hosts of their own (on a node a route would also cut replication) that hold standbys. */
export const poolCutsByRoute = (pgpool: Pick<PgpoolSpec, 'loadBalancing' | 'onNodes'>): boolean =>
  poolHoldsStandbys(pgpool) && !pgpool.onNodes;

/** The address of the operator's host on the cluster network: the lab hub's bridge address (the
 *  network's first), or the libvirt network's gateway. The backup repository's server listens
 *  there. */
export function repoHostAddress(cluster: ClusterSpec): string {
  const p = cluster.provider;
  if (p.type === 'libvirt') return p.network.gateway;
  const c = p.type === 'lab' ? parseCidr(p.network) : undefined;
  if (!c) throw terminal(`cannot place the backup repository of ${cluster.name}: no network`);
  return formatIpv4(networkOf(c.address, c.prefixLen).base + 1);
}

/** Backend sessions each pgpool child may cache (pgpool's max_pool; pgop writes it). */
export const PGPOOL_MAX_POOL = 4;

/** What pgpool may open on each backend, against what postgres lets non-superusers open
 *  (pgpool's sizing rule: num_init_children * max_pool <= max_connections -
 *  superuser_reserved_connections). Beyond it, client sessions fail once the cache fills. */
export function pgpoolConnectionBudget(parameters: Record<string, unknown>): {
  maxConnections: number;
  reserved: number;
  maxChildren: number;
} {
  const num = (v: unknown, dflt: number) => {
    const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : NaN;
    return Number.isInteger(n) ? n : dflt;
  };
  const maxConnections = num(parameters.max_connections, 100);
  const reserved = num(parameters.superuser_reserved_connections, 3);
  return { maxConnections, reserved, maxChildren: Math.floor((maxConnections - reserved) / PGPOOL_MAX_POOL) };
}

export interface RoleSpec {
  name: string;
  login: boolean;
  superuser: boolean;
  createdb: boolean;
  password?: SecretRef;
  searchPath?: string[];
}

export interface SchemaSpec {
  name: string;
  owner: string;
}

export interface GrantSpec {
  role: string;
  database: string;
  schema: string;
  /** GRANT <privileges> ON SCHEMA (e.g. USAGE) */
  schemaPrivileges: string[];
  /** ALTER DEFAULT PRIVILEGES IN SCHEMA ... GRANT <tablePrivileges> ON TABLES */
  tablePrivileges: string[];
}

export interface DatabaseSpec {
  name: string;
  owner: string;
  encoding: string;
  locale?: string;
  schemas: SchemaSpec[];
}

export interface FailureDetectionSpec {
  probeIntervalMs: number;
  missesBeforeFailover: number;
  /** Probe timeout (connect and query) in ms. */
  connectTimeoutMs: number;
  /** After a failed probe the next one comes this soon (not probeIntervalMs later): a dead
   *  primary is confirmed in missesBeforeFailover quick probes, a slow one is not failed over. */
  retryIntervalMs: number;
}

/** TLS among the operator, pgpool and the nodes (src/tls/). Secure by default. */
export interface TlsSpec {
  /** ssl=on, hostssl rules, verify-full connections (default true; off only for debugging) */
  enabled: boolean;
  /** lifetime of the server certificates pgop issues (default 90) */
  certificateDays: number;
  /** renew this many days before expiry (default 30) */
  renewBeforeDays: number;
  /** spec pg_hba rules of type host: made hostssl (default), or kept as written (TLS optional
   *  for those clients; also pgpool's client rules then) */
  hostRules: 'hostssl' | 'as-written';
}

/** WAL archiving with pgBackRest into a repository on the operator's host (src/drivers/backup/). */
export interface BackupSpec {
  repo: {
    /** the repository directory on the operator's host */
    path: string;
    /** the repository's pgbackrest server, on the cluster's gateway address (default 8432) */
    port: number;
    /** the pgbackrest server on a database node that a backup copies through (default 8433) */
    nodePort: number;
  };
  compression: 'zst' | 'lz4' | 'gz' | 'none';
  /** aes-256-cbc with this passphrase (read on the operator's host only) */
  encryption?: { passphrase: SecretRef };
  /** postgres' archive_timeout in seconds (default 60) */
  archiveTimeoutS: number;
  /** cron expressions (UTC) of the backups `pgop serve` takes by itself */
  schedule: BackupSchedule;
  /** full backups kept (default 2), and differential ones if fewer */
  retention: { full: number; diff?: number };
  /** pgBackRest's process-max for backups (default 1) */
  processes: number;
}

export type BackupType = 'full' | 'diff' | 'incr';
/** Strongest first: each type covers the ones after it (a full is also a diff and an incr). */
export const BACKUP_TYPES: readonly BackupType[] = ['full', 'diff', 'incr'];
export type BackupSchedule = Partial<Record<BackupType, string>>;

export interface ClusterSpec {
  apiVersion: 'pgop.dev/v1';
  kind: 'Cluster';
  name: string;
  provider: ProviderSpec;
  postgres: PostgresSpec;
  nodes: NodeSpec[];
  replication: ReplicationSpec;
  pgpool: PgpoolSpec;
  roles: RoleSpec[];
  databases: DatabaseSpec[];
  grants: GrantSpec[];
  failureDetection: FailureDetectionSpec;
  /** absent: the defaults (tlsOf() in src/tls/material.ts) */
  tls?: TlsSpec;
  /** absent: no pgBackRest (the seed's archive script, if postgres.archiveScript) */
  backup?: BackupSpec;
  /** how the first primary gets its data (default: initdb) */
  bootstrap?: { restore: RestoreSource };
}

/** A restore from another cluster's stanza (spec.bootstrap.restore). */
export interface RestoreSource {
  stanza: string;
  repoPath: string;
  encryption?: { passphrase: SecretRef };
  /** a backup label; default: the newest the target allows */
  set?: string;
  targetTime?: string;
  targetLsn?: string;
}
