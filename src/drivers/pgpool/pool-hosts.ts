// PoolDriver over every pool host of a cluster: one pgpool per host (PgpoolOnHost, driver.ts),
// all routing to the same primary, and with several hosts the cluster's virtual IP (the spec's
// pgpool.address) on exactly one of them. The planner decides where the address goes
// (plan/pool.ts); this moves it: every other host is made to drop it first (over SSH, or its
// machine is powered off when SSH cannot reach it), then the holder adds it and announces it
// with a gratuitous ARP, so that neighbours send to the new holder at once.

import { poolHosts, poolVip, type ClusterSpec, type NodeSpec } from '../../spec/types.js';
import type { MachineObservation, PoolHostObservation, PoolObservation } from '../../observe/types.js';
import type { DriverLog, PoolDriver } from '../types.js';
import { messageOf, transient } from '../../errors.js';
import { failureDetail, runScript } from '../remote/run.js';
import { tcpPortState } from '../remote/port.js';
import { LOST_MID_COMMAND } from '../ssh/shell.js';
import { PgpoolOnHost, type PgpoolOnHostOptions } from './driver.js';
import { VIP_DROP_SH, VIP_HELD_SH, VIP_TAKE_SH } from './scripts.js';

/** What the driver needs of the provider to fence and restart a pool host's machine. */
export interface PoolHostMachines {
  fence(cluster: ClusterSpec, host: string): Promise<void>;
  start(cluster: ClusterSpec, host: string): Promise<void>;
  observe?(cluster: ClusterSpec, host: string): Promise<MachineObservation>;
  /** every pool host machine of the cluster, in the spec or not */
  list?(cluster: ClusterSpec): Promise<string[]>;
  /** remove a pool host that left the spec, with every address on it */
  remove?(cluster: ClusterSpec, host: string): Promise<void>;
}

export interface SshPoolDriverOptions extends Omit<PgpoolOnHostOptions, 'host'> {
  machines?: PoolHostMachines;
}

/** How often the virtual IP's place is read over SSH while nothing moved it (the driver is the
 *  only one that moves it; a look in between reuses the last answer). */
const VIP_REREAD_MS = 1_000;
/** How often the provider is asked for pool hosts that left the spec. */
const LEFT_HOSTS_REREAD_MS = 5_000;

interface HostVipState {
  holds: boolean | null;
  reading?: Promise<void>;
  machine?: MachineObservation['state'];
  port: PoolHostObservation['port'];
  pcpPort: PoolHostObservation['port'];
  readAt: number;
  shellReachable: boolean;
  silentLooks: number;
  unansweredLooks: number;
  /** the clients connected to its pgpool at the virtual IP when it last held it (ADDRESS:PORT) */
  clients: string[];
}

/** A client as `ss` prints it; anything else read from a host is dropped, never passed on. */
const CLIENT_LINE = /^c (\d{1,3}(?:\.\d{1,3}){3}:\d{1,5})$/;

export class SshPoolDriver implements PoolDriver {
  private readonly opts: SshPoolDriverOptions;
  private readonly log: DriverLog;
  private readonly onHost = new Map<string, PgpoolOnHost>();
  /** by cluster, then pool host */
  private readonly vip = new Map<string, Map<string, HostVipState>>();
  /** pool host machines that left the spec, by cluster, as last listed */
  private readonly left = new Map<string, { hosts: string[]; at: number }>();

  constructor(opts: SshPoolDriverOptions) {
    this.opts = opts;
    this.log = opts.logger ?? { info() {}, warn() {} };
  }

  /** The pgpool of one pool host (one object serves that host name in every cluster). */
  host(name: string): PgpoolOnHost {
    let d = this.onHost.get(name);
    if (!d) {
      d = new PgpoolOnHost({ ...this.opts, host: name });
      this.onHost.set(name, d);
    }
    return d;
  }

  private hosts(cluster: ClusterSpec): PgpoolOnHost[] {
    return poolHosts(cluster).map((h) => this.host(h.name));
  }

  private vipState(cluster: ClusterSpec, host: string): HostVipState {
    let byHost = this.vip.get(cluster.name);
    if (!byHost) this.vip.set(cluster.name, (byHost = new Map()));
    let s = byHost.get(host);
    if (!s)
      byHost.set(
        host,
        (s = {
          holds: null,
          port: 'silent',
          pcpPort: 'silent',
          readAt: 0,
          shellReachable: true,
          silentLooks: 0,
          unansweredLooks: 0,
          clients: [],
        }),
      );
    return s;
  }

