// The lab provider: each node machine is a network namespace on this machine with its own
// address on a per-cluster bridge, its own sshd in a private mount namespace (so the node sees
// the seed's /u01, /u02, /var/log/postgres, /var/run/postgresql as its own), and the host's
// postgres/pgpool binaries. Fencing kills every process of the namespace at once.
// Topology and paths: README.md beside this file.

import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { SINGLE_POOL_HOST, poolHosts, poolMachineNames, poolMachines, poolVip } from '../../spec/types.js';
import type { ClusterSpec, LabProviderSpec, NodeSpec } from '../../spec/types.js';
import type { MachineObservation } from '../../observe/types.js';
import type { FaultInjector, HostRef, MachineRef, ProviderDriver } from '../types.js';
import { internal, terminal } from '../../errors.js';
import { assertSafeName } from '../ssh/quote.js';
import { ensureOperatorKey } from '../ssh/keys.js';
import { makeDirs } from '../../state-dirs.js';
import { assertSafePath } from '../ssh/node-fs.js';
import { createKeyedQueue } from '../keyed-queue.js';
import { formatIpv4, inNetwork, networkOf, parseCidr, parseIpv4, type Ipv4Network } from '../../net/ipv4.js';
import type { HostKeyPins } from '../ssh/shell.js';
import {
  deleteNetns,
  ensureAddress,
  ensureHub,
  ensureNetns,
  hubNs,
  ipIn,
  killNetnsProcesses,
  awaitExiting,
  awaitNetnsEmpty,
  cgroupPids,
  machineCgroup,
  pidInCgroup,
  labPrefix,
  linkExists,
  listLinks,
  netnsExists,
  netnsPids,
  pidInNetns,
  procComm,
  procPpid,
  shortHash,
} from './netns.js';
import {
  PRIVATE_MOUNTS,
  ensureHostDirs,
  ensureSshFiles,
  hostPath,
  sleep,
  sshdPid,
  startSshd,
  wrap,
  writeIfChanged,
  type LabHost,
} from './host.js';

export { PRIVATE_MOUNTS, hostPath, type LabHost, type PrivateMount } from './host.js';

export const POOL = SINGLE_POOL_HOST;
const DEFAULT_STATE_DIR = '/var/lib/pgop/lab';
/** In a node host's directory: the address the host was made with (see listMachines). */
const HOST_ADDRESS_FILE = 'address';
/** Marks a pool host's directory: listMachines lists node hosts only. */
const POOL_HOST_FILE = 'pool-host';

export interface LabTiming {
  op: 'ensureMachine' | 'startSshd' | 'fence' | 'kill' | 'delete';
  id: string;
  ms: number;
}

export interface LabProviderOptions {
  /** Namespace prefix (default labPrefix(): PGOP_LAB_PREFIX or `pgop`). */
  prefix?: string;
  /** How long to wait for a started sshd to listen (default 5000 ms). */
  sshdStartTimeoutMs?: number;
  /** Called with the duration of each mutating operation. */
  onTiming?: (t: LabTiming) => void;
  /** Where the host key pgop makes for each host is pinned, before its sshd first starts
   *  (the store in production). Needed to create hosts; starting existing ones works without. */
  hostKeys?: HostKeyPins;
}

interface Net {
  /** e.g. 10.77.0.1/24 */
  gatewayCidr: string;
  prefixLen: number;
}

interface ClusterCtx {
  spec: ClusterSpec;
  name: string;
  prefix: string;
  hub: string;
  bridge: string;
  net: Net;
  stateDir: string;
  clusterDir: string;
  keyPath: string;
}

// ------------------------------------------------------------------ addresses

type LabNetwork = Ipv4Network & { gateway: number };

/** The cluster's bridge network: prefix length 8-30, host bits ignored, the hub on its first
 *  address. */
