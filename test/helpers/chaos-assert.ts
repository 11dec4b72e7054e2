// The safety checks every chaos scenario ends with, and the story `pgop get events` must tell.

import { expect } from 'vitest';
import type { ChaosLab, EventItem } from './chaos-lab.js';
import type { PoolTrialResult, TrialResult } from './chaos-scenario.js';

const failed = (e: EventItem) => e.rule.endsWith('.failed');
export const isFence = (e: EventItem) => /fence/.test(e.rule) && !/release/.test(e.rule) && !failed(e);
export const isPromote = (e: EventItem) => /promot|adopt/.test(e.rule) && !failed(e);
export const isRepoint = (e: EventItem) => /repoint|follow/.test(e.rule) && !failed(e);
export const isPoolRoute = (e: EventItem) => /^pool\./.test(e.rule) && !failed(e);
export const isRejoin = (e: EventItem) => /rejoin/.test(e.rule) && !failed(e);

/** One line per event; with t0, times are seconds after it (+1.234). */
export function eventTable(events: readonly EventItem[], t0?: number): string {
  const at = (e: EventItem) =>
    t0 === undefined ? e.time.slice(11, 23) : `${((Date.parse(e.time) - t0) / 1000).toFixed(3).padStart(8)}s`;
  return events
    .map(
      (e) =>
        `  ${at(e)} ${(e.node ?? '-').padEnd(5)} ${`${e.from ?? '-'}->${e.to ?? '-'}`.padEnd(22)} ` +
        `${e.rule.padEnd(26)} ${e.reason}`,
    )
    .join('\n');
}

/** Problems with the failover story (empty when it is told in order, each step with a reason):
 *  fence(old) < promote(new) < {repoint(each other standby), pool route, rejoin(old)}. */
export function storyProblems(
  events: readonly EventItem[],
  oldPrimary: string,
  newPrimary: string,
  others: readonly string[],
): string[] {
  const problems: string[] = [];
  const idx = (pred: (e: EventItem) => boolean) => events.findIndex(pred);
  const fence = idx((e) => e.node === oldPrimary && isFence(e));
  const promote = idx((e) => e.node === newPrimary && isPromote(e));
  if (fence < 0) problems.push(`no fence event for ${oldPrimary}`);
  if (promote < 0) problems.push(`no promote event for ${newPrimary}`);
  if (fence >= 0 && promote >= 0 && fence > promote)
    problems.push(`${newPrimary} promoted before ${oldPrimary} was fenced`);
  const after = (what: string, pred: (e: EventItem) => boolean) => {
    const i = events.findIndex((e, j) => j > promote && pred(e));
    if (i < 0) problems.push(`no ${what} event after the promotion`);
  };
  if (promote >= 0) {
    for (const o of others) after(`repoint of ${o}`, (e) => e.node === o && isRepoint(e));
    after('pgpool route', isPoolRoute);
    after(`rejoin of ${oldPrimary}`, (e) => e.node === oldPrimary && isRejoin(e));
  }
  for (const e of events) if (!e.reason.trim()) problems.push(`event ${e.id} (${e.rule}) has no reason`);
  return problems;
}

/** After a failover: one primary, every acked row on it, nothing acked by the old primary after
 *  the promotion, never two primaries at once, the old primary streaming again, the story told. */
export async function expectSafeFailover(
  lab: ChaosLab,
  r: TrialResult,
  o: { story?: boolean; lossAllowed?: { from: number; to: number; why: string } } = {},
): Promise<void> {
  const outcome = {
    old: r.oldPrimary,
    new: r.newPrimary,
    final: r.finalPrimary,
    roles: r.finalRoles,
    notes: r.notes,
  };
  const ctx = `${r.run}: ${JSON.stringify(outcome)}\nevents:\n${eventTable(r.events)}`;
  expect(
    r.notConverged,
    `pgop converged: one primary, every other node streaming, Healthy\n${ctx}`,
  ).toBeNull();
  const primaries = Object.keys(r.finalRoles).filter((n) => r.finalRoles[n] === 'primary');
  expect(primaries, `exactly one primary at the end\n${ctx}`).toHaveLength(1);
  expect(
    Object.values(r.finalRoles).filter((x) => x === 'standby'),
    `every other node a standby\n${ctx}`,
  ).toHaveLength(lab.nodes.length - 1);
  // one at some sweep (the monitor reached it), two at none
  expect(r.maxPrimaries, `never two writable primaries at once\n${ctx}`).toBe(1);
  expect(r.poolAcks, `writes through pgpool were acknowledged\n${ctx}`).toBeGreaterThan(0);
  if (lab.mode === 'sync') {
    // Non-strict sync (README): a second failure inside the window after a promotion, before a
    // standby streams from the new primary, may lose what was acknowledged in that window only.
    const w = o.lossAllowed;
    const outside = r.lostDetail
      .filter((l) => !w || l.ackAt < w.from || l.ackAt > w.to)
      .map((l) => `${l.writer}:${l.id}`);
    expect(
      outside,
      `every acknowledged id present on the primary ` +
        `(sync mode${w ? `; loss allowed only ${w.why}` : ''})\n${ctx}`,
    ).toEqual([]);
  }
  expect(
    r.oldPrimaryAcksAfterPromotion,
    `no write accepted by the old primary after the promotion (${r.promotionSource})\n${ctx}`,
  ).toBe(0);
  const reps = await lab.replicas(primaries[0]!);
  expect(reps[r.oldPrimary], `old primary ${r.oldPrimary} back as a streaming standby\n${ctx}`).toBe(
    primaries[0] === r.oldPrimary ? undefined : 'streaming',
  );
  if (o.story !== false && r.newPrimary) {
    const others = lab.nodes.map((n) => n.name).filter((n) => n !== r.oldPrimary && n !== r.newPrimary);
    expect(
      storyProblems(r.events, r.oldPrimary, r.newPrimary, others),
      `pgop get events tells the failover story\n${ctx}`,
    ).toEqual([]);
  }
}

