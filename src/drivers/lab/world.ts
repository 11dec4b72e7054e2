// The lab provider's drivers wired together: namespaces + sshd per host (LabProvider), SSH with
// host keys pinned in the store, postgres and pgpool configured over SSH. The same postgres and
// pgpool code runs against libvirt VMs; only the provider differs.

import type { Store } from '../../store/store.js';
import { Signals, type DriverLog, type FaultInjector, type World } from '../types.js';
import { createLabProvider } from './provider.js';
import { SshShell, shellDebugLog, type HostKeyPins } from '../ssh/shell.js';
import { SshPostgresDriver } from '../postgres/driver.js';
import { SshPoolDriver } from '../pgpool/driver.js';

export type LabWorldLog = DriverLog;

/** Host keys pinned in the store on first contact; ids are `cluster/host`. */
export function storePins(store: Store): HostKeyPins {
  const split = (id: string) => {
    const i = id.indexOf('/');
    return [id.slice(0, i), id.slice(i + 1)] as const;
  };
  return {
    getPinned(id) {
      const [cluster, node] = split(id);
      const k = store.getHostKey(cluster, node);
      return k ? { algo: k.algo, keyB64: k.keyB64 } : undefined;
    },
    pin(id, algo, keyB64) {
      const [cluster, node] = split(id);
      // A cluster deleted meanwhile has no row to pin to: the connection is then refused.
      store.pinHostKey(cluster, node, algo, keyB64, Date.now());
    },
  };
}

export function createLabWorld(opts: { store?: Store; pins?: HostKeyPins; log?: LabWorldLog; signals?: Signals } = {}): World & { faults: FaultInjector } {
  const provider = createLabProvider();
  const pins = opts.pins ?? (opts.store ? storePins(opts.store) : undefined);
  if (!pins) throw new Error('createLabWorld needs a store or pins');
  const debug = shellDebugLog(opts.log);
  const shell = new SshShell(pins, debug ? { log: debug } : {});
  const signals = opts.signals ?? new Signals();
  const postgres = new SshPostgresDriver({ shell, hostRef: (c, n) => provider.hostRef(c, n), signals, ...(opts.log ? { logger: opts.log } : {}) });
  const pool = new SshPoolDriver({
    shell,
    hostRef: (c) => provider.hostRef(c, 'pool'),
    signals,
    ...(opts.log ? { logger: opts.log } : {}),
  });
  const store = opts.store;
  // Machine operations of one cluster share its bridge, hub and key files: run them one at a
  // time (the reconciler may provision several nodes in one pass). Fencing never waits.
  const queues = new Map<string, Promise<unknown>>();
  const serial = <T>(cluster: string, op: () => Promise<T>): Promise<T> => {
    const prev = queues.get(cluster) ?? Promise.resolve();
    const next = prev.then(op, op);
    queues.set(cluster, next.catch(() => undefined));
    return next;
  };
  return {
    provider: {
      observeMachines: (c) => provider.observeMachines(c),
      listMachines: (c) => provider.listMachines(c),
      ensureMachine: (c, n) => serial(c.name, () => provider.ensureMachine(c, n)),
      fenceMachine: async (c, n) => {
        await provider.fenceMachine(c, n);
        // its sessions died with it; a later command must reconnect
        shell.disconnect(provider.hostRef(c, n).id);
      },
      deleteMachine: async (c, n) => {
        await serial(c.name, () => provider.deleteMachine(c, n));
        shell.disconnect(provider.hostRef(c, n).id);
        // a node made again gets a new host key: the old pin must not refuse it
        store?.forgetHostKey(c.name, n.name);
      },
      deleteClusterResources: async (c) => {
        shell.disconnect(provider.hostRef(c, 'pool').id);
        await provider.deleteClusterResources(c);
        store?.forgetHostKey(c.name, 'pool');
      },
      close: async () => {
        await shell.close();
        await provider.close();
      },
    },
    postgres,
    pool,
    signals,
    faults: provider,
  };
}
