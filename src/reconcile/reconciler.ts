// The loop, one pass per cluster: observe afresh -> plan (pure) -> step the node machine
// (pure) -> run the edge's actor through the drivers -> commit the new state and an event row
// only after the side effect succeeded -> requeue. Level-based: a pass never trusts what a
// previous pass meant to do, only what it observes now and what was committed.

import { stepNode } from '../../machines/node-machine.js';

type NodeStep = NonNullable<ReturnType<typeof stepNode>>;
import type { NodeGoal, NodeState } from '../../machines/node-edges.js';
import type { World } from '../drivers/types.js';
import type { ClusterSpec } from '../spec/types.js';
import type { Store } from '../store/store.js';
import type { NodeRecord, StoredCluster } from '../store/types.js';
import type { ClusterDecision, Decision, NodeDecision, PlanResult } from '../plan/types.js';
import { plan } from '../plan/plan.js';
import { parseSyncNames } from '../plan/sync.js';
import { failedRuleId, type RuleId } from '../plan/rule-ids.js';
import type { ClusterObservation, SyncSet } from '../observe/types.js';
import { archivingFails } from '../observe/archiver.js';
import type { NodeSpec } from '../spec/types.js';
import { observeCluster } from './observe.js';
import { PassTrace, SLOW_PASS_MS, whileSlow } from './pass-trace.js';
import { runActor, runClusterAction } from './execute.js';
import { PgopError, messageOf } from '../errors.js';
import { JOB_ACTORS, JobRunner } from './jobs.js';
import { backupPlanInput, startBackupJob, startWalPushJob } from './backups.js';
import { POOL_HOST_JOB_KIND, startPoolHostJob } from './pool-host-jobs.js';
import { backoffMs, type Backoff } from './backoff.js';
import { PREEMPTS_JOBS } from '../plan/jobs.js';

export interface Clock {
  now(): number;
}

export interface Log {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug?(obj: object, msg?: string): void;
}

export const silentLog: Log = { info() {}, warn() {}, error() {} };

export interface ReconcilerOptions {
  store: Store;
  /** The drivers for a cluster's provider (cached by the caller). */
  worldFor(spec: ClusterSpec): World;
  clock: Clock;
  log?: Log;
  /** Test hook: called after a side effect succeeded and before its commit; throwing here
   *  simulates the operator dying at the worst moment. */
  beforeCommit?: (cluster: string, decision: Decision) => void;
}

export interface PassResult {
  cluster: string;
  decision: Decision;
  phase: PlanResult['phase'];
  /** the actor/cluster action ran and its result was committed */
  acted: boolean;
  error?: PgopError | Error;
  requeueAfterMs: number;
  converged: boolean;
  removed?: boolean;
  /** node-local steps that ran alongside the decision */
  also?: NodeDecision[];
  /** how long the look at the world took (every probe in parallel) */
  observeMs?: number;
}

/** A terminal failure (it will not fix itself) is tried again after 30 s, then ever more rarely
 *  while it repeats (up to every 5 min): the event says it once, the log at each try. A new spec
 *  generation is looked at at once (runLoop) and starts the count afresh. */
const BACKOFF: Backoff = { baseMs: 200, maxMs: 5_000, terminalMs: 30_000, terminalMaxMs: 300_000 };

/** How often a cluster's machines are listed in full when no node is being removed. */
const LIST_MACHINES_EVERY_MS = 60_000;

/** What an urgent look may decide: to fence the primary whose postmaster died, or to mark such
 *  a standby failed. Both are safe on other nodes' slightly older answers (a fence only takes
 *  a dead node out; the promotion that follows is planned on a fresh look). */
const URGENT_RULES: ReadonlySet<RuleId> = new Set<RuleId>(['failover.fence-primary', 'standby.failed']);

function urgentAllowed(decision: Decision, look: ClusterObservation, dead: string[]): boolean {
  if (decision.kind === 'cluster') return detachesOnlyDead(decision, look, dead);
  return decision.kind === 'act' && dead.includes(decision.node) && URGENT_RULES.has(decision.ruleId);
}

/** ... or to detach such standbys from pgpool, which fails every new session until then: pgpool's
 *  answer in the look is fresh, and the nodes it still holds up are dead by the news. */
