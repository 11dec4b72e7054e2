// The SQL objects pgop keeps on a primary, each ensured idempotently (compare, then change only
// what differs): the superuser's and the spec's roles, search paths, databases, schemas, grants,
// and the standbys' replication slots. Passwords travel as SCRAM verifiers, never in clear.

import type pg from 'pg';
import type { ClusterSpec, NodeSpec } from '../../spec/types.js';
import type { DriverLog } from '../types.js';
import { type PgopError, messageOf, terminal } from '../../errors.js';
import { resolveSecret } from '../../spec/secrets.js';
import { pgMessage } from '../pg-clients.js';
import { binDir, pgPort, quoteIdent, quoteLiteral, scramVerifier, slotName, verifyScram } from './config.js';
import { socketDir, type NodeAccess } from './node-access.js';
import { psqlScript } from './scripts.js';

type Database = ClusterSpec['databases'][number];
interface RoleAttributes {
  login: boolean;
  superuser: boolean;
  createdb: boolean;
  replication: boolean;
}

const SCHEMA_PRIVS = ['USAGE', 'CREATE', 'ALL', 'ALL PRIVILEGES'];
const TABLE_PRIVS = [
  'SELECT',
  'INSERT',
  'UPDATE',
  'DELETE',
  'TRUNCATE',
  'REFERENCES',
  'TRIGGER',
  'ALL',
  'ALL PRIVILEGES',
];

/** The superuser's password (SCRAM verifier) over the local socket with peer auth, when the
 *  operator's TCP login does not work yet (fresh initdb) or the password changed. */
export async function ensureSuperuserPassword(
  a: NodeAccess,
  cluster: ClusterSpec,
  node: NodeSpec,
): Promise<void> {
  const password = a.superuserPassword(cluster);
  try {
    await a.withAdmin(cluster, node, async () => {});
    return;
  } catch (err) {
    const cause = (err as PgopError).cause as { code?: string } | undefined;
    if (cause?.code !== '28P01' && cause?.code !== '28000' && !/password/i.test(messageOf(err))) throw err;
  }
  const verifier = quoteLiteral(scramVerifier(password));
  const sql = `SET log_statement = 'none';\nALTER ROLE postgres PASSWORD ${verifier};\n`;
  const psql = psqlScript(binDir(cluster), socketDir(cluster), pgPort(cluster));
  await a.must(cluster, node, 'set the superuser password', psql, {
    user: 'postgres',
    input: sql,
    kind: 'terminal',
  });
}

/** The replication user, the spec's roles and their search paths, and its databases, on one
 *  superuser session of the primary. */
export async function ensureRolesAndDatabases(
  c: pg.Client,
  cluster: ClusterSpec,
  node: NodeSpec,
  replicationPassword: string,
  log: DriverLog,
): Promise<void> {
  await c.query("SET log_statement = 'none'");
  const replication = { login: true, superuser: false, createdb: false, replication: true };
  await ensureRole(c, cluster.replication.user, replication, log, replicationPassword);
  for (const r of cluster.roles) {
    const pw = r.password ? resolveSecret(r.password, `the password of role ${r.name}`) : undefined;
    await ensureRole(
      c,
      r.name,
      { login: r.login, superuser: r.superuser, createdb: r.createdb, replication: false },
      log,
      pw,
    );
  }
  for (const r of cluster.roles) {
    if (r.searchPath && r.searchPath.length > 0) await ensureSearchPath(c, node, r.name, r.searchPath, log);
  }
  for (const db of cluster.databases) await ensureDatabase(c, node, db, log);
}

/** Each database's schemas and grants, on a session of that database. */
export async function ensureSchemasAndGrants(
  a: NodeAccess,
  cluster: ClusterSpec,
  node: NodeSpec,
): Promise<void> {
  for (const db of cluster.databases) {
    const grants = cluster.grants.filter((g) => g.database === db.name);
    if (db.schemas.length === 0 && grants.length === 0) continue;
    await a.withAdmin(
      cluster,
      node,
      async (c) => {
        for (const s of db.schemas) await ensureSchema(c, s.name, s.owner);
        for (const g of grants) await ensureGrant(c, db, g);
      },
      db.name,
    );
  }
}

