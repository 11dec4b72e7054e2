// The libvirt provider: each node is a libvirt domain built from a cloud image (qcow2 overlay),
// a data disk and a cloud-init NoCloud seed, on a NAT network with static DHCP reservations.
// Fencing is `destroy` (immediate power-off). Domains go through @unraid/libvirt (one connection
// per hypervisor URI); networks, pools and volumes through `virsh -c URI` (the binding has none);
// lifecycle events through a supervised `virsh event --loop` child per URI (events.ts).
// Conventions (names, MACs, paths): names.ts and README.md beside this file.

import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Hypervisor, Domain } from '@unraid/libvirt';
import {
  poolMachineNames,
  poolMachines,
  type ClusterSpec,
  type LibvirtProviderSpec,
  type NodeSpec,
} from '../../spec/types.js';
import type { MachineObservation } from '../../observe/types.js';
import type { DriverLog, HostRef, ProviderDriver } from '../types.js';
import { PgopError, messageOf, terminal, transient } from '../../errors.js';
import {
  POOL_HOST,
  allMachines,
  clusterUris,
  libvirtProvider,
  machinePlan,
  parseCidr,
  inside,
  macFor,
  volumeNames,
  type MachinePlan,
} from './names.js';
import { networkFacts, pgopMetadata, renderDomainXml, type DomainType } from './xml.js';
import { HOST_KEY_PATH } from './cloudinit.js';
import { ensureOperatorKey, ensurePinnedHostKey, removeKeyPair } from '../ssh/keys.js';
import type { HostKeyPins } from '../ssh/shell.js';
import { CONNECTION_LOST, NOT_FOUND, Virsh } from './virsh.js';
import { EventWatcher, type LibvirtEvent } from './events.js';
import { kvmPermissionAdvice, parseUri, resolveDomainType } from './accel.js';
import { openPathForQemu, storageAccessAdvice } from '../../state-dirs.js';
import { createKeyedQueue } from '../keyed-queue.js';
import { HypervisorResources } from './resources.js';
import { BindingConnection, BindingGate, BindingTimeout } from './connection.js';
import { destroy, loadLibvirtBinding, lookup, stateName, type DomainStateName } from './domains.js';

export { stateName } from './domains.js';

export const DEFAULT_STATE_DIR = '/var/lib/pgop/libvirt';

export interface LibvirtProviderOptions {
  /** Operator keys and ownership markers (default PGOP_LIBVIRT_STATE or /var/lib/pgop/libvirt). */
  stateDir?: string;
  log?: DriverLog;
  /** Start an event watcher per hypervisor URI on first use (default true). */
  watchEvents?: boolean;
  /** Directory on the hypervisor for serial console logs (default /var/log/libvirt/qemu; null:
   *  none). Never used with the test driver. */
  serialLogDir?: string | null;
  virsh?: Virsh;
  /** Event watcher backoff (tests shorten it). */
  eventBackoffMs?: { min: number; max: number };
  /** Where the host key pgop makes for each machine is pinned before its first boot (the
   *  store in production). Needed to create machines. */
  hostKeys?: HostKeyPins;
}

export type MachineRef = NodeSpec | string;

/** What observeMachines and describeMachine report beyond the contract. */
export interface DomainStatus {
  exists: boolean;
  state: DomainStateName;
}

const silent: DriverLog = { info() {}, warn() {} };

/** How long a look at domains may wait on libvirtd (it answers in milliseconds; a domain job in
 *  the way times out inside libvirtd after 30 s), and how long any other call may. */
const LIBVIRT_LOOK_MS = 35_000;
const LIBVIRT_CALL_MS = 180_000;

/** One per process: the binding's calls share libuv's worker threads with everything else. */
const bindingGate = new BindingGate();

export class LibvirtProvider implements ProviderDriver {
  readonly stateDir: string;
  private readonly log: DriverLog;
  private readonly virsh: Virsh;
  private readonly watchEvents: boolean;
  private readonly serialLogDir: string | null;
  private readonly backoff: { min: number; max: number };
  private readonly conns = new Map<string, Promise<BindingConnection>>();
  private readonly watchers = new Map<string, EventWatcher>();
  private readonly listeners = new Set<(e: LibvirtEvent) => void>();
  /** Machine operations of one cluster (key: its name), or on one hypervisor's shared pool and
   *  network (key: uri:<uri>), run one at a time in this process. */
  private readonly serial = createKeyedQueue();
  private readonly domainTypes = new Map<string, Promise<{ type: DomainType; why: string }>>();
  /** domain name per uri -> cluster/node, for labelling events */
  private readonly known = new Map<string, { cluster: string; node: string }>();
  /** last lifecycle event per uri|domain, for observation details */
  private readonly lastEvent = new Map<string, LibvirtEvent>();
  private closed = false;
  private advised = false;
  private readonly warnedClosed = new Set<string>();
  private readonly hostKeys: HostKeyPins | undefined;
  private readonly resources: HypervisorResources;

