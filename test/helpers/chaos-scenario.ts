// One fault trial against a ChaosLab with writers running, and what it measured: RTO through
// pgpool and direct, acknowledged rows lost, writes the old primary acknowledged after the new
// one was promoted, rejoin time, how many primaries answered at once. Shared by the chaos tests
// (which assert the safety parts) and bench:failover (which reports the numbers).
//
// Definitions (all times ms, same clock as pgop's event times):
// - t0: the moment the fault was issued (just before the FaultInjector call).
// - new primary N: the first promotion candidate that accepted a direct write.
// - promotion time: the earliest of (a) N's own server log line "selected new timeline ID" (its
//   recovery ended; it could not accept a write before), (b) the first direct write N accepted,
//   (c) pgop's promote event for N. (a) is nearly always the earliest; `promotionSource` says
//   which one it was.
// - RTO via pgpool: the longest time without an acknowledged write through pgpool, from the last
//   ack at or before t0 up to the first ack after the promotion time.
// - RTO direct: first write N accepted directly minus t0.
// - later gap: the longest gap between pgpool acks after that (rejoin, pgpool re-routing...).
// - rejoin: from the moment the old primary's node was back (kill: t0; partition: the heal)
//   until it streams from the primary (pg_stat_replication there).

import {
  ChaosLab,
  SplitBrainMonitor,
  VipMonitor,
  waitFor,
  type CliResult,
  type EventItem,
  type Role,
} from './chaos-lab.js';
import { acksAfter, missing, now, outage, sleep, type Ack, type Writer } from './writer.js';

export type System = 'pgop' | 'pgpool';
export type Fault = 'kill' | 'kill-postgres' | 'partition' | 'hang';

export interface DuringContext {
  t0: number;
  oldPrimary: string;
  standbys: string[];
  /** resolves with the node that accepted the first direct write (the first new primary) */
  firstPromoted: Promise<string>;
}

export interface TrialOptions {
  fault: Fault;
  run: string;
  system: System;
  /** partition: heal this long after writes through pgpool resumed (default 500 ms) */
  healAfterMs?: number;
  /** runs right before the fault, writers already running (a first fault the main one joins) */
  beforeFault?: (ctx: { oldPrimary: string; standbys: string[] }) => Promise<void>;
  /** runs concurrently from right after the fault (second faults, killing the operator) */
  during?: (ctx: DuringContext) => Promise<void>;
  /** how long to wait for writes through pgpool to resume (default 90 s) */
  recoverTimeoutMs?: number;
  /** pgop: how long to wait until every node streams from one primary again (default 180 s) */
  convergeTimeoutMs?: number;
  /** pgpool baseline: how long to keep watching after recovery / heal (default 2000 ms) */
  watchAfterMs?: number;
}

export interface TrialResult {
  run: string;
  fault: Fault;
  system: System;
  mode: string;
  oldPrimary: string;
  /** the first node to accept a direct write after the fault */
  newPrimary: string | null;
  /** the primary at the end (after double faults it may differ from newPrimary) */
  finalPrimary: string | null;
  finalRoles: Record<string, Role>;
  t0: number;
  promotedAt: number | null;
  promotionSource: string;
  rtoPoolMs: number | null;
  rtoDirectMs: number | null;
  laterGapMs: number | null;
  poolAcks: number;
  /** acknowledged writes absent on the final primary, as writer:id (through pgpool; by the old
   *  primary before the promotion; the probes' direct writes on a promoted node) */
  lostAcked: string[];
  /** the same, with when each was acknowledged */
  lostDetail: LostAck[];
  /** writes the old primary acknowledged after the promotion time */
  oldPrimaryAcksAfterPromotion: number;
  rejoinMs: number | null;
  /** pgop: one primary, every other node streaming from it and pgop Healthy within the deadline
   *  (the pgpool baseline is never asked to converge: always true there) */
  converged: boolean;
  /** why not (the last state seen and the operator's log tail) */
  notConverged: string | null;
  healAt: number | null;
  /** most nodes that answered as writable primaries in one sweep */
  maxPrimaries: number;
  /** events after t0 (pgop only) */
  events: EventItem[];
  /** per writer, its distinct errors after the fault with counts (diagnosis) */
  errors: Record<string, Record<string, number>>;
  /** the pgpool writer's attempts that failed between the fault and its first write after
   *  the promotion, ms after the fault: when each started, when it failed, why; last, that
   *  first write (diagnosis) */
  poolAttempts: { sentMs: number; failedMs: number; error: string }[];
  notes: string[];
}