function detachesOnlyDead(decision: ClusterDecision, look: ClusterObservation, dead: string[]): boolean {
  const { action } = decision;
  if (decision.ruleId !== 'pool.detach-failed' || action.type !== 'ensurePool') return false;
  const failed = new Set(action.failed ?? []);
  const detached = (look.pool?.backends ?? []).filter((b) => b.status === 'up' && failed.has(b.name));
  return detached.length > 0 && detached.every((b) => dead.includes(b.name));
}

/** What one look at a cluster saw, and what the planner made of it. */
interface Look {
  observation: ClusterObservation;
  records: NodeRecord[];
  states: Record<string, NodeState>;
  planned: PlanResult;
}

/** Settled once per pass, before its look(s). */
interface LookSetup {
  /** nodes that left the spec, with the NodeSpec they were made with (their real host) */
  strays: Record<string, NodeSpec | undefined>;
  previousMisses: Record<string, number>;
  listMachines: boolean;
  trace: PassTrace;
}

/** A pass that acts: what its steps need. */
interface Acting {
  name: string;
  spec: ClusterSpec;
  world: World;
  look: Look;
  observeMs: number;
  trace: PassTrace;
}

export class Reconciler {
  private misses = new Map<string, Record<string, number>>();
  /** clusters whose last step fenced (or failed) a node on an urgent look */
  private afterUrgent = new Set<string>();
  private failures = new Map<string, { count: number; lastMessage: string }>();
  /** per cluster: whether the primary's WAL archiving was failing at the last look */
  private archiveFailing = new Map<string, boolean>();
  private generations = new Map<string, number>();
  /** The same successful action again and again means the world does not show its effect:
   *  back off instead of spinning (a driver bug or an outside force fighting us). */
  private repeats = new Map<string, { key: string; count: number }>();
  private readonly log: Log;
  /** cluster/node -> the NodeSpec JSON last saved to the store */
  private nodeSpecs = new Map<string, string>();
  /** when each cluster's machines were last listed in full */
  private listedAt = new Map<string, number>();
  /** long actions started by passes and not waited on */
  readonly jobs: JobRunner;

  constructor(private readonly opts: ReconcilerOptions) {
    this.log = opts.log ?? silentLog;
    const { store, clock, beforeCommit } = opts;
    this.jobs = new JobRunner({ store, clock, log: this.log, ...(beforeCommit ? { beforeCommit } : {}) });
  }

  async pass(name: string): Promise<PassResult | null> {
    const trace = new PassTrace();
    const stop = whileSlow(SLOW_PASS_MS, (ms) => {
      const waitingOn = trace.waitingOn();
      const s = Math.round(ms / 1000);
      this.log.warn(
        { cluster: name, passS: s, waitingOn },
        `the pass of ${name} has run ${s} s; its loop sees nothing new meanwhile; ` +
          `waiting on: ${waitingOn.join(', ') || 'nothing named'}`,
      );
    });
    try {
      return await this.passTraced(name, trace);
    } finally {
      stop();
    }
  }

  private async passTraced(name: string, trace: PassTrace): Promise<PassResult | null> {
    const cluster = this.opts.store.getCluster(name);
    if (!cluster) return null;
    const spec = cluster.spec;
    const world = this.opts.worldFor(spec);
    this.jobs.settleOrphans(name);
    // a new spec generation: earlier failures (and their backoff) no longer count
    if (this.generations.get(name) !== cluster.generation) {
      this.generations.set(name, cluster.generation);
      this.failures.delete(name);
      this.jobs.resetCooling(name);
    }
    const passStart = performance.now();
    const look = await this.lookWithUrgency(cluster, world, this.setUpLook(cluster, trace));
    const observeMs = Math.round(performance.now() - passStart);
    const nodes = Object.values(look.observation.nodes);
    this.misses.set(name, Object.fromEntries(nodes.map((n) => [n.name, n.misses])));
    this.recordStatus(cluster, look);

    const { decision, phase } = look.planned;
    const converged = decision.kind === 'done';
    if (decision.kind === 'wait' && /^(primary|failover)\./.test(decision.ruleId)) {
      // the lead-up to a failover, pass by pass (how fast misses are confirmed)
      const fields = { cluster: name, rule: decision.ruleId, node: decision.node, observeMs };
      this.log.info(fields, decision.reason);
    }
    if (decision.kind === 'wait' || decision.kind === 'done') {
      // node-local steps that may go on while the cluster waits (a node's install, say)
      const acting = { name, spec, world, look, observeMs, trace };
      const acted = (await Promise.all(this.alongside(acting))).length > 0;
      this.failures.delete(name);
      const requeueAfterMs = decision.requeueAfterMs;
      const { also } = look.planned;
      return { cluster: name, decision, phase, converged, acted, requeueAfterMs, observeMs, also };
    }
    return this.act({ name, spec, world, look, observeMs, trace }, decision);
  }

