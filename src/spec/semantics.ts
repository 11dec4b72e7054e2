// The checks a JSON Schema cannot express: cross-references, networks and addresses, pgpool
// sizing, names that must be unique. The raw document may be schema-invalid here, so every
// access is guarded.

import { cronError } from '../plan/backup-schedule.js';
import { cloneRateKBps } from './rates.js';
import { statSync } from 'node:fs';
import { formatIpv4, inNetwork, networkOf, parseCidr, parseIpv4, type Ipv4Network } from '../net/ipv4.js';
import { Reporter, describe, formatPath, type Seg } from './report.js';
import {
  LAB_POSTGRES_MOUNTS,
  LAB_PRIVATE_MOUNTS,
  MANAGED_PARAMETERS,
  RESERVED_NODE_NAME,
  arr,
  libvirtUriProblem,
  obj,
  pathProblem,
  str,
  type Raw,
} from './rules.js';
import type { ParseOptions } from './parse.js';
import { PGPOOL_MAX_POOL, pgpoolConnectionBudget } from './types.js';

interface Net extends Ipv4Network {
  cidr: string;
  path: Seg[];
}

export function checkSemantics(rawDoc: unknown, r: Reporter, opts: ParseOptions = {}): void {
  const spec = obj(obj(rawDoc).spec);
  const provider = obj(spec.provider);
  const ptype = str(provider.type);
  const S: Seg[] = ['spec'];
  const nodes = arr(spec.nodes);

  // --- networks and addresses
  let net: Net | undefined;
  const reserved = new Map<number, string>(); // address -> why it is not for nodes
  if (ptype === 'lab') {
    net = checkNetwork(provider.network, [...S, 'provider', 'network'], r);
    const stateDir = provider.stateDir;
    const inside =
      typeof stateDir === 'string'
        ? LAB_PRIVATE_MOUNTS.find((m) => stateDir === m || stateDir.startsWith(`${m}/`))
        : undefined;
    if (inside)
      r.add(
        [...S, 'provider', 'stateDir'],
        `${String(stateDir)} lies under ${inside}, ` +
          `which every lab node mounts privately: choose another directory`,
      );
    if (net) reserved.set(net.base + 1, "is reserved for the lab bridge (the operator's own address)");
  } else if (ptype === 'libvirt') {
    const n = obj(provider.network);
    net = checkNetwork(n.cidr, [...S, 'provider', 'network', 'cidr'], r);
    const gwPath: Seg[] = [...S, 'provider', 'network', 'gateway'];
    const gw = parseIpv4(n.gateway);
    if (net && gw !== undefined) {
      const why = outsideOrEdge(gw, net);
      if (why) r.add(gwPath, `gateway ${String(n.gateway)} ${why}`);
      else reserved.set(gw, "is the network's gateway");
    }
    if (typeof provider.uri === 'string') checkUri(provider.uri, [...S, 'provider', 'uri'], r);
    if (opts.checkHost) checkBaseImage(provider, nodes, [...S, 'provider', 'baseImage'], r);
  }

  const checkAddress = (value: unknown, path: Seg[]): number | undefined => {
    const ip = parseIpv4(value);
    if (ip === undefined || !net) return ip;
    const why = outsideOrEdge(ip, net) ?? reserved.get(ip);
    if (why) r.add(path, `${String(value)} ${why}`);
    return ip;
  };

  const names = new Map<string, number>();
  const addresses = new Map<number, number>();
  nodes.forEach((n, i) => {
    const node = obj(n);
    const np: Seg[] = [...S, 'nodes', i];
    const name = str(node.name);
    if (name === RESERVED_NODE_NAME && (ptype === 'lab' || ptype === 'libvirt')) {
      r.add([...np, 'name'], `the node name ${RESERVED_NODE_NAME} is reserved for the pgpool host`);
    }
    if (name !== undefined) {
      const prev = names.get(name);
      if (prev !== undefined)
        r.add(
          [...np, 'name'],
          `duplicate node name ${name} (also ${formatPath([...S, 'nodes', prev, 'name'])})`,
        );
      else names.set(name, i);
    }
    const ip = checkAddress(node.address, [...np, 'address']);
    if (ip !== undefined) {
      const prev = addresses.get(ip);
      if (prev !== undefined) {
        r.add(
          [...np, 'address'],
          `duplicate node address ${String(node.address)} ` +
            `(also ${formatPath([...S, 'nodes', prev, 'address'])})`,
        );
      } else addresses.set(ip, i);
    }
    if (node.hypervisor !== undefined) {
      if (ptype !== 'libvirt') r.add([...np, 'hypervisor'], 'hypervisor is for libvirt nodes only');
      else if (typeof node.hypervisor === 'string') checkUri(node.hypervisor, [...np, 'hypervisor'], r);
    }
  });

  // --- pgpool
  const pgpool = obj(spec.pgpool);
  const pp: Seg[] = [...S, 'pgpool'];
  const pgpoolOn = pgpool.enabled !== false;
  const notANode = (value: unknown, path: Seg[], what: string) => {
    const ip = checkAddress(value, path);
    const owner = ip === undefined ? undefined : addresses.get(ip);
    if (owner !== undefined)
      r.add(
        path,
        `${what} ${String(value)} is also the address of ${formatPath([...S, 'nodes', owner, 'address'])}`,
      );
    return ip;
  };
  const onNodes = pgpool.onNodes === true;
  if (pgpool.address === undefined) {
    if (pgpoolOn && onNodes) {
      r.add(
        [...pp, 'address'],
        'missing required field "address" (the virtual IP the nodes\' pgpools pass on)',
        {
          at: pp,
        },
      );
    } else if (ptype === 'lab' && pgpoolOn && pgpool.hosts === undefined) {
      r.add(
        [...pp, 'address'],
        'missing required field "address" (the lab runs pgpool on a host of its own)',
        { at: pp },
      );
    }
  }
  const endpoint = notANode(pgpool.address, [...pp, 'address'], 'pgpool address');
  if (onNodes && pgpool.hosts !== undefined)
    r.add(
      [...pp, 'onNodes'],
      'pgpool runs either on the nodes or on pool hosts of its own: choose one (remove hosts or onNodes)',
    );
  else if (pgpool.hosts !== undefined) checkPoolHosts(pgpool, pp, { names, endpoint, notANode }, r);
  checkWatchdog(pgpool, pp, r);
  notANode(obj(pgpool.watchdog).vip, [...pp, 'watchdog', 'vip'], 'watchdog vip');
  if (typeof pgpool.port === 'number' && pgpool.port === (pgpool.pcpPort ?? 9898)) {
    r.add([...pp, 'pcpPort'], `pcpPort must differ from port (${pgpool.port})`);
  }

  // --- replication
  const repl = obj(spec.replication);
  const standbys = nodes.length - 1;
  const quorum = typeof repl.syncQuorum === 'number' ? repl.syncQuorum : 1;
  if (repl.mode === 'sync' && nodes.length > 0 && quorum > standbys) {
    r.add(
      [...S, 'replication', 'syncQuorum'],
      `syncQuorum ${quorum} is more than the ${standbys} standby${standbys === 1 ? '' : 's'} ` +
        `of ${nodes.length} node${nodes.length === 1 ? '' : 's'}: sync mode needs syncQuorum <= nodes - 1`,
    );
  }
  const replUser = str(repl.user) ?? 'replicator';
  const kBps = cloneRateKBps(str(repl.cloneMaxRate));
  if (kBps !== null && (kBps < 32 || kBps > 1024 * 1024)) {
    const rate = str(repl.cloneMaxRate)!;
    r.add([...S, 'replication', 'cloneMaxRate'], `${rate} is outside pg_basebackup's range of 32k to 1024M`);
  }

  // --- postgres parameters and hba
  const pg = obj(spec.postgres);
  if (ptype === 'lab') {
    // A lab node shares the machine's file system except its private mounts: a directory
    // elsewhere would be the machine's own, shared by every node (and made postgres-owned).
    for (const key of ['dataDir', 'archiveDir', 'backupDir', 'logDir']) {
      const dir = pg[key];
      if (typeof dir !== 'string' || pathProblem('postgres', dir) !== undefined) continue;
      if (!LAB_POSTGRES_MOUNTS.some((m) => dir === m || dir.startsWith(`${m}/`))) {
        r.add(
          [...S, 'postgres', key],
          `${dir} is not private to a lab node: ` +
            `use a directory at or below ${LAB_POSTGRES_MOUNTS.join(', ')}`,
        );
      }
    }
  }
  const params = obj(pg.parameters);
  const parp: Seg[] = [...S, 'postgres', 'parameters'];
  for (const key of Object.keys(params)) {
    if (MANAGED_PARAMETERS.has(key))
      r.add([...parp, key], `${key} is managed by pgop (set per node): remove it from the spec`, {
        atKey: true,
      });
  }
  if (params.wal_level === 'minimal')
    r.add([...parp, 'wal_level'], 'wal_level minimal cannot feed standbys: use replica or logical');
  for (const [key, what] of [
    ['max_wal_senders', 'a sender'],
    ['max_replication_slots', 'a slot'],
  ] as const) {
    const v = params[key];
    if (key === 'max_replication_slots' && repl.slots === false) continue;
    if (typeof v === 'number' && v < standbys)
      r.add([...parp, key], `${key} ${v} is less than the ${standbys} standbys (each needs ${what})`);
  }
  if (pgpoolOn && typeof pgpool.numInitChildren === 'number') {
    const { maxConnections, reserved, maxChildren } = pgpoolConnectionBudget(params);
    const n = pgpool.numInitChildren;
    if (n > maxChildren) {
      r.add(
        [...pp, 'numInitChildren'],
        `numInitChildren ${n} x max_pool ${PGPOOL_MAX_POOL} = ${n * PGPOOL_MAX_POOL} ` +
          `pooled sessions per backend, more than max_connections ${maxConnections} ` +
          `- superuser_reserved_connections ${reserved} = ${maxConnections - reserved}: ` +
          `use at most ${Math.max(0, maxChildren)}, or raise postgres.parameters.max_connections`,
      );
    }
  }
  const tls = obj(spec.tls);
  if (
    typeof tls.renewBeforeDays === 'number' &&
    tls.renewBeforeDays >= ((tls.certificateDays as number | undefined) ?? 90)
  ) {
    r.add(
      [...S, 'tls', 'renewBeforeDays'],
      `renewBeforeDays ${tls.renewBeforeDays} must be less than certificateDays ` +
        `(${(tls.certificateDays as number | undefined) ?? 90}): certificates would be renewed on every pass`,
    );
  }
  const archiveOn =
    params.archive_mode === true || params.archive_mode === 'on' || params.archive_mode === 'always';
  if (archiveOn && params.archive_command === undefined && pg.archiveScript === false && !spec.backup) {
    r.add(
      [...parp, 'archive_mode'],
      'archive_mode is on but there is no archive_command and postgres.archiveScript is false: ' +
        'WAL would pile up',
    );
  }
  if (spec.backup !== undefined) checkBackup(spec, params, parp, r);
  if (spec.bootstrap !== undefined) checkRestore(spec, str(obj(obj(rawDoc).metadata).name), r);
  arr(pg.hba).forEach((h, i) => {
    const rule = obj(h);
    const hp: Seg[] = [...S, 'postgres', 'hba', i];
    if (rule.type === 'local' && rule.address !== undefined)
      r.add([...hp, 'address'], 'local rules take no address');
    if (typeof rule.type === 'string' && rule.type !== 'local' && rule.address === undefined) {
      r.add([...hp, 'address'], `missing required field "address" (${rule.type} rules need one)`, { at: hp });
    }
  });

  // --- roles, databases, schemas, grants
  const roles = new Map<string, number>();
  arr(spec.roles).forEach((x, i) => {
    const name = str(obj(x).name);
    if (name === undefined) return;
    const p: Seg[] = [...S, 'roles', i, 'name'];
    if (name === 'postgres')
      r.add(p, 'postgres is the superuser pgop manages (its password is spec.postgres.superuserPassword)');
    else if (name === replUser)
      r.add(p, `${name} is the replication user pgop manages (spec.replication.user)`);
    else if (roles.has(name))
      r.add(p, `duplicate role ${name} (also ${formatPath([...S, 'roles', roles.get(name)!, 'name'])})`);
    else roles.set(name, i);
  });
  const roleExists = (v: unknown, path: Seg[]) => {
    if (typeof v === 'string' && v !== 'postgres' && !roles.has(v))
      r.add(path, `unknown role "${v}": not in spec.roles (nor postgres)`);
  };
  const databases = new Map<string, Set<string>>();
  arr(spec.databases).forEach((x, i) => {
    const db = obj(x);
    const dp: Seg[] = [...S, 'databases', i];
    roleExists(db.owner, [...dp, 'owner']);
    const schemas = new Set<string>();
    arr(db.schemas).forEach((y, j) => {
      const sc = obj(y);
      const sp: Seg[] = [...dp, 'schemas', j];
      roleExists(sc.owner, [...sp, 'owner']);
      const sn = str(sc.name);
      if (sn === undefined) return;
      if (schemas.has(sn)) r.add([...sp, 'name'], `duplicate schema ${sn} in this database`);
      schemas.add(sn);
    });
    const name = str(db.name);
    if (name === undefined) return;
    if (databases.has(name)) r.add([...dp, 'name'], `duplicate database ${name}`);
    else databases.set(name, schemas);
  });
  arr(spec.grants).forEach((x, i) => {
    const g = obj(x);
    const gp: Seg[] = [...S, 'grants', i];
    roleExists(g.role, [...gp, 'role']);
    if (typeof g.database !== 'string') return;
    const schemas = databases.get(g.database);
    if (!schemas) {
      r.add([...gp, 'database'], `unknown database "${g.database}": not in spec.databases`);
    } else if (typeof g.schema === 'string' && g.schema !== 'public' && !schemas.has(g.schema)) {
      r.add([...gp, 'schema'], `unknown schema "${g.schema}": not in the schemas of database ${g.database}`);
    }
  });
}

