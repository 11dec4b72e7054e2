// The seed cluster (shared/seed) as spec fragments: its conf.d/custom.conf, roles, database and
// grants. The unit tests check pgop renders and parses them; the lab runs them for real.

import type { ClusterSpec, SecretRef } from '../../src/spec/types.js';

/** The seed's conf.d/custom.conf as spec parameters (listen_addresses included on purpose; its
 *  archive_command is left out: the spec's archiveScript stands for it). */
export const SEED_PARAMS = {
  log_destination: 'syslog,csvlog',
  logging_collector: 'on',
  log_directory: '/var/log/postgres',
  log_filename: 'postgresql-%Y-%m-%d.log',
  log_truncate_on_rotation: 'on',
  log_rotation_age: '1d',
  log_rotation_size: 0,
  log_min_duration_statement: -1,
  log_duration: 'on',
  log_line_prefix: '%m %c %u - ',
  log_statement: 'all',
  log_connections: 'on',
  log_disconnections: 'on',
  log_checkpoints: 'on',
  log_timezone: 'Europe/Brussels',
  shared_buffers: '512MB',
  checkpoint_timeout: '15min',
  listen_addresses: '*',
  max_replication_slots: 5,
  archive_mode: 'on',
  wal_level: 'replica',
  max_wal_senders: 5,
  hot_standby: 'on',
  hot_standby_feedback: 'on',
  wal_log_hints: true,
};

/** The seed's schema owner cl_owner and application user cl_user (search_path through cl_owner). */
export function seedRoles(owner: SecretRef, user: SecretRef): ClusterSpec['roles'] {
  return [
    { name: 'cl_owner', login: true, superuser: false, createdb: false, password: owner },
    {
      name: 'cl_user',
      login: true,
      superuser: false,
      createdb: false,
      password: user,
      searchPath: ['$user', 'cl_owner', 'public'],
    },
  ];
}

/** The seed's database critlib with the schema cl_owner. */
export function seedDatabases(): ClusterSpec['databases'] {
  return [
    {
      name: 'critlib',
      owner: 'postgres',
      encoding: 'UTF8',
      locale: 'en_US.UTF8',
      schemas: [{ name: 'cl_owner', owner: 'cl_owner' }],
    },
  ];
}

/** cl_user's use of cl_owner's tables in critlib. */
export function seedGrants(): ClusterSpec['grants'] {
  return [
    {
      role: 'cl_user',
      database: 'critlib',
      schema: 'cl_owner',
      schemaPrivileges: ['USAGE'],
      tablePrivileges: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'],
    },
  ];
}
