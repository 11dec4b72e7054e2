// Pure generators for pgpool-II 4.3 on the pool host: pgpool.conf, pool_hba.conf, pcp.conf,
// pool_passwd (AES entries, as pg_enc writes them) and the PCP pass file.
//
// pgop decides every promotion and pgpool only routes: its health checks, streaming-replication
// checks and failover on backend errors are off, and the operator switches its routing over
// PCP (src/drivers/pgpool/pcp.ts). pgpool starts from a status file the driver writes (what
// answers now), never from what it remembered.

import { createCipheriv, createHash } from 'node:crypto';
import { PGPOOL_MAX_POOL, poolVip, type ClusterSpec } from '../../spec/types.js';
import { internal, terminal } from '../../errors.js';
import { clusterNetworks, commentText, pgPort } from '../postgres/config.js';
import { tlsOf } from '../../tls/settings.js';
import { resolveSecret } from '../../spec/secrets.js';
import { nodeIdFile, watchdogLines } from './watchdog.js';

const CONTROL = /[\u0000-\u001f\u007f-\u009f]/u;

/** Where pgop keeps pgpool's files on the pool host (the lab pool host sees its own /u01). */
export const DEFAULT_POOL_DIR = '/u01/pgpool';
export const PCP_USER = 'pgop';

export interface PoolPaths {
  dir: string;
  conf: string;
  hba: string;
  pcp: string;
  passwd: string;
  key: string;
  pcpPass: string;
  pcpSecret: string;
  run: string;
  log: string;
  logFile: string;
  events: string;
  pid: string;
  oiddir: string;
  confHash: string;
  /** TLS: pgpool's server certificate and key, and the cluster CA bundle (owner postgres, 0600) */
  sslCert: string;
  sslKey: string;
  sslCa: string;
  /** pgpool's logdir, which holds only its status file: on /run, a tmpfs. pgpool syncs the
   *  file on every change of a backend's status, twice in a failover (20-90 ms each on the lab's
   *  disk under load); pgop writes it before every start, so it need not outlive a reboot. */
  statusDir: string;
}

