// bench:failover (root) — failover as clients see it, pgop against pgpool-II's own failover on
// the same lab cluster in the same run.
//
// For each replication mode (sync, async) and fault (kill -9 of the primary's postmaster; the
// primary's link down, healed after writes resumed), N trials (PGOP_BENCH_TRIALS, default 5) with
// pgop serving, and N with pgpool deciding itself (bench/failover-baseline.ts), interleaved so
// both see the same machine load. Then N `pgop switchover`s per mode. A writer goes through
// pgpool all the time, probes write directly to the standbys, and a writer on the old primary's
// unix socket counts what it acknowledges after the promotion (definitions:
// test/helpers/chaos-scenario.ts). One table on stdout, every trial in
// bench/results/failover-<time>.json.
//
// Runs in a lab hub namespace of its own (unique prefix); on exit, pass or fail or Ctrl-C, every
// namespace of that prefix is emptied and deleted and its state directory removed.
//
// Env: PGOP_BENCH_TRIALS (5), PGOP_BENCH_MODES (sync,async), PGOP_BENCH_FAULTS (kill,partition; hang too:
// the primary's postgres SIGSTOPped),
// PGOP_BENCH_SYSTEMS (pgop,pgpool), PGOP_BENCH_SWITCHOVERS (= trials; 0 skips them),
// PGOP_BENCH_TLS (on; off measures what TLS costs: the spec's tls.enabled false),
// PGOP_BENCH_LOAD_BALANCING (the lab spec's: on; off: pgpool holds only the primary).
// PGOP_BENCH_POOL_CHILDREN: pgpool's num_init_children (the lab spec's: 24).
//
// PGOP_BENCH_LOAD=pgbench (default: writer, the above): the same comparison under a real client's
// load (bench/failover-load.ts): pgbench clients (PGOP_BENCH_CLIENTS, 4; pgbench -i -s
// PGOP_BENCH_SCALE, 10) through pgpool, for PGOP_BENCH_SCENARIOS (primary-kill, primary-partition,
// standby-kill, standby-partition, switchover, pool-kill, pool-down, pool-partition), each under
// pgop and pgpool's own failover.
//
// Pool scenarios (pool-kill: pgpool killed on the virtual IP's holder; pool-down: the holder's
// host stopped; pool-partition: its link down) run on a lab with two pool hosts and a virtual IP
// (spec.pgpool.hosts); their baseline is pgpool's own watchdog moving the address
// (spec.pgpool.watchdog, pgop stopped during the trial: bench/failover-watchdog.ts). The other
// scenarios keep the one pool host (numbers
// comparable with earlier runs) and run first, on a cluster of their own; the pool scenarios'
// cluster is built after it is gone. PGOP_BENCH_POOL_HOSTS=2 (to 5) puts every scenario on pool
// hosts (then no pgpool baseline at all: it drives a single pgpool). They join the default list:
// pgop only, ~20 s a trial in the lab (and ~15 s to build their cluster).
// PGOP_BENCH_POOL_LAYOUT=nodes runs pgpool on every node instead (pgpool.onNodes, the seed's
// layout): the holder is then a database node, and its machine going down may fail the primary
// over too.

import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { finite, med, sec, table } from './table.js';

if (process.getuid?.() !== 0) {
  console.log('bench:failover needs root (network namespaces, sshd, postgres, pgpool); skipped');
  process.exit(0);
}

const { enterLabHub } = await import('./lab-hub.js');
await enterLabHub('pgf');

// ------------------------------------------------------------------------------ inside the hub

const { ChaosLab } = await import('../test/helpers/chaos-lab.js');
const { currentPrimary, failoverTrial, switchoverTrial, waitConverged } =
  await import('../test/helpers/chaos-scenario.js');
const { BASELINE_SETTINGS, baselineLog, disableBaseline, enableBaseline } =
  await import('./failover-baseline.js');
const { SCENARIOS, isPoolScenario, loadLine, loadReport, loadTrial } = await import('./failover-load.js');
const { WATCHDOG_TIMING, disableWatchdogBaseline, enableWatchdogBaseline, watchdogLogs } =
  await import('./failover-watchdog.js');
