// The lab provider's drivers wired together: namespaces + sshd per host (LabProvider), SSH with
// host keys pinned in the store, postgres and pgpool configured over SSH. The same postgres and
// pgpool code runs against libvirt VMs; only the provider differs.

import type { Store } from '../../store/store.js';
import { Signals, type DriverLog, type FaultInjector, type World } from '../types.js';
import { createLabProvider } from './provider.js';
import { SshShell, shellDebugLog, type HostKeyPins, type HostKeyRefusal } from '../ssh/shell.js';
import { SshPostgresDriver } from '../postgres/driver.js';
import { SshPoolDriver } from '../pgpool/driver.js';
import { rotateHostKey, type RotateResult } from '../ssh/rotate.js';
import type { ClusterSpec, NodeSpec } from '../../spec/types.js';
import { ClusterTls } from '../../tls/material.js';

export type LabWorldLog = DriverLog;

/** Host keys pinned in the store (ids are `cluster/host`): the provider pins the key it made
 *  for a machine before the machine first starts. */
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
      // A cluster deleted meanwhile has no row to pin to (foreign key): that throws, and the
      // machine is not started (or the connection is refused).
      store.pinHostKey(cluster, node, algo, keyB64, Date.now(), { replace: true });
    },
  };
}

/** Host keys refused: an event naming the pinned and presented fingerprints, once per host and
 *  presented key in this process (a probe every second must not flood the events). */
export function hostKeyRefusedRecorder(store: Store | undefined, log: DriverLog | undefined): (r: HostKeyRefusal) => void {
  const told = new Map<string, string>();
  return (r) => {
    if (told.get(r.id) === r.presented) return;
    told.set(r.id, r.presented);
    log?.warn({ host: r.id, expected: r.expected, presented: r.presented }, r.message);
    if (!store) return;
    const i = r.id.indexOf('/');
    const cluster = r.id.slice(0, i);
    const node = r.id.slice(i + 1);
    try {
      if (store.getCluster(cluster)) store.recordEvent({ time: Date.now(), cluster, node, from: null, to: null, ruleId: 'ssh.host-key-refused', reason: r.message });
    } catch {
      /* a store that refuses (lock lost) says so elsewhere */
    }
  };
}

export type LabWorld = World & {
  faults: FaultInjector;
  shell: SshShell;
  /** `pgop host-key rotate`: a new host key for a host, over its verified session */
  rotateHostKey(cluster: ClusterSpec, node: NodeSpec | 'pool'): Promise<RotateResult>;
};

export function createLabWorld(opts: { store?: Store; pins?: HostKeyPins; log?: LabWorldLog; signals?: Signals } = {}): LabWorld {
  const pins = opts.pins ?? (opts.store ? storePins(opts.store) : undefined);
  if (!pins) throw new Error('createLabWorld needs a store or pins');
  const provider = createLabProvider({ hostKeys: pins });
  const debug = shellDebugLog(opts.log);
  const shell = new SshShell(pins, { ...(debug ? { log: debug } : {}), onHostKeyRefused: hostKeyRefusedRecorder(opts.store, opts.log) });
  const signals = opts.signals ?? new Signals();
  // one CA per cluster, shared by both drivers (lab: <state dir>/<cluster>/tls)
  const tls = new ClusterTls(opts.log ? { log: opts.log } : {});
  const postgres = new SshPostgresDriver({ shell, hostRef: (c, n) => provider.hostRef(c, n), signals, tls, ...(opts.log ? { logger: opts.log } : {}) });
  const pool = new SshPoolDriver({
    shell,
    tls,
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
    shell,
    rotateHostKey: (c, n) => rotateHostKey({ shell, pins, ref: provider.hostRef(c, n), target: provider.hostKeyTarget(c, n) }),
  };
}
