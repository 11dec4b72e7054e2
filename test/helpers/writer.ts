// Writers for chaos tests and bench:failover. Each writes sequential ids, one autocommit INSERT
// per id, and records an id as acknowledged only when its INSERT returned success. Timestamps
// are epoch milliseconds with a fraction (performance.timeOrigin + performance.now()), the same
// clock as Date.now() in other processes (pgop's event times).
//
// - through pgpool (RTO as clients see it),
// - directly to the promotion candidates (RTO direct: the first write a new primary accepts),
// - directly to the old primary over its unix socket (reached from the hub through the node's
//   host directory, so it works while the node's link is down): writes it acknowledges after the
//   new primary was promoted are split-brain writes.
//
// A write that hangs (a dead peer behind pgpool, a partitioned node) would hide the moment the
// system recovers: while the newest attempt has been outstanding for hedgeMs, another one starts
// on a new connection (at most maxInFlight at once), so recovery is seen within ~hedgeMs even
// with generous per-attempt timeouts. No test or bench depends on this file's timing being exact.

import pg from 'pg';

export const now = () => performance.timeOrigin + performance.now();

export interface Ack {
  id: number;
  sentAt: number;
  ackAt: number;
}

export interface Failure {
  id: number;
  sentAt: number;
  at: number;
  error: string;
}

export interface WriterOptions {
  /** stored in the row (writer column); one writer name per run */
  name: string;
  /** stored in the row (run column): one label per scenario or trial */
  run: string;
  /** where to connect (host: an address or a unix socket directory) */
  connect: pg.ClientConfig;
  table?: string;
  /** at most one write started per intervalMs while writes succeed (default 10) */
  intervalMs?: number;
  /** after a failure, the next attempt after this long (default 25) */
  retryMs?: number;
  /** start another attempt while the newest one has been outstanding this long; 0: never (default 250) */
  hedgeMs?: number;
  /** attempts at once, hedges included (default 4: each holds one of pgpool's children, and a
   *  child stuck on a black-holed backend stays stuck after the client gave up) */
  maxInFlight?: number;
  /** generous by default (3000 each): a session through pgpool on a loaded 2-core machine can
   *  take over a second to set up; hedging, not short timeouts, gives the time resolution */
  connectTimeoutMs?: number;
  queryTimeoutMs?: number;
  /** stop by itself after the first acknowledged write (a probe) */
  stopAfterFirstAck?: boolean;
  /** close the session after each write: every write is what a newly connecting client gets */
  newSessionEach?: boolean;
  /** first id (default 1) */
  firstId?: number;
}

/** SQLSTATEs after which the session is still usable (the node said no, e.g. read-only). */
const KEEP_SESSION = new Set(['25006', '23505', '42P01', '40001']);

export class Writer {
  readonly acks: Ack[] = [];
  readonly failures: Failure[] = [];
  private nextId: number;
  private inFlight = 0;
  private newestLaunch = 0;
  private earliestNext = 0;
  private idle: pg.Client[] = [];
  private all = new Set<pg.Client>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  private readonly o: Required<Omit<WriterOptions, 'connect'>> & { connect: pg.ClientConfig };
  private firstAckWaiters: (() => void)[] = [];

  constructor(opts: WriterOptions) {
    this.o = {
      table: 'chaos_writes',
      intervalMs: 10,
      retryMs: 25,
      hedgeMs: 250,
      maxInFlight: 4,
      connectTimeoutMs: 3000,
      queryTimeoutMs: 3000,
      stopAfterFirstAck: false,
      newSessionEach: false,
      firstId: 1,
      ...opts,
    };
    if (!/^[a-z_][a-z0-9_]*$/.test(this.o.table)) throw new Error(`bad table name ${this.o.table}`);
    this.nextId = this.o.firstId;
  }

  get name(): string {
    return this.o.name;
  }

  get running(): boolean {
    return !this.stopped;
  }

  start(): this {
    if (!this.stopped) return this;
    this.stopped = false;
    this.tick();
    return this;
  }

  /** Stop starting writes; wait (bounded) for the ones in flight, close every session. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const deadline = now() + Math.max(this.o.connectTimeoutMs, this.o.queryTimeoutMs) + 500;
    while (this.inFlight > 0 && now() < deadline) await sleep(10);
    for (const c of [...this.all]) destroyClient(c);
    this.all.clear();
    this.idle = [];
  }

  /** Resolves at the first acknowledged write (or at once if there was one). */
  firstAck(): Promise<void> {
    if (this.acks.length) return Promise.resolve();
    return new Promise((r) => this.firstAckWaiters.push(r));
  }

  lastAck(): Ack | undefined {
    return this.acks.reduce<Ack | undefined>((a, b) => (!a || b.ackAt > a.ackAt ? b : a), undefined);
  }