/** Distinct error messages (after t) with their counts. */
export function errorCounts(w: Writer, t: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const f of w.failures) if (f.at >= t) out[f.error] = (out[f.error] ?? 0) + 1;
  return out;
}

interface Probe {
  node: string;
  writer: Writer;
}

/** A writer straight to each standby over TCP, retrying fast and stopping at its first
 *  acknowledged write: a standby that took one was writable. */
function standbyProbes(lab: ChaosLab, standbys: string[], run: string): Probe[] {
  return standbys.map((s) => ({
    node: s,
    writer: lab.writer({
      name: `direct-${s}`,
      run,
      via: { node: s, over: 'tcp' },
      stopAfterFirstAck: true,
      retryMs: 20,
      intervalMs: 0,
    }),
  }));
}

/** The single primary, read directly; throws when there is not exactly one. */
export async function currentPrimary(lab: ChaosLab): Promise<{ primary: string; standbys: string[] }> {
  const roles = await lab.roles();
  const primaries = Object.keys(roles).filter((n) => roles[n] === 'primary');
  if (primaries.length !== 1)
    throw new Error(`expected exactly one primary, roles: ${JSON.stringify(roles)}`);
  return {
    primary: primaries[0]!,
    standbys: Object.keys(roles)
      .filter((n) => roles[n] === 'standby')
      .sort(),
  };
}

/** Exactly one primary, every other node a streaming standby of it, and (pgop running) pgop
 *  itself says Healthy. Returns the primary. */
export async function waitConverged(
  lab: ChaosLab,
  timeoutMs: number,
  opts: { requireHealthy?: boolean } = {},
): Promise<string> {
  let primary = '';
  await waitFor(
    async () => {
      const ps = await lab.primaries();
      if (ps.length !== 1) return false;
      primary = ps[0]!;
      const reps = await lab.replicas(primary);
      const ok = lab.nodes.every((n) => n.name === primary || reps[n.name] === 'streaming');
      return ok && (opts.requireHealthy === false || lab.healthy());
    },
    timeoutMs,
    'one primary with every other node streaming from it',
    async () =>
      `roles ${JSON.stringify(await lab.roles().catch(() => ({})))}; ` +
      `pgop: ${lab.cluster()?.phase} ${lab.cluster()?.message}\n${lab.serveLogTail(1500)}`,
  );
  return primary;
}

/** Whether a write through pgpool started after `t` was acknowledged within timeoutMs. */
async function resumed(pool: Writer, t: number, timeoutMs: number): Promise<boolean> {
  const deadline = now() + timeoutMs;
  while (now() < deadline) {
    if (pool.acks.some((a) => a.sentAt > t)) return true;
    await sleep(20);
  }
  return false;
}

/** Until the writer through pgpool has written for a moment (throws when it cannot at all). */
async function writing(pool: Writer, before: string): Promise<void> {
  await Promise.race([pool.firstAck(), sleep(60_000)]);
  if (!pool.acks.length)
    throw new Error(
      `no write through pgpool succeeded before ${before}: ${pool.failures
        .slice(-3)
        .map((f) => f.error)
        .join('; ')}`,
    );
  await sleep(300);
}

function firstAckOf(w: Writer): Ack | undefined {
  return w.acks.reduce<Ack | undefined>((a, b) => (!a || b.ackAt < a.ackAt ? b : a), undefined);
}

/** Longest gap between consecutive acks strictly after `from` (inclusive of from as a start). */
function longestGapAfter(acks: readonly Ack[], from: number): number | null {
  const ts = acks
    .map((a) => a.ackAt)
    .filter((t) => t >= from)
    .sort((a, b) => a - b);
  if (ts.length < 2) return null;
  let best = 0;
  for (let i = 1; i < ts.length; i++) best = Math.max(best, ts[i]! - ts[i - 1]!);
  return best;
}

const PROMOTE_RULE = /promot|adopt/;