  constructor(opts: LibvirtProviderOptions = {}) {
    this.hostKeys = opts.hostKeys;
    this.stateDir = opts.stateDir ?? process.env.PGOP_LIBVIRT_STATE ?? DEFAULT_STATE_DIR;
    this.log = opts.log ?? silent;
    this.virsh = opts.virsh ?? new Virsh();
    this.watchEvents = opts.watchEvents ?? true;
    this.serialLogDir = opts.serialLogDir === undefined ? '/var/log/libvirt/qemu' : opts.serialLogDir;
    this.backoff = opts.eventBackoffMs ?? { min: 250, max: 30_000 };
    this.resources = new HypervisorResources(this.virsh, this.stateDir, this.log);
  }

  // ---------------------------------------------------------------- public helpers

  /** Names, addresses and paths of one machine (a spec node or the pool host). */
  describeMachine(
    spec: ClusterSpec,
    node: MachineRef,
  ): MachinePlan & { keyPath: string; poolPath: string; network: string } {
    const m = machinePlan(spec, node);
    const p = libvirtProvider(spec);
    return { ...m, keyPath: this.keyPath(spec), poolPath: p.pool.path, network: p.network.name };
  }

  /** How pgop's SSH layer reaches a machine: root with the cluster's operator key (the SSH
   *  drivers run their commands as root, as on lab hosts; the spec's sshUser gets the same key,
   *  for people, without sudo). The host key is the one pgop made and pinned before the boot. */
  hostRef(spec: ClusterSpec, node: MachineRef): HostRef {
    const m = machinePlan(spec, node);
    return { id: m.id, address: m.address, port: 22, user: 'root', privateKeyPath: this.keyPath(spec) };
  }

  keyPath(spec: ClusterSpec): string {
    return join(this.stateDir, spec.name, 'operator_ed25519');
  }

  /** The machine's host key pair on the hypervisor (beside the operator key; 0600 in a 0700
   *  directory): made before its first boot, handed over by cloud-init, removed with it. */
  hostKeyPath(spec: ClusterSpec, node: MachineRef): string {
    return this.hostKeyFile(machinePlan(spec, node));
  }

  private hostKeyFile(m: MachinePlan): string {
    return join(this.stateDir, m.cluster, 'hostkeys', `${m.name}_ed25519`);
  }

  /** Where a guest's sshd key lives and how sshd re-reads it (`pgop host-key rotate`). */
  hostKeyTarget(
    spec: ClusterSpec,
    node: MachineRef,
  ): { nodePath: string; statePath: string; reload: string[] } {
    const reload =
      'if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q ssh; ' +
      'then systemctl reload ssh; ' +
      'elif command -v systemctl >/dev/null 2>&1 && systemctl is-active -q sshd; ' +
      'then systemctl reload sshd; ' +
      'else kill -HUP "$(cat /run/sshd.pid)"; fi';
    return { nodePath: HOST_KEY_PATH, statePath: this.hostKeyPath(spec, node), reload: ['sh', '-c', reload] };
  }

  /** Subscribe to domain events of every hypervisor this provider has touched (and those
   *  started with watch()). Returns the unsubscribe function. Listener errors are swallowed.
   *
   *  Event shape (events.ts LibvirtEvent): {uri, type, domain, lifecycle?: {kind, detail}, text,
   *  at, cluster?, node?}. Typical use by the reconcile loop: wake up at once when
   *  `type === 'lifecycle' && ['stopped','crashed','shutdown','suspended'].includes(kind)` for a
   *  domain with cluster/node set, and re-observe everything on `type === 'resync'` (the watcher
   *  (re)started: events may have been missed). */
  onEvent(cb: (e: LibvirtEvent) => void): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  /** Start the event watchers of every hypervisor the cluster uses (idempotent). */
  watch(spec: ClusterSpec): void {
    for (const uri of clusterUris(spec)) this.ensureWatcher(uri, true);
    for (const m of allMachines(spec)) this.remember(m);
  }