  private setUpLook(cluster: StoredCluster, trace: PassTrace): LookSetup {
    const { store, clock } = this.opts;
    const { name, spec } = cluster;
    const specNames = new Set(spec.nodes.map((n) => n.name));
    const recordedNodes = store.listNodes(name);
    const strays = Object.fromEntries(
      recordedNodes
        .filter((r) => !specNames.has(r.name))
        .map((r) => [r.name, store.getNodeSpec(name, r.name)]),
    );
    this.rememberNodeSpecs(
      name,
      spec,
      recordedNodes.map((r) => r.name),
    );
    const previousMisses = this.misses.get(name) ?? {};
    // The provider's full list of machines: every pass while nodes are being removed, else now
    // and then (it finds machines of nodes that left the spec unrecorded), but not while a node
    // fails (the listing comes before the probes: a failover's passes do not wait for it).
    const failing = Object.values(previousMisses).some((m) => m > 0) || this.afterUrgent.has(name);
    const listedLongAgo = clock.now() - (this.listedAt.get(name) ?? -Infinity) >= LIST_MACHINES_EVERY_MS;
    const listMachines = Object.keys(strays).length > 0 || (!failing && listedLongAgo);
    return { strays, previousMisses, listMachines, trace };
  }

  /** An urgent look (other nodes' answers not fresh) serves only to fence or fail the node whose
   *  postmaster died; anything else is decided on a fresh look. */
  private async lookWithUrgency(cluster: StoredCluster, world: World, setup: LookSetup): Promise<Look> {
    // the look after an urgent fence plans the promotion on the answers taken at the news
    const afterDeath = this.afterUrgent.delete(cluster.name);
    const first = await this.look(cluster, world, setup, { afterDeath });
    const dead = first.observation.urgent;
    if (!dead) return first;
    if (!urgentAllowed(first.planned.decision, first.observation, dead)) {
      return this.look(cluster, world, setup, { urgent: false });
    }
    // node-local steps on other nodes wait for a fresh look
    delete first.planned.also;
    return first;
  }

  private async look(
    cluster: StoredCluster,
    world: World,
    setup: LookSetup,
    opts: { urgent?: boolean; afterDeath?: boolean },
  ): Promise<Look> {
    const { store, clock } = this.opts;
    const { name, spec } = cluster;
    const { strays, previousMisses, listMachines, trace } = setup;
    const observe = () =>
      observeCluster(spec, world, previousMisses, clock.now(), strays, { ...opts, listMachines, trace });
    const settled = this.jobs.settledSoFar(name);
    let observation = await observe();
    // a job that committed during the look (a machine deleted, say) left it behind the stored
    // states: planning on both would redo the job's step; look once more (not when a postmaster
    // death is news: that look serves a fence at once)
    if (this.jobs.settledSoFar(name) !== settled && !observation.urgent) observation = await observe();
    if (listMachines) this.listedAt.set(name, clock.now());
    const records = store.listNodes(name);
    const states: Record<string, NodeState> = Object.fromEntries(records.map((r) => [r.name, r.state]));
    this.carrySyncSet(name, spec, observation, records);
    const specNames = new Set(spec.nodes.map((n) => n.name));
    const leftSpec = [...records.map((r) => r.name), ...Object.keys(observation.strays ?? {})].filter(
      (n) => !specNames.has(n),
    );
    const planned = plan({
      spec,
      deletionRequested: cluster.deletionRequested,
      observation,
      states,
      desiredConfigHash: Object.fromEntries(
        spec.nodes.map((n) => [n.name, world.postgres.desiredConfigHash(spec, n)]),
      ),
      ...(spec.pgpool.enabled ? { desiredPoolConfigHash: world.pool.desiredConfigHash(spec) } : {}),
      requests: store.pendingRequests(name),
      now: clock.now(),
      since: Object.fromEntries(records.map((r) => [r.name, r.lastTransitionAt])),
      slotNames: Object.fromEntries(leftSpec.map((n) => [n, world.postgres.slotName(n)])),
      jobs: this.jobs.views(name, clock.now()),
      ...(spec.backup ? backupPlanInput(store, this.jobs, name, observation) : {}),
      ...(observation.pool?.hosts
        ? { poolHostJobs: this.jobs.clusterJobViews(name, POOL_HOST_JOB_KIND, clock.now()) }
        : {}),
    });
    return { observation, records, states, planned };
  }