type Scenario = (typeof SCENARIOS)[number];
type SkippedRow = import('./failover-load.js').SkippedRow;
type LoadTrial = Awaited<ReturnType<typeof loadTrial>>;
type Lab = InstanceType<typeof ChaosLab>;
type Trial = Awaited<ReturnType<typeof failoverTrial>>;
type Switch = Awaited<ReturnType<typeof switchoverTrial>>;
type Mode = 'sync' | 'async';
type Fault = 'kill' | 'partition' | 'hang';
type System = 'pgop' | 'pgpool';

const list = <T extends string>(env: string | undefined, def: T[]): T[] =>
  env
    ? (env
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean) as T[])
    : def;
const TRIALS = Number(process.env.PGOP_BENCH_TRIALS ?? 5);
const MODES = list<Mode>(process.env.PGOP_BENCH_MODES, ['sync', 'async']);
const FAULTS = list<Fault>(process.env.PGOP_BENCH_FAULTS, ['kill', 'partition']);
const LOAD = process.env.PGOP_BENCH_LOAD === 'pgbench' ? 'pgbench' : 'writer';
const POOL_HOSTS = Number(process.env.PGOP_BENCH_POOL_HOSTS ?? 0);
if (POOL_HOSTS !== 0 && !(POOL_HOSTS >= 2 && POOL_HOSTS <= 5))
  throw new Error(`PGOP_BENCH_POOL_HOSTS: 2-5 (or 0), not ${process.env.PGOP_BENCH_POOL_HOSTS}`);
// the writer bench's baseline drives the one pgpool (pool hosts: the load bench says n/a per row)
const SYSTEMS = list<System>(process.env.PGOP_BENCH_SYSTEMS, ['pgop', 'pgpool']).filter(
  (s) => !(s === 'pgpool' && POOL_HOSTS && LOAD === 'writer'),
);
const SWITCHOVERS = Number(process.env.PGOP_BENCH_SWITCHOVERS ?? TRIALS);
const TLS = process.env.PGOP_BENCH_TLS !== 'off';
const CLIENTS = Number(process.env.PGOP_BENCH_CLIENTS ?? 4);
const SCALE = Number(process.env.PGOP_BENCH_SCALE ?? 10);
const LOAD_SCENARIOS = list<Scenario>(process.env.PGOP_BENCH_SCENARIOS, SCENARIOS);
for (const s of LOAD_SCENARIOS)
  if (!SCENARIOS.includes(s))
    throw new Error(`PGOP_BENCH_SCENARIOS: no scenario ${s} (${SCENARIOS.join(', ')})`);
/** the pool scenarios' lab when PGOP_BENCH_POOL_HOSTS leaves it open */
const POOL_LAB_HOSTS = POOL_HOSTS || 2;
/** PGOP_BENCH_POOL_LAYOUT=nodes: the virtual IP's lab runs pgpool on every node (pgpool.onNodes,
 *  the seed's layout) instead of on pool hosts of their own */
const POOL_ON_NODES = process.env.PGOP_BENCH_POOL_LAYOUT === 'nodes';
const NO_WATCHDOG = POOL_ON_NODES
  ? "n/a (pgpool's watchdog baseline runs on pool hosts of their own)"
  : "n/a (pgpool's own failover drives one pgpool)";
// the lab spec's pgpool.loadBalancing unless set: off keeps standbys out of pgpool
const LOAD_BALANCING = process.env.PGOP_BENCH_LOAD_BALANCING;
const POOL_CHILDREN = Number(process.env.PGOP_BENCH_POOL_CHILDREN ?? 0) || undefined;
// a hung postgres is detected like a link that went down: the same budget
const TARGET_MS: Record<Fault, number> = { kill: 500, partition: 2000, hang: 2000 };
const repo = fileURLToPath(new URL('../../', import.meta.url));

