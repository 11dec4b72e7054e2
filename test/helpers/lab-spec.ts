// A complete lab ClusterSpec literal for integration tests (every default filled in, as the
// parser would give it). Override what a test needs.

import type { ClusterSpec, NodeSpec } from '../../src/spec/types.js';
import { specDefaults } from './spec-defaults.js';

export interface LabSpecOptions {
  name?: string;
  /** e.g. 10.78.0.0/24: nodes get .11, .12, ... and the pool host .10 */
  network?: string;
  nodes?: number;
  pgpool?: boolean;
  stateDir?: string;
}

export function labNode(name: string, address: string): NodeSpec {
  return { name, address, vcpus: 1, memoryMiB: 512, rootDiskGiB: 4, dataDiskGiB: 4 };
}

export function labSpec(opts: LabSpecOptions = {}): ClusterSpec {
  const network = opts.network ?? '10.78.0.0/24';
  const base = network.split('/')[0]!.split('.').slice(0, 3).join('.');
  const n = opts.nodes ?? 2;
  const nodes = Array.from({ length: n }, (_, i) => labNode(`pg${i + 1}`, `${base}.${11 + i}`));
  const { postgres, replication, pgpool, ...objects } = specDefaults();
  return {
    apiVersion: 'pgop.dev/v1',
    kind: 'Cluster',
    name: opts.name ?? 'lt',
    provider: { type: 'lab', network, ...(opts.stateDir ? { stateDir: opts.stateDir } : {}) },
    postgres: {
      ...postgres,
      archiveScript: false,
      superuserPassword: { env: 'PGOP_TEST_SUPERUSER_PASSWORD' },
      hba: [],
    },
    nodes,
    replication: { ...replication, password: { env: 'PGOP_TEST_REPL_PASSWORD' } },
    pgpool: { enabled: opts.pgpool ?? true, address: `${base}.10`, ...pgpool, numInitChildren: 8 },
    ...objects,
  };
}