  desiredConfigHash(cluster: ClusterSpec): string {
    // every pool host gets the same files (pgpool listens on '*' there)
    return this.hosts(cluster)[0]?.desiredConfigHash(cluster) ?? '';
  }

  // ---------------------------------------------------------------- observe

  async observe(cluster: ClusterSpec): Promise<PoolObservation> {
    const hosts = this.hosts(cluster);
    const leftHosts = await this.leftHosts(cluster);
    const left = leftHosts.length > 0 ? { leftHosts } : {};
    if (!poolVip(cluster) || hosts.length === 0) {
      const none: PoolObservation = { reachable: false, primary: null, backends: [], configHash: '' };
      return { ...((await hosts[0]?.observe(cluster)) ?? none), ...left };
    }
    const looks = await Promise.all(hosts.map((h) => this.lookAt(cluster, h)));
    return { ...serving(looks), ...left };
  }

  /** Pool host machines the provider holds that the spec no longer names (every few seconds). */
  private async leftHosts(cluster: ClusterSpec): Promise<string[]> {
    const list = this.opts.machines?.list;
    if (!list) return [];
    const known = this.left.get(cluster.name);
    if (known && Date.now() - known.at < LEFT_HOSTS_REREAD_MS) return known.hosts;
    const names = new Set(poolHosts(cluster).map((h) => h.name));
    const hosts = (await list(cluster).catch(() => known?.hosts ?? [])).filter((n) => !names.has(n));
    this.left.set(cluster.name, { hosts, at: Date.now() });
    return hosts;
  }

  /** Remove a pool host that left the spec (its machine, and the virtual IP with it). */
  async removeHost(cluster: ClusterSpec, host: string): Promise<void> {
    const remove = this.opts.machines?.remove;
    if (!remove) throw transient(`cannot remove pool host ${host}: the provider cannot`);
    await remove(cluster, host);
    this.host(host).forget(cluster);
    this.vip.get(cluster.name)?.delete(host);
    this.left.delete(cluster.name);
    this.log.info({ cluster: cluster.name, poolHost: host }, 'pool host removed (it left the spec)');
  }

  latest(cluster: ClusterSpec): PoolObservation | null {
    const hosts = this.hosts(cluster);
    const leftHosts = this.left.get(cluster.name)?.hosts ?? [];
    const left = leftHosts.length > 0 ? { leftHosts } : {};
    if (!poolVip(cluster)) {
      const view = hosts[0]?.latest(cluster);
      return view ? { ...view, ...left } : null;
    }
    const looks = hosts.map((h): PoolHostObservation => {
      const view = h.latest(cluster) ?? { reachable: false, primary: null, backends: [], configHash: '' };
      const s = this.vipState(cluster, h.host);
      const ports = {
        port: s.port,
        pcpPort: s.pcpPort,
        silentLooks: s.silentLooks,
        unansweredLooks: s.unansweredLooks,
      };
      return { ...view, name: h.host, ...ports, ...vipFields(s) };
    });
    return looks.length > 0 ? { ...serving(looks), ...left } : null;
  }

  /** One pool host: its pgpool port first (bounded by connectTimeoutMs), pgpool over PCP only
   *  when the port is open (a dead or cut-off host would hold the look for PCP's timeout), and
   *  the virtual IP over SSH at most every second, in the background (the look takes the last
   *  answer: a host SSH cannot reach must not hold it up either). */
  private async lookAt(cluster: ClusterSpec, h: PgpoolOnHost): Promise<PoolHostObservation> {
    const s = this.vipState(cluster, h.host);
    if (!s.reading && Date.now() - s.readAt >= VIP_REREAD_MS) {
      s.reading = this.readVip(cluster, h.host).finally(() => (s.reading = undefined));
    }
    const timeoutMs = Math.max(200, cluster.failureDetection.connectTimeoutMs);
    const [port, pcpPort] = await Promise.all([
      tcpPortState(h.address(cluster), cluster.pgpool.port, timeoutMs),
      tcpPortState(h.address(cluster), cluster.pgpool.pcpPort, timeoutMs),
      // known as soon as the provider answers, not after a dead host's port timeouts
      this.readMachine(cluster, h.host),
    ]);
    s.silentLooks = port === 'silent' ? s.silentLooks + 1 : 0;
    Object.assign(s, { port, pcpPort });
    // a host last unreachable answers on its port again (healed, restarted): its shell's answer
    // is waited for, or this look would skip it as unreachable and the pass call it converged
    if (port !== 'silent' && !s.shellReachable && s.reading) await s.reading;
    // PCP answers for a busy pgpool whose clients' port is silent (a full listen backlog)
    const answers = port === 'open' || (port === 'silent' && pcpPort === 'open');
    const view = answers ? await h.observe(cluster) : h.lost(cluster, `pgpool's port ${port}`);
    const unanswered = port === 'open' && !view.reachable && !h.isSwitching(cluster);
    s.unansweredLooks = unanswered ? s.unansweredLooks + 1 : 0;
    const looks = { silentLooks: s.silentLooks, unansweredLooks: s.unansweredLooks };
    return { ...view, name: h.host, port, pcpPort, ...looks, ...vipFields(s) };
  }