const startedAt = new Date();
const say = (s: string) => process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`);
const git = (args: string[]) => spawnSync('git', ['-C', repo, ...args], { encoding: 'utf8' }).stdout.trim();
// PGOP_BENCH_COMMIT names the commit when the tree is an export without .git (a clean snapshot).
const commit = process.env.PGOP_BENCH_COMMIT ?? git(['rev-parse', 'HEAD']);
const dirty = process.env.PGOP_BENCH_COMMIT
  ? 0
  : git(['status', '--porcelain', '--untracked-files=no']).split('\n').filter(Boolean).length;
const loads: number[] = [loadavg()[0]!];

interface FailedTrial {
  /** a fault, or a load scenario */
  fault: string;
  mode: Mode;
  system: System;
  run: string;
  error: string;
}
const trials: Trial[] = [];
const failed: FailedTrial[] = [];
const switches: Switch[] = [];
const loadTrials: LoadTrial[] = [];
const skipped: SkippedRow[] = [];
const baselineLogs: Record<string, string> = {};

let generation = 0;
/** the lab's pool hosts (0: one pool host, no virtual IP) */
let poolHosts = LOAD === 'pgbench' ? (loadGroups()[0]?.poolHosts ?? POOL_HOSTS) : POOL_HOSTS;
let lab: Lab = newLab();
function newLab(): Lab {
  generation++;
  return new ChaosLab({
    name: generation === 1 ? 'bf' : `bf${generation}`,
    network: `10.${94 + generation}.0.0/24`,
    mode: MODES[0] ?? 'sync',
    tls: TLS,
    // pool hosts asked for: on the nodes instead, with that layout
    ...(POOL_ON_NODES && poolHosts ? { poolOnNodes: true } : { poolHosts }),
    pgpool: {
      ...(LOAD_BALANCING ? { loadBalancing: LOAD_BALANCING !== 'off' } : {}),
      ...(POOL_CHILDREN ? { numInitChildren: POOL_CHILDREN } : {}),
    },
    log: (s) => say(`  ${s}`),
  });
}

/** A lab with `hosts` pool hosts (0: one), built in place of the current one when it differs. */
async function labWithPoolHosts(hosts: number): Promise<void> {
  if (hosts === poolHosts) return;
  await lab.down();
  poolHosts = hosts;
  lab = newLab();
  await lab.up();
}

/** Converged under pgop, or a fresh cluster in the wanted mode. */
async function ready(mode: Mode): Promise<void> {
  try {
    lab.startServe();
    await waitConverged(lab, 240_000);
    await lab.setMode(mode);
    return;
  } catch (err) {
    say(
      `cluster ${lab.name} does not converge ` +
        `(${(err as Error).message.split('\n')[0]}); building a fresh one`,
    );
  }
  await lab.down();
  lab = newLab();
  lab.mode = mode;
  await lab.up();
}

interface RunPlan {
  mode: Mode;
  system: System;
  run: string;
  /** recorded with a failure (a fault, or a load scenario) */
  scenario: string;
  /** the node fenced after a pgpool baseline trial (default: the primary) */
  fenced?: (c: { primary: string; standbys: string[] }) => string;
}

/** Which pgpool baseline a trial runs under: a pool scenario's is pgpool's watchdog moving the
 *  address between pool hosts of their own (pgop stopped; these faults leave the database
 *  alone), any other's pgpool's own failover. */
const baselineOf = (p: RunPlan): 'watchdog' | 'failover' | null =>
  p.system !== 'pgpool' ? null : isPoolScenario(p.scenario) && !POOL_ON_NODES ? 'watchdog' : 'failover';

/** One trial on a ready cluster under `system` (pgpool: its own failover enabled around it, then
 *  pgop's setup back with the node `fenced` names fenced); a failure is recorded, not thrown. */
async function underSystem(
  p: RunPlan,
  trial: (c: { primary: string; standbys: string[] }) => Promise<void>,
): Promise<void> {
  await ready(p.mode);
  let fenced = '';
  try {
    const c = await currentPrimary(lab);
    fenced = p.fenced?.(c) ?? c.primary;
    if (baselineOf(p) === 'watchdog') await enableWatchdogBaseline(lab, c.primary);
    else if (baselineOf(p) === 'failover') await enableBaseline(lab, c.primary);
    await trial(c);
  } catch (err) {
    failed.push({
      fault: p.scenario,
      mode: p.mode,
      system: p.system,
      run: p.run,
      error: (err as Error).message,
    });
    say(`${p.run}: FAILED ${(err as Error).message.split('\n').slice(0, 3).join(' | ')}`);
  } finally {
    if (baselineOf(p) === 'watchdog') {
      baselineLogs[p.run] = await watchdogLogs(lab);
      await disableWatchdogBaseline(lab).catch((err: Error) =>
        say(`  restoring pgop after the watchdog baseline: ${err.message}`),
      );
    } else if (baselineOf(p) === 'failover' && fenced) {
      baselineLogs[p.run] = await baselineLog(lab);
      await disableBaseline(lab, fenced).catch((err: Error) =>
        say(`  restoring pgop after the baseline: ${err.message}`),
      );
    }
  }
}

async function failoverRun(mode: Mode, fault: Fault, system: System, i: number): Promise<void> {
  const run = `${mode}-${fault}-${system}-${i}`;
  await underSystem({ mode, system, run, scenario: fault }, async () => {
    const r = await failoverTrial(lab, { fault, run, system });
    trials.push(r);
    const f = (x: number | null) => (x === null ? '-' : `${(x / 1000).toFixed(2)}s`);
    say(
      `${run}${r.converged ? '' : ' (DID NOT CONVERGE)'}: ${r.oldPrimary} -> ${r.newPrimary ?? '-'}  ` +
        `RTO pgpool ${f(r.rtoPoolMs)}  direct ${f(r.rtoDirectMs)}  rejoin ${f(r.rejoinMs)}  ` +
        `lost ${r.lostAcked.length}  old-primary acks after promotion ${r.oldPrimaryAcksAfterPromotion}  ` +
        `max primaries ${r.maxPrimaries}${r.notes.length ? `  (${r.notes.join('; ')})` : ''}`,
    );
  });
}

/** A load-mode trial: the standby faulted or switched to alternates with the trial number (a
 *  pool scenario finds its target, the virtual IP's holder, at fault time). */
async function loadRun(mode: Mode, scenario: Scenario, system: System, i: number): Promise<void> {
  const run = `${mode}-${scenario}-${system}-${i}`;
  const noBaseline = isPoolScenario(scenario) ? POOL_ON_NODES : poolHosts;
  if (system === 'pgpool' && noBaseline) {
    // pgpool's own failover drives one pgpool; its watchdog (the pool scenarios' baseline) runs
    // on pool hosts of their own: on the database nodes it would need pgpool's failover too
    if (!skipped.some((s) => s.scenario === scenario && s.mode === mode && s.system === system))
      skipped.push({ scenario, mode, system, why: NO_WATCHDOG });
    return;
  }
  const pick = (c: { standbys: string[] }) => c.standbys[i % c.standbys.length]!;
  const fenced = scenario.startsWith('standby') ? pick : undefined;
  await underSystem({ mode, system, run, scenario, fenced }, async (c) => {
    const target = isPoolScenario(scenario) ? '' : scenario.startsWith('primary') ? c.primary : pick(c);
    const t = await loadTrial(lab, { scenario, system, run, target, clients: CLIENTS, scale: SCALE });
    loadTrials.push(t);
    say(loadLine(t));
  });
}

async function switchoverRun(mode: Mode, i: number): Promise<void> {
  const run = `${mode}-switchover-${i}`;
  await ready(mode);
  try {
    const r = await switchoverTrial(lab, run);
    switches.push(r);
    say(
      `${run}: ${r.from} -> ${r.to ?? '-'}  ` +
        `write unavailability ${(r.unavailableMs! / 1000).toFixed(2)}s  lost ${r.lostAcked.length}  ` +
        `command ${r.seconds.toFixed(2)}s${r.notes.length ? `  (${r.notes.join('; ')})` : ''}`,
    );
  } catch (err) {
    failed.push({ fault: 'kill', mode, system: 'pgop', run, error: (err as Error).message });
    say(`${run}: FAILED ${(err as Error).message.split('\n').slice(0, 3).join(' | ')}`);
  }
}

// ------------------------------------------------------------------------------ report

function runHeader(): string[] {
  const poolScenariosApart = !POOL_HOSTS && LOAD === 'pgbench' && LOAD_SCENARIOS.some(isPoolScenario);
  return [
    `bench:failover on ${commit.slice(0, 12)}` +
      `${dirty ? ` (+${dirty} uncommitted tracked file(s) in the tree)` : ''}, ` +
      `TLS ${TLS ? 'on' : 'off'}, pgpool load balancing ${LOAD_BALANCING ?? 'as the lab spec'}, ` +
      `${POOL_HOSTS ? `${POOL_HOSTS} pool hosts with a virtual IP` : 'one pool host'}` +
      `${poolScenariosApart ? ` (pool scenarios: ${POOL_LAB_HOSTS} with a virtual IP)` : ''}, ` +
      `${TRIALS} trial(s) per row, ` +
      `${startedAt.toISOString()} .. ${new Date().toISOString()}`,
    `load average during the run: ${Math.min(...loads).toFixed(1)} .. ${Math.max(...loads).toFixed(1)} ` +
      `(2 cores shared with other work)`,
    '',
  ];
}

function failedLines(): string[] {
  return failed.length
    ? ['', 'Failed trials:', ...failed.map((f) => `  - ${f.run}: ${f.error.split('\n')[0]}`)]
    : [];
}

/** The load mode's table, with the same header and failures as the writer's. */
function loadReportText(): { text: string; summary: object[] } {
  const { text, summary } = loadReport(loadTrials, failed, skipped);
  const timing = Object.entries(WATCHDOG_TIMING)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
  const watchdog = loadTrials.some((t) => t.system === 'pgpool' && isPoolScenario(t.scenario))
    ? [
        '',
        `pgpool own, pool scenarios: every pool host's pgpool under its watchdog as ` +
          `spec.pgpool.watchdog configures it (delegate_IP = the virtual IP, heartbeat: ${timing}; ` +
          `half the votes a quorum with two hosts; the operator's host a trusted server), the ` +
          `address moved by pgpool's if_up_cmd/if_down_cmd/arping_cmd through sudo; pgop stopped ` +
          `during the trial, then serving again with the watchdog off (it places the address).`,
      ]
    : [];
  return { text: [...runHeader(), text, ...watchdog, ...failedLines()].join('\n'), summary };
}

