// libvirt XML documents pgop writes (pure renderers), and the few facts it reads back from
// libvirt's own dumpxml output. libvirt formats its output canonically (one element per line,
// single-quoted attributes), so reading a handful of attributes needs no XML library.

import { terminal } from '../../errors.js';
import { PGOP_XMLNS } from './names.js';

export type DomainType = 'kvm' | 'qemu';

export interface DomainXmlInput {
  name: string;
  type: DomainType;
  cluster: string;
  node: string;
  vcpus: number;
  memoryMiB: number;
  /** absolute paths on the hypervisor */
  rootDisk: string;
  dataDisk: string | null;
  seedIso: string;
  mac: string;
  network: string;
  /** hypervisor-side file the serial console is copied to (virtlogd), for boot diagnostics */
  serialLog?: string;
}

/** Escape text for an XML attribute (either quote) or element. Characters XML 1.0 cannot carry
 *  at all (NUL and the other C0 controls but tab, newline and CR) are refused, not dropped. */
export function xmlEscape(s: string): string {
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/u.test(s))
    throw terminal(`cannot write ${JSON.stringify(s)} into libvirt XML: it contains a control character`);
  // Tab, newline and CR as references: an attribute value would turn them into spaces.
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;')
    .replace(/\t/g, '&#9;')
    .replace(/\n/g, '&#10;')
    .replace(/\r/g, '&#13;');
}

const a = xmlEscape;

/** The domain of one node: BIOS boot from the root overlay (virtio vda), the data disk (vdb,
 *  serial pgop-data so the guest finds it as /dev/disk/by-id/virtio-pgop-data), the seed ISO as
 *  an IDE cdrom (NoCloud finds it by its volume id), one virtio NIC with the derived MAC on the
 *  cluster network, a serial console (the kernel's ttyS0), the guest agent channel and a virtio
 *  RNG (TCG guests otherwise wait for entropy at boot). on_crash destroys: a crashed guest is
 *  fenced, never restarted in place. */
export function renderDomainXml(d: DomainXmlInput): string {
  const cpu =
    d.type === 'kvm'
      ? `  <cpu mode='host-passthrough' check='none' migratable='off'/>`
      : `  <cpu mode='maximum' check='none'/>`;
  const disks = [
    `    <disk type='file' device='disk'>`,
    `      <driver name='qemu' type='qcow2' discard='unmap'/>`,
    `      <source file='${a(d.rootDisk)}'/>`,
    `      <target dev='vda' bus='virtio'/>`,
    `    </disk>`,
  ];
  if (d.dataDisk !== null) {
    disks.push(
      `    <disk type='file' device='disk'>`,
      `      <driver name='qemu' type='qcow2' discard='unmap'/>`,
      `      <source file='${a(d.dataDisk)}'/>`,
      `      <target dev='vdb' bus='virtio'/>`,
      `      <serial>pgop-data</serial>`,
      `    </disk>`,
    );
  }
  disks.push(
    `    <disk type='file' device='cdrom'>`,
    `      <driver name='qemu' type='raw'/>`,
    `      <source file='${a(d.seedIso)}'/>`,
    `      <target dev='hdc' bus='ide'/>`,
    `      <readonly/>`,
    `    </disk>`,
  );
  const serialLog = d.serialLog ? `\n      <log file='${a(d.serialLog)}' append='on'/>` : '';
  return [
    `<domain type='${d.type}'>`,
    `  <name>${a(d.name)}</name>`,
    `  <title>pgop ${a(d.cluster)}/${a(d.node)}</title>`,
    `  <metadata>`,
    `    <pgop:machine xmlns:pgop='${PGOP_XMLNS}' cluster='${a(d.cluster)}' node='${a(d.node)}'/>`,
    `  </metadata>`,
    `  <memory unit='MiB'>${d.memoryMiB}</memory>`,
    `  <currentMemory unit='MiB'>${d.memoryMiB}</currentMemory>`,
    `  <vcpu placement='static'>${d.vcpus}</vcpu>`,
    `  <os>`,
    `    <type arch='x86_64' machine='pc'>hvm</type>`,
    `    <boot dev='hd'/>`,
    `  </os>`,
    `  <features>`,
    `    <acpi/>`,
    `    <apic/>`,
    `  </features>`,
    cpu,
    `  <clock offset='utc'/>`,
    `  <on_poweroff>destroy</on_poweroff>`,
    `  <on_reboot>restart</on_reboot>`,
    `  <on_crash>destroy</on_crash>`,
    `  <devices>`,
    ...disks,
    `    <interface type='network'>`,
    `      <mac address='${a(d.mac)}'/>`,
    `      <source network='${a(d.network)}'/>`,
    `      <model type='virtio'/>`,
    `    </interface>`,
    `    <serial type='pty'>`,
    `      <target port='0'/>${serialLog}`,
    `    </serial>`,
    `    <console type='pty'>`,
    `      <target type='serial' port='0'/>`,
    `    </console>`,
    `    <channel type='unix'>`,
    `      <target type='virtio' name='org.qemu.guest_agent.0'/>`,
    `    </channel>`,
    `    <rng model='virtio'>`,
    `      <backend model='random'>/dev/urandom</backend>`,
    `    </rng>`,
    `    <memballoon model='virtio'/>`,
    `  </devices>`,
    `</domain>`,
    '',
  ].join('\n');
}

