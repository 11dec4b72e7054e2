// The native binding's connectClose frees the connection and keeps the pointer: a second close,
// or a close under a running call, is a use after free (a GLib critical, then the process dies).
// BindingConnection closes exactly once, when no call runs on it.

import { describe, expect, it } from 'vitest';
import type { Hypervisor } from '@unraid/libvirt';
import { BindingConnection, BindingGate } from '../../src/drivers/libvirt/connection.js';

function fakeHypervisor() {
  const h = { closes: 0, busy: 0, closedWhileBusy: false };
  const hv = {
    connectClose: async () => {
      h.closes++;
      if (h.busy > 0) h.closedWhileBusy = true;
    },
  } as unknown as Hypervisor;
  return { h, hv };
}

describe('BindingConnection', () => {
  it('is closed once though each failed call retires it, and only after the last call returned', async () => {
    const { h, hv } = fakeHypervisor();
    const conn = new BindingConnection(hv, new BindingGate(8), 1000);
    let release!: () => void;
    const slow = conn.use('slow', 60_000, async () => {
      h.busy++;
      await new Promise<void>((r) => (release = r));
      h.busy--;
      return 'late';
    });
    // three calls find the connection lost at once, each retires it
    const lost = await Promise.allSettled(
      [1, 2, 3].map(() =>
        conn.use('lost', 60_000, async () => {
          throw new Error('Cannot recv data: Connection reset by peer');
        }),
      ),
    );
    expect(lost.every((r) => r.status === 'rejected')).toBe(true);
    for (let i = 0; i < 3; i++) conn.retire();
    expect(h.closes).toBe(0); // a call still runs on it
    expect(await conn.use('new', 60_000, async () => 'new')).toBeUndefined(); // nothing new starts on it
    release();
    expect(await slow).toEqual({ value: 'late' });
    expect(h.closes).toBe(1);
    conn.retire();
    expect(h.closes).toBe(1);
    expect(h.closedWhileBusy).toBe(false);
  });

  it('an idle connection retired is closed at once', () => {
    const { h, hv } = fakeHypervisor();
    new BindingConnection(hv, new BindingGate(2), 1000).retire();
    expect(h.closes).toBe(1);
  });

  it('its close waits for a free turn at the gate, and is dropped when none comes in time', async () => {
    const gate = new BindingGate(1);
    let release!: () => void;
    // a call on another connection holds the one slot (libvirtd wedged on it)
    const stuck = gate.run('observe domain pg01', 60_000, () => new Promise<void>((r) => (release = r)));
    const waits = fakeHypervisor();
    new BindingConnection(waits.hv, gate, 5_000).retire();
    const dropped = fakeHypervisor();
    new BindingConnection(dropped.hv, gate, 20).retire();
    await new Promise((r) => setTimeout(r, 50));
    expect([waits.h.closes, dropped.h.closes]).toEqual([0, 0]);
    release();
    await stuck;
    await new Promise((r) => setTimeout(r, 0));
    expect([waits.h.closes, dropped.h.closes]).toEqual([1, 0]);
  });
});
