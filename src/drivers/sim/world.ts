// The simulated world: machines, links, postgres instances and pgpool of every simulated cluster,
// in memory. Everything here is synchronous and O(nodes) per call (plus the few log entries that
// actually move), with no timers, so a property test can run thousands of fault schedules in
// seconds. The drivers over it (drivers.ts) enforce the preconditions real postgres/libvirt
// enforce; this module models the physics: replication, client writes and faults.
//
// WAL model: a node's log is an array of commit ids; LSN = 0x1000000 + 64 * length. Each appended
// entry also gets a world-unique record serial (a WAL record identity), because two nodes can
// commit the same client id on divergent histories (split brain): divergence is decided on
// serials, never on ids. Logs only grow by appending at the tail or by copying a prefix of
// another log, so two logs holding the same serial at position i share the whole prefix [0, i]:
// "a is a prefix of b" is one comparison of a's last serial.

import type { MachineState } from '../../observe/types.js';
import { type Clock, type TimerClock, systemClock } from './clock.js';

export const lsnOf = (logLength: number): number => 0x1000000 + 64 * logLength;

/** Physical slot names allow [a-z0-9_] only; node names may hold '-' or '.'. */
export const slotNameFor = (node: string): string => node.toLowerCase().replace(/[^a-z0-9_]/g, '_');

/** A cluster or node given by name or by any object with a name (ClusterSpec, NodeSpec). */
export type Ref = string | { name: string };
const nameOf = (r: Ref): string => (typeof r === 'string' ? r : r.name);

export interface SimPostgres {
  /** A data directory holding an initialised cluster exists. */
  initialized: boolean;
  /** Database system identifier: initdb makes a new one, clones copy it. pg_rewind needs equal ones. */
  systemId: number;
  running: boolean;
  /** The role on disk (standby.signal): meaningful even while stopped. */
  inRecovery: boolean;
  timeline: number;
  /** Commit ids, oldest first. */
  log: number[];
  /** Record serials, parallel to `log` (see the WAL model above). */
  recs: number[];
  /** primary_conninfo's host, as a node name. */
  upstream: string | null;
  /** primary_slot_name, or null when slots are off. */
  slotName: string | null;
  /** Derived by settle(): the WAL receiver is connected to `upstream`. */
  streaming: boolean;
  /** Physical replication slots on this node. */
  slots: string[];
  /** synchronous_standby_names = ANY syncQuorum (syncNames); [] = async. */
  syncNames: string[];
  syncQuorum: number;
  configHash: string;
  /** What an interrupted pg_basebackup or pg_rewind leaves: files, but no usable cluster
   *  (initialized is false). initdb refuses it; the next clone empties it. */
  partial?: boolean;
}

export interface SimNode {
  name: string;
  machine: MachineState;
  /** What the provider says about the machine (libvirt-ish wording). */
  machineDetail: string;
  /** Link down: neither the operator, other nodes nor pgpool reach it; colocated clients still do. */
  partitioned: boolean;
  /** Slow standby: its WAL receiver stays connected but receives nothing. */
  lagging: boolean;
  /** Packages, user, directories in place (ensureInstalled). */
  installed: boolean;
  pg: SimPostgres;
  /** The address the machine was made with (as a lab host's or a VM's static address). */
  address?: string;
  /** Powered on, but not up yet: nothing answers until the boot ends. */
  booting?: boolean;
  /** Counts power-ons: a process started on the node survives only while this stays the same. */
  bootId?: number;
  /** Counts the long writers of the data directory (initdb, copies): the last one started owns it. */
  dataEpoch?: number;
}

/** The sim's long operations, each of which can take time (SimWorld.setJobDuration). */
export type SimJobKind = 'machine' | 'install' | 'initdb' | 'copy' | 'delete';
export const SIM_JOB_KINDS: readonly SimJobKind[] = ['machine', 'install', 'initdb', 'copy', 'delete'];

export interface SimPool {
  running: boolean;
  /** The backend pgpool sends writes to. */
  primary: string | null;
  /** Backends configured by the last ensurePool (node names). */
  backends: string[];
  /** Backends it holds down: detached by pgop, or found down as it started. pgpool detaches
   *  nothing by itself (pgop runs it without health checks): a node that dies stays up here. */
  detached: string[];
  configHash: string;
}

