// A lab cluster driven by pgop the way a user drives it — `pgop apply`, `pgop serve` as a child
// process (so it can be SIGKILLed and restarted), `pgop get events` — plus what chaos tests and
// bench:failover need to look at it from outside: every node's role read directly, replication
// state, rows on a node, the new primary's promotion time from its own log, faults through the
// lab's FaultInjector. Root only, inside a lab hub namespace (PGOP_LAB_PREFIX / PGOP_LAB_STATE set,
// as scripts/test-integration.sh and bench:failover do).
//
// No vitest import here: bench/failover.ts compiles and uses this file too.

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { Store } from '../../src/store/store.js';
import { parseSpecFile } from '../../src/spec/parse.js';
import { createLabProvider, type LabProvider } from '../../src/drivers/lab/provider.js';
import { ipIn, run } from '../../src/drivers/lab/netns.js';
import type { MachineRef } from '../../src/drivers/types.js';
import type { ClusterSpec } from '../../src/spec/types.js';
import type { EventRecord } from '../../src/store/types.js';
import type { JobRecord } from '../../src/store/jobs.js';
import type { ClusterObservation } from '../../src/observe/types.js';
import { TABLE_DDL, Writer, destroyClient, now, sleep, type WriterOptions } from './writer.js';
import { labSsl } from './lab-tls.js';
import { eventually } from './eventually.js';
import { PGOP_BIN, REPO } from './lab-env.js';

export { PGOP_BIN, REPO };
export const LAB_SPEC = join(REPO, 'specs', 'lab-3node.yaml');
const IP_BIN = 'ip';

export type Role = 'primary' | 'standby' | 'down';
export type Mode = 'sync' | 'async';
/** `kill` on a pool host (pgpool on the nodes: a node's name too) kills its pgpool;
 *  `kill-postgres` always the node's postmaster. */
export type FaultAction =
  'kill' | 'kill-postgres' | 'partition' | 'heal' | 'stop' | 'start' | 'hang' | 'resume';

export interface ChaosLabOptions {
  /** cluster name (also the store directory's name) */
  name: string;
  /** e.g. 10.91.0.0/24: pool .10, nodes .11, .12, ... */
  network: string;
  mode: Mode;
  /** nodes the lab may have (pg1..pgN); the spec starts with `initialNodes` of them */
  nodes?: number;
  initialNodes?: number;
  /** replication settings beyond mode and quorum (e.g. cloneMaxRate) */
  replication?: Record<string, unknown>;
  /** TLS between clients, pgpool and postgres (default true) */
  tls?: boolean;
  /** pgpool settings over the lab spec's (e.g. loadBalancing) */
  pgpool?: Record<string, unknown>;
  /** pgpool on this many pool hosts (2-5: pgpool.hosts pool1.., at .2, .3, ...) with the pool
   *  address (.10) a virtual IP one of them holds; default 0: the one pool host at .10 */
  poolHosts?: number;
  /** pgpool on every node (pgpool.onNodes), the pool address (.10) a virtual IP one node holds */
  poolOnNodes?: boolean;
  /** progress lines (default: none) */
  log?: (line: string) => void;
  /** share this lab's store and `pgop serve` (two clusters under one operator) */
  operator?: ChaosLab;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface EventItem {
  id: number;
  time: string;
  cluster: string;
  node: string | null;
  from: string | null;
  to: string | null;
  rule: string;
  reason: string;
}

export class ChaosLab {
  readonly name: string;
  readonly network: string;
  readonly prefix: string;
  readonly stateDir: string;
  readonly work: string;
  readonly db: string;
  readonly specFile: string;
  /** the nodes the spec has now (scaleTo changes them) */
  nodes: { name: string; address: string }[];
  readonly allNodes: { name: string; address: string }[];
  private readonly replication: Record<string, unknown>;
  private pgpoolOverrides: Record<string, unknown>;
  /** clients' address of pgpool: the one pool host's, or the virtual IP of `poolHosts` */
  readonly poolAddress: string;
  readonly poolPort = 9999;
  /** pgpool.hosts (empty: the one pool host at poolAddress) */
  readonly poolHosts: { name: string; address: string }[];
  readonly poolOnNodes: boolean;
  private readonly poolNs = new Map<string, string>();
  /** pool hosts by their eth0 MAC */
  private readonly poolMacs = new Map<string, string>();
  mode: Mode;
  /** false only for benches that measure what TLS costs */
  readonly tls: boolean;
  private readonly secrets: { postgres: string; replicator: string; chaos: string };
  private serveChild: ChildProcess | null = null;
  /** the lab whose operator this one shares, if any */
  private readonly owner: ChaosLab | null;
  private serveStarts = 0;
  private store: Store | null = null;
  private provider: LabProvider | null = null;
  private readonly log: (line: string) => void;

