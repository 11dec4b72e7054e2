// Hostile strings in every string field of every spec kind (issue 13): shell metacharacters,
// $(...), backticks, quotes, newlines, NUL, .., very long values, non-ASCII, leading '-'. The
// string leaves (values and map keys) of specs/{sim,lab,libvirt}-3node.yaml are found by walking
// the YAML, so a new field is covered without touching this file. For each substitution the
// parser either rejects the spec (a SpecError naming the field, at its line) or accepts it, and
// then every file and command pgop renders from the spec carries the value as inert data:
// postgresql.conf values only inside '...', pg_hba words plain or "...", shell words only as
// shellJoin/shQuote words that decode back to the value, XML only escaped, YAML only as values
// that parse back equal. Nothing renders with an error (a spec that passes apply must not break
// later).
//
// Replay or explore:
//   PGOP_PROPERTY_SEED=<seed> PGOP_PROPERTY_RUNS=<n> npx vitest run test/property/hostile-spec

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  LineCounter,
  isMap,
  isScalar,
  isSeq,
  parse as parseYaml,
  parseDocument,
  type Document,
  type Node as YamlNode,
} from 'yaml';
import schema from '../../schema/cluster.schema.json' with { type: 'json' };
import { SpecError } from '../../src/errors.js';
import { formatPath, libvirtUriProblem, parseSpecText, pathProblem } from '../../src/spec/parse.js';
import { poolVip, type ClusterSpec, type NodeSpec } from '../../src/spec/types.js';
import {
  MANAGED_KEYS,
  PER_NODE_KEYS,
  SOCKET_DIR,
  binDir,
  clusterNetworks,
  hbaType,
  nodeOptionString,
  nodeOptions,
  renderArchiveScript,
  renderConf,
  renderHba,
  renderReplicationPassfile,
  renderStandbyConf,
  renderSyncConf,
  replicationPassfilePath,
  scriptDir,
  syncStandbyNamesValue,
} from '../../src/drivers/postgres/config.js';
import {
  renderPcpPass,
  renderPgpoolConf,
  renderPoolHba,
  renderPoolPasswd,
} from '../../src/drivers/pgpool/config.js';
import { allMachines, parseCidr } from '../../src/drivers/libvirt/names.js';
import {
  renderDomainXml,
  renderNetworkXml,
  renderPoolXml,
  renderVolumeXml,
} from '../../src/drivers/libvirt/xml.js';
import { renderSeed } from '../../src/drivers/libvirt/cloudinit.js';
import { generateKeyPair } from '../../src/drivers/ssh/keys.js';
import { shellJoin } from '../../src/drivers/ssh/quote.js';
import { SshPostgresDriver } from '../../src/drivers/postgres/driver.js';
import type { ExecOptions, ExecResult, HostRef, NodeShell } from '../../src/drivers/types.js';

/** The seed's host key: a real pair, so the renderer's key checks pass and only spec values vary. */
const HOST_KEY = generateKeyPair('pgop-host');

const root = new URL('../../', import.meta.url).pathname;
const SEED =
  process.env.PGOP_PROPERTY_SEED === 'random'
    ? Date.now() % 2 ** 31
    : Number(process.env.PGOP_PROPERTY_SEED ?? 1313);
const RUNS = Number(process.env.PGOP_PROPERTY_RUNS ?? 300);

const BASES: Record<string, string> = {
  sim: readFileSync(join(root, 'specs/sim-3node.yaml'), 'utf8'),
  lab: readFileSync(join(root, 'specs/lab-3node.yaml'), 'utf8'),
  libvirt: readFileSync(join(root, 'specs/libvirt-3node.yaml'), 'utf8'),
};

// ------------------------------------------------------------------------ the string leaves

type Seg = string | number;
interface Leaf {
  path: Seg[];
  /** a map key (the field's name) rather than a value */
  key: boolean;
  original: string;
}

/** The string leaves, grouped by field: list items share a field, and so do the entries of a
 *  dictionary-like map (more than 8 keys, e.g. parameters), so that each field is drawn equally
 *  often however many entries the base spec has. */
