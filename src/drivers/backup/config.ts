// Pure rendering of what pgBackRest needs: the nodes' pgbackrest.conf (archive-push to the
// repository's TLS server on the operator's host), the repository server's own pgbackrest.conf,
// and archive_command. pgBackRest's config format is INI with one `key=value` per line and no
// quoting: every value is checked against a narrow pattern instead (paths and addresses come from
// the schema's constrained strings already; this refuses anything else that got this far).

import { terminal } from '../../errors.js';
import { repoHostAddress, type BackupSpec, type ClusterSpec, type RestoreSource } from '../../spec/types.js';
import { shellQuote } from '../ssh/quote.js';
import { besideDataDir } from '../postgres/layout.js';
import { REPO_HOST_NAME } from '../../tls/material.js';

export { repoHostAddress };

export function backupOf(cluster: ClusterSpec): BackupSpec {
  if (!cluster.backup) throw terminal(`cannot configure backups of ${cluster.name}: the spec has none`);
  return cluster.backup;
}

/** The stanza: pgBackRest's name for the cluster in the repository. */
export const stanzaOf = (cluster: ClusterSpec): string => safe('stanza', cluster.name, NAME);

/** A node's pgbackrest.conf: beside the data directory (postgres's, like the TLS files it names),
 *  never inside it, so no clone or rewind copies it. */
export function nodeConfPath(cluster: ClusterSpec): string {
  return besideDataDir(cluster, 'pgbackrest.conf');
}

/** Where pgBackRest on a node keeps its locks and the spool of asynchronous archiving: private
 *  to the node (on a lab node /tmp is shared by nothing but its own processes, but a directory
 *  beside the data directory is the node's on every provider). */
export function nodeWorkDir(cluster: ClusterSpec): string {
  return besideDataDir(cluster, 'pgbackrest');
}

/** The include directory of the nodes' pgBackRest: the passphrase's file, kept out of the main
 *  file so that the configuration hash never covers a secret. */
export const nodeIncludeDir = (cluster: ClusterSpec): string => `${nodeWorkDir(cluster)}/conf.d`;
export const nodeCipherPath = (cluster: ClusterSpec): string => `${nodeIncludeDir(cluster)}/cipher.conf`;

/** Every pgbackrest command on a node: its own configuration only (never /etc/pgbackrest, which
 *  lab nodes share with the machine). */
export function nodeConfArgs(cluster: ClusterSpec): string[] {
  return [
    `--config=${nodeConfPath(cluster)}`,
    `--config-include-path=${nodeIncludeDir(cluster)}`,
    `--stanza=${stanzaOf(cluster)}`,
  ];
}

/** archive_command: postgres hands it to /bin/sh, so every word is shell-quoted. */
export function archiveCommand(cluster: ClusterSpec): string {
  return ['pgbackrest', ...nodeConfArgs(cluster).map((a) => shellQuote(a)), 'archive-push', '%p'].join(' ');
}

/** How pgBackRest on a node reaches its postgres (the socket, as the postgres user). */
export interface LocalPostgres {
  port: number;
  socketDir: string;
}

export interface NodeTlsPaths {
  cert: string;
  key: string;
  ca: string;
}

/** The nodes' pgbackrest.conf (the same on every node). The repository is remote: its server on
 *  the operator's host is reached over TLS with the node's certificate (CN = node name, allowed
 *  the stanza there). pgBackRest's TLS server takes the repository's options from its client, so
 *  the path (and the cipher, in the include file) are set here. */
export function renderNodeConf(cluster: ClusterSpec, tls: NodeTlsPaths, pg: LocalPostgres): string {
  const b = backupOf(cluster);
  const work = nodeWorkDir(cluster);
  return ini([
    '# Managed by pgop: rewritten on every reconcile. Edit the cluster spec instead.',
    ['global'],
    ...repoHostLines(cluster, tls),
    ['repo1-path', b.repo.path],
    ...(b.encryption ? [['repo1-cipher-type', 'aes-256-cbc'] as Line] : []),
    ['compress-type', b.compression],
    ['log-path', cluster.postgres.logDir],
    ['log-level-file', 'info'],
    ['log-level-console', 'warn'],
    ['lock-path', `${work}/lock`],
    ['spool-path', `${work}/spool`],
    // the node's own server, which a backup on the repository's side copies through (its
    // address is given when it starts: this file is the same on every node)
    ['tls-server-port', String(b.repo.nodePort)],
    ['tls-server-cert-file', tls.cert],
    ['tls-server-key-file', tls.key],
    ['tls-server-ca-file', tls.ca],
    ['tls-server-auth', `${REPO_HOST_NAME}=${stanzaOf(cluster)}`],
    [stanzaOf(cluster)],
    ['pg1-path', cluster.postgres.dataDir],
    ['pg1-port', String(pg.port)],
    ['pg1-socket-path', pg.socketDir],
  ]);
}

