// The binding's calls hold libuv worker threads until libvirtd answers. BindingGate admits at
// most a few at once and gives each a deadline; a call past it fails but keeps its thread's slot
// until the binding returns, and the failure names what libvirtd still owes.

import { describe, expect, it } from 'vitest';
import { BindingGate, BindingTimeout } from '../../src/drivers/libvirt/connection.js';

const never = () => new Promise<never>(() => undefined);

describe('BindingGate', () => {
  it('runs at most its limit at once, in turn', async () => {
    const gate = new BindingGate(2);
    let running = 0;
    let most = 0;
    const call = async () => {
      most = Math.max(most, ++running);
      await new Promise((r) => setTimeout(r, 20));
      running--;
      return 'ok';
    };
    const all = await Promise.all([1, 2, 3, 4, 5].map((i) => gate.run(`call ${i}`, 5000, call)));
    expect(all).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);
    expect(most).toBe(2);
  });

  it('fails a call past its deadline, which keeps its slot until the binding returns', async () => {
    const gate = new BindingGate(1);
    let answer!: (v: string) => void;
    const stuck = gate.run('observe domain a', 50, () => new Promise<string>((r) => (answer = r)));
    await expect(stuck).rejects.toThrow(/cannot observe domain a: libvirt did not answer within 50 ms/);
    await expect(stuck).rejects.toBeInstanceOf(BindingTimeout);
    const waiting = gate.run('observe domain b', 50, async () => 'b');
    await expect(waiting).rejects.toThrow(/still running: observe domain a \(\d+ s\)/);
    answer('late');
    await new Promise((r) => setTimeout(r, 0));
    expect(await gate.run('observe domain c', 50, async () => 'c')).toBe('c');
    expect(gate.stuck()).toEqual([]);
  });

  it('a waiter woken as it gives up passes its turn on', async () => {
    const gate = new BindingGate(1);
    let answer!: () => void;
    const first = gate.run('first', 1000, () => new Promise<void>((r) => (answer = r)));
    const gaveUp = gate.run('gives up', 30, async () => 'never');
    const patient = gate.run('patient', 2000, async () => 'patient');
    await expect(gaveUp).rejects.toThrow(/did not answer within 30 ms/);
    answer();
    await first;
    expect(await patient).toBe('patient');
  });

  it('never admits more than its limit while calls hang', async () => {
    const gate = new BindingGate(2);
    const hung = [1, 2].map((i) => gate.run(`hung ${i}`, 20, never));
    await Promise.allSettled(hung);
    let ran = false;
    const third = gate.run('third', 30, async () => (ran = true));
    await expect(third).rejects.toThrow(/still running: hung 1 \(\d+ s\), hung 2/);
    expect(ran).toBe(false);
  });
});
