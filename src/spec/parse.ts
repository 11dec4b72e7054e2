// YAML text -> validated, defaulted ClusterSpec. schema/cluster.schema.json is the validator;
// this module maps its errors back to file:line:column + the field's path in the user's
// document, adds the checks a JSON Schema cannot express (cross-references, networks), and
// fills defaults. Every problem found is reported at once, in document order.

import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { ErrorObject, ValidateFunction } from 'ajv';
import {
  LineCounter,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  parseAllDocuments,
  visit,
  type Document,
} from 'yaml';
import schema from '../../schema/cluster.schema.json' with { type: 'json' };
import { SpecError, internal, type SpecProblem } from '../errors.js';
import type {
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
} from './types.js';
import { PGPOOL_MAX_POOL, pgpoolConnectionBudget } from './types.js';
import type { TlsSpec } from './types.js';
import { formatIpv4, inNetwork, networkOf, parseCidr, parseIpv4, type Ipv4Network } from '../net/ipv4.js';

export interface ParsedSpec {
  spec: ClusterSpec;
  /** sha256 (hex) of canonicalJson(spec): equal specs hash equal whatever the key order. */
  hash: string;
  /** The YAML text as the user wrote it (stored with each spec generation). */
  source: string;
}

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

export const LIBVIRT_URI_SCHEMES: readonly string[] = ['qemu', 'qemu+ssh', 'qemu+tcp', 'qemu+tls', 'qemu+unix', 'test', 'test+unix'];

/** The lab's and the libvirt provider's name for the pgpool host. */
const RESERVED_NODE_NAME = 'pool';

/** The postgres-owned directories each lab node mounts privately (src/drivers/lab/provider.ts
 *  PRIVATE_MOUNTS, less /opt/postgres, which holds the archive script). */
export const LAB_POSTGRES_MOUNTS: readonly string[] = ['/u01', '/u02', '/var/log/postgres', '/var/lib/postgresql'];

/** Every directory a lab node mounts privately (PRIVATE_MOUNTS, and /var/run, which is /run):
 *  the lab's stateDir, which the operator reads on the machine itself, cannot lie there. */
export const LAB_PRIVATE_MOUNTS: readonly string[] = ['/u01', '/u02', '/var/log/postgres', '/opt/postgres', '/var/lib/postgresql', '/etc/pgpool2', '/root', '/tmp', '/run', '/var/run/postgresql', '/var/run'];

/** sim never resolves secrets, so it gets a placeholder reference instead of requiring one. */
const SIM_SECRET: SecretRef = { env: 'PGOP_SIM_PASSWORD' };

// ---------------------------------------------------------------------------------------------
// Public API

export interface ParseOptions {
  /** Also check what the spec names on this machine, as \`pgop apply\` does: the base image of a
   *  libvirt cluster whose hypervisor is local must exist. Off for pure parsing (tests, diff). */
  checkHost?: boolean;
}

export function parseSpecFile(path: string, opts: ParseOptions = {}): ParsedSpec {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : code === 'EACCES' ? 'permission denied' : String(code ?? err);
    throw new SpecError([{ file: path, line: 1, column: 1, path: '(file)', message: `cannot read spec: ${why}` }]);
  }
  return parseSpecText(text, path, opts);
}