  /** Acks in order of acknowledgement. */
  sortedAcks(): Ack[] {
    return [...this.acks].sort((a, b) => a.ackAt - b.ackAt);
  }

  private tick = () => {
    if (this.stopped) return;
    const t = now();
    if (this.inFlight === 0) {
      if (t >= this.earliestNext) this.launch(t);
    } else if (
      this.o.hedgeMs > 0 &&
      this.inFlight < this.o.maxInFlight &&
      t - this.newestLaunch >= this.o.hedgeMs
    ) {
      this.launch(t);
    }
    this.timer = setTimeout(this.tick, 5);
  };

  private launch(t: number) {
    const id = this.nextId++;
    this.inFlight++;
    this.newestLaunch = t;
    this.earliestNext = t + this.o.intervalMs;
    void this.attempt(id, t).finally(() => {
      this.inFlight--;
    });
  }

  private async attempt(id: number, sentAt: number): Promise<void> {
    let client = this.idle.pop();
    try {
      if (!client) {
        client = new pg.Client({
          ...this.o.connect,
          connectionTimeoutMillis: this.o.connectTimeoutMs,
          query_timeout: this.o.queryTimeoutMs,
          application_name: `chaos-${this.o.name}`,
        });
        client.on('error', () => {});
        this.all.add(client);
        await client.connect();
      }
      await client.query(`INSERT INTO ${this.o.table} (run, writer, id) VALUES ($1, $2, $3)`, [
        this.o.run,
        this.o.name,
        id,
      ]);
      const ackAt = now();
      this.acks.push({ id, sentAt, ackAt });
      for (const w of this.firstAckWaiters.splice(0)) w();
      // one idle session is enough: a hedge's would hold one of pgpool's children for nothing
      if (this.stopped || this.o.newSessionEach || this.idle.length > 0) {
        destroyClient(client);
        this.all.delete(client);
      } else this.idle.push(client);
      if (this.o.stopAfterFirstAck) this.stopped = true;
    } catch (err) {
      const e = err as { code?: string; message?: string };
      this.failures.push({
        id,
        sentAt,
        at: now(),
        error: `${e.code ? `${e.code} ` : ''}${e.message ?? String(err)}`,
      });
      this.earliestNext = now() + this.o.retryMs;
      if (client) {
        if (e.code && KEEP_SESSION.has(e.code) && !this.stopped && !this.o.newSessionEach)
          this.idle.push(client);
        else {
          destroyClient(client);
          this.all.delete(client);
        }
      }
    }
  }
}

/** A client ended at once: its socket destroyed (a peer that went silent would hold `end()`). */
export function destroyClient(c: pg.Client) {
  (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
  c.end().catch(() => undefined);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------ analysis

export interface Outage {
  /** last ack at or before the fault (null: none) */
  lastBefore: number | null;
  /** first ack ending the longest gap after the fault (null: no ack after the fault) */
  firstAfter: number | null;
  /** the longest time without an acknowledged write, from the last ack before the fault until
   *  `until` (ms); Infinity when nothing was acknowledged after the fault */
  ms: number;
}

/**
 * Write unavailability caused by a fault at t0: the longest gap between consecutive
 * acknowledgements from the last one at or before t0 up to `until` (default: the last ack).
 * A trailing gap (no ack between the last ack and `until`) counts too.
 */
export function outage(acks: readonly Ack[], t0: number, until?: number): Outage {
  const times = acks.map((a) => a.ackAt).sort((a, b) => a - b);
  const before = times.filter((t) => t <= t0);
  const lastBefore = before.length ? before[before.length - 1]! : null;
  const after = times.filter((t) => t > t0 && (until === undefined || t <= until));
  if (!after.length) return { lastBefore, firstAfter: null, ms: Infinity };
  let prev = lastBefore ?? t0;
  let best = { from: prev, to: after[0]! };
  for (const t of after) {
    if (t - prev > best.to - best.from) best = { from: prev, to: t };
    prev = t;
  }
  if (until !== undefined && until - prev > best.to - best.from)
    return { lastBefore, firstAfter: null, ms: until - prev };
  return { lastBefore, firstAfter: best.to, ms: best.to - best.from };
}

/** Acks acknowledged strictly after t. */
export function acksAfter(acks: readonly Ack[], t: number): Ack[] {
  return acks.filter((a) => a.ackAt > t);
}

/** Ids in `acked` missing from `present`. */
export function missing(acked: readonly Ack[], present: Iterable<number>): number[] {
  const have = new Set(present);
  return acked
    .filter((a) => !have.has(a.id))
    .map((a) => a.id)
    .sort((a, b) => a - b);
}

export const TABLE_DDL =
  'CREATE TABLE IF NOT EXISTS chaos_writes (run text NOT NULL, writer text NOT NULL, id bigint NOT NULL, ' +
  'at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (run, writer, id))';