/** A pool host of spec.pgpool.hosts: a machine running one pgpool, which clients reach while it
 *  holds the virtual IP. */
export interface SimPoolHost {
  name: string;
  address: string;
  machine: 'running' | 'stopped';
  /** Link down: nobody reaches it (neither the operator nor clients). */
  partitioned: boolean;
  /** The virtual IP is on its interface (a machine powered off holds no address). */
  holdsVip: boolean;
  pgpool: SimPool | null;
  /** pgpool on a node (pgpool.onNodes): the machine, its link and its address are the node's,
   *  which `machine` and `partitioned` here do not track */
  onNode?: { cluster: string };
}

export interface AckedWrite {
  id: number;
  node: string;
  timeline: number;
  /** Acknowledged under synchronous_standby_names (a quorum of named standbys flushed it). */
  sync: boolean;
  at: number;
}

export interface WriteResult {
  acked: boolean;
  /** Where the commit went (it may sit there unacknowledged), or null when it went nowhere. */
  node: string | null;
  sync: boolean;
  reason?: string;
}

export interface SimCluster {
  name: string;
  /** Insertion order = creation order: keeps every listing deterministic. */
  nodes: Map<string, SimNode>;
  pool: SimPool | null;
  /** With spec.pgpool.hosts: the pool hosts (each its own pgpool; `pool` stays unused). */
  poolHosts?: SimPoolHost[];
  acked: AckedWrite[];
  journal: string[];
}

const JOURNAL_MAX = 2000;

const freshPostgres = (): SimPostgres => ({
  initialized: false,
  systemId: 0,
  running: false,
  inRecovery: false,
  timeline: 0,
  log: [],
  recs: [],
  upstream: null,
  slotName: null,
  streaming: false,
  slots: [],
  syncNames: [],
  syncQuorum: 0,
  configHash: '',
});

/** b starts with the whole of a (by record identity). */
export function isPrefix(a: SimPostgres, b: SimPostgres): boolean {
  const n = a.recs.length;
  if (n > b.recs.length) return false;
  return n === 0 || a.recs[n - 1] === b.recs[n - 1];
}