export function poolPaths(dir: string = DEFAULT_POOL_DIR): PoolPaths {
  if (!dir.startsWith('/') || /[\s'"\\]/.test(dir))
    throw terminal(
      `cannot use pgpool directory ${JSON.stringify(dir)}: need an absolute path without spaces or quotes`,
    );
  const d = dir.replace(/\/+$/, '');
  return {
    dir: d,
    conf: `${d}/pgpool.conf`,
    hba: `${d}/pool_hba.conf`,
    pcp: `${d}/pcp.conf`,
    passwd: `${d}/pool_passwd`,
    key: `${d}/pgpoolkey`,
    pcpPass: `${d}/pcppass`,
    pcpSecret: `${d}/pcp.secret`,
    run: `${d}/run`,
    log: `${d}/log`,
    logFile: `${d}/log/pgpool.log`,
    events: `${d}/log/events.log`,
    pid: `${d}/run/pgpool.pid`,
    oiddir: `${d}/oiddir`,
    confHash: `${d}/pgop.confhash`,
    sslCert: `${d}/server.crt`,
    sslKey: `${d}/server.key`,
    sslCa: `${d}/ca.crt`,
    statusDir: '/run/pgop-pgpool',
  };
}

/** A pgpool.conf string value. pgpool's parser has no escape for a quote, so a value with one
 *  (or with a control character, which would end the line) is refused rather than quoted. */
function q(s: string): string {
  if (CONTROL.test(s))
    throw terminal('cannot render a pgpool value containing a newline, NUL or another control character');
  if (s.includes("'"))
    throw terminal(`cannot render pgpool value ${JSON.stringify(s)}: single quotes are not allowed`);
  return `'${s}'`;
}

/** Sessions of these applications load-balance to the primary: a standby's detach, which ends
 *  the sessions that load-balance to it, never ends theirs. pgpool anchors each name as a
 *  case-insensitive regular expression; the schema allows only [A-Za-z0-9_.-], and a dot is
 *  written as [.] so that it matches only itself. */
function primaryApplicationLines(cluster: ClusterSpec): string[] {
  const apps = cluster.pgpool.primaryApplications;
  if (apps.length === 0) return [];
  for (const a of apps) {
    if (!/^[A-Za-z0-9_.-]{1,63}$/.test(a)) throw internal(`unsafe application name ${JSON.stringify(a)}`);
  }
  const list = apps.map((a) => `${a.replaceAll('.', '[.]')}:primary`).join(',');
  return [`app_name_redirect_preference_list = '${list}'`];
}

/** pgpool.conf for the cluster: one backend per spec node, in spec order. */
export function renderPgpoolConf(cluster: ClusterSpec, paths: PoolPaths = poolPaths()): string {
  const lines = [
    ...connectionLines(cluster, paths),
    ...backendLines(cluster),
    ...authLines(paths),
    ...tlsLines(cluster, paths),
    '# load balancing',
    `load_balance_mode = ${cluster.pgpool.loadBalancing ? 'on' : 'off'}`,
    "disable_load_balance_on_write = 'transaction'",
    'statement_level_load_balance = off',
    ...primaryApplicationLines(cluster),
    '',
    ...noDecisionLines(cluster),
    ...processLines(cluster, paths),
  ];
  return lines.join('\n');
}

function connectionLines(cluster: ClusterSpec, paths: PoolPaths): string[] {
  const pp = cluster.pgpool;
  if (!pp.address) {
    throw terminal(`cannot configure pgpool for ${cluster.name}: spec.pgpool.address is not set`);
  }
  // Several pool hosts: each pgpool listens on its own address and, while it holds it, on the
  // virtual IP (the same file for every pool host).
  const listen = poolVip(cluster) ? '*' : pp.address;
  return [
    '# Managed by pgop: rewritten on every reconcile. Edit the cluster spec instead.',
    `# cluster ${commentText(cluster.name)}`,
    "backend_clustering_mode = 'streaming_replication'",
    '',
    '# connections',
    `listen_addresses = ${q(listen)}`,
    `port = ${pp.port}`,
    `socket_dir = ${q(paths.run)}`,
    `pcp_listen_addresses = ${q(listen)}`,
    `pcp_port = ${pp.pcpPort}`,
    `pcp_socket_dir = ${q(paths.run)}`,
    `num_init_children = ${pp.numInitChildren}`,
    `max_pool = ${PGPOOL_MAX_POOL}`,
    'reserved_connections = 0',
    '',
  ];
}

function backendLines(cluster: ClusterSpec): string[] {
  const port = pgPort(cluster);
  return [
    '# backends (spec order)',
    ...cluster.nodes.flatMap((n, i) => [
      `backend_hostname${i} = ${q(n.address)}`,
      `backend_port${i} = ${port}`,
      `backend_weight${i} = 1`,
      `backend_data_directory${i} = ${q(cluster.postgres.dataDir)}`,
      `backend_flag${i} = 'ALLOW_TO_FAILOVER'`,
      `backend_application_name${i} = ${q(n.name)}`,
    ]),
    '',
  ];
}

function authLines(paths: PoolPaths): string[] {
  return [
    '# authentication: scram from the network, passwords AES-encrypted in pool_passwd',
    'enable_pool_hba = on',
    `pool_passwd = ${q(paths.passwd)}`,
    'allow_clear_text_frontend_auth = off',
    'authentication_timeout = 30',
    '',
  ];
}

/** pgpool never decides anything by itself: no health checks, no streaming-replication checks,
 *  no failover on a backend error. pgop watches every node and drives pgpool over PCP (promote,
 *  attach, detach). Measured on a loaded 2-core host: pgpool's own failover, which spawns its
 *  failover_command and then searches for the primary with fresh SCRAM sessions, took 0.3-1.5 s
 *  after pgop's promotion; its streaming-replication check held the lock that search needs
 *  while blocked on a read from a node whose link was down (12 s stalls). */
function noDecisionLines(cluster: ClusterSpec): string[] {
  return [
    'sr_check_period = 0',
    "sr_check_user = 'postgres'",
    "sr_check_password = ''",
    "sr_check_database = 'postgres'",
    'delay_threshold = 0',
    'health_check_period = 0',
    // pgpool's connects to backends give up as soon as the operator's probes do
    `connect_timeout = ${Math.max(100, cluster.failureDetection.connectTimeoutMs)}`,
    '',
    // nothing to run: a command would be a process spawned while pgpool holds every session
    "failover_command = ''",
    "failback_command = ''",
    'failover_on_backend_error = off',
    'failover_on_backend_shutdown = off',
    "follow_primary_command = ''",
    'detach_false_primary = off',
    'auto_failback = off',
    'search_primary_node_timeout = 5',
    '',
  ];
}

function processLines(cluster: ClusterSpec, paths: PoolPaths): string[] {
  return [
    '# process files (private to the pool host)',
    `pid_file_name = ${q(paths.pid)}`,
    `logdir = ${q(paths.statusDir)}`,
    `wd_ipc_socket_dir = ${q(paths.run)}`,
    `memqcache_oiddir = ${q(paths.oiddir)}`,
    'memory_cache_enabled = off',
    '',
    ...watchdogLines(cluster),
    '',
    '# logging (stderr, redirected to a file by pgop)',
    "log_destination = 'stderr'",
    'logging_collector = off',
    "log_line_prefix = '%m: %a pid %p: '",
    'log_connections = off',
    'log_statement = off',
    'log_per_node_statement = off',
    'log_min_messages = warning',
    '',
  ];
}

/** TLS (pgpool 4.3): `ssl = on` serves clients with the pool host's certificate and makes pgpool
 *  ask every backend for TLS; `ssl_ca_cert` makes it verify the backend's chain to the cluster CA
 *  (SSL_VERIFY_PEER: chain and validity, not the host name or address: 4.3 does not check those),
 *  and a backend that fails the check fails the session. pgpool does not insist: a backend that
 *  answers the SSL request with "no" gets clear text (pool_ssl.c), which pgop's nodes never do
 *  (pg_hba has only hostssl lines for the network). PCP has no TLS in 4.3 at all. */
function tlsLines(cluster: ClusterSpec, paths: PoolPaths): string[] {
  if (!tlsOf(cluster).enabled) return [];
  return [
    '# TLS to clients and to the backends (certificates from the cluster CA, kept by pgop)',
    'ssl = on',
    `ssl_cert = ${q(paths.sslCert)}`,
    `ssl_key = ${q(paths.sslKey)}`,
    `ssl_ca_cert = ${q(paths.sslCa)}`,
    "ssl_ciphers = 'HIGH:!aNULL:!MD5:!3DES'",
    'ssl_prefer_server_ciphers = on',
    "ssl_ecdh_curve = 'prime256v1'",
    '',
  ];
}

/** pool_hba.conf: scram-sha-256 from the cluster network (over TLS when it is on) and the local
 *  socket. Never trust. */
export function renderPoolHba(cluster: ClusterSpec): string {
  const out = [
    '# Managed by pgop',
    '# TYPE  DATABASE  USER  ADDRESS  METHOD',
    'local\tall\tall\t\tscram-sha-256',
  ];
  const tls = tlsOf(cluster);
  const type = tls.enabled && tls.hostRules === 'hostssl' ? 'hostssl' : 'host';
  for (const n of clusterNetworks(cluster)) out.push(`${type}\tall\tall\t${n}\tscram-sha-256`);
  return `${out.join('\n')}\n`;
}

/** pcp.conf: `user:md5(password)`. */
export function renderPcpConf(pcpPassword: string, user = PCP_USER): string {
  return `# Managed by pgop\n${user}:${createHash('md5').update(pcpPassword, 'utf8').digest('hex')}\n`;
}

/** The PCP pass file (PCPPASSFILE, mode 0600): host:port:user:password. */
export function renderPcpPass(cluster: ClusterSpec, pcpPassword: string, user = PCP_USER): string {
  const esc = (s: string) => s.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
  return `*:${cluster.pgpool.pcpPort}:${user}:${esc(pcpPassword)}\n`;
}

/** pgpool's AES entry (what `pg_enc` prints): "AES" + base64(AES-256-CBC(password)), key and IV
 *  from OpenSSL's EVP_BytesToKey(sha1, no salt, 1 round) over the key string. */
export function poolAesEncrypt(password: string, key: string): string {
  const { k, iv } = evpBytesToKey(Buffer.from(key, 'utf8'), 32, 16);
  const c = createCipheriv('aes-256-cbc', k, iv);
  return `AES${Buffer.concat([c.update(password, 'utf8'), c.final()]).toString('base64')}`;
}

function evpBytesToKey(pass: Buffer, keyLen: number, ivLen: number): { k: Buffer; iv: Buffer } {
  let out = Buffer.alloc(0);
  let prev = Buffer.alloc(0);
  while (out.length < keyLen + ivLen) {
    prev = createHash('sha1')
      .update(Buffer.concat([prev, pass]))
      .digest();
    out = Buffer.concat([out, prev]);
  }
  return { k: out.subarray(0, keyLen), iv: out.subarray(keyLen, keyLen + ivLen) };
}

/** pool_passwd: one AES entry per user, sorted. */
export function renderPoolPasswd(users: { name: string; password: string }[], key: string): string {
  const lines = [...users]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((u) => {
      if (u.name.includes(':') || /\s/.test(u.name) || CONTROL.test(u.name))
        throw terminal(`cannot write pool_passwd entry for ${JSON.stringify(u.name)}`);
      return `${u.name}:${poolAesEncrypt(u.password, key)}`;
    });
  return `${lines.join('\n')}\n`;
}

/** The users pool_passwd lists: postgres and every spec role that logs in with a password. */
export function poolUsers(cluster: ClusterSpec): { name: string; password: string }[] {
  const users = new Map<string, string>();
  users.set('postgres', resolveSecret(cluster.postgres.superuserPassword, 'the postgres superuser password'));
  for (const r of cluster.roles) {
    if (r.password && r.login) users.set(r.name, resolveSecret(r.password, `the password of role ${r.name}`));
  }
  return [...users].map(([name, password]) => ({ name, password }));
}

/** A file of pgpool's configuration as pgop writes it on the pool host. */
export interface PoolFile {
  op: 'write';
  path: string;
  content: string;
}

/** The secrets kept on the pool host: pool_passwd's AES key and the PCP password. */
export interface PoolSecrets {
  key: string;
  pcpPassword: string;
}

/** Every configuration file of pgpool's (the secrets' own files aside), the applied hash last. */
export function renderPoolFiles(
  cluster: ClusterSpec,
  paths: PoolPaths,
  secrets: PoolSecrets,
  tls: PoolTlsFiles,
): PoolFile[] {
  const file = (path: string, content: string): PoolFile => ({ op: 'write', path, content });
  const tlsFiles = tls
    ? [file(paths.sslCa, tls.ca), file(paths.sslCert, tls.cert), file(paths.sslKey, tls.key)]
    : [];
  return [
    ...tlsFiles,
    file(paths.conf, renderPgpoolConf(cluster, paths)),
    file(paths.hba, renderPoolHba(cluster)),
    file(paths.pcp, renderPcpConf(secrets.pcpPassword)),
    file(paths.passwd, renderPoolPasswd(poolUsers(cluster), secrets.key)),
    file(paths.pcpPass, renderPcpPass(cluster, secrets.pcpPassword)),
    file(paths.confHash, `${desiredPoolConfigHash(cluster, paths, tls)}\n`),
  ];
}

/** The files whose change restarts a running pgpool (it reads its TLS files only at start). */
export function restartFiles(paths: PoolPaths): string[] {
  const { conf, hba, pcp, passwd, key, sslCa, sslCert, sslKey } = paths;
  return [conf, hba, pcp, passwd, key, sslCa, sslCert, sslKey, nodeIdFile(paths)];
}

/** pgpool's TLS files when right: its certificate, key and the CA bundle; null: none yet. */
export type PoolTlsFiles = { cert: string; key: string; ca: string } | null;

/** The hash the pool reports when configured as desired (secrets excluded; with TLS, the
 *  certificate material, so a renewal rewrites it and restarts pgpool, which reads it at start). */
export function desiredPoolConfigHash(
  cluster: ClusterSpec,
  paths: PoolPaths = poolPaths(),
  tls?: PoolTlsFiles,
): string {
  const h = createHash('sha256')
    .update(renderPgpoolConf(cluster, paths))
    .update(Buffer.from([0]))
    .update(renderPoolHba(cluster));
  if (tlsOf(cluster).enabled) {
    for (const e of tls ? [tls.cert, tls.key, tls.ca] : ['pgop: no TLS material yet'])
      h.update(Buffer.from([0])).update(e);
  }
  return h.digest('hex');
}