/** A node reaches the repository through its server on the operator's host, over TLS with the
 *  node's certificate. */
function repoHostLines(cluster: ClusterSpec, tls: NodeTlsPaths): Line[] {
  return [
    ['repo1-host', repoHostAddress(cluster)],
    ['repo1-host-type', 'tls'],
    ['repo1-host-port', String(backupOf(cluster).repo.port)],
    ['repo1-host-ca-file', tls.ca],
    ['repo1-host-cert-file', tls.cert],
    ['repo1-host-key-file', tls.key],
  ];
}

/** The include file with the passphrase (mode 0600, postgres's). */
export function renderNodeCipher(passphrase: string): string {
  if (!/^[\x21-\x7e]{16,1024}$/.test(passphrase))
    throw terminal(
      'cannot use the backup passphrase: it must be 16-1024 printable characters without spaces',
    );
  return `[global]\nrepo1-cipher-pass=${passphrase}\n`;
}

export interface RepoPaths {
  /** the server's certificate, key and the CA it trusts clients by */
  cert: string;
  key: string;
  ca: string;
  /** the repository server's logs and locks on the operator's host */
  logDir: string;
  lockDir: string;
}

/** The repository server's pgbackrest.conf on the operator's host: its TLS listener and which
 *  client certificates (the nodes') may use the stanza. It runs as an unprivileged user: a
 *  client names the repository path itself, so the server must not be able to write elsewhere. */
export function renderRepoConf(cluster: ClusterSpec, paths: RepoPaths): string {
  const b = backupOf(cluster);
  const stanza = stanzaOf(cluster);
  const clients = cluster.nodes.map((n) => safe('node name', n.name, NAME));
  // while the spec restores from another stanza, the nodes may read that one too
  const source = cluster.bootstrap?.restore.stanza;
  const stanzas = source ? `${stanza},${safe('stanza', source, NAME)}` : stanza;
  return ini([
    '# Managed by pgop: rewritten when the spec changes. Edit the cluster spec instead.',
    ['global'],
    ['log-path', paths.logDir],
    ['log-level-file', 'info'],
    ['log-level-console', 'warn'],
    ['lock-path', paths.lockDir],
    ['tls-server-address', repoHostAddress(cluster)],
    ['tls-server-port', String(b.repo.port)],
    ['tls-server-cert-file', paths.cert],
    ['tls-server-key-file', paths.key],
    ['tls-server-ca-file', paths.ca],
    // one line per client CN (the option repeats; a comma would separate stanzas)
    ...clients.map((cn): Line => ['tls-server-auth', `${cn}=${stanzas}`]),
  ]);
}

/** The configuration a restore reads the source stanza with (and, until the restored node is
 *  promoted, its restore_command): the cluster's own repository server, the source's repository
 *  path and cipher. Postgres's, 0600, removed after the promotion. */
export function restoreConfPath(cluster: ClusterSpec): string {
  return besideDataDir(cluster, 'pgbackrest-restore.conf');
}

export function renderRestoreConf(cluster: ClusterSpec, tls: NodeTlsPaths, passphrase?: string): string {
  const b = backupOf(cluster);
  const r = restoreOf(cluster);
  const work = nodeWorkDir(cluster);
  // the passphrase is no INI-safe word: checked as the nodes' own (renderNodeCipher)
  const cipher = passphrase === undefined ? '' : renderNodeCipher(passphrase).replace('[global]\n', '');
  const lines = ini([
    '# Managed by pgop: the restore of this cluster from another stanza (spec.bootstrap.restore).',
    ['global'],
    ...repoHostLines(cluster, tls),
    ['repo1-path', r.repoPath],
    ...(passphrase !== undefined ? [['repo1-cipher-type', 'aes-256-cbc'] as Line] : []),
    ['log-path', cluster.postgres.logDir],
    ['log-level-console', 'warn'],
    ['lock-path', `${work}/lock`],
    [safe('stanza', r.stanza, NAME)],
    ['pg1-path', cluster.postgres.dataDir],
  ]);
  return lines.replace('\n[global]\n', `\n[global]\n${cipher}`);
}