export interface DhcpHost {
  mac: string;
  name: string;
  ip: string;
}

export const dhcpHostXml = (h: DhcpHost) => `<host mac='${a(h.mac)}' name='${a(h.name)}' ip='${a(h.ip)}'/>`;

export interface NetworkXmlInput {
  name: string;
  /** cluster that created it (metadata; pgop deletes only networks it created) */
  cluster: string;
  gateway: string;
  prefixLen: number;
  bridge?: string;
  hosts: DhcpHost[];
}

/** A NAT network (guests reach out through the hypervisor; inside a test namespace without a
 *  default route that is nowhere) with static DHCP reservations only: no dynamic range, so no
 *  address of the network is ever handed to a stranger. */
export function renderNetworkXml(n: NetworkXmlInput): string {
  return [
    `<network>`,
    `  <name>${a(n.name)}</name>`,
    `  <metadata>`,
    `    <pgop:network xmlns:pgop='${PGOP_XMLNS}' owner='pgop' cluster='${a(n.cluster)}'/>`,
    `  </metadata>`,
    `  <forward mode='nat'/>`,
    n.bridge ? `  <bridge name='${a(n.bridge)}' stp='on' delay='0'/>` : `  <bridge stp='on' delay='0'/>`,
    `  <ip address='${a(n.gateway)}' prefix='${n.prefixLen}'>`,
    `    <dhcp>`,
    ...n.hosts.map((h) => `      ${dhcpHostXml(h)}`),
    `    </dhcp>`,
    `  </ip>`,
    `</network>`,
    '',
  ].join('\n');
}

export const renderPoolXml = (name: string, path: string) =>
  [
    `<pool type='dir'>`,
    `  <name>${a(name)}</name>`,
    `  <target>`,
    `    <path>${a(path)}</path>`,
    `  </target>`,
    `</pool>`,
    '',
  ].join('\n');

export interface VolumeXmlInput {
  name: string;
  capacityBytes: number;
  format: 'qcow2' | 'raw';
  backing?: { path: string; format: 'qcow2' | 'raw' };
}

export function renderVolumeXml(v: VolumeXmlInput): string {
  return [
    `<volume>`,
    `  <name>${a(v.name)}</name>`,
    `  <capacity unit='bytes'>${v.capacityBytes}</capacity>`,
    ...(v.format === 'qcow2' ? [`  <allocation unit='bytes'>0</allocation>`] : []),
    `  <target>`,
    `    <format type='${v.format}'/>`,
    `  </target>`,
    ...(v.backing
      ? [
          `  <backingStore>`,
          `    <path>${a(v.backing.path)}</path>`,
          `    <format type='${v.backing.format}'/>`,
          `  </backingStore>`,
        ]
      : []),
    `</volume>`,
    '',
  ].join('\n');
}

// ------------------------------------------------------------------ reading libvirt's XML

function unescape(s: string): string {
  return s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, '&');
}

/** Attributes of the first element `tag` in xml (either quote style). */
export function attrsOf(xml: string, tag: string): Record<string, string> | null {
  const m = new RegExp(`<${tag.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\s[^>]*?)?/?>`).exec(xml);
  if (!m) return null;
  return parseAttrs(m[1] ?? '');
}

