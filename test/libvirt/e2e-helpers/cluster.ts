// Shared by the libvirt end-to-end test (test/libvirt/e2e.test.ts) and bench/provision.ts: the
// 3-node spec derived from specs/libvirt-3node.yaml for a private libvirtd, `pgop` as a child
// process (apply, get, delete, a long-running serve), SQL to the guests, and waiting.
// Everything here that talks to guest addresses must run inside the libvirtd's network
// namespace (scripts/test-e2e-libvirt.sh puts vitest there; the bench re-runs itself there).
// No vitest import: the bench compiles this file too.

import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { parseDocument } from 'yaml';

const execFileP = promisify(execFile);
/** The checkout (this file runs from test/ under vitest and from dist-bench/test/ in the bench). */
export const REPO = new URL('../../../', import.meta.url).pathname.replace(/\/dist-bench\/$/, '/');
export const BIN = join(REPO, 'bin/pgop');
export const SEED_SPEC = join(REPO, 'specs/libvirt-3node.yaml');

/** The private libvirtd scripts/libvirtd-test.sh started (its `start` output, as env). */
export interface LibvirtdEnv {
  dir: string;
  netns: string;
  qemuUri: string;
}

export function libvirtdFromEnv(env = process.env): LibvirtdEnv | null {
  if (!env.LIBVIRTD_DIR || !env.LIBVIRTD_NETNS || !env.LIBVIRT_QEMU_URI) return null;
  return { dir: env.LIBVIRTD_DIR, netns: env.LIBVIRTD_NETNS, qemuUri: env.LIBVIRT_QEMU_URI };
}

/** Parse `KEY='value'` lines (libvirtd-test.sh start) into an object. */
export function parseAssignments(out: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^([A-Z_]+)=(?:'(.*)'|(.*))$/.exec(line.trim());
    if (m) env[m[1]!] = (m[2] ?? m[3] ?? '').replace(/'\\''/g, "'");
  }
  return env;
}

export const SECRET_ENVS = [
  'PGOP_SUPERUSER_PASSWORD',
  'PGOP_REPLICATION_PASSWORD',
  'PGOP_CL_OWNER_PASSWORD',
  'PGOP_CL_USER_PASSWORD',
  'PGOP_E2E_BACKUP_PASSPHRASE',
] as const;

/** Random passwords for the seed spec's env references, set in this process's env (children inherit them). */
export function ensureSecrets(): Record<(typeof SECRET_ENVS)[number], string> {
  const out = {} as Record<(typeof SECRET_ENVS)[number], string>;
  for (const k of SECRET_ENVS) {
    process.env[k] ||= randomBytes(15).toString('base64url');
    out[k] = process.env[k]!;
  }
  return out;
}

export interface E2eSpecOptions {
  uri: string;
  baseImage: string;
  poolPath: string;
  /** third octet of 10.231.X.0/24 */
  subnet: number;
  memoryMiB?: number;
  /** metadata.name (default: the seed's, critlib) */
  name?: string;
  /** how many database nodes (default 3) */
  nodeCount?: number;
  /** false: no pgpool host */
  pgpool?: boolean;
  /** pgpool on this many pool hosts of their own, the endpoint a virtual IP one of them holds
   *  (default: one pgpool host, the endpoint its own address) */
  poolHosts?: number;
  /** archive and back up with pgBackRest into this repository on the hypervisor (encrypted),
   *  instead of the seed's archive.sh */
  backupRepo?: string;
}

/** The e2e's guests run under TCG unless PGOP_E2E_DOMAIN_TYPE says otherwise (auto, kvm): some
 *  hosts pass pgop's KVM probe yet crash a Debian kernel under nested KVM (README, libvirt). */
export function e2eDomainType(): 'auto' | 'kvm' | 'qemu' {
  const t = process.env.PGOP_E2E_DOMAIN_TYPE ?? 'qemu';
  if (t !== 'auto' && t !== 'kvm' && t !== 'qemu')
    throw new Error(`PGOP_E2E_DOMAIN_TYPE=${t}: auto, kvm or qemu`);
  return t;
}

export interface E2eSpec {
  yaml: string;
  name: string;
  nodes: { name: string; address: string }[];
  pgpool: { address: string; port: number };
  cidr: string;
  networkName: string;
  poolName: string;
}