function checkNetwork(value: unknown, path: Seg[], r: Reporter): Net | undefined {
  if (typeof value !== 'string') return undefined;
  const parsed = parseCidr(value);
  if (!parsed) return undefined; // the schema pattern reports it
  if (parsed.prefixLen > 30) {
    r.add(path, `network ${value} is too small: use a prefix of /30 or shorter`);
    return undefined;
  }
  const net = networkOf(parsed.address, parsed.prefixLen);
  if (net.base !== parsed.address) {
    r.add(path, `${value} has host bits set: the network is ${formatIpv4(net.base)}/${net.prefixLen}`);
    return undefined;
  }
  return { ...net, cidr: value, path };
}

function outsideOrEdge(ip: number, net: Net): string | undefined {
  if (!inNetwork(ip, net)) return `is outside the network ${net.cidr} (${formatPath(net.path)})`;
  if (ip === net.base) return `is the network address of ${net.cidr}`;
  if (ip === net.broadcast) return `is the broadcast address of ${net.cidr}`;
  return undefined;
}

function checkUri(uri: string, path: Seg[], r: Reporter): void {
  const why = libvirtUriProblem(uri);
  if (why) r.add(path, `${why}, got ${describe(uri)}`);
}

/** A local hypervisor (no host in its URI; not libvirt's test driver) reads the base image from
 *  this machine: it must be a file here before anything is created. Remote hypervisors are
 *  checked when their first volume is made. */
