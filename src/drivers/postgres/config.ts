// Pure generators for everything pgop writes on a postgres node: conf.d/pgop.conf, pg_hba.conf,
// the archive script, the standby and sync-standby includes, the per-node command-line options,
// and SCRAM-SHA-256 verifiers (so a clear password never reaches a server or its log).
//
// File layout on a node (seed: conf.d/custom.conf + include_dir):
//   $PGDATA/postgresql.conf          initdb's, plus `include_dir = 'conf.d'`
//   $PGDATA/conf.d/pgop.conf         cluster-wide settings from spec.postgres.parameters
//   $PGDATA/conf.d/pgop-standby.conf primary_conninfo + primary_slot_name (standbys only)
//   $PGDATA/conf.d/pgop-sync.conf    synchronous_standby_names (never ALTER SYSTEM: auto.conf is
//                                    copied by pg_basebackup / pg_rewind)
//   $PGDATA/pg_hba.conf              renderHba()
//   $PGDATA/pgop.confhash            desiredConfigHash() of what was last applied
//   /opt/pgop/scripts/archive.sh     renderArchiveScript() (lab: /opt/postgres/scripts, private per node)
// Per-node settings (listen_addresses, port, cluster_name, unix_socket_directories) are never in
// a file pg_basebackup/pg_rewind copies: they go on the postmaster command line (nodeOptions()).

import { parseLsn } from '../../observe/lsn.js';
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import {
  poolHosts,
  type ClusterSpec,
  type HbaRule,
  type NodeSpec,
  type PgParameterValue,
} from '../../spec/types.js';
import { terminal } from '../../errors.js';
import { tlsOf } from '../../tls/settings.js';
import { shellQuote } from '../ssh/quote.js';
import { syncStandbyNamesValue } from './sync-names.js';
import { archiveCommand, nodeConfPath, renderNodeConf } from '../backup/config.js';
import { besideDataDir } from './layout.js';

export { syncStandbyNamesValue };

export const PGOP_SCRIPT_DIR = '/opt/pgop/scripts';
export const ARCHIVE_SCRIPT_PATH = `${PGOP_SCRIPT_DIR}/archive.sh`;
/** Lab nodes share the machine's /opt except the seed's /opt/postgres, which each node has
 *  privately (src/drivers/lab/README.md): the script goes there, on the seed's own path. */
export const LAB_SCRIPT_DIR = '/opt/postgres/scripts';

export function scriptDir(cluster: ClusterSpec): string {
  return cluster.provider.type === 'lab' ? LAB_SCRIPT_DIR : PGOP_SCRIPT_DIR;
}

/** Where the archive script lives on a node of this cluster. */
export function archiveScriptPath(cluster: ClusterSpec): string {
  return `${scriptDir(cluster)}/archive.sh`;
}
export const SOCKET_DIR = '/var/run/postgresql';
export const DEFAULT_PORT = 5432;
export const CONF_DIR = 'conf.d';
export const CONF_FILE = 'pgop.conf';
export const STANDBY_CONF_FILE = 'pgop-standby.conf';
export const SYNC_CONF_FILE = 'pgop-sync.conf';
export const CONFHASH_FILE = 'pgop.confhash';
/** The line pgop makes sure postgresql.conf ends with. */
export const INCLUDE_DIR_LINE = `include_dir = '${CONF_DIR}'`;

/** Per-node settings: never written to a file that a clone or rewind copies. */
export const PER_NODE_KEYS = ['listen_addresses', 'port', 'cluster_name', 'unix_socket_directories'] as const;
/** Settings pgop manages in their own files (or that must never come from the spec). */
export const MANAGED_KEYS = [
  'synchronous_standby_names',
  'primary_conninfo',
  'primary_slot_name',
  'recovery_target_timeline',
  'include',
  'include_dir',
  'include_if_exists',
  'data_directory',
  'config_file',
  'hba_file',
  'ident_file',
] as const;