async function ensureGrant(c: pg.Client, db: Database, g: ClusterSpec['grants'][number]): Promise<void> {
  const owner = db.schemas.find((s) => s.name === g.schema)?.owner ?? (await schemaOwner(c, g.schema));
  if (!owner) throw terminal(`cannot grant on schema ${g.schema} of ${db.name}: it does not exist`);
  const sp = privileges(g.schemaPrivileges, SCHEMA_PRIVS, `schema privileges for ${g.role}`);
  const tp = privileges(g.tablePrivileges, TABLE_PRIVS, `table privileges for ${g.role}`);
  const schema = quoteIdent(g.schema);
  const role = quoteIdent(g.role);
  if (sp) await c.query(`GRANT ${sp} ON SCHEMA ${schema} TO ${role}`);
  if (tp) {
    await c.query(
      `ALTER DEFAULT PRIVILEGES FOR ROLE ${quoteIdent(owner)} IN SCHEMA ${schema} ` +
        `GRANT ${tp} ON TABLES TO ${role}`,
    );
    await c.query(`GRANT ${tp} ON ALL TABLES IN SCHEMA ${schema} TO ${role}`);
  }
}

async function ensureRole(
  c: pg.Client,
  name: string,
  a: RoleAttributes,
  log: DriverLog,
  password?: string,
): Promise<void> {
  const cur = await c.query<{
    rolcanlogin: boolean;
    rolsuper: boolean;
    rolcreatedb: boolean;
    rolreplication: boolean;
    rolpassword: string | null;
  }>(
    'SELECT rolcanlogin, rolsuper, rolcreatedb, rolreplication, rolpassword ' +
      'FROM pg_authid WHERE rolname = $1',
    [name],
  );
  const attrs = [
    a.login ? 'LOGIN' : 'NOLOGIN',
    a.superuser ? 'SUPERUSER' : 'NOSUPERUSER',
    a.createdb ? 'CREATEDB' : 'NOCREATEDB',
    a.replication ? 'REPLICATION' : 'NOREPLICATION',
  ];
  const row = cur.rows[0];
  const newPassword = password !== undefined && !(row && verifyScram(row.rolpassword, password));
  const pwClause = newPassword ? ` PASSWORD ${quoteLiteral(scramVerifier(password))}` : '';
  if (!row) {
    await c.query(`CREATE ROLE ${quoteIdent(name)} WITH ${attrs.join(' ')}${pwClause}`);
    log.info({ role: name }, 'role created');
    return;
  }
  const same =
    row.rolcanlogin === a.login &&
    row.rolsuper === a.superuser &&
    row.rolcreatedb === a.createdb &&
    row.rolreplication === a.replication;
  if (!same || pwClause) await c.query(`ALTER ROLE ${quoteIdent(name)} WITH ${attrs.join(' ')}${pwClause}`);
}

