// Defaults: the typed spec. Only called on a document that passed every check.

import { internal } from '../errors.js';
import type {
  BackupSpec,
  RestoreSource,
  ClusterSpec,
  DatabaseSpec,
  GrantSpec,
  HbaRule,
  NodeSpec,
  PgParameterValue,
  PgpoolSpec,
  PostgresSpec,
  ProviderSpec,
  ReplicationSpec,
  RoleSpec,
  SecretRef,
  TlsSpec,
} from './types.js';
import { pgpoolConnectionBudget } from './types.js';
import { SIM_SECRET, arr, obj, str, type Raw, type RawDoc } from './rules.js';

export function normalize(doc: RawDoc): ClusterSpec {
  const s = doc.spec;
  const p = obj(s.provider);
  const isSim = p.type === 'sim';
  const pg = obj(s.postgres);
  const version = (pg.version as number | undefined) ?? 15;
  const repl = obj(s.replication);
  const pool = obj(s.pgpool);
  const wd = obj(pool.watchdog);
  const fd = obj(s.failureDetection);

  const postgres: PostgresSpec = {
    version,
    parameters: { ...(pg.parameters as Record<string, PgParameterValue> | undefined) },
    dataDir: str(pg.dataDir) ?? `/u01/pg${version}/data`,
    archiveDir: str(pg.archiveDir) ?? '/u02/archive',
    backupDir: str(pg.backupDir) ?? '/u02/backup',
    logDir: str(pg.logDir) ?? '/var/log/postgres',
    archiveScript: (pg.archiveScript as boolean | undefined) ?? s.backup === undefined,
    superuserPassword: secret(pg.superuserPassword, isSim),
    hba: arr(pg.hba).map((x) => {
      const h = obj(x);
      return omitUndefined({
        type: h.type as HbaRule['type'],
        database: h.database as string,
        user: h.user as string,
        address: str(h.address),
        method: h.method as HbaRule['method'],
      });
    }),
  };
  const replication: ReplicationSpec = {
    mode: (repl.mode as ReplicationSpec['mode'] | undefined) ?? 'async',
    syncQuorum: (repl.syncQuorum as number | undefined) ?? 1,
    user: str(repl.user) ?? 'replicator',
    password: secret(repl.password, isSim),
    slots: (repl.slots as boolean | undefined) ?? true,
    ...(str(repl.cloneMaxRate) ? { cloneMaxRate: str(repl.cloneMaxRate)! } : {}),
  };
  const pgpool: PgpoolSpec = omitUndefined({
    enabled: (pool.enabled as boolean | undefined) ?? true,
    address: str(pool.address),
    hosts:
      pool.hosts === undefined
        ? undefined
        : arr(pool.hosts).map((x) => ({ name: String(obj(x).name), address: String(obj(x).address) })),
    onNodes: pool.onNodes === true ? true : undefined,
    port: (pool.port as number | undefined) ?? 9999,
    pcpPort: (pool.pcpPort as number | undefined) ?? 9898,
    loadBalancing: (pool.loadBalancing as boolean | undefined) ?? true,
    primaryApplications: arr(pool.primaryApplications).map(String),
    watchdog: omitUndefined({ enabled: (wd.enabled as boolean | undefined) ?? false, vip: str(wd.vip) }),
    // pgpool's own default (32), or less when postgres would not take that many pooled sessions
    numInitChildren:
      (pool.numInitChildren as number | undefined) ??
      Math.max(1, Math.min(32, pgpoolConnectionBudget(obj(pg.parameters)).maxChildren)),
  });
  const nodes: NodeSpec[] = arr(s.nodes).map((x) => {
    const n = obj(x);
    return omitUndefined({
      name: n.name as string,
      address: n.address as string,
      vcpus: (n.vcpus as number | undefined) ?? 2,
      memoryMiB: (n.memoryMiB as number | undefined) ?? 1024,
      rootDiskGiB: (n.rootDiskGiB as number | undefined) ?? 20,
      dataDiskGiB: (n.dataDiskGiB as number | undefined) ?? 40,
      hypervisor: str(n.hypervisor),
    });
  });
  const roles: RoleSpec[] = arr(s.roles).map((x) => {
    const r = obj(x);
    return omitUndefined({
      name: r.name as string,
      login: (r.login as boolean | undefined) ?? true,
      superuser: (r.superuser as boolean | undefined) ?? false,
      createdb: (r.createdb as boolean | undefined) ?? false,
      password: r.password === undefined ? undefined : secret(r.password, false),
      searchPath: r.searchPath === undefined ? undefined : [...(r.searchPath as string[])],
    });
  });
  const databases: DatabaseSpec[] = arr(s.databases).map((x) => {
    const d = obj(x);
    return omitUndefined({
      name: d.name as string,
      owner: str(d.owner) ?? 'postgres',
      encoding: str(d.encoding) ?? 'UTF8',
      locale: str(d.locale),
      schemas: arr(d.schemas).map((y) => ({ name: obj(y).name as string, owner: obj(y).owner as string })),
    });
  });
  const grants: GrantSpec[] = arr(s.grants).map((x) => {
    const g = obj(x);
    return {
      role: g.role as string,
      database: g.database as string,
      schema: g.schema as string,
      schemaPrivileges: [...((g.schemaPrivileges as string[] | undefined) ?? ['USAGE'])],
      tablePrivileges: [...((g.tablePrivileges as string[] | undefined) ?? [])],
    };
  });

  return {
    apiVersion: 'pgop.dev/v1',
    kind: 'Cluster',
    name: doc.metadata.name as string,
    provider: normalizeProvider(p, doc.metadata.name as string),
    postgres,
    nodes,
    replication,
    pgpool,
    roles,
    databases,
    grants,
    failureDetection: {
      probeIntervalMs: (fd.probeIntervalMs as number | undefined) ?? 1000,
      missesBeforeFailover: (fd.missesBeforeFailover as number | undefined) ?? 3,
      connectTimeoutMs: (fd.connectTimeoutMs as number | undefined) ?? 1000,
      retryIntervalMs: (fd.retryIntervalMs as number | undefined) ?? 100,
    },
    // only when written: absent means the secure defaults (tlsOf), and existing specs keep their hash
    ...(s.tls === undefined
      ? {}
      : {
          tls: {
            enabled: (obj(s.tls).enabled as boolean | undefined) ?? true,
            certificateDays: (obj(s.tls).certificateDays as number | undefined) ?? 90,
            renewBeforeDays: (obj(s.tls).renewBeforeDays as number | undefined) ?? 30,
            hostRules: (obj(s.tls).hostRules as TlsSpec['hostRules'] | undefined) ?? 'hostssl',
          },
        }),
    ...(s.backup === undefined ? {} : { backup: normalizeBackup(obj(s.backup), isSim) }),
    ...(s.bootstrap === undefined
      ? {}
      : { bootstrap: { restore: normalizeRestore(obj(obj(s.bootstrap).restore), isSim) } }),
  };
}

