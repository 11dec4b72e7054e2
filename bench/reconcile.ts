// bench:reconcile — one reconcile pass over 100 simulated clusters x 3 nodes, the way
// `pgop serve` runs it (store on disk, WAL mode). Prints ms per pass and peak memory, against
// a baseline measured in the same run: the same pass without the store writes (observe + plan
// only), so the cost of durability is visible. Target: <= 50 ms per pass.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { SimWorld } from '../src/drivers/sim/world.js';
import { SimClock } from '../src/drivers/sim/clock.js';
import { createSimWorld } from '../src/drivers/sim/drivers.js';
import { Reconciler } from '../src/reconcile/reconciler.js';
import { observeCluster } from '../src/reconcile/observe.js';
import { plan } from '../src/plan/plan.js';
import { canonicalJson } from '../src/spec/parse.js';
import type { ClusterSpec } from '../src/spec/types.js';

const CLUSTERS = Number(process.env.BENCH_CLUSTERS ?? 100);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 30);
const TARGET_MS = 50;

function spec(i: number): ClusterSpec {
  const name = `c${String(i).padStart(3, '0')}`;
  const net = `10.${Math.floor(i / 250)}.${i % 250}`;
  return {
    apiVersion: 'pgop.dev/v1',
    kind: 'Cluster',
    name,
    provider: { type: 'sim' },
    postgres: {
      version: 15,
      parameters: {
        wal_level: 'replica',
        max_wal_senders: 5,
        hot_standby: 'on',
        wal_log_hints: 'on',
        shared_buffers: '128MB',
      },
      dataDir: '/u01/pg15/data',
      archiveDir: '/u02/archive',
      backupDir: '/u02/backup',
      logDir: '/var/log/postgres',
      archiveScript: true,
      superuserPassword: { env: 'X' },
      hba: [],
    },
    nodes: [1, 2, 3].map((k) => ({
      name: `pg0${k}`,
      address: `${net}.${10 + k}`,
      vcpus: 2,
      memoryMiB: 1024,
      rootDiskGiB: 20,
      dataDiskGiB: 40,
    })),
    replication: {
      mode: i % 2 ? 'sync' : 'async',
      syncQuorum: 1,
      user: 'replicator',
      password: { env: 'Y' },
      slots: true,
    },
    pgpool: {
      enabled: true,
      address: `${net}.10`,
      port: 9999,
      pcpPort: 9898,
      loadBalancing: true,
      primaryApplications: [],
      watchdog: { enabled: false },
      numInitChildren: 32,
    },
    roles: [],
    databases: [],
    grants: [],
    failureDetection: {
      probeIntervalMs: 1000,
      missesBeforeFailover: 3,
      connectTimeoutMs: 1000,
      retryIntervalMs: 100,
    },
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const p95 = (xs: number[]) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.95))]!;
let peakRss = 0;
const sample = () => (peakRss = Math.max(peakRss, process.memoryUsage().rss));

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'pgop-bench-'));
  try {
    const clock = new SimClock(Date.now());
    const sim = new SimWorld({ clock });
    const drivers = createSimWorld(sim);
    const store = Store.open(join(dir, 'bench.db'));
    const specs = Array.from({ length: CLUSTERS }, (_, i) => spec(i));
    for (const s of specs) store.applySpec(s, canonicalJson(s), '', clock.now());
    const reconciler = new Reconciler({ store, worldFor: () => drivers, clock });
    const passAll = () => Promise.all(specs.map((s) => reconciler.pass(s.name)));

    // Converge everything first: the benchmark measures the steady state serve lives in.
    let rounds = 0;
    for (;;) {
      const results = await passAll();
      clock.advance(100);
      rounds++;
      if (results.every((r) => r?.converged)) break;
      if (rounds > 200) throw new Error('bench clusters did not converge');
    }
    sample();

    const full: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const t = performance.now();
      await passAll();
      full.push(performance.now() - t);
      clock.advance(1000);
      sample();
    }

    // Baseline: the same observation and planning, no store writes.
    const baseline: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const t = performance.now();
      await Promise.all(
        specs.map(async (s) => {
          const c = store.getCluster(s.name)!;
          const obs = await observeCluster(c.spec, drivers, {}, clock.now());
          const states = Object.fromEntries(store.listNodes(s.name).map((n) => [n.name, n.state]));
          plan({
            spec: c.spec,
            deletionRequested: false,
            observation: obs,
            states,
            desiredConfigHash: Object.fromEntries(
              c.spec.nodes.map((n) => [n.name, drivers.postgres.desiredConfigHash(c.spec, n)]),
            ),
            requests: [],
            now: clock.now(),
          });
        }),
      );
      baseline.push(performance.now() - t);
      sample();
    }
    store.close();

    const med = median(full);
    console.log(
      `bench:reconcile  ${CLUSTERS} clusters x 3 nodes, ` +
        `${ROUNDS} passes each (converge took ${rounds} passes)`,
    );
    console.log(
      `  full pass (observe+plan+store)   median ${med.toFixed(2)} ms   ` +
        `p95 ${p95(full).toFixed(2)} ms   min ${Math.min(...full).toFixed(2)} ms`,
    );
    console.log(
      `  baseline (observe+plan, no store) median ${median(baseline).toFixed(2)} ms   ` +
        `p95 ${p95(baseline).toFixed(2)} ms`,
    );
    console.log(
      `  store overhead                    ${(med - median(baseline)).toFixed(2)} ms per pass ` +
        `(${(med / median(baseline)).toFixed(2)}x baseline)`,
    );
    console.log(`  peak RSS                          ${(peakRss / 2 ** 20).toFixed(1)} MiB`);
    console.log(
      `  target <= ${TARGET_MS} ms per pass: ` +
        `${med <= TARGET_MS ? 'met' : `MISSED by ${(med - TARGET_MS).toFixed(2)} ms`}`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