function leavesOf(doc: Document): Leaf[][] {
  const groups = new Map<string, Leaf[]>();
  const add = (shape: string, leaf: Leaf) => groups.set(shape, [...(groups.get(shape) ?? []), leaf]);
  const walk = (node: unknown, path: Seg[], shape: string) => {
    if (isMap(node)) {
      const dict = node.items.length > 8;
      for (const pair of node.items) {
        if (!isScalar(pair.key) || typeof pair.key.value !== 'string') continue;
        const k = pair.key.value;
        const s = `${shape}.${dict ? '*' : k}`;
        add(`${s} (key)`, { path: [...path, k], key: true, original: k });
        walk(pair.value, [...path, k], s);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => walk(item, [...path, i], `${shape}[]`));
    } else if (isScalar(node) && typeof node.value === 'string') {
      add(shape, { path, key: false, original: node.value });
    }
  };
  walk(doc.contents, [], '');
  return [...groups.values()];
}

const LEAVES: Record<string, Leaf[][]> = Object.fromEntries(
  Object.entries(BASES).map(([k, t]) => [k, leavesOf(parseDocument(t))]),
);

/** The spec text with the leaf's value (or key) replaced; null when a key would collide. */
function substitute(base: string, leaf: Leaf, value: string): string | null {
  const doc = parseDocument(base);
  if (!leaf.key) {
    doc.setIn(leaf.path, value);
    return doc.toString();
  }
  const parent = leaf.path.length === 1 ? doc.contents : doc.getIn(leaf.path.slice(0, -1), true);
  if (!isMap(parent)) throw new Error(`no map at ${formatPath(leaf.path.slice(0, -1))}`);
  if (parent.items.some((p) => isScalar(p.key) && p.key.value === value)) return null;
  const pair = parent.items.find((p) => isScalar(p.key) && p.key.value === leaf.original)!;
  pair.key = doc.createNode(value);
  return doc.toString();
}

/** Does `text` hold `value` at the leaf? The yaml library does not write every string so that
 *  it reads back (":\na" as a plain scalar): such a document is not what a user wrote. */
function roundTrips(text: string, leaf: Leaf, value: string): boolean {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) return false;
  if (!leaf.key) return doc.getIn(leaf.path) === value;
  const parent = leaf.path.length === 1 ? doc.contents : doc.getIn(leaf.path.slice(0, -1), true);
  return isMap(parent) && parent.items.some((p) => isScalar(p.key) && p.key.value === value);
}

/** Lines of the key and of the value of the field at `path` in `text`. */
function linesOf(text: string, path: Seg[]): Set<number> {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc });
  let node: unknown = doc.contents;
  const lines = new Set<number>();
  for (const seg of path) {
    lines.clear();
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) break;
      const k = (pair.key as YamlNode).range;
      if (k) lines.add(lc.linePos(k[0]).line);
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      node = node.items[seg];
    } else break;
    const r = (node as YamlNode | null)?.range;
    if (r) lines.add(lc.linePos(r[0]).line);
  }
  return lines;
}

// ------------------------------------------------------------------------ hostile strings

const PIECES = [
  '$(id)',
  '$(touch /tmp/pwned)',
  '`id`',
  '${IFS}',
  '$HOME',
  "'",
  '"',
  "'\\''",
  '\\',
  '\n',
  '\r',
  '\r\n',
  '\t',
  '\0',
  '\u0007',
  '\u007f',
  '\u0085',
  '\u2028',
  '..',
  '../../../../etc/passwd',
  '/../',
  '//',
  '/./',
  '-',
  '--help',
  '-rf',
  ';id',
  '|id',
  '&&id',
  '&',
  '>x',
  '<x',
  '*',
  '?',
  '~',
  '{a,b}',
  '#',
  '%',
  '%p',
  ' ',
  'a b',
  '=',
  ':',
  ',',
  '@',
  '@/etc/passwd',
  '+',
  '!',
  '^',
  '[x]',
  '&amp;',
  '<x/>',
  "'/><x a='",
  ']]>',
  '---',
  '{{x}}',
  'é',
  '日本語',
  '🐘',
  '\ufeff',
  'null',
  'true',
  '0x1F',
  '__proto__',
  'constructor',
  'all',
  'trust',
  'pg_x',
  'root',
  'postgres',
  'x'.repeat(300),
  '/'.repeat(3) + 'a'.repeat(5000),
];
const ALPHABET = [...'abcXYZ019._-/ $`\'"\\\n\t;|&<>(){}*?~#%=:,@+!^[]é日\0'];
const piece = fc.oneof(
  fc.constantFrom(...PIECES),
  fc.string({ unit: fc.constantFrom(...ALPHABET), minLength: 1, maxLength: 12 }),
);