function report(): { text: string; summary: object[] } {
  const head = [
    'scenario',
    'mode',
    'system',
    'measured/N',
    'RTO pgpool s min/med/max',
    'RTO direct s med',
    'acked lost',
    'old-primary acks after promotion',
    '2 primaries seen',
    'rejoin s med',
    'pgop/baseline',
    'targets',
  ];
  const rows: string[][] = [head];
  const summary: object[] = [];
  const misses: string[] = [];
  for (const fault of FAULTS) {
    for (const mode of MODES) {
      const medOf = (system: System) =>
        med(
          finite(
            trials
              .filter((t) => t.fault === fault && t.mode === mode && t.system === system)
              .map((t) => t.rtoPoolMs),
          ),
        );
      for (const system of SYSTEMS) {
        const ts = trials.filter((t) => t.fault === fault && t.mode === mode && t.system === system);
        const nFailed = failed.filter(
          (f) => f.fault === fault && f.mode === mode && f.system === system,
        ).length;
        const nStuck = ts.filter((t) => !t.converged).length;
        const rto = finite(ts.map((t) => t.rtoPoolMs));
        const noRecovery = ts.length - rto.length;
        const direct = med(finite(ts.map((t) => t.rtoDirectMs)));
        const lost = ts.reduce((a, t) => a + t.lostAcked.length, 0);
        const oldAfter = ts.reduce((a, t) => a + t.oldPrimaryAcksAfterPromotion, 0);
        const split = ts.filter((t) => t.maxPrimaries > 1).length;
        const rejoin = med(finite(ts.map((t) => t.rejoinMs)));
        const ratio =
          system === 'pgop' && medOf('pgop') !== null && medOf('pgpool')
            ? (medOf('pgop')! / medOf('pgpool')!).toFixed(2)
            : '';
        let targets = '';
        if (system === 'pgop') {
          const m = med(rto);
          const checks: [string, boolean][] = [
            [
              `RTO med <= ${TARGET_MS[fault] / 1000} s`,
              m !== null && m <= TARGET_MS[fault] && noRecovery === 0,
            ],
            ['0 acked lost', mode !== 'sync' || lost === 0],
            ['0 old-primary writes', oldAfter === 0],
          ];
          const bad = checks.filter(([, ok]) => !ok);
          const missed = [
            ...bad.map(([n]) => n),
            ...(nFailed ? [`${nFailed} trial(s) failed`] : []),
            ...(nStuck ? [`${nStuck} did not converge`] : []),
          ];
          targets = bad.length === 0 && nFailed === 0 && nStuck === 0 ? 'PASS' : `MISS: ${missed.join(', ')}`;
          if (nStuck)
            misses.push(
              `${fault}/${mode}: ${nStuck} trial(s) did not converge in time ` +
                `(old primary not back as a streaming standby, or pgop not Healthy)`,
            );
          if (m !== null && m > TARGET_MS[fault])
            misses.push(
              `${fault}/${mode}: median RTO ${sec(m)} s is ${sec(m - TARGET_MS[fault])} s ` +
                `over the ${TARGET_MS[fault] / 1000} s target`,
            );
          if (mode === 'sync' && lost) misses.push(`${fault}/${mode}: ${lost} acknowledged row(s) lost`);
          if (oldAfter)
            misses.push(
              `${fault}/${mode}: ${oldAfter} write(s) accepted by the old primary after the promotion`,
            );
        }
        const rtoCell = rto.length
          ? `${sec(Math.min(...rto))} / ${sec(med(rto))} / ${sec(Math.max(...rto))}` +
            `${noRecovery ? ` (+${noRecovery} never)` : ''}`
          : noRecovery
            ? 'never'
            : '-';
        rows.push([
          fault === 'kill' ? 'kill -9 primary' : 'primary link down',
          mode,
          system === 'pgop' ? 'pgop' : 'pgpool own failover',
          `${ts.length}/${ts.length + nFailed}`,
          rtoCell,
          sec(direct),
          String(lost),
          String(oldAfter),
          `${split}/${ts.length}`,
          system === 'pgop' ? sec(rejoin) : 'n/a',
          ratio,
          targets,
        ]);
        summary.push({
          fault,
          mode,
          system,
          trials: ts.length,
          failedTrials: nFailed,
          notConverged: nStuck,
          rtoPoolMs: {
            min: rto.length ? Math.min(...rto) : null,
            median: med(rto),
            max: rto.length ? Math.max(...rto) : null,
            neverRecovered: noRecovery,
          },
          rtoDirectMedianMs: direct,
          ackedLost: lost,
          oldPrimaryAcksAfterPromotion: oldAfter,
          trialsWithTwoPrimaries: split,
          rejoinMedianMs: system === 'pgop' ? rejoin : null,
          ratioPgopToBaseline: ratio ? Number(ratio) : null,
          targets,
        });
      }
    }
  }
  const srows: string[][] = [
    [
      'switchover',
      'mode',
      'measured/N',
      'write unavailability s min/med/max',
      'acked lost',
      'old-primary acks after promotion',
      '2 primaries seen',
      'command s med',
      'target',
    ],
  ];
  for (const mode of MODES) {
    const ss = switches.filter((s) => s.mode === mode);
    if (!ss.length && !failed.some((f) => f.run.startsWith(`${mode}-switchover`))) continue;
    const nFailed = failed.filter((f) => f.run.startsWith(`${mode}-switchover`)).length;
    const u = finite(ss.map((s) => s.unavailableMs));
    const lost = ss.reduce((a, s) => a + s.lostAcked.length, 0);
    const oldAfter = ss.reduce((a, s) => a + s.oldPrimaryAcksAfterPromotion, 0);
    const target =
      lost === 0 && nFailed === 0 && ss.every((s) => s.exitCode === 0)
        ? 'PASS (0 acked lost)'
        : `MISS: ${lost} acked lost${nFailed ? `, ${nFailed} failed` : ''}`;
    if (lost) misses.push(`switchover/${mode}: ${lost} acknowledged row(s) lost`);
    srows.push([
      'pgop switchover',
      mode,
      `${ss.length}/${ss.length + nFailed}`,
      u.length ? `${sec(Math.min(...u))} / ${sec(med(u))} / ${sec(Math.max(...u))}` : '-',
      String(lost),
      String(oldAfter),
      `${ss.filter((s) => s.maxPrimaries > 1).length}/${ss.length}`,
      sec(med(ss.map((s) => s.seconds * 1000))),
      target,
    ]);
    summary.push({
      switchover: true,
      mode,
      trials: ss.length,
      failedTrials: nFailed,
      unavailableMs: {
        min: u.length ? Math.min(...u) : null,
        median: med(u),
        max: u.length ? Math.max(...u) : null,
      },
      ackedLost: lost,
      oldPrimaryAcksAfterPromotion: oldAfter,
      target,
    });
  }
  const baselineSettings = Object.entries(BASELINE_SETTINGS)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
  const lines = [
    ...runHeader(),
    table(rows),
    '',
    ...(srows.length > 1 ? [table(srows), ''] : []),
    `RTO pgpool: longest time without an acknowledged write through pgpool, ` +
      `from the last ack before the fault to the first ack after the promotion. ` +
      `RTO direct: first write the new primary accepted directly, after the fault. ` +
      `Old-primary acks: writes the old primary acknowledged (unix socket, works while its link is down) ` +
      `after the new primary's promotion ` +
      `(its server log's "selected new timeline ID", or earlier evidence). ` +
      `2 primaries seen: trials in which two nodes answered pg_is_in_recovery() = false ` +
      `in the same 50 ms sweep. ` +
      `Rejoin: from the old primary's node being back (kill: the fault; link down: the heal) ` +
      `to it streaming from the new primary.`,
    `Baseline: pgop stopped, pgpool's own failover with ${baselineSettings} ` +
      `(failover_command promotes pgpool's new main node with pg_promote(); standbys are not repointed), ` +
      `pgpool restarted; after each baseline trial pgop's pgpool.conf is restored, ` +
      `the old primary's node fenced and pgop repairs the cluster.`,
    ...(misses.length
      ? ['', 'Missed targets:', ...misses.map((m) => `  - ${m}`)]
      : SYSTEMS.includes('pgop') && trials.some((t) => t.system === 'pgop')
        ? ['', 'Every target met.']
        : []),
    ...failedLines(),
  ];
  return { text: lines.join('\n'), summary };
}