  /** The host's machine state as the provider tells it (kept when it cannot). */
  private async readMachine(cluster: ClusterSpec, host: string): Promise<void> {
    const machine = await this.opts.machines?.observe?.(cluster, host).catch(() => undefined);
    if (machine) this.vipState(cluster, host).machine = machine.state;
  }

  /** Whether the host holds the virtual IP, over SSH; an unreachable host keeps its last answer. */
  private async readVip(cluster: ClusterSpec, host: string): Promise<void> {
    const s = this.vipState(cluster, host);
    const startedAt = Date.now();
    try {
      const args = [poolVip(cluster) ?? '', String(cluster.pgpool.port)];
      const res = await this.run(cluster, host, VIP_HELD_SH, args, 2_000);
      const lines = res.stdout.trim().split('\n');
      // a move meanwhile knows better
      if (s.readAt <= startedAt) s.holds = lines[0] === 'held';
      if (s.holds) s.clients = lines.flatMap((l) => CLIENT_LINE.exec(l)?.slice(1, 2) ?? []);
      s.shellReachable = true;
    } catch {
      s.shellReachable = false;
    }
    s.readAt = Math.max(s.readAt, Date.now());
  }

  private run(cluster: ClusterSpec, host: string, script: string, args: string[], timeoutMs: number) {
    const ref = this.opts.hostRef(cluster, host);
    return runScript(this.opts.shell, ref, { text: script, args }, { user: 'root', timeoutMs });
  }

  // ---------------------------------------------------------------- ensure

