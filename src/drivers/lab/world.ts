// The lab provider's world: namespaces + sshd per host (LabProvider) behind the shared SSH world
// (ssh-world.ts). The same postgres and pgpool code runs against libvirt VMs.

import type { Store } from '../../store/store.js';
import type { DriverLog, Signals } from '../types.js';
import type { HostKeyPins } from '../ssh/shell.js';
import { createSshWorld, worldPins, type SshWorld } from '../ssh-world.js';
import { createLabProvider } from './provider.js';

export { hostKeyRefusedRecorder, storePins } from '../ssh-world.js';

export type LabWorldLog = DriverLog;
export type LabWorld = SshWorld;

export function createLabWorld(
  opts: { store?: Store; pins?: HostKeyPins; log?: LabWorldLog; signals?: Signals } = {},
): LabWorld {
  const pins = worldPins(opts, 'createLabWorld');
  const machines = createLabProvider({ hostKeys: pins });
  // a lab host's faults act on its namespace directly, not over SSH
  return createSshWorld({ ...opts, machines, pins, faults: () => machines });
}
