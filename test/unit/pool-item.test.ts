// `get clusters` with several pool hosts: the endpoint's holder and each pool host's state, from
// the last observation.

import { describe, expect, it } from 'vitest';
import { clusterItem, poolItem } from '../../src/cli/output.js';
import type { StoredCluster } from '../../src/store/types.js';
import type { ClusterObservation, PoolHostObservation } from '../../src/observe/types.js';
import { simSpec } from '../helpers/sim-spec.js';

const hostsSpec = simSpec({
  pgpool: {
    address: '10.0.0.10',
    hosts: [
      { name: 'pool1', address: '10.0.0.21' },
      { name: 'pool2', address: '10.0.0.22' },
    ],
  },
});

const stored = (spec = hostsSpec): StoredCluster => ({
  name: spec.name,
  generation: 1,
  spec,
  specHash: 'h',
  createdAt: 0,
  updatedAt: 0,
  deletionRequested: false,
  phase: 'Healthy',
  primary: 'pg1',
  observedGeneration: 1,
  message: '',
});

const host = (name: string, over: Partial<PoolHostObservation>): PoolHostObservation => ({
  name,
  reachable: true,
  primary: 'pg1',
  backends: [],
  configHash: 'x',
  port: 'open',
  pcpPort: 'open',
  silentLooks: 0,
  unansweredLooks: 0,
  holdsVip: false,
  shellReachable: true,
  machine: 'running',
  ...over,
});

const observed = (hosts: PoolHostObservation[]): ClusterObservation => ({
  cluster: hostsSpec.name,
  at: 0,
  nodes: {},
  pool: { reachable: true, primary: 'pg1', backends: [], configHash: 'x', hosts },
});

describe('get clusters: pool hosts', () => {
  it('names the holder of the virtual IP and what each pool host does', () => {
    const obs = observed([
      host('pool1', { holdsVip: true }),
      host('pool2', { reachable: false, primary: null, port: 'refused' }),
    ]);
    expect(poolItem(stored(), obs)).toEqual({
      holder: 'pool1',
      hosts: [
        expect.objectContaining({ name: 'pool1', holds_vip: true, pgpool: 'routing', routes_to: 'pg1' }),
        expect.objectContaining({ name: 'pool2', holds_vip: false, pgpool: 'down', port: 'refused' }),
      ],
    });
    const operator = { state: 'none' as const, pid: null, host: null, heartbeat_age_s: null };
    expect(clusterItem(stored(), 3, operator, obs).pool?.holder).toBe('pool1');
  });

  it('has no holder when none or two hold it, and nothing without pool hosts', () => {
    const two = observed([host('pool1', { holdsVip: true }), host('pool2', { holdsVip: true })]);
    expect(poolItem(stored(), two)?.holder).toBeNull();
    expect(poolItem(stored(), undefined)?.hosts.map((h) => h.pgpool)).toEqual(['down', 'down']);
    expect(poolItem(stored(simSpec()), two)).toBeUndefined();
  });
});
