// The libvirt provider's drivers wired together, like createLabWorld: libvirt domains
// (LibvirtProvider), SSH as root with the cluster's operator key and the host keys pgop made for
// the machines (pinned in the store before their first boot), postgres and pgpool configured over SSH (the same code as on lab hosts).

import { join } from 'node:path';
import type { Store } from '../../store/store.js';
import type { ClusterSpec, NodeSpec } from '../../spec/types.js';
import { Signals, type DriverLog, type FaultInjector, type World } from '../types.js';
import { SshShell, shellDebugLog, type HostKeyPins, type SshShellOptions } from '../ssh/shell.js';
import { SshPostgresDriver } from '../postgres/driver.js';
import { SshPoolDriver } from '../pgpool/driver.js';
import { ClusterTls } from '../../tls/material.js';
import { hostKeyRefusedRecorder, storePins } from '../lab/world.js';
import { shellJoin } from '../ssh/quote.js';
import { terminal } from '../../errors.js';
import { LibvirtProvider, type LibvirtProviderOptions, type MachineRef } from './provider.js';
import { POOL_HOST } from './names.js';
import { rotateHostKey, type RotateResult } from '../ssh/rotate.js';

export interface LibvirtWorldOptions {
  /** The loop's fan-out: domain lifecycle events of pgop's machines are emitted here as
   *  'machine.lifecycle', dropped probe sessions as 'connection.lost' (postgres driver). */
  signals?: Signals;
  store?: Store;
  pins?: HostKeyPins;
  log?: DriverLog;
  provider?: LibvirtProviderOptions;
  shell?: SshShellOptions;
}

export type LibvirtWorld = World & {
  /** the provider itself: hostRef, describeMachine, onEvent, watch, ensurePoolHost, ... */
  libvirt: LibvirtProvider;
  faults: FaultInjector;
  shell: SshShell;
  /** `pgop host-key rotate`: a new host key for a machine, over its verified session */
  rotateHostKey(cluster: ClusterSpec, node: MachineRef): Promise<RotateResult>;
};

export function createLibvirtWorld(opts: LibvirtWorldOptions = {}): LibvirtWorld {
  const pins = opts.pins ?? (opts.store ? storePins(opts.store) : undefined);
  if (!pins) throw new Error('createLibvirtWorld needs a store or pins');
  const provider = new LibvirtProvider({ ...(opts.log ? { log: opts.log } : {}), hostKeys: pins, ...opts.provider });
  const debug = shellDebugLog(opts.log);
  const shell = new SshShell(pins, { ...(debug ? { log: debug } : {}), onHostKeyRefused: hostKeyRefusedRecorder(opts.store, opts.log), ...opts.shell });
  const signals = opts.signals ?? new Signals();
  // one CA per cluster, shared by both drivers, beside the cluster's operator key
  const tls = new ClusterTls({ dirOf: (c) => join(provider.stateDir, c.name, 'tls'), ...(opts.log ? { log: opts.log } : {}) });
  const postgres = new SshPostgresDriver({ shell, hostRef: (c, n) => provider.hostRef(c, n), signals, tls, ...(opts.log ? { logger: opts.log } : {}) });
  const pool = new SshPoolDriver({
    shell,
    tls,
    hostRef: (c) => provider.hostRef(c, POOL_HOST),
    signals,
    ...(opts.log ? { logger: opts.log } : {}),
  });
  const store = opts.store;
  provider.onEvent((e) => {
    if (e.type !== 'lifecycle' || !e.cluster || !e.lifecycle) return;
    signals.emit({ cluster: e.cluster, ...(e.node ? { node: e.node } : {}), kind: 'machine.lifecycle', detail: `domain ${e.domain}: ${e.text}` });
  });

  const faults: FaultInjector = {
    /** SIGKILL the postmaster (first line of postmaster.pid) over SSH. */
    async kill(c: ClusterSpec, n: NodeSpec) {
      const pidFile = `${c.postgres.dataDir}/postmaster.pid`;
      const script = `p=$(head -n1 ${shellJoin([pidFile])} 2>/dev/null) || exit 0; [ -n "$p" ] && kill -9 "$p" 2>/dev/null; exit 0`;
      const res = await shell.exec(provider.hostRef(c, n), ['sh', '-c', script]);
      if (res.code !== 0) throw terminal(`cannot kill postgres on ${c.name}/${n.name}: ${res.stderr.trim()}`);
    },
    partition: (c, n) => provider.setLink(c, n, 'down'),
    heal: (c, n) => provider.setLink(c, n, 'up'),
    async stop(c, n) {
      await provider.fenceMachine(c, n);
      shell.disconnect(provider.hostRef(c, n).id);
    },
    start: (c, n) => provider.startMachine(c, n),
  };

  const forget = (c: ClusterSpec, n: MachineRef) => {
    shell.disconnect(provider.hostRef(c, n).id);
    // a machine made again gets new host keys: the old pin must not refuse it
    store?.forgetHostKey(c.name, n === POOL_HOST ? POOL_HOST : n.name);
  };

  return {
    provider: {
      observeMachines: (c) => provider.observeMachines(c),
      listMachines: (c) => provider.listMachines(c),
      ensureMachine: (c, n) => provider.ensureMachine(c, n),
      fenceMachine: async (c, n) => {
        await provider.fenceMachine(c, n);
        // its sessions died with it; a later command must reconnect
        shell.disconnect(provider.hostRef(c, n).id);
      },
      deleteMachine: async (c, n) => {
        await provider.deleteMachine(c, n);
        forget(c, n);
      },
      deleteClusterResources: async (c) => {
        await provider.deleteClusterResources(c);
        if (c.pgpool.enabled && c.pgpool.address) forget(c, POOL_HOST);
      },
      close: async () => {
        await shell.close();
        await provider.close();
      },
    },
    postgres,
    pool,
    signals,
    libvirt: provider,
    faults,
    shell,
    rotateHostKey: (c, n) => rotateHostKey({ shell, pins, ref: provider.hostRef(c, n), target: provider.hostKeyTarget(c, n) }),
  };
}
