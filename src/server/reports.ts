// What pgpool tells the running operator. pgpool's failover_command (rendered by
// drivers/pgpool/config.ts) POSTs here when pgpool detached a backend it saw fail, and waits for
// the answer: the operator wakes the cluster's loop at once (it may already be failing over), and
// answers once the cluster has a working primary again, or the reported node proved healthy, or
// after a bound. pgpool's own search for the new primary then finds it at its first look.
//
// A report is only a reason to look NOW. The planner never acts on it: it acts on the fresh
// observation the wake-up triggers, so a forged or stale report costs one pass, nothing more.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Store } from '../store/store.js';
import type { Log } from '../reconcile/reconciler.js';

/** The port pgpool's reports go to on the operator's address (PGOP_REPORT_PORT overrides it). */
export const DEFAULT_REPORT_PORT = 7433;

export function reportPort(): number {
  const v = Number(process.env.PGOP_REPORT_PORT);
  return Number.isInteger(v) && v > 0 && v < 65536 ? v : DEFAULT_REPORT_PORT;
}

export interface ReportServerOptions {
  store: Store;
  /** look at this cluster now */
  wake(cluster: string): void;
  log: Log;
  /** how long a report waits for the cluster to have a primary again (default 10 s) */
  answerWithinMs?: number;
  now?: () => number;
}

interface Waiter {
  cluster: string;
  node: string | null;
  since: number;
  deadline: number;
  res: ServerResponse;
}

export class ReportServer {
  private readonly servers = new Map<string, Server>();
  private readonly warned = new Set<string>();
  private readonly waiters = new Set<Waiter>();
  private timer: NodeJS.Timeout | null = null;
  private readonly now: () => number;

  constructor(private readonly opts: ReportServerOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Listen on address:port (once per address). A failure to listen is logged, not fatal: the
   *  operator still detects failures by its own probes. */
  async listen(address: string, port: number = reportPort()): Promise<boolean> {
    const key = `${address}:${port}`;
    if (this.servers.has(key)) return true;
    const server = createServer((req, res) => this.handle(req, res));
    server.keepAliveTimeout = 1000;
    const ok = await new Promise<boolean>((resolve) => {
      server.once('error', (err) => {
        // said once per address: the caller retries until the address exists
        if (!this.warned.has(key)) this.opts.log.warn({ address, port, err: err.message }, 'cannot listen for pgpool reports yet; failures are still detected by probes');
        this.warned.add(key);
        resolve(false);
      });
      server.listen(port, address, () => resolve(true));
    });
    if (ok) {
      this.servers.set(key, server);
      this.opts.log.info({ address, port }, 'listening for pgpool failover reports');
    }
    return ok;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://pgop');
    const m = /^\/v1\/clusters\/([A-Za-z0-9._-]+)\/pool-failover$/.exec(url.pathname);
    if (req.method !== 'POST' || !m) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    const cluster = m[1]!;
    const rec = this.opts.store.getCluster(cluster);
    if (!rec) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`no cluster ${cluster}\n`);
      return;
    }
    const id = Number(url.searchParams.get('node_id'));
    const host = url.searchParams.get('host') ?? '';
    const node = rec.spec.nodes[id]?.name ?? rec.spec.nodes.find((n) => n.address === host)?.name ?? null;
    const now = this.now();
    // The script's start on the pool host's clock (the same clock in the lab; a guest's may drift)
    const started = Number(url.searchParams.get('started'));
    const scriptLagMs = Number.isFinite(started) && started > 0 ? Math.round(now - started * 1000) : undefined;
    this.opts.log.info({ cluster, node, host, from: req.socket.remoteAddress, scriptLagMs }, 'pgpool reports a failed backend');
    try {
      this.opts.store.recordEvent({ time: now, cluster, node, from: null, to: null, ruleId: 'pool.reported', reason: `pgpool detached ${node ?? host} (it saw the backend fail); looking at the cluster now` });
    } catch {
      // the report still wakes the loop
    }
    this.waiters.add({ cluster, node, since: now, deadline: now + (this.opts.answerWithinMs ?? 10_000), res });
    req.resume();
    this.opts.wake(cluster);
    this.check();
    this.timer ??= setInterval(() => this.check(), 20);
  }

  /** Answer every report whose cluster settled (see the top of the file). */
  private check(): void {
    const now = this.now();
    for (const w of this.waiters) {
      const verdict = this.verdict(w, now);
      if (!verdict) continue;
      this.waiters.delete(w);
      if (!w.res.writableEnded) w.res.writeHead(200, { 'content-type': 'text/plain' }).end(`${verdict}\n`);
    }
    if (this.waiters.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private verdict(w: Waiter, now: number): string | null {
    const { store } = this.opts;
    const nodes = store.listNodes(w.cluster);
    const primary = nodes.find((n) => n.state === 'primary');
    if (!primary) return now > w.deadline ? 'no primary yet' : null;
    if (primary.name !== w.node) {
      // A standby, or the old primary after the failover committed: the recorded primary is
      // promoted (commits happen after the side effect).
      return `primary ${primary.name}`;
    }
    const obs = store.getObservation(w.cluster);
    const o = obs?.nodes[primary.name];
    if (obs && obs.at > w.since && o?.reachable && o.postgres?.running && !o.postgres.inRecovery && o.misses === 0) {
      return `primary ${primary.name} is healthy; attach it again`;
    }
    return now > w.deadline ? `primary ${primary.name} still being checked` : null;
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const w of this.waiters) if (!w.res.writableEnded) w.res.writeHead(503).end('operator stopping\n');
    this.waiters.clear();
    await Promise.all([...this.servers.values()].map((s) => new Promise<void>((r) => {
      s.close(() => r());
      s.closeAllConnections();
    })));
    this.servers.clear();
  }
}
