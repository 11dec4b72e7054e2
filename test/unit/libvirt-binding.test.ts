// The libvirt provider no longer imports @unraid/libvirt at load time (an optional dependency):
// its domain states are libvirt's virDomainState numbers, checked here against the binding's enum.

import { describe, expect, it } from 'vitest';
import { DomainState } from '@unraid/libvirt';
import { stateName } from '../../src/drivers/libvirt/provider.js';

describe('stateName', () => {
  it("names every state of the binding's DomainState as it does", () => {
    const numeric = Object.entries(DomainState).filter(([, v]) => typeof v === 'number') as [
      string,
      number,
    ][];
    expect(numeric).toHaveLength(8);
    for (const [name, value] of numeric) expect(stateName(value)).toBe(name.toLowerCase());
    expect(stateName(99)).toBe('nostate');
  });
});