function parseNetwork(cluster: string, cidr: string): LabNetwork {
  const parsed = parseCidr(cidr);
  if (!parsed || !(parsed.prefixLen >= 8 && parsed.prefixLen <= 30)) {
    throw terminal(
      `cannot use network ${JSON.stringify(cidr)} of cluster ${cluster}: ` +
        `expected an IPv4 CIDR with a prefix length 8-30`,
    );
  }
  const net = networkOf(parsed.address, parsed.prefixLen);
  return { ...net, gateway: net.base + 1 };
}

function checkAddress(cluster: string, what: string, address: string, net: LabNetwork, cidr: string): void {
  const a = parseIpv4(address);
  if (a === undefined || !inNetwork(a, net)) {
    throw terminal(`cannot place ${what} of cluster ${cluster}: address ${address} is not inside ${cidr}`);
  }
  if (a === net.base || a === net.broadcast || a === net.gateway) {
    throw terminal(
      `cannot place ${what} of cluster ${cluster}: ` +
        `address ${address} is the network, broadcast or hub address of ${cidr}`,
    );
  }
}

// ------------------------------------------------------------------ the provider

export class LabProvider implements ProviderDriver, FaultInjector {
  private readonly prefixOverride: string | undefined;
  private readonly sshdStartTimeoutMs: number;
  private readonly onTiming: (t: LabTiming) => void;
  /** Machine operations of one cluster share its hub, bridge and key files. Fencing never waits. */
  private readonly locked = createKeyedQueue();
  private readonly hostKeys: HostKeyPins | undefined;

  constructor(opts: LabProviderOptions = {}) {
    this.prefixOverride = opts.prefix;
    this.hostKeys = opts.hostKeys;
    this.sshdStartTimeoutMs = opts.sshdStartTimeoutMs ?? 5000;
    this.onTiming = opts.onTiming ?? (() => {});
  }

  get prefix(): string {
    return this.prefixOverride ?? labPrefix();
  }

  // ---------------------------------------------------------------- naming

  private ctx(spec: ClusterSpec): ClusterCtx {
    if (spec.provider.type !== 'lab') {
      throw internal(
        `cannot use the lab provider for cluster ${spec.name}: its provider is ${spec.provider.type}`,
      );
    }
    const provider = spec.provider as LabProviderSpec;
    const name = assertSafeName('cluster', spec.name);
    const net = parseNetwork(name, provider.network);
    // it goes into sshd_config and mount commands
    const stateDir = assertSafePath(
      'lab state directory',
      provider.stateDir ?? process.env.PGOP_LAB_STATE ?? DEFAULT_STATE_DIR,
    );
    for (const forbidden of [...PRIVATE_MOUNTS.map((m) => m.target), '/var/run']) {
      if (stateDir === forbidden || stateDir.startsWith(`${forbidden}/`)) {
        throw terminal(
          `cannot use lab state directory ${stateDir}: ` +
            `it lies under ${forbidden}, which lab nodes mount privately`,
        );
      }
    }
    const clusterDir = join(stateDir, name);
    const prefix = this.prefix;
    return {
      spec,
      name,
      prefix,
      hub: hubNs(prefix),
      bridge: `br${shortHash(name, 6)}`,
      net: { gatewayCidr: `${formatIpv4(net.gateway)}/${net.prefixLen}`, prefixLen: net.prefixLen },
      stateDir,
      clusterDir,
      keyPath: join(clusterDir, 'operator_ed25519'),
    };
  }

