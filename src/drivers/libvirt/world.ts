// The libvirt provider's world: libvirt domains (LibvirtProvider) behind the shared SSH world
// (ssh-world.ts), reached as root with the cluster's operator key and the host keys pgop made
// for the machines (pinned in the store before their first boot).

import { join } from 'node:path';
import type { Store } from '../../store/store.js';
import type { ClusterSpec, NodeSpec } from '../../spec/types.js';
import type { DriverLog, FaultInjector, Signals } from '../types.js';
import type { HostKeyPins, SshShell, SshShellOptions } from '../ssh/shell.js';
import { createSshWorld, worldPins, type SshWorld } from '../ssh-world.js';
import { shellJoin } from '../ssh/quote.js';
import { terminal } from '../../errors.js';
import { LibvirtProvider, type LibvirtProviderOptions } from './provider.js';

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

export type LibvirtWorld = SshWorld & {
  /** the provider itself: hostRef, describeMachine, onEvent, watch, ensurePoolHost, ... */
  libvirt: LibvirtProvider;
};

export function createLibvirtWorld(opts: LibvirtWorldOptions = {}): LibvirtWorld {
  const pins = worldPins(opts, 'createLibvirtWorld');
  const provider = new LibvirtProvider({
    ...(opts.log ? { log: opts.log } : {}),
    hostKeys: pins,
    ...opts.provider,
  });
  const world = createSshWorld({
    ...(opts.store ? { store: opts.store } : {}),
    ...(opts.log ? { log: opts.log } : {}),
    ...(opts.signals ? { signals: opts.signals } : {}),
    ...(opts.shell ? { shell: opts.shell } : {}),
    machines: provider,
    pins,
    // the cluster's CA beside its operator key
    tlsDirOf: (c) => join(provider.stateDir, c.name, 'tls'),
    faults: (shell) => libvirtFaults(provider, shell),
  });
  provider.onEvent((e) => {
    if (e.type !== 'lifecycle' || !e.cluster || !e.lifecycle) return;
    const node = e.node ? { node: e.node } : {};
    world.signals.emit({
      cluster: e.cluster,
      ...node,
      kind: 'machine.lifecycle',
      detail: `domain ${e.domain}: ${e.text}`,
    });
  });
  return { ...world, libvirt: provider };
}

function libvirtFaults(provider: LibvirtProvider, shell: SshShell): FaultInjector {
  return {
    /** SIGKILL the postmaster (first line of postmaster.pid) over SSH. */
    async kill(c: ClusterSpec, n: NodeSpec) {
      const pidFile = `${c.postgres.dataDir}/postmaster.pid`;
      const script =
        `p=$(head -n1 ${shellJoin([pidFile])} 2>/dev/null) || exit 0; ` +
        `[ -n "$p" ] && kill -9 "$p" 2>/dev/null; exit 0`;
      const res = await shell.exec(provider.hostRef(c, n), ['sh', '-c', script]);
      if (res.code !== 0) throw terminal(`cannot kill postgres on ${c.name}/${n.name}: ${res.stderr.trim()}`);
    },
    hang: (c, n) => signalPostgres(provider, shell, c, n, 'STOP'),
    resume: (c, n) => signalPostgres(provider, shell, c, n, 'CONT'),
    partition: (c, n) => provider.setLink(c, n, 'down'),
    heal: (c, n) => provider.setLink(c, n, 'up'),
    async stop(c, n) {
      await provider.fenceMachine(c, n);
      shell.disconnect(provider.hostRef(c, n).id);
    },
    start: (c, n) => provider.startMachine(c, n),
  };
}

/** SIGSTOP (postmaster first: it forks nothing more) or SIGCONT (children first) the node's
 *  postmaster and its children over SSH; no postmaster.pid: nothing to do. */
async function signalPostgres(
  provider: LibvirtProvider,
  shell: SshShell,
  c: ClusterSpec,
  n: NodeSpec,
  signal: 'STOP' | 'CONT',
): Promise<void> {
  const pidFile = `${c.postgres.dataDir}/postmaster.pid`;
  const script =
    'p=$(head -n1 "$1" 2>/dev/null) || exit 0; [ -n "$p" ] || exit 0; ' +
    '[ "$2" = STOP ] && kill -STOP "$p"; ' +
    'for k in $(pgrep -P "$p"); do kill -"$2" "$k"; done; ' +
    '[ "$2" = CONT ] && kill -CONT "$p"; exit 0';
  const res = await shell.exec(provider.hostRef(c, n), ['sh', '-c', script, 'pgop', pidFile, signal]);
  if (res.code !== 0)
    throw terminal(`cannot signal postgres (${signal}) on ${c.name}/${n.name}: ${res.stderr.trim()}`);
}
