// What a spec may say beyond its JSON Schema's shape: reserved names and settings, the paths and
// libvirt URIs pgop accepts (the schema's patterns say the same; these say why in words), and
// the guarded accessors the checks use on a document that may be schema-invalid.

import schema from '../../schema/cluster.schema.json' with { type: 'json' };
import type { SecretRef } from './types.js';

export type Raw = Record<string, unknown>;
export type RawDoc = { metadata: Raw; spec: Raw };

export const isObject = (v: unknown): v is Raw => typeof v === 'object' && v !== null && !Array.isArray(v);
export const obj = (v: unknown): Raw => (isObject(v) ? v : {});
export const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
export const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** Settings pgop writes per node itself (a spec value would fight it), and the ones that name
 *  other configuration files (pgop writes every file postgres reads its configuration from). */
export const MANAGED_PARAMETERS: ReadonlySet<string> = new Set([
  'listen_addresses',
  'port',
  'primary_conninfo',
  'primary_slot_name',
  'synchronous_standby_names',
  'cluster_name',
  'unix_socket_directories',
  'hba_file',
  'ident_file',
  'config_file',
  'data_directory',
  'include',
  'include_dir',
  'include_if_exists',
  'recovery_target_timeline',
]);

export const LIBVIRT_URI_SCHEMES: readonly string[] = [
  'qemu',
  'qemu+ssh',
  'qemu+tcp',
  'qemu+tls',
  'qemu+unix',
  'test',
  'test+unix',
];

/** The lab's and the libvirt provider's name for the pgpool host. */
export const RESERVED_NODE_NAME = 'pool';

/** The postgres-owned directories each lab node mounts privately (src/drivers/lab/host.ts
 *  PRIVATE_MOUNTS, less /opt/postgres, which holds the archive script). */
export const LAB_POSTGRES_MOUNTS: readonly string[] = [
  '/u01',
  '/u02',
  '/var/log/postgres',
  '/var/lib/postgresql',
];

/** Every directory a lab node mounts privately (PRIVATE_MOUNTS, and /var/run, which is /run):
 *  the lab's stateDir, which the operator reads on the machine itself, cannot lie there. */
export const LAB_PRIVATE_MOUNTS: readonly string[] = [
  '/u01',
  '/u02',
  '/var/log/postgres',
  '/opt/postgres',
  '/var/lib/postgresql',
  '/etc/pgpool2',
  '/etc/sudoers.d',
  '/root',
  '/tmp',
  '/run',
  '/var/run/postgresql',
  '/var/run',
];

/** sim never resolves secrets, so it gets a placeholder reference instead of requiring one. */
export const SIM_SECRET: SecretRef = { env: 'PGOP_SIM_PASSWORD' };

/** Roots below which paths on the operator's machine may lie (schema $defs.absPath). */
export const HOST_PATH_ROOTS: readonly string[] = [
  '/var/lib/pgop',
  '/var/lib/libvirt',
  '/var/cache/pgop',
  '/etc/pgop',
  '/run/pgop',
  '/run/secrets',
  '/run/credentials',
  '/srv',
  '/data',
  '/u00-/u99',
  '/home',
  '/mnt',
  '/media',
  '/opt',
  '/tmp',
  '/var/tmp',
];
/** Directories pgop makes postgres-owned on the nodes: strictly below these... */
export const POSTGRES_DIR_PARENTS: readonly string[] = ['/u00-/u99', '/srv', '/data'];
/** ...or at or below these (schema $defs.postgresDir). */
export const POSTGRES_DIR_ROOTS: readonly string[] = [
  '/var/lib/postgresql',
  '/var/lib/pgsql',
  '/var/log/postgres',
  '/var/log/postgresql',
  '/var/log/pgsql',
];

const under = (p: string, root: string) =>
  root === '/u00-/u99' ? /^\/u[0-9]{2}\/./.test(p) : p.startsWith(`${root}/`);

/** Why `p` is not an acceptable path ('host': on the operator's machine; 'postgres': a directory
 *  made postgres-owned on the nodes), or undefined when it is. */
export function pathProblem(kind: 'host' | 'postgres', p: string): string | undefined {
  if (!p.startsWith('/')) return 'must be an absolute path (starting with /)';
  const bad = /[^A-Za-z0-9._/-]/u.exec(p);
  if (bad) return `must be a path of letters, digits and . _ - / only (not ${JSON.stringify(bad[0])})`;
  if (p === '/')
    return kind === 'host'
      ? `must lie below ${HOST_PATH_ROOTS.join(', ')}, not be /`
      : 'must not be /: pgop makes this directory owned by postgres';
  const parts = p.slice(1).split('/');
  if (parts.some((c) => c === '' || c.startsWith('.') || c.startsWith('-'))) {
    return (
      'must be a normalised path ' +
      '(no //, no . or .. component, no trailing /, no component starting with . or -)'
    );
  }
  if (kind === 'host') {
    if (!HOST_PATH_ROOTS.some((r) => under(p, r))) {
      return (
        `must lie below ${HOST_PATH_ROOTS.join(', ')} ` +
        `(system directories such as /, /etc, /usr, /bin, /var/lib and /root are never allowed)`
      );
    }
  } else if (
    !POSTGRES_DIR_PARENTS.some((r) => under(p, r)) &&
    !POSTGRES_DIR_ROOTS.some((r) => p === r || under(p, r))
  ) {
    return (
      `must lie strictly below ${POSTGRES_DIR_PARENTS.join(', ')}, ` +
      `or at or below ${POSTGRES_DIR_ROOTS.join(', ')}: ` +
      `pgop makes this directory owned by postgres, so never a system directory or one on root's PATH`
    );
  }
  return undefined;
}

const LIBVIRT_URI = new RegExp(schema.$defs.libvirtUri.pattern, 'u');

/** Why `uri` is not an acceptable libvirt URI, or undefined when it is. */
export function libvirtUriProblem(uri: string): string | undefined {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(uri);
  if (!m) return 'must be a libvirt URI like qemu:///system';
  if (!LIBVIRT_URI_SCHEMES.includes(m[1]!))
    return `unknown URI scheme "${m[1]}": must be one of ${LIBVIRT_URI_SCHEMES.join(', ')}`;
  if (LIBVIRT_URI.test(uri)) return undefined;
  const query = uri.indexOf('?') >= 0 ? uri.slice(uri.indexOf('?') + 1) : '';
  for (const kv of query === '' ? [] : query.split('&')) {
    const name = kv.split('=')[0] ?? '';
    if (!LIBVIRT_URI_PARAMS.includes(name))
      return (
        `URI parameter ${JSON.stringify(name)} is not allowed: ` +
        `use only ${LIBVIRT_URI_PARAMS.join(', ')} (with values of letters, digits and . _ - / ,)`
      );
  }
  return schema.$defs.libvirtUri.patternErrorMessage;
}

/** libvirt URI parameters a spec may use (command and netcat would run programs). */
export const LIBVIRT_URI_PARAMS: readonly string[] = [
  'socket',
  'keyfile',
  'known_hosts',
  'known_hosts_verify',
  'no_verify',
  'no_tty',
  'pkipath',
  'sshauth',
  'mode',
];

export const PLAINTEXT =
  'passwords are referenced, never written in a spec: use {env: NAME} or {file: /abs/path}';
export const SECRET_SHAPE = 'must be exactly one of {env: NAME} or {file: /abs/path}';