async function ensureSearchPath(
  c: pg.Client,
  node: NodeSpec,
  role: string,
  searchPath: string[],
  log: DriverLog,
): Promise<void> {
  // pg stores the setting as quote_ident()s joined by ", ": compare before altering
  const same = await c.query<{ same: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
        WHERE r.rolname = $1 AND s.setdatabase = 0
          AND ('search_path=' || (SELECT string_agg(quote_ident(x), ', ' ORDER BY o)
                                    FROM unnest($2::text[]) WITH ORDINALITY AS u(x, o))) = ANY (s.setconfig)
     ) AS same`,
    [role, searchPath],
  );
  if (same.rows[0]?.same) return;
  await c.query(`ALTER ROLE ${quoteIdent(role)} SET search_path TO ${searchPath.map(quoteIdent).join(', ')}`);
  log.info({ node: node.name, role }, 'search_path set');
}

async function ensureDatabase(c: pg.Client, node: NodeSpec, db: Database, log: DriverLog): Promise<void> {
  const cur = await c.query<{ owner: string }>(
    'SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = $1',
    [db.name],
  );
  const row = cur.rows[0];
  if (row) {
    if (row.owner !== db.owner)
      await c.query(`ALTER DATABASE ${quoteIdent(db.name)} OWNER TO ${quoteIdent(db.owner)}`);
    return;
  }
  if (!/^[A-Za-z0-9_-]+$/.test(db.encoding))
    throw terminal(`cannot create database ${db.name}: bad encoding ${JSON.stringify(db.encoding)}`);
  const create = (locale?: string) =>
    c.query(
      `CREATE DATABASE ${quoteIdent(db.name)} OWNER ${quoteIdent(db.owner)} TEMPLATE template0 ` +
        `ENCODING ${quoteLiteral(db.encoding)}` +
        (locale ? ` LC_COLLATE ${quoteLiteral(locale)} LC_CTYPE ${quoteLiteral(locale)}` : ''),
    );
  try {
    await create(db.locale);
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (db.locale && /locale/i.test(e.message ?? '')) {
      log.warn(
        { node: node.name, database: db.name, locale: db.locale },
        `locale ${db.locale} is missing on ${node.name}: using C.UTF-8`,
      );
      await create('C.UTF-8');
    } else throw terminal(`cannot create database ${db.name} on ${node.name}: ${pgMessage(err)}`, err);
  }
  log.info({ node: node.name, database: db.name }, 'database created');
}

async function schemaOwner(c: pg.Client, schema: string): Promise<string | null> {
  const r = await c.query<{ owner: string }>(
    'SELECT pg_get_userbyid(nspowner) AS owner FROM pg_namespace WHERE nspname = $1',
    [schema],
  );
  return r.rows[0]?.owner ?? null;
}

async function ensureSchema(c: pg.Client, name: string, owner: string): Promise<void> {
  const cur = await schemaOwner(c, name);
  if (cur === null)
    await c.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(name)} AUTHORIZATION ${quoteIdent(owner)}`);
  else if (cur !== owner) await c.query(`ALTER SCHEMA ${quoteIdent(name)} OWNER TO ${quoteIdent(owner)}`);
}

function privileges(list: string[], allowed: string[], what: string): string {
  const out = list.map((p) => p.trim().toUpperCase());
  for (const p of out)
    if (!allowed.includes(p)) throw terminal(`cannot grant ${what}: unknown privilege ${JSON.stringify(p)}`);
  return out.join(', ');
}

// ------------------------------------------------------------------------------ slots

/** The standbys' slots on the primary; pgop's slots of nodes no longer in the spec are dropped
 *  once inactive. */
export async function ensureSlots(
  a: NodeAccess,
  cluster: ClusterSpec,
  primary: NodeSpec,
  standbys: string[],
): Promise<void> {
  if (!cluster.replication.slots) return;
  await a.withAdmin(cluster, primary, async (c) => {
    const have = await createSlots(c, primary, standbys, a.log);
    const keep = new Set(cluster.nodes.filter((n) => n.name !== primary.name).map((n) => slotName(n.name)));
    for (const r of have) {
      if (r.slot_name.startsWith('pgop_') && !keep.has(r.slot_name) && !r.active) {
        await c.query('SELECT pg_drop_replication_slot($1)', [r.slot_name]).catch(() => {});
        a.log.info({ node: primary.name, slot: r.slot_name }, 'replication slot dropped');
      }
    }
  });
}

/** Create the missing physical slots of `standbys`; returns the slots that existed before. */
export async function createSlots(
  c: pg.Client,
  primary: NodeSpec,
  standbys: string[],
  log: DriverLog,
): Promise<{ slot_name: string; active: boolean }[]> {
  const have = await c.query<{ slot_name: string; active: boolean }>(
    "SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical'",
  );
  const names = new Set(have.rows.map((r) => r.slot_name));
  for (const s of standbys) {
    if (s === primary.name) continue;
    const slot = slotName(s);
    if (names.has(slot)) continue;
    await c
      .query('SELECT pg_create_physical_replication_slot($1, true)', [slot])
      .catch((err: { code?: string }) => {
        if (err.code !== '42710') throw err; // created meanwhile
      });
    log.info({ node: primary.name, slot }, 'replication slot created');
  }
  return have.rows;
}
