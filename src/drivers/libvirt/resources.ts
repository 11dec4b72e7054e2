// Storage pools, networks and volumes on a hypervisor, through `virsh -c URI` (the libvirt
// binding has no calls for them). Each operation is idempotent: what exists and matches is kept,
// a leftover of a half-done creation is completed or made again. LibvirtProvider decides when.

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { ClusterSpec, LibvirtProviderSpec } from '../../spec/types.js';
import type { DriverLog } from '../types.js';
import { messageOf, terminal, transient } from '../../errors.js';
import type { KeyPair } from '../ssh/keys.js';
import { assertLibvirtName, libvirtProvider, parseCidr, type MachinePlan } from './names.js';
import {
  dhcpHostXml,
  networkFacts,
  poolPathOf,
  renderNetworkXml,
  renderPoolXml,
  renderVolumeXml,
  volumeFacts,
  type DhcpHost,
} from './xml.js';
import { buildSeedIso, renderSeed } from './cloudinit.js';
import { Virsh, VirshError } from './virsh.js';
import { parseUri } from './accel.js';

const execFileP = promisify(execFile);
const GiB = 1024 ** 3;

export class HypervisorResources {
  constructor(
    private readonly virsh: Virsh,
    private readonly stateDir: string,
    private readonly log: DriverLog,
  ) {}

  markerPath(uri: string, kind: 'pool' | 'network', name: string): string {
    // The name becomes a file name under stateDir, written as root: only a libvirt name (no /,
    // no ..) will do, whatever a spec or the schema let through.
    assertLibvirtName(kind, name);
    const h = createHash('sha256').update(uri).digest('hex').slice(0, 12);
    return join(this.stateDir, 'owned', `${kind}-${h}-${name}`);
  }

  async ensurePool(uri: string, pool: LibvirtProviderSpec['pool']): Promise<void> {
    const what = `set up storage pool ${pool.name} on ${uri}`;
    const xml = (await this.virsh.maybe(uri, ['pool-dumpxml', pool.name], what))?.stdout ?? null;
    let active = false;
    if (xml === null) {
      // Remembered before the define: a crash in between leaves a marker for a pool that may
      // not exist, which only allows deleting a pool of that name when it is empty.
      const marker = this.markerPath(uri, 'pool', pool.name);
      await mkdir(dirname(marker), { recursive: true });
      // One line each: a newline in either would forge the marker's content.
      if (/[\u0000-\u001f\u007f]/u.test(uri + pool.path))
        throw terminal(`cannot ${what}: the URI or the pool path contains a control character`);
      await writeFile(marker, `${uri}\n${pool.path}\n`);
      try {
        await this.virsh.withXml(uri, renderPoolXml(pool.name, pool.path), ['pool-define', '{}'], what);
      } catch (err) {
        if (!/already exists/i.test(messageOf(err))) throw err;
      }
      await this.virsh.run(uri, ['pool-autostart', pool.name], what).catch(() => undefined);
    } else {
      const have = poolPathOf(xml);
      if (have !== null && have.replace(/\/+$/, '') !== pool.path.replace(/\/+$/, '')) {
        throw terminal(`cannot ${what}: the pool exists with path ${have}, not ${pool.path}`);
      }
      active = /^State:\s+running/m.test((await this.virsh.run(uri, ['pool-info', pool.name], what)).stdout);
    }
    if (!active) {
      // mkdir; fails harmlessly when it exists
      await this.virsh.run(uri, ['pool-build', pool.name], what).catch(() => undefined);
      try {
        await this.virsh.run(uri, ['pool-start', pool.name], what);
      } catch (err) {
        if (!/already active/i.test(messageOf(err))) throw err;
      }
    }
  }

  async networkState(
    uri: string,
    name: string,
    what: string,
  ): Promise<{ xml: string; active: boolean } | null> {
    const dump = await this.virsh.maybe(uri, ['net-dumpxml', name], what);
    if (!dump) return null;
    const info = await this.virsh.run(uri, ['net-info', name], what);
    return { xml: dump.stdout, active: /^Active:\s+yes/m.test(info.stdout) };
  }