/** Run one failover trial. The cluster must have exactly one primary and streaming standbys. */
export async function failoverTrial(lab: ChaosLab, o: TrialOptions): Promise<TrialResult> {
  const notes: string[] = [];
  const { primary: P, standbys } = await currentPrimary(lab);
  const pool = lab.writer({ name: 'pool', run: o.run, via: 'pool' });
  const old = lab.writer({ name: 'old', run: o.run, via: { node: P, over: 'socket' } });
  const probes = standbyProbes(lab, standbys, o.run);
  const monitor = new SplitBrainMonitor(lab);
  const all = [pool, old, ...probes.map((p) => p.writer)];
  const eventsBefore = o.system === 'pgop' ? lab.lastEventId() : 0;
  let t0 = 0;
  let healAt: number | null = null;
  let during: Promise<void> = Promise.resolve();
  let duringError: unknown;
  let rejoinMs = null as number | null;
  let converged = o.system !== 'pgop';
  let notConverged: string | null = null;
  try {
    for (const w of all) w.start();
    monitor.start();
    await writing(pool, 'the fault');

    if (o.beforeFault) await o.beforeFault({ oldPrimary: P, standbys });
    t0 = await lab.fault(P, o.fault);
    let resolvePromoted!: (n: string) => void;
    const firstPromoted = new Promise<string>((r) => (resolvePromoted = r));
    void Promise.race(probes.map((p) => p.writer.firstAck().then(() => p.node))).then(resolvePromoted);
    if (o.during)
      during = o
        .during({ t0, oldPrimary: P, standbys, firstPromoted })
        .catch((err) => void (duringError = err));

    // Writes through pgpool resumed on a promoted node.
    const recoverDeadline = t0 + (o.recoverTimeoutMs ?? 90_000);
    let recovered = false;
    while (now() < recoverDeadline) {
      const direct = probes
        .map((p) => firstAckOf(p.writer)?.ackAt)
        .filter((t): t is number => t !== undefined);
      const first = direct.length ? Math.min(...direct) : undefined;
      // resumed on a promoted node, or (nobody promoted) on the old primary brought back
      if (pool.acks.some((a) => a.ackAt > (first ?? t0 + 1000))) {
        recovered = true;
        break;
      }
      await sleep(20);
    }
    if (!recovered)
      notes.push(
        `writes through pgpool did not resume on a promoted node ` +
          `within ${((o.recoverTimeoutMs ?? 90_000) / 1000).toFixed(0)} s`,
      );

    if (o.fault === 'partition') {
      if (recovered) await sleep(o.healAfterMs ?? 500);
      healAt = await lab.fault(P, 'heal');
    }
    await during;
    if (duringError) throw duringError;

    if (o.system === 'pgop') {
      const back = healAt ?? t0;
      const deadline = now() + (o.convergeTimeoutMs ?? 180_000);
      // Until one primary has every other node streaming and pgop says Healthy; on the way,
      // the first moment the old primary streams from another node is its rejoin time.
      // Not converging is a result too (recorded, with what was measured up to then).
      try {
        await waitFor(
          async () => {
            const ps = await lab.primaries();
            if (ps.length !== 1) return false;
            const reps = await lab.replicas(ps[0]!);
            if (ps[0] !== P && reps[P] === 'streaming' && rejoinMs === null) rejoinMs = now() - back;
            return lab.nodes.every((n) => n.name === ps[0] || reps[n.name] === 'streaming') && lab.healthy();
          },
          Math.max(1000, deadline - now()),
          `one primary with every other node (old primary ${P} too) streaming, pgop Healthy`,
          async () =>
            `roles ${JSON.stringify(await lab.roles().catch(() => ({})))}; ` +
            `pgop: ${lab.cluster()?.phase} ${lab.cluster()?.message}\n${lab.serveLogTail(1500)}`,
        );
        converged = true;
      } catch (err) {
        notConverged = (err as Error).message;
        notes.push(`did not converge: ${notConverged.split('\n')[0]}`);
      }
    } else {
      await sleep(o.watchAfterMs ?? 2000);
    }
    await sleep(300);
  } finally {
    await Promise.all([...all.map((w) => w.stop()), monitor.stop()]);
    await during;
  }
  notes.push(...monitor.notes());

  // ---- what happened
  const finalRoles = await lab.roles();
  const finalPrimaries = Object.keys(finalRoles).filter((n) => finalRoles[n] === 'primary');
  const directFirsts = probes
    .map((p) => ({ node: p.node, ack: firstAckOf(p.writer) }))
    .filter((x) => x.ack)
    .sort((a, b) => a.ack!.ackAt - b.ack!.ackAt);
  const N = directFirsts[0]?.node ?? null;
  const events = o.system === 'pgop' ? (await lab.eventsCli()).filter((e) => e.id > eventsBefore) : [];

  let promotedAt: number | null = null;
  let promotionSource = 'none';
  if (N) {
    const cands: [number | null, string][] = [
      [lab.promotionFromLog(N, t0), `${N}'s server log (selected new timeline ID)`],
      [directFirsts[0]!.ack!.ackAt, `first direct write accepted by ${N}`],
    ];
    const ev = events.find((e) => e.node === N && PROMOTE_RULE.test(e.rule) && !e.rule.endsWith('.failed'));
    if (ev) cands.push([Date.parse(ev.time), `pgop event ${ev.rule}`]);
    for (const [t, src] of cands) {
      if (t !== null && (promotedAt === null || t < promotedAt)) {
        promotedAt = t;
        promotionSource = src;
      }
    }
  }

  // The final primary holds the rows: after a baseline partition there may be two; the one
  // pgpool routed to (N) is where the acknowledged rows went.
  const finalPrimary =
    finalPrimaries.length === 1
      ? finalPrimaries[0]!
      : N && finalPrimaries.includes(N)
        ? N
        : (finalPrimaries[0] ?? null);
  if (finalPrimaries.length > 1)
    notes.push(`${finalPrimaries.length} primaries at the end: ${finalPrimaries.join(', ')}`);
  let lostDetail: LostAck[] = [];
  if (finalPrimary) {
    const oldBefore = old.acks.filter((a) => promotedAt === null || a.ackAt <= promotedAt);
    lostDetail = await lostOn(lab, finalPrimary, o.run, [pool, ...probes.map((p) => p.writer)], {
      writer: old,
      acks: oldBefore,
    });
  } else notes.push('no primary at the end: acknowledged rows not checked');

  const firstPoolAfter =
    promotedAt === null ? undefined : pool.sortedAcks().find((a) => a.ackAt > promotedAt!);
  // Nobody promoted (the old primary was brought back): the longest write gap after the fault.
  const rto = firstPoolAfter
    ? outage(pool.acks, t0, firstPoolAfter.ackAt).ms
    : N === null && pool.acks.some((a) => a.ackAt > t0)
      ? outage(pool.acks, t0).ms
      : null;
  return {
    run: o.run,
    fault: o.fault,
    system: o.system,
    mode: lab.mode,
    oldPrimary: P,
    newPrimary: N,
    finalPrimary,
    finalRoles,
    t0,
    promotedAt,
    promotionSource,
    rtoPoolMs: rto,
    rtoDirectMs: directFirsts[0] ? directFirsts[0].ack!.ackAt - t0 : null,
    laterGapMs: firstPoolAfter ? longestGapAfter(pool.acks, firstPoolAfter.ackAt) : null,
    poolAcks: pool.acks.length,
    lostAcked: lostDetail.map((l) => `${l.writer}:${l.id}`),
    lostDetail,
    oldPrimaryAcksAfterPromotion: promotedAt === null ? 0 : acksAfter(old.acks, promotedAt).length,
    rejoinMs,
    converged,
    notConverged,
    healAt,
    maxPrimaries: monitor.maxPrimaries,
    events,
    errors: Object.fromEntries(all.map((w) => [w.name, errorCounts(w, t0)])),
    poolAttempts: poolAttempts(pool, t0, firstPoolAfter),
    notes,
  };
}