  /** The running event watcher of a URI (tests). */
  watcher(uri: string): EventWatcher | undefined {
    return this.watchers.get(uri);
  }

  /** The domain type used for new domains on a URI (cached per URI). */
  domainType(
    uri: string,
    requested: LibvirtProviderSpec['domainType'],
  ): Promise<{ type: DomainType; why: string }> {
    const key = `${uri}|${requested}`;
    let p = this.domainTypes.get(key);
    if (!p) {
      p = resolveDomainType(uri, requested, async () => {
        const r = await this.virsh.run(
          uri,
          ['domcapabilities', '--virttype', 'kvm', '--arch', 'x86_64'],
          'read kvm capabilities',
        );
        return r.stdout.includes('<domain>kvm</domain>');
      });
      this.domainTypes.set(key, p);
      p.then(
        (r) => this.log.info({ uri, domainType: r.type, why: r.why }, 'libvirt domain type'),
        () => this.domainTypes.delete(key),
      );
    }
    return p;
  }

  // ---------------------------------------------------------------- observe

  async observeMachines(spec: ClusterSpec): Promise<Record<string, MachineObservation>> {
    const out: Record<string, MachineObservation> = {};
    await Promise.all(
      spec.nodes.map(async (n) => {
        out[n.name] = await this.observeOne(machinePlan(spec, n));
      }),
    );
    return out;
  }

  /** Every node domain pgop made for the cluster on its hypervisors (found by pgop's ownership
   *  metadata, spec'd or not; the pool host excluded), with the address of its DHCP reservation
   *  and the hypervisor it lives on: how a node that left the spec is found for its removal. */
  async listMachines(
    spec: ClusterSpec,
  ): Promise<Record<string, MachineObservation & { address?: string; hypervisor?: string }>> {
    const p = libvirtProvider(spec);
    const out: Record<string, MachineObservation & { address?: string; hypervisor?: string }> = {};
    for (const uri of clusterUris(spec)) {
      const domains = (await this.clusterDomains(uri, spec.name)).filter(
        (d) => d.node !== POOL_HOST && !poolMachines(spec).some((h) => h.name === d.node),
      );
      if (domains.length === 0) continue;
      const net = await this.resources.networkState(uri, p.network.name, `read network ${p.network.name}`);
      const hosts = net ? networkFacts(net.xml).hosts : [];
      for (const d of domains) {
        const st = await this.withHv(
          uri,
          `observe domain ${d.domain}`,
          async (h) => {
            const dom = await lookup(h, d.domain);
            return dom ? stateName((await dom.getInfo()).state) : null;
          },
          LIBVIRT_LOOK_MS,
        );
        if (st === null) continue; // undefined meanwhile
        const address = hosts.find((x) => x.name === d.domain)?.ip;
        const running = st === 'running' || st === 'blocked' || st === 'shutdown';
        out[d.node] = {
          state: running ? 'running' : 'stopped',
          detail: `domain ${d.domain} ${running ? 'running' : st} on ${uri}`,
          ...(address ? { address } : {}),
          ...(uri !== p.uri ? { hypervisor: uri } : {}),
        };
      }
    }
    return out;
  }

  /** The pool host's machine (not part of observeMachines, which covers spec nodes). */
  async observePoolHost(spec: ClusterSpec, host: string = POOL_HOST): Promise<MachineObservation> {
    return this.observeOne(machinePlan(spec, host));
  }

  /** Raw libvirt state of one machine's domain. */
  async domainStatus(spec: ClusterSpec, node: MachineRef): Promise<DomainStatus> {
    const m = machinePlan(spec, node);
    return this.withHv(
      m.uri,
      `observe domain ${m.domain}`,
      async (h) => {
        const dom = await lookup(h, m.domain);
        if (!dom) return { exists: false, state: 'missing' };
        return { exists: true, state: stateName((await dom.getInfo()).state) };
      },
      LIBVIRT_LOOK_MS,
    );
  }