  /** The network exists, is the spec's, is active and holds a reservation for each machine. */
  async ensureNetwork(spec: ClusterSpec, uri: string, machines: MachinePlan[]): Promise<void> {
    const p = libvirtProvider(spec);
    const name = p.network.name;
    const what = `set up network ${name} on ${uri}`;
    const want: DhcpHost[] = machines.map((m) => ({ mac: m.mac, name: m.dhcpName, ip: m.address }));
    const prefixLen = parseCidr(p.network.cidr).prefixLen;
    let st = await this.networkState(uri, name, what);
    if (!st) {
      const xml = renderNetworkXml({
        name,
        cluster: spec.name,
        gateway: p.network.gateway,
        prefixLen,
        ...(p.network.bridge ? { bridge: p.network.bridge } : {}),
        hosts: want,
      });
      let defined = true;
      try {
        await this.virsh.withXml(uri, xml, ['net-define', '{}'], what);
      } catch (err) {
        if (!/already exists/i.test(messageOf(err))) throw err;
        defined = false; // someone else's define won: read what it holds
      }
      if (defined) await this.virsh.run(uri, ['net-autostart', name], what).catch(() => undefined);
      st = defined ? { xml, active: false } : await this.networkState(uri, name, what);
      if (!st) throw transient(`cannot ${what}: it vanished right after being defined`);
    }
    const facts = networkFacts(st.xml);
    if (facts.gateway !== p.network.gateway || facts.prefixLen !== prefixLen) {
      throw terminal(
        `cannot ${what}: it exists with address ${facts.gateway}/${facts.prefixLen}, ` +
          `not the spec's ${p.network.gateway}/${prefixLen} (name another network)`,
      );
    }
    if (!st.active) {
      try {
        await this.virsh.run(uri, ['net-start', name], what);
      } catch (err) {
        if (!/already active/i.test(messageOf(err))) throw err;
      }
      st = { ...st, active: true };
    }
    const flags = st.active ? ['--live', '--config'] : ['--config'];
    for (const h of want) {
      const same = facts.hosts.find((x) => x.mac === h.mac && x.ip === h.ip && x.name === h.name);
      if (same) continue;
      for (const x of facts.hosts.filter((x) => x.mac === h.mac || x.ip === h.ip || x.name === h.name)) {
        // An entry of this machine with old values is replaced; anyone else's address is not taken.
        if (x.name !== h.name && x.mac !== h.mac) {
          throw terminal(
            `cannot reserve ${h.ip} for ${spec.name}/${h.name} on network ${name}: ` +
              `it is reserved for ${x.name || x.mac}`,
          );
        }
        await this.updateDhcpHost(uri, name, 'delete', x, flags, what);
      }
      try {
        await this.updateDhcpHost(uri, name, 'add', h, flags, what);
      } catch (err) {
        if (!/already exists|there is an existing dhcp host entry/i.test(messageOf(err))) throw err;
      }
    }
  }

  /** Add or delete one DHCP reservation (flags: --config, and --live on an active network). */
  private async updateDhcpHost(
    uri: string,
    network: string,
    op: 'add' | 'delete',
    host: DhcpHost,
    flags: string[],
    what: string,
  ): Promise<void> {
    await this.virsh.run(uri, ['net-update', network, op, 'ip-dhcp-host', dhcpHostXml(host), ...flags], what);
  }

  async removeReservation(uri: string, network: string, m: MachinePlan): Promise<void> {
    const what = `remove the reservation of ${m.id} from network ${network}`;
    const st = await this.networkState(uri, network, what);
    if (!st) return;
    const flags = st.active ? ['--live', '--config'] : ['--config'];
    for (const x of networkFacts(st.xml).hosts.filter((x) => x.mac === m.mac || x.name === m.dhcpName)) {
      try {
        await this.updateDhcpHost(uri, network, 'delete', x, flags, what);
      } catch (err) {
        if (
          !(err instanceof VirshError && err.notFound) &&
          !/couldn't locate a matching dhcp host/i.test(messageOf(err))
        )
          throw err;
      }
    }
  }

  /** Names of the volumes in a pool (one virsh call). */
  async volumeNames(uri: string, pool: string): Promise<Set<string>> {
    const out = (await this.virsh.run(uri, ['vol-list', pool], `list the volumes of pool ${pool}`)).stdout;
    return new Set(
      out
        .split('\n')
        .map((l) => l.trim().split(/\s+/)[0] ?? '')
        .filter(Boolean),
    );
  }

  /** Like volumeNames, null when the pool does not exist; an inactive pool is started first. */
  async volumeNamesIfPool(uri: string, pool: string): Promise<Set<string> | null> {
    try {
      return await this.volumeNames(uri, pool);
    } catch (err) {
      if (err instanceof VirshError && err.notFound) return null;
      if (!/not active/i.test(messageOf(err))) throw err;
      await this.virsh.run(uri, ['pool-start', pool], `start pool ${pool}`);
      return this.volumeNames(uri, pool);
    }
  }

  async volume(uri: string, pool: string, vol: string) {
    const r = await this.virsh.maybe(uri, ['vol-dumpxml', '--pool', pool, vol], `read volume ${vol}`);
    return r ? volumeFacts(r.stdout) : null;
  }

  async createVolume(uri: string, pool: string, xml: string, vol: string): Promise<void> {
    try {
      await this.virsh.withXml(uri, xml, ['vol-create', pool, '{}'], `create volume ${vol} in pool ${pool}`);
    } catch (err) {
      if (!/already exists|already in use/i.test(messageOf(err))) throw err;
    }
  }

  async deleteVolume(uri: string, pool: string, vol: string): Promise<void> {
    await this.virsh.maybe(
      uri,
      ['vol-delete', '--pool', pool, vol],
      `delete volume ${vol} from pool ${pool}`,
    );
  }