/**
 * specs/libvirt-3node.yaml made to fit a private libvirtd and this machine: its URI, pool and
 * network inside the test's namespace, small guests (1 vCPU, 768 MiB, small disks), postgres
 * settings sized for them, pgpool on every node as the seed has it (or on `poolHosts` of their
 * own), behind a virtual IP that pgop moves. Everything else (the seed's
 * parameters, archive script, LVM/xfs data disk, roles, database, grants) stays as the seed has it.
 */
export function e2eSpec(o: E2eSpecOptions): E2eSpec {
  const doc = parseDocument(readFileSync(SEED_SPEC, 'utf8'));
  const net = `10.231.${o.subnet}`;
  const cidr = `${net}.0/24`;
  const networkName = `pgop-e2e${o.subnet}`;
  const poolName = `pgop-e2e${o.subnet}`;
  doc.setIn(['spec', 'provider', 'uri'], o.uri);
  doc.setIn(['spec', 'provider', 'baseImage'], o.baseImage);
  doc.setIn(['spec', 'provider', 'domainType'], e2eDomainType());
  doc.setIn(['spec', 'provider', 'pool'], doc.createNode({ name: poolName, path: o.poolPath }));
  doc.setIn(
    ['spec', 'provider', 'network'],
    doc.createNode({ name: networkName, cidr, gateway: `${net}.1` }),
  );
  doc.setIn(['spec', 'postgres', 'parameters', 'shared_buffers'], '128MB');
  doc.setIn(['spec', 'postgres', 'hba', 0, 'address'], cidr);
  const names = ['pg01', 'pg02', 'pg03'].slice(0, o.nodeCount ?? 3);
  const nodes = names.map((name, i) => ({ name, address: `${net}.${11 + i}` }));
  doc.setIn(
    ['spec', 'nodes'],
    doc.createNode(
      nodes.map((n) => ({
        name: n.name,
        address: n.address,
        vcpus: 1,
        memoryMiB: o.memoryMiB ?? 768,
        rootDiskGiB: 4,
        dataDiskGiB: 2,
      })),
    ),
  );
  const pool = { address: `${net}.10`, port: Number(doc.getIn(['spec', 'pgpool', 'port']) ?? 9999) };
  doc.setIn(['spec', 'pgpool', 'address'], pool.address);
  if (o.poolHosts && o.poolHosts > 1) {
    const hosts = Array.from({ length: o.poolHosts }, (_, i) => ({
      name: `pool${i + 1}`,
      address: `${net}.${21 + i}`,
    }));
    doc.deleteIn(['spec', 'pgpool', 'onNodes']);
    doc.setIn(['spec', 'pgpool', 'hosts'], doc.createNode(hosts));
  }
  doc.setIn(['spec', 'pgpool', 'numInitChildren'], 8);
  // TCG guests on a shared 2-core host answer slowly: probes get 5 s (the looks over SSH twice
  // that) instead of 1 s, so a slow answer is not taken for a dead node.
  doc.setIn(
    ['spec', 'failureDetection'],
    doc.createNode({
      probeIntervalMs: 2000,
      missesBeforeFailover: 3,
      connectTimeoutMs: 5000,
      retryIntervalMs: 500,
    }),
  );
  if (o.pgpool === false) doc.setIn(['spec', 'pgpool', 'enabled'], false);
  if (o.backupRepo) {
    doc.setIn(['spec', 'postgres', 'archiveScript'], false);
    doc.setIn(
      ['spec', 'backup'],
      doc.createNode({
        repo: { path: o.backupRepo },
        compression: 'zst',
        archiveTimeoutS: 60,
        encryption: { passphrase: { env: 'PGOP_E2E_BACKUP_PASSPHRASE' } },
      }),
    );
  }
  if (o.name) doc.setIn(['metadata', 'name'], o.name);
  const name = String(doc.getIn(['metadata', 'name']));
  return { yaml: doc.toString(), name, nodes, pgpool: pool, cidr, networkName, poolName };
}

export interface NodeItem {
  name: string;
  state: string;
  role: string;
  goal: string | null;
  reachable: boolean;
  machine: string;
  timeline: number | null;
  streaming: boolean | null;
  upstream: string | null;
  message: string;
}
export interface ClusterItem {
  name: string;
  generation: number;
  observed_generation: number;
  phase: string;
  primary: string | null;
  message: string;
}