/** Length of the longest common prefix: equality at i implies equality below i, so bisect. */
export function commonPrefixLength(a: SimPostgres, b: SimPostgres): number {
  let lo = 0;
  let hi = Math.min(a.recs.length, b.recs.length);
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (a.recs[mid - 1] === b.recs[mid - 1]) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export class SimWorld {
  readonly clock: Clock;
  private readonly clusters = new Map<string, SimCluster>();
  private serial = 0;
  private systemIds = 0;
  private drifts = 0;
  /** cluster/node keys whose postmaster was killed while running: the operator's probe session
   *  there ends with the backend's "unexpected postmaster exit" (news, not kept across restarts) */
  readonly postmasterNews = new Set<string>();
  /** cluster/node/kind -> how long that long operation takes (none: it finishes at once) */
  private jobDurations = new Map<string, number>();
  /** cluster/node -> the kind of error its next long operation fails with */
  private jobFailures = new Map<string, 'transient' | 'terminal'>();
  /** told after every settle: long operations in flight notice the world breaking under them */
  private settleWatchers = new Set<(cluster: string) => void>();
  private boots = 0;

  constructor(opts: { clock?: Clock } = {}) {
    this.clock = opts.clock ?? systemClock;
  }

  /** The whole simulated world as JSON, so `pgop serve` can keep it across restarts (a
   *  simulated hypervisor outlives its operator, as a real one does). */
  toJSON(): string {
    return JSON.stringify({
      v: 1,
      serial: this.serial,
      systemIds: this.systemIds,
      drifts: this.drifts,
      boots: this.boots,
      clusters: [...this.clusters.values()].map((c) => ({ ...c, nodes: [...c.nodes.values()], journal: [] })),
    });
  }

  static fromJSON(json: string, opts: { clock?: Clock } = {}): SimWorld {
    const data = JSON.parse(json) as {
      v: number;
      serial: number;
      systemIds: number;
      drifts: number;
      boots?: number;
      clusters: (Omit<SimCluster, 'nodes'> & { nodes: SimNode[] })[];
    };
    const w = new SimWorld(opts);
    if (data.v !== 1) return w;
    w.serial = data.serial;
    w.systemIds = data.systemIds;
    w.drifts = data.drifts;
    w.boots = data.boots ?? 0;
    for (const c of data.clusters)
      w.clusters.set(c.name, { ...c, nodes: new Map(c.nodes.map((n) => [n.name, n])) });
    return w;
  }

  // ---- state access (for the drivers; tests should prefer inspect()) ----

  /** The cluster's mutable state, created empty on first use. */
  state(cluster: Ref): SimCluster {
    const name = nameOf(cluster);
    let c = this.clusters.get(name);
    if (!c) {
      c = { name, nodes: new Map(), pool: null, acked: [], journal: [] };
      this.clusters.set(name, c);
    }
    return c;
  }

  clusterNames(): string[] {
    return [...this.clusters.keys()];
  }

  /** Forget a cluster entirely (its nodes must be gone: the provider checks). */
  dropCluster(cluster: Ref): void {
    this.clusters.delete(nameOf(cluster));
  }

  node(cluster: Ref, node: Ref): SimNode | undefined {
    return this.state(cluster).nodes.get(nameOf(node));
  }

  /** A new machine with empty disks, started. */
  createNode(cluster: Ref, node: Ref, address?: string): SimNode {
    const c = this.state(cluster);
    const n: SimNode = {
      ...(address !== undefined ? { address } : {}),
      name: nameOf(node),
      machine: 'running',
      machineDetail: 'domain running',
      partitioned: false,
      lagging: false,
      installed: false,
      pg: freshPostgres(),
      bootId: ++this.boots,
    };
    c.nodes.set(n.name, n);
    return n;
  }

  removeNode(cluster: Ref, node: Ref): void {
    const c = this.state(cluster);
    c.nodes.delete(nameOf(node));
    // its pgpool and the address went with the machine (pgpool.onNodes)
    const h = c.poolHosts?.find((p) => p.onNode && p.name === nameOf(node));
    if (h) Object.assign(h, { holdsVip: false, pgpool: null });
  }

  /** Power a machine off (fence, destroy, stop): every process dies (a pgpool on it too, and the
   *  virtual IP goes), disks stay. */
  powerOff(n: SimNode, detail: string): void {
    n.machine = 'stopped';
    n.machineDetail = detail;
    n.booting = false;
    n.pg.running = false;
    n.pg.streaming = false;
    for (const c of this.clusters.values()) {
      if (c.nodes.get(n.name) !== n) continue;
      const h = c.poolHosts?.find((p) => p.onNode && p.name === n.name);
      if (!h) continue;
      h.holdsVip = false;
      if (h.pgpool) h.pgpool.running = false;
    }
  }

  /** Boot a stopped machine. Postgres is not started at boot: only the operator starts it. */
  powerOn(n: SimNode): void {
    n.machine = 'running';
    n.machineDetail = 'domain running';
    n.booting = false;
    n.bootId = ++this.boots;
  }

  /** A machine just powered on takes `ms` to boot: the hypervisor finishes it whoever waits. */
  boot(cluster: Ref, n: SimNode, ms: number): void {
    if (ms <= 0) return;
    n.booting = true;
    const bootId = n.bootId;
    void this.sleep(ms).then(() => {
      if (this.node(cluster, n.name) !== n || n.bootId !== bootId || !n.booting) return;
      n.booting = false;
      this.note(cluster, `machine ${n.name} booted`);
      this.settle(cluster);
    });
  }

  /** The operator (SSH), other nodes and pgpool can reach it. */
  linkUp(n: SimNode | undefined): n is SimNode {
    return !!n && n.machine === 'running' && !n.partitioned && !n.booting;
  }

  // ---- pool hosts ----

  poolHost(cluster: Ref, name: string): SimPoolHost | undefined {
    return this.state(cluster).poolHosts?.find((h) => h.name === name);
  }

  /** A new pool host, started, running no pgpool yet; with `onNode`, the pgpool of the node of
   *  that name (its machine is the node's). */
  createPoolHost(cluster: Ref, name: string, address: string, onNode = false): SimPoolHost {
    const c = this.state(cluster);
    const h: SimPoolHost = {
      name,
      address,
      machine: 'running',
      partitioned: false,
      holdsVip: false,
      pgpool: null,
      ...(onNode ? { onNode: { cluster: nameOf(cluster) } } : {}),
    };
    (c.poolHosts ??= []).push(h);
    return h;
  }

  /** The machine a pool host runs on: its own, or its node's. */
  poolHostMachine(h: SimPoolHost): SimPoolHost['machine'] | 'missing' {
    if (!h.onNode) return h.machine;
    return this.node(h.onNode.cluster, h.name)?.machine ?? 'missing';
  }

  /** The operator and clients can reach it. */
  poolHostUp(h: SimPoolHost | undefined): h is SimPoolHost {
    if (!h) return false;
    if (h.onNode) return this.linkUp(this.node(h.onNode.cluster, h.name));
    return h.machine === 'running' && !h.partitioned;
  }

  /** Power a pool host off (fence, stop): pgpool dies, the address goes with the machine (a
   *  node's: the node with it). */
  powerOffPoolHost(h: SimPoolHost): void {
    const node = h.onNode ? this.node(h.onNode.cluster, h.name) : undefined;
    if (node) this.powerOff(node, 'domain destroyed (fenced)');
    else h.machine = 'stopped';
    h.holdsVip = false;
    if (h.pgpool) h.pgpool.running = false;
  }

  /** The pgpool clients reach (with pool hosts: a reachable holder's), or why none. */
  clientPool(cluster: Ref): SimPool | string {
    const c = this.state(cluster);
    if (!c.poolHosts?.length) return c.pool ?? 'pgpool not configured';
    const holder = c.poolHosts.find((h) => h.holdsVip && this.poolHostUp(h));
    if (!holder) return 'no reachable pool host holds the virtual IP';
    return holder.pgpool ?? 'pgpool not configured';
  }

  /** Pool hosts holding the virtual IP with their machine running (safety: at most one). */
  vipHolders(cluster: Ref): string[] {
    const hosts = this.state(cluster).poolHosts ?? [];
    return hosts.filter((h) => h.holdsVip && this.poolHostMachine(h) === 'running').map((h) => h.name);
  }

  inspectPoolHosts(cluster: Ref): SimPoolHost[] {
    return structuredClone(this.state(cluster).poolHosts ?? []);
  }

  // ---- time taken by long operations (jobs); none by default ----

  /** Wait on the world's clock (a SimClock's timers fire as the test advances it). */
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    const clock = this.clock as Partial<TimerClock>;
    return (clock.sleep ? clock : systemClock).sleep!(ms, signal);
  }

  /** How long a node's long operations take (one kind, or every kind). */
  setJobDuration(cluster: Ref, node: Ref, ms: number, kind?: SimJobKind): void {
    for (const k of kind ? [kind] : SIM_JOB_KINDS) {
      this.jobDurations.set(`${nameOf(cluster)}/${nameOf(node)}/${k}`, Math.max(0, ms));
    }
  }

  jobDuration(cluster: Ref, node: Ref, kind: SimJobKind): number {
    return this.jobDurations.get(`${nameOf(cluster)}/${nameOf(node)}/${kind}`) ?? 0;
  }

  /** Fault: the node's next long operation fails at its end (a mirror down, a disk full). */
  failNextJob(cluster: Ref, node: Ref, kind: 'transient' | 'terminal' = 'transient'): void {
    this.jobFailures.set(`${nameOf(cluster)}/${nameOf(node)}`, kind);
    this.note(cluster, `fault failNextJob ${nameOf(node)} (${kind})`);
  }

  hasJobFailure(cluster: Ref, node: Ref): boolean {
    return this.jobFailures.has(`${nameOf(cluster)}/${nameOf(node)}`);
  }

  /** The failure injected for the node's next long operation, taken (once). */
  takeJobFailure(cluster: Ref, node: Ref): 'transient' | 'terminal' | undefined {
    const key = `${nameOf(cluster)}/${nameOf(node)}`;
    const kind = this.jobFailures.get(key);
    this.jobFailures.delete(key);
    return kind;
  }

  /** Call `watcher` with the cluster's name after every settle (every change is followed by one). */
  onSettle(watcher: (cluster: string) => void): () => void {
    this.settleWatchers.add(watcher);
    return () => this.settleWatchers.delete(watcher);
  }

  newSystemId(): number {
    return ++this.systemIds;
  }

  /** Append one commit at the tail of a node's log. Returns its record serial. */
  append(n: SimNode, id: number): number {
    const rec = ++this.serial;
    n.pg.log.push(id);
    n.pg.recs.push(rec);
    return rec;
  }

  /** Replace a node's log by a prefix of `source`'s (clone: whole; rewind: common prefix). */
  copyLog(target: SimNode, source: SimNode, length = source.pg.log.length): void {
    target.pg.log = source.pg.log.slice(0, length);
    target.pg.recs = source.pg.recs.slice(0, length);
  }

  note(cluster: Ref, text: string): void {
    const j = this.state(cluster).journal;
    j.push(`${this.clock.now()} ${text}`);
    // Bounded for long-running `serve` on the sim; amortised O(1).
    if (j.length > JOURNAL_MAX) j.splice(0, JOURNAL_MAX / 2);
  }

  // ---- physics ----

  /**
   * Bring replication up to date: every streaming standby receives its upstream's log. A standby
   * streams when it and its upstream are running and linked, the upstream is the writable
   * primary (no cascading), both share a system identifier, its slot exists upstream (when it
   * uses one) and its log is a prefix of the upstream's. A diverged standby stops streaming
   * until ensureStandby rewinds it.
   */
  settle(cluster: Ref): void {
    const c = this.state(cluster);
    for (const n of c.nodes.values()) {
      const pg = n.pg;
      pg.streaming = false;
      if (!pg.running || !pg.inRecovery || pg.upstream === null || !this.linkUp(n)) continue;
      const u = c.nodes.get(pg.upstream);
      if (!this.linkUp(u) || !u.pg.running || u.pg.inRecovery) continue;
      if (u.pg.systemId !== pg.systemId) continue;
      if (pg.slotName !== null && !u.pg.slots.includes(pg.slotName)) continue;
      if (!isPrefix(pg, u.pg)) continue;
      pg.streaming = true;
      pg.timeline = u.pg.timeline; // a streaming standby follows the upstream's timeline switches
      if (n.lagging) continue;
      for (let i = pg.log.length; i < u.pg.log.length; i++) {
        pg.log.push(u.pg.log[i]!);
        pg.recs.push(u.pg.recs[i]!);
      }
    }
    for (const watcher of this.settleWatchers) watcher(c.name);
  }

  /**
   * A client commits `id`, through pgpool or directly on a node (a client colocated with it: a
   * partitioned node still takes it, which is how split brain shows). The commit lands in the
   * target's log even when it is not acknowledged, as in real postgres: with
   * synchronous_standby_names set, the client waits for a quorum of the named standbys; if they
   * do not have it right away the client would hang, modelled as not acked.
   */
  write(cluster: Ref, via: 'pool' | { node: string }, id: number): WriteResult {
    const c = this.state(cluster);
    this.settle(c.name);
    let target: SimNode | undefined;
    if (via === 'pool') {
      const pool = this.clientPool(c.name);
      if (typeof pool === 'string') return this.refuse(c, id, null, pool);
      if (!pool.running) return this.refuse(c, id, null, 'pgpool not running');
      if (pool.primary === null) return this.refuse(c, id, null, 'pgpool has no primary backend');
      target = c.nodes.get(pool.primary);
      // pgpool is a separate host: it needs the link as well as a writable postgres.
      if (!this.linkUp(target))
        return this.refuse(c, id, pool.primary, `pgpool cannot reach ${pool.primary}`);
    } else {
      target = c.nodes.get(via.node);
      if (!target || target.machine !== 'running') return this.refuse(c, id, via.node, 'machine not running');
    }
    const pg = target.pg;
    if (!pg.running) return this.refuse(c, id, target.name, 'postgres not running');
    if (pg.inRecovery) return this.refuse(c, id, target.name, 'read-only: server is in recovery');

    const pos = pg.log.length;
    const rec = this.append(target, id);
    this.settle(c.name);
    const sync = pg.syncNames.length > 0;
    if (sync) {
      let flushed = 0;
      for (const name of pg.syncNames) {
        const s = c.nodes.get(name)?.pg;
        if (s && s.streaming && s.upstream === target.name && s.recs[pos] === rec) flushed++;
      }
      if (flushed < pg.syncQuorum) {
        return this.refuse(
          c,
          id,
          target.name,
          `waiting for synchronous replication: ${flushed} of ${pg.syncQuorum} standbys`,
          true,
        );
      }
    }
    c.acked.push({ id, node: target.name, timeline: pg.timeline, sync, at: this.clock.now() });
    return { acked: true, node: target.name, sync };
  }

  private refuse(c: SimCluster, id: number, node: string | null, reason: string, sync = false): WriteResult {
    this.note(c.name, `write ${id} not acked${node ? ` on ${node}` : ''}: ${reason}`);
    return { acked: false, node, sync, reason };
  }

  // ---- invariant helpers ----

  ackedWrites(cluster: Ref): AckedWrite[] {
    return this.state(cluster).acked.map((w) => ({ ...w }));
  }

  /** Nodes clients can write to: machine and postgres running, not in recovery. Partitioned ones
   *  count: clients colocated with them still reach them. */
  writablePrimaries(cluster: Ref): string[] {
    const out: string[] = [];
    for (const n of this.state(cluster).nodes.values()) {
      if (n.machine === 'running' && n.pg.running && !n.pg.inRecovery) out.push(n.name);
    }
    return out;
  }

  /**
   * Ids acknowledged under synchronous replication that the cluster no longer holds.
   * - With writable primaries: the authority is the primary (or primaries, in split brain) on
   *   the highest timeline, i.e. the newest promotion, where clients' future writes build on.
   *   An ack missing from any authority is lost.
   * - With none (a failover in flight): nothing is lost while any node that still has its data
   *   (initialized, machine not missing) holds the ack, because the operator may still promote
   *   or recover from it. This keeps transient windows from counting as loss, while a wrong
   *   promotion shows up as soon as it happens.
   * Ids are compared as values: give each write a distinct id.
   */
  lostSyncAcks(cluster: Ref): number[] {
    const c = this.state(cluster);
    const syncAcks = c.acked.filter((w) => w.sync);
    if (syncAcks.length === 0) return [];
    const writable = this.writablePrimaries(c.name).map((name) => c.nodes.get(name)!);
    if (writable.length > 0) {
      const top = Math.max(...writable.map((n) => n.pg.timeline));
      const authorities = writable.filter((n) => n.pg.timeline === top).map((n) => new Set(n.pg.log));
      return syncAcks.filter((w) => authorities.some((held) => !held.has(w.id))).map((w) => w.id);
    }
    const survivors = [...c.nodes.values()].filter((n) => n.pg.initialized).map((n) => new Set(n.pg.log));
    return syncAcks.filter((w) => !survivors.some((held) => held.has(w.id))).map((w) => w.id);
  }

  nodeLog(cluster: Ref, node: Ref): number[] {
    return [...(this.node(cluster, node)?.pg.log ?? [])];
  }

  /** A deep copy of a node's state, for assertions. */
  inspect(cluster: Ref, node: Ref): SimNode | undefined {
    const n = this.node(cluster, node);
    return n ? structuredClone(n) : undefined;
  }

  /** The pgpool clients reach (with pool hosts: the virtual IP's reachable holder's). */
  inspectPool(cluster: Ref): SimPool | null {
    const p = this.clientPool(cluster);
    return typeof p === 'string' ? null : structuredClone(p);
  }

  /** What happened, oldest first (driver actions, faults, refused writes): for failing seeds. */
  journal(cluster: Ref): string[] {
    return [...this.state(cluster).journal];
  }

  // ---- faults (no-ops on machines that do not exist) ----

  private fault(cluster: Ref, node: Ref, what: string, f: (n: SimNode) => void): void {
    this.settle(cluster);
    const n = this.node(cluster, node);
    if (!n) return;
    f(n);
    this.note(cluster, `fault ${what} ${n.name}`);
    this.settle(cluster);
  }

  /** A fault on a pool host (named as a node is: pool host names are no node's). */
  private poolHostFault(cluster: Ref, name: Ref, what: string, f: (h: SimPoolHost) => void): boolean {
    const h = this.poolHost(cluster, nameOf(name));
    // a node's pgpool: faults act on the node (killPgpool kills the pgpool alone)
    if (!h || h.onNode) return false;
    f(h);
    this.note(cluster, `fault ${what} pool host ${h.name}`);
    return true;
  }

  /** SIGKILL a pool host's pgpool (a node's too, with pgpool on the nodes). */
  killPgpool(cluster: Ref, host: string): void {
    const h = this.poolHost(cluster, host);
    if (!h) throw new Error(`no pool host ${host} in ${nameOf(cluster)}`);
    if (h.pgpool) h.pgpool.running = false;
    this.note(cluster, `fault kill pgpool on ${host}`);
  }

  /** SIGKILL the postmaster: postgres down, data kept. On a pool host: its pgpool. */
  kill(cluster: Ref, node: Ref): void {
    if (this.poolHostFault(cluster, node, 'kill pgpool', (h) => h.pgpool && (h.pgpool.running = false)))
      return;
    this.fault(cluster, node, 'kill', (n) => {
      if (n.pg.running)
        this.postmasterNews.add(`${typeof cluster === 'string' ? cluster : cluster.name}/${n.name}`);
      n.pg.running = false;
      n.pg.streaming = false;
    });
  }

  partition(cluster: Ref, node: Ref): void {
    if (this.poolHostFault(cluster, node, 'partition', (h) => (h.partitioned = true))) return;
    this.fault(cluster, node, 'partition', (n) => {
      n.partitioned = true;
    });
  }

  heal(cluster: Ref, node: Ref): void {
    if (this.poolHostFault(cluster, node, 'heal', (h) => (h.partitioned = false))) return;
    this.fault(cluster, node, 'heal', (n) => {
      n.partitioned = false;
    });
  }

  /** Shut the whole node down (every process). */
  stop(cluster: Ref, node: Ref): void {
    if (this.poolHostFault(cluster, node, 'stop', (h) => this.powerOffPoolHost(h))) return;
    this.fault(cluster, node, 'stop', (n) => this.powerOff(n, 'domain shut off'));
  }

  /** Boot the machine; postgres stays down until the operator starts it. */
  start(cluster: Ref, node: Ref): void {
    if (this.poolHostFault(cluster, node, 'start', (h) => (h.machine = 'running'))) return;
    this.fault(cluster, node, 'start', (n) => {
      if (n.machine === 'stopped') this.powerOn(n);
    });
  }

  /** The hypervisor killed the domain. */
  destroyDomain(cluster: Ref, node: Ref): void {
    if (this.poolHostFault(cluster, node, 'destroy', (h) => this.powerOffPoolHost(h))) return;
    this.fault(cluster, node, 'destroy', (n) => this.powerOff(n, 'domain shut off (destroyed)'));
  }

  /** Machine and disks gone. */
  vanish(cluster: Ref, node: Ref): void {
    this.fault(cluster, node, 'vanish', (n) => this.removeNode(cluster, n.name));
  }

  setLagging(cluster: Ref, node: Ref, lagging: boolean): void {
    this.fault(cluster, node, lagging ? 'lag' : 'unlag', (n) => {
      n.lagging = lagging;
    });
  }

  /** Someone edited the managed configuration by hand. */
  driftConfig(cluster: Ref, node: Ref): void {
    const drift = (h: SimPoolHost) => h.pgpool && (h.pgpool.configHash = `drifted-${++this.drifts}`);
    if (this.poolHostFault(cluster, node, 'drift', drift)) return;
    this.fault(cluster, node, 'drift', (n) => {
      n.pg.configHash = `drifted-${++this.drifts}`;
    });
  }

  /** The pgpool clients reach dies. */
  crashPool(cluster: Ref): void {
    const p = this.clientPool(cluster);
    if (typeof p === 'string') return;
    p.running = false;
    this.note(cluster, 'fault crash pgpool');
  }
}
