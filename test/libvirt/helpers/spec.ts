// A libvirt cluster spec for tests, through the real parser (every default filled in).

import { parseSpecText } from '../../../src/spec/parse.js';
import type { ClusterSpec } from '../../../src/spec/types.js';

export interface LibvirtTestSpecOptions {
  name?: string;
  uri: string;
  poolName?: string;
  poolPath: string;
  baseImage?: string;
  /** third octet of 10.77.X.0/24 */
  subnet?: number;
  nodes?: number;
  pgpool?: boolean;
  network?: string;
  layout?: 'lvm' | 'plain';
}

export function libvirtTestSpec(o: LibvirtTestSpecOptions): ClusterSpec {
  const net = `10.77.${o.subnet ?? 50}`;
  const n = o.nodes ?? 2;
  const size = 'vcpus: 1, memoryMiB: 512, rootDiskGiB: 4, dataDiskGiB: 2';
  const nodes = Array.from(
    { length: n },
    (_, i) => `    - {name: pg${i + 1}, address: ${net}.${11 + i}, ${size}}`,
  );
  const yaml = `apiVersion: pgop.dev/v1
kind: Cluster
metadata:
  name: ${o.name ?? 'lvc'}
spec:
  provider:
    type: libvirt
    uri: "${o.uri}"
    baseImage: ${o.baseImage ?? '/var/lib/pgop/images/test-base.qcow2'}
    pool: {name: ${o.poolName ?? 'pgt'}, path: ${o.poolPath}}
    network: {${o.network ? `name: ${o.network}, ` : ''}cidr: ${net}.0/24, gateway: ${net}.1}
    dataDisk: {layout: ${o.layout ?? 'lvm'}, filesystem: xfs}
    domainType: auto
    sshUser: pgop
  postgres:
    superuserPassword: {env: PGOP_TEST_SUPERUSER_PASSWORD}
  replication:
    password: {env: PGOP_TEST_REPL_PASSWORD}
  nodes:
${nodes.join('\n')}
  pgpool:
    enabled: ${o.pgpool ?? true}
    address: ${net}.10
`;
  return parseSpecText(yaml, 'test-libvirt.yaml').spec;
}