  private host(ctx: ClusterCtx, node: MachineRef): LabHost {
    const provider = ctx.spec.provider as LabProviderSpec;
    const net = parseNetwork(ctx.name, provider.network);
    const pools = poolHosts(ctx.spec);
    let name: string;
    let address: string;
    if (typeof node === 'string') {
      const pool = pools.find((h) => h.name === node);
      if (!pool) {
        const why = ctx.spec.pgpool.enabled
          ? `the spec names no such pool host (${pools.map((h) => h.name).join(', ') || 'none'})`
          : 'pgpool is disabled';
        throw terminal(`cannot place pool host ${node} of cluster ${ctx.name}: ${why}`);
      }
      name = assertSafeName('pool host', pool.name);
      address = pool.address;
    } else {
      name = assertSafeName('node', node.name);
      if (name === POOL || poolMachines(ctx.spec).some((h) => h.name === name))
        throw terminal(
          `cannot place node ${name} of cluster ${ctx.name}: ` +
            `the name "${name}" is a pgpool host's in the lab`,
        );
      address = node.address;
    }
    const what = typeof node === 'string' ? `pool host ${name}` : `node ${name}`;
    checkAddress(ctx.name, what, address, net, provider.network);
    return { ...this.hostNamed(ctx, name), address };
  }

  /** Paths and names of one host, for tests, tools and the README's "by hand" recipe. */
  describeHost(
    spec: ClusterSpec,
    node: MachineRef,
  ): LabHost & { keyPath: string; hub: string; bridge: string; hostKeyPub: string } {
    const ctx = this.ctx(spec);
    const h = this.host(ctx, node);
    return {
      ...h,
      keyPath: ctx.keyPath,
      hub: ctx.hub,
      bridge: ctx.bridge,
      hostKeyPub: join(h.dir, 'ssh', 'ssh_host_ed25519_key.pub'),
    };
  }

  /** Where a host's sshd key lives and how its sshd re-reads it (`pgop host-key rotate`). A lab
   *  node sees the machine's filesystem outside its private mounts, so the node's key file is
   *  the state file itself; its sshd re-executes itself on SIGHUP (same pid, sessions kept). */
  hostKeyTarget(
    spec: ClusterSpec,
    node: MachineRef,
  ): { nodePath: string; statePath: string; reload: string[] } {
    const h = this.host(this.ctx(spec), node);
    const path = join(h.dir, 'ssh', 'ssh_host_ed25519_key');
    return { nodePath: path, statePath: path, reload: ['sh', '-c', 'kill -HUP "$(cat /run/sshd.pid)"'] };
  }

  hostRef(spec: ClusterSpec, node: MachineRef): HostRef {
    const ctx = this.ctx(spec);
    const h = this.host(ctx, node);
    return { id: h.id, address: h.address, port: 22, user: 'root', privateKeyPath: ctx.keyPath };
  }

  private async timed<T>(op: LabTiming['op'], id: string, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    const res = await fn();
    this.onTiming({ op, id, ms: Math.round(performance.now() - t0) });
    return res;
  }

  // ---------------------------------------------------------------- observe

  private sshdAlive(h: LabHost): boolean {
    const pid = sshdPid(h);
    return pid !== null && pidInNetns(pid, h.ns) && procComm(pid) === 'sshd';
  }

  /** sshd runs and is not in cgroup cg (a host without cgroup.kill, or it could not join). */
  private sshdAliveOutside(h: LabHost, cg: string): boolean {
    const pid = sshdPid(h);
    return pid !== null && this.sshdAlive(h) && !pidInCgroup(pid, cg);
  }

  private observeHost(h: LabHost): MachineObservation {
    if (!netnsExists(h.ns)) return { state: 'missing', detail: `namespace ${h.ns} does not exist` };
    if (this.sshdAlive(h)) return { state: 'running', detail: `namespace ${h.ns}, sshd pid ${sshdPid(h)}` };
    // no count of the processes left: scanning /proc right after a fence stalls on the exiting ones
    return { state: 'stopped', detail: `namespace ${h.ns}, sshd not running` };
  }

  async observeMachines(spec: ClusterSpec): Promise<Record<string, MachineObservation>> {
    const ctx = this.ctx(spec);
    const out: Record<string, MachineObservation> = {};
    for (const node of spec.nodes) out[node.name] = this.observeHost(this.host(ctx, node));
    return out;
  }