/** Settings pgop owns while TLS is on (the spec's values are ignored, as for MANAGED_KEYS). */
export const TLS_MANAGED_KEYS = ['ssl', 'ssl_cert_file', 'ssl_key_file', 'ssl_ca_file'] as const;

/** Where a node's TLS files live: beside the data directory (like the replication passfile), never
 *  inside it, so no clone or rewind copies another node's key. Owner postgres, key 0600. */
export function tlsNodePaths(cluster: ClusterSpec): { cert: string; key: string; ca: string } {
  return {
    cert: besideDataDir(cluster, 'pgop-server.crt'),
    key: besideDataDir(cluster, 'pgop-server.key'),
    ca: besideDataDir(cluster, 'pgop-ca.crt'),
  };
}

/** libpq options for the node's own outgoing connections (replication, pg_basebackup, pg_rewind):
 *  verify-full against the cluster CA; none while TLS is off. */
export function nodeSslConninfo(cluster: ClusterSpec): string[] {
  return tlsOf(cluster).enabled
    ? ['sslmode=verify-full', `sslrootcert=${conninfoQuote(tlsNodePaths(cluster).ca)}`]
    : [];
}

/** Settings pgop needs for streaming replication and pg_rewind; used when the spec is silent. */
const BASELINE: Record<string, PgParameterValue> = {
  wal_level: 'replica',
  hot_standby: true,
  wal_log_hints: true,
  max_wal_senders: 10,
  max_replication_slots: 10,
};

// ------------------------------------------------------------------------------ quoting

/** A postgresql.conf value: numbers bare, booleans on/off, strings single-quoted. */
export function confValue(v: PgParameterValue): string {
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  if (typeof v === 'number') {
    if (!Number.isFinite(v))
      throw terminal(`cannot render postgres parameter value ${v}: not a finite number`);
    return String(v);
  }
  return confQuote(v);
}

/** Single-quote a string for postgresql.conf ('' doubles a quote, backslashes are escapes). */
export function confQuote(s: string): string {
  if (CONTROL.test(s))
    throw terminal(
      'cannot render a postgres parameter value containing a newline, NUL or another control character',
    );
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/** C0 and C1 control characters (newline, NUL, ...): never part of a rendered line. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/u;

/** Text for a `#` comment line of a generated file (config or script): one line, or a bug. */
export function commentText(s: string): string {
  if (CONTROL.test(s))
    throw terminal(
      `cannot write ${JSON.stringify(s)} into a comment: it contains a newline or control character`,
    );
  return s;
}

/** A libpq conninfo value (single-quoted, backslash escapes). */
export function conninfoQuote(s: string): string {
  if (CONTROL.test(s))
    throw terminal(
      'cannot render a connection parameter containing a newline, NUL or another control character',
    );
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** SQL identifier ("x", doubled quotes). */
export function quoteIdent(s: string): string {
  if (s.includes('\0')) throw terminal('cannot quote an SQL identifier containing NUL');
  return `"${s.replace(/"/g, '""')}"`;
}

/** SQL string literal (standard_conforming_strings on: only quotes are doubled). */
export function quoteLiteral(s: string): string {
  if (s.includes('\0')) throw terminal('cannot quote an SQL literal containing NUL');
  if (s.includes('\\')) return `E'${s.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
  return `'${s.replace(/'/g, "''")}'`;
}