export interface StandbyTrialResult {
  run: string;
  fault: 'kill' | 'partition';
  system: System;
  mode: string;
  node: string;
  primary: string;
  t0: number;
  healAt: number | null;
  /** longest time without an acknowledged write through pgpool after the fault */
  rtoPoolMs: number | null;
  lostAcked: string[];
  maxPrimaries: number;
  /** pgop: from the node being back (kill: the fault; link down: the heal) to it streaming again
   *  with pgop Healthy */
  rejoinMs: number | null;
  converged: boolean;
  notes: string[];
}

/** A fault of one standby with the writer through pgpool running: the primary stays; pgop must
 *  bring the standby back, pgpool's own failover only detaches it. */
export async function standbyTrial(
  lab: ChaosLab,
  o: { fault: 'kill' | 'partition'; run: string; system: System; node?: string },
): Promise<StandbyTrialResult> {
  const notes: string[] = [];
  const { primary, standbys } = await currentPrimary(lab);
  const node = o.node ?? standbys[0]!;
  const pool = lab.writer({ name: 'pool', run: o.run, via: 'pool' });
  const monitor = new SplitBrainMonitor(lab);
  let t0 = 0;
  let healAt: number | null = null;
  let rejoinMs: number | null = null;
  try {
    pool.start();
    monitor.start();
    await writing(pool, 'the fault');
    t0 = await lab.fault(node, o.fault);
    // a killed standby lingers in pg_stat_replication for a moment: not "back" yet
    if (o.fault === 'kill')
      await waitFor(async () => (await lab.replicas(primary))[node] !== 'streaming', 5000, 'gone').catch(() =>
        notes.push(`${node} still streaming 5 s after kill -9`),
      );
    if (!(await resumed(pool, t0, 90_000))) notes.push('writes through pgpool did not resume in 90 s');
    if (o.fault === 'partition') {
      await sleep(500);
      healAt = await lab.fault(node, 'heal');
    }
    if (o.system === 'pgop') rejoinMs = await standbyBack(lab, primary, node, healAt ?? t0, notes);
    else await sleep(2000);
    await sleep(300);
  } finally {
    await Promise.all([pool.stop(), monitor.stop()]);
  }
  notes.push(...monitor.notes());
  return {
    run: o.run,
    fault: o.fault,
    system: o.system,
    mode: lab.mode,
    node,
    primary,
    t0,
    healAt,
    rtoPoolMs: outage(pool.acks, t0).ms,
    lostAcked: (await lostOn(lab, primary, o.run, [pool])).map((l) => `${l.writer}:${l.id}`),
    maxPrimaries: monitor.maxPrimaries,
    rejoinMs,
    converged: o.system !== 'pgop' || rejoinMs !== null,
    notes,
  };
}

