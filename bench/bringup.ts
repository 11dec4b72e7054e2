// bench:bringup (root) — time from `apply` of specs/lab-3node.yaml to every node healthy
// (primary + 2 streaming standbys, sync quorum on, pgpool routing), and the operator's peak
// memory. Baseline in the same run: the same driver calls scripted in order by hand (no store,
// no planner, no statechart) — what a hand-written bring-up script does. Each trial starts from
// nothing and is torn down after. Runs inside its own lab hub namespace (unique prefix).

import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const TRIALS = Number(process.env.BENCH_TRIALS ?? 3);
const TARGET_S = 10;

if (process.getuid?.() !== 0) {
  console.log('bench:bringup needs root (network namespaces, sshd, postgres); skipped');
  process.exit(0);
}
process.env.PGOP_LAB_PREFIX ??= `pgb${process.pid.toString(36).slice(-4)}`;
const stateRoot = process.env.PGOP_BENCH_STATE ?? `/var/lib/pgop/bench-${process.env.PGOP_LAB_PREFIX}`;
process.env.PGOP_LAB_STATE = stateRoot;

const { enterLabHubIfNeeded } = await import('../src/cli/lab-ns.js');
await enterLabHubIfNeeded('', true); // re-runs this file inside the hub (never returns there)

const { parseSpecFile } = await import('../src/spec/parse.js');
const { Store } = await import('../src/store/store.js');
const { createWorlds } = await import('../src/drivers/registry.js');
const { createLabWorld } = await import('../src/drivers/lab/world.js');
const { createMemoryPins } = await import('../src/drivers/ssh/shell.js');
const { Reconciler, runLoop } = await import('../src/reconcile/reconciler.js');
const { systemClock } = await import('../src/drivers/sim/clock.js');
const { ensureSecretFiles } = await import('../src/cli/commands/lab.js');
const { deleteNetns, hubNs, netnsPids } = await import('../src/drivers/lab/netns.js');

const specFile = fileURLToPath(new URL('../../specs/lab-3node.yaml', import.meta.url));
const parsed = parseSpecFile(specFile);
ensureSecretFiles(parsed.spec);
const spec = parsed.spec;

const steps = new Map<string, number[]>();
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (xs: number[]) =>
  `median ${median(xs).toFixed(2)} s  (min ${Math.min(...xs).toFixed(2)}, max ${Math.max(...xs).toFixed(2)})`;

async function teardown(db: string) {
  const store = Store.open(db);
  const worlds = createWorlds({ store });
  await worlds.prepare([spec]);
  if (store.getCluster(spec.name)) store.requestDeletion(spec.name, Date.now());
  else
    store.applySpec(spec, parsed.hash, parsed.source, Date.now()) &&
      store.requestDeletion(spec.name, Date.now());
  const r = new Reconciler({ store, worldFor: (s) => worlds.worldFor(s), clock: systemClock });
  await runLoop(r, store, systemClock, { stopWhen: () => !store.getCluster(spec.name), timeoutMs: 120_000 });
  await worlds.close();
  store.close();
}

async function operatorTrial(dir: string): Promise<{ seconds: number; peakRssMiB: number }> {
  const db = join(dir, 'pgop.db');
  const store = Store.open(db);
  const worlds = createWorlds({ store });
  await worlds.prepare([spec]);
  const reconciler = new Reconciler({ store, worldFor: (s) => worlds.worldFor(s), clock: systemClock });
  let peak = 0;
  const t0 = performance.now();
  store.applySpec(spec, parsed.hash, parsed.source, Date.now());
  const ok = await runLoop(reconciler, store, systemClock, {
    untilConverged: true,
    timeoutMs: 180_000,
    onTick: () => (peak = Math.max(peak, process.memoryUsage().rss)),
  });
  const seconds = (performance.now() - t0) / 1000;
  if (!ok) throw new Error('the lab cluster did not converge within 180 s');
  await worlds.close();
  store.close();
  await teardown(db);
  return { seconds, peakRssMiB: peak / 2 ** 20 };
}

async function scriptedTrial(dir: string): Promise<number> {
  const world = createLabWorld({ pins: createMemoryPins() });
  const [p, s1, s2] = spec.nodes as [(typeof spec.nodes)[0], (typeof spec.nodes)[0], (typeof spec.nodes)[0]];
  const t0 = performance.now();
  let last = t0;
  const lap = (what: string) => {
    const now = performance.now();
    steps.set(what, [...(steps.get(what) ?? []), (now - last) / 1000]);
    last = now;
  };
  for (const n of spec.nodes) await world.provider.ensureMachine(spec, n);
  lap('machines (3, serial)');
  await Promise.all(spec.nodes.map((n) => world.postgres.ensureInstalled(spec, n)));
  lap('install (3, parallel)');
  await world.postgres.ensurePrimary(spec, p, [s1.name, s2.name]);
  lap('primary (initdb, start, roles, db)');
  await Promise.all([world.postgres.ensureStandby(spec, s1, p), world.postgres.ensureStandby(spec, s2, p)]);
  lap('standbys (2 clones, parallel)');
  await world.postgres.ensureSyncStandbys(spec, p, [s1.name, s2.name], spec.replication.syncQuorum);
  lap('sync quorum');
  await world.pool.ensurePool(spec, p.name);
  lap('pgpool');
  const seconds = (performance.now() - t0) / 1000;
  await world.pool.deletePool(spec);
  for (const n of spec.nodes) await world.provider.deleteMachine(spec, n);
  await world.provider.deleteClusterResources(spec);
  await Promise.allSettled([world.provider.close(), world.postgres.close(), world.pool.close()]);
  void dir;
  return seconds;
}

const dir = mkdtempSync(join('/var/lib/pgop', 'bench-db-'));
try {
  const pgop: number[] = [];
  const rss: number[] = [];
  const scripted: number[] = [];
  for (let i = 0; i < TRIALS; i++) {
    scripted.push(await scriptedTrial(dir));
    const r = await operatorTrial(dir);
    rmSync(join(dir, 'pgop.db'), { force: true });
    rmSync(join(dir, 'pgop.db-wal'), { force: true });
    rmSync(join(dir, 'pgop.db-shm'), { force: true });
    pgop.push(r.seconds);
    rss.push(r.peakRssMiB);
  }
  console.log(
    `bench:bringup  specs/lab-3node.yaml (3 nodes + pgpool, sync quorum 1), ` +
      `${TRIALS} trials each, from nothing`,
  );
  console.log(`  pgop: apply -> all nodes healthy          ${fmt(pgop)}`);
  console.log(`  baseline: same drivers, scripted by hand  ${fmt(scripted)}`);
  console.log(
    `  operator overhead                         ${(median(pgop) - median(scripted)).toFixed(2)} s ` +
      `(${(median(pgop) / median(scripted)).toFixed(2)}x)`,
  );
  for (const [what, xs] of steps)
    console.log(`    baseline step: ${what.padEnd(36)} ${median(xs).toFixed(2)} s`);
  console.log(`  operator peak RSS                         ${Math.max(...rss).toFixed(1)} MiB`);
  console.log(
    `  target <= ${TARGET_S} s: ` +
      `${median(pgop) <= TARGET_S ? 'met' : `MISSED by ${(median(pgop) - TARGET_S).toFixed(2)} s`}`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
  rmSync(stateRoot, { recursive: true, force: true });
  const hub = hubNs();
  // We live in the hub ourselves: removing its name now lets it vanish when we exit.
  if (netnsPids(hub).every((p) => p === process.pid)) await deleteNetns(hub).catch(() => undefined);
}