  /** qcow2 overlay on the base image, sized rootDiskGiB (the guest's growpart fills it). A
   *  leftover that does not match (other base, other size) is made again: no domain uses it. */
  async ensureRootVolume(m: MachinePlan, p: LibvirtProviderSpec, vols: Set<string>): Promise<void> {
    const vol = m.volumes.root;
    const cap = m.rootDiskGiB * GiB;
    const have = vols.has(vol) ? await this.volume(m.uri, p.pool.name, vol) : null;
    if (have && have.backingPath === p.baseImage && have.capacityBytes === cap && have.format === 'qcow2')
      return;
    if (have) await this.deleteVolume(m.uri, p.pool.name, vol);
    const xml = renderVolumeXml({
      name: vol,
      capacityBytes: cap,
      format: 'qcow2',
      backing: { path: p.baseImage, format: await this.baseFormat(m.uri, p.baseImage) },
    });
    await this.createVolume(m.uri, p.pool.name, xml, vol);
  }

  /** Base image format: qcow2 unless qemu-img (local hypervisors) says raw. */
  async baseFormat(uri: string, path: string): Promise<'qcow2' | 'raw'> {
    const info = parseUri(uri);
    if (info.test || info.host !== '') return 'qcow2';
    try {
      const { stdout } = await execFileP('qemu-img', ['info', '--output=json', '-U', path], {
        timeout: 30_000,
      });
      return (JSON.parse(stdout) as { format?: string }).format === 'raw' ? 'raw' : 'qcow2';
    } catch (err) {
      if (!existsSync(path))
        throw terminal(`cannot create the root disk: base image ${path} does not exist`, err);
      return 'qcow2';
    }
  }

  /** The data disk is never made again once it exists: it holds the node's data. */
  async ensureDataVolume(m: MachinePlan, p: LibvirtProviderSpec): Promise<void> {
    const vol = m.volumes.data!;
    await this.createVolume(
      m.uri,
      p.pool.name,
      renderVolumeXml({ name: vol, capacityBytes: m.dataDiskGiB * GiB, format: 'qcow2' }),
      vol,
    );
  }

  /** The seed ISO is (re)written on every creation attempt (the domain is not defined yet, so
   *  nothing has read it): a crash between create and upload cannot leave an empty seed. The
   *  test driver keeps no volume content (no vol-upload): there the volume alone is made. */
  async ensureSeedVolume(
    spec: ClusterSpec,
    m: MachinePlan,
    p: LibvirtProviderSpec,
    publicKey: string,
    hostKey: KeyPair,
    vols: Set<string>,
  ): Promise<void> {
    const vol = m.volumes.seed;
    const prefixLen = parseCidr(p.network.cidr).prefixLen;
    const iso = await buildSeedIso(
      renderSeed({
        cluster: m.cluster,
        name: m.name,
        hostname: m.name === 'pool' ? `${m.cluster}-pool` : m.name,
        osFamily: p.osFamily,
        sshUser: p.sshUser,
        publicKey,
        hostKey,
        mac: m.mac,
        address: m.address,
        prefixLen,
        gateway: p.network.gateway,
        dataDisk: m.volumes.data ? p.dataDisk : null,
      }),
    );
    const have = vols.has(vol) ? await this.volume(m.uri, p.pool.name, vol) : null;
    if (have && have.capacityBytes !== iso.length) await this.deleteVolume(m.uri, p.pool.name, vol);
    if (!have || have.capacityBytes !== iso.length) {
      await this.createVolume(
        m.uri,
        p.pool.name,
        renderVolumeXml({ name: vol, capacityBytes: iso.length, format: 'raw' }),
        vol,
      );
    }
    if (parseUri(m.uri).test) return;
    await this.virsh.upload(m.uri, p.pool.name, vol, iso, `write the cloud-init seed of ${m.id}`);
  }

  async deleteNetworkIfUnused(uri: string, name: string): Promise<void> {
    const what = `delete network ${name} on ${uri}`;
    const st = await this.networkState(uri, name, what);
    if (!st) return;
    const facts = networkFacts(st.xml);
    if (!facts.owner || facts.hosts.length > 0) return; // not ours, or still reserved for someone
    if (st.active) await this.virsh.maybe(uri, ['net-destroy', name], what);
    await this.virsh.maybe(uri, ['net-undefine', name], what);
    this.log.info({ uri, network: name }, 'libvirt network deleted');
  }

  async deletePoolIfOursAndEmpty(uri: string, name: string): Promise<void> {
    const marker = this.markerPath(uri, 'pool', name);
    if (!existsSync(marker)) return;
    const what = `delete storage pool ${name} on ${uri}`;
    const info = await this.virsh.maybe(uri, ['pool-info', name], what);
    if (info) {
      const active = /^State:\s+running/m.test(info.stdout);
      if (active) {
        await this.virsh.run(uri, ['pool-refresh', name], what).catch(() => undefined);
        const vols = (await this.virsh.run(uri, ['vol-list', name], what)).stdout.trim();
        if (vols.length > 0) return; // someone else's volumes (or the base image) live there
        await this.virsh.maybe(uri, ['pool-destroy', name], what);
      }
      // rmdir; kept when not empty
      await this.virsh.maybe(uri, ['pool-delete', name], what).catch(() => undefined);
      await this.virsh.maybe(uri, ['pool-undefine', name], what);
      this.log.info({ uri, pool: name }, 'libvirt storage pool deleted');
    }
    await rm(marker, { force: true });
  }
}