  /** Every node host of the cluster this machine holds (spec'd or not): the host directories
   *  in the cluster's state dir, with the address each was made with (HOST_ADDRESS_FILE). */
  async listMachines(spec: ClusterSpec): Promise<Record<string, MachineObservation & { address?: string }>> {
    const ctx = this.ctx(spec);
    const out: Record<string, MachineObservation & { address?: string }> = {};
    let entries: string[];
    try {
      entries = readdirSync(ctx.clusterDir, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
      throw wrap(err, `cannot list the lab hosts of cluster ${ctx.name}`);
    }
    for (const name of entries) {
      if (name === POOL || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) continue;
      if (existsSync(join(ctx.clusterDir, name, POOL_HOST_FILE))) continue;
      let address: string | undefined;
      try {
        address = readFileSync(join(ctx.clusterDir, name, HOST_ADDRESS_FILE), 'utf8').trim() || undefined;
      } catch {
        /* made before addresses were recorded: read below */
      }
      const h = this.hostNamed(ctx, name);
      if (address === undefined && netnsExists(h.ns)) address = await this.linkAddress(h.ns);
      out[name] = { ...this.observeHost(h), ...(address !== undefined ? { address } : {}) };
    }
    return out;
  }

  /** The IPv4 address on a host's eth0 (a host made before its address was recorded). */
  private async linkAddress(ns: string): Promise<string | undefined> {
    try {
      const out = JSON.parse(
        (await ipIn(ns, ['-j', '-4', 'addr', 'show', 'dev', 'eth0'])).trim() || '[]',
      ) as { addr_info?: { local?: string }[] }[];
      return out[0]?.addr_info?.[0]?.local;
    } catch {
      return undefined;
    }
  }

  /** A host by name alone (no address: what fencing, deleting and observing need). */
  private hostNamed(ctx: ClusterCtx, name: string): LabHost {
    return {
      cluster: ctx.name,
      name,
      id: `${ctx.name}/${name}`,
      address: '',
      ns: `${ctx.prefix}-${ctx.name}-${assertSafeName('host', name)}`,
      dir: join(ctx.clusterDir, name),
      hubVeth: `v${shortHash(`${ctx.name}/${name}`, 8)}`,
    };
  }

  /** Note the address a node host is made with, before anything of it exists: a node that
   *  leaves the spec is then found (listMachines) and removed at its real address. */
  private async recordHost(h: LabHost): Promise<void> {
    await mkdir(h.dir, { recursive: true, mode: 0o755 });
    await writeIfChanged(join(h.dir, HOST_ADDRESS_FILE), `${h.address}\n`, 0o644);
  }

  /** The pool hosts this machine holds for the cluster, in the spec or not (a pool host that
   *  left the spec is found here and removed). */
  async listPoolHosts(spec: ClusterSpec): Promise<string[]> {
    const ctx = this.ctx(spec);
    let entries: string[];
    try {
      entries = readdirSync(ctx.clusterDir, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return [];
    }
    // 'pool': the one pool host of a spec without hosts, made before directories were marked
    return entries.filter((n) => n === POOL || existsSync(join(ctx.clusterDir, n, POOL_HOST_FILE)));
  }

  /** Remove a pool host that left the spec: its processes, namespace (and every address on it,
   *  the virtual IP too) and directory. Idempotent. */
  async deletePoolHost(spec: ClusterSpec, name: string): Promise<void> {
    const ctx = this.ctx(spec);
    if (poolHosts(spec).some((h) => h.name === name) || spec.nodes.some((n) => n.name === name))
      throw internal(`refusing to delete pool host ${name} of ${ctx.name}: it is in the spec`);
    await this.locked(ctx.name, () => this.deleteHost(this.hostNamed(ctx, name)));
  }

  /** A pool host's machine state (not part of observeMachines, which covers spec nodes). */
  async observePoolHost(spec: ClusterSpec, name: string = POOL): Promise<MachineObservation> {
    const ctx = this.ctx(spec);
    return this.observeHost(this.host(ctx, name));
  }

  // ---------------------------------------------------------------- create / start

  async ensureMachine(spec: ClusterSpec, node: NodeSpec): Promise<void> {
    const ctx = this.ctx(spec);
    const h = this.host(ctx, node);
    await this.locked(ctx.name, () =>
      this.timed('ensureMachine', h.id, async () => {
        await this.ensureClusterShared(ctx);
        await this.recordHost(h);
        await this.ensureHost(ctx, h);
        // The pool hosts are created along with the first node (the driver contract has no call
        // for them); one that exists but was stopped is left alone (fault injection, fencing).
        for (const pool of poolMachines(spec).map((p) => this.host(ctx, p.name))) {
          if (!netnsExists(pool.ns) || !existsSync(join(pool.dir, 'ssh', 'sshd_config')))
            await this.ensurePoolHostIn(ctx, pool);
        }
      }),
    );
  }

  /** Create and start a pool host (every one when no name is given). Idempotent. */
  async ensurePoolHost(spec: ClusterSpec, name?: string): Promise<void> {
    const ctx = this.ctx(spec);
    const names = poolMachineNames(spec, name);
    await this.locked(ctx.name, async () => {
      await this.ensureClusterShared(ctx);
      for (const n of names) {
        const h = this.host(ctx, n);
        await this.timed('ensureMachine', h.id, () => this.ensurePoolHostIn(ctx, h));
      }
    });
  }

  private async ensurePoolHostIn(ctx: ClusterCtx, h: LabHost): Promise<void> {
    await mkdir(h.dir, { recursive: true, mode: 0o755 });
    await writeIfChanged(join(h.dir, POOL_HOST_FILE), 'pgpool\n', 0o644);
    await this.ensureHost(ctx, h);
  }

  private async ensureClusterShared(ctx: ClusterCtx): Promise<void> {
    try {
      await ensureHub(ctx.prefix);
      if (!(await linkExists(ctx.hub, ctx.bridge))) {
        try {
          await ipIn(ctx.hub, ['link', 'add', ctx.bridge, 'type', 'bridge']);
        } catch (err) {
          if (!(await linkExists(ctx.hub, ctx.bridge))) throw err;
        }
      }
      await ensureAddress(ctx.hub, ctx.bridge, ctx.net.gatewayCidr);
      await ipIn(ctx.hub, ['link', 'set', ctx.bridge, 'up']);
    } catch (err) {
      throw wrap(err, `cannot create the lab network of cluster ${ctx.name}`);
    }
    makeDirs(ctx.clusterDir, 0o755);
    await ensureOperatorKey(ctx.keyPath, ctx.name);
  }

  private async ensureHost(ctx: ClusterCtx, h: LabHost): Promise<void> {
    try {
      await ensureNetns(h.ns);
      await this.ensureLink(ctx, h);
    } catch (err) {
      throw wrap(err, `cannot create the network of ${h.id}`);
    }
    await ensureHostDirs(h);
    await ensureSshFiles(h, ctx.keyPath, this.hostKeys);
    if (!this.sshdAlive(h)) {
      // a fence just before (rejoin) may leave killed processes holding ports and shared memory
      await awaitNetnsEmpty(h.ns);
      await this.timed('startSshd', h.id, () => startSshd(h, this.sshdStartTimeoutMs));
    }
  }

  private async ensureLink(ctx: ClusterCtx, h: LabHost): Promise<void> {
    const cidr = `${h.address}/${ctx.net.prefixLen}`;
    if (await linkExists(h.ns, 'eth0')) {
      // Existing link: keep its up/down state (a partition stays a partition).
      await ensureAddress(h.ns, 'eth0', cidr);
      if (await linkExists(ctx.hub, h.hubVeth))
        await ipIn(ctx.hub, ['link', 'set', h.hubVeth, 'master', ctx.bridge, 'up']);
      return;
    }
    // Leftovers of a half-done creation (or a hub veth not yet reaped after a namespace delete).
    const tmp = `n${shortHash(`${ctx.name}/${h.name}`, 8)}`;
    if (await linkExists(ctx.hub, h.hubVeth)) await ipIn(ctx.hub, ['link', 'del', h.hubVeth]);
    if (await linkExists(h.ns, tmp)) await ipIn(h.ns, ['link', 'del', tmp]);
    await ipIn(ctx.hub, ['link', 'add', h.hubVeth, 'type', 'veth', 'peer', 'name', tmp, 'netns', h.ns]);
    await ipIn(h.ns, ['link', 'set', tmp, 'name', 'eth0', 'address', hostMac(h.id)]);
    await ipIn(h.ns, ['addr', 'add', cidr, 'dev', 'eth0']);
    await ipIn(h.ns, ['link', 'set', 'eth0', 'up']);
    await ipIn(ctx.hub, ['link', 'set', h.hubVeth, 'master', ctx.bridge, 'up']);
  }

  // ---------------------------------------------------------------- fence / delete

  async fenceMachine(spec: ClusterSpec, node: MachineRef): Promise<void> {
    const ctx = this.ctx(spec);
    const h = this.host(ctx, node);
    await this.fenceHost(h);
    // A pool host's kernel (a node's too, with pgpool on the nodes, one that left the spec
    // included) would go on answering ARP for the virtual IP with no process left: a machine
    // powered off holds no address. A database node never holds it where pgpool runs on hosts
    // of its own: no look (two `ip` runs, 160 ms on a busy host) delays its promotion there.
    const vip = poolVip(spec);
    const mayHoldVip = typeof node === 'string' || !!spec.pgpool.onNodes;
    if (vip && mayHoldVip) await this.dropAddress(h, vip);
  }

  private async dropAddress(h: LabHost, address: string): Promise<void> {
    if (!netnsExists(h.ns) || !(await linkExists(h.ns, 'eth0'))) return;
    const held = () => ipIn(h.ns, ['-4', '-o', 'addr', 'show', 'dev', 'eth0', 'to', `${address}/32`]);
    try {
      if ((await held()).trim() !== '') await ipIn(h.ns, ['addr', 'del', `${address}/32`, 'dev', 'eth0']);
    } catch (err) {
      // gone meanwhile: another fence of the same machine (the operator's, a lab fault) took it off
      if ((await held().catch(() => 'unknown')).trim() === '') return;
      throw wrap(err, `cannot fence ${h.id}: cannot take ${address} off it`);
    }
  }

  private async fenceHost(h: LabHost): Promise<void> {
    if (!netnsExists(h.ns)) return;
    await this.timed('fence', h.id, async () => {
      const cg = machineCgroup(h.ns);
      const killable = cg !== null && existsSync(join(cg, 'cgroup.kill')) ? cg : null;
      if (killable) {
        // sshd started in the machine's cgroup, so did all it started: one write kills them all
        // (the kernel also kills what forks meanwhile); then each has begun to exit (and runs
        // no code of its own again), though its teardown is not waited for.
        writeFileSync(join(killable, 'cgroup.kill'), '1');
        await awaitExiting(cgroupPids(killable));
      }
      // The namespace-wide kill only for a machine whose sshd runs outside such a cgroup: it
      // also kills a concurrent fence's transient `ip -n` of this namespace, so a second fence
      // (sshd.pid already gone) must not reach it.
      if (!killable || this.sshdAliveOutside(h, killable)) await killNetnsProcesses(h.ns);
      rmSync(join(h.dir, 'sshd.pid'), { force: true });
    });
  }

  async deleteMachine(spec: ClusterSpec, node: MachineRef): Promise<void> {
    const ctx = this.ctx(spec);
    const h = this.host(ctx, node);
    await this.locked(ctx.name, () => this.deleteHost(h));
  }

  private async deleteHost(h: LabHost): Promise<void> {
    await this.timed('delete', h.id, async () => {
      await this.fenceHost(h);
      if (netnsExists(h.ns)) await awaitNetnsEmpty(h.ns);
      const cg = machineCgroup(h.ns);
      if (cg) await rmdirQuiet(cg);
      await deleteNetns(h.ns);
      await rm(h.dir, { recursive: true, force: true });
    });
  }

  async deleteClusterResources(spec: ClusterSpec): Promise<void> {
    const ctx = this.ctx(spec);
    await this.locked(ctx.name, async () => {
      // The pool hosts, plus any host directory left by a node no longer in the spec.
      const names = new Set<string>(poolMachines(spec).map((h) => h.name));
      try {
        for (const e of readdirSync(ctx.clusterDir, { withFileTypes: true }))
          if (e.isDirectory()) names.add(e.name);
      } catch {
        /* no cluster dir */
      }
      for (const name of names) await this.deleteHost(this.hostNamed(ctx, name));
      try {
        if (netnsExists(ctx.hub) && (await linkExists(ctx.hub, ctx.bridge)))
          await ipIn(ctx.hub, ['link', 'del', ctx.bridge]);
      } catch (err) {
        throw wrap(err, `cannot delete the lab network of cluster ${ctx.name}`);
      }
      await rm(ctx.clusterDir, { recursive: true, force: true });
      // The hub goes with the last bridge, unless a process (the operator, a shell) lives in it:
      // removing its name then would split later lab hosts from that process.
      if (netnsExists(ctx.hub)) {
        const bridges = await listLinks(ctx.hub, 'bridge');
        if (bridges.length === 0 && netnsPids(ctx.hub).length === 0 && !pidInNetns(process.pid, ctx.hub))
          await deleteNetns(ctx.hub);
      }
    });
  }

  async close(): Promise<void> {
    // No connections or children to release: sshd processes are the machines and keep running.
  }

  // ---------------------------------------------------------------- faults

  /** SIGKILL the postmaster (pid from <host>/u01/.../postmaster.pid) and wait until it and the
   *  children it had are gone. No-op when no postmaster runs. */
  async kill(spec: ClusterSpec, node: MachineRef): Promise<void> {
    const h = this.host(this.ctx(spec), node);
    if (typeof node === 'string') return this.killPgpool(h);
    const pid = this.postmasterPid(spec, h);
    if (pid === null) return;
    await this.timed('kill', h.id, async () => {
      const children = netnsPids(h.ns).filter((p) => procPpid(p) === pid);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        return;
      }
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && [pid, ...children].some((p) => pidInNetns(p, h.ns))) await sleep(5);
    });
  }

