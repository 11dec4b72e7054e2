// bench:failover under a real client's load (PGOP_BENCH_LOAD=pgbench): pgbench's TPC-B-like
// clients (bench/pgbench-load.ts) and a probe that opens a new session for every write run
// through pgpool around each trial, the light writers of test/helpers/chaos-scenario.ts inside it.
// Per trial: (a) how long after the fault a NEW session's write first commits, (b) the longest
// time one pgbench client went without a commit, sessions aborted, pgbench commits missing from
// pgbench_history, whether the bank still balances, and the most primaries seen at once.
//
// The pool scenarios (pool-kill, pool-down, pool-partition) fault the pool host that holds the
// virtual IP (a lab with pgpool.hosts, found at fault time): its pgpool killed, its machine
// stopped, its link taken down (healed after writes resumed). With pool hosts, both hosts'
// addresses are sampled every 50 ms for the whole trial: two holders in one sample is recorded.

import { join } from 'node:path';
import type { ChaosLab } from '../test/helpers/chaos-lab.js';
import { VipMonitor } from '../test/helpers/chaos-lab.js';
import {
  currentPrimary,
  failoverTrial,
  poolHostTrial,
  standbyTrial,
  switchoverTrial,
  type System,
} from '../test/helpers/chaos-scenario.js';
import { labCaFile } from '../test/helpers/lab-tls.js';
import { now, outage, sleep, type Writer } from '../test/helpers/writer.js';
import { poolSwitchover } from './failover-baseline.js';
import { commitGap } from './pgbench-parse.js';
import { initPgbench, PgbenchLoad, type ClientRun, type PgbenchTarget } from './pgbench-load.js';
import { finite, med, sec, spread, table } from './table.js';

export type PoolScenario = 'pool-kill' | 'pool-down' | 'pool-partition';
export type Scenario =
  'primary-kill' | 'primary-partition' | 'standby-kill' | 'standby-partition' | 'switchover' | PoolScenario;
export const POOL_SCENARIOS: PoolScenario[] = ['pool-kill', 'pool-down', 'pool-partition'];
export const SCENARIOS: Scenario[] = [
  'primary-kill',
  'primary-partition',
  'standby-kill',
  'standby-partition',
  'switchover',
  ...POOL_SCENARIOS,
];
export const isPoolScenario = (s: string): s is PoolScenario => (POOL_SCENARIOS as string[]).includes(s);
const TITLE: Record<Scenario, string> = {
  'primary-kill': 'kill -9 primary',
  'primary-partition': 'primary link down',
  'standby-kill': 'kill -9 standby',
  'standby-partition': 'standby link down',
  switchover: 'switchover',
  'pool-kill': 'kill -9 pgpool on VIP holder',
  'pool-down': 'VIP holder host down',
  'pool-partition': 'VIP holder link down',
};
const POOL_FAULT = { 'pool-kill': 'kill', 'pool-down': 'stop', 'pool-partition': 'partition' } as const;
/** pgbench committing on every client before the fault */
const WARMUP_MS = 2000;
/** after the scenario, how long the load keeps running for every client to commit again */
const BACK_TIMEOUT_MS = 30_000;

export interface BankSums {
  accounts: string;
  branches: string;
  tellers: string;
  history: string;
  historyRows: number;
}