function parseAttrs(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of s.matchAll(/([A-Za-z_:][\w:.-]*)\s*=\s*(?:'([^']*)'|"([^"]*)")/g))
    out[m[1]!] = unescape(m[2] ?? m[3] ?? '');
  return out;
}

/** Every element `tag` with its attributes. */
export function allAttrs(xml: string, tag: string): Record<string, string>[] {
  return [...xml.matchAll(new RegExp(`<${tag}(\\s[^>]*?)?/?>`, 'g'))].map((m) => parseAttrs(m[1] ?? ''));
}

/** Text content of the first <tag>...</tag>. */
export function textOf(xml: string, tag: string): string | null {
  const m = new RegExp(`<${tag}(?:\\s[^>]*)?>([^<]*)</${tag}>`).exec(xml);
  return m ? unescape(m[1]!.trim()) : null;
}

/** pgop's metadata element on a domain (`pgop:machine`) or network (`pgop:network`), whatever
 *  prefix libvirt gave the namespace when it stored it. */
export function pgopMetadata(xml: string, element: 'machine' | 'network'): Record<string, string> | null {
  const ns = /xmlns:([A-Za-z_][\w.-]*)\s*=\s*['"]([^'"]*)['"]/g;
  for (const m of xml.matchAll(ns)) {
    if (m[2] !== PGOP_XMLNS) continue;
    const got = attrsOf(xml, `${m[1]}:${element}`);
    if (got) {
      delete got[`xmlns:${m[1]}`];
      return got;
    }
  }
  return null;
}

export interface NetworkFacts {
  gateway: string | null;
  prefixLen: number | null;
  hosts: DhcpHost[];
  owner: { cluster: string } | null;
  bridge: string | null;
}

export function networkFacts(xml: string): NetworkFacts {
  const ip = attrsOf(xml, 'ip');
  let prefixLen: number | null = ip?.prefix !== undefined ? Number(ip.prefix) : null;
  if (prefixLen === null && ip?.netmask) {
    prefixLen = ip.netmask
      .split('.')
      .reduce((n, o) => n + (Number(o) >>> 0).toString(2).replace(/0/g, '').length, 0);
  }
  const meta = pgopMetadata(xml, 'network');
  return {
    gateway: ip?.address ?? null,
    prefixLen,
    hosts: allAttrs(xml, 'host')
      .filter((h) => h.mac !== undefined || h.ip !== undefined)
      .map((h) => ({ mac: (h.mac ?? '').toLowerCase(), name: h.name ?? '', ip: h.ip ?? '' })),
    owner: meta?.owner === 'pgop' ? { cluster: meta.cluster ?? '' } : null,
    bridge: attrsOf(xml, 'bridge')?.name ?? null,
  };
}

export interface VolumeFacts {
  path: string | null;
  capacityBytes: number | null;
  format: string | null;
  backingPath: string | null;
}

export function volumeFacts(xml: string): VolumeFacts {
  const target = /<target>([\s\S]*?)<\/target>/.exec(xml)?.[1] ?? '';
  const backing = /<backingStore>([\s\S]*?)<\/backingStore>/.exec(xml)?.[1] ?? '';
  const cap = /<capacity(?:\s+unit=['"]([^'"]*)['"])?>(\d+)<\/capacity>/.exec(xml);
  return {
    path: textOf(target, 'path'),
    capacityBytes: cap ? Number(cap[2]) * unitBytes(cap[1] ?? 'bytes') : null,
    format: attrsOf(target, 'format')?.type ?? null,
    backingPath: textOf(backing, 'path'),
  };
}

function unitBytes(unit: string): number {
  const u = unit.toLowerCase();
  const table: Record<string, number> = {
    b: 1,
    bytes: 1,
    kib: 1024,
    k: 1024,
    mib: 1024 ** 2,
    m: 1024 ** 2,
    gib: 1024 ** 3,
    g: 1024 ** 3,
    tib: 1024 ** 4,
    t: 1024 ** 4,
    kb: 1000,
    mb: 1e6,
    gb: 1e9,
    tb: 1e12,
  };
  return table[u] ?? 1;
}

export const poolPathOf = (xml: string): string | null => {
  const target = /<target>([\s\S]*?)<\/target>/.exec(xml)?.[1] ?? '';
  return textOf(target, 'path');
};