// ------------------------------------------------------------------------------ run

// `on`, not `once`: Ctrl-C reaches this process twice (from the terminal and forwarded by the
// outer one), and a second signal must not kill it before it cleaned up.
const interrupted = new Promise<void>((resolve) => {
  process.on('SIGINT', () => resolve());
  process.on('SIGTERM', () => resolve());
});
let stop = false;
void interrupted.then(() => {
  stop = true;
  say('interrupted: finishing the current trial, then cleaning up');
});

const loadTimer = setInterval(() => loads.push(loadavg()[0]!), 10_000);
// Each fault moves the primary to the other node, so a fixed order would always give one system
// the same failing node; pgpool treats its main node (backend 0) differently (it restarts every
// child when node 0 fails: about 1 s more here). Alternating the order per trial gives both
// systems both nodes.
const inOrder = (i: number) => (i % 2 === 1 ? SYSTEMS : [...SYSTEMS].reverse());

async function writerBench(mode: Mode): Promise<void> {
  for (let i = 1; i <= TRIALS && !stop; i++) {
    for (const fault of FAULTS) {
      for (const system of inOrder(i)) if (!stop) await failoverRun(mode, fault, system, i);
    }
  }
  for (let i = 1; i <= SWITCHOVERS && !stop; i++) await switchoverRun(mode, i);
}

