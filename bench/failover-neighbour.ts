// bench:failover-neighbour (root) — one operator, two lab clusters: does a long job in cluster A
// (a standby cloning ≥ 300 MB at replication.cloneMaxRate) slow down cluster B's failover?
//
// Cluster B (3 nodes, sync) and cluster A (3 nodes + a 4th that clones slowly) share one store and
// one `pgop serve`. N trials (PGOP_BENCH_TRIALS, default 5) of each fault (PGOP_BENCH_FAULTS,
// default kill) on B's primary, alternating two conditions: "B alone" (A idle at 3 nodes) and
// "A cloning" (A scaled to 4: its pg4 clone runs, confirmed from the jobs table before the fault;
// afterwards A goes back to 3, which cancels the clone). Definitions of RTO, rejoin and lost acks:
// test/helpers/chaos-scenario.ts. One table on stdout, every trial in
// bench/results/failover-neighbour-<time>.json.

import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

if (process.getuid?.() !== 0) {
  console.log('bench:failover-neighbour needs root (network namespaces, sshd, postgres, pgpool); skipped');
  process.exit(0);
}

const { enterLabHub } = await import('./lab-hub.js');
await enterLabHub('pgn');

// ------------------------------------------------------------------------------ inside the hub

const { ChaosLab, waitFor } = await import('../test/helpers/chaos-lab.js');
const { failoverTrial, waitConverged } = await import('../test/helpers/chaos-scenario.js');
type Trial = Awaited<ReturnType<typeof failoverTrial>>;
type Fault = 'kill' | 'partition';
type Condition = 'B alone' | 'A cloning';

const TRIALS = Number(process.env.PGOP_BENCH_TRIALS ?? 5);
const FAULTS = (process.env.PGOP_BENCH_FAULTS ?? 'kill').split(',').filter(Boolean) as Fault[];
const CLONE_MAX_RATE = process.env.PGOP_BENCH_CLONE_RATE ?? '2M';
const FILLER_ROWS = 300_000; // ~1.1 kB each: ~330 MB
const repo = fileURLToPath(new URL('../../', import.meta.url));
const startedAt = new Date();
const say = (s: string) => process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`);
const commit = spawnSync('git', ['-C', repo, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
const loads: number[] = [loadavg()[0]!];

interface Row {
  condition: Condition;
  fault: Fault;
  trial: Trial;
  /** A's clone at the fault: bytes done / total, and whether it still ran after the trial */
  clone: { done: number | null; total: number | null; runningAfter: boolean } | null;
}
const rows: Row[] = [];
const failures: { condition: Condition; fault: Fault; error: string }[] = [];

const b = new ChaosLab({ name: 'nb', network: '10.66.0.0/24', mode: 'sync', log: (s) => say(`  ${s}`) });
const a = new ChaosLab({
  name: 'na',
  network: '10.67.0.0/24',
  mode: 'sync',
  nodes: 4,
  initialNodes: 3,
  replication: { cloneMaxRate: CLONE_MAX_RATE },
  operator: b,
  log: (s) => say(`  ${s}`),
});

const runningClone = () =>
  a.jobs().find((j) => j.node === 'pg4' && j.kind === 'cloneStandby' && j.state === 'running');

/** A scaled to 4 nodes, its pg4 clone running and reporting bytes. */
async function startNeighbourClone(): Promise<void> {
  await a.scaleTo(4);
  await waitFor(async () => (runningClone()?.doneBytes ?? 0) > 0, 120_000, "A's pg4 clone running");
}

/** A back at 3 nodes (the clone cancelled, pg4 removed) and converged. */
async function stopNeighbourClone(): Promise<void> {
  await a.scaleTo(3);
  await waitConverged(a, 180_000);
}

async function trialOnB(condition: Condition, fault: Fault, i: number): Promise<void> {
  const run = `${condition === 'B alone' ? 'alone' : 'busy'}-${fault}-${i}`;
  try {
    await waitConverged(b, 180_000);
    if (condition === 'A cloning') await startNeighbourClone();
    const before = runningClone();
    const trial = await failoverTrial(b, { fault, run, system: 'pgop' });
    const clone = before
      ? { done: before.doneBytes, total: before.totalBytes, runningAfter: !!runningClone() }
      : null;
    rows.push({ condition, fault, trial, clone });
    const f = (x: number | null) => (x === null ? '-' : `${(x / 1000).toFixed(2)}s`);
    say(
      `${run}: B ${trial.oldPrimary} -> ${trial.newPrimary ?? '-'}  RTO pgpool ${f(trial.rtoPoolMs)}  ` +
        `rejoin ${f(trial.rejoinMs)}  lost ${trial.lostAcked.length}  max primaries ${trial.maxPrimaries}` +
        (clone ? `  A's clone at the fault ${mib(clone.done)} of ${mib(clone.total)}` : ''),
    );
  } catch (err) {
    failures.push({ condition, fault, error: (err as Error).message });
    say(`${run}: FAILED ${(err as Error).message.split('\n').slice(0, 3).join(' | ')}`);
  } finally {
    if (condition === 'A cloning') await stopNeighbourClone().catch((e: Error) => say(`  ${e.message}`));
  }
}

