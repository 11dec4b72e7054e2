// Prometheus metrics for `pgop serve`. Gauges are read from the store at each scrape (what
// `get nodes` shows); histograms and counters are fed by the loop as passes finish.

import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { PassResult } from '../reconcile/reconciler.js';
import type { Store } from '../store/store.js';
import { apiDocument } from './queries.js';

const PASS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const EPISODE_BUCKETS = [0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300];

/** "16/3000060" -> 0x1603000060 as a number of bytes (exact up to 2^53). */
export function lsnBytes(lsn: string): number {
  const [hi, lo] = lsn.split('/');
  return parseInt(hi!, 16) * 2 ** 32 + parseInt(lo!, 16);
}

/** Failovers and switchovers as episodes: from the first pass that works on one to the pass
 *  that completes it. Kept per cluster in this process (a restart starts the clock afresh). */
export class EpisodeTracker {
  private started = new Map<string, { kind: 'failover' | 'switchover'; at: number }>();

  /** The finished episode and its duration (s), if this pass finished one. */
  note(r: PassResult, now: number): { kind: 'failover' | 'switchover'; seconds: number } | null {
    const rule = r.decision.ruleId;
    const kind =
      rule === 'primary.unhealthy' || rule.startsWith('failover.')
        ? 'failover'
        : rule.startsWith('switchover.') && rule !== 'switchover.rejected'
          ? 'switchover'
          : null;
    const open = this.started.get(r.cluster);
    if (kind && (!open || open.kind !== kind)) this.started.set(r.cluster, { kind, at: now });
    const episode = this.started.get(r.cluster);
    const ends =
      r.acted &&
      (rule === 'failover.promote' || rule === 'failover.adopt-promoted' || rule === 'switchover.done');
    if (episode && ends) {
      this.started.delete(r.cluster);
      return { kind: episode.kind, seconds: (now - episode.at) / 1000 };
    }
    // a failing primary that recovers on its own ends the episode without a failover
    if (r.decision.kind === 'done') this.started.delete(r.cluster);
    return null;
  }
}

type Label = 'cluster' | 'node' | 'role' | 'state' | 'phase' | 'sync_state' | 'kind' | 'outcome';
const C: Label[] = ['cluster'];
const CN: Label[] = ['cluster', 'node'];

export class ServeMetrics {
  readonly registry = new Registry();
  private readonly episodes = new EpisodeTracker();
  private readonly g = {
    phase: this.gauge('pgop_cluster_phase', 'The cluster phase (1 for the current one).', [...C, 'phase']),
    generation: this.gauge('pgop_cluster_generation', 'The stored spec generation.', C),
    observedGeneration: this.gauge('pgop_cluster_observed_generation', 'The generation last converged.', C),
    role: this.gauge('pgop_node_role', 'The node role as observed (1 for the current one).', [...CN, 'role']),
    state: this.gauge('pgop_node_state', 'The node machine state (1 for the current one).', [...CN, 'state']),
    reachable: this.gauge('pgop_node_reachable', 'The operator reaches the node (1) or not (0).', CN),
    lag: this.gauge('pgop_node_lag_bytes', 'WAL bytes a standby has yet to replay.', CN),
    timeline: this.gauge('pgop_node_timeline', 'The timeline of a running postgres.', CN),
    lsn: this.gauge('pgop_node_lsn_bytes', 'WAL position (primary: current; standby: replayed).', CN),
    sync: this.gauge('pgop_node_sync_state', "A standby's sync state (1 for the current one).", [
      ...CN,
      'sync_state',
    ]),
    poolUp: this.gauge('pgop_pgpool_up', 'pgpool answers the operator (1) or not (0).', C),
    poolPrimary: this.gauge('pgop_pgpool_primary', 'The node pgpool sends writes to (1).', CN),
    poolBackend: this.gauge('pgop_pgpool_backend_up', 'A pgpool backend is up (1), down or unused (0).', CN),
    jobs: this.gauge('pgop_jobs_running', 'Running jobs by kind.', [...C, 'kind']),
  };
  private readonly passDuration = this.histogram(
    'pgop_reconcile_pass_duration_seconds',
    'Duration of one reconcile pass (observe, plan, act, commit).',
    [...C, 'outcome'],
    PASS_BUCKETS,
  );
  private readonly probeDuration = this.histogram(
    'pgop_probe_duration_seconds',
    'Duration of one look at a cluster (every node and pgpool probed in parallel).',
    C,
    PASS_BUCKETS,
  );
  private readonly lastPass = this.gauge(
    'pgop_reconcile_last_pass_timestamp_seconds',
    'When the last pass ended.',
    C,
  );
  private readonly episodeCount = {
    failover: this.counter('pgop_failovers_total', 'Failovers completed (a standby promoted).'),
    switchover: this.counter('pgop_switchovers_total', 'Switchovers completed.'),
  };
  private readonly episodeDuration = {
    failover: this.histogram(
      'pgop_failover_duration_seconds',
      'From the first pass that saw the primary failing to the promotion.',
      C,
      EPISODE_BUCKETS,
    ),
    switchover: this.histogram(
      'pgop_switchover_duration_seconds',
      'From the first switchover step to its completion.',
      C,
      EPISODE_BUCKETS,
    ),
  };

