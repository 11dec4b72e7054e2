// `pgop serve`: the reconcile loop, one per store (a lock row names the holder).

import { hostname } from 'node:os';
import { Store, isServeLockLost, processIsAlive } from '../../store/store.js';
import { EXIT, PgopError } from '../../errors.js';
import { Reconciler, Wakeups, runLoop, type Log } from '../../reconcile/reconciler.js';
import { createWorlds } from '../../drivers/registry.js';
import { systemClock } from '../../drivers/sim/clock.js';
import { SimWorld } from '../../drivers/sim/world.js';
import { enterLabHubIfNeeded } from '../lab-ns.js';
import type { ListenConfig, ListenFlags } from '../../server/listen.js';
import type { HttpServer } from '../../server/http.js';

/** How often the lock is checked besides once per loop round (a long pass or sleep does not
 *  delay noticing that the lock was taken over). */
export const LOCK_CHECK_MS = 1_000;

/** Thrown by runServe when its serve lock was taken over; serveCommand exits EXIT.lockLost. */
export class ServeLockLostError extends PgopError {
  readonly lockLost = true;
  constructor(message: string) {
    super('terminal', message);
    this.name = 'ServeLockLostError';
  }
}

export interface ServeOptions {
  untilConverged?: boolean;
  /** stop once this holds (used by `delete`/`switchover` when no serve runs) */
  until?: () => boolean;
  timeoutMs?: number;
  /** warnings only, to stderr (when another command drives the loop) */
  quiet?: boolean;
  /** the HTTP API, metrics and dashboard (none when absent) */
  http?: ListenConfig;
}

/** How long a stopping serve waits for its connections to close (runLoop gives its passes up to
 *  1 s): within 2 s of SIGTERM the process is gone. */
const CLOSE_GRACE_MS = 700;

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/** /readyz fails once the loop has not come round for this long (a pass is short; a stuck
 *  one is not). */
const LOOP_STALL_MS = 60_000;

async function makeLogger(quiet: boolean): Promise<Log> {
  const { pino } = await import('pino');
  // Secrets never reach a log line: drivers never pass them in fields, and these paths are
  // redacted in case a future field carries one.
  const logger = pino(
    {
      level: quiet ? 'warn' : (process.env.PGOP_LOG_LEVEL ?? 'info'),
      base: { pid: process.pid },
      redact: ['*.password', '*.env', 'password', 'env'],
    },
    quiet ? pino.destination(2) : pino.destination(1),
  );
  return {
    info: (obj, msg) => logger.info(obj, msg),
    warn: (obj, msg) => logger.warn(obj, msg),
    error: (obj, msg) => logger.error(obj, msg),
    debug: (obj, msg) => logger.debug(obj, msg),
  };
}