  constructor(o: ChaosLabOptions) {
    const prefix = process.env.PGOP_LAB_PREFIX;
    const state = process.env.PGOP_LAB_STATE;
    if (!prefix || !state)
      throw new Error(
        'ChaosLab needs PGOP_LAB_PREFIX and PGOP_LAB_STATE ' +
          '(run inside scripts/test-integration.sh or bench:failover)',
      );
    this.name = o.name;
    this.network = o.network;
    this.prefix = prefix;
    this.stateDir = state;
    this.mode = o.mode;
    this.tls = o.tls ?? true;
    this.work = join(state, `chaos-${o.name}`);
    this.owner = o.operator ?? null;
    this.db = this.owner ? this.owner.db : join(this.work, 'pgop.db');
    this.specFile = join(this.work, 'spec.yaml');
    const base = o.network.split('/')[0]!.split('.').slice(0, 3).join('.');
    this.allNodes = Array.from({ length: o.nodes ?? 3 }, (_, i) => ({
      name: `pg${i + 1}`,
      address: `${base}.${11 + i}`,
    }));
    this.nodes = this.allNodes.slice(0, o.initialNodes ?? this.allNodes.length);
    this.replication = o.replication ?? {};
    this.pgpoolOverrides = o.pgpool ?? {};
    this.poolAddress = `${base}.10`;
    const pools = o.poolHosts ?? 0;
    if (pools !== 0 && !(pools >= 2 && pools <= 5))
      throw new Error(`poolHosts: 0 (one pool host) or 2-5, not ${pools}`);
    if (pools !== 0 && o.poolOnNodes) throw new Error('poolHosts and poolOnNodes exclude each other');
    this.poolOnNodes = o.poolOnNodes === true;
    // pgpool on the nodes: every node is a pool host (faults by name reach its pgpool: kill)
    this.poolHosts = this.poolOnNodes
      ? this.allNodes.map((n) => ({ ...n }))
      : Array.from({ length: pools }, (_, i) => ({
          name: `pool${i + 1}`,
          address: `${base}.${2 + i}`,
        }));
    this.secrets = {
      postgres: randomBytes(15).toString('base64url'),
      replicator: randomBytes(15).toString('base64url'),
      chaos: randomBytes(15).toString('base64url'),
    };
    this.log = o.log ?? (() => {});
  }

  // ---------------------------------------------------------------- spec and CLI

  /** The spec as YAML: failure detection and pgpool settings as the lab spec has them (so the
   *  numbers follow specs/lab-3node.yaml), postgres logs with ms UTC timestamps (promotion time),
   *  a superuser role `chaos` that may log in over the unix socket (the old-primary writer). */
  specYaml(): string {
    const lab = parseYaml(readFileSync(LAB_SPEC, 'utf8')) as {
      spec: { failureDetection?: object; pgpool?: Record<string, unknown> };
    };
    const s = (k: keyof ChaosLab['secrets']) => ({ file: join(this.work, 'secrets', k) });
    const doc = {
      apiVersion: 'pgop.dev/v1',
      kind: 'Cluster',
      metadata: { name: this.name },
      spec: {
        provider: { type: 'lab', network: this.network },
        postgres: {
          version: 15,
          superuserPassword: s('postgres'),
          parameters: {
            wal_level: 'replica',
            hot_standby: 'on',
            wal_log_hints: 'on',
            max_wal_senders: 10,
            max_replication_slots: 10,
            log_line_prefix: '%m [%p] ',
            log_timezone: 'UTC',
          },
          hba: [
            { type: 'host', database: 'all', user: 'all', address: this.network, method: 'scram-sha-256' },
            { type: 'local', database: 'all', user: 'chaos', method: 'scram-sha-256' },
          ],
        },
        nodes: this.nodes.map((n) => ({ name: n.name, address: n.address })),
        replication: { mode: this.mode, syncQuorum: 1, password: s('replicator'), ...this.replication },
        pgpool: {
          // the lab spec's pool hosts are on its own network: this cluster has its own, or none
          ...withoutPoolHosts(lab.spec.pgpool ?? {}),
          ...this.pgpoolOverrides,
          enabled: true,
          address: this.poolAddress,
          ...(this.poolOnNodes ? { onNodes: true } : this.poolHosts.length ? { hosts: this.poolHosts } : {}),
          port: this.poolPort,
        },
        roles: [{ name: 'chaos', login: true, superuser: true, password: s('chaos') }],
        ...(lab.spec.failureDetection ? { failureDetection: lab.spec.failureDetection } : {}),
        ...(this.tls ? {} : { tls: { enabled: false } }),
      },
    };
    return toYaml(doc);
  }

  /** The parsed spec currently in the store (for the fault injector). */
  spec(): ClusterSpec {
    return parseSpecFile(this.specFile).spec;
  }