  /** Remember the sync set while the primary is seen healthy; carry it forward otherwise. A new
   *  primary's empty set (sync mode, before pgop sets it) keeps its election's evidence. */
  private carrySyncSet(
    name: string,
    spec: ClusterSpec,
    observation: ClusterObservation,
    records: NodeRecord[],
  ): void {
    const storedPrimary = records.find((r) => r.state === 'primary')?.name;
    const seen = storedPrimary ? observation.nodes[storedPrimary] : undefined;
    const primaryPg = seen?.postgres;
    const previous = this.opts.store.getObservation(name)?.lastSync;
    if (storedPrimary && primaryPg?.running && !primaryPg.inRecovery && seen?.reachable) {
      const parsed = parseSyncNames(primaryPg.syncStandbyNames);
      const electedHere = previous?.elected && previous.primary === storedPrimary;
      const keepElection = electedHere && parsed.names.length === 0 && spec.replication.mode === 'sync';
      observation.lastSync = keepElection
        ? previous
        : { names: parsed.names, quorum: parsed.quorum, primary: storedPrimary };
    } else if (previous) {
      observation.lastSync = previous;
    }
  }

  /** An event when the primary's WAL archiving starts failing, and when it works again (not on
   *  every retry: postgres retries each second). */
  private noteArchiving(name: string, observation: ClusterObservation, primary: string | null): void {
    const a = primary ? observation.nodes[primary]?.postgres?.archiver : undefined;
    // before the stanza exists every push fails: that is bring-up, not news
    if (!a || !primary || !observation.backup?.stanza) return;
    const failing = archivingFails(a);
    const before = this.archiveFailing.get(name);
    this.archiveFailing.set(name, failing);
    // the first look only sets the baseline (get clusters shows the state meanwhile)
    if (before === undefined || before === failing) return;
    const reason = failing
      ? `archiving ${a.lastFailedWal ?? 'WAL'} on ${primary} fails (${a.failedCount} failed attempts ` +
        'since postgres started); the WAL waits in pg_wal until it is archived'
      : `archiving works again on ${primary} (last archived ${a.lastArchivedWal ?? '-'})`;
    const event = { time: this.opts.clock.now(), cluster: name, node: primary, from: null, to: null, reason };
    if (failing) this.opts.store.recordEvent({ ...event, ruleId: 'backup.archive-failed' });
    else this.opts.store.recordEvent({ ...event, ruleId: 'backup.archive-resumed' });
  }

  private recordStatus(cluster: StoredCluster, { observation, records, planned }: Look): void {
    const { store } = this.opts;
    const { name } = cluster;
    if (cluster.spec.backup) this.noteArchiving(name, observation, planned.primary);
    store.transaction(() => {
      store.saveObservation(observation);
      store.setClusterStatus(name, {
        phase: planned.phase,
        primary: planned.primary,
        message: planned.decision.reason,
        ...(planned.decision.kind === 'done' ? { observedGeneration: cluster.generation } : {}),
      });
      // Goals change with elections; keep the stored ones current for `get nodes`.
      for (const r of records) {
        const goal = planned.goals[r.name] ?? null;
        if (r.goal !== goal) store.setNodeGoal(name, r.name, goal);
      }
    });
  }