export function parseSpecText(text: string, file: string, opts: ParseOptions = {}): ParsedSpec {
  const lineCounter = new LineCounter();
  // prettyErrors off: we want the bare message; the position comes from the LineCounter.
  const docs = Array.from(parseAllDocuments(text, { lineCounter, prettyErrors: false }));
  const at = (offset: number) => lineCounter.linePos(offset);

  // Only the first syntax error: the parser's later ones are mostly consequences of it.
  const first = docs.flatMap((d) => d.errors).sort((a, b) => a.pos[0] - b.pos[0])[0];
  if (first) {
    const { line, col } = at(first.pos[0]);
    throw new SpecError([{ file, line, column: col, path: '(yaml)', message: first.message }]);
  }

  const real = docs.filter((d) => !isEmptyDocument(d));
  const doc = real[0];
  if (!doc) {
    throw new SpecError([{ file, line: 1, column: 1, path: '(document)', message: 'empty document: expected a Cluster spec' }]);
  }
  if (real.length > 1) {
    // Point at the `---` that starts the second cluster.
    const second = real[1]!;
    const { line, col } = at(second.range[0]);
    throw new SpecError([
      { file, line, column: col, path: '(document)', message: 'more than one YAML document: write one cluster per file' },
    ]);
  }

  // toJS() would throw on these without a position.
  const syntax: SpecProblem[] = [];
  visit(doc, {
    Alias(_, node) {
      if (!node.resolve(doc)) {
        const { line, col } = at(node.range?.[0] ?? 0);
        syntax.push({ file, line, column: col, path: '(yaml)', message: `unknown alias *${node.source}: no anchor &${node.source} before it` });
      }
    },
  });
  if (syntax.length > 0) throw new SpecError(syntax);

  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new SpecError([{ file, line: 1, column: 1, path: '(yaml)', message: err instanceof Error ? err.message : String(err) }]);
  }

  const report = new Reporter(file, doc, at);
  const validate = validator();
  if (!validate(raw)) {
    for (const e of validate.errors ?? []) schemaProblem(e, report);
  }
  // Semantic checks run even when the schema failed (they guard every access), so one run
  // lists everything; a path the schema already flagged is not reported twice.
  checkSemantics(raw, report, opts);
  if (report.problems.length > 0) throw new SpecError(report.sorted());

  const spec = normalize(raw as RawDoc);
  return { spec, hash: createHash('sha256').update(canonicalJson(spec)).digest('hex'), source: text };
}

/** JSON with object keys sorted at every level (arrays keep their order). */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const parts: string[] = [];
  for (const k of Object.keys(obj).sort()) {
    const v = obj[k];
    if (v === undefined || typeof v === 'function') continue;
    parts.push(`${JSON.stringify(k)}:${canonicalJson(v)}`);
  }
  return `{${parts.join(',')}}`;
}

// ---------------------------------------------------------------------------------------------
// Schema validation

let compiled: ValidateFunction | undefined;

/** Compiled on first use: compiling costs tens of ms and `pgop get` never needs it. */
function validator(): ValidateFunction {
  if (!compiled) {
    const ajv = new Ajv2020({
      allErrors: true,
      verbose: true, // errors carry data and parentSchema: needed for messages
      discriminator: true,
      allowUnionTypes: true,
      // The schema is checked against the meta-schema by the unit tests; skipping it here and
      // the code optimizer halves compile time.
      validateSchema: false,
      code: { optimize: false },
    });
    // Non-validating annotation (also understood by VS Code) giving a readable pattern message.
    ajv.addKeyword({ keyword: 'patternErrorMessage', schemaType: 'string' });
    compiled = ajv.compile(schema);
  }
  return compiled;
}