export interface LoadTrial {
  run: string;
  scenario: Scenario;
  system: System;
  mode: string;
  t0: number;
  /** (a) ms from the fault to the first commit of a session opened after it (Infinity: none) */
  newSessionMs: number;
  /** the longest time without a new session's commit, from the last one before the fault: a
   *  fault that bites late (pgpool noticing a dead standby) fails sessions after a first success */
  newSessionGapMs: number;
  /** (b) the longest time one pgbench client went without a commit, from its last before the fault */
  pgbenchGapMs: number;
  /** the same for all clients together (nobody committed) */
  pgbenchAllGapMs: number;
  sessionsAborted: number;
  /** pgbench processes started again after their session died (or could not connect) */
  restarts: number;
  /** pgbench's "transactions actually processed", summed (null: a run ended without its report) */
  committed: number | null;
  historyGrowth: number;
  /** committed minus history growth, when positive */
  lostTx: number | null;
  bank: BankSums;
  balanced: boolean;
  maxPrimaries: number;
  /** most pool hosts holding the virtual IP in one 50 ms sample (null: one pool host, no VIP) */
  maxVipHolders: number | null;
  /** times the virtual IP came to rest on another pool host during the trial (null: no VIP) */
  vipMoves: number | null;
  finalPrimary: string | null;
  /** the light writer through pgpool: its longest time without an acknowledged write */
  writerRtoMs: number | null;
  notes: string[];
  /** per client: its pgbench processes, commits, longest gap and abort messages (diagnosis) */
  perClient: {
    client: number;
    runs: number;
    commits: number;
    gapMs: number;
    aborted: string[];
    /** each run's exit code and how it ended */
    ends: string[];
  }[];
  /** the scenario's own trial (chaos-scenario.ts) */
  detail: object;
  /** the probe's attempts from the fault to its first new session: where the time went */
  probeAttempts: string[];
}

interface ScenarioOutcome {
  t0: number;
  finalPrimary: string | null;
  maxPrimaries: number;
  writerRtoMs: number | null;
  notes: string[];
  detail: object;
}

export function pgbenchTarget(lab: ChaosLab): PgbenchTarget {
  return {
    host: lab.poolAddress,
    port: lab.poolPort,
    user: 'postgres',
    password: lab.superuserPassword(),
    database: 'postgres',
    caFile: lab.tls ? labCaFile(lab.stateDir, lab.name) : null,
  };
}

const initialised = new WeakSet<ChaosLab>();

/** pgbench's tables, once per cluster (pgbench -i drops what was there). */
async function ensurePgbench(lab: ChaosLab, scale: number): Promise<void> {
  if (initialised.has(lab)) return;
  await initPgbench(pgbenchTarget(lab), join(lab.work, 'pgbench', 'init'), scale);
  initialised.add(lab);
}

async function bankSums(lab: ChaosLab, node: string): Promise<BankSums> {
  const sum = (t: string, c: string) => `(SELECT coalesce(sum(${c}), 0)::text FROM ${t})`;
  const [r] = await lab.query<BankSums & { historyRows: string }>(
    node,
    `SELECT ${sum('pgbench_accounts', 'abalance')} AS accounts, ${sum('pgbench_branches', 'bbalance')} ` +
      `AS branches, ${sum('pgbench_tellers', 'tbalance')} AS tellers, ${sum('pgbench_history', 'delta')} ` +
      `AS history, (SELECT count(*) FROM pgbench_history) AS "historyRows"`,
  );
  return { ...r!, historyRows: Number(r!.historyRows) };
}

async function runScenario(
  lab: ChaosLab,
  scenario: Scenario,
  system: System,
  run: string,
  target: string,
  vip: VipMonitor | null,
): Promise<ScenarioOutcome> {
  if (isPoolScenario(scenario)) {
    const r = await poolHostTrial(lab, {
      fault: POOL_FAULT[scenario],
      run,
      system,
      ...(vip ? { vip } : {}),
    });
    return { ...r, writerRtoMs: r.rtoPoolMs, detail: r };
  }
  if (scenario === 'switchover') {
    const r = await switchoverTrial(
      lab,
      run,
      system === 'pgop' ? { to: target } : { to: target, system, command: () => poolSwitchover(lab, target) },
    );
    const finalPrimary = r.to ?? r.from;
    return { ...r, finalPrimary, writerRtoMs: r.unavailableMs, detail: r };
  }
  const fault = scenario.endsWith('kill') ? 'kill' : 'partition';
  const r = scenario.startsWith('standby')
    ? await standbyTrial(lab, { fault, run, system, node: target })
    : await failoverTrial(lab, { fault, run, system });
  const finalPrimary = 'finalPrimary' in r ? r.finalPrimary : r.primary;
  return { ...r, finalPrimary, writerRtoMs: r.rtoPoolMs, detail: r };
}

