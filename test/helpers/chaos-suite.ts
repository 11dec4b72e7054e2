// The frame of a chaos test file: one lab cluster for the whole file, up before its tests and down
// after them, and the deadlines its trials allow.
import { afterAll, beforeAll, expect } from 'vitest';
import { ChaosLab, type ChaosLabOptions } from './chaos-lab.js';
import { IN_LAB } from './lab-env.js';

export const chaosLog = (s: string) => process.stdout.write(`[chaos] ${s}\n`);

/** Generous convergence deadlines (a loaded 2-core machine), never timing assertions. */
export const CHAOS_DEADLINES = { recoverTimeoutMs: 60_000, convergeTimeoutMs: 150_000 };

/** Call inside the file's describe (skipped outside the lab: then the lab is never made). */
export function useChaosLab(options: Omit<ChaosLabOptions, 'log'>): ChaosLab {
  const lab = IN_LAB ? new ChaosLab({ ...options, log: chaosLog }) : (null as unknown as ChaosLab);
  beforeAll(async () => {
    await lab.up();
  }, 400_000);
  afterAll(async () => {
    // serve stops within 2 s of SIGTERM whatever its sockets do; the delete leaves nothing
    const stopMs = await lab.stopServe('SIGTERM');
    await lab.down();
    expect(stopMs ?? 0, 'serve exited within 2 s of SIGTERM').toBeLessThanOrEqual(2_000);
    expect(await lab.leftoverNamespaces(), 'no namespace of the cluster left').toEqual([]);
  }, 300_000);
  return lab;
}
