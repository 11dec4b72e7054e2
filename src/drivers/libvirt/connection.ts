// One connection of the native binding (@unraid/libvirt) to a hypervisor URI. The binding's
// connectClose frees the connection and keeps the dangling pointer: a second close, or a call
// still running on a worker thread, touches freed memory (a GLib critical, then the process
// dies). So a connection is closed exactly once, and only when no call is running on it.

import type { Hypervisor } from '@unraid/libvirt';

export class BindingConnection {
  private busy = 0;
  private retired = false;
  private closed = false;

  /** Every call of it goes through `gate`, its close too (each holds a worker thread). */
  constructor(
    private readonly h: Hypervisor,
    private readonly gate: BindingGate,
    private readonly closeMs: number,
  ) {}

  /** Run fn on the connection through the gate, unless it was retired by the time its turn came
   *  (then undefined: open a new one). */
  use<T>(
    what: string,
    timeoutMs: number,
    fn: (h: Hypervisor) => Promise<T>,
  ): Promise<{ value: T } | undefined> {
    return this.gate.run(what, timeoutMs, async () => {
      if (this.retired) return undefined;
      this.busy++;
      try {
        return { value: await fn(this.h) };
      } finally {
        this.busy--;
        this.closeWhenIdle();
      }
    });
  }

  /** No new call starts on it; it is closed once the running ones have returned. */
  retire(): void {
    this.retired = true;
    this.closeWhenIdle();
  }

  /** A close that finds no free turn in time is dropped: a connection left open on a wedged
   *  libvirtd costs memory, a thread held outside the gate could stall the process. */
  private closeWhenIdle(): void {
    if (!this.retired || this.busy > 0 || this.closed) return;
    this.closed = true;
    this.gate.run('close a connection', this.closeMs, () => this.h.connectClose()).catch(() => undefined);
  }
}

/** Binding calls that may run at once in this process. Each holds one of libuv's worker threads
 *  (4 unless UV_THREADPOOL_SIZE says otherwise) until libvirtd answers; the others must stay
 *  free for files, TLS and SCRAM, or a wedged libvirtd would stall every cluster's loop. */
export const BINDING_CALLS_AT_ONCE = 2;

interface RunningCall {
  what: string;
  since: number;
}

/** Admits binding calls, at most `limit` at once, each with a deadline. A call past its deadline
 *  fails (transient), but keeps its slot until the binding really returns: the thread is still
 *  held, and a failure that names the calls still running tells the user what libvirtd owes. */
export class BindingGate {
  private readonly running = new Set<RunningCall>();
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly limit = BINDING_CALLS_AT_ONCE) {}

  async run<T>(what: string, timeoutMs: number, call: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    // checked and taken with no await between: a slot is never given twice
    while (this.running.size >= this.limit) await this.turn(deadline, what, timeoutMs);
    const me: RunningCall = { what, since: Date.now() };
    this.running.add(me);
    const settled = call().finally(() => {
      this.running.delete(me);
      this.waiting.shift()?.();
    });
    settled.catch(() => undefined);
    const late = () => new BindingTimeout(`cannot ${what}: libvirt did not answer within ${timeoutMs} ms`);
    return withDeadline(settled, deadline - Date.now(), late);
  }

  /** The calls still running and how long each has run (what a timeout message names). */
  stuck(now = Date.now()): string[] {
    return [...this.running].map((c) => `${c.what} (${Math.round((now - c.since) / 1000)} s)`);
  }

  /** Until a running call returns, or the deadline (then a timeout naming the running calls). */
  private async turn(deadline: number, what: string, timeoutMs: number): Promise<void> {
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => (wake = resolve));
    this.waiting.push(wake);
    try {
      await withDeadline(woken, deadline - Date.now(), () => {
        const running = this.stuck().join(', ');
        return new BindingTimeout(
          `cannot ${what}: libvirt did not answer within ${timeoutMs} ms (still running: ${running})`,
        );
      });
    } catch (err) {
      const i = this.waiting.indexOf(wake);
      // woken just as it gave up: the turn goes to the next in line
      if (i >= 0) this.waiting.splice(i, 1);
      else this.waiting.shift()?.();
      throw err;
    }
  }
}

/** A binding call that did not return in time (the provider turns it into a transient error). */
export class BindingTimeout extends Error {}

function withDeadline<T>(p: Promise<T>, ms: number, late: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(late()), Math.max(0, ms));
  });
  return Promise.race([p, expired]).finally(() => clearTimeout(timer));
}
