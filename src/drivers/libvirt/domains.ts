// Small calls on libvirt domains through @unraid/libvirt, with the answers pgop treats as
// normal (a missing domain, one already stopped) turned into values.

import type { DomainState, Domain, Hypervisor } from '@unraid/libvirt';
import { messageOf, terminal } from '../../errors.js';
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

/** @unraid/libvirt is an optional dependency (a native build): only libvirt clusters load it. */
export async function loadLibvirtBinding(): Promise<typeof import('@unraid/libvirt')> {
  try {
    return await import('@unraid/libvirt');
  } catch (err) {
    const hint = 'reinstall pgop without --omit=optional; it builds against libvirt-dev';
    const what = `the optional package @unraid/libvirt is missing (${hint})`;
    throw terminal(`cannot use the libvirt provider: ${what}: ${messageOf(err)}`, err);
  }
}

/** libvirt's virDomainState numbers (a stable C ABI), so that this needs no runtime import. */
const DOMAIN_STATE_NAMES: readonly DomainStateName[] = [
  'nostate',
  'running',
  'blocked',
  'paused',
  'shutdown',
  'shutoff',
  'crashed',
  'pmsuspended',
];

export function stateName(s: DomainState | number): DomainStateName {
  return DOMAIN_STATE_NAMES[s] ?? 'nostate';
}