/** ms from `back` until `node` streams from `primary` with pgop Healthy (null: not in 180 s). */
async function standbyBack(
  lab: ChaosLab,
  primary: string,
  node: string,
  back: number,
  notes: string[],
): Promise<number | null> {
  try {
    await waitFor(
      async () => (await lab.replicas(primary))[node] === 'streaming' && lab.healthy(),
      180_000,
      `${node} streaming from ${primary} again, pgop Healthy`,
      () => `pgop: ${lab.cluster()?.phase} ${lab.cluster()?.message}\n${lab.serveLogTail(1500)}`,
    );
    return now() - back;
  } catch (err) {
    notes.push(`did not converge: ${(err as Error).message.split('\n')[0]}`);
    return null;
  }
}

export type PoolFault = 'kill' | 'stop' | 'partition';

export interface PoolTrialResult {
  run: string;
  /** on the virtual IP's holder: kill (its pgpool), stop (the host), partition (its link) */
  fault: PoolFault;
  system: System;
  mode: string;
  /** the pool host that held the virtual IP at the fault */
  holder: string;
  /** the sole holder after it moved (null: it did not) */
  newHolder: string | null;
  /** the postgres primary (a pool fault moves no primary) */
  primary: string;
  finalPrimary: string | null;
  t0: number;
  healAt: number | null;
  /** from the fault to the first sample with the virtual IP on another pool host alone */
  vipMovedMs: number | null;
  /** longest time without an acknowledged write through pgpool after the fault */
  rtoPoolMs: number | null;
  lostAcked: string[];
  maxPrimaries: number;
  /** most pool hosts with the virtual IP in one sample (every 50 ms), and of them with their
   *  link up (what a client's ARP could reach) */
  maxVipHolders: number;
  maxLinkedVipHolders: number;
  /** when the holders changed, ms after the fault */
  /** when the holders (or the clients' ARP entry for the address: pool host and state) changed,
   *  ms after the fault */
  vipTimeline: { ms: number; holders: string[]; linkDown: string[]; clientArp: string }[];
  /** pgop: from the old holder being back (kill: the fault; stop: started by pgop; partition:
   *  the heal) to its pgpool listening again, with one holder and pgop Healthy */
  rejoinMs: number | null;
  /** staleArpWaitMs: how long new sessions failed after Healthy while the client's ARP entry
   *  named another host than the address's holder (null: they did not) */
  arpCatchUpMs: number | null;
  converged: boolean;
  events: EventItem[];
  /** the writer through pgpool's failed attempts after the fault up to its first write after the
   *  move, ms after the fault (diagnosis: refused, timed out, reset...) */
  poolAttempts: { sentMs: number; failedMs: number; error: string }[];
  notes: string[];
}