  private async observeOne(m: MachinePlan): Promise<MachineObservation> {
    this.remember(m);
    this.ensureWatcher(m.uri);
    const st = await this.withHv(
      m.uri,
      `observe domain ${m.domain}`,
      async (h) => {
        const dom = await lookup(h, m.domain);
        if (!dom) return null;
        return stateName((await dom.getInfo()).state);
      },
      LIBVIRT_LOOK_MS,
    );
    const ev = this.lastEvent.get(`${m.uri}|${m.domain}`);
    const why = ev?.lifecycle ? ` (last event: ${ev.type} ${ev.text})` : '';
    if (st === null) return { state: 'missing', detail: `domain ${m.domain} is not defined on ${m.uri}` };
    if (st === 'running' || st === 'blocked' || st === 'shutdown') {
      return {
        state: 'running',
        detail: `domain ${m.domain} ${st === 'shutdown' ? 'shutting down' : 'running'}`,
      };
    }
    return { state: 'stopped', detail: `domain ${m.domain} ${st === 'shutoff' ? 'shut off' : st}${why}` };
  }

  // ---------------------------------------------------------------- ensure

  async ensureMachine(spec: ClusterSpec, node: NodeSpec): Promise<void> {
    const m = machinePlan(spec, node);
    await this.serial(spec.name, async () => {
      await this.ensureOne(spec, m);
      // The pool hosts come with the first node (the contract has no call of its own for them).
      for (const h of poolMachines(spec)) await this.ensureOne(spec, machinePlan(spec, h.name));
    });
  }

  /** Create and start a pgpool host (every one when no name is given). Idempotent. */
  async ensurePoolHost(spec: ClusterSpec, host?: string): Promise<void> {
    const names = poolMachineNames(spec, host);
    await this.serial(spec.name, async () => {
      for (const n of names) await this.ensureOne(spec, machinePlan(spec, n));
    });
  }

  /** Start a defined, stopped machine (nothing else: fault injection's `start`). */
  async startMachine(spec: ClusterSpec, node: MachineRef): Promise<void> {
    const m = machinePlan(spec, node);
    await this.withHv(m.uri, `start ${m.id}`, async (h) => {
      const dom = await lookup(h, m.domain);
      if (!dom) throw terminal(`cannot start ${m.id}: domain ${m.domain} is not defined`);
      await this.startDomain(dom, m);
    });
  }

  private async ensureOne(spec: ClusterSpec, m: MachinePlan): Promise<void> {
    const p = libvirtProvider(spec);
    this.remember(m);
    this.ensureWatcher(m.uri);
    this.adviseOnce(m.uri);
    const net = parseCidr(p.network.cidr);
    if (!inside(m.address, net))
      throw terminal(`cannot place ${m.id}: address ${m.address} is not inside ${p.network.cidr}`);
    const publicKey = (await ensureOperatorKey(this.keyPath(spec), spec.name)).publicLine;
    // Shared per hypervisor: the pool and the network (one at a time per URI in this process).
    const shared = () =>
      this.serial(`uri:${m.uri}`, async () => {
        await this.resources.ensurePool(m.uri, p.pool);
        await this.resources.ensureNetwork(spec, m.uri, [m]);
        this.openForQemu(m.uri, [p.pool.path, p.baseImage]);
      });
    const existing = await this.withHv(
      m.uri,
      `look up ${m.domain}`,
      (h) => lookup(h, m.domain),
      LIBVIRT_LOOK_MS,
    );
    if (existing) {
      await this.withHv(m.uri, `check ${m.domain}`, () => this.checkOwned(existing, m));
      const st = await this.withHv(
        m.uri,
        `observe ${m.domain}`,
        async () => stateName((await existing.getInfo()).state),
        LIBVIRT_LOOK_MS,
      );
      if (st === 'running' || st === 'blocked' || st === 'shutdown') return;
      await shared(); // its disks and network must be there to start it
      await this.withHv(m.uri, `start ${m.id}`, () => this.startDomain(existing, m));
      return;
    }
    await shared();
    // Not defined yet (first time, or a crash before the define): volumes, then define + start.
    // Its host key is made (once; a machine deleted lost its key with it) and pinned first.
    const hostKey = await ensurePinnedHostKey(this.hostKeyFile(m), m.id, this.hostKeys, 'libvirt');
    const poolPath = p.pool.path;
    const vols = await this.resources.volumeNames(m.uri, p.pool.name);
    await this.resources.ensureRootVolume(m, p, vols);
    if (m.volumes.data && !vols.has(m.volumes.data)) await this.resources.ensureDataVolume(m, p);
    await this.resources.ensureSeedVolume(spec, m, p, publicKey, hostKey, vols);
    const { type } = await this.domainType(m.uri, p.domainType);
    const xml = renderDomainXml({
      name: m.domain,
      type,
      cluster: m.cluster,
      node: m.name,
      vcpus: m.vcpus,
      memoryMiB: m.memoryMiB,
      rootDisk: join(poolPath, m.volumes.root),
      dataDisk: m.volumes.data ? join(poolPath, m.volumes.data) : null,
      seedIso: join(poolPath, m.volumes.seed),
      mac: m.mac,
      network: p.network.name,
      ...(this.serialLogDir && !parseUri(m.uri).test
        ? { serialLog: join(this.serialLogDir, `${m.domain}-serial.log`) }
        : {}),
    });
    const t0 = performance.now();
    await this.withHv(m.uri, `define ${m.domain}`, async (h) => {
      const dom = await h.domainDefineXML(xml);
      const defineMs = Math.round(performance.now() - t0);
      await this.startDomain(dom, m);
      this.log.info(
        {
          id: m.id,
          domain: m.domain,
          uri: m.uri,
          type,
          defineMs,
          startMs: Math.round(performance.now() - t0) - defineMs,
        },
        'libvirt domain defined and started',
      );
    });
  }

