// What every rule may ask about the cluster, computed once per plan() call from its input.

import type { NodeEvent, NodeGoal, NodeState } from '../../machines/node-edges.js';
import type { NodeObservation, PostgresObservation } from '../observe/types.js';
import type {
  ClusterAction,
  NodeDecision,
  NodeVerdict,
  OperatorRequest,
  PlanInput,
  Verdict,
} from './types.js';

/** Requeue delays (ms). Acting requeues at once: the next pass re-observes and re-plans. */
export const REQUEUE = { afterAct: 0, waitShort: 200, waitBoot: 500 } as const;

export interface PlanContext {
  input: PlanInput;
  state(node: string): NodeState;
  obs(node: string): NodeObservation | undefined;
  /** the spec's nodes, in spec order */
  specNames: string[];
  /** nodes that left the spec: recorded ones (until scale.forget) and machines nobody recorded */
  strayNames: string[];
  /** failureDetection: misses before failover, probe interval, retry interval after a miss */
  budget: number;
  probeMs: number;
  retryMs: number;
  /** the node recorded as primary (a spec node first, else one that left the spec), or null */
  primary: string | null;
  /** the primary answers and its postgres runs */
  primaryHealthy: boolean;
  /** the primary's postgres, when it is healthy */
  primaryPg: PostgresObservation | null;
  /** spec nodes streaming from the healthy primary, by name ([] when it is not healthy) */
  streaming: string[];
  /** nodes pgpool must not open sessions on: their postgres failed missesBeforeFailover probes */
  poolFailed: string[];
  goals: Record<string, NodeGoal>;
  /** standbys that could be promoted now, best first */
  candidates: string[];
  /** whether promoting the best candidate keeps every acknowledged commit (sync mode) */
  syncEvidence: { ok: true } | { ok: false; reason: string };
  /** some node holds data, recorded or only observed: no bootstrap */
  anyData: boolean;
  /** no primary and a candidate exists, but promoting it could lose acknowledged commits: why */
  electionBlockedBy: string | undefined;
  /** the fenced or rejoining node that may come back as primary because nobody else can */
  lastPrimaryToBringBack: string | undefined;
  switchoverRequest: OperatorRequest | undefined;
}

/** The look began before the node's last recorded step (a job committed during it): what it
 *  saw of the node's machine is older than its state, so no verdict on the machine from it. */
export function lookPredates(ctx: Pick<PlanContext, 'input'>, node: string): boolean {
  return (ctx.input.since?.[node] ?? 0) > ctx.input.observation.at;
}

export function healthy(o: NodeObservation | undefined): boolean {
  return !!o && o.reachable && !!o.postgres?.running;
}

/** Its postmaster runs yet gave the probe no answer (stopped, stuck): acting on it over pg or
 *  pg_ctl would only wait out timeouts while the loop waits too. It is waited for (or fenced, as
 *  a failed primary is). */
export function hangs(o: NodeObservation | undefined): boolean {
  return !!o?.hung;
}

export function streamingFrom(o: NodeObservation | undefined, primary: string): boolean {
  const pg = o?.postgres;
  return !!pg && healthy(o) && pg.inRecovery && pg.streaming && pg.upstream === primary;
}

export function lsnOf(o: NodeObservation | undefined): number {
  const pg = o?.postgres;
  return pg ? Math.max(pg.lsn, pg.receiveLsn) : -1;
}

export const holdsData = (s: NodeState) =>
  s === 'standby' || s === 'degraded' || s === 'fenced' || s === 'rejoining';

export function buildContext(input: PlanInput): PlanContext {
  const { spec, observation } = input;
  const obs = (n: string) => observation.nodes[n];
  const state = (n: string): NodeState => input.states[n] ?? 'absent';
  const specNames = spec.nodes.map((n) => n.name);
  const strayNames = [...new Set([...Object.keys(input.states), ...Object.keys(observation.strays ?? {})])]
    .filter((n) => !specNames.includes(n))
    .sort();
  const budget = spec.failureDetection.missesBeforeFailover;
  const primary =
    specNames.find((n) => state(n) === 'primary') ?? strayNames.find((n) => state(n) === 'primary') ?? null;
  const primaryHealthy = !!primary && healthy(obs(primary));
  const base = { input, state, obs, specNames, strayNames, budget, primary };
  const candidates = promotable(base);
  const syncEvidence = evidenceOfSync(base);
  const anyData = specNames.some((n) => {
    const pg = obs(n)?.postgres;
    // a node running as a writable primary while 'installed' is the bootstrap itself
    const bootstrapping = state(n) === 'installed' && !!pg?.running && !pg.inRecovery;
    return holdsData(state(n)) || (!!pg?.initialized && !bootstrapping);
  });
  const electionBlockedBy =
    !primary && anyData && candidates.length > 0 && !syncEvidence.ok ? syncEvidence.reason : undefined;
  // one literal, not a spread of `base`: a spread context is several times slower to build and read
  return {
    input,
    state,
    obs,
    specNames,
    strayNames,
    budget,
    primary,
    probeMs: spec.failureDetection.probeIntervalMs,
    // after a failed probe the next comes quickly: a dead primary is confirmed in `budget` quick
    // probes; a merely slow one answers one of them and nothing happens
    retryMs: spec.failureDetection.retryIntervalMs,
    primaryHealthy,
    primaryPg: primaryHealthy ? obs(primary!)!.postgres! : null,
    streaming: primaryHealthy
      ? specNames.filter((n) => n !== primary && streamingFrom(obs(n), primary!)).sort()
      : [],
    poolFailed: specNames.filter((n) => n !== primary && failsPoolSessions(base, n)),
    goals: goalsOf(base),
    candidates,
    syncEvidence,
    anyData,
    electionBlockedBy,
    lastPrimaryToBringBack: lastPrimaryToBringBack(base, candidates, electionBlockedBy),
    switchoverRequest: input.requests.find((r) => r.kind === 'switchover'),
  };
}