function normalizeRestore(r: Raw, isSim: boolean): RestoreSource {
  const enc = r.encryption === undefined ? undefined : obj(r.encryption);
  return omitUndefined({
    stanza: r.stanza as string,
    repoPath: r.repoPath as string,
    encryption: enc ? { passphrase: secret(enc.passphrase, isSim) } : undefined,
    set: str(r.set),
    targetTime: str(r.targetTime),
    targetLsn: str(r.targetLsn),
  });
}

function normalizeBackup(b: Raw, isSim: boolean): BackupSpec {
  const repo = obj(b.repo);
  const enc = b.encryption === undefined ? undefined : obj(b.encryption);
  const retention = obj(b.retention);
  return omitUndefined({
    repo: {
      path: repo.path as string,
      port: (repo.port as number | undefined) ?? 8432,
      nodePort: (repo.nodePort as number | undefined) ?? 8433,
    },
    compression: (b.compression as BackupSpec['compression'] | undefined) ?? 'zst',
    encryption: enc ? { passphrase: secret(enc.passphrase, isSim) } : undefined,
    archiveTimeoutS: (b.archiveTimeoutS as number | undefined) ?? 60,
    schedule: omitUndefined({
      full: str(obj(b.schedule).full),
      diff: str(obj(b.schedule).diff),
      incr: str(obj(b.schedule).incr),
    }),
    retention: omitUndefined({
      full: (retention.full as number | undefined) ?? 2,
      diff: retention.diff as number | undefined,
    }),
    processes: (b.processes as number | undefined) ?? 1,
  });
}

function normalizeProvider(p: Raw, cluster: string): ProviderSpec {
  if (p.type === 'sim') return { type: 'sim' };
  if (p.type === 'lab')
    return omitUndefined({ type: 'lab' as const, network: p.network as string, stateDir: str(p.stateDir) });
  const pool = obj(p.pool);
  const net = obj(p.network);
  const disk = obj(p.dataDisk);
  return {
    type: 'libvirt',
    uri: str(p.uri) ?? 'qemu:///system',
    baseImage: p.baseImage as string,
    pool:
      p.pool === undefined
        ? { name: 'pgop', path: '/var/lib/pgop/pool' }
        : { name: pool.name as string, path: pool.path as string },
    network: omitUndefined({
      name: str(net.name) ?? `pgop-${cluster}`,
      cidr: net.cidr as string,
      gateway: net.gateway as string,
      bridge: str(net.bridge),
    }),
    dataDisk: {
      layout: (disk.layout as 'lvm' | 'plain' | undefined) ?? 'lvm',
      filesystem: (disk.filesystem as 'xfs' | 'ext4' | undefined) ?? 'xfs',
    },
    osFamily: (p.osFamily as 'debian' | 'rhel' | undefined) ?? 'debian',
    domainType: (p.domainType as 'auto' | 'kvm' | 'qemu' | undefined) ?? 'auto',
    sshUser: str(p.sshUser) ?? 'pgop',
  };
}

function secret(v: unknown, simDefault: boolean): SecretRef {
  const o = obj(v);
  if (typeof o.env === 'string') return { env: o.env };
  if (typeof o.file === 'string') return { file: o.file };
  if (simDefault) return { ...SIM_SECRET };
  throw internal('cannot normalize spec: secret reference missing after validation');
}

/** Optional fields are left out rather than set to undefined (cleaner equality and JSON). */
function omitUndefined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as Array<keyof T>) if (o[k] === undefined) delete o[k];
  return o;
}
