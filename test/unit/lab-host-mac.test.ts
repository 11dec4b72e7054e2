// A lab host made again (scale-out after scale-in, a vanished machine) keeps its MAC, so the hub's
// ARP entry for its address stays right (a new MAC left connects waiting seconds for re-learning).

import { describe, expect, it } from 'vitest';
import { hostMac } from '../../src/drivers/lab/provider.js';

describe('lab host MAC', () => {
  it('is the same for the same host, different for another, locally administered unicast', () => {
    expect(hostMac('lab/pg01')).toBe(hostMac('lab/pg01'));
    expect(hostMac('lab/pg01')).not.toBe(hostMac('lab/pg02'));
    expect(hostMac('other/pg01')).not.toBe(hostMac('lab/pg01'));
    expect(hostMac('lab/pg01')).toMatch(/^02(:[0-9a-f]{2}){5}$/);
  });
});