  /** pgop CLI, asynchronously (a synchronous spawn would stall the writers' timers). */
  pgop(args: string[], timeoutMs = 240_000): Promise<CliResult> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [PGOP_BIN, '--db', this.db, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: process.env,
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.on('close', (code) => {
        clearTimeout(t);
        resolve({ code, stdout, stderr });
      });
    });
  }

  // ---------------------------------------------------------------- operator

  /** `pgop serve` as a child process of this one (it stays in this hub namespace). */
  startServe(): number {
    if (this.owner) return this.owner.startServe();
    if (this.serveChild && this.serveChild.exitCode === null && this.serveChild.signalCode === null)
      return this.serveChild.pid!;
    const log = openSync(join(this.work, 'serve.log'), 'a', 0o600);
    writeFileSync(log, `--- serve start ${++this.serveStarts} at ${new Date().toISOString()}\n`);
    const child = spawn(process.execPath, [PGOP_BIN, '--db', this.db, 'serve'], {
      stdio: ['ignore', log, log],
      env: process.env,
    });
    closeSync(log);
    this.serveChild = child;
    this.log(`serve started: pid ${child.pid}`);
    return child.pid!;
  }

  get servePid(): number | null {
    if (this.owner) return this.owner.servePid;
    const c = this.serveChild;
    return c && c.exitCode === null && c.signalCode === null ? (c.pid ?? null) : null;
  }

  /** Stop the serve child (SIGKILL: dies on the spot; SIGTERM: finishes its step) and wait. */
  /** Returns how long the child took to exit after the signal (ms), null when none ran. */
  async stopServe(signal: 'SIGKILL' | 'SIGTERM' = 'SIGTERM', timeoutMs = 30_000): Promise<number | null> {
    if (this.owner) return this.owner.stopServe(signal, timeoutMs);
    const c = this.serveChild;
    if (!c) return null;
    this.serveChild = null;
    if (c.exitCode !== null || c.signalCode !== null) return null;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    const t0 = now();
    c.kill(signal);
    const done = await Promise.race([exited.then(() => true), sleep(timeoutMs).then(() => false)]);
    const took = now() - t0;
    if (!done) {
      c.kill('SIGKILL');
      await exited;
    }
    this.log(`serve stopped (${signal}) ${took.toFixed(0)} ms after the signal`);
    return took;
  }

  /** Network namespaces of this cluster's hosts that still exist. */
  async leftoverNamespaces(): Promise<string[]> {
    const { listNetns } = await import('../../src/drivers/lab/netns.js');
    return listNetns().filter((n) => n.startsWith(`${this.prefix}-${this.name}-`));
  }

  /** The serve log's length now: serveLogFrom reads what was logged after it. */
  serveLogSize(): number {
    return this.serveLogFrom(0).length;
  }

  serveLogFrom(offset: number): string {
    try {
      return readFileSync(join((this.owner ?? this).work, 'serve.log'), 'utf8').slice(offset);
    } catch {
      return '';
    }
  }

  serveLogTail(chars = 3000): string {
    return this.serveLogFrom(0).slice(-chars);
  }

  private openStore(): Store {
    this.store ??= Store.open(this.db, { readonly: true });
    return this.store;
  }

  cluster() {
    return this.openStore().getCluster(this.name);
  }

  /** pgop's last observation of the cluster (one per pass), straight from the store. */
  observation(): ClusterObservation | undefined {
    return this.openStore().getObservation(this.name);
  }

  /** Events straight from the store (cheap enough to poll every few ms). */
  events(afterId = 0): EventRecord[] {
    return this.openStore().listEvents({ cluster: this.name, afterId });
  }

  /** The cluster's jobs, newest first. */
  jobs(): JobRecord[] {
    return this.openStore().jobs.list({ cluster: this.name });
  }

  lastEventId(): number {
    return this.openStore().listEvents({ cluster: this.name, limit: 1 })[0]?.id ?? 0;
  }

  /** `pgop get events --cluster NAME -o json`: the story as the user reads it. */
  async eventsCli(): Promise<EventItem[]> {
    const r = await this.pgop(['get', 'events', '--cluster', this.name, '-o', 'json'], 60_000);
    if (r.code !== 0) throw new Error(`pgop get events failed (${r.code}): ${r.stderr}`);
    return (JSON.parse(r.stdout) as { items: EventItem[] }).items;
  }

  /** Healthy (pgop's own verdict) at the current generation. */
  healthy(): boolean {
    const c = this.cluster();
    return !!c && c.phase === 'Healthy' && c.observedGeneration === c.generation;
  }

  async waitHealthy(timeoutMs: number, what = 'healthy'): Promise<void> {
    await waitFor(
      async () => this.healthy(),
      timeoutMs,
      `cluster ${this.name} ${what}`,
      () => `phase ${this.cluster()?.phase}: ${this.cluster()?.message}\n${this.serveLogTail(1500)}`,
    );
  }

  // ---------------------------------------------------------------- lifecycle

  /** Secrets, spec, apply, serve, wait until healthy, create the writers' table. */
  async up(timeoutMs = 300_000): Promise<void> {
    mkdirSync(join(this.work, 'secrets'), { recursive: true, mode: 0o700 });
    for (const [k, v] of Object.entries(this.secrets))
      writeFileSync(join(this.work, 'secrets', k), `${v}\n`, { mode: 0o600 });
    const t0 = now();
    await this.applySpec();
    this.startServe();
    await this.waitHealthy(timeoutMs, 'up');
    // as any client would: a session pgpool ends (a restart or detach right after Healthy) is
    // opened again; each such end is printed
    await eventually(() =>
      this.withPool((c) => c.query(TABLE_DDL)).catch((err: unknown) => {
        this.log(`creating the writers' table through pgpool: ${(err as Error).message}; again`);
        throw err;
      }),
    );
    this.log(`cluster ${this.name} (${this.mode}) up in ${((now() - t0) / 1000).toFixed(1)} s`);
  }

  /** The spec as it stands now written out and applied (`pgop apply -f`). */
  private async applySpec(): Promise<void> {
    writeFileSync(this.specFile, this.specYaml());
    const a = await this.pgop(['apply', '-f', this.specFile]);
    if (a.code !== 0) throw new Error(`pgop apply failed: ${a.stderr}`);
  }

  /** Apply the spec again with another replication mode and wait until pgop converged. */
  async setMode(mode: Mode, timeoutMs = 120_000): Promise<void> {
    if (mode === this.mode) return;
    this.mode = mode;
    await this.applySpec();
    this.startServe();
    await sleep(500);
    await this.waitHealthy(timeoutMs, `in ${mode} mode`);
    // the mode really reached the primary
    await waitFor(
      async () => {
        const p = (await this.primaries())[0];
        if (!p) return false;
        const [r] = await this.query<{ v: string }>(
          p,
          "SELECT current_setting('synchronous_standby_names') AS v",
        );
        return mode === 'sync' ? r!.v !== '' : r!.v === '';
      },
      60_000,
      `synchronous_standby_names for ${mode} mode`,
    );
  }

  /** Apply the spec with these pgpool settings over the lab spec's (instead of the ones before)
   *  and wait until pgop is Healthy with every pool host's pgpool restarted on them. */
  async applyPgpool(overrides: Record<string, unknown>, timeoutMs = 120_000): Promise<void> {
    this.pgpoolOverrides = overrides;
    await this.applySpec();
    this.startServe();
    const watchdog = (overrides.watchdog as { enabled?: boolean } | undefined)?.enabled === true;
    await waitFor(
      async () => this.healthy() && this.poolHostsRun(`use_watchdog = ${watchdog ? 'on' : 'off'}`),
      timeoutMs,
      `pgpool on every pool host restarted with ${JSON.stringify(overrides)}, pgop Healthy`,
      () => `phase ${this.cluster()?.phase}: ${this.cluster()?.message}\n${this.serveLogTail(1500)}`,
    );
  }

  /** Every pool host's pgpool.conf has `line`, and its pgpool started after the file was written. */
  poolHostsRun(line: string): boolean {
    return this.poolHosts.every((h) => {
      const dir = join(this.stateDir, this.name, h.name, 'u01', 'pgpool');
      try {
        const conf = join(dir, 'pgpool.conf');
        const started = statSync(join(dir, 'run', 'pgpool.pid')).mtimeMs;
        return readFileSync(conf, 'utf8').split('\n').includes(line) && started >= statSync(conf).mtimeMs;
      } catch {
        return false;
      }
    });
  }

  /** Apply the spec with the first `count` nodes (scale out or in); does not wait. */
  async scaleTo(count: number): Promise<void> {
    this.nodes = this.allNodes.slice(0, count);
    await this.applySpec();
  }

  /** Everything gone, bounded in time, never throwing (scripts/test-integration.sh sweeps the
   *  namespaces and the state dir anyway). */
  async down(): Promise<void> {
    try {
      // a lab sharing another's operator leaves it running: that operator deletes this cluster
      if (!this.owner) await this.stopServe('SIGKILL');
      this.store?.close();
      this.store = null;
      // PGOP_CHAOS_LOG_DIR=dir keeps pgpool's log too (the pool host goes with the delete below)
      const keep = process.env.PGOP_CHAOS_LOG_DIR;
      const pools = this.poolHosts.length ? this.poolHosts.map((h) => h.name) : ['pool'];
      for (const host of keep ? pools : []) {
        const poolLog = join(this.stateDir, this.name, host, 'u01', 'pgpool', 'log', 'pgpool.log');
        if (!existsSync(poolLog)) continue;
        mkdirSync(keep!, { recursive: true });
        const tag = host === 'pool' ? '' : `-${host}`;
        copyFileSync(poolLog, join(keep!, `pgpool-${this.name}${tag}-${Date.now()}.log`));
      }
      // ... and the nodes' postgres logs (promotion steps, with ms timestamps)
      for (const n of keep ? this.nodes : []) {
        const dir = join(this.stateDir, this.name, n.name, 'log');
        for (const f of existsSync(dir) ? readdirSync(dir).filter((x) => x.endsWith('.log')) : []) {
          // a dangling link (startup.log of a node never started) must not stop the teardown
          if (existsSync(join(dir, f)))
            copyFileSync(join(dir, f), join(keep!, `postgres-${this.name}-${n.name}-${f}`));
        }
      }
      if (existsSync(this.db)) {
        const r = await this.pgop(['delete', 'cluster', this.name], 180_000);
        this.log(
          `pgop delete cluster ${this.name}: exit ${r.code}${r.code ? ` ${r.stderr.slice(-500)}` : ''}`,
        );
      }
      await this.provider?.close();
      this.provider = null;
    } catch (err) {
      this.log(`teardown of ${this.name}: ${(err as Error).message}`);
    } finally {
      // PGOP_CHAOS_LOG_DIR=dir keeps the operator's log for a look afterwards
      const keep = process.env.PGOP_CHAOS_LOG_DIR;
      if (keep && existsSync(join(this.work, 'serve.log'))) {
        mkdirSync(keep, { recursive: true });
        copyFileSync(join(this.work, 'serve.log'), join(keep, `serve-${this.name}-${Date.now()}.log`));
      }
      rmSync(this.work, { recursive: true, force: true });
    }
  }

  // ---------------------------------------------------------------- faults

  node(name: string): { name: string; address: string } {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  /** A fault through the lab's FaultInjector, on a node or a pool host (kill: its pgpool);
   *  returns the time it was issued. */
  async fault(node: string, action: FaultAction): Promise<number> {
    this.provider ??= createLabProvider();
    const spec = this.spec();
    const postgres = action === 'kill-postgres';
    const ref: MachineRef | undefined =
      !postgres && this.poolHosts.some((h) => h.name === node)
        ? node
        : spec.nodes.find((x) => x.name === node);
    if (!ref) throw new Error(`no node or pool host ${node} in the spec`);
    const t = now();
    await this.provider[postgres ? 'kill' : action](spec, ref);
    this.log(`fault ${action} ${node} at +0 (took ${(now() - t).toFixed(0)} ms)`);
    return t;
  }

  // ---------------------------------------------------------------- pool hosts

  /** A pool host's network namespace (as the lab provider names it). */
  poolHostNs(host: string): string {
    let ns = this.poolNs.get(host);
    if (!ns) {
      this.provider ??= createLabProvider();
      ns = this.provider.describeHost(this.spec(), host).ns;
      this.poolNs.set(host, ns);
    }
    return ns;
  }

  /** The NAT aliases pgop left on a pool host (a node's name with pgpool on the nodes): the
   *  rules of chain PGOP_ALIAS, none when the chain is missing. */
  async aliasesOn(host: string): Promise<string[]> {
    const ns = this.poolHostNs(host);
    const r = await run('ip', ['netns', 'exec', ns, 'iptables', '-w', '-t', 'nat', '-S', 'PGOP_ALIAS']).catch(
      () => ({ stdout: '' }),
    );
    return r.stdout.split('\n').filter((l) => l.startsWith('-A '));
  }

  /** Every pool host that has the virtual IP on an interface of its namespace, and whether that
   *  interface is up (a partitioned holder still has it, but no client reaches it). */
  async vipHolders(): Promise<{ host: string; linkUp: boolean }[]> {
    const vip = `${this.poolAddress}/32`;
    const looks = await Promise.all(
      this.poolHosts.map(async (h) => {
        // one line per interface: "eth0@if12  UP  10.95.0.2/24 10.95.0.10/32"
        const out = await ipIn(this.poolHostNs(h.name), ['-br', '-4', 'addr', 'show']).catch(() => '');
        const line = out.split('\n').find((l) => l.trim().split(/\s+/).slice(2).includes(vip));
        return line ? { host: h.name, linkUp: line.trim().split(/\s+/)[1] !== 'DOWN' } : null;
      }),
    );
    return looks.filter((x): x is { host: string; linkUp: boolean } => x !== null);
  }

  /** Where this machine (the clients' namespace) sends packets for the virtual IP: its neighbour
   *  entry, read only (`ip neigh show`: no probe that could change it), as the pool host whose MAC
   *  it has (or the MAC) and the entry's state; null: no entry. */
  async clientArp(): Promise<{ host: string; state: string } | null> {
    if (this.poolMacs.size === 0)
      for (const h of this.poolHosts) {
        const out = await ipIn(this.poolHostNs(h.name), ['-br', 'link', 'show', 'dev', 'eth0']).catch(
          () => '',
        );
        const mac = out.trim().split(/\s+/)[2];
        if (mac) this.poolMacs.set(mac.toLowerCase(), h.name);
      }
    const out = await run(IP_BIN, ['-4', 'neigh', 'show', this.poolAddress]).then(
      (r) => r.stdout,
      () => '',
    );
    // "10.95.0.10 dev br1a2b3c lladdr 02:..:.. REACHABLE" (or "... FAILED" without lladdr)
    const w = out.trim().split(/\s+/);
    if (w.length < 2) return null;
    const i = w.indexOf('lladdr');
    const mac = i >= 0 ? w[i + 1]!.toLowerCase() : '';
    return { host: mac ? (this.poolMacs.get(mac) ?? mac) : '-', state: w[w.length - 1]! };
  }

  /** The one pool host holding the virtual IP (`ip -n NS -4 -o addr show to VIP/32`); throws
   *  unless exactly one does. */
  async vipHolder(): Promise<string> {
    const held = await Promise.all(
      this.poolHosts.map(async (h) => {
        const out = await ipIn(this.poolHostNs(h.name), [
          '-4',
          '-o',
          'addr',
          'show',
          'to',
          `${this.poolAddress}/32`,
        ]).catch(() => '');
        return out.trim() ? h.name : null;
      }),
    );
    const holders = held.filter((x): x is string => x !== null);
    if (holders.length !== 1)
      throw new Error(
        `expected one pool host holding ${this.poolAddress}, found ${holders.length}: ${holders.join(', ')}`,
      );
    return holders[0]!;
  }

  /** Whether a pool host accepts a TCP connection on its own address: on pgpool's port, or
   *  another (22: its machine runs). */
  poolPortOpen(host: string, timeoutMs = 500, port = this.poolPort): Promise<boolean> {
    const h = this.poolHosts.find((x) => x.name === host);
    if (!h) return Promise.reject(new Error(`no pool host ${host}`));
    return new Promise((resolve) => {
      const socket = createConnection({ host: h.address, port });
      const done = (open: boolean) => {
        clearTimeout(timer);
        socket.destroy();
        resolve(open);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      socket.once('connect', () => done(true));
      socket.once('error', () => done(false));
    });
  }

  /** Whether a pool host's pgpool serves clients, as pgop judges it: its port accepts, or its PCP
   *  port does (alive with every child serving a client, its listen backlog full). */
  async poolServes(host: string, timeoutMs = 300): Promise<boolean> {
    if (await this.poolPortOpen(host, timeoutMs)) return true;
    return this.poolPortOpen(host, timeoutMs, this.spec().pgpool.pcpPort);
  }

  // ---------------------------------------------------------------- looking at nodes

  /** The node's unix socket directory as seen from this machine (reachable when its link is down). */
  socketDir(node: string): string {
    return join(this.stateDir, this.name, node, 'pgrun');
  }

  /** A node's server log (stderr of postgres: logging_collector is off in this spec). */
  serverLog(node: string): string {
    return join(this.stateDir, this.name, node, 'log', 'startup.log');
  }

  /** Client config to one node: over its unix socket as `chaos`, or over TCP as postgres. */
  nodeConfig(node: string, via: 'socket' | 'tcp' = 'socket'): pg.ClientConfig {
    return via === 'socket'
      ? {
          host: this.socketDir(node),
          port: 5432,
          user: 'chaos',
          password: this.secrets.chaos,
          database: 'postgres',
        }
      : {
          host: this.node(node).address,
          port: 5432,
          user: 'postgres',
          password: this.secrets.postgres,
          database: 'postgres',
          ssl: this.tls && labSsl(this.stateDir, this.name, node, this.node(node).address),
        };
  }

  /** Through pgpool: TLS (verify-full) as every network client of the lab must. */
  poolConfig(): pg.ClientConfig {
    return {
      host: this.poolAddress,
      port: this.poolPort,
      user: 'postgres',
      password: this.secrets.postgres,
      database: 'postgres',
      ssl: this.tls && labSsl(this.stateDir, this.name, 'pgpool', this.poolAddress),
    };
  }

  /** The superuser password, for the bench's pgpool baseline (.pgpass on the pool host). */
  superuserPassword(): string {
    return this.secrets.postgres;
  }

  async query<T extends pg.QueryResultRow>(
    node: string,
    sql: string,
    params: unknown[] = [],
    via: 'socket' | 'tcp' = 'socket',
  ): Promise<T[]> {
    return once(this.nodeConfig(node, via), (c) => c.query<T>(sql, params).then((r) => r.rows));
  }

  async withPool<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
    return once(this.poolConfig(), fn);
  }

  /** Every node's role, read directly (unix socket: a partitioned node answers too). */
  async roles(): Promise<Record<string, Role>> {
    const out: Record<string, Role> = {};
    await Promise.all(
      this.nodes.map(async (n) => {
        try {
          const [r] = await this.query<{ r: boolean }>(n.name, 'SELECT pg_is_in_recovery() AS r');
          out[n.name] = r!.r ? 'standby' : 'primary';
        } catch {
          out[n.name] = 'down';
        }
      }),
    );
    return out;
  }

  async primaries(): Promise<string[]> {
    const r = await this.roles();
    return Object.keys(r)
      .filter((n) => r[n] === 'primary')
      .sort();
  }

  /** pg_stat_replication on `primary`: application_name -> state. */
  async replicas(primary: string): Promise<Record<string, string>> {
    const rows = await this.query<{ application_name: string; state: string }>(
      primary,
      'SELECT application_name, state FROM pg_stat_replication',
    );
    return Object.fromEntries(rows.map((r) => [r.application_name, r.state]));
  }

  /** Ids of one writer's run present on `node`. */
  async ids(node: string, run: string, writer: string): Promise<number[]> {
    const rows = await this.query<{ id: string }>(
      node,
      'SELECT id FROM chaos_writes WHERE run = $1 AND writer = $2',
      [run, writer],
    );
    return rows.map((r) => Number(r.id));
  }

  /** The first "selected new timeline ID" line in the node's server log at or after `after`
   *  (ms epoch): the moment its recovery ended, before it could accept any write. */
  promotionFromLog(node: string, after: number): number | null {
    let text: string;
    try {
      text = readFileSync(this.serverLog(node), 'utf8');
    } catch {
      return null;
    }
    for (const line of text.split('\n')) {
      const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d\.\d{3}) UTC \[\d+\] LOG:\s+selected new timeline ID/.exec(
        line,
      );
      if (!m) continue;
      const t = Date.parse(`${m[1]}T${m[2]}Z`);
      // the log has ms resolution; allow for the truncation
      if (t >= Math.floor(after) - 1) return t;
    }
    return null;
  }

  // ---------------------------------------------------------------- writers

  /** One new session through pgpool's address (`SELECT 1`, no retry): why it failed, or null.
   *  With an application name, as most clients send one (psql, pgbench, JDBC): pgpool then sets
   *  it on every backend of a cached session it reuses. */
  async newSessionFails(applicationName?: string): Promise<string | null> {
    const cfg = { ...this.poolConfig(), ...(applicationName ? { application_name: applicationName } : {}) };
    return once(cfg, (c) => c.query('SELECT 1')).then(
      () => null,
      (e: unknown) => (e as Error).message ?? String(e),
    );
  }

  writer(
    o: Omit<WriterOptions, 'connect'> & { via: 'pool' | { node: string; over: 'socket' | 'tcp' } },
  ): Writer {
    const { via, ...rest } = o;
    return new Writer({
      ...rest,
      connect: via === 'pool' ? this.poolConfig() : this.nodeConfig(via.node, via.over),
    });
  }
}