  private async startDomain(dom: Domain, m: MachinePlan): Promise<void> {
    const st = stateName((await dom.getInfo()).state);
    try {
      switch (st) {
        case 'running':
        case 'blocked':
        case 'shutdown':
          return;
        case 'paused':
          await this.resumeOrReset(dom, m);
          return;
        case 'pmsuspended':
          await this.virsh.run(m.uri, ['dompmwakeup', m.domain], `wake ${m.id}`);
          return;
        default:
          await dom.create();
      }
    } catch (err) {
      // Started meanwhile (another caller, autostart): fine.
      if (/already running|domain is already active/i.test(messageOf(err))) return;
      throw err;
    }
  }

  /** A guest that qemu stopped on an internal error (a KVM emulation failure, say) cannot be
   *  resumed, only reset: it is powered off and booted again, as a crashed machine would be. */
  private async resumeOrReset(dom: Domain, m: MachinePlan): Promise<void> {
    try {
      await dom.resume();
    } catch (err) {
      if (!/resetting the virtual machine is required/i.test(messageOf(err))) throw err;
      this.log.warn(
        { id: m.id, domain: m.domain, error: messageOf(err) },
        'guest stopped by an internal error; resetting it',
      );
      await destroy(dom);
      await dom.create();
    }
  }

  private async checkOwned(dom: Domain, m: MachinePlan): Promise<void> {
    const xml = await dom.getXMLDesc();
    const meta = pgopMetadata(xml, 'machine');
    if (!meta || meta.cluster !== m.cluster || meta.node !== m.name) {
      throw terminal(
        `cannot use domain ${m.domain} on ${m.uri} for ${m.id}: ` +
          `it exists but was not made by pgop for this node (rename the cluster or remove the domain)`,
      );
    }
  }

  // ---------------------------------------------------------------- fence / delete

  async fenceMachine(spec: ClusterSpec, node: MachineRef): Promise<void> {
    const m = machinePlan(spec, node);
    const t0 = performance.now();
    const fenced = await this.withHv(
      m.uri,
      `fence ${m.id}`,
      async (h) => {
        const dom = await lookup(h, m.domain);
        if (!dom) return false;
        return destroy(dom);
      },
      LIBVIRT_LOOK_MS,
    );
    if (fenced)
      this.log.info(
        { id: m.id, domain: m.domain, ms: Math.round(performance.now() - t0) },
        'libvirt domain destroyed (fenced)',
      );
  }

  async deleteMachine(spec: ClusterSpec, node: MachineRef): Promise<void> {
    const m = machinePlan(spec, node);
    await this.serial(spec.name, () => this.deleteOne(spec, m));
  }