/** How the piece meets the field's own value: replaced by it, or mixed into it (near-valid
 *  values are the ones that slip through a loose pattern). */
const MIXES: ((orig: string, p: string) => string)[] = [
  (_o, p) => p,
  (o, p) => o + p,
  (o, p) => p + o,
  (o, p) => o.slice(0, o.length >> 1) + p + o.slice(o.length >> 1),
  (o, p) => `${o}/${p}`,
  (o) => `${o}/sub`,
  (o) => `${o}x`,
];

// ------------------------------------------------------------------------ decoders

/** Words of a POSIX shell command line made of plain words and '...' / \' pieces (what
 *  shellQuote and shQuote write). Anything else (an unquoted metacharacter) is an error. */
function shellWords(line: string): string[] {
  const words: string[] = [];
  let cur: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === ' ') {
      if (cur !== null) words.push(cur);
      cur = null;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unterminated quote in ${JSON.stringify(line)}`);
      cur = (cur ?? '') + line.slice(i + 1, end);
      i = end;
    } else if (c === '\\') {
      cur = (cur ?? '') + line[++i]!;
    } else if (/[A-Za-z0-9_@%+:.,/=-]/.test(c)) {
      cur = (cur ?? '') + c;
    } else {
      throw new Error(`unquoted ${JSON.stringify(c)} in shell line ${JSON.stringify(line)}`);
    }
  }
  if (cur !== null) words.push(cur);
  return words;
}

/** postgresql.conf as postgres' lexer reads our subset: `name = 'quoted'` ('' and \x escapes)
 *  or a bare number/on/off. Every other line must be a comment or empty. */
function confEntries(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-z][a-z0-9_.]*) = (?:'((?:[^'\\\n]|''|\\[^\n])*)'|(-?[0-9][0-9.e+-]*|on|off))$/.exec(line);
    if (!m) throw new Error(`postgresql.conf line not lexed as one setting: ${JSON.stringify(line)}`);
    out.set(
      m[1]!,
      m[2] !== undefined
        ? m[2].replace(/''|\\(.)/g, (s, c: string | undefined) => (s === "''" ? "'" : c!))
        : m[3]!,
    );
  }
  return out;
}

/** pg_hba.conf rows: whitespace-separated words, "..." quoted words taken literally. */
function hbaRows(text: string): string[][] {
  const rows: string[][] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const words: string[] = [];
    for (const m of line.matchAll(/"([^"]*)"|([^\s"#]+)|(\S)/g)) {
      if (m[3] !== undefined)
        throw new Error(`pg_hba line with a stray ${JSON.stringify(m[3])}: ${JSON.stringify(line)}`);
      words.push(m[1] ?? m[2]!);
    }
    rows.push(words);
  }
  return rows;
}

/** libpq conninfo key='value' pairs (\' and \\ escapes). */
function conninfo(s: string): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  const re = /\s*([a-z_]+)=(?:'((?:[^'\\]|\\.)*)'|([^\s']+))/gy;
  let m: RegExpExecArray | null;
  let end = 0;
  while ((m = re.exec(s))) {
    out[m[1]!] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3]!;
    end = re.lastIndex;
  }
  if (s.slice(end).trim() !== '') throw new Error(`conninfo not fully parsed: ${JSON.stringify(s)}`);
  return out;
}

const ENT = '&(?:amp|lt|gt|quot|apos|#9|#10|#13);';
/** The XML with every attribute value and text node emptied: what a value could change if it
 *  were not escaped. */
const xmlSkeleton = (xml: string) =>
  xml
    .replace(new RegExp(`'(?:[^'<>&]|${ENT})*'`, 'g'), "''")
    .replace(new RegExp(`>(?:[^<>&]|${ENT})*<`, 'g'), '><');
const unXml = (s: string) =>
  s
    .replace(/&#(\d+);/g, (_, d: string) => String.fromCharCode(Number(d)))
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, '&');

// ------------------------------------------------------------------------ rendering, checked

/** Every string of a value replaced by 'x' (numbers kept): the neutral twin of a render input. */
function neutral<T>(v: T): T {
  if (typeof v === 'string') return 'x' as T;
  if (Array.isArray(v)) return v.map(neutral) as T;
  if (v && typeof v === 'object')
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, neutral(x)])) as T;
  return v;
}