/** A trial of `scenario` on a ready cluster (under `system`, already in charge) with pgbench
 *  and the new-session probe running around it. `target`: the standby to fault, or the node
 *  to switch over to (a pool scenario finds the virtual IP's holder itself). */
export async function loadTrial(
  lab: ChaosLab,
  o: { scenario: Scenario; system: System; run: string; target: string; clients: number; scale: number },
): Promise<LoadTrial> {
  await ensurePgbench(lab, o.scale);
  const before = await bankSums(lab, (await currentPrimary(lab)).primary);
  const load = new PgbenchLoad({
    target: pgbenchTarget(lab),
    clients: o.clients,
    dir: join(lab.work, 'pgbench', o.run),
  }).start();
  const probe = lab
    .writer({ name: 'probe', run: o.run, via: 'pool', newSessionEach: true, intervalMs: 50, hedgeMs: 50 })
    .start();
  // with pool hosts: two holders of the virtual IP at once, whatever the scenario
  const vip = lab.poolHosts.length ? new VipMonitor(lab).start() : null;
  let outcome: ScenarioOutcome | undefined;
  let until = 0;
  let runs: ClientRun[] = [];
  try {
    await sleep(WARMUP_MS);
    outcome = await runScenario(lab, o.scenario, o.system, o.run, o.target, vip);
    if (!(await load.committingAfter(outcome.t0, BACK_TIMEOUT_MS)))
      outcome.notes.push(`a pgbench client did not commit again within ${BACK_TIMEOUT_MS / 1000} s`);
  } finally {
    until = now();
    [runs] = await Promise.all([load.stop(), probe.stop(), vip?.stop()]);
  }
  if (vip && vip.maxHolders > 1)
    outcome.notes.push(
      `two pool hosts held the virtual IP at once (first ${sec(vip.firstDoubleAt! - outcome.t0)} s ` +
        `after the fault; ${vip.maxLinkedHolders} of them with their link up)`,
    );
  // a pool scenario moves the address once; any other move is pgop's own doing (a false failover)
  const moves = vip?.moves() ?? [];
  if (moves.length > (isPoolScenario(o.scenario) ? 1 : 0))
    outcome.notes.push(
      `the virtual IP moved ${moves.length} time(s): ` +
        moves.map((m) => `to ${m.holder} at +${sec(m.t - outcome.t0)} s`).join(', '),
    );
  const after = outcome.finalPrimary ? await bankSums(lab, outcome.finalPrimary) : null;
  if (!after) throw new Error(`${o.run}: no primary at the end to count pgbench_history on`);
  return {
    ...measure(runs, probe, outcome, until, before, after),
    maxVipHolders: vip ? vip.maxHolders : null,
    vipMoves: vip ? moves.length : null,
    ...o,
    mode: lab.mode,
  };
}