async function loadBench(mode: Mode, scenarios: Scenario[]): Promise<void> {
  for (let i = 1; i <= TRIALS && !stop; i++) {
    for (const scenario of scenarios) {
      for (const system of inOrder(i)) if (!stop) await loadRun(mode, scenario, system, i);
    }
  }
}

/** The scenarios by the lab they need: the one pool host first (unless PGOP_BENCH_POOL_HOSTS puts
 *  everything on pool hosts), then pool hosts with a virtual IP. */
function loadGroups(): { poolHosts: number; scenarios: Scenario[] }[] {
  const groups = POOL_HOSTS
    ? [{ poolHosts: POOL_HOSTS, scenarios: LOAD_SCENARIOS }]
    : [
        { poolHosts: 0, scenarios: LOAD_SCENARIOS.filter((s) => !isPoolScenario(s)) },
        { poolHosts: POOL_LAB_HOSTS, scenarios: LOAD_SCENARIOS.filter(isPoolScenario) },
      ];
  return groups.filter((g) => g.scenarios.length > 0);
}

try {
  say(
    LOAD === 'pgbench'
      ? `bench:failover under pgbench (${CLIENTS} clients, scale ${SCALE}): ${TRIALS} trial(s) x ` +
          `${LOAD_SCENARIOS.join('/')} x ${MODES.join('/')} x ${SYSTEMS.join('/')}; ` +
          `prefix ${process.env.PGOP_LAB_PREFIX}`
      : `bench:failover: ${TRIALS} trial(s) x ${FAULTS.join('/')} x ${MODES.join('/')} x ` +
          `${SYSTEMS.join('/')}, ${SWITCHOVERS} switchover(s) per mode; ` +
          `prefix ${process.env.PGOP_LAB_PREFIX}`,
  );
  if (LOAD === 'pgbench') {
    await lab.up();
    for (const g of loadGroups()) {
      if (stop) break;
      await labWithPoolHosts(g.poolHosts);
      for (const mode of MODES) await loadBench(mode, g.scenarios);
    }
  } else {
    await lab.up();
    for (const mode of MODES) await writerBench(mode);
  }
} catch (err) {
  say(`bench aborted: ${(err as Error).stack ?? err}`);
  process.exitCode = 1;
} finally {
  clearInterval(loadTimer);
  const { text, summary } = LOAD === 'pgbench' ? loadReportText() : report();
  process.stdout.write(`\n${text}\n`);
  const dir = join(repo, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `failover-${startedAt.toISOString().replace(/[:]/g, '').replace(/\..*/, '')}.json`);
  const record = {
    bench: 'failover',
    commit,
    dirtyTrackedFiles: dirty,
    startedAt,
    finishedAt: new Date(),
    trialsPerRow: TRIALS,
    tls: TLS,
    load: LOAD === 'pgbench' ? { clients: CLIENTS, scale: SCALE, scenarios: LOAD_SCENARIOS } : 'writer',
    poolHosts: POOL_HOSTS,
    poolLayout: POOL_ON_NODES ? 'nodes' : 'hosts',
    loadTrials,
    skipped,
    modes: MODES,
    faults: FAULTS,
    systems: SYSTEMS,
    targetsMs: TARGET_MS,
    baselineSettings: BASELINE_SETTINGS,
    loadAverage: { min: Math.min(...loads), max: Math.max(...loads) },
    summary,
    trials,
    switchovers: switches,
    failed,
    baselineLogs,
    table: text,
  };
  writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`);
  say(`results: ${file}`);
  await lab.down();
}
process.exit(process.exitCode ?? 0);