/** New sessions through the address after `failed`: waited for while the client's ARP entry
 *  names a host that does not hold the address (at most `waitMs`), then tried once more; a
 *  failure with the entry right from the start, or one that outlasts the wait, is returned. */
async function afterStaleArp(
  lab: ChaosLab,
  waitMs: number,
  failed: string,
): Promise<{ refused: string | null; arpCatchUpMs: number | null }> {
  const t0 = now();
  let stale = false;
  while (now() - t0 < waitMs) {
    const [held, arp] = await Promise.all([lab.vipHolders(), lab.clientArp()]);
    if (held.length !== 1 || !arp || arp.host === held[0]!.host) break;
    stale = true;
    if (!(await lab.newSessionFails())) return { refused: null, arpCatchUpMs: Math.round(now() - t0) };
    await sleep(500);
  }
  // no stale entry: the session failed for another reason, and is not tried again
  if (!stale) return { refused: failed, arpCatchUpMs: null };
  const refused = await lab.newSessionFails();
  return { refused, arpCatchUpMs: refused ? null : Math.round(now() - t0) };
}

/** A fault of the pool host holding the virtual IP (found at fault time) with the writer through
 *  pgpool running: pgop moves the address to another pool host; the old holder's pgpool comes
 *  back as a spare (pgop restarts it, or starts the host it fenced). `vip`: a running monitor to
 *  read (else one of its own). */
