// The sim's long operations (machine boots, package installs, initdb, copies, removals) in sim
// time. Each takes the time the world sets for its node and kind (none by default: the
// operation then runs at once, as it always did). Meanwhile the world can break under it as it
// breaks under the real one:
// - the job is cancelled (its signal aborts): it stops at once, leaving what it had done;
// - the node it works on is powered off or removed, or its link goes down: the operator's SSH
//   session ends (keepalive) and the operation fails;
// - the primary a copy reads from: a postgres that stops (killed, shut down) closes the
//   connection and the copy fails; a dead link or a powered-off machine sends nothing at all,
//   and pg_basebackup hangs until its job is cancelled (a failover, or its deadline);
// - an injected failure (SimWorld.failNextJob) fails it at its end.
// When the operator process that runs it dies, nothing is reported back (the work never
// settles); what a process left running on the node does still lands (`remote`).

import { terminal, transient } from '../../errors.js';
import type { JobContext } from '../types.js';
import type { SimJobKind, SimWorld } from './world.js';

/** A copy reports this size per second it takes: its job's deadline then covers it (jobs.ts). */
const COPY_BYTES_PER_S = 2 ** 20;

export interface SimWork {
  cluster: string;
  node: string;
  kind: SimJobKind;
  /** for messages: "clone pg02 from pg01" */
  what: string;
  /** what breaks it on its own node: the SSH session (running, linked), or only the machine
   *  staying on (a boot's wait for SSH), or nothing (a removal) */
  needs: 'session' | 'machine' | 'nothing';
  /** a copy's source primary */
  source?: string;
  job?: JobContext | undefined;
  /** false once the operator process that runs the work died */
  alive(): boolean;
  /** what the process on the node achieves by itself when its operator died meanwhile; it lands
   *  at the work's end if the node's processes survived (the same boot) */
  remote?: () => void;
}

/** The work takes no time and cannot fail: the caller does it at once, as before. */
export function isInstant(world: SimWorld, cluster: string, node: string, kind: SimJobKind): boolean {
  return world.jobDuration(cluster, node, kind) === 0 && !world.hasJobFailure(cluster, node);
}

/** Resolves when the work's time is over; rejects when it is cancelled or broken (above). */
export function work(world: SimWorld, w: SimWork): Promise<void> {
  const ms = world.jobDuration(w.cluster, w.node, w.kind);
  const failure = world.takeJobFailure(w.cluster, w.node);
  const signal = w.job?.signal;
  const bootId = world.node(w.cluster, w.node)?.bootId;
  if (w.kind === 'copy') w.job?.progress(0, Math.max(1, Math.ceil(ms / 1000)) * COPY_BYTES_PER_S);
  return new Promise<void>((resolve, reject) => {
    let over = false;
    let hung = false;
    const timer = new AbortController();
    const end = (err: Error | null) => {
      if (over) return;
      over = true;
      stopWatching();
      timer.abort();
      signal?.removeEventListener('abort', onCancel);
      if (w.alive()) return err ? reject(err) : resolve();
      // the operator died: nobody is told; a process on the node may still finish its part
      const n = world.node(w.cluster, w.node);
      if (!err && w.remote && n?.machine === 'running' && n.bootId === bootId) w.remote();
    };
    const onCancel = () => end(asError(signal?.reason, `${w.what}: cancelled`));
    const stopWatching = world.onSettle((cluster) => {
      if (cluster !== w.cluster || over) return;
      const broken = brokenBy(world, w, bootId);
      if (broken === 'hang') hung = true;
      else if (broken) end(transient(`cannot ${w.what}: ${broken}`));
    });
    if (signal?.aborted) return onCancel();
    signal?.addEventListener('abort', onCancel, { once: true });
    world.sleep(ms, timer.signal).then(
      () => {
        // a dead link: pg_basebackup waits on it until its job is cancelled
        if (hung) return;
        const error = failure === 'terminal' ? terminal : transient;
        end(failure ? error(`cannot ${w.what}: injected ${failure} failure`) : null);
      },
      () => {},
    );
  });
}

/** Why the world no longer lets the work go on, 'hang' when it stalls, or null. */
function brokenBy(world: SimWorld, w: SimWork, bootId: number | undefined): string | 'hang' | null {
  const n = world.node(w.cluster, w.node);
  if (w.needs !== 'nothing') {
    if (!n) return 'its machine was removed';
    if (n.machine !== 'running' || n.bootId !== bootId) return 'its machine stopped';
    if (w.needs === 'session' && n.partitioned) return 'the SSH session to it was lost (link down)';
  }
  if (w.source) {
    const s = world.node(w.cluster, w.source);
    if (!world.linkUp(s)) return 'hang';
    if (!s.pg.running || s.pg.inRecovery) return `${w.source} closed the replication connection`;
  }
  return null;
}

function asError(reason: unknown, fallback: string): Error {
  return reason instanceof Error ? reason : transient(fallback);
}