function schemaProblem(e: ErrorObject, r: Reporter): void {
  const segs = pointerSegments(e.instancePath);
  const data: unknown = e.data;
  const ps = (e.parentSchema ?? {}) as Record<string, unknown>;
  const isSecret = ps === (schema.$defs.secretRef as unknown);
  const params = e.params as Record<string, unknown>;

  switch (e.keyword) {
    case 'additionalProperties': {
      const name = String(params.additionalProperty);
      const known = Object.keys((ps.properties as Record<string, unknown> | undefined) ?? {});
      const guess = closest(name, known);
      r.add([...segs, name], `unknown field "${name}"${guess ? ` (did you mean "${guess}"?)` : ''}`, { atKey: true });
      return;
    }
    case 'required': {
      const name = String(params.missingProperty);
      const why = e.schemaPath.includes('/then/') ? ' (required for the lab and libvirt providers)' : '';
      r.add([...segs, name], `missing required field "${name}"${why}`, { at: segs });
      return;
    }
    case 'type': {
      if (isSecret) {
        r.add(segs, typeof data === 'string' || typeof data === 'number' ? PLAINTEXT : SECRET_SHAPE);
        return;
      }
      r.add(segs, `must be ${orList(([] as string[]).concat(params.type as string | string[]))}, got ${describe(data)}`);
      return;
    }
    case 'minProperties':
    case 'maxProperties':
      r.add(segs, isSecret ? SECRET_SHAPE : `${e.message ?? 'invalid'}`);
      return;
    case 'enum':
      r.add(segs, `must be one of ${(params.allowedValues as unknown[]).map(String).join(', ')}; got ${describe(data)}`);
      return;
    case 'const':
      r.add(segs, `must be ${JSON.stringify(params.allowedValue)}, got ${describe(data)}`);
      return;
    case 'pattern': {
      const hint = typeof ps.patternErrorMessage === 'string' ? ps.patternErrorMessage : `must match ${String(params.pattern)}`;
      const precise = typeof data === 'string' ? preciseProblem(ps, data) : undefined;
      if (precise !== undefined && e.propertyName === undefined) {
        r.add(segs, `${precise}, got ${describe(data)}`);
      } else if (e.propertyName !== undefined) {
        // From propertyNames: the offending thing is the key itself.
        r.add([...segs, e.propertyName], `invalid name "${e.propertyName}": ${hint}`, { atKey: true });
      } else {
        r.add(segs, `${hint}, got ${describe(data)}`);
      }
      return;
    }
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      r.add(segs, `must be ${String(params.comparison)} ${String(params.limit)}, got ${describe(data)}`);
      return;
    case 'minItems':
      r.add(segs, `must have at least ${String(params.limit)} item${params.limit === 1 ? '' : 's'}`);
      return;
    case 'maxItems':
      r.add(segs, `must have at most ${String(params.limit)} items`);
      return;
    case 'minLength':
      r.add(segs, params.limit === 1 ? 'must not be empty' : `must be at least ${String(params.limit)} characters`);
      return;
    case 'maxLength':
      if (e.propertyName !== undefined) r.add([...segs, e.propertyName], `invalid name: must be at most ${String(params.limit)} characters`, { atKey: true });
      else r.add(segs, `must be at most ${String(params.limit)} characters, got ${typeof data === 'string' ? data.length : '?'}`);
      return;
    case 'uniqueItems': {
      const [a, b] = [Number(params.i), Number(params.j)].sort((x, y) => x - y) as [number, number];
      r.add([...segs, b], `duplicate item (also ${formatPath([...segs, a])})`);
      return;
    }
    case 'discriminator': {
      const tag = String(params.tag);
      const value = isObject(data) ? data[tag] : undefined;
      if (value === undefined) return; // `required` already says it is missing
      if (params.error === 'tag') {
        r.add([...segs, tag], `must be string, got ${describe(value)}`);
      } else {
        const options = ((ps.oneOf as Array<{ properties: Record<string, { const: string }> }>) ?? []).map((o) => o.properties[tag]?.const);
        const shown = typeof value === 'string' ? JSON.stringify(value) : describe(value);
        r.add([...segs, tag], `unknown ${segs.at(-1) ?? ''} type ${shown}: must be one of ${options.join(', ')}`);
      }
      return;
    }
    case 'if':
    case 'propertyNames':
    case 'oneOf':
    case 'anyOf':
      return; // wrappers: the errors that caused them are reported themselves
    default:
      r.add(segs, e.message ?? `fails ${e.keyword}`);
  }
}

/** The rule a path or URI broke, in words (the schema's pattern says the same in one regex;
 *  test/property/hostile-spec.property.test.ts checks that both agree). */
function preciseProblem(ps: Record<string, unknown>, value: string): string | undefined {
  if (ps === (schema.$defs.absPath as unknown)) return pathProblem('host', value);
  if (ps === (schema.$defs.postgresDir as unknown)) return pathProblem('postgres', value);
  if (ps === (schema.$defs.libvirtUri as unknown)) return libvirtUriProblem(value);
  return undefined;
}

/** Roots below which paths on the operator's machine may lie (schema $defs.absPath). */
export const HOST_PATH_ROOTS: readonly string[] = ['/var/lib/pgop', '/var/lib/libvirt', '/var/cache/pgop', '/etc/pgop', '/run/pgop', '/run/secrets', '/run/credentials', '/srv', '/data', '/u00-/u99', '/home', '/mnt', '/media', '/opt', '/tmp', '/var/tmp'];
/** Directories pgop makes postgres-owned on the nodes: strictly below these... */
export const POSTGRES_DIR_PARENTS: readonly string[] = ['/u00-/u99', '/srv', '/data'];
/** ...or at or below these (schema $defs.postgresDir). */
export const POSTGRES_DIR_ROOTS: readonly string[] = ['/var/lib/postgresql', '/var/lib/pgsql', '/var/log/postgres', '/var/log/postgresql', '/var/log/pgsql'];