  /** SIGKILL every pgpool process of a pool host (a node, with pgpool on the nodes). */
  async killPgpoolOf(spec: ClusterSpec, host: MachineRef): Promise<void> {
    await this.killPgpool(this.host(this.ctx(spec), host));
  }

  /** SIGKILL every pgpool process of a host (its main process and children) and wait until
   *  none is left. Pids wrap (pid_max 32768 here), so the main process may come after some of
   *  its children in /proc and fork their replacements before its own kill: those are found by
   *  the next listing and killed too. */
  private async killPgpool(h: LabHost): Promise<void> {
    await this.timed('kill', h.id, async () => {
      const pgpools = () => netnsPids(h.ns).filter((p) => procComm(p) === 'pgpool');
      const deadline = Date.now() + 5000;
      for (let pids = pgpools(); pids.length > 0 && Date.now() < deadline; pids = pgpools()) {
        for (const pid of pids) signalQuietly(pid, 'SIGKILL');
        await sleep(5);
      }
    });
  }

  /** SIGSTOP the postmaster, then each of its children (backends, walsender, walreceiver...):
   *  the node's postgres hangs with its ports open (the kernel still completes TCP connects, but
   *  nothing answers). Stopped first, the postmaster forks no child the scan would miss. No-op
   *  when no postmaster runs. */
  async hang(spec: ClusterSpec, node: MachineRef): Promise<void> {
    const h = this.host(this.ctx(spec), node);
    const pid = this.postmasterPid(spec, h);
    if (pid === null) return;
    signalQuietly(pid, 'SIGSTOP');
    for (const child of netnsPids(h.ns).filter((p) => procPpid(p) === pid)) signalQuietly(child, 'SIGSTOP');
  }