// ------------------------------------------------------------------------------ helpers

async function once<T>(cfg: pg.ClientConfig, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ ...cfg, connectionTimeoutMillis: 3000, query_timeout: 10_000 });
  c.on('error', () => {});
  try {
    await c.connect();
    return await fn(c);
  } finally {
    destroyClient(c);
  }
}

/** Poll `check` every 100 ms until it holds; throws with `detail()` after timeoutMs. */
export async function waitFor(
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  what: string,
  detail?: () => string | Promise<string>,
): Promise<void> {
  const deadline = now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
      last = undefined;
    } catch (err) {
      last = err;
    }
    if (now() > deadline) {
      const d = detail ? await Promise.resolve(detail()).catch((e: Error) => e.message) : '';
      throw new Error(
        `timed out after ${(timeoutMs / 1000).toFixed(0)} s waiting for ${what}` +
          `${last ? ` (last error: ${(last as Error).message})` : ''}${d ? `\n${d}` : ''}`,
      );
    }
    await sleep(100);
  }
}

/** Runs `sample` every periodMs (from the start of one to the next) until stopped. */
abstract class PeriodicSampler {
  private stopped = false;
  private loop: Promise<void> | null = null;

  constructor(
    protected readonly lab: ChaosLab,
    private readonly periodMs = 50,
  ) {}

