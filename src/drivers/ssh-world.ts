// The drivers of a provider whose machines are reached over SSH (lab and libvirt) wired
// together: SSH with host keys pinned in the store, postgres and pgpool configured over it, one
// CA per cluster shared by both. Only the machines differ; the provider passes them in.

import type { Store } from '../store/store.js';
import { SINGLE_POOL_HOST, poolHosts, type ClusterSpec } from '../spec/types.js';
import type { MachineObservation } from '../observe/types.js';
import {
  Signals,
  type DriverLog,
  type FaultInjector,
  type HostRef,
  type MachineRef,
  type ProviderDriver,
  type World,
} from './types.js';
import {
  SshShell,
  shellDebugLog,
  type HostKeyPins,
  type HostKeyRefusal,
  type SshShellOptions,
} from './ssh/shell.js';
import { rotateHostKey, type HostKeyTarget, type RotateResult } from './ssh/rotate.js';
import { SshPostgresDriver } from './postgres/driver.js';
import { SshPoolDriver } from './pgpool/pool-hosts.js';
import { SshBackupDriver } from './backup/driver.js';
import { ClusterTls } from '../tls/material.js';

/** The one pgpool host's name in both SSH providers (a node may not be called so). */
export const POOL_HOST = SINGLE_POOL_HOST;
export type { MachineRef };

/** Host keys pinned in the store (ids are `cluster/host`): the provider pins the key it made
 *  for a machine before the machine first starts. */
export function storePins(store: Store): HostKeyPins {
  return {
    getPinned(id) {
      const [cluster, node] = splitHostId(id);
      const k = store.getHostKey(cluster, node);
      return k ? { algo: k.algo, keyB64: k.keyB64 } : undefined;
    },
    pin(id, algo, keyB64) {
      const [cluster, node] = splitHostId(id);
      // A cluster deleted meanwhile has no row to pin to (foreign key): that throws, and the
      // machine is not started (or the connection is refused).
      store.pinHostKey(cluster, node, algo, keyB64, Date.now(), { replace: true });
    },
  };
}

function splitHostId(id: string): readonly [string, string] {
  const i = id.indexOf('/');
  return [id.slice(0, i), id.slice(i + 1)];
}

/** Host keys refused: an event naming the pinned and presented fingerprints, once per host and
 *  presented key in this process (a probe every second must not flood the events). */
export function hostKeyRefusedRecorder(
  store: Store | undefined,
  log: DriverLog | undefined,
): (r: HostKeyRefusal) => void {
  const told = new Map<string, string>();
  return (r) => {
    if (told.get(r.id) === r.presented) return;
    told.set(r.id, r.presented);
    log?.warn({ host: r.id, expected: r.expected, presented: r.presented }, r.message);
    if (!store) return;
    const [cluster, node] = splitHostId(r.id);
    const event = { time: Date.now(), cluster, node, from: null, to: null, ruleId: 'ssh.host-key-refused' };
    try {
      if (store.getCluster(cluster)) store.recordEvent({ ...event, reason: r.message });
    } catch {
      /* a store that refuses (lock lost) says so elsewhere */
    }
  };
}

/** What the shared part needs of a provider's machines. */
export interface SshMachines extends ProviderDriver {
  hostRef(cluster: ClusterSpec, node: MachineRef): HostRef;
  fenceMachine(cluster: ClusterSpec, node: MachineRef): Promise<void>;
  /** Create or start a pool host's machine. */
  ensurePoolHost(cluster: ClusterSpec, host: string): Promise<void>;
  observePoolHost(cluster: ClusterSpec, host: string): Promise<MachineObservation>;
  /** Every pool host machine of the cluster, in the spec or not, and the removal of one that left
   *  it (absent: the provider cannot list them; such a host is left alone). */
  listPoolHosts?(cluster: ClusterSpec): Promise<string[]>;
  deletePoolHost?(cluster: ClusterSpec, host: string): Promise<void>;
  hostKeyTarget(cluster: ClusterSpec, node: MachineRef): HostKeyTarget;
}