export function summary(r: TrialResult): string {
  const f = (x: number | null) => (x === null ? '-' : x === Infinity ? 'inf' : `${(x / 1000).toFixed(2)}s`);
  return (
    `${r.run} [${r.mode}] ${r.fault} ${r.oldPrimary} -> ${r.newPrimary ?? '-'} ` +
    `(final ${r.finalPrimary ?? '-'}): ` +
    `RTO pgpool ${f(r.rtoPoolMs)}, direct ${f(r.rtoDirectMs)}, later gap ${f(r.laterGapMs)}, ` +
    `rejoin ${f(r.rejoinMs)}, acks ${r.poolAcks}, lost ${r.lostAcked.length}` +
    `${r.lostAcked.length ? ` (${r.lostAcked.slice(0, 5).join(', ')})` : ''}, ` +
    `old-primary acks after promotion ${r.oldPrimaryAcksAfterPromotion} ` +
    `(promotion from ${r.promotionSource}), ` +
    `max primaries ${r.maxPrimaries}${r.notes.length ? `; ${r.notes.join('; ')}` : ''}${topErrors(r)}` +
    `${r.events.length ? `\nevents (seconds after the fault):\n${eventTable(r.events, r.t0)}` : ''}`
  );
}

/** The most frequent errors of the pgpool writer after the fault (what clients saw). */
function topErrors(r: TrialResult): string {
  const e = Object.entries(r.errors?.pool ?? {})
    .sort((a, b) => b[1] - a[1])
    .slice(0, 3);
  return e.length
    ? `\npgpool writer errors after the fault: ${e.map(([m, n]) => `${n}x ${m.slice(0, 120)}`).join(' | ')}`
    : '';
}

const seconds = (ms: number | null) => (ms === null ? 'never' : `${(ms / 1000).toFixed(2)} s`);

/** Logs a pool-host trial in one line (its events too with PGOP_CHAOS_EVENTS) and returns the
 *  context its assertions print: the whole outcome and the events. */
export function reportPoolTrial(r: PoolTrialResult, log: (line: string) => void): string {
  log(
    `${r.run}: ${r.holder} -> ${r.newHolder ?? 'nowhere'} (primary ${r.primary} -> ` +
      `${r.finalPrimary ?? 'none'}): moved ${seconds(r.vipMovedMs)}, writes through the address back ` +
      `${seconds(r.rtoPoolMs)}, old holder a spare again ${seconds(r.rejoinMs)}, most holders in a ` +
      `sample ${r.maxVipHolders}` +
      (r.arpCatchUpMs !== null
        ? `, new sessions waited ${seconds(r.arpCatchUpMs)} for the client's ARP`
        : '') +
      (r.notes.length ? `; ${r.notes.join('; ')}` : ''),
  );
  const events = eventTable(r.events, r.t0);
  if (process.env.PGOP_CHAOS_EVENTS) log(events);
  return `${r.run}: ${JSON.stringify({ ...r, events: undefined })}\nevents:\n${events}`;
}

/** The pool driver's log lines about `node` in a piece of the serve log (but those of pool host
 *  `notOn`), and a message for a failed expectation. */
export function poolSaid(serveLog: string, node: string, notOn?: string): { text: string; why: string } {
  const text = serveLog
    .split('\n')
    .filter((l) => l.includes(`"node":"${node}"`) && l.includes('pgpool'))
    .map((l) => JSON.parse(l) as { msg: string; poolHost?: string })
    .filter((l) => notOn === undefined || l.poolHost !== notOn)
    .map((l) => l.msg)
    .join('\n');
  const where = notOn === undefined ? '' : ` (pool hosts but ${notOn})`;
  return { text, why: `what the pool driver said of ${node}${where}:\n${text}` };
}
