// The event stream (server-sent events): one poller reads new event rows from the store and
// hands them to every open stream. Polling, not a hook in the store: rows written by another
// process (a `pgop delete` request, a second store reader) reach the stream the same way.

import type { ServerResponse } from 'node:http';
import type { Store } from '../store/store.js';
import type { EventItem } from '../cli/output.js';
import { eventsAfter, lastEventId } from './queries.js';

export const POLL_MS = 200;
const KEEPALIVE_MS = 15_000;

interface Subscriber {
  res: ServerResponse;
  cluster?: string;
}

export function sseFrame(e: EventItem): string {
  return `id: ${e.id}\nevent: event\ndata: ${JSON.stringify(e)}\n\n`;
}

export class EventStreams {
  private subscribers = new Set<Subscriber>();
  private lastId: number;
  private poller: NodeJS.Timeout | null = null;
  private keepalive: NodeJS.Timeout | null = null;

  constructor(
    private readonly store: Store,
    private readonly onError: (err: unknown) => void = () => {},
  ) {
    this.lastId = lastEventId(store);
  }

  /** Start a stream on `res`: first the events after `afterId` (a reconnect's Last-Event-ID),
   *  then each new one as it is recorded. */
  open(res: ServerResponse, opts: { cluster?: string; afterId?: number }): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write('retry: 1000\n\n');
    const sub: Subscriber = { res, ...(opts.cluster ? { cluster: opts.cluster } : {}) };
    this.startTimers();
    if (opts.afterId !== undefined && opts.afterId < this.lastId) {
      for (const e of eventsAfter(this.store, opts.afterId, opts.cluster))
        if (e.id <= this.lastId) res.write(sseFrame(e));
    }
    this.subscribers.add(sub);
    res.on('close', () => {
      this.subscribers.delete(sub);
      if (this.subscribers.size === 0) this.stopTimers();
    });
  }

  /** Read new rows now and send them (the poller calls this). */
  poll(): void {
    let fresh: EventItem[];
    try {
      fresh = eventsAfter(this.store, this.lastId);
    } catch (err) {
      this.onError(err);
      return;
    }
    for (const e of fresh) {
      this.lastId = e.id;
      const frame = sseFrame(e);
      for (const s of this.subscribers) if (!s.cluster || s.cluster === e.cluster) s.res.write(frame);
    }
  }

  close(): void {
    this.stopTimers();
    for (const s of this.subscribers) s.res.end();
    this.subscribers.clear();
  }

  private startTimers(): void {
    if (this.poller) return;
    // rows recorded while nobody listened are not news to the next subscriber
    this.lastId = Math.max(this.lastId, lastEventId(this.store));
    this.poller = setInterval(() => this.poll(), POLL_MS);
    this.keepalive = setInterval(() => {
      for (const s of this.subscribers) s.res.write(': keepalive\n\n');
    }, KEEPALIVE_MS);
    this.poller.unref();
    this.keepalive.unref();
  }

  private stopTimers(): void {
    if (this.poller) clearInterval(this.poller);
    if (this.keepalive) clearInterval(this.keepalive);
    this.poller = this.keepalive = null;
  }
}