  private async deleteOne(spec: ClusterSpec, m: MachinePlan): Promise<void> {
    const p = libvirtProvider(spec);
    await this.withHv(m.uri, `delete ${m.id}`, async (h) => {
      const dom = await lookup(h, m.domain);
      if (!dom) return;
      await this.checkOwned(dom, m);
      await destroy(dom);
      try {
        await dom.undefine();
      } catch (err) {
        if (NOT_FOUND.test(messageOf(err))) return;
        // managed save images, snapshot metadata or nvram block the plain undefine
        await this.virsh.maybe(
          m.uri,
          ['undefine', m.domain, '--managed-save', '--snapshots-metadata', '--nvram'],
          `undefine ${m.domain}`,
        );
      }
    });
    const have = (await this.resources.volumeNamesIfPool(m.uri, p.pool.name)) ?? new Set<string>();
    for (const vol of [m.volumes.root, m.volumes.data, m.volumes.seed])
      if (vol && have.has(vol)) await this.resources.deleteVolume(m.uri, p.pool.name, vol);
    await this.serial(`uri:${m.uri}`, () => this.resources.removeReservation(m.uri, p.network.name, m));
    // a machine made again gets a new host key
    await removeKeyPair(this.hostKeyFile(m));
    this.log.info({ id: m.id, domain: m.domain, uri: m.uri }, 'libvirt machine deleted');
  }

  async deleteClusterResources(spec: ClusterSpec): Promise<void> {
    const p = libvirtProvider(spec);
    await this.serial(spec.name, async () => {
      // The pool host, every node of the spec, and any other domain pgop made for this cluster.
      const machines = allMachines(spec);
      for (const m of machines) await this.deleteOne(spec, m);
      for (const uri of clusterUris(spec)) {
        // Domains of nodes no longer in the spec (found by their pgop metadata).
        for (const d of await this.clusterDomains(uri, spec.name)) {
          if (machines.some((m) => m.uri === uri && m.name === d.node)) continue;
          await this.withHv(uri, `delete ${spec.name}/${d.node}`, async (h) => {
            const dom = await lookup(h, d.domain);
            if (!dom) return;
            await destroy(dom);
            try {
              await dom.undefine();
            } catch {
              await this.virsh.maybe(
                uri,
                ['undefine', d.domain, '--managed-save', '--snapshots-metadata', '--nvram'],
                `undefine ${d.domain}`,
              );
            }
          });
          if (await this.virsh.maybe(uri, ['pool-info', p.pool.name], `read pool ${p.pool.name}`)) {
            const v = volumeNames(spec.name, d.node);
            for (const vol of [v.root, v.data, v.seed])
              await this.resources.deleteVolume(uri, p.pool.name, vol);
          }
          const orphan = {
            ...machinePlan(spec, spec.nodes[0]!),
            name: d.node,
            id: `${spec.name}/${d.node}`,
            uri,
            domain: d.domain,
            mac: macFor(spec.name, d.node),
            dhcpName: d.domain,
          };
          await this.serial(`uri:${uri}`, () =>
            this.resources.removeReservation(uri, p.network.name, orphan),
          );
        }
        await this.serial(`uri:${uri}`, async () => {
          await this.resources.deleteNetworkIfUnused(uri, p.network.name);
          await this.resources.deletePoolIfOursAndEmpty(uri, p.pool.name);
        });
      }
      await rm(join(this.stateDir, spec.name), { recursive: true, force: true });
    });
  }

  /** Domains on uri whose pgop metadata names this cluster. */
  private async clusterDomains(uri: string, cluster: string): Promise<{ domain: string; node: string }[]> {
    return this.withHv(
      uri,
      `list the domains of ${cluster}`,
      async (h) => {
        const out: { domain: string; node: string }[] = [];
        for (const dom of await h.connectListAllDomains()) {
          const name = await dom.getName();
          if (!name.startsWith(`${cluster}-`)) continue;
          const meta = pgopMetadata(await dom.getXMLDesc(), 'machine');
          if (meta?.cluster === cluster && meta.node) out.push({ domain: name, node: meta.node });
        }
        return out;
      },
      LIBVIRT_LOOK_MS,
    );
  }

  // ---------------------------------------------------------------- faults

  /** Take the machine's NIC link down or up (virsh domif-setlink): a real network partition. */
  async setLink(spec: ClusterSpec, node: MachineRef, state: 'up' | 'down'): Promise<void> {
    const m = machinePlan(spec, node);
    await this.virsh.run(
      m.uri,
      ['domif-setlink', m.domain, m.mac, state],
      `${state === 'down' ? 'partition' : 'heal'} ${m.id}`,
    );
  }

  // ---------------------------------------------------------------- connections, events

  async close(): Promise<void> {
    this.closed = true;
    const ws = [...this.watchers.values()];
    this.watchers.clear();
    await Promise.allSettled(ws.map((w) => w.stop()));
    const cs = [...this.conns.values()];
    this.conns.clear();
    await Promise.allSettled(cs.map(async (c) => (await c).retire()));
    await this.virsh.close();
  }