/** A node pgpool must not hold up: its postgres failed the budget of probes, or it refuses
 *  sessions outside a standby's brief restart (one being rejoined or rebuilt: up to minutes). */
function failsPoolSessions({ obs, state, budget }: ContextBase, n: string): boolean {
  const pg = obs(n)?.postgres;
  if (pg?.refusesSessions) return state(n) !== 'standby' && state(n) !== 'primary';
  return (obs(n)?.misses ?? 0) >= budget && !pg?.running;
}

type ContextBase = Pick<
  PlanContext,
  'input' | 'state' | 'obs' | 'specNames' | 'strayNames' | 'budget' | 'primary'
>;

function goalsOf({ input, specNames, strayNames, primary }: ContextBase): Record<string, NodeGoal> {
  const goals: Record<string, NodeGoal> = {};
  for (const n of specNames) {
    goals[n] = input.deletionRequested ? 'absent' : n === primary ? 'primary' : 'standby';
  }
  for (const n of strayNames) goals[n] = 'absent';
  return goals;
}

/** Standbys that could be promoted now, best first: highest WAL position; among equals the one
 *  pgpool routes to (no second switch of pgpool), then spec order. */
function promotable({ input, state, obs, specNames }: ContextBase): string[] {
  const poolTarget = input.observation.pool?.primary ?? null;
  return specNames
    .filter((n) => state(n) === 'standby' && healthy(obs(n)))
    .sort(
      (a, b) =>
        lsnOf(obs(b)) - lsnOf(obs(a)) ||
        Number(b === poolTarget) - Number(a === poolTarget) ||
        specNames.indexOf(a) - specNames.indexOf(b),
    );
}

/** Every commit acknowledged under `ANY k (N)` sits on at least k members of N. Promoting the most
 *  advanced of at least |N|-k+1 readable members is the only way to be sure to hold every
 *  acknowledged commit (quorum intersection). N is the set last seen on the primary; when it was
 *  never seen (a fresh operator), every node that may have streamed counts. */
function evidenceOfSync({ input, state, obs, specNames }: ContextBase): PlanContext['syncEvidence'] {
  const { spec, observation } = input;
  const last = observation.lastSync;
  let names: string[];
  let k: number;
  if (last) {
    if (last.names.length === 0) return { ok: true };
    names = last.names;
    k = last.quorum;
  } else {
    if (spec.replication.mode !== 'sync') return { ok: true };
    names = specNames.filter((n) => ['standby', 'degraded', 'rejoining'].includes(state(n)));
    k = spec.replication.syncQuorum;
  }
  const visible = names.filter((n) => state(n) === 'standby' && healthy(obs(n)));
  const needed = Math.max(1, names.length - k + 1);
  if (visible.length >= needed) return { ok: true };
  if (last?.elected) {
    const [promoted, ...level] = names;
    const none = level.length
      ? `none of ${level.join(', ')} (level with it then) can be read`
      : 'no standby was level with it';
    return {
      ok: false,
      reason:
        `sync mode: ${promoted} was promoted holding every acknowledged commit and ${none}; ` +
        `only ${promoted} is sure to hold them`,
    };
  }
  return {
    ok: false,
    reason:
      `sync mode: commits were acknowledged by ANY ${k} of (${names.join(', ')}); only ${visible.length} ` +
      `of them can be read and ${needed} are needed to be sure the promoted node holds every ` +
      'acknowledged commit',
  };
}

/** With no primary and no standby that can be promoted, the most recent old primary (of the
 *  fenced or rejoining nodes, the last to change state) holds every commit it acknowledged and may
 *  come back. Never while a standby whose postgres is down but whose machine answers has not been
 *  looked at: it may have been promoted after the fence without the operator seeing it, and
 *  bringing the old primary back would rewind its newer commits away. */
function lastPrimaryToBringBack(
  { input, state, obs, specNames, primary }: ContextBase,
  candidates: string[],
  electionBlockedBy: string | undefined,
): string | undefined {
  if (primary) return undefined;
  if (candidates.length > 0 && electionBlockedBy === undefined) return undefined;
  const mayHoldNewerPrimary = specNames.some(
    (n) => (state(n) === 'standby' || state(n) === 'degraded') && !!obs(n)?.reachable && !healthy(obs(n)),
  );
  if (mayHoldNewerPrimary) return undefined;
  return [...specNames]
    .filter((n) => state(n) === 'fenced' || state(n) === 'rejoining')
    .sort((a, b) => (input.since?.[b] ?? 0) - (input.since?.[a] ?? 0))[0];
}

// --- verdict builders: a rule's decision before plan() stamps its rule id --------------------

type NodeDecisionExtra = Partial<
  Pick<
    NodeDecision,
    'primary' | 'standbys' | 'successor' | 'postmasterDeathReported' | 'leavingSpec' | 'levelStandbys'
  >
>;

export function act(
  node: string,
  event: NodeEvent,
  reason: string,
  extra: NodeDecisionExtra = {},
): NodeVerdict {
  return { kind: 'act', node, event, reason, requeueAfterMs: REQUEUE.afterAct, ...extra };
}

export function wait(reason: string, node?: string, requeueAfterMs: number = REQUEUE.waitShort): Verdict {
  return { kind: 'wait', node, reason, requeueAfterMs };
}

export function clusterAction(action: ClusterAction, reason: string): Verdict {
  return { kind: 'cluster', action, reason, requeueAfterMs: REQUEUE.afterAct };
}