/** `pgop --db DB ...` as a user runs it, plus a long-running `serve` child. */
export class Pgop {
  private serveChild: ChildProcess | null = null;
  readonly outputs: string[] = [];
  readonly unexpectedExits: string[] = [];

  constructor(
    readonly db: string,
    readonly env: NodeJS.ProcessEnv = process.env,
  ) {}

  run(...args: string[]): { code: number | null; stdout: string; stderr: string } {
    const r = spawnSync(process.execPath, [BIN, '--db', this.db, ...args], {
      encoding: 'utf8',
      timeout: 900_000,
      env: this.env,
    });
    this.outputs.push(r.stdout ?? '', r.stderr ?? '');
    return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  async runAsync(
    args: string[],
    timeoutMs = 900_000,
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const r = await execFileP(process.execPath, [BIN, '--db', this.db, ...args], {
        encoding: 'utf8',
        timeout: timeoutMs,
        env: this.env,
        maxBuffer: 64 << 20,
      });
      this.outputs.push(r.stdout, r.stderr);
      return { code: 0, ...r };
    } catch (e) {
      const err = e as { code?: number; stdout?: string; stderr?: string };
      this.outputs.push(err.stdout ?? '', err.stderr ?? '');
      return {
        code: typeof err.code === 'number' ? err.code : 1,
        stdout: err.stdout ?? '',
        stderr: err.stderr ?? String(e),
      };
    }
  }

  async nodes(cluster?: string): Promise<NodeItem[]> {
    const only = cluster ? ['--cluster', cluster] : [];
    const r = await this.runAsync(['get', 'nodes', ...only, '-o', 'json'], 60_000);
    return r.code === 0 ? (JSON.parse(r.stdout).items as NodeItem[]) : [];
  }

  async cluster(name: string): Promise<ClusterItem | null> {
    const r = await this.runAsync(['get', 'clusters', '-o', 'json'], 60_000);
    if (r.code !== 0) return null;
    return (JSON.parse(r.stdout).items as ClusterItem[]).find((c) => c.name === name) ?? null;
  }

  /** Start `pgop serve` in the background; its log goes to `logFile`. An exit nobody asked for
   *  is written to that log (code or signal, and the kernel's last lines: a segfault or an OOM
   *  kill shows there) and, as the systemd unit's Restart=always does, serve is started again
   *  2 s later; `unexpectedExits` keeps what was seen. */
  startServe(logFile: string): number {
    if (this.serveChild && this.serveChild.exitCode === null) return this.serveChild.pid!;
    const fd = openSync(logFile, 'a', 0o600);
    const child = spawn(process.execPath, [BIN, '--db', this.db, 'serve'], {
      stdio: ['ignore', fd, fd],
      env: this.env,
    });
    closeSync(fd);
    this.serveChild = child;
    child.once('exit', (code, signal) => {
      if (this.serveChild !== child) return; // stopServe asked for it
      const how = signal ?? `code ${code}`;
      const seen = `pgop serve (pid ${child.pid}) exited on its own at ${new Date().toISOString()}: ${how}`;
      this.unexpectedExits.push(seen);
      appendFileSync(logFile, `[e2e] ${seen}; restarting it in 2 s\n[e2e] kernel: ${kernelTail()}\n`);
      setTimeout(() => {
        if (this.serveChild === child) this.startServe(logFile);
      }, 2000).unref();
    });
    return child.pid!;
  }

  serveAlive(): boolean {
    return !!this.serveChild && this.serveChild.exitCode === null && this.serveChild.signalCode === null;
  }

  /** SIGTERM (serve finishes its step), SIGKILL after `graceMs`. By PID: only our own child. */
  async stopServe(graceMs = 60_000): Promise<void> {
    const c = this.serveChild;
    this.serveChild = null;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => c.kill('SIGKILL'), graceMs);
      c.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      c.kill('SIGTERM');
    });
  }
}