export async function runServe(db: string, o: ServeOptions): Promise<boolean> {
  const store = Store.open(db);
  const log = await makeLogger(!!o.quiet);
  const host = hostname();
  const lock = store.acquireServeLock(process.pid, host, Date.now(), processIsAlive);
  if (!lock.ok) {
    store.close();
    process.stderr.write(
      `error: another pgop serve holds ${db}: pid ${lock.pid} on ${lock.hostname}, ` +
        `since ${new Date(lock.startedAt).toISOString()}\n`,
    );
    process.exitCode = EXIT.locked;
    throw Object.assign(new Error('locked'), { locked: true });
  }
  // From here on this connection commits nothing unless it still holds the lock (SQLite checks
  // it inside each write's transaction), and losing it stops the loop at once.
  store.guardWithServeLock(process.pid, host);
  let lost: string | null = null;
  let storeWritable = true;
  let loopAt = Date.now();
  // The simulated hypervisor outlives its operator: load it, and save it as the loop goes.
  const saved = store.loadSimWorld();
  const sim = saved ? SimWorld.fromJSON(saved) : new SimWorld();
  const hasSim = () => store.listClusters().some((c) => c.spec.provider.type === 'sim');
  const worlds = createWorlds({ store, log, sim });
  const abort = new AbortController();
  const stop = (sig: string) => {
    log.info({ signal: sig }, 'finishing the current step, then exiting');
    abort.abort();
  };
  const onTerm = () => stop('SIGTERM');
  const onInt = () => stop('SIGINT');
  process.on('SIGTERM', onTerm);
  process.on('SIGINT', onInt);
  const checkLock = (): boolean => {
    if (lost !== null) return false;
    let held: boolean;
    try {
      held = store.heartbeat(process.pid, Date.now(), host);
      storeWritable = true;
    } catch (err) {
      storeWritable = false;
      // a busy store is not a lost lock; the next check tells
      log.warn({ err: (err as Error).message }, 'cannot write the serve lock heartbeat');
      return true;
    }
    if (held) return true;
    const now = store.serveLockHolder();
    lost = now
      ? `this serve lost the lock of ${db} to pid ${now.pid} on ${now.hostname} ` +
        `(since ${new Date(now.startedAt).toISOString()}); stopping at once, nothing more is committed`
      : `this serve lost the lock of ${db} (released by someone else); ` +
        `stopping at once, nothing more is committed`;
    log.error({ db }, lost);
    abort.abort();
    return false;
  };
  const lockTimer = setInterval(checkLock, LOCK_CHECK_MS);
  lockTimer.unref();
  // The world's signals (a dropped probe session, a machine's lifecycle event) wake a cluster's
  // loop at once instead of at its next probe.
  const wakeups = new Wakeups();
  const offSignals = worlds.signals.on((s) => {
    log.info({ cluster: s.cluster, node: s.node, signal: s.kind }, s.detail);
    wakeups.wake(s.cluster);
  });
  let http: HttpServer | null = null;
  try {
    if (o.http) {
      const { startServeHttp } = await import('../../server/serve-http.js');
      const loopAlive = () => Date.now() - loopAt < LOOP_STALL_MS;
      const readiness = () => ({ lockHeld: lost === null, storeWritable, loopAlive: loopAlive() });
      http = await startServeHttp(store, o.http, log, readiness);
    }
    await worlds.prepare(store.listClusters().map((c) => c.spec));
    const reconciler = new Reconciler({
      store,
      worldFor: (spec) => worlds.worldFor(spec),
      clock: systemClock,
      log,
    });
    log.info({ db, clusters: store.listClusters().map((c) => c.name) }, 'pgop serve started');
    log.debug?.({ untilConverged: !!o.untilConverged, timeoutMs: o.timeoutMs ?? null }, 'serve options');
    const ok = await runLoop(reconciler, store, systemClock, {
      untilConverged: !!o.untilConverged,
      ...(o.until ? { stopWhen: o.until } : {}),
      ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
      signal: abort.signal,
      wakeups,
      ...(http ? { onPass: http.metrics.onPass.bind(http.metrics) } : {}),
      onTick: () => {
        loopAt = Date.now();
        if (!checkLock()) return;
        if (hasSim()) store.saveSimWorld(sim.toJSON(), Date.now());
      },
    }).catch((err: unknown) => {
      // a write refused by the lock guard in the middle of a pass
      if (isServeLockLost(err)) {
        checkLock();
        if (lost !== null) return false;
      }
      throw err;
    });
    if (lost !== null) throw new ServeLockLostError(lost);
    if (hasSim() || saved) store.saveSimWorld(sim.toJSON(), Date.now());
    log.info({ converged: ok }, 'pgop serve stopped');
    return ok;
  } finally {
    clearInterval(lockTimer);
    offSignals();
    process.off('SIGTERM', onTerm);
    process.off('SIGINT', onInt);
    // Sockets to a node that vanished (its namespace gone, a peer that never answers) must not
    // hold a stop: what does not close in time is abandoned, and serveCommand's caller exits.
    const closed = Promise.allSettled([http?.close(), worlds.close()]);
    const inTime = await Promise.race([closed.then(() => true), delay(CLOSE_GRACE_MS).then(() => false)]);
    if (!inTime) log.warn({ ms: CLOSE_GRACE_MS }, 'connections did not close in time; abandoned');
    // a lock taken over is the new holder's: not ours to release
    if (lost === null) store.releaseServeLock(process.pid, host);
    store.close();
  }
}

export async function serveCommand(
  db: string,
  o: { untilConverged?: boolean; timeout?: number } & ListenFlags,
): Promise<number> {
  const { ListenError, resolveListen } = await import('../../server/listen.js');
  let http: ListenConfig | null;
  try {
    http = resolveListen(o);
  } catch (err) {
    if (!(err instanceof ListenError)) throw err;
    process.stderr.write(`error: ${err.message}\n`);
    return EXIT.invalidInput;
  }
  // Lab clusters: this command runs again in the hub namespace; the HTTP socket is bound here
  // first so that the host (not only the hub) reaches the dashboard.
  const { handOverBeforeHub } = await import('../../server/serve-http.js');
  const handOver = http ? await handOverBeforeHub(http) : undefined;
  await enterLabHubIfNeeded(db, false, handOver);
  handOver?.spawned(); // not re-executed: this process binds the address itself
  try {
    const ok = await runServe(db, {
      untilConverged: !!o.untilConverged,
      ...(o.timeout !== undefined ? { timeoutMs: o.timeout * 1000 } : {}),
      ...(http ? { http } : {}),
    });
    return ok ? EXIT.ok : EXIT.changes;
  } catch (err) {
    if ((err as { locked?: boolean }).locked) return EXIT.locked;
    if (err instanceof ServeLockLostError) {
      process.stderr.write(`error: ${err.message}\n`);
      return EXIT.lockLost;
    }
    throw err;
  }
}
