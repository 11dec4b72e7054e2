// What a pass is waiting on. Every remote call is bounded, so a pass lasts seconds; one that
// lasts a minute is a bug or a wedged dependency, and its cluster's loop is blind meanwhile.
// The warning names the awaits still open, which is where to look.

/** A pass that has run this long is reported, and again after each such period. */
export const SLOW_PASS_MS = 60_000;

export class PassTrace {
  private readonly open = new Map<number, { what: string; since: number }>();
  private next = 0;

  /** Await `p`, named `what` while it is open. */
  async on<T>(what: string, p: Promise<T>): Promise<T> {
    const id = this.next++;
    this.open.set(id, { what, since: Date.now() });
    try {
      return await p;
    } finally {
      this.open.delete(id);
    }
  }

  /** The awaits still open, oldest first, each with how long it has been open. */
  waitingOn(now = Date.now()): string[] {
    return [...this.open.values()].map((o) => `${o.what} (${Math.round((now - o.since) / 1000)} s)`);
  }
}

/** Call `report(elapsedMs)` every `everyMs` until the returned stop is called. */
export function whileSlow(everyMs: number, report: (elapsedMs: number) => void): () => void {
  const t0 = Date.now();
  const timer = setInterval(() => report(Date.now() - t0), everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