function checkPostgres(spec: ClusterSpec): void {
  const [n0, n1] = spec.nodes as [NodeSpec, NodeSpec | undefined];
  // postgresql.conf: the spec's parameters come back from the lexer exactly
  const conf = confEntries(renderConf(spec, n0));
  const skipped = new Set<string>([...PER_NODE_KEYS, ...MANAGED_KEYS]);
  for (const [k, v] of Object.entries(spec.postgres.parameters)) {
    if (skipped.has(k)) continue;
    expect(conf.get(k), k).toBe(typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v));
  }
  if (!('log_directory' in spec.postgres.parameters))
    expect(conf.get('log_directory')).toBe(spec.postgres.logDir);

  // pg_hba.conf: pgop's rows, then the spec's, word for word
  const rows = hbaRows(renderHba(spec));
  const nets = clusterNetworks(spec);
  expect(rows.length).toBe(1 + 2 * nets.length + spec.postgres.hba.length);
  spec.postgres.hba.forEach((h, i) => {
    expect(rows[1 + 2 * nets.length + i]).toEqual([
      hbaType(spec, h.type),
      h.database,
      h.user,
      ...(h.type === 'local' ? [] : [h.address!]),
      h.method,
    ]);
  });
  expect(rows.slice(1, 1 + nets.length).map((r) => r[2])).toEqual(nets.map(() => spec.replication.user));

  // archive.sh: the directories only on their two assignment lines, as one quoted word each
  const script = renderArchiveScript(spec);
  const placeholder = renderArchiveScript({
    ...spec,
    postgres: { ...spec.postgres, archiveDir: '/u99/a', logDir: '/u99/l' },
  });
  const strip = (s: string) =>
    s
      .split('\n')
      .filter((l) => !/^(ARCHIVE_DIR|LOGFILE)=/.test(l))
      .join('\n');
  expect(strip(script)).toBe(strip(placeholder));
  const assigned = (name: string) =>
    shellWords(
      script
        .split('\n')
        .find((l) => l.startsWith(`${name}=`))!
        .slice(name.length + 1),
    );
  expect(assigned('ARCHIVE_DIR')).toEqual([spec.postgres.archiveDir]);
  expect(assigned('LOGFILE')).toEqual([`${spec.postgres.logDir}/archive.log`]);

  // standby and sync includes
  if (n1) {
    const standby = confEntries(renderStandbyConf(spec, n1, n0));
    expect(conninfo(standby.get('primary_conninfo')!)).toMatchObject({
      host: n0.address,
      user: spec.replication.user,
      passfile: replicationPassfilePath(spec),
      application_name: n1.name,
    });
    const names = spec.nodes.slice(1).map((n) => n.name);
    expect(confEntries(renderSyncConf(names, 1)).get('synchronous_standby_names')).toBe(
      syncStandbyNamesValue(names, 1),
    );
  }
  expect(renderReplicationPassfile(spec, 'pw').split('\n')).toHaveLength(2);

  // the postmaster options pg_ctl hands to /bin/sh, and the paths it puts in "..." there
  expect(shellWords(nodeOptionString(spec, n0))).toEqual(nodeOptions(spec, n0));
  for (const p of [
    spec.postgres.dataDir,
    spec.postgres.logDir,
    spec.postgres.archiveDir,
    spec.postgres.backupDir,
  ]) {
    expect(p, 'a path pg_ctl or a script may put inside double quotes').toMatch(/^\/[A-Za-z0-9._/-]+$/);
  }
  // the argv of a remote command: one shellJoin'd line that splits back into exactly argv
  const argv = [
    'sh',
    '-c',
    'exit 0',
    'pgop',
    binDir(spec),
    String(spec.postgres.version),
    spec.postgres.dataDir,
    spec.postgres.archiveDir,
    spec.postgres.backupDir,
    spec.postgres.logDir,
    scriptDir(spec),
    SOCKET_DIR,
    `${spec.postgres.logDir}/startup.log`,
    nodeOptionString(spec, n0),
  ];
  expect(shellWords(shellJoin(argv))).toEqual(argv);
}

