// Pure rendering of what pgBackRest needs: the nodes' pgbackrest.conf (archive-push to the
// repository's TLS server on the operator's host), the repository server's own pgbackrest.conf,
// and archive_command. pgBackRest's config format is INI with one `key=value` per line and no
// quoting: every value is checked against a narrow pattern instead (paths and addresses come from
// the schema's constrained strings already; this refuses anything else that got this far).

import { terminal } from '../../errors.js';
import { repoHostAddress, type BackupSpec, type ClusterSpec } from '../../spec/types.js';
import { shellQuote } from '../ssh/quote.js';
import { besideDataDir } from '../postgres/layout.js';

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
    ['repo1-host', repoHostAddress(cluster)],
    ['repo1-host-type', 'tls'],
    ['repo1-host-port', String(b.repo.port)],
    ['repo1-host-ca-file', tls.ca],
    ['repo1-host-cert-file', tls.cert],
    ['repo1-host-key-file', tls.key],
    ['repo1-path', b.repo.path],
    ...(b.encryption ? [['repo1-cipher-type', 'aes-256-cbc'] as Line] : []),
    ['compress-type', b.compression],
    ['log-path', cluster.postgres.logDir],
    ['log-level-file', 'info'],
    ['log-level-console', 'warn'],
    ['lock-path', `${work}/lock`],
    ['spool-path', `${work}/spool`],
    [stanzaOf(cluster)],
    ['pg1-path', cluster.postgres.dataDir],
    ['pg1-port', String(pg.port)],
    ['pg1-socket-path', pg.socketDir],
  ]);
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
    ...clients.map((cn): Line => ['tls-server-auth', `${cn}=${stanza}`]),
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