const mib = (n: number | null) => (n === null ? '?' : `${(n / 2 ** 20).toFixed(0)} MiB`);
const med = (xs: number[]) => {
  if (!xs.length) return null;
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const sec = (ms: number | null) => (ms === null ? '-' : (ms / 1000).toFixed(2));
const finite = (xs: (number | null)[]) => xs.filter((x): x is number => x !== null && Number.isFinite(x));

function report(): string {
  const head = [
    'fault',
    'condition',
    'measured/N',
    'B RTO pgpool s min/med/max',
    'rejoin s med',
    'acked lost',
  ];
  const lines = [[...head, 'max primaries', 'busy/alone (median RTO)']];
  for (const fault of FAULTS) {
    const medRto = (c: Condition) =>
      med(finite(rows.filter((r) => r.fault === fault && r.condition === c).map((r) => r.trial.rtoPoolMs)));
    for (const condition of ['B alone', 'A cloning'] as const) {
      const rs = rows.filter((r) => r.fault === fault && r.condition === condition);
      const rto = finite(rs.map((r) => r.trial.rtoPoolMs));
      const ratio =
        medRto('B alone') && medRto('A cloning') ? medRto('A cloning')! / medRto('B alone')! : null;
      lines.push([
        fault,
        condition,
        `${rs.length}/${TRIALS}`,
        rto.length ? `${sec(Math.min(...rto))} / ${sec(med(rto))} / ${sec(Math.max(...rto))}` : '-',
        sec(med(finite(rs.map((r) => r.trial.rejoinMs)))),
        String(rs.reduce((n, r) => n + r.trial.lostAcked.length, 0)),
        String(Math.max(0, ...rs.map((r) => r.trial.maxPrimaries))),
        condition === 'A cloning' && ratio !== null ? ratio.toFixed(2) : '',
      ]);
    }
  }
  const w = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  const text = lines.map((l, j) => {
    const row = l.map((c, i) => c.padEnd(w[i]!)).join(' | ');
    return j === 0 ? `${row}\n${w.map((x) => '-'.repeat(x)).join('-|-')}` : row;
  });
  return (
    `bench:failover-neighbour on ${commit.slice(0, 12)}, ${TRIALS} trial(s) per row, ` +
    `A's clone at ${CLONE_MAX_RATE}B/s of ~330 MB, ` +
    `${startedAt.toISOString()} .. ${new Date().toISOString()}\n` +
    `load average during the run: ${Math.min(...loads).toFixed(1)} .. ${Math.max(...loads).toFixed(1)}\n\n` +
    `${text.join('\n')}\n\n` +
    `A's clone at each fault: ${rows
      .filter((r) => r.clone)
      .map((r) => `${mib(r.clone!.done)}/${mib(r.clone!.total)}${r.clone!.runningAfter ? '' : ' (ended)'}`)
      .join(', ')}` +
    (failures.length ? `\nfailed trials: ${failures.map((f) => `${f.condition} ${f.fault}`).join(', ')}` : '')
  );
}

const loadTimer = setInterval(() => loads.push(loadavg()[0]!), 10_000);
try {
  say(
    `bench:failover-neighbour: ${TRIALS} trial(s) x ${FAULTS.join('/')}; ` +
      `prefix ${process.env.PGOP_LAB_PREFIX}`,
  );
  await b.up();
  await a.up();
  await a.withPool((c) =>
    c.query(
      'CREATE TABLE filler AS ' +
        `SELECT g, repeat(md5(g::text), 32) AS pad FROM generate_series(1, ${FILLER_ROWS}) g`,
    ),
  );
  for (let i = 1; i <= TRIALS; i++) {
    for (const fault of FAULTS) {
      // alternate which condition goes first: both see the same drift in machine load
      const order: Condition[] = i % 2 ? ['B alone', 'A cloning'] : ['A cloning', 'B alone'];
      for (const condition of order) await trialOnB(condition, fault, i);
    }
  }
} catch (err) {
  say(`bench aborted: ${(err as Error).stack ?? err}`);
  process.exitCode = 1;
} finally {
  clearInterval(loadTimer);
  const text = report();
  process.stdout.write(`\n${text}\n`);
  const dir = join(repo, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const stamp = startedAt.toISOString().replace(/[:]/g, '').replace(/\..*/, '');
  const file = join(dir, `failover-neighbour-${stamp}.json`);
  const record = {
    bench: 'failover-neighbour',
    commit,
    startedAt,
    finishedAt: new Date(),
    rows,
    failures,
    table: text,
  };
  writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`);
  say(`results: ${file}`);
  await a.down();
  await b.down();
}
process.exit(process.exitCode ?? 0);