function checkPgpool(spec: ClusterSpec): void {
  if (!spec.pgpool.enabled || !spec.pgpool.address) return;
  const conf = renderPgpoolConf(spec);
  const values = new Map<string, string>();
  for (const line of conf.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-z_0-9]+) = (?:'([^'\u0000-\u001f\u007f-\u009f]*)'|([A-Za-z0-9_.-]+))$/u.exec(line);
    expect(m, `pgpool.conf line ${JSON.stringify(line)}`).not.toBeNull();
    values.set(m![1]!, m![2] ?? m![3]!);
  }
  // with a virtual IP (pool hosts, or pgpool on the nodes) pgpool listens on every address: the
  // address comes and goes
  expect(values.get('listen_addresses')).toBe(poolVip(spec) ? '*' : spec.pgpool.address);
  spec.nodes.forEach((n, i) => {
    expect(values.get(`backend_hostname${i}`)).toBe(n.address);
    expect(values.get(`backend_data_directory${i}`)).toBe(spec.postgres.dataDir);
    expect(values.get(`backend_application_name${i}`)).toBe(n.name);
  });
  for (const line of renderPoolHba(spec).split('\n'))
    expect(line).toMatch(
      /^(#.*|local\tall\tall\t\tscram-sha-256|host(ssl)?\tall\tall\t[0-9./]+\tscram-sha-256|)$/,
    );
  const users = ['postgres', spec.replication.user, ...spec.roles.map((r) => r.name)];
  const passwd = renderPoolPasswd(
    users.map((name) => ({ name, password: 'pw' })),
    'key',
  )
    .trimEnd()
    .split('\n');
  expect(passwd.map((l) => /^([^:\s]+):AES[A-Za-z0-9+/=]+$/.exec(l)?.[1]).sort()).toEqual([...users].sort());
  expect(renderPcpPass(spec, 'pw').split('\n')).toHaveLength(2);
}

function checkLibvirt(spec: ClusterSpec): void {
  if (spec.provider.type !== 'libvirt') return;
  const p = spec.provider;
  const prefixLen = parseCidr(p.network.cidr).prefixLen;
  const same = (xml: string, twin: string) => expect(xmlSkeleton(xml)).toBe(xmlSkeleton(twin));
  const pool = renderPoolXml(p.pool.name, p.pool.path);
  same(pool, renderPoolXml('x', 'x'));
  expect(unXml(/<path>([^<]*)<\/path>/.exec(pool)![1]!)).toBe(p.pool.path);
  expect(unXml(/<name>([^<]*)<\/name>/.exec(pool)![1]!)).toBe(p.pool.name);
  const machines = allMachines(spec);
  const net = {
    name: p.network.name,
    cluster: spec.name,
    gateway: p.network.gateway,
    prefixLen,
    ...(p.network.bridge ? { bridge: p.network.bridge } : {}),
    hosts: machines.map((m) => ({ mac: m.mac, name: m.dhcpName, ip: m.address })),
  };
  same(renderNetworkXml(net), renderNetworkXml(neutral(net)));
  for (const m of machines) {
    const dom = {
      name: m.domain,
      type: 'kvm' as const,
      cluster: m.cluster,
      node: m.name,
      vcpus: m.vcpus,
      memoryMiB: m.memoryMiB,
      rootDisk: join(p.pool.path, m.volumes.root),
      dataDisk: m.volumes.data ? join(p.pool.path, m.volumes.data) : null,
      seedIso: join(p.pool.path, m.volumes.seed),
      mac: m.mac,
      network: p.network.name,
    };
    const xml = renderDomainXml(dom);
    same(
      xml,
      renderDomainXml({ ...neutral(dom), type: 'kvm', dataDisk: dom.dataDisk === null ? null : 'x' }),
    );
    expect(unXml(/<source file='([^']*)'/.exec(xml)![1]!)).toBe(dom.rootDisk);
    const vol = {
      name: m.volumes.root,
      capacityBytes: 1 << 30,
      format: 'qcow2' as const,
      backing: { path: p.baseImage, format: 'qcow2' as const },
    };
    const volXml = renderVolumeXml(vol);
    same(volXml, renderVolumeXml({ ...vol, name: 'x', backing: { path: 'x', format: 'qcow2' } }));
    expect(unXml(/<backingStore>\s*<path>([^<]*)<\/path>/.exec(volXml)![1]!)).toBe(p.baseImage);
    const hostname = m.role === 'pool' ? `${m.cluster}-pool` : m.name;
    const seed = renderSeed({
      cluster: m.cluster,
      name: m.name,
      hostname,
      osFamily: p.osFamily,
      sshUser: p.sshUser,
      publicKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB pgop',
      hostKey: HOST_KEY,
      mac: m.mac,
      address: m.address,
      prefixLen,
      gateway: p.network.gateway,
      dataDisk: m.volumes.data ? p.dataDisk : null,
    });
    expect(parseYaml(seed['meta-data'])).toEqual({
      'instance-id': `pgop-${m.cluster}-${m.name}`,
      'local-hostname': hostname,
    });
    const user = parseYaml(seed['user-data']) as { hostname: string; users: { name: string }[] };
    expect(user.hostname).toBe(hostname);
    expect(user.users.map((u) => u.name)).toEqual([p.sshUser]);
    const netcfg = parseYaml(seed['network-config']) as {
      ethernets: { eth0: { addresses: string[]; routes: { via: string }[] } };
    };
    expect(netcfg.ethernets.eth0.addresses).toEqual([`${m.address}/${prefixLen}`]);
    expect(netcfg.ethernets.eth0.routes[0]!.via).toBe(p.network.gateway);
  }
}