  private remember(m: MachinePlan): void {
    this.known.set(`${m.uri}|${m.domain}`, { cluster: m.cluster, node: m.name });
  }

  private ensureWatcher(uri: string, force = false): void {
    if (this.closed || (!this.watchEvents && !force) || this.watchers.has(uri)) return;
    const w = new EventWatcher(
      uri,
      (e) => {
        const who = this.known.get(`${uri}|${e.domain}`);
        if (who) {
          e.cluster = who.cluster;
          e.node = who.node;
        }
        if (e.lifecycle) this.lastEvent.set(`${uri}|${e.domain}`, e);
        for (const l of this.listeners) {
          try {
            l(e);
          } catch {
            /* a listener's problem */
          }
        }
      },
      { log: this.log, minBackoffMs: this.backoff.min, maxBackoffMs: this.backoff.max },
    );
    this.watchers.set(uri, w);
  }

  private adviseOnce(uri: string): void {
    if (this.advised || parseUri(uri).host !== '' || parseUri(uri).test) return;
    this.advised = true;
    const advice = kvmPermissionAdvice();
    if (advice) this.log.warn({ uri }, advice);
  }

  private hv(uri: string): Promise<BindingConnection> {
    let p = this.conns.get(uri);
    if (!p) {
      p = (async () => {
        const { Hypervisor } = await loadLibvirtBinding();
        const h = new Hypervisor({ uri });
        await bindingGate.run(`connect to ${uri}`, LIBVIRT_LOOK_MS, () => h.connectOpen());
        return new BindingConnection(h, bindingGate, LIBVIRT_LOOK_MS);
      })();
      this.conns.set(uri, p);
      p.catch(() => {
        if (this.conns.get(uri) === p) this.conns.delete(uri);
      });
    }
    return p;
  }

  /** Run fn on the URI's connection; a connection found dead is retired and reopened once. */
  private async withHv<T>(
    uri: string,
    what: string,
    fn: (h: Hypervisor) => Promise<T>,
    timeoutMs = LIBVIRT_CALL_MS,
  ): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw transient(`cannot ${what}: the libvirt provider is closed`);
      const p = this.hv(uri);
      let conn: BindingConnection;
      try {
        conn = await p;
      } catch (err) {
        throw transient(`cannot ${what}: cannot connect to ${uri}: ${messageOf(err)}`, err);
      }
      try {
        const done = await conn.use(what, timeoutMs, fn);
        if (done) return done.value;
        // retired by another call meanwhile: a new connection
        if (this.conns.get(uri) === p) this.conns.delete(uri);
        if (attempt > 1) throw transient(`cannot ${what}: the connection to ${uri} keeps being lost`);
      } catch (err) {
        if (err instanceof PgopError) throw err;
        const msg = messageOf(err);
        const timedOut = err instanceof BindingTimeout;
        if (!timedOut && !CONNECTION_LOST.test(msg)) {
          const advice = storageAccessAdvice(msg);
          throw terminal(`cannot ${what}: ${msg}${advice ? ` (${advice})` : ''}`, err);
        }
        // lost, or libvirtd may be wedged on it: later calls get a new connection
        if (this.conns.get(uri) === p) this.conns.delete(uri);
        conn.retire();
        if (timedOut) throw transient(msg, err);
        if (attempt > 0) throw transient(`cannot ${what}: ${msg}`, err);
      }
    }
  }

  /** qemu (libvirt-qemu) must traverse every directory above the disks of a local hypervisor:
   *  pgop's own directories (under /var/lib/pgop, even one made 0700) are opened
   *  for traversal (never the secrets); others still closed are said once. */
  private openForQemu(uri: string, paths: string[]): void {
    const u = parseUri(uri);
    if (u.test || u.host !== '') return;
    for (const path of paths) {
      const closed = openPathForQemu(path);
      const key = `${path}|${closed.join(',')}`;
      if (closed.length > 0 && !this.warnedClosed.has(key)) {
        this.warnedClosed.add(key);
        this.log.warn(
          { uri, path, closed },
          `qemu may not reach ${path}: ${closed.join(', ')} cannot be traversed by others ` +
            `(chmod o+x, unless qemu runs as root)`,
        );
      }
    }
  }
}

export function createLibvirtProvider(opts: LibvirtProviderOptions = {}): LibvirtProvider {
  return new LibvirtProvider(opts);
}