  /** Run the decision (and the node-local steps alongside), commit what succeeded, requeue. */
  private async act(acting: Acting, decision: NodeDecision | ClusterDecision): Promise<PassResult> {
    const { name, look, observeMs } = acting;
    const { phase, also } = look.planned;
    const base = { cluster: name, decision, phase, converged: false, observeMs, also };
    try {
      const extra = this.alongside(acting);
      try {
        const what = `${decision.ruleId} (${decision.kind === 'act' ? decision.node : 'cluster'})`;
        if (decision.kind === 'act') await acting.trace.on(what, this.stepOne(acting, decision));
        else if ((await acting.trace.on(what, this.runCluster(acting, decision))) === 'removed') {
          return { ...base, acted: true, requeueAfterMs: 0, removed: true };
        }
      } finally {
        await Promise.all(extra);
      }
      this.failures.delete(name);
      if (look.observation.urgent) this.afterUrgent.add(name);
      return { ...base, acted: true, requeueAfterMs: this.requeueAfterSuccess(name, decision) };
    } catch (err) {
      return { ...base, acted: false, ...this.failed(name, decision, err) };
    }
  }

  /** Node-local steps run alongside the decision; each commits on its own success, and their
   *  failures are recorded like the main one's but do not fail the pass. */
  private alongside(acting: Acting): Promise<void>[] {
    return (acting.look.planned.also ?? []).map((d) =>
      acting.trace
        .on(`${d.ruleId} (${d.node}, alongside)`, this.stepOne(acting, d))
        .catch((err) => void this.failed(acting.name, d, err, false)),
    );
  }

  /** Step the node machine, run the edge's actor, then commit the new state and its event. */
  private async stepOne(acting: Acting, d: NodeDecision): Promise<void> {
    const { store, clock } = this.opts;
    const { name, spec, world, look, observeMs } = acting;
    const from = look.states[d.node] ?? 'absent';
    const step = stepNode(from, d.event);
    if (!step) {
      // The planner sent an event the machine has no edge for: a bug, said loudly.
      const edge = `${from} --${d.event}-->`;
      throw new PgopError('internal', `no edge ${edge} in the node machine (rule ${d.ruleId})`);
    }
    const goal = look.planned.goals[d.node] ?? null;
    // Record the node's name before its first side effect (a machine may come to exist even if
    // this pass dies before the commit), so it can be found and removed later.
    if (!look.states[d.node]) {
      store.saveNodeState(name, d.node, 'absent', { goal, message: d.reason, now: clock.now() });
    }
    this.rememberNodeSpecs(name, spec, [d.node]);
    // a fence or a removal takes the node away: its job (if any) is stopped first
    if (PREEMPTS_JOBS.has(d.ruleId)) this.jobs.cancelNode(name, d.node, `pre-empted: ${d.reason}`);
    if (step.actor && JOB_ACTORS.has(step.actor)) return this.startJob(acting, d, step, goal);
    const actStart = performance.now();
    if (step.actor) await runActor(step.actor, d, spec, world, look.observation.strays);
    const actMs = Math.round(performance.now() - actStart);
    this.opts.beforeCommit?.(name, d);
    store.commitStep({
      cluster: name,
      node: d.node,
      state: step.to,
      goal,
      message: d.reason,
      event: { ruleId: d.ruleId, reason: d.reason, from: step.from, to: step.to },
      now: clock.now(),
      ...electionEvidence(spec, d),
    });
    const urgent = look.observation.urgent ? { urgent: true } : {};
    const { from: stepFrom, to, actor } = step;
    const timing = { observeMs, actMs, ...urgent };
    const fields = { node: d.node, from: stepFrom, to, event: d.event, actor, rule: d.ruleId, ...timing };
    this.log.info({ cluster: name, ...fields }, d.reason);
  }

