// Which drivers serve a cluster: chosen by the spec's provider, created once per process and
// shared by every cluster of that provider. Real drivers are imported only when a cluster
// needs them, so a sim-only operator never loads ssh2 or pg.

import type { ClusterSpec } from '../spec/types.js';
import { Signals, type World } from './types.js';
import { terminal } from '../errors.js';
import { SimWorld } from './sim/world.js';
import { createSimWorld } from './sim/drivers.js';
import type { Store } from '../store/store.js';

export interface Worlds {
  worldFor(spec: ClusterSpec): World;
  /** Load the drivers the given clusters need (async imports), before the loop starts. */
  prepare(specs: ClusterSpec[]): Promise<void>;
  close(): Promise<void>;
  readonly sim: SimWorld;
  /** What every loaded world's drivers noticed between passes (the loop wakes up on them). */
  readonly signals: Signals;
}

type Loader = () => Promise<World>;

export interface WorldsOptions {
  sim?: SimWorld;
  /** the store real drivers pin SSH host keys in */
  store?: Store;
  log?: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void };
  loaders?: Partial<Record<ClusterSpec['provider']['type'], Loader>>;
}

export function createWorlds(opts: WorldsOptions = {}): Worlds {
  const sim = opts.sim ?? new SimWorld();
  const simWorld = createSimWorld(sim);
  const loaded = new Map<string, World>([['sim', simWorld]]);
  const signals = new Signals();
  const loaders: Partial<Record<string, Loader>> = {
    lab: async () => {
      const { createLabWorld } = await import('./lab/world.js');
      return createLabWorld({
        signals,
        ...(opts.store ? { store: opts.store } : {}),
        ...(opts.log ? { log: opts.log } : {}),
      });
    },
    libvirt: async () => {
      const { createLibvirtWorld } = await import('./libvirt/world.js');
      return createLibvirtWorld({
        signals,
        ...(opts.store ? { store: opts.store } : {}),
        ...(opts.log ? { log: opts.log } : {}),
      });
    },
    ...opts.loaders,
  };
  return {
    sim,
    signals,
    worldFor(spec) {
      const w = loaded.get(spec.provider.type);
      if (!w)
        throw terminal(
          `cannot reconcile cluster ${spec.name}: the ${spec.provider.type} provider is not loaded`,
        );
      return w;
    },
    async prepare(specs) {
      for (const type of new Set(specs.map((s) => s.provider.type))) {
        if (loaded.has(type)) continue;
        const load = loaders[type];
        if (!load) throw terminal(`cannot reconcile ${type} clusters: this build has no ${type} provider`);
        loaded.set(type, await load());
      }
    },
    async close() {
      for (const w of loaded.values()) {
        await Promise.allSettled([w.provider.close(), w.postgres.close(), w.pool.close()]);
      }
    },
  };
}