function checkBaseImage(provider: Raw, nodes: unknown[], path: Seg[], r: Reporter): void {
  const image = provider.baseImage;
  if (typeof image !== 'string' || pathProblem('host', image) !== undefined) return; // the schema reports it
  const uris = [
    typeof provider.uri === 'string' ? provider.uri : 'qemu:///system',
    ...nodes.map((n) => obj(n).hypervisor).filter((u): u is string => typeof u === 'string'),
  ];
  const local = uris.find((u) => /^[A-Za-z][A-Za-z0-9+.-]*:\/\/\//.test(u) && !/^test[+:]/.test(u));
  if (!local) return;
  let why: string | undefined;
  try {
    if (!statSync(image).isFile()) why = 'is not a file';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    why =
      code === 'ENOENT'
        ? 'does not exist'
        : code === 'EACCES'
          ? 'cannot be read (permission denied)'
          : `cannot be read (${String(code)})`;
  }
  if (why) {
    r.add(
      path,
      `base image ${image} ${why} on this machine (the hypervisor of ${local}): ` +
        `build it with \`pgop image build\` or point baseImage at a downloaded cloud image`,
    );
  }
}

/** pgpool's own watchdog moves the virtual IP among several pgpools: it needs them (onNodes or
 *  hosts) and the address they pass; a `vip` of its own, from before, must be that address. */
function checkWatchdog(pgpool: Raw, pp: Seg[], r: Reporter): void {
  const wd = obj(pgpool.watchdog);
  if (wd.enabled !== true || pgpool.enabled === false) return;
  if (pgpool.onNodes !== true && pgpool.hosts === undefined)
    r.add(
      [...pp, 'watchdog', 'enabled'],
      "pgpool's own watchdog moves the virtual IP among several pgpools: set onNodes: true, or " +
        'list pool hosts in hosts, with address as the virtual IP',
    );
  else if (wd.vip !== undefined && wd.vip !== pgpool.address)
    r.add(
      [...pp, 'watchdog', 'vip'],
      `the watchdog moves the cluster's endpoint, address ${String(pgpool.address)}: ` +
        'remove vip, or make it the same address',
    );
}

/** Pool hosts: names unique among nodes and pool hosts, addresses their own (not a node's, not the
 *  virtual IP they pass among them), and a virtual IP to pass. */
function checkPoolHosts(
  pgpool: Raw,
  pp: Seg[],
  known: {
    names: Map<string, number>;
    endpoint: number | undefined;
    notANode: (value: unknown, path: Seg[], what: string) => number | undefined;
  },
  r: Reporter,
): void {
  if (pgpool.address === undefined)
    r.add([...pp, 'address'], 'missing required field "address" (the virtual IP the pool hosts pass on)', {
      at: pp,
    });
  const hostNames = new Map<string, number>();
  const hostAddresses = new Map<number, number>();
  arr(pgpool.hosts).forEach((raw, i) => {
    const host = obj(raw);
    const hp: Seg[] = [...pp, 'hosts', i];
    const name = str(host.name);
    const node = name === undefined ? undefined : known.names.get(name);
    if (node !== undefined)
      r.add([...hp, 'name'], `pool host name ${name} is also ${formatPath(['spec', 'nodes', node, 'name'])}`);
    const sameName = name === undefined ? undefined : hostNames.get(name);
    if (sameName !== undefined)
      r.add(
        [...hp, 'name'],
        `duplicate pool host name ${name} (also ${formatPath([...pp, 'hosts', sameName])})`,
      );
    else if (name !== undefined) hostNames.set(name, i);
    const ip = known.notANode(host.address, [...hp, 'address'], 'pool host address');
    if (ip === undefined) return;
    if (ip === known.endpoint)
      r.add(
        [...hp, 'address'],
        `${String(host.address)} is the virtual IP (spec.pgpool.address): ` +
          'give the pool host an address of its own',
      );
    const sameAddress = hostAddresses.get(ip);
    if (sameAddress !== undefined)
      r.add(
        [...hp, 'address'],
        `duplicate pool host address ${String(host.address)} ` +
          `(also ${formatPath([...pp, 'hosts', sameAddress])})`,
      );
    else hostAddresses.set(ip, i);
  });
}

/** A restore is served by the cluster's own repository server, and the restored cluster must
 *  never archive into its source's stanza (one writer per stanza). */
function checkRestore(spec: Raw, name: string | undefined, r: Reporter): void {
  const restore = obj(obj(spec.bootstrap).restore);
  const at = ['spec', 'bootstrap', 'restore'];
  if (spec.backup === undefined)
    r.add([...at], "needs spec.backup: the cluster's own repository server serves the restore");
  const sameRepo = str(obj(obj(spec.backup).repo).path) === str(restore.repoPath);
  if (sameRepo && str(restore.stanza) === name)
    r.add(
      [...at, 'stanza'],
      "is this cluster's own stanza in the same repository: a restored copy must archive elsewhere " +
        '(choose another cluster name or backup.repo.path)',
    );
}

/** pgBackRest owns archiving when `backup` is set: nothing else may claim archive_command, and
 *  pgBackRest refuses archive_mode=always (two hosts pushing the same WAL). */
function checkBackup(spec: Raw, params: Raw, parp: Seg[], r: Reporter): void {
  const pg = obj(spec.postgres);
  const why = 'spec.backup archives WAL with pgBackRest';
  if (pg.archiveScript === true)
    r.add(['spec', 'postgres', 'archiveScript'], `must be false (or left out): ${why}`);
  if (params.archive_command !== undefined)
    r.add([...parp, 'archive_command'], `must be left out: ${why} (pgop writes archive-push)`);
  if (params.archive_timeout !== undefined)
    r.add([...parp, 'archive_timeout'], 'must be left out: spec.backup.archiveTimeoutS sets it');
  const mode = params.archive_mode;
  if (mode !== undefined && mode !== true && mode !== 'on')
    r.add(
      [...parp, 'archive_mode'],
      `must be on (or left out): ${why}, which needs it on and refuses "always"`,
    );
  if (str(obj(spec.provider).type) === 'sim')
    r.add(['spec', 'backup'], 'needs a lab or libvirt provider: the repository is served on the gateway');
  if (obj(spec.tls).enabled === false)
    r.add(['spec', 'tls', 'enabled'], "must be true with spec.backup: pgBackRest's server speaks TLS only");
  const schedule = obj(obj(spec.backup).schedule);
  for (const type of ['full', 'diff', 'incr']) {
    const expr = schedule[type];
    const error = typeof expr === 'string' ? cronError(expr) : null;
    if (error) r.add(['spec', 'backup', 'schedule', type], error);
  }
}