export async function poolHostTrial(
  lab: ChaosLab,
  o: {
    fault: PoolFault;
    run: string;
    system: System;
    vip?: VipMonitor;
    healAfterMs?: number;
    /** pgpool's watchdog: after two holders, the one that keeps the address announces nothing,
     *  so a client's ARP entry may still name the other host; new sessions are then waited for
     *  up to this long (arpCatchUpMs), while the entry names another host than the holder */
    staleArpWaitMs?: number;
  },
): Promise<PoolTrialResult> {
  if (lab.poolHosts.length < 2) throw new Error(`${o.run}: the lab has no pool hosts to fail over between`);
  const notes: string[] = [];
  const { primary } = await currentPrimary(lab);
  const pool = lab.writer({ name: 'pool', run: o.run, via: 'pool' });
  const monitor = new SplitBrainMonitor(lab);
  const vip = o.vip ?? new VipMonitor(lab);
  const ownVip = !o.vip;
  const eventsBefore = o.system === 'pgop' ? lab.lastEventId() : 0;
  let holder = '';
  let t0 = 0;
  let healAt: number | null = null;
  let rejoinMs: number | null = null;
  let arpCatchUpMs: number | null = null;
  let converged = o.system !== 'pgop';
  try {
    pool.start();
    monitor.start();
    if (ownVip) vip.start();
    await writing(pool, 'the fault');
    // from one holder: pgpool's watchdog can hold the address on two hosts for a moment while
    // a member it lost (the last trial's) rejoins; a pair that lasts fails here
    await waitFor(
      async () => !!(holder = await lab.vipHolder()),
      30_000,
      'one pool host holding the virtual IP',
    );
    t0 = await lab.fault(holder, o.fault);
    const faulted = now();
    if (!(await resumed(pool, faulted, 90_000))) notes.push('writes through pgpool did not resume in 90 s');
    if (o.fault === 'partition') {
      await sleep(o.healAfterMs ?? 500);
      healAt = await lab.fault(holder, 'heal');
    }
    if (o.system === 'pgop') {
      let back = healAt ?? (o.fault === 'stop' ? null : t0);
      const deadline = now() + 180_000;
      try {
        await waitFor(
          async () => {
            // stopped: back once pgop started it again (its sshd answers)
            if (back === null && (await lab.poolPortOpen(holder, 300, 22))) back = now();
            if (!(await lab.poolPortOpen(holder, 300))) return false;
            rejoinMs ??= now() - (back ?? t0);
            const held = await lab.vipHolders();
            if (held.length !== 1 || !held[0]!.linkUp || !(await lab.poolServes(held[0]!.host))) return false;
            return lab.healthy() && (await lab.primaries()).length === 1;
          },
          Math.max(1000, deadline - now()),
          `pool host ${holder}'s pgpool listening again, one virtual IP holder, pgop Healthy`,
          async () =>
            `holders ${JSON.stringify(await lab.vipHolders())}; ` +
            `pgop: ${lab.cluster()?.phase} ${lab.cluster()?.message}\n${lab.serveLogTail(1500)}`,
        );
        converged = true;
        // no retry: a cluster that says it is healthy takes a new session (pgpool ends those
        // that start while it handles an attach: pgop is not done before that is over)
        let refused = await lab.newSessionFails();
        if (refused && o.staleArpWaitMs)
          ({ refused, arpCatchUpMs } = await afterStaleArp(lab, o.staleArpWaitMs, refused));
        if (refused) notes.push(`a new session through pgpool after pgop said Healthy failed: ${refused}`);
      } catch (err) {
        rejoinMs = null;
        // the first line says what it waited for, the second what it saw (the serve log follows)
        notes.push(`did not converge: ${(err as Error).message.split('\n').slice(0, 2).join('; ')}`);
      }
    } else await sleep(2000);
    await sleep(300);
  } finally {
    await Promise.all([pool.stop(), monitor.stop(), ownVip ? vip.stop() : Promise.resolve()]);
  }
  notes.push(...monitor.notes());
  const roles = await lab.roles();
  const primaries = Object.keys(roles).filter((n) => roles[n] === 'primary');
  const finalPrimary = primaries.length === 1 ? primaries[0]! : null;
  if (finalPrimary !== primary)
    notes.push(`primary at the end: ${primaries.join(', ') || 'none'} (was ${primary})`);
  const moved = vip.movedAfter(t0, holder);
  const firstAfter = moved ? pool.sortedAcks().find((a) => a.sentAt >= moved.t) : undefined;
  // the monitor may run on (loadTrial's): what it saw up to now
  const until = now();
  const during = vip.changes.filter((c) => c.t <= until);
  return {
    run: o.run,
    fault: o.fault,
    system: o.system,
    mode: lab.mode,
    holder,
    newHolder: moved?.holder ?? null,
    primary,
    finalPrimary,
    t0,
    healAt,
    vipMovedMs: moved ? moved.t - t0 : null,
    rtoPoolMs: outage(pool.acks, t0).ms,
    lostAcked: (await lostOn(lab, finalPrimary ?? primary, o.run, [pool])).map((l) => `${l.writer}:${l.id}`),
    maxPrimaries: monitor.maxPrimaries,
    maxVipHolders: vip.maxHolders,
    maxLinkedVipHolders: vip.maxLinkedHolders,
    vipTimeline: during
      .filter((c, i) => c.t >= t0 || during[i + 1] === undefined || during[i + 1]!.t >= t0)
      .map(({ t, ...c }) => ({ ms: Math.round(t - t0), ...c })),
    rejoinMs,
    arpCatchUpMs,
    converged,
    events: o.system === 'pgop' ? (await lab.eventsCli()).filter((e) => e.id > eventsBefore) : [],
    poolAttempts: poolAttempts(pool, t0, firstAfter),
    notes,
  };
}

export interface LostAck {
  writer: string;
  id: number;
  ackAt: number;
}

/** Acknowledged writes of `writers` (and `extra`'s chosen acks) missing on `node`. */
async function lostOn(
  lab: ChaosLab,
  node: string,
  run: string,
  writers: Writer[],
  extra?: { writer: Writer; acks: Ack[] },
): Promise<LostAck[]> {
  const out: LostAck[] = [];
  const check = async (w: Writer, acks: readonly Ack[]) => {
    if (!acks.length) return;
    const gone = new Set(missing(acks, await lab.ids(node, run, w.name)));
    for (const a of acks) if (gone.has(a.id)) out.push({ writer: w.name, id: a.id, ackAt: a.ackAt });
  };
  for (const w of writers) await check(w, w.acks);
  if (extra) await check(extra.writer, extra.acks);
  return out;
}

export interface SwitchoverResult {
  run: string;
  mode: string;
  system: System;
  /** when the command was issued */
  t0: number;
  from: string;
  to: string | null;
  exitCode: number | null;
  /** longest time without an acknowledged write through pgpool, from the command on */
  unavailableMs: number | null;
  poolAcks: number;
  lostAcked: string[];
  oldPrimaryAcksAfterPromotion: number;
  maxPrimaries: number;
  seconds: number;
  notes: string[];
}

