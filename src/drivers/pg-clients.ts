// The operator's pg sessions: long-lived ones for probing (one per node, one per pgpool), made on
// first use, dropped on error or end, and closed without waiting on a peer that may be gone; and
// the one way a pg error is worded in pgop's messages (pgMessage).

import pg from 'pg';
import { explainTlsError, scramOnly } from '../tls/client.js';

/** A pg client for the operator's own sessions: it never answers a clear-text or MD5 password
 *  request (src/tls/client.ts). */
export function newClient(cfg: pg.ClientConfig): pg.Client {
  return scramOnly(new pg.Client(cfg));
}

/** client.connect(), settling also when the client is closed meanwhile: node-postgres never
 *  settles a connect whose client was end()ed before it finished (its 'end' handler calls back
 *  only on an end it did not ask for). A probe session dropped mid-connect so hung every later
 *  probe of its node. */
export function connectClient(client: pg.Client): Promise<pg.Client> {
  return new Promise((resolve, reject) => {
    const closed = () => reject(new Error('connection closed before it was established'));
    client.once('end', closed);
    client.connect().then(
      () => {
        client.off('end', closed);
        resolve(client);
      },
      (err: unknown) => {
        client.off('end', closed);
        reject(err);
      },
    );
  });
}

/** Close a pg client without waiting on a peer that may be gone (a fenced or deleted node never
 *  answers the goodbye, and end() would wait for TCP to give up). */
export async function endClient(client: pg.Client, ms = 1000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const gone = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  await Promise.race([client.end().catch(() => undefined), gone]);
  clearTimeout(timer);
  (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}

/** A pg error as one line: the TLS explanation for a refused certificate, else the message with
 *  its SQLSTATE (the code tells "starting up" from "auth failed" where the text may not). */
export function pgMessage(err: unknown): string {
  const e = err as { message?: string; code?: string };
  const tls = explainTlsError(err);
  if (tls) return tls;
  const msg = e?.message ?? String(err);
  return e?.code && /^[0-9A-Z]{5}$/.test(e.code) ? `${msg} (${e.code})` : msg;
}

interface Entry {
  client: pg.Client;
  ready: Promise<pg.Client>;
  dead: boolean;
}

export class ClientCache {
  private readonly entries = new Map<string, Entry>();

  /** @param onLost called when a connected session ends or fails by itself (not dropped by
   *  us): the peer went away, which is worth a look right now. */
  constructor(private readonly onLost?: (key: string, why: string) => void) {}

  /** The connected session for `key`, connecting one made by `make` when there is none. */
  get(key: string, make: () => pg.Client): Promise<pg.Client> {
    const have = this.entries.get(key);
    if (have && !have.dead) return have.ready;
    const client = make();
    const entry: Entry = { client, ready: undefined as unknown as Promise<pg.Client>, dead: false };
    let connected = false;
    const kill = (why?: string) => {
      const wasLive = connected && !entry.dead;
      entry.dead = true;
      if (this.entries.get(key) === entry) this.entries.delete(key);
      if (wasLive && why !== undefined) this.onLost?.(key, why);
    };
    client.on('error', (err: Error) => kill(err.message || 'connection error'));
    client.on('end', () => kill('connection ended'));
    entry.ready = connectClient(client).then(
      () => {
        connected = true;
        return client;
      },
      async (err) => {
        kill(undefined);
        await endClient(client);
        throw err;
      },
    );
    this.entries.set(key, entry);
    return entry.ready;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** Forget the session for `key` (after a failed query) and close it in the background. */
  drop(key: string): void {
    const have = this.entries.get(key);
    if (!have) return;
    have.dead = true;
    this.entries.delete(key);
    void endClient(have.client);
  }

  async close(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    await Promise.allSettled(all.map((e) => endClient(e.client)));
  }
}