  /** A long actor runs as a job; its commit follows its success (src/reconcile/jobs.ts). */
  private startJob(acting: Acting, d: NodeDecision, step: NodeStep, goal: NodeGoal | null): void {
    const { name, spec, world, look } = acting;
    // the node moved since this pass read the records (another job settled meanwhile)
    const current = this.opts.store.getNode(name, d.node)?.state ?? 'absent';
    if (current !== step.from || this.jobs.runningOn(name, d.node)) {
      throw new PgopError('transient', `${d.node} changed while this pass planned; planning again`);
    }
    const { strays } = look.observation;
    const actor = step.actor!;
    this.jobs.start({
      cluster: name,
      spec,
      decision: d,
      actor,
      from: step.from,
      to: step.to,
      goal,
      run: (job) => runActor(actor, d, spec, world, strays, job),
    });
  }

  /** Run a cluster-wide action and record it. 'removed': the cluster itself is gone. */
  private async runCluster(acting: Acting, decision: ClusterDecision): Promise<'removed' | void> {
    const { store, clock } = this.opts;
    const { name, spec, world, look } = acting;
    const { action } = decision;
    if (action.type === 'cancelJob') this.jobs.cancel(action.jobId, decision.reason);
    if (action.type === 'deleteClusterResources') this.jobs.cancelCluster(name, 'the cluster is deleted');
    if (action.type === 'startBackup') startBackupJob(this.jobs, spec, world, action, decision);
    if (action.type === 'pushEarlierTimelines') startWalPushJob(this.jobs, spec, world, action, decision);
    if (action.type === 'configurePoolHost') startPoolHostJob(this.jobs, spec, world, action, decision);
    await runClusterAction(action, spec, world, look.observation.strays);
    this.opts.beforeCommit?.(name, decision);
    const { ruleId, reason } = decision;
    const event = { time: clock.now(), cluster: name, from: null, to: null, ruleId, reason };
    if (action.type === 'deleteClusterResources') {
      store.transaction(() => {
        store.recordEvent({ ...event, node: null });
        store.removeCluster(name);
      });
      this.misses.delete(name);
      this.jobs.forgetCluster(name);
      this.log.info({ cluster: name, rule: decision.ruleId }, 'cluster deleted');
      return 'removed';
    }
    store.transaction(() => {
      if (action.type === 'completeRequest') store.completeRequest(action.requestId, clock.now());
      if (action.type === 'forgetNode') {
        store.deleteNodeRecord(name, action.node);
        this.nodeSpecs.delete(`${name}/${action.node}`);
      }
      const node = action.type === 'forgetNode' || action.type === 'dropSlots' ? action.node : null;
      store.recordEvent({ ...event, node });
    });
    this.log.info({ cluster: name, rule: decision.ruleId, action: action.type }, decision.reason);
  }

  /** The decision's own delay, unless the same action keeps succeeding without effect. */
  private requeueAfterSuccess(name: string, decision: NodeDecision | ClusterDecision): number {
    const key =
      decision.kind === 'act'
        ? `${decision.node}/${decision.event}/${decision.ruleId}`
        : `${decision.ruleId}/${JSON.stringify(decision.action)}`;
    const prev = this.repeats.get(name);
    const count = prev?.key === key ? prev.count + 1 : 1;
    this.repeats.set(name, { key, count });
    if (count === 3) {
      const msg = 'the same action succeeded three times without effect; backing off';
      this.log.warn({ cluster: name, rule: decision.ruleId }, msg);
    }
    return count >= 3 ? Math.min(BACKOFF.maxMs, BACKOFF.baseMs * 2 ** (count - 3)) : decision.requeueAfterMs;
  }

  /** Record the NodeSpec of the spec's nodes that have a record (once per change, per process):
   *  a node that leaves the spec later is removed from the host it really is on. */
  private rememberNodeSpecs(cluster: string, spec: ClusterSpec, names: string[]): void {
    for (const n of spec.nodes) {
      if (!names.includes(n.name)) continue;
      const key = `${cluster}/${n.name}`;
      const json = JSON.stringify(n);
      if (this.nodeSpecs.get(key) === json) continue;
      this.opts.store.saveNodeSpec(cluster, n);
      this.nodeSpecs.set(key, json);
    }
  }