/** The kernel's last lines (dmesg), one line: empty where dmesg cannot be read. */
function kernelTail(): string {
  const r = spawnSync('dmesg', ['--ctime'], { encoding: 'utf8', timeout: 5000 });
  return (
    (r.stdout ?? '').trimEnd().split('\n').slice(-8).join(' | ') ||
    `(dmesg: ${r.stderr?.trim() || 'nothing'})`
  );
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Poll `check` until it returns a non-undefined value; throw with the last error / `describe()`
 * after `timeoutMs`. `log` gets a line every `everyMs` while waiting.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  o: { timeoutMs: number; intervalMs?: number; log?: (s: string) => void; describe?: () => Promise<string> },
): Promise<T> {
  const t0 = Date.now();
  let lastLog = t0;
  let lastErr: unknown = null;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
      lastErr = null;
    } catch (e) {
      lastErr = e;
    }
    const now = Date.now();
    if (now - t0 > o.timeoutMs) {
      const state = o.describe ? await o.describe().catch((e) => String(e)) : '';
      throw new Error(
        `timed out after ${Math.round((now - t0) / 1000)} s waiting for ${what}` +
          `${lastErr ? `; last error: ${(lastErr as Error).message}` : ''}${state ? `\n${state}` : ''}`,
      );
    }
    if (o.log && now - lastLog >= 30_000) {
      lastLog = now;
      o.log(`  ... still waiting for ${what} (${Math.round((now - t0) / 1000)} s)`);
    }
    await sleep(o.intervalMs ?? 1000);
  }
}

export interface Endpoint {
  host: string;
  port: number;
  user?: string;
  password: string;
  database?: string;
  /** TLS options (the cluster's network rules are hostssl) */
  ssl?: pg.ClientConfig['ssl'];
}

/** One statement on a fresh connection (closed again, even after an error). */
export async function sql<T extends pg.QueryResultRow = pg.QueryResultRow>(
  e: Endpoint,
  text: string,
  params: unknown[] = [],
  timeoutMs = 10_000,
): Promise<T[]> {
  const c = new pg.Client({
    host: e.host,
    port: e.port,
    user: e.user ?? 'postgres',
    password: e.password,
    database: e.database ?? 'postgres',
    connectionTimeoutMillis: Math.min(timeoutMs, 5000),
    statement_timeout: timeoutMs,
    query_timeout: timeoutMs + 1000,
    ...(e.ssl ? { ssl: e.ssl } : {}),
  });
  c.on('error', () => undefined);
  try {
    await c.connect();
    return (await c.query<T>(text, params)).rows;
  } finally {
    await Promise.race([c.end().catch(() => undefined), sleep(2000)]);
  }
}

/** `virsh -c URI ARGS...` (throws on a non-zero exit). */
export async function virsh(uri: string, ...args: string[]): Promise<string> {
  return (await execFileP('virsh', ['-q', '-c', uri, ...args], { timeout: 120_000 })).stdout;
}

/** What the private libvirtd still holds: domains, networks, pools and their volumes. */
export async function libvirtInventory(
  uri: string,
): Promise<{ domains: string[]; networks: string[]; pools: string[]; volumes: string[] }> {
  const lines = (s: string) =>
    s
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
  const domains = lines(await virsh(uri, 'list', '--all', '--name'));
  const networks = lines(await virsh(uri, 'net-list', '--all', '--name'));
  const pools = lines(await virsh(uri, 'pool-list', '--all', '--name'));
  const volumes: string[] = [];
  for (const p of pools) {
    const out = await virsh(uri, 'vol-list', p).catch(() => '');
    for (const l of lines(out)) volumes.push(`${p}/${l.split(/\s+/)[0]}`);
  }
  return { domains, networks, pools, volumes };
}

/** `pgop get nodes` as a few lines, for failure messages and progress. */
export function describeNodes(items: NodeItem[]): string {
  return items
    .map(
      (n) =>
        `    ${n.name.padEnd(5)} state=${n.state} role=${n.role} goal=${n.goal ?? '-'} ` +
        `machine=${n.machine} tl=${n.timeline ?? '-'} ${n.message ? `msg=${n.message.slice(0, 160)}` : ''}`,
    )
    .join('\n');
}

/**
 * Healthy: the cluster converged on its current generation, one primary, the other nodes
 * streaming standbys.
 */
export function healthy(c: ClusterItem | null, items: NodeItem[], expectedNodes: number): boolean {
  if (!c || c.phase !== 'Healthy' || c.observed_generation !== c.generation || !c.primary) return false;
  const primaries = items.filter((n) => n.role === 'primary' && n.state === 'primary');
  const standbys = items.filter((n) => n.role === 'standby' && n.state === 'standby' && n.streaming);
  return (
    items.length === expectedNodes &&
    primaries.length === 1 &&
    primaries[0]!.name === c.primary &&
    standbys.length === expectedNodes - 1
  );
}