function measure(
  runs: ClientRun[],
  probe: Writer,
  s: ScenarioOutcome,
  until: number,
  before: BankSums,
  after: BankSums,
): Omit<LoadTrial, 'run' | 'scenario' | 'system' | 'mode' | 'maxVipHolders' | 'vipMoves'> {
  const byClient = new Map<number, number[]>();
  for (const r of runs) byClient.set(r.client, [...(byClient.get(r.client) ?? []), ...r.commits]);
  const gaps = [...byClient.values()].map((ts) => commitGap(ts, s.t0, until));
  const clients = [...byClient.keys()].map((client, i) => {
    const own = runs.filter((r) => r.client === client);
    const aborted = own.flatMap((r) => r.report.aborted).slice(0, 3);
    const ends = own.map((r) => `${r.exitCode}: ${r.ended}`);
    return {
      client,
      runs: own.length,
      commits: byClient.get(client)!.length,
      gapMs: gaps[i]!,
      aborted,
      ends,
    };
  });
  const firstNew = probe.sortedAcks().find((a) => a.sentAt >= s.t0);
  const committed = runs.some((r) => r.report.processed === null && r.commits.length)
    ? null
    : runs.reduce((n, r) => n + (r.report.processed ?? 0), 0);
  const growth = after.historyRows - before.historyRows;
  const { accounts, branches, tellers, history } = after;
  const notes = [...s.notes];
  if (committed === null) notes.push('a pgbench run ended without its report: committed count unknown');
  return {
    t0: s.t0,
    newSessionMs: firstNew ? firstNew.ackAt - s.t0 : Infinity,
    newSessionGapMs: outage(probe.acks, s.t0, until).ms,
    pgbenchGapMs: gaps.length ? Math.max(...gaps) : Infinity,
    pgbenchAllGapMs: commitGap([...byClient.values()].flat(), s.t0, until),
    sessionsAborted: runs.reduce((n, r) => n + r.report.aborted.length, 0),
    restarts: runs.length - byClient.size,
    committed,
    historyGrowth: growth,
    lostTx: committed === null ? null : Math.max(0, committed - growth),
    bank: after,
    balanced: accounts === branches && branches === tellers && tellers === history,
    maxPrimaries: s.maxPrimaries,
    finalPrimary: s.finalPrimary,
    writerRtoMs: s.writerRtoMs,
    notes,
    perClient: clients,
    detail: s.detail,
    probeAttempts: probeAttempts(probe, s.t0, firstNew?.ackAt ?? until),
  };
}

/** "+sent..+done ok|error" for each probe attempt sent from the fault until end (40 at most). */
function probeAttempts(probe: Writer, t0: number, end: number): string[] {
  const rel = (t: number) => `+${Math.round(t - t0)}`;
  const acks = probe.acks.map((a) => ({ sentAt: a.sentAt, line: `${rel(a.sentAt)}..${rel(a.ackAt)} ok` }));
  const fails = probe.failures.map((f) => ({
    sentAt: f.sentAt,
    line: `${rel(f.sentAt)}..${rel(f.at)} ${f.error.slice(0, 80)}`,
  }));
  return [...acks, ...fails]
    .filter((a) => a.sentAt >= t0 && a.sentAt <= end)
    .sort((a, b) => a.sentAt - b.sentAt)
    .slice(0, 40)
    .map((a) => a.line);
}

/** One line per trial as it ends. */
export function loadLine(t: LoadTrial): string {
  return (
    `${t.run}: new session ${sec(t.newSessionMs)}s (gap ${sec(t.newSessionGapMs)}s)  ` +
    `pgbench gap ${sec(t.pgbenchGapMs)}s (all clients ${sec(t.pgbenchAllGapMs)}s)  ` +
    `aborted ${t.sessionsAborted}  ` +
    `committed ${t.committed ?? '?'} / history +${t.historyGrowth}  lost ${t.lostTx ?? '?'}  ` +
    `bank ${t.balanced ? 'balanced' : 'UNBALANCED'}  max primaries ${t.maxPrimaries}  ` +
    `${t.maxVipHolders === null ? '' : `max VIP holders ${t.maxVipHolders}  `}` +
    `writer ${sec(t.writerRtoMs)}s${t.notes.length ? `  (${t.notes.join('; ')})` : ''}`
  );
}

/** A row the bench did not measure, and why (printed in place of the numbers). */
export interface SkippedRow {
  scenario: Scenario;
  mode: string;
  system: System;
  why: string;
}

/** The table: one row per scenario, mode and system, as the trials came out (and the rows
 *  skipped, in place). */