export interface SwitchoverOptions {
  to?: string;
  /** pgop (`pgop switchover`, the default) or pgpool's own (`command` runs it, `to` names the
   *  node): pgpool leaves the old primary a detached primary, so nothing converges; the trial
   *  ends once writes through pgpool resumed */
  system?: System;
  command?: () => Promise<CliResult>;
}

/** A switchover with the writers running. */
export async function switchoverTrial(
  lab: ChaosLab,
  run: string,
  o: SwitchoverOptions = {},
): Promise<SwitchoverResult> {
  const system = o.system ?? 'pgop';
  if (system === 'pgpool' && !(o.command && o.to))
    throw new Error("pgpool's switchover needs command and to");
  const command =
    o.command ?? (() => lab.pgop(['switchover', lab.name, ...(o.to ? ['--to', o.to] : [])], 300_000));
  const notes: string[] = [];
  const { primary: P, standbys } = await currentPrimary(lab);
  const pool = lab.writer({ name: 'pool', run, via: 'pool' });
  const old = lab.writer({ name: 'old', run, via: { node: P, over: 'socket' } });
  const probes = standbyProbes(lab, standbys, run);
  const monitor = new SplitBrainMonitor(lab);
  const all = [pool, old, ...probes.map((p) => p.writer)];
  let t0 = 0;
  let code: number | null = null;
  let seconds = 0;
  try {
    for (const w of all) w.start();
    monitor.start();
    await writing(pool, 'the switchover');
    t0 = now();
    const r = await command();
    seconds = (now() - t0) / 1000;
    code = r.code;
    if (r.code !== 0) notes.push(`${system} switchover exit ${r.code}: ${r.stderr.trim().slice(-300)}`);
    if (system === 'pgop') await waitConverged(lab, 120_000);
    else if (!(await resumed(pool, now(), 90_000))) notes.push('writes through pgpool did not resume');
    await sleep(system === 'pgop' ? 500 : 2000);
  } finally {
    await Promise.all([...all.map((w) => w.stop()), monitor.stop()]);
  }
  notes.push(...monitor.notes());
  const N = system === 'pgop' ? (await currentPrimary(lab)).primary : o.to!;
  const direct = probes.find((p) => p.node === N)?.writer;
  const firstDirect = direct ? (firstAckOf(direct)?.ackAt ?? null) : null;
  const fromLog = lab.promotionFromLog(N, t0);
  const promotedAt = [fromLog, firstDirect]
    .filter((x): x is number => x !== null)
    .reduce<number | null>((a, b) => (a === null || b < a ? b : a), null);
  const oldBefore = old.acks.filter((a) => promotedAt === null || a.ackAt <= promotedAt);
  const lostAcked = (
    await lostOn(lab, N, run, [pool, ...probes.map((p) => p.writer)], { writer: old, acks: oldBefore })
  ).map((l) => `${l.writer}:${l.id}`);
  return {
    run,
    mode: lab.mode,
    system,
    t0,
    from: P,
    to: N === P ? null : N,
    exitCode: code,
    unavailableMs: outage(pool.acks, t0).ms,
    poolAcks: pool.acks.length,
    lostAcked,
    oldPrimaryAcksAfterPromotion: promotedAt === null ? 0 : acksAfter(old.acks, promotedAt).length,
    maxPrimaries: monitor.maxPrimaries,
    seconds,
    notes,
  };
}

/** The writer through pgpool's failed attempts after the fault up to its first acknowledged
 *  write after `firstAfter`, ms after the fault (diagnosis: refused, timed out, reset...). */
function poolAttempts(pool: Writer, t0: number, firstAfter: Ack | undefined) {
  const ms = (t: number) => Math.round(t - t0);
  return pool.failures
    .filter((f) => f.at >= t0 && (!firstAfter || f.sentAt <= firstAfter.ackAt))
    .slice(0, 40)
    .map((f) => ({ sentMs: ms(f.sentAt), failedMs: ms(f.at), error: f.error.slice(0, 120) }))
    .concat(
      firstAfter
        ? [{ sentMs: ms(firstAfter.sentAt), failedMs: ms(firstAfter.ackAt), error: '(acknowledged)' }]
        : [],
    );
}