  /** One pool host, or every one (host undefined): then a host that cannot be reached is only
   *  logged unless it serves clients or every one failed (its own repair is a step of its own,
   *  see plan/pool.ts), and beside a serving one only those that need no configuring are routed.
   *  With no holder (bring-up, or the holder lost) none serves: the live ones are started, so
   *  that the planner has one to give the virtual IP to. */
  async ensurePool(cluster: ClusterSpec, primary: string | null, failed: string[] = [], host?: string) {
    if (host !== undefined) return this.host(host).ensurePool(cluster, primary, failed);
    const servingName = this.servingHost(cluster);
    // only a holder whose address can go elsewhere: with no holder (a new cluster) or no other
    // live pool host, starting the pgpools is what lets the virtual IP go anywhere at all
    if (poolVip(cluster) && servingName !== undefined && this.canMoveVip(cluster, servingName))
      await this.mustListen(cluster, servingName);
    // a host last seen unreachable would hold up a failover's routing step for its timeouts, and
    // one that needs configuring (files, a start: up to a minute on a VM just booted) is its own
    // job's (plan/pool.ts routeOtherPoolHosts): here only the ones that route in seconds
    const hosts = this.hosts(cluster).filter(
      (h) =>
        h.host === servingName ||
        (this.looksAlive(cluster, h.host) && (servingName === undefined || h.routesOnly(cluster))),
    );
    if (hosts.length === 0) throw transient(`cannot route pgpool of ${cluster.name}: no pool host answers`);
    const results = await Promise.allSettled(hosts.map((h) => h.ensurePool(cluster, primary, failed)));
    const allFailed = results.every((r) => r.status === 'rejected');
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') return;
      const name = hosts[i]!.host;
      if (name === servingName || allFailed) throw r.reason;
      this.log.warn(
        { cluster: cluster.name, poolHost: name, error: messageOf(r.reason) },
        'pgpool not ensured',
      );
    });
  }

  /** The serving pgpool's port, checked right before it is routed: one that died since the
   *  pass looked would hold the routing step for its whole settle timeout, while moving the
   *  virtual IP (the next pass) is what clients need. */
  private async mustListen(cluster: ClusterSpec, host: string): Promise<void> {
    const timeoutMs = Math.max(200, cluster.failureDetection.connectTimeoutMs);
    const port = await tcpPortState(this.host(host).address(cluster), cluster.pgpool.port, timeoutMs);
    if (port === 'open') return;
    this.vipState(cluster, host).port = port;
    throw transient(
      `pgpool on pool host ${host} of ${cluster.name} is down (its port ${port}): the virtual IP moves first`,
    );
  }

  /** Whether `host` holds the virtual IP (as last read) and another pool host could take it: its
   *  shell answered and its pgpool's port was open at the last look. */
  private canMoveVip(cluster: ClusterSpec, host: string): boolean {
    if (this.vipState(cluster, host).holds !== true) return false;
    return poolHosts(cluster).some((h) => {
      const s = this.vipState(cluster, h.name);
      return h.name !== host && s.shellReachable && s.port === 'open';
    });
  }

  private looksAlive(cluster: ClusterSpec, host: string): boolean {
    const s = this.vipState(cluster, host);
    return s.shellReachable && s.silentLooks === 0 && !machineDown(s);
  }

  /** The pool host clients reach: the only one, or the virtual IP's holder as last read. */
  private servingHost(cluster: ClusterSpec): string | undefined {
    const names = poolHosts(cluster).map((h) => h.name);
    if (!poolVip(cluster)) return names[0];
    return names.find((n) => this.vipState(cluster, n).holds === true);
  }

  /** The virtual IP on `holder` alone: dropped everywhere else first (a host SSH cannot reach
   *  is powered off by its provider), then added on `holder` and announced. */
  async moveVip(cluster: ClusterSpec, holder: string): Promise<void> {
    const vip = poolVip(cluster);
    if (!vip) return;
    const t0 = performance.now();
    const others = poolHosts(cluster).filter((h) => h.name !== holder);
    await Promise.all(others.map((h) => this.dropVip(cluster, h.name, vip)));
    // from here it may hold the address whatever the outcome (a timed-out add may have run)
    Object.assign(this.vipState(cluster, holder), { holds: null, readAt: Date.now() });
    // the old holder's clients, as last read there: told at once that their sessions are gone
    const clients = [...new Set(others.flatMap((h) => this.vipState(cluster, h.name).clients))];
    const own = this.host(holder).address(cluster);
    const args = [vip, own, String(cluster.pgpool.port), ...clients];
    const res = await this.run(cluster, holder, VIP_TAKE_SH, args, 5_000);
    if (res.code !== 0)
      throw transient(`cannot put ${vip} on pool host ${holder} of ${cluster.name}: ${failureDetail(res)}`);
    Object.assign(this.vipState(cluster, holder), { holds: true, readAt: Date.now(), shellReachable: true });
    for (const h of others) this.vipState(cluster, h.name).clients = [];
    const ms = Math.round(performance.now() - t0);
    this.log.info(
      { cluster: cluster.name, poolHost: holder, vip, ms, tickled: clients.length },
      'virtual IP moved',
    );
  }

  /** The address off one host: over SSH, else by powering the machine off (fence). */
  private async dropVip(cluster: ClusterSpec, host: string, vip: string): Promise<void> {
    const s = this.vipState(cluster, host);
    let why: string;
    // known not to hold it: nothing to take off. Only this driver adds the address, and an add
    // makes the host's answer unknown until it succeeded (moveVip); a new operator knows nothing.
    if (s.holds === false) return;
    // its port went silent and PCP's too (host down or cut off, not busy): SSH would time out
    if ((s.silentLooks > 0 && s.pcpPort !== 'open') || machineDown(s)) {
      // its port went silent (host down or cut off): SSH would only time out as well
      why = machineDown(s)
        ? `its machine is ${s.machine}`
        : `pgpool's port silent for ${s.silentLooks} looks`;
    } else {
      const dropped = await this.dropOverSsh(cluster, host, vip);
      if (dropped === true) {
        Object.assign(s, { holds: false, readAt: Date.now(), shellReachable: true });
        return;
      }
      why = dropped;
    }
    const machines = this.opts.machines;
    if (!machines) throw transient(`cannot take ${vip} off pool host ${host} of ${cluster.name}: ${why}`);
    this.log.warn(
      { cluster: cluster.name, poolHost: host, error: why },
      'fencing pool host: the virtual IP cannot be taken off it over SSH',
    );
    await machines.fence(cluster, host);
    Object.assign(s, { holds: false, readAt: Date.now(), shellReachable: false });
  }

  /** The address off one host over SSH: true, or why not. A host that refused the connection
   *  or timed out is not asked twice; one whose session broke mid-command is (once, on a new
   *  channel): a fence is dearer than a retry, above all of a database node (pgpool.onNodes). */
  private async dropOverSsh(cluster: ClusterSpec, host: string, vip: string): Promise<true | string> {
    let why = '';
    for (let attempt = 1; attempt <= 2; attempt++) {
      try {
        const res = await this.run(cluster, host, VIP_DROP_SH, [vip], 1_500);
        if (res.code === 0) return true;
        return failureDetail(res);
      } catch (err) {
        why = messageOf(err);
        if (!why.includes(LOST_MID_COMMAND)) return why;
        this.log.warn({ cluster: cluster.name, poolHost: host, error: why }, 'virtual IP drop retried');
      }
    }
    return why;
  }

  /** Start a pool host's machine again (after a fence); its pgpool follows (ensurePool). */
  async startHost(cluster: ClusterSpec, host: string): Promise<void> {
    if (!this.opts.machines) throw transient(`cannot start pool host ${host}: the provider cannot`);
    await this.opts.machines.start(cluster, host);
    // the providers return once its SSH answers: its pgpool is started by the next pass, not
    // skipped as unreachable until a read in the background says otherwise
    Object.assign(this.vipState(cluster, host), { readAt: 0, shellReachable: true });
    this.host(host).lost(cluster, 'pool host started again');
  }

  // ---------------------------------------------------------------- failover: every pgpool

  async detachBackend(
    cluster: ClusterSpec,
    node: NodeSpec,
    successor?: NodeSpec,
    opts?: { cutOffAfterMs?: number },
  ): Promise<void> {
    await Promise.all(this.hosts(cluster).map((h) => h.detachBackend(cluster, node, successor, opts)));
  }

  /** Every pgpool switched; the promotion waits only for those that looked alive (and the
   *  serving one, unless its machine is down: with pgpool on the nodes it often went with the
   *  primary, and its PCP timeouts once held the promotion 38 s): the others' requests run on in
   *  the background, bounded by PCP timeouts. */
  async routeToPrimary(cluster: ClusterSpec, node: NodeSpec, promoted: Promise<void>): Promise<void> {
    const servingName = this.servingHost(cluster);
    // asked now: the last look may predate the fault (a look waits out a dead host's ports)
    if (servingName !== undefined) await this.readMachine(cluster, servingName);
    const waits: Promise<void>[] = [];
    for (const h of this.hosts(cluster)) {
      const routed = h.routeToPrimary(cluster, node, promoted);
      const serving = h.host === servingName && !machineDown(this.vipState(cluster, h.host));
      if (serving || this.looksAlive(cluster, h.host)) waits.push(routed);
    }
    await Promise.all(waits);
  }

  async deletePool(cluster: ClusterSpec): Promise<void> {
    await Promise.all(this.hosts(cluster).map((h) => h.deletePool(cluster)));
    this.vip.delete(cluster.name);
  }

  async close(): Promise<void> {
    await Promise.all([...this.onHost.values()].map((h) => h.close()));
  }
}

/** Its machine was last seen stopped or missing (the provider's word, not a timeout). */
const machineDown = (s: HostVipState) => s.machine === 'stopped' || s.machine === 'missing';

const vipFields = (s: HostVipState) => ({
  holdsVip: s.holds,
  shellReachable: s.shellReachable,
  ...(s.machine ? { machine: s.machine } : {}),
});

/** The observation clients see: the sole holder's pgpool, else the first that answers. */
function serving(looks: PoolHostObservation[]): PoolObservation {
  const holders = looks.filter((l) => l.holdsVip === true);
  const main = (holders.length === 1 ? holders[0] : undefined) ?? looks.find((l) => l.reachable) ?? looks[0]!;
  const {
    name: _name,
    port: _port,
    pcpPort: _pcp,
    silentLooks: _s,
    unansweredLooks: _u,
    holdsVip: _h,
    shellReachable: _r,
    machine: _m,
    ...view
  } = main;
  return { ...view, hosts: looks };
}