/** The postgres driver's real remote commands for install and the managed files, recorded by a
 *  shell that answers every command with success and no output. */
async function checkDriverArgv(spec: ClusterSpec): Promise<void> {
  const argvs: string[][] = [];
  const shell: NodeShell = {
    exec: async (_h: HostRef, argv: string[], _o?: ExecOptions): Promise<ExecResult> => {
      argvs.push(argv);
      return { code: 0, stdout: '', stderr: '' };
    },
    writeFile: async () => true,
    readFile: async () => null,
    close: async () => undefined,
  };
  const driver = new SshPostgresDriver({
    shell,
    hostRef: (c, n) => ({
      id: `${c.name}/${n.name}`,
      address: n.address,
      port: 22,
      user: 'root',
      privateKeyPath: '/nonexistent',
    }),
  });
  const node = spec.nodes[0]!;
  for (const step of [() => driver.ensureInstalled(spec, node), () => driver.ensureConfigured(spec, node)]) {
    // canned answers may not satisfy every parser: the argv is what counts
    await step().catch(() => undefined);
  }
  await driver.close();
  // the install command takes the directories as arguments
  expect(argvs.some((a) => a.includes(spec.postgres.logDir) && a.includes(spec.postgres.archiveDir))).toBe(
    true,
  );
  const values = [
    spec.postgres.dataDir,
    spec.postgres.archiveDir,
    spec.postgres.backupDir,
    spec.postgres.logDir,
  ];
  for (const argv of argvs) {
    expect(shellWords(shellJoin(argv))).toEqual(argv);
    // a script (sh -c SCRIPT) takes spec values as positional parameters, never in its text
    if (argv[0] === 'sh' && argv[1] === '-c')
      for (const v of values)
        if (v.length > 12) expect(argv[2]!.includes(v), `${v} inside a script`).toBe(false);
  }
}

// ------------------------------------------------------------------------ the properties

const TEXT_CHARS = /[^A-Za-z0-9._/:@,+$%-]/;