/** The pins a world uses: those given, else the store's. */
export function worldPins(opts: { store?: Store; pins?: HostKeyPins }, caller: string): HostKeyPins {
  const pins = opts.pins ?? (opts.store ? storePins(opts.store) : undefined);
  if (!pins) throw new Error(`${caller} needs a store or pins`);
  return pins;
}

export interface SshWorldOptions {
  machines: SshMachines;
  /** the pins the machines' host keys go to (worldPins) */
  pins: HostKeyPins;
  /** the fault injector of these machines (some faults run over the shell) */
  faults: (shell: SshShell) => FaultInjector;
  store?: Store;
  log?: DriverLog;
  signals?: Signals;
  shell?: SshShellOptions;
  /** the cluster's TLS directory (default: ClusterTls's) */
  tlsDirOf?: (cluster: ClusterSpec) => string;
}

export type SshWorld = World & {
  signals: Signals;
  faults: FaultInjector;
  shell: SshShell;
  /** `pgop host-key rotate`: a new host key for a machine, over its verified session */
  rotateHostKey(cluster: ClusterSpec, node: MachineRef): Promise<RotateResult>;
};

export function createSshWorld(opts: SshWorldOptions): SshWorld {
  const { machines, pins, store, log } = opts;
  const debug = shellDebugLog(log);
  const shell = new SshShell(pins, {
    ...(debug ? { log: debug } : {}),
    onHostKeyRefused: hostKeyRefusedRecorder(store, log),
    ...opts.shell,
  });
  const signals = opts.signals ?? new Signals();
  const logger = log ? { logger: log } : {};
  const tls = new ClusterTls({ ...(opts.tlsDirOf ? { dirOf: opts.tlsDirOf } : {}), ...(log ? { log } : {}) });
  const hostRef = (c: ClusterSpec, n: MachineRef) => machines.hostRef(c, n);
  const postgres = new SshPostgresDriver({ shell, hostRef, signals, tls, ...logger });
  const disconnect = (c: ClusterSpec, n: MachineRef) => shell.disconnect(hostRef(c, n).id);
  const pool = new SshPoolDriver({
    shell,
    tls,
    hostRef,
    signals,
    ...logger,
    machines: {
      fence: async (c, host) => {
        await machines.fenceMachine(c, host);
        disconnect(c, host);
      },
      start: (c, host) => machines.ensurePoolHost(c, host),
      observe: (c, host) => machines.observePoolHost(c, host),
      ...(machines.listPoolHosts && machines.deletePoolHost
        ? {
            list: (c: ClusterSpec) => machines.listPoolHosts!(c),
            remove: async (c: ClusterSpec, host: string) => {
              await machines.deletePoolHost!(c, host);
              // by id: hostRef knows only the spec's hosts (ids are cluster/host)
              shell.disconnect(`${c.name}/${host}`);
              forgetPin(c, host);
            },
          }
        : {}),
    },
  });
  // a machine made again gets a new host key: the old pin must not refuse it
  const forgetPin = (c: ClusterSpec, n: MachineRef) =>
    store?.forgetHostKey(c.name, typeof n === 'string' ? n : n.name);
  return {
    provider: {
      observeMachines: (c) => machines.observeMachines(c),
      listMachines: (c) => machines.listMachines(c),
      ensureMachine: (c, n) => machines.ensureMachine(c, n),
      fenceMachine: async (c, n) => {
        await machines.fenceMachine(c, n);
        // its sessions died with it; a later command must reconnect
        disconnect(c, n);
      },
      deleteMachine: async (c, n) => {
        await machines.deleteMachine(c, n);
        disconnect(c, n);
        forgetPin(c, n);
      },
      deleteClusterResources: async (c) => {
        const hosts = poolHosts(c).map((h) => h.name);
        for (const h of hosts) disconnect(c, h);
        await machines.deleteClusterResources(c);
        for (const h of hosts) forgetPin(c, h);
      },
      close: async () => {
        await shell.close();
        await machines.close();
      },
    },
    postgres,
    pool,
    backup: new SshBackupDriver({ shell, hostRef, tls, ...(log ? { log } : {}) }),
    signals,
    faults: opts.faults(shell),
    shell,
    rotateHostKey: (c, n) =>
      rotateHostKey({ shell, pins, ref: hostRef(c, n), target: machines.hostKeyTarget(c, n) }),
  };
}