  /** SIGCONT what hang() stopped: the children first, then the postmaster. */
  async resume(spec: ClusterSpec, node: MachineRef): Promise<void> {
    const h = this.host(this.ctx(spec), node);
    const pid = this.postmasterPid(spec, h);
    if (pid === null) return;
    for (const child of netnsPids(h.ns).filter((p) => procPpid(p) === pid)) signalQuietly(child, 'SIGCONT');
    signalQuietly(pid, 'SIGCONT');
  }

  /** The node's postmaster (first line of postmaster.pid), if one lives in its namespace: a
   *  stale file may name a reused pid. */
  private postmasterPid(spec: ClusterSpec, h: LabHost): number | null {
    const pidFile = join(hostPath(h, spec.postgres.dataDir), 'postmaster.pid');
    let pid: number;
    try {
      pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
    } catch {
      return null; // no postmaster.pid: nothing runs
    }
    return pidInNetns(pid, h.ns) && procComm(pid) === 'postgres' ? pid : null;
  }

  async partition(spec: ClusterSpec, node: MachineRef): Promise<void> {
    await this.setLink(spec, node, 'down');
  }

  async heal(spec: ClusterSpec, node: MachineRef): Promise<void> {
    await this.setLink(spec, node, 'up');
  }

  private async setLink(spec: ClusterSpec, node: MachineRef, state: 'up' | 'down'): Promise<void> {
    const ctx = this.ctx(spec);
    const h = this.host(ctx, node);
    const verb = state === 'down' ? 'partition' : 'heal';
    if (!netnsExists(h.ns)) throw terminal(`cannot ${verb} ${h.id}: machine missing`);
    try {
      await ipIn(h.ns, ['link', 'set', 'eth0', state]);
    } catch (err) {
      throw wrap(err, `cannot ${verb} ${h.id}`);
    }
  }

