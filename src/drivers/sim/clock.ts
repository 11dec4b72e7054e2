// Injected time. The loop and the simulated world read time only through a Clock, so property
// tests can drive thousands of schedules without a single real sleep. A SimClock also keeps
// timers (the sim's long operations wait on them): they fire only when the clock is advanced,
// in time order.

import { internal } from '../../errors.js';

export interface Clock {
  /** Milliseconds since the epoch (or since the simulation began, for a SimClock). */
  now(): number;
}

/** A clock that can also wait (a SimClock's timers, or real ones). */
export interface TimerClock extends Clock {
  /** Resolve after `ms` of this clock's time; reject with the signal's reason when it aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

interface Timer {
  at: number;
  seq: number;
  fire(): void;
}

/** Manual time: moves only when a test says so. */
export class SimClock implements TimerClock {
  private timers: Timer[] = [];
  private seq = 0;

  constructor(private t = 0) {}

  now(): number {
    return this.t;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason as Error);
      const timer: Timer = { at: this.t + Math.max(0, ms), seq: ++this.seq, fire: () => settle(null) };
      const onAbort = () => settle(signal!.reason as Error);
      const settle = (err: Error | null) => {
        this.timers = this.timers.filter((x) => x !== timer);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.timers.push(timer);
    });
  }

  /** Move time on, firing the timers due meanwhile in time order (their waiters run after this
   *  returns, when now() reads the end time: use advanceSettling to run each at its own time). */
  advance(ms: number): void {
    const end = this.end(ms);
    for (let next = this.nextDue(end); next; next = this.nextDue(end)) {
      this.t = next.at;
      next.fire();
    }
    this.t = end;
  }

  /** As advance, but each timer's waiters (and what they set off) run before the next timer
   *  fires, at that timer's time. `stop`, checked after each, ends the move early (at that time). */
  async advanceSettling(ms: number, stop: () => boolean = () => false): Promise<void> {
    const end = this.end(ms);
    for (let next = this.nextDue(end); next; next = this.nextDue(end)) {
      this.t = next.at;
      next.fire();
      await new Promise((resolve) => setImmediate(resolve));
      if (stop()) return;
    }
    this.t = end;
    await new Promise((resolve) => setImmediate(resolve));
  }

  /** How many timers wait (for tests). */
  pendingTimers(): number {
    return this.timers.length;
  }

  private end(ms: number): number {
    // Time going backwards would let a test "un-expire" a probe budget: always a test bug.
    if (!Number.isFinite(ms) || ms < 0) throw internal(`cannot advance sim clock: invalid step ${ms} ms`);
    return this.t + ms;
  }

  private nextDue(end: number): Timer | undefined {
    let next: Timer | undefined;
    for (const x of this.timers) {
      if (x.at > end) continue;
      if (!next || x.at < next.at || (x.at === next.at && x.seq < next.seq)) next = x;
    }
    return next;
  }
}

export const systemClock: TimerClock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason as Error);
      const t = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(t);
        reject(signal!.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};