const under = (p: string, root: string) => (root === '/u00-/u99' ? /^\/u[0-9]{2}\/./.test(p) : p.startsWith(`${root}/`));

/** Why `p` is not an acceptable path ('host': on the operator's machine; 'postgres': a directory
 *  made postgres-owned on the nodes), or undefined when it is. */
export function pathProblem(kind: 'host' | 'postgres', p: string): string | undefined {
  if (!p.startsWith('/')) return 'must be an absolute path (starting with /)';
  const bad = /[^A-Za-z0-9._/-]/u.exec(p);
  if (bad) return `must be a path of letters, digits and . _ - / only (not ${JSON.stringify(bad[0])})`;
  if (p === '/') return kind === 'host' ? `must lie below ${HOST_PATH_ROOTS.join(', ')}, not be /` : 'must not be /: pgop makes this directory owned by postgres';
  const parts = p.slice(1).split('/');
  if (parts.some((c) => c === '' || c.startsWith('.') || c.startsWith('-'))) {
    return 'must be a normalised path (no //, no . or .. component, no trailing /, no component starting with . or -)';
  }
  if (kind === 'host') {
    if (!HOST_PATH_ROOTS.some((r) => under(p, r))) {
      return `must lie below ${HOST_PATH_ROOTS.join(', ')} (system directories such as /, /etc, /usr, /bin, /var/lib and /root are never allowed)`;
    }
  } else if (!POSTGRES_DIR_PARENTS.some((r) => under(p, r)) && !POSTGRES_DIR_ROOTS.some((r) => p === r || under(p, r))) {
    return `must lie strictly below ${POSTGRES_DIR_PARENTS.join(', ')}, or at or below ${POSTGRES_DIR_ROOTS.join(', ')}: pgop makes this directory owned by postgres, so never a system directory or one on root's PATH`;
  }
  return undefined;
}

const LIBVIRT_URI = new RegExp(schema.$defs.libvirtUri.pattern, 'u');

/** Why `uri` is not an acceptable libvirt URI, or undefined when it is. */
export function libvirtUriProblem(uri: string): string | undefined {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(uri);
  if (!m) return 'must be a libvirt URI like qemu:///system';
  if (!LIBVIRT_URI_SCHEMES.includes(m[1]!)) return `unknown URI scheme "${m[1]}": must be one of ${LIBVIRT_URI_SCHEMES.join(', ')}`;
  if (LIBVIRT_URI.test(uri)) return undefined;
  const query = uri.indexOf('?') >= 0 ? uri.slice(uri.indexOf('?') + 1) : '';
  for (const kv of query === '' ? [] : query.split('&')) {
    const name = kv.split('=')[0] ?? '';
    if (!LIBVIRT_URI_PARAMS.includes(name)) return `URI parameter ${JSON.stringify(name)} is not allowed: use only ${LIBVIRT_URI_PARAMS.join(', ')} (with values of letters, digits and . _ - / ,)`;
  }
  return schema.$defs.libvirtUri.patternErrorMessage;
}

/** libvirt URI parameters a spec may use (command and netcat would run programs). */
export const LIBVIRT_URI_PARAMS: readonly string[] = ['socket', 'keyfile', 'known_hosts', 'known_hosts_verify', 'no_verify', 'no_tty', 'pkipath', 'sshauth', 'mode'];

const PLAINTEXT = 'passwords are referenced, never written in a spec: use {env: NAME} or {file: /abs/path}';
const SECRET_SHAPE = 'must be exactly one of {env: NAME} or {file: /abs/path}';

// ---------------------------------------------------------------------------------------------
// Semantic checks: the raw document may be schema-invalid here, so every access is guarded.

type Raw = Record<string, unknown>;
type RawDoc = { metadata: Raw; spec: Raw };