export function loadReport(
  trials: LoadTrial[],
  failed: { fault: string; mode: string; system: string }[],
  skipped: SkippedRow[] = [],
): { text: string; summary: object[] } {
  const rows: string[][] = [
    [
      'scenario',
      'mode',
      'system',
      'measured/N',
      'new session s min/med/max',
      'new-session gap s med',
      'pgbench gap s min/med/max',
      'sessions aborted med',
      'acked tx lost',
      'bank balanced',
      'max primaries',
      '2 VIP holders seen',
      'light writer s med',
    ],
  ];
  const summary: object[] = [];
  const keyOf = (x: { mode: string; system: string }, scenario: string) =>
    `${scenario}|${x.mode}|${x.system}`;
  const keys = new Set([
    ...trials.map((t) => keyOf(t, t.scenario)),
    ...failed.map((f) => keyOf(f, f.fault)),
    ...skipped.map((s) => keyOf(s, s.scenario)),
  ]);
  for (const key of keys) {
    const [scenario, mode, system] = key.split('|') as [Scenario, string, System];
    const skip = skipped.find((s) => keyOf(s, s.scenario) === key);
    if (skip) {
      summary.push({ scenario, mode, system, skipped: skip.why });
      rows.push([TITLE[scenario], mode, system === 'pgop' ? 'pgop' : 'pgpool own', skip.why]);
      continue;
    }
    const ts = trials.filter((t) => keyOf(t, t.scenario) === key);
    const nFailed = failed.filter((f) => keyOf(f, f.fault) === key).length;
    const lost = ts.some((t) => t.lostTx === null) ? null : ts.reduce((n, t) => n + t.lostTx!, 0);
    const vipWatched = ts.filter((t) => t.maxVipHolders !== null && t.maxVipHolders !== undefined);
    const row = {
      scenario,
      mode,
      system,
      trials: ts.length,
      failedTrials: nFailed,
      newSession: spread(ts.map((t) => t.newSessionMs)),
      newSessionGapMedian: sec(med(finite(ts.map((t) => t.newSessionGapMs)))),
      pgbenchGap: spread(ts.map((t) => t.pgbenchGapMs)),
      sessionsAbortedMedian: med(ts.map((t) => t.sessionsAborted)),
      ackedTxLost: lost,
      balanced: `${ts.filter((t) => t.balanced).length}/${ts.length}`,
      maxPrimaries: Math.max(0, ...ts.map((t) => t.maxPrimaries)),
      // trials with two holders at once, of those with the virtual IP watched (null: none was)
      twoVipHolders: vipWatched.length
        ? `${vipWatched.filter((t) => t.maxVipHolders! > 1).length}/${vipWatched.length}`
        : null,
      lightWriterMedian: sec(med(finite(ts.map((t) => t.writerRtoMs)))),
    };
    summary.push(row);
    rows.push([
      TITLE[scenario],
      mode,
      system === 'pgop' ? 'pgop' : 'pgpool own',
      `${ts.length}/${ts.length + nFailed}`,
      row.newSession,
      row.newSessionGapMedian,
      row.pgbenchGap,
      String(row.sessionsAbortedMedian),
      lost === null ? '?' : String(lost),
      row.balanced,
      String(row.maxPrimaries),
      row.twoVipHolders ?? '-',
      row.lightWriterMedian,
    ]);
  }
  return { text: `${table(rows)}\n\n${LEGEND}`, summary };
}

const LEGEND =
  `Under load: pgbench TPC-B-like clients through pgpool, each client its own pgbench process, ` +
  `started again at once when its session aborts. New session: from the fault (or the switchover ` +
  `command) to the first commit of a session opened after it (a new session every 50 ms); ` +
  `new-session gap: the longest time without such a commit, from the last one before the fault. ` +
  `pgbench gap: the longest time one client went without a commit, from its last commit before ` +
  `the fault. Sessions aborted: pgbench's "client N aborted" per trial. Acked tx lost: pgbench's ` +
  `committed transactions minus pgbench_history's growth on the final primary. Bank balanced: ` +
  `sum(abalance) = sum(bbalance) = sum(tbalance) = sum(history delta) there. Max primaries: most ` +
  `nodes answering as writable primaries in one 50 ms sweep. 2 VIP holders seen (pool hosts ` +
  `only): trials in which two pool hosts had the virtual IP in one 50 ms sample of their ` +
  `addresses ('-': one pool host, no virtual IP). Pool scenarios fault the pool host that holds ` +
  `the virtual IP at fault time: pgpool killed (kill -9), the host stopped, its link down (healed ` +
  `500 ms after writes resumed). Light writer: the longest time ` +
  `without an acknowledged write of the one-row writer through pgpool.`;