  protected abstract sample(t: number): Promise<void>;

  start(): this {
    this.loop = this.run();
    return this;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const t = now();
      await this.sample(t);
      await sleep(Math.max(0, this.periodMs - (now() - t)));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

/** Repeated reads of every node's role over the unix sockets: records any moment at which two
 *  nodes answered as writable primaries in the same sweep. */
export class SplitBrainMonitor extends PeriodicSampler {
  readonly sweeps: { t: number; primaries: string[] }[] = [];
  maxPrimaries = 0;
  firstSplitAt: number | null = null;
  private clients = new Map<string, pg.Client>();
  /** why each node's last read failed: a monitor that never reaches the primary cannot see two */
  private readonly lastErrors = new Map<string, string>();

  /** What the results must say of the monitor itself: it never saw a primary (and why). */
  notes(): string[] {
    if (this.maxPrimaries > 0) return [];
    const why = [...this.lastErrors].map(([n, e]) => `${n}: ${e}`).join('; ');
    return [
      `the split-brain monitor never reached a primary (${this.sweeps.length} sweeps; ${why || 'no error'})`,
    ];
  }

  private async ask(node: string): Promise<boolean | null> {
    let c = this.clients.get(node);
    try {
      if (!c) {
        // a connect may take longer than a sweep under load (pgbench beside it measured over
        // 500 ms on every node in every sweep): it is kept, and only reads must be quick
        c = new pg.Client({
          ...this.lab.nodeConfig(node, 'socket'),
          connectionTimeoutMillis: 5_000,
          query_timeout: 500,
        });
        c.on('error', () => {});
        this.clients.set(node, c);
        await c.connect();
      }
      const r = await c.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
      return !r.rows[0]!.r;
    } catch (err) {
      this.lastErrors.set(node, (err as Error).message.slice(0, 160));
      if (c) destroyClient(c);
      this.clients.delete(node);
      return null;
    }
  }

  protected async sample(t: number): Promise<void> {
    const answers = await Promise.all(
      this.lab.nodes.map(async (n) => [n.name, await this.ask(n.name)] as const),
    );
    const primaries = answers.filter(([, p]) => p === true).map(([n]) => n);
    this.sweeps.push({ t, primaries });
    if (primaries.length > this.maxPrimaries) this.maxPrimaries = primaries.length;
    if (primaries.length > 1 && this.firstSplitAt === null) this.firstSplitAt = t;
  }

  override async stop(): Promise<void> {
    await super.stop();
    for (const c of this.clients.values()) {
      destroyClient(c);
    }
    this.clients.clear();
  }
}

/** The pool hosts' addresses sampled every periodMs (lab.vipHolders): records any moment at
 *  which two pool hosts had the virtual IP in the same sample, and when the holders changed. */
export class VipMonitor extends PeriodicSampler {
  /** every change of holders (the first sample too), ms epoch */
  readonly changes: { t: number; holders: string[]; linkDown: string[]; clientArp: string }[] = [];
  maxHolders = 0;
  /** the most holders whose link was up, in one sample (what clients' ARP could reach) */
  maxLinkedHolders = 0;
  firstDoubleAt: number | null = null;
  samples = 0;
  private last = '';

  protected async sample(t: number): Promise<void> {
    const [held, arp] = await Promise.all([this.lab.vipHolders(), this.lab.clientArp()]);
    const clientArp = arp ? `${arp.host} ${arp.state}` : 'none';
    this.samples++;
    const holders = held.map((h) => h.host);
    const linked = held.filter((h) => h.linkUp).length;
    this.maxHolders = Math.max(this.maxHolders, holders.length);
    this.maxLinkedHolders = Math.max(this.maxLinkedHolders, linked);
    if (holders.length > 1 && this.firstDoubleAt === null) this.firstDoubleAt = t;
    const key = `${held.map((h) => `${h.host}${h.linkUp ? '' : '(down)'}`).join(',')} ${clientArp}`;
    if (key !== this.last) {
      const linkDown = held.filter((h) => !h.linkUp).map((h) => h.host);
      this.changes.push({ t, holders, linkDown, clientArp });
      this.last = key;
    }
  }

  /** Each time the virtual IP came to rest on a pool host other than the last one that held it
   *  alone: ms epoch and the new holder. */
  moves(): { t: number; holder: string }[] {
    const out: { t: number; holder: string }[] = [];
    let sole: string | null = null;
    for (const c of this.changes) {
      if (c.holders.length !== 1) continue;
      if (sole !== null && c.holders[0] !== sole) out.push({ t: c.t, holder: c.holders[0]! });
      sole = c.holders[0]!;
    }
    return out;
  }

  /** The first sample at or after `t` with exactly one holder other than `not`. */
  movedAfter(t: number, not: string): { t: number; holder: string } | null {
    for (const c of this.changes) {
      if (c.t < t || c.holders.length !== 1 || c.holders[0] === not) continue;
      return { t: c.t, holder: c.holders[0]! };
    }
    return null;
  }
}

function withoutPoolHosts(pgpool: Record<string, unknown>): Record<string, unknown> {
  const { hosts: _hosts, ...rest } = pgpool;
  return rest;
}