  constructor(private readonly store: Store) {}

  private gauge(name: string, help: string, labelNames: Label[]): Gauge<Label> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  private counter(name: string, help: string): Counter<Label> {
    return new Counter({ name, help, labelNames: C, registers: [this.registry] });
  }

  private histogram(name: string, help: string, labelNames: Label[], buckets: number[]): Histogram<Label> {
    return new Histogram({ name, help, labelNames, buckets, registers: [this.registry] });
  }

  /** The loop's observer: one finished pass and how long it took. */
  onPass(r: PassResult, passMs: number, now = Date.now()): void {
    const outcome = r.error ? 'failed' : r.acted ? 'acted' : r.decision.kind;
    this.passDuration.observe({ cluster: r.cluster, outcome }, passMs / 1000);
    if (r.observeMs !== undefined) this.probeDuration.observe({ cluster: r.cluster }, r.observeMs / 1000);
    this.lastPass.set({ cluster: r.cluster }, now / 1000);
    const done = this.episodes.note(r, now);
    if (done) {
      this.episodeCount[done.kind].inc({ cluster: r.cluster });
      this.episodeDuration[done.kind].observe({ cluster: r.cluster }, done.seconds);
    }
  }

  /** The exposition text, gauges read from the store now. */
  async scrape(): Promise<string> {
    this.refreshGauges();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private refreshGauges(): void {
    for (const gauge of Object.values(this.g)) gauge.reset();
    for (const c of apiDocument(this.store, 'clusters', {}).items) {
      this.g.phase.set({ cluster: c.name, phase: c.phase }, 1);
      this.g.generation.set({ cluster: c.name }, c.generation);
      this.g.observedGeneration.set({ cluster: c.name }, c.observed_generation);
      // counters exist (at 0) before the first failover, so rate() and increase() see it
      this.episodeCount.failover.inc({ cluster: c.name }, 0);
      this.episodeCount.switchover.inc({ cluster: c.name }, 0);
      this.refreshObservation(c.name);
    }
    for (const n of apiDocument(this.store, 'nodes', {}).items) {
      const l = { cluster: n.cluster, node: n.name };
      this.g.role.set({ ...l, role: n.role }, 1);
      this.g.state.set({ ...l, state: n.state }, 1);
      this.g.reachable.set(l, n.reachable ? 1 : 0);
      if (n.lag_bytes !== null) this.g.lag.set(l, n.lag_bytes);
      if (n.timeline !== null) this.g.timeline.set(l, n.timeline);
      if (n.lsn !== null) this.g.lsn.set(l, lsnBytes(n.lsn));
    }
    for (const j of this.store.jobs.list({ running: true }))
      this.g.jobs.inc({ cluster: j.cluster, kind: j.kind });
  }

  private refreshObservation(cluster: string): void {
    const obs = this.store.getObservation(cluster);
    if (!obs) return;
    for (const n of Object.values(obs.nodes)) {
      const pg = n.postgres;
      if (!pg?.running || pg.inRecovery) continue;
      for (const r of pg.replicas) this.g.sync.set({ cluster, node: r.name, sync_state: r.syncState }, 1);
    }
    if (!obs.pool) return;
    this.g.poolUp.set({ cluster }, obs.pool.reachable ? 1 : 0);
    if (obs.pool.primary) this.g.poolPrimary.set({ cluster, node: obs.pool.primary }, 1);
    for (const b of obs.pool.backends)
      this.g.poolBackend.set({ cluster, node: b.name }, b.status === 'up' ? 1 : 0);
  }
}
