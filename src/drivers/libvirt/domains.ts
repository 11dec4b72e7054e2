// Small calls on libvirt domains through @unraid/libvirt, with the answers pgop treats as
// normal (a missing domain, one already stopped) turned into values.

import { DomainState, type Domain, type Hypervisor } from '@unraid/libvirt';
import { messageOf } from '../../errors.js';
import { NOT_FOUND } from './virsh.js';

export type DomainStateName =
  | 'missing'
  | 'running'
  | 'blocked'
  | 'paused'
  | 'shutdown'
  | 'shutoff'
  | 'crashed'
  | 'pmsuspended'
  | 'nostate';

export async function lookup(h: Hypervisor, name: string): Promise<Domain | null> {
  try {
    return await h.domainLookupByName(name);
  } catch (err) {
    if (NOT_FOUND.test(messageOf(err))) return null;
    throw err;
  }
}

/** virDomainDestroy; true when it stopped a running domain, false when it was not running. */
export async function destroy(dom: Domain): Promise<boolean> {
  try {
    await dom.destroy();
    return true;
  } catch (err) {
    const msg = messageOf(err);
    if (
      /not running|domain is not running|Requested operation is not valid/i.test(msg) ||
      NOT_FOUND.test(msg)
    )
      return false;
    throw err;
  }
}

export function stateName(s: DomainState): DomainStateName {
  switch (s) {
    case DomainState.RUNNING:
      return 'running';
    case DomainState.BLOCKED:
      return 'blocked';
    case DomainState.PAUSED:
      return 'paused';
    case DomainState.SHUTDOWN:
      return 'shutdown';
    case DomainState.SHUTOFF:
      return 'shutoff';
    case DomainState.CRASHED:
      return 'crashed';
    case DomainState.PMSUSPENDED:
      return 'pmsuspended';
    default:
      return 'nostate';
  }
}