/** As the schema: a letter first (so never __proto__), custom parameters as prefix.name. */
const PARAM_NAME = /^[a-z][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$/;

// ------------------------------------------------------------------------------ helpers

export function isOn(v: PgParameterValue | undefined): boolean {
  if (v === undefined) return false;
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number') return v !== 0;
  return ['on', 'true', 'yes', '1', 'always'].includes(v.trim().toLowerCase());
}

/** Where the binaries are: Debian/Ubuntu (postgresql-common) or RHEL (PGDG rpms). */
export function binDir(cluster: ClusterSpec): string {
  const v = cluster.postgres.version;
  if (cluster.provider.type === 'libvirt' && cluster.provider.osFamily === 'rhel')
    return `/usr/pgsql-${v}/bin`;
  return `/usr/lib/postgresql/${v}/bin`;
}

/** The first unix socket directory postgres listens in (pgop's, unless the spec sets them). */
export function socketDir(cluster: ClusterSpec): string {
  const s = cluster.postgres.parameters.unix_socket_directories;
  return s === undefined ? SOCKET_DIR : String(s).split(',')[0]!.trim();
}

export function pgPort(cluster: ClusterSpec): number {
  const p = cluster.postgres.parameters.port;
  if (p === undefined) return DEFAULT_PORT;
  const n = typeof p === 'number' ? p : Number(p);
  if (!Number.isInteger(n) || n < 1 || n > 65535)
    throw terminal(`cannot use postgres port ${String(p)}: not a TCP port`);
  return n;
}

/** Replication slot of a standby on its primary. */
export function slotName(nodeName: string): string {
  return `pgop_${nodeName.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`.slice(0, 63);
}

/** The CIDRs the cluster's nodes (and pgpool) talk from. */
export function clusterNetworks(cluster: ClusterSpec): string[] {
  const p = cluster.provider;
  if (p.type === 'lab') return [p.network];
  if (p.type === 'libvirt') return [p.network.cidr];
  // sim: no real network; the node addresses (and the pool's) themselves
  const addrs = new Set(cluster.nodes.map((n) => n.address));
  if (cluster.pgpool.enabled && cluster.pgpool.address) addrs.add(cluster.pgpool.address);
  for (const h of poolHosts(cluster)) addrs.add(h.address);
  return [...addrs].map((a) => `${a}/32`);
}

// ------------------------------------------------------------------------------ conf.d/pgop.conf

/** conf.d/pgop.conf: the spec's parameters (minus per-node and managed keys), the replication
 *  baseline where the spec is silent, and the archive command. Identical on every node. */
export function renderConf(cluster: ClusterSpec, _node?: NodeSpec): string {
  const params = cluster.postgres.parameters;
  const lines: string[] = [
    '# Managed by pgop: rewritten on every reconcile. Edit the cluster spec instead.',
    `# cluster ${commentText(cluster.name)}: postgres ${cluster.postgres.version}`,
  ];
  const skipped: string[] = [];
  const tlsOn = tlsOf(cluster).enabled;
  const keys = Object.keys(params).sort();
  const seen = new Set<string>();
  for (const key of keys) {
    const k = key.toLowerCase();
    if (!PARAM_NAME.test(k))
      throw terminal(`cannot render postgres parameter ${JSON.stringify(key)}: invalid name`);
    if (seen.has(k)) throw terminal(`cannot render postgres parameter ${key}: given twice`);
    seen.add(k);
    if (
      (PER_NODE_KEYS as readonly string[]).includes(k) ||
      (MANAGED_KEYS as readonly string[]).includes(k) ||
      (tlsOn && (TLS_MANAGED_KEYS as readonly string[]).includes(k))
    ) {
      skipped.push(k);
      continue;
    }
    lines.push(`${k} = ${confValue(params[key]!)}`);
  }
  const defaults: string[] = [];
  for (const [k, v] of Object.entries(BASELINE)) {
    if (!seen.has(k)) defaults.push(`${k} = ${confValue(v)}`);
  }
  if (!seen.has('log_directory')) defaults.push(`log_directory = ${confQuote(cluster.postgres.logDir)}`);
  if (cluster.backup) {
    // pgBackRest archives (the spec's checks keep archive_command and archive_timeout out of
    // the parameters, and archive_mode on or unset)
    if (!seen.has('archive_mode')) defaults.push(`archive_mode = on`);
    defaults.push(
      `archive_command = ${confQuote(archiveCommand(cluster))}`,
      `archive_timeout = ${cluster.backup.archiveTimeoutS}`,
    );
  } else if (isOn(params.archive_mode) && cluster.postgres.archiveScript && !seen.has('archive_command')) {
    defaults.push(`archive_command = ${confQuote(`${archiveScriptPath(cluster)} %p %f`)}`);
  }
  if (tlsOn) {
    // TLS with the cluster CA's certificates (src/tls/); all of these reload on SIGHUP
    const t = tlsNodePaths(cluster);
    defaults.push(
      'ssl = on',
      `ssl_cert_file = ${confQuote(t.cert)}`,
      `ssl_key_file = ${confQuote(t.key)}`,
      `ssl_ca_file = ${confQuote(t.ca)}`,
    );
    if (!seen.has('ssl_min_protocol_version')) defaults.push(`ssl_min_protocol_version = 'TLSv1.2'`);
  }
  if (defaults.length > 0) lines.push('# pgop defaults', ...defaults);
  if (skipped.length > 0) {
    lines.push(
      `# not here on purpose (per node on the command line, or pgop-managed files): ${skipped.join(', ')}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

// ------------------------------------------------------------------------------ pg_hba.conf

/** The connection type a spec hba rule is written with: `host` becomes `hostssl` while TLS is on,
 *  unless the spec keeps its host rules as written. */
export function hbaType(cluster: ClusterSpec, type: HbaRule['type']): HbaRule['type'] {
  const tls = tlsOf(cluster);
  return type === 'host' && tls.enabled && tls.hostRules === 'hostssl' ? 'hostssl' : type;
}

/** pg_hba.conf: peer for the local postgres OS user, scram-sha-256 from the cluster network for
 *  the replication user and the operator's superuser, then the spec's rules. Never `trust`. */
export function renderHba(cluster: ClusterSpec): string {
  const nets = clusterNetworks(cluster);
  const repl = cluster.replication.user;
  const tls = tlsOf(cluster);
  // pgop's own lines need TLS when it is on; the spec's `host` lines too unless it says otherwise
  const own = tls.enabled ? 'hostssl' : 'host';
  const network = (type: HbaRule['type']) => hbaType(cluster, type);
  const rows: string[][] = [
    ['local', 'all', 'postgres', '', 'peer'],
    ...nets.map((n) => [own, 'replication', repl, n, 'scram-sha-256']),
    ...nets.map((n) => [own, 'all', 'postgres', n, 'scram-sha-256']),
  ];
  for (const r of cluster.postgres.hba) {
    if ((r.method as string) === 'trust')
      throw terminal('cannot render pg_hba.conf: method trust is not allowed');
    if (r.type !== 'local' && ['password', 'md5', 'ident'].includes(r.method as string)) {
      throw terminal(
        `cannot render pg_hba.conf: method ${r.method} is not allowed on a network rule ` +
          `(${r.database}/${r.user}): use scram-sha-256`,
      );
    }
    if (r.type === 'local') rows.push(['local', hbaWord(r.database), hbaWord(r.user), '', r.method]);
    else {
      if (!r.address)
        throw terminal(
          `cannot render pg_hba.conf: ${r.type} rule for ${r.database}/${r.user} has no address`,
        );
      rows.push([network(r.type), hbaWord(r.database), hbaWord(r.user), hbaWord(r.address), r.method]);
    }
  }
  const out = [
    '# Managed by pgop: rewritten on every reconcile. Edit the cluster spec instead.',
    '# TYPE  DATABASE  USER  ADDRESS  METHOD',
  ];
  for (const r of rows) out.push(r.filter((w, i) => !(i === 3 && w === '')).join('\t'));
  return `${out.join('\n')}\n`;
}

/** A pg_hba.conf word. Plain words are written as they are (keywords such as all and
 *  replication, comma lists, +group, CIDRs); anything else is double-quoted, which makes it a
 *  literal name. A word that cannot be quoted (a " or a control character) and an @file include
 *  are refused: pgop never lets a spec name a file postgres reads. */
function hbaWord(w: string): string {
  if (w === '' || CONTROL.test(w) || w.includes('"') || w.startsWith('@'))
    throw terminal(`cannot render pg_hba.conf word ${JSON.stringify(w)}`);
  if (/^\+?[A-Za-z0-9_.:/-]+(,\+?[A-Za-z0-9_.:/-]+)*$/.test(w)) return w;
  return `"${w}"`;
}

// ------------------------------------------------------------------------------ archive.sh

/** The seed's archive script, made safe: copies %p to <archiveDir>/%f through a temp file and a
 *  hard link (atomic, never overwrites). An existing identical file is success (a retry after a
 *  crash); an existing different file is failure (non-zero), so postgres keeps the segment. */
export function renderArchiveScript(cluster: ClusterSpec): string {
  const dir = cluster.postgres.archiveDir;
  const log = `${cluster.postgres.logDir}/archive.log`;
  return `#!/bin/sh
# Managed by pgop. archive_command = '${commentText(archiveScriptPath(cluster))} %p %f'
# Copies WAL segment $1 to $ARCHIVE_DIR/$2. Never overwrites: an identical existing copy is success,
# a different one is an error (postgres keeps the segment and retries).
ARCHIVE_DIR=${shellQuote(dir, { always: true })}
LOGFILE=${shellQuote(log, { always: true })}
src="$1"
name="$2"
if [ -z "$src" ] || [ -z "$name" ]; then
  echo "usage: $0 <path> <file name>" >&2
  exit 2
fi
case "$name" in */*) echo "archive: bad file name $name" >&2; exit 2;; esac
dest="$ARCHIVE_DIR/$name"
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') $*" >> "$LOGFILE" 2>/dev/null || true; }
if [ -e "$dest" ]; then
  if cmp -s "$src" "$dest"; then
    log "$name already archived (identical)"
    exit 0
  fi
  log "ERROR $name already archived with different content: not overwriting"
  echo "archive: $dest exists with different content" >&2
  exit 1
fi
tmp="$ARCHIVE_DIR/.$name.tmp.$$"
if ! cp "$src" "$tmp"; then
  rm -f "$tmp"
  log "ERROR cannot copy $src"
  exit 1
fi
sync "$tmp" 2>/dev/null || true
if ln "$tmp" "$dest" 2>/dev/null; then
  rm -f "$tmp"
  log "archived $name"
  exit 0
fi
rm -f "$tmp"
# lost a race: fine if the winner wrote the same bytes
if cmp -s "$src" "$dest"; then
  log "$name already archived (identical)"
  exit 0
fi
log "ERROR cannot archive $name"
exit 1
`;
}

// ------------------------------------------------------------------------------ hash

/** sha256 over conf + hba + archive script (NUL separated). The probe computes the same hash from
 *  the files on the node, so drift shows up in the observation. */
export function configHashOf(conf: string, hba: string, script: string, extra: string[] = []): string {
  const h = createHash('sha256')
    .update(Buffer.from(conf, 'utf8'))
    .update(Buffer.from([0]))
    .update(Buffer.from(hba, 'utf8'))
    .update(Buffer.from([0]))
    .update(Buffer.from(script, 'utf8'));
  // more files (the TLS certificate, key and CA), each after a NUL, in tlsNodePaths() order
  for (const e of extra) h.update(Buffer.from([0])).update(Buffer.from(e, 'utf8'));
  return h.digest('hex');
}

/** What the node's TLS files hold when right: certificate, key, CA bundle (tlsNodePaths order).
 *  null: no material yet (the hash then never matches, so the next pass writes them). */
export type NodeTlsFiles = { cert: string; key: string; ca: string } | null;

export function desiredConfigHash(cluster: ClusterSpec, node: NodeSpec, tls?: NodeTlsFiles): string {
  const extra = !tlsOf(cluster).enabled
    ? []
    : tls
      ? [tls.cert, tls.key, tls.ca]
      : ['pgop: no TLS material yet'];
  return configHashOf(
    renderConf(cluster, node),
    renderHba(cluster),
    archiveFileOf(cluster)?.content ?? '',
    extra,
  );
}

/** The file archive_command depends on, which counts in the config hash: pgBackRest's
 *  configuration with spec.backup, else the seed's archive script (when used), else none. */
export function archiveFilePath(cluster: ClusterSpec): string | null {
  if (cluster.backup) return nodeConfPath(cluster);
  return cluster.postgres.archiveScript ? archiveScriptPath(cluster) : null;
}

export function archiveFileOf(cluster: ClusterSpec): { path: string; content: string } | null {
  const path = archiveFilePath(cluster);
  if (path === null) return null;
  const content = cluster.backup
    ? renderNodeConf(cluster, tlsNodePaths(cluster), { port: pgPort(cluster), socketDir: socketDir(cluster) })
    : renderArchiveScript(cluster);
  return { path, content };
}

// ------------------------------------------------------------------------------ per node

/** postmaster options for `pg_ctl -o`: per-node settings that no clone or rewind may copy. */
export function nodeOptions(cluster: ClusterSpec, node: NodeSpec): string[] {
  const params = cluster.postgres.parameters;
  const listen = params.listen_addresses !== undefined ? String(params.listen_addresses) : node.address;
  const sockets =
    params.unix_socket_directories !== undefined ? String(params.unix_socket_directories) : SOCKET_DIR;
  const kv: [string, string][] = [
    ['listen_addresses', listen],
    ['port', String(pgPort(cluster))],
    ['cluster_name', node.name],
    ['unix_socket_directories', sockets],
  ];
  const out: string[] = [];
  for (const [k, v] of kv) {
    if (!/^[A-Za-z0-9_.,:*/ -]+$/.test(v))
      throw terminal(`cannot pass ${k}=${JSON.stringify(v)} on the postgres command line`);
    out.push('-c', `${k}=${v}`);
  }
  return out;
}

/** The `pg_ctl -o` string: pg_ctl hands it to /bin/sh, so every word is shell-quoted. */
export function nodeOptionString(cluster: ClusterSpec, node: NodeSpec): string {
  return (
    nodeOptions(cluster, node)
      // `=` and `,` stay bare: no option word is the first of a command (no assignment there)
      .map((w) => (/^[A-Za-z0-9_.,:/=-]+$/.test(w) ? w : shellQuote(w)))
      .join(' ')
  );
}

/** The replication password file (libpq passfile, mode 0600, owner postgres): beside the data
 *  directory, never inside it, so no clone, rewind or base backup carries it, and no GUC value
 *  ever holds the password (postgres logs changed GUC values on reload). */
export function replicationPassfilePath(cluster: ClusterSpec): string {
  return besideDataDir(cluster, 'pgop-replication.pgpass');
}

/** The passfile's one line: any host/port/database for the replication user. */
export function renderReplicationPassfile(cluster: ClusterSpec, password: string): string {
  const esc = (s: string) => s.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
  if (/[\n\r]/.test(password)) throw terminal('cannot write the replication password: it contains a newline');
  return `*:*:*:${esc(cluster.replication.user)}:${esc(password)}\n`;
}

/** conf.d/pgop-standby.conf: primary_conninfo (password via passfile, never inline) and
 *  primary_slot_name, both reloadable (PG >= 13), so a repoint is a reload and removing the file
 *  on promote needs no restart. Holds no secret. */
export function renderStandbyConf(cluster: ClusterSpec, node: NodeSpec, primary: NodeSpec): string {
  const conninfo = [
    `host=${conninfoQuote(primary.address)}`,
    `port=${pgPort(cluster)}`,
    `user=${conninfoQuote(cluster.replication.user)}`,
    `passfile=${conninfoQuote(replicationPassfilePath(cluster))}`,
    `application_name=${conninfoQuote(node.name)}`,
    'connect_timeout=2',
    'keepalives=1',
    'keepalives_idle=2',
    'keepalives_interval=1',
    'keepalives_count=3',
    ...nodeSslConninfo(cluster),
  ].join(' ');
  const lines = [
    `# Managed by pgop: ${commentText(node.name)} streams from ${commentText(primary.name)}. ` +
      `Removed on promote.`,
    `primary_conninfo = ${confQuote(conninfo)}`,
  ];
  if (cluster.replication.slots) lines.push(`primary_slot_name = ${confQuote(slotName(node.name))}`);
  // recovery_target_timeline is 'latest' by default (PG >= 12) and is NOT set here: it can only
  // change at a restart, so removing it from a file on promote would leave a pending restart.
  return `${lines.join('\n')}\n`;
}

export function renderSyncConf(names: string[], quorum: number): string {
  return (
    `# Managed by pgop (ensureSyncStandbys)\n` +
    `synchronous_standby_names = ${confQuote(syncStandbyNamesValue(names, quorum))}\n`
  );
}

/** What postgresql.auto.conf holds when empty (written after clone/rewind to drop copied
 *  settings). */
export const EMPTY_AUTO_CONF =
  '# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n';

// ------------------------------------------------------------------------------ SCRAM

/** SASLprep-lite: ASCII passwords are used as-is (what postgres does); others are NFKC-normalised
 *  with non-ASCII spaces mapped to space (RFC 4013 mapping for the common cases). */
function saslPrep(password: string): string {
  if (/^[\x00-\x7f]*$/.test(password)) return password;
  return password
    .replace(/[\u00a0\u1680\u2000-\u200b\u202f\u205f\u3000]/g, ' ')
    .replace(/[\u00ad\u034f\u1806\u180b-\u180d\u200c\u200d\u2060\ufe00-\ufe0f\ufeff]/g, '')
    .normalize('NFKC');
}

export interface ScramKeys {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
  clientKey: Buffer;
  saltedPassword: Buffer;
}

export function scramKeys(password: string, salt: Buffer, iterations: number): ScramKeys {
  const saltedPassword = pbkdf2Sync(Buffer.from(saslPrep(password), 'utf8'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', saltedPassword).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', saltedPassword).update('Server Key').digest();
  return { iterations, salt, storedKey, serverKey, clientKey, saltedPassword };
}

/** A postgres SCRAM-SHA-256 verifier: `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
 *  Sent instead of the password, so the clear text never reaches the server. */
export function scramVerifier(password: string, opts: { salt?: Buffer; iterations?: number } = {}): string {
  const salt = opts.salt ?? randomBytes(16);
  const k = scramKeys(password, salt, opts.iterations ?? 4096);
  return (
    `SCRAM-SHA-256$${k.iterations}:${salt.toString('base64')}` +
    `$${k.storedKey.toString('base64')}:${k.serverKey.toString('base64')}`
  );
}

/** Does `verifier` (as stored in pg_authid.rolpassword) accept `password`? */
export function verifyScram(verifier: string | null | undefined, password: string): boolean {
  if (!verifier) return false;
  const m = /^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(verifier);
  if (!m) return false;
  const k = scramKeys(password, Buffer.from(m[2]!, 'base64'), Number(m[1]));
  return k.storedKey.toString('base64') === m[3] && k.serverKey.toString('base64') === m[4];
}

// ------------------------------------------------------------------------------ LSN

export { formatLsn, parseLsn } from '../../observe/lsn.js';

/** Timeline history file (`<tli>\t<switch lsn>\t<reason>` lines) -> parent tli -> switch point. */
export function parseTimelineHistory(text: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const line of text.split('\n')) {
    const m = /^\s*(\d+)\s+([0-9A-Fa-f]+\/[0-9A-Fa-f]+)/.exec(line);
    if (m) out.set(Number(m[1]), parseLsn(m[2]));
  }
  return out;
}

/** Can a node on timeline `tli` at WAL position `lsn` follow a primary on `primaryTli` with this
 *  history, without a rewind? Same timeline, or an ancestor timeline left at or after our
 *  position. */
export function canFollowTimeline(
  tli: number,
  lsn: number,
  primaryTli: number,
  history: Map<number, number>,
): boolean {
  if (tli === primaryTli) return true;
  if (tli > primaryTli) return false;
  const switchPoint = history.get(tli);
  if (switchPoint === undefined) return false;
  return lsn <= switchPoint;
}
