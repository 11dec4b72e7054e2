// Injected time. The loop and the simulated world read time only through a Clock, so property
// tests can drive thousands of schedules without a single real sleep.

import { internal } from '../../errors.js';

export interface Clock {
  /** Milliseconds since the epoch (or since the simulation began, for a SimClock). */
  now(): number;
}

/** Manual time: moves only when a test says so. */
export class SimClock implements Clock {
  constructor(private t = 0) {}

  now(): number {
    return this.t;
  }

  advance(ms: number): void {
    // Time going backwards would let a test "un-expire" a probe budget: always a test bug.
    if (!Number.isFinite(ms) || ms < 0) throw internal(`cannot advance sim clock: invalid step ${ms} ms`);
    this.t += ms;
  }
}

export const systemClock: Clock = { now: () => Date.now() };