describe('hostile strings in every string field of every spec kind', () => {
  for (const kind of Object.keys(BASES)) {
    it(
      `${kind}: rejected naming the field at its line, or rendered as inert data ` +
        `(${LEAVES[kind]!.length} string fields)`,
      async () => {
        const groups = LEAVES[kind]!;
        let accepted = 0;
        let rejected = 0;
        await fc.assert(
          fc.asyncProperty(
            fc.nat(groups.length - 1),
            fc.nat(1000),
            fc.nat(MIXES.length - 1),
            piece,
            async (gi, li, mi, p) => {
              const group = groups[gi]!;
              const leaf = group[li % group.length]!;
              const value = MIXES[mi]!(leaf.original, p);
              const text = substitute(BASES[kind]!, leaf, value);
              if (text === null || !roundTrips(text, leaf, value)) return;
              const leafPath = leaf.key ? [...leaf.path.slice(0, -1), value] : leaf.path;
              let spec: ClusterSpec;
              try {
                spec = parseSpecText(text, 'hostile.yaml').spec;
              } catch (err) {
                if (!(err instanceof SpecError)) throw err;
                rejected++;
                const nLines = text.split('\n').length;
                expect(err.problems.length).toBeGreaterThan(0);
                for (const pr of err.problems) {
                  expect(pr.file).toBe('hostile.yaml');
                  expect(pr.line).toBeGreaterThanOrEqual(1);
                  expect(pr.line).toBeLessThanOrEqual(nLines);
                  expect(pr.column).toBeGreaterThanOrEqual(1);
                }
                if (TEXT_CHARS.test(value) || value.length > 255) {
                  // a renamed key: named as an unknown field, or as the field now missing
                  const named = new Set([formatPath(leafPath), ...(leaf.key ? [formatPath(leaf.path)] : [])]);
                  const own = err.problems.find((pr) => named.has(pr.path));
                  expect(
                    own,
                    `no problem names ${formatPath(leafPath)} for ${JSON.stringify(value)}: ` +
                      `${JSON.stringify(err.problems)}`,
                  ).toBeDefined();
                  if (own!.path === formatPath(leafPath))
                    expect([...linesOf(text, leafPath)]).toContain(own!.line);
                }
                return;
              }
              accepted++;
              checkPostgres(spec);
              checkPgpool(spec);
              checkLibvirt(spec);
              await checkDriverArgv(spec);
            },
          ),
          { seed: SEED, numRuns: RUNS },
        );
        // both branches were exercised
        expect(rejected).toBeGreaterThan(0);
        expect(accepted).toBeGreaterThan(0);
      },
      Math.max(30_000, RUNS * 100),
    );
  }
});

describe('the schema patterns and the messages that explain them agree', () => {
  const re = (def: 'absPath' | 'postgresDir' | 'libvirtUri') => new RegExp(schema.$defs[def].pattern, 'u');
  const part = fc.oneof(
    fc.constantFrom(
      'var',
      'lib',
      'log',
      'pgop',
      'postgres',
      'postgresql',
      'pgsql',
      'libvirt',
      'etc',
      'usr',
      'local',
      'bin',
      'srv',
      'data',
      'u01',
      'u2',
      'u123',
      'tmp',
      'opt',
      'run',
      'secrets',
      'root',
      'home',
      '.',
      '..',
      '',
      '-x',
      '.x',
      'a b',
      'a$b',
      'é',
    ),
    fc.string({ unit: fc.constantFrom(...'ab0._-'), maxLength: 4 }),
  );
  const path = fc.array(part, { minLength: 0, maxLength: 5 }).map((ps) => `/${ps.join('/')}`);
  it('a path passes the pattern exactly when pathProblem finds nothing', () => {
    const [hostRe, pgRe] = [re('absPath'), re('postgresDir')];
    fc.assert(
      fc.property(path, fc.boolean(), (p, relative) => {
        const s = relative ? p.slice(1) : p;
        expect(hostRe.test(s), s).toBe(pathProblem('host', s) === undefined);
        expect(pgRe.test(s), s).toBe(pathProblem('postgres', s) === undefined);
      }),
      { seed: SEED, numRuns: 2000 },
    );
  });
  it('known URIs: the ones specs and tests use pass, the dangerous ones do not', () => {
    const uriRe = re('libvirtUri');
    for (const ok of [
      'qemu:///system',
      'qemu:///session',
      'qemu+ssh://root@hv1/system',
      'qemu+ssh://h2/system',
      'test:///default',
      'test+unix:///default?socket=/tmp/pgop-libvirtd-Ab3/d/run/libvirt-sock',
      'qemu+unix:///system?socket=/tmp/x/run/libvirt-sock',
      'qemu+tls://hv.example.com:16514/system?pkipath=/etc/pgop/pki',
      'qemu+ssh://pgop@10.0.0.5:2222/system?keyfile=/var/lib/pgop/id&no_verify=1',
    ]) {
      expect(uriRe.test(ok), ok).toBe(true);
      expect(libvirtUriProblem(ok), ok).toBeUndefined();
    }
    for (const bad of [
      'qemu+ssh://hv/system?netcat=/tmp/x',
      'qemu+ssh://hv/system?command=id',
      'qemu+ext:///system?command=/bin/sh',
      'xen:///system',
      'qemu:///system\n',
      "qemu://h'/system",
      'qemu:///sys tem',
      'qemu://-oProxyCommand=id/system',
      'qemu+ssh://$(id)@h/system',
      'qemu:///../etc',
    ]) {
      expect(uriRe.test(bad), bad).toBe(false);
      expect(libvirtUriProblem(bad), bad).toBeDefined();
    }
  });
});