export function restoreOf(cluster: ClusterSpec): RestoreSource {
  const r = cluster.bootstrap?.restore;
  if (!r) throw terminal(`cannot restore ${cluster.name}: its spec has no bootstrap.restore`);
  return r;
}

/** pgbackrest's arguments for the restore (after --config): what, up to where. */
export function restoreArgs(cluster: ClusterSpec): string[] {
  const r = restoreOf(cluster);
  const target = r.targetTime
    ? ['--type=time', `--target=${r.targetTime}`, '--target-action=promote']
    : r.targetLsn
      ? ['--type=lsn', `--target=${r.targetLsn}`, '--target-action=promote']
      : ['--type=default'];
  return [
    `--stanza=${safe('stanza', r.stanza, NAME)}`,
    `--pg1-path=${cluster.postgres.dataDir}`,
    ...(r.set ? [`--set=${r.set}`] : []),
    ...target,
    'restore',
  ];
}

/** Where a backup reads the database: the node's pgbackrest server (TLS, the repository's
 *  certificate as client) and, there, postgres's data directory and socket. */
export interface BackupSource {
  address: string;
  dataDir: string;
  port: number;
  socketDir: string;
}

/** How long a backup waits for the WAL it needs to reach the repository (pgBackRest's
 *  archive-timeout), in seconds. */
export const BACKUP_ARCHIVE_TIMEOUT_S = 300;

/** The configuration of `pgbackrest backup` on the operator's host (as the repository's user):
 *  the repository, what to keep, and the node to copy from. The passphrase goes in the
 *  environment, never in a file. */
export function renderBackupConf(cluster: ClusterSpec, source: BackupSource, paths: RepoPaths): string {
  const b = backupOf(cluster);
  return ini([
    '# Managed by pgop: written for each backup. Edit the cluster spec instead.',
    ['global'],
    ['repo1-path', b.repo.path],
    ...(b.encryption ? [['repo1-cipher-type', 'aes-256-cbc'] as Line] : []),
    ['repo1-retention-full', String(b.retention.full)],
    ...(b.retention.diff ? [['repo1-retention-diff', String(b.retention.diff)] as Line] : []),
    ['compress-type', b.compression],
    ['process-max', String(b.processes)],
    // a backup starts with a checkpoint of its own, not after the next scheduled one
    ['start-fast', 'y'],
    // The backup waits for its last WAL segment in the repository; pgBackRest's 60 s is short for
    // a primary still busy after a failover on slow hardware. A broken archive_command shows
    // meanwhile in `get clusters` (archiving).
    ['archive-timeout', String(BACKUP_ARCHIVE_TIMEOUT_S)],
    ['log-path', paths.logDir],
    ['log-level-file', 'info'],
    ['log-level-console', 'detail'],
    ['lock-path', paths.lockDir],
    [stanzaOf(cluster)],
    ['pg1-host', source.address],
    ['pg1-host-type', 'tls'],
    ['pg1-host-port', String(b.repo.nodePort)],
    ['pg1-host-ca-file', paths.ca],
    ['pg1-host-cert-file', paths.cert],
    ['pg1-host-key-file', paths.key],
    ['pg1-path', source.dataDir],
    ['pg1-port', String(source.port)],
    ['pg1-socket-path', source.socketDir],
  ]);
}

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$/;
const VALUE = /^[A-Za-z0-9_./,:=@+-]+$/;

type Line = string | [string] | [string, string];

/** INI lines: a string is a comment, [name] a section, [key, value] a setting. */
function ini(lines: Line[]): string {
  const out: string[] = [];
  for (const l of lines) {
    if (typeof l === 'string') out.push(l);
    else if (l.length === 1) out.push('', `[${safe('section', l[0], NAME)}]`);
    else out.push(`${l[0]}=${safe(l[0], l[1], VALUE)}`);
  }
  return `${out.join('\n')}\n`;
}

function safe(what: string, value: string, pattern: RegExp): string {
  if (!pattern.test(value))
    throw terminal(`cannot write ${what} ${JSON.stringify(value)} into pgbackrest.conf: unsafe characters`);
  return value;
}
