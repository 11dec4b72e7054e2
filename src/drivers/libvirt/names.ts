// Naming and addressing conventions of the libvirt provider (pure). Everything pgop creates on a
// hypervisor is found again from the spec alone, so a half-done creation after a crash is
// completed rather than duplicated:
//
//   domain           <cluster>-<node>                 (the pgpool host: <cluster>-pool)
//   volumes          <cluster>-<node>-root.qcow2       qcow2 overlay on provider.baseImage
//                    <cluster>-<node>-data.qcow2       the data disk (/u01, /u02)
//                    <cluster>-<node>-seed.iso         cloud-init NoCloud seed (volume id cidata)
//   network          provider.network.name             (spec default: pgop-<cluster>)
//   DHCP host entry  name <cluster>-<node>, mac macFor(cluster, node), ip = node address
//   MAC              52:54:00 + first 3 bytes of sha256("<cluster>/<node>")

import { createHash } from 'node:crypto';
import {
  poolHostNode,
  poolMachines,
  type ClusterSpec,
  type LibvirtProviderSpec,
  type NodeSpec,
} from '../../spec/types.js';
import { internal, terminal } from '../../errors.js';
import {
  isHostOf,
  networkOf,
  parseCidr as parseCidrText,
  parseIpv4,
  type Ipv4Network,
} from '../../net/ipv4.js';

/** The pgpool host's name inside a cluster (a node may not be called so). */
export const POOL_HOST = 'pool';

/** XML namespace of pgop's <metadata> elements on domains and networks. */
export const PGOP_XMLNS = 'https://pgop.dev/xmlns/libvirt/1';

/** Resources of the pgpool host, which the spec does not size. */
export const POOL_HOST_SIZE = { vcpus: 1, memoryMiB: 1024 } as const;

const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export function assertLibvirtName(kind: string, value: string): string {
  if (!NAME.test(value)) {
    throw terminal(
      `cannot use ${kind} name ${JSON.stringify(value)}: use 1-63 lowercase letters, digits, '_', '.' or '-'`,
    );
  }
  return value;
}

export function libvirtProvider(spec: ClusterSpec): LibvirtProviderSpec {
  if (spec.provider.type !== 'libvirt') {
    throw internal(
      `cannot use the libvirt provider for cluster ${spec.name}: its provider is ${spec.provider.type}`,
    );
  }
  return spec.provider;
}

/** One machine pgop makes for a cluster: a spec node or the pgpool host. */
export interface MachinePlan {
  cluster: string;
  /** node name, or POOL_HOST */
  name: string;
  /** cluster/name: SSH host-key pinning id and log id */
  id: string;
  role: 'node' | 'pool';
  uri: string;
  domain: string;
  address: string;
  mac: string;
  vcpus: number;
  memoryMiB: number;
  rootDiskGiB: number;
  /** 0 for the pool host (no data disk) */
  dataDiskGiB: number;
  volumes: { root: string; data: string | null; seed: string };
  dhcpName: string;
}

export const domainName = (cluster: string, node: string) => `${cluster}-${node}`;

export const volumeNames = (cluster: string, node: string) => ({
  root: `${cluster}-${node}-root.qcow2`,
  data: `${cluster}-${node}-data.qcow2`,
  seed: `${cluster}-${node}-seed.iso`,
});

/** Locally administered, deterministic: the KVM/QEMU OUI 52:54:00 plus 3 hash bytes. */
export function macFor(cluster: string, node: string): string {
  const h = createHash('sha256').update(`${cluster}/${node}`).digest();
  return ['52', '54', '00', ...[h[0]!, h[1]!, h[2]!].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** Hypervisor URI of a node: node.hypervisor ?? provider.uri. */
export function uriOf(spec: ClusterSpec, node: NodeSpec | null): string {
  return node?.hypervisor ?? libvirtProvider(spec).uri;
}

export function machinePlan(spec: ClusterSpec, node: NodeSpec | string): MachinePlan {
  const cluster = assertLibvirtName('cluster', spec.name);
  if (typeof node === 'string') {
    // pgpool on the nodes: a pool host is its node's machine
    const onNode = poolHostNode(spec, node);
    if (onNode) return machinePlan(spec, onNode);
    const pool = poolMachines(spec).find((h) => h.name === node);
    if (!pool) {
      const why = spec.pgpool.enabled ? 'the spec names no such pool host' : 'pgpool is disabled';
      throw terminal(`cannot place pool host ${node} of cluster ${cluster}: ${why}`);
    }
    const name = assertLibvirtName('pool host', pool.name);
    const first = spec.nodes[0];
    return {
      cluster,
      name,
      id: `${cluster}/${name}`,
      role: 'pool',
      uri: uriOf(spec, null),
      domain: domainName(cluster, name),
      address: pool.address,
      mac: macFor(cluster, name),
      vcpus: POOL_HOST_SIZE.vcpus,
      memoryMiB: POOL_HOST_SIZE.memoryMiB,
      rootDiskGiB: first?.rootDiskGiB ?? 20,
      dataDiskGiB: 0,
      volumes: { ...volumeNames(cluster, name), data: null },
      dhcpName: domainName(cluster, name),
    };
  }
  const name = assertLibvirtName('node', node.name);
  if (name === POOL_HOST || poolMachines(spec).some((h) => h.name === name))
    throw terminal(`cannot place node ${name} of cluster ${cluster}: "${name}" names a pgpool host`);
  return {
    cluster,
    name,
    id: `${cluster}/${name}`,
    role: 'node',
    uri: uriOf(spec, node),
    domain: domainName(cluster, name),
    address: node.address,
    mac: macFor(cluster, name),
    vcpus: node.vcpus,
    memoryMiB: node.memoryMiB,
    rootDiskGiB: node.rootDiskGiB,
    dataDiskGiB: node.dataDiskGiB,
    volumes: volumeNames(cluster, name),
    dhcpName: domainName(cluster, name),
  };
}

/** Every machine of the cluster: the spec's nodes, then the pool host when pgpool is on. */
export function allMachines(spec: ClusterSpec): MachinePlan[] {
  const out = spec.nodes.map((n) => machinePlan(spec, n));
  for (const h of poolMachines(spec)) out.push(machinePlan(spec, h.name));
  const seen = new Map<string, string>();
  for (const m of out) {
    const other = seen.get(m.mac);
    if (other)
      throw terminal(
        `cannot address ${m.id}: its derived MAC ${m.mac} collides with ${other}'s; rename one of them`,
      );
    seen.set(m.mac, m.id);
  }
  return out;
}

/** Distinct hypervisor URIs the cluster uses (provider.uri first). */
export function clusterUris(spec: ClusterSpec): string[] {
  return [...new Set([libvirtProvider(spec).uri, ...spec.nodes.map((n) => uriOf(spec, n))])];
}

// ------------------------------------------------------------------ IPv4

export type Ipv4Net = Ipv4Network;

/** The provider's network (prefix length 1-30; host bits ignored). */
export function parseCidr(cidr: string): Ipv4Net {
  const parsed = parseCidrText(cidr);
  if (!parsed || !(parsed.prefixLen >= 1 && parsed.prefixLen <= 30)) {
    throw terminal(`cannot use network ${JSON.stringify(cidr)}: expected an IPv4 CIDR`);
  }
  return networkOf(parsed.address, parsed.prefixLen);
}

/** A host address of the network (not its network or broadcast address). */
export function inside(ip: string, net: Ipv4Net): boolean {
  const a = parseIpv4(ip);
  return a !== undefined && isHostOf(a, net);
}