  /** Record a failed side effect once per distinct message and back off. `pass`: the pass's own
   *  decision failed (the backoff counts passes; a node-local step alongside does not count). */
  private failed(
    name: string,
    decision: Decision,
    err: unknown,
    pass = true,
  ): { error: Error; requeueAfterMs: number } {
    const error = err instanceof Error ? err : new Error(String(err));
    const kind = err instanceof PgopError ? err.kind : 'internal';
    const message = messageOf(err);
    const prev = this.failures.get(name);
    const count = (prev?.count ?? 0) + (pass ? 1 : 0);
    this.failures.set(name, { count, lastMessage: message });
    const node = decision.kind === 'act' ? decision.node : null;
    if (prev?.lastMessage !== message) {
      try {
        const ruleId = failedRuleId(decision.ruleId);
        const time = this.opts.clock.now();
        const reason = `${kind}: ${message}`;
        this.opts.store.recordEvent({ time, cluster: name, node, from: null, to: null, ruleId, reason });
      } catch {
        // the store itself failing is logged below; the loop goes on
      }
    }
    const logFn = kind === 'transient' ? this.log.warn : this.log.error;
    const fields = { cluster: name, node, rule: decision.ruleId, kind, err: message };
    logFn.call(this.log, fields, `cannot apply decision ${decision.ruleId}`);
    return { error, requeueAfterMs: backoffMs(BACKOFF, kind, count) };
  }
}

/** Clusters to look at now rather than at their requeue time: the world told something
 *  (a probe session dropped, a machine changed state). */
export class Wakeups {
  private pending = new Set<string>();
  private interrupt: (() => void) | null = null;

  wake(cluster: string): void {
    this.pending.add(cluster);
    this.interrupt?.();
  }

  /** The clusters woken since the last call. */
  take(): Set<string> {
    const p = this.pending;
    this.pending = new Set();
    return p;
  }

  /** Sleep `ms`, or less when a cluster is woken meanwhile (or the signal aborts). */
  sleep(
    ms: number,
    sleep: (ms: number, signal?: AbortSignal) => Promise<void>,
    signal?: AbortSignal,
  ): Promise<void> {
    if (this.pending.size > 0) return Promise.resolve();
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    this.interrupt = () => ac.abort();
    return sleep(ms, ac.signal).finally(() => {
      this.interrupt = null;
      signal?.removeEventListener('abort', onAbort);
    });
  }
}

export interface RunOptions {
  untilConverged?: boolean;
  /** give up after this long (ms); run() then returns false */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** stop (returning true) once this holds, checked after every round of passes */
  stopWhen?: () => boolean;
  /** called once per loop iteration, before its passes (serve: the lock heartbeat, which
   *  aborts `signal` when the lock was lost; no pass runs then) */
  onTick?: () => void;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** wake-ups from the world's signals (serve subscribes them) */
  wakeups?: Wakeups;
  /** told of every finished pass and its duration (serve: the metrics) */
  onPass?: (result: PassResult, passMs: number) => void;
}

const realSleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

/** How long a stop waits for passes in flight (they are short and bounded; jobs are not waited
 *  for: the next operator adopts them). */
const STOP_GRACE_MS = 1_000;

/** Run passes for every cluster in the store, each on its own schedule: a pass of one cluster
 *  never waits for another's (a slow pass or a hung node delays only its own cluster). Returns
 *  true when it stopped because everything converged (untilConverged) or was asked to stop,
 *  false on timeout. */