  async stop(spec: ClusterSpec, node: MachineRef): Promise<void> {
    await this.fenceMachine(spec, node);
  }

  /** Start the machine again (sshd only; postgres stays down until the operator starts it). */
  async start(spec: ClusterSpec, node: MachineRef): Promise<void> {
    const ctx = this.ctx(spec);
    const h = this.host(ctx, node);
    if (!netnsExists(h.ns)) throw terminal(`cannot start ${h.id}: machine missing`);
    await this.locked(ctx.name, async () => {
      await this.ensureClusterShared(ctx);
      await this.ensureHost(ctx, h);
    });
  }
}

// ------------------------------------------------------------------ helpers

function signalQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* gone meanwhile */
  }
}

/** Remove a machine's cgroup once the last of its processes (zombies too, which the namespace
 *  no longer shows) is gone; one still holding processes after 5 s, or gone, is left alone. */
async function rmdirQuiet(dir: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (cgroupPids(dir).length > 0 && Date.now() < deadline) await sleep(5);
  await rmdir(dir).catch(() => undefined);
}

/** The lab provider, its fault injector and hostRef in one object. */
export function createLabProvider(opts: LabProviderOptions = {}): LabProvider {
  return new LabProvider(opts);
}

/** A host's MAC, derived from its id (locally administered, unicast): a host made again keeps
 *  it, so neighbours' ARP entries stay right and nobody waits seconds to re-learn the address. */
export function hostMac(id: string): string {
  const hex = `02${shortHash(`mac:${id}`, 10)}`;
  return hex.match(/../g)!.join(':');
}