const isObject = (v: unknown): v is Raw => typeof v === 'object' && v !== null && !Array.isArray(v);
const obj = (v: unknown): Raw => (isObject(v) ? v : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

interface Net extends Ipv4Network {
  cidr: string;
  path: Seg[];
}

function checkSemantics(rawDoc: unknown, r: Reporter, opts: ParseOptions = {}): void {
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
    const inside = typeof stateDir === 'string' ? LAB_PRIVATE_MOUNTS.find((m) => stateDir === m || stateDir.startsWith(`${m}/`)) : undefined;
    if (inside) r.add([...S, 'provider', 'stateDir'], `${String(stateDir)} lies under ${inside}, which every lab node mounts privately: choose another directory`);
    if (net) reserved.set(net.base + 1, 'is reserved for the lab bridge (the operator\'s own address)');
  } else if (ptype === 'libvirt') {
    const n = obj(provider.network);
    net = checkNetwork(n.cidr, [...S, 'provider', 'network', 'cidr'], r);
    const gwPath: Seg[] = [...S, 'provider', 'network', 'gateway'];
    const gw = parseIpv4(n.gateway);
    if (net && gw !== undefined) {
      const why = outsideOrEdge(gw, net);
      if (why) r.add(gwPath, `gateway ${String(n.gateway)} ${why}`);
      else reserved.set(gw, 'is the network\'s gateway');
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
      if (prev !== undefined) r.add([...np, 'name'], `duplicate node name ${name} (also ${formatPath([...S, 'nodes', prev, 'name'])})`);
      else names.set(name, i);
    }
    const ip = checkAddress(node.address, [...np, 'address']);
    if (ip !== undefined) {
      const prev = addresses.get(ip);
      if (prev !== undefined) {
        r.add([...np, 'address'], `duplicate node address ${String(node.address)} (also ${formatPath([...S, 'nodes', prev, 'address'])})`);
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
    if (owner !== undefined) r.add(path, `${what} ${String(value)} is also the address of ${formatPath([...S, 'nodes', owner, 'address'])}`);
    return ip;
  };
  if (pgpool.address === undefined) {
    if (ptype === 'lab' && pgpoolOn) {
      r.add([...pp, 'address'], 'missing required field "address" (the lab runs pgpool on a host of its own)', { at: pp });
    }
  }
  notANode(pgpool.address, [...pp, 'address'], 'pgpool address');
  // With watchdog the vip may equal `address` (clients' address = the VIP holder).
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
      `syncQuorum ${quorum} is more than the ${standbys} standby${standbys === 1 ? '' : 's'} of ${nodes.length} node${nodes.length === 1 ? '' : 's'}: sync mode needs syncQuorum <= nodes - 1`,
    );
  }
  const replUser = str(repl.user) ?? 'replicator';

  // --- postgres parameters and hba
  const pg = obj(spec.postgres);
  if (ptype === 'lab') {
    // A lab node shares the machine's file system except its private mounts: a directory
    // elsewhere would be the machine's own, shared by every node (and made postgres-owned).
    for (const key of ['dataDir', 'archiveDir', 'backupDir', 'logDir']) {
      const dir = pg[key];
      if (typeof dir !== 'string' || pathProblem('postgres', dir) !== undefined) continue;
      if (!LAB_POSTGRES_MOUNTS.some((m) => dir === m || dir.startsWith(`${m}/`))) {
        r.add([...S, 'postgres', key], `${dir} is not private to a lab node: use a directory at or below ${LAB_POSTGRES_MOUNTS.join(', ')}`);
      }
    }
  }
  const params = obj(pg.parameters);
  const parp: Seg[] = [...S, 'postgres', 'parameters'];
  for (const key of Object.keys(params)) {
    if (MANAGED_PARAMETERS.has(key)) r.add([...parp, key], `${key} is managed by pgop (set per node): remove it from the spec`, { atKey: true });
  }
  if (params.wal_level === 'minimal') r.add([...parp, 'wal_level'], 'wal_level minimal cannot feed standbys: use replica or logical');
  for (const [key, what] of [['max_wal_senders', 'a sender'], ['max_replication_slots', 'a slot']] as const) {
    const v = params[key];
    if (key === 'max_replication_slots' && repl.slots === false) continue;
    if (typeof v === 'number' && v < standbys) r.add([...parp, key], `${key} ${v} is less than the ${standbys} standbys (each needs ${what})`);
  }
  if (pgpoolOn && typeof pgpool.numInitChildren === 'number') {
    const { maxConnections, reserved, maxChildren } = pgpoolConnectionBudget(params);
    const n = pgpool.numInitChildren;
    if (n > maxChildren) {
      r.add(
        [...pp, 'numInitChildren'],
        `numInitChildren ${n} x max_pool ${PGPOOL_MAX_POOL} = ${n * PGPOOL_MAX_POOL} pooled sessions per backend, more than max_connections ${maxConnections} - superuser_reserved_connections ${reserved} = ${maxConnections - reserved}: use at most ${Math.max(0, maxChildren)}, or raise postgres.parameters.max_connections`,
      );
    }
  }
  const tls = obj(spec.tls);
  if (typeof tls.renewBeforeDays === 'number' && tls.renewBeforeDays >= ((tls.certificateDays as number | undefined) ?? 90)) {
    r.add([...S, 'tls', 'renewBeforeDays'], `renewBeforeDays ${tls.renewBeforeDays} must be less than certificateDays (${(tls.certificateDays as number | undefined) ?? 90}): certificates would be renewed on every pass`);
  }
  const archiveOn = params.archive_mode === true || params.archive_mode === 'on' || params.archive_mode === 'always';
  if (archiveOn && params.archive_command === undefined && pg.archiveScript === false) {
    r.add([...parp, 'archive_mode'], 'archive_mode is on but there is no archive_command and postgres.archiveScript is false: WAL would pile up');
  }
  arr(pg.hba).forEach((h, i) => {
    const rule = obj(h);
    const hp: Seg[] = [...S, 'postgres', 'hba', i];
    if (rule.type === 'local' && rule.address !== undefined) r.add([...hp, 'address'], 'local rules take no address');
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
    if (name === 'postgres') r.add(p, 'postgres is the superuser pgop manages (its password is spec.postgres.superuserPassword)');
    else if (name === replUser) r.add(p, `${name} is the replication user pgop manages (spec.replication.user)`);
    else if (roles.has(name)) r.add(p, `duplicate role ${name} (also ${formatPath([...S, 'roles', roles.get(name)!, 'name'])})`);
    else roles.set(name, i);
  });
  const roleExists = (v: unknown, path: Seg[]) => {
    if (typeof v === 'string' && v !== 'postgres' && !roles.has(v)) r.add(path, `unknown role "${v}": not in spec.roles (nor postgres)`);
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
  const uris = [typeof provider.uri === 'string' ? provider.uri : 'qemu:///system', ...nodes.map((n) => obj(n).hypervisor).filter((u): u is string => typeof u === 'string')];
  const local = uris.find((u) => /^[A-Za-z][A-Za-z0-9+.-]*:\/\/\//.test(u) && !/^test[+:]/.test(u));
  if (!local) return;
  let why: string | undefined;
  try {
    if (!statSync(image).isFile()) why = 'is not a file';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    why = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'cannot be read (permission denied)' : `cannot be read (${String(code)})`;
  }
  if (why) {
    r.add(path, `base image ${image} ${why} on this machine (the hypervisor of ${local}): build it with \`pgop image build\` or point baseImage at a downloaded cloud image`);
  }
}

// ---------------------------------------------------------------------------------------------
// Defaults: the typed spec. Only called on a document that passed every check above.

function normalize(doc: RawDoc): ClusterSpec {
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
    archiveScript: (pg.archiveScript as boolean | undefined) ?? true,
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
  };
  const pgpool: PgpoolSpec = omitUndefined({
    enabled: (pool.enabled as boolean | undefined) ?? true,
    address: str(pool.address),
    port: (pool.port as number | undefined) ?? 9999,
    pcpPort: (pool.pcpPort as number | undefined) ?? 9898,
    loadBalancing: (pool.loadBalancing as boolean | undefined) ?? true,
    watchdog: omitUndefined({ enabled: (wd.enabled as boolean | undefined) ?? false, vip: str(wd.vip) }),
    // pgpool's own default (32), or less when postgres would not take that many pooled sessions
    numInitChildren: (pool.numInitChildren as number | undefined) ?? Math.max(1, Math.min(32, pgpoolConnectionBudget(obj(pg.parameters)).maxChildren)),
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
  };
}

function normalizeProvider(p: Raw, cluster: string): ProviderSpec {
  if (p.type === 'sim') return { type: 'sim' };
  if (p.type === 'lab') return omitUndefined({ type: 'lab' as const, network: p.network as string, stateDir: str(p.stateDir) });
  const pool = obj(p.pool);
  const net = obj(p.network);
  const disk = obj(p.dataDisk);
  return {
    type: 'libvirt',
    uri: str(p.uri) ?? 'qemu:///system',
    baseImage: p.baseImage as string,
    pool: p.pool === undefined ? { name: 'pgop', path: '/var/lib/pgop/pool' } : { name: pool.name as string, path: pool.path as string },
    network: omitUndefined({ name: str(net.name) ?? `pgop-${cluster}`, cidr: net.cidr as string, gateway: net.gateway as string, bridge: str(net.bridge) }),
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

// ---------------------------------------------------------------------------------------------
// Positions: JSON path -> YAML node -> line/column

type Seg = string | number;

class Reporter {
  readonly problems: SpecProblem[] = [];
  private readonly seen = new Set<string>();

  constructor(
    private readonly file: string,
    private readonly doc: Document,
    private readonly linePos: (offset: number) => { line: number; col: number },
  ) {}

  /** `at` overrides the node whose position is reported (default: the field itself);
   *  `atKey` points at the field's key rather than its value. */
  add(path: Seg[], message: string, opts: { at?: Seg[]; atKey?: boolean } = {}): void {
    const p = formatPath(path);
    // One problem per path: schema errors come first and are the more precise.
    if (this.seen.has(p)) return;
    this.seen.add(p);
    const offset = this.offsetOf(opts.at ?? path, opts.atKey ?? false);
    const { line, col } = this.linePos(offset);
    this.problems.push({ file: this.file, line, column: col, path: p, message });
  }

  sorted(): SpecProblem[] {
    return [...this.problems].sort((a, b) => a.line - b.line || a.column - b.column);
  }

  /** Offset of the YAML node at `path`; when the path does not exist in the document (a
   *  defaulted field), the deepest part that does, at its key. */
  private offsetOf(path: Seg[], atKey: boolean): number {
    let node: unknown = this.doc.contents;
    let keyPos: number | undefined;
    let found = true;
    for (const seg of path) {
      if (isAlias(node)) node = node.resolve(this.doc);
      if (isMap(node)) {
        const pair = node.items.find((it) => isScalar(it.key) && String(it.key.value) === String(seg));
        if (!pair) {
          found = false;
          break;
        }
        keyPos = rangeStart(pair.key);
        node = pair.value;
      } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
        keyPos = undefined;
        node = node.items[seg];
      } else {
        found = false;
        break;
      }
    }
    const valuePos = isEmptyScalar(node) ? undefined : rangeStart(node);
    if (!found || atKey) return keyPos ?? valuePos ?? 0;
    return valuePos ?? keyPos ?? 0;
  }
}

function rangeStart(n: unknown): number | undefined {
  const r = (n as { range?: [number, number, number] } | null | undefined)?.range;
  return r ? r[0] : undefined;
}

/** `key:` with nothing after it: its zero-width range sits at the end of the line. */
const isEmptyScalar = (n: unknown) => isScalar(n) && n.value === null && !n.source;

function isEmptyDocument(d: Document): boolean {
  return d.contents === null || isEmptyScalar(d.contents);
}

function pointerSegments(pointer: string): Seg[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => {
      const t = s.replace(/~1/g, '/').replace(/~0/g, '~');
      return /^(0|[1-9]\d*)$/.test(t) ? Number(t) : t;
    });
}

/** spec.nodes[1].address; keys that are not identifiers are quoted: parameters["a b"]. */
export function formatPath(segs: readonly Seg[]): string {
  let out = '';
  for (const s of segs) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(s)) out += out === '' ? s : `.${s}`;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out === '' ? '(root)' : out;
}

// ---------------------------------------------------------------------------------------------
// Message helpers

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'object') return 'object';
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v)}`;
  return `${typeof v} ${String(v)}`;
}

function orList(items: string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} or ${items.at(-1)}`;
}

/** The known name within edit distance 2 of a misspelt one, if any. */
function closest(name: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const k of known) {
    const d = editDistance(name.toLowerCase(), k.toLowerCase());
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