export async function runLoop(
  reconciler: Reconciler,
  store: Store,
  clock: Clock,
  opts: RunOptions = {},
): Promise<boolean> {
  const sleep = opts.sleep ?? realSleep;
  const wakeups = opts.wakeups ?? new Wakeups();
  const schedule = new Schedule(store);
  const inflight = new Map<string, Promise<void>>();
  // a settled job, or a finished pass, is news: look again (at once for that cluster)
  const stopListening = reconciler.jobs.onSettled((c) => wakeups.wake(c));
  const finished = (cluster: string) => wakeups.wake(`\u0000${cluster}`);
  const start = clock.now();
  // a pass that throws (a bug: its failures are caught inside) ends the loop, as it always did
  const crashed: { err?: unknown } = {};
  const runPass = async (n: string) => {
    const t0 = performance.now();
    try {
      const r = await reconciler.pass(n);
      if (r) opts.onPass?.(r, performance.now() - t0);
      schedule.passed(n, r, clock.now());
    } catch (err) {
      if (!('err' in crashed)) crashed.err = err;
    } finally {
      inflight.delete(n);
      finished(n);
    }
  };
  try {
    for (;;) {
      if ('err' in crashed) throw crashed.err;
      if (opts.signal?.aborted) return true;
      opts.onTick?.();
      // onTick may stop the loop (serve: its lock was taken over): no pass after that
      if (opts.signal?.aborted) return true;
      const names = schedule.refresh(wakeups.take());
      const now = clock.now();
      for (const n of names) {
        if (inflight.has(n) || !schedule.isDue(n, now)) continue;
        inflight.set(n, runPass(n));
      }
      if (opts.stopWhen?.()) return true;
      const idle = inflight.size === 0;
      if (opts.untilConverged && idle && schedule.allConverged()) return true;
      if (opts.timeoutMs !== undefined && clock.now() - start >= opts.timeoutMs) return false;
      const idleNames = names.filter((n) => !inflight.has(n));
      const next = Math.min(schedule.nextDue(idleNames), clock.now() + 1000);
      let ms = Math.max(0, next - clock.now());
      if (opts.timeoutMs !== undefined) ms = Math.min(ms, start + opts.timeoutMs - clock.now());
      if (ms > 0) await wakeups.sleep(ms, sleep, opts.signal);
      else if (!idle && idleNames.every((n) => !schedule.isDue(n, clock.now()))) {
        await wakeups.sleep(1000, sleep, opts.signal);
      }
    }
  } finally {
    stopListening();
    // passes in flight are short (every remote call is bounded); do not hang a stop on one
    await Promise.race([Promise.allSettled(inflight.values()), sleep(STOP_GRACE_MS)]);
  }
}

/** When each cluster is due for its next pass, and whether its last pass converged. */
class Schedule {
  private due = new Map<string, number>();
  private converged = new Map<string, boolean>();
  private marks = new Map<string, string>();
  private names: string[] = [];

  constructor(private readonly store: Store) {}

  /** The store's clusters now; those changed meanwhile (spec, deletion, request) or woken are
   *  due at once, not after a backoff. */
  refresh(woken: Set<string>): string[] {
    const clusters = this.store.listClusters();
    this.names = clusters.map((c) => c.name);
    for (const k of [...this.due.keys()]) {
      if (!this.names.includes(k)) (this.due.delete(k), this.converged.delete(k), this.marks.delete(k));
    }
    for (const c of clusters) {
      const pendingCount = this.store.pendingRequests(c.name).length;
      const mark = `${c.generation}/${c.updatedAt}/${c.deletionRequested}/${pendingCount}`;
      if (this.marks.has(c.name) && this.marks.get(c.name) !== mark) this.due.set(c.name, 0);
      this.marks.set(c.name, mark);
    }
    for (const k of woken) if (this.names.includes(k)) this.due.set(k, 0);
    return this.names;
  }

  isDue(name: string, now: number): boolean {
    return (this.due.get(name) ?? 0) <= now;
  }

  passed(name: string, r: PassResult | null, now: number): void {
    if (!r || r.removed) {
      this.due.delete(name);
      this.converged.delete(name);
      return;
    }
    this.due.set(name, now + r.requeueAfterMs);
    this.converged.set(name, r.converged);
  }

  allConverged(): boolean {
    return this.store.listClusters().every((c) => this.converged.get(c.name) === true);
  }

  nextDue(names: string[]): number {
    return Math.min(...names.map((n) => this.due.get(n) ?? 0));
  }
}

/** A promotion in sync mode: the promoted node and the standbys level with it each hold every
 *  commit the old primary acknowledged; they stand as the evidence until the new set is seen. */
function electionEvidence(spec: ClusterSpec, d: NodeDecision): { lastSync?: SyncSet } {
  if (!d.levelStandbys || spec.replication.mode !== 'sync') return {};
  const names = [d.node, ...d.levelStandbys];
  return { lastSync: { names, quorum: names.length, primary: d.node, elected: true } };
}
