// How ensurePool brings pgpool's routing to what the operator wants, as a pure step function:
// one look at pgpool (its backends, which nodes' postgres answer) and the clock in, the next
// step out. The driver's loop (settle in driver.ts) looks, asks for a step, performs it and
// looks again; nothing here talks to pgpool, so every branch is unit-tested without it.

import type { PoolBackend } from '../../observe/types.js';

/** What the operator wants pgpool to route: `primary` up as its primary, every other node
 *  attached while its postgres answers (when standbys are attached at all), detached when the
 *  operator saw it fail. */
export interface RoutingGoal {
  /** the spec's node names, in spec order (pgpool's node ids) */
  nodes: string[];
  primary: string | null;
  failed: string[];
  /** 'detached' (load balancing off): pgpool holds only the primary. Its standbys then serve no
   *  pgpool client, and every attach or detach in pgpool ends the sessions that run a query
   *  meanwhile, so a standby's death and return are kept out of pgpool altogether. */
  standbys: 'attached' | 'detached';
}

/** One look at pgpool and the nodes. */
export interface PoolLook {
  /** pgpool's backends; null when it did not answer */
  backends: PoolBackend[] | null;
  /** why pgpool did not answer */
  error?: string;
  /** whether each node's postgres answers, in spec order (empty when pgpool did not answer) */
  reach: boolean[];
  /** whether the wanted primary's postgres answered a connect (undefined: not probed) */
  primaryAnswers?: boolean;
  /** nodes pgpool itself holds up that `backends` shows down, being cut off from the pool host
   *  by a route: bringing one back needs the route removed, and no attach */
  heldUp?: string[];
}

export interface RoutingClock {
  now: number;
  /** when pgpool is taken as stuck (restarted once, then given up) */
  deadline: number;
  restarted: boolean;
  /** since when the wanted primary has not answered a connect (null: it did, or was not asked) */
  primaryGoneSince: number | null;
  /** how long it may stay silent before routing to it is given up */
  primaryGoneLimitMs: number;
  /** when each request was last sent, by requestKey */
  sent: ReadonlyMap<string, number>;
}

export interface RouteRequest {
  kind: 'promote' | 'attach' | 'detach';
  node: string;
  /** pgpool's id of the node: its index in the spec */
  nodeId: number;
}

export type NextRouting =
  | { kind: 'done' }
  | { kind: 'wait'; ms: number }
  /** pgpool keeps not answering or routing wrong: restart it (it starts with the unreachable
   *  nodes marked down and finds the primary by itself) */
  | { kind: 'restart' }
  | { kind: 'give-up'; cause: 'primary-silent' | 'stuck' };

export interface RoutingStep {
  /** PCP requests to send now, together (an attach after removing a fence's route) */
  send: RouteRequest[];
  next: NextRouting;
  /** why pgpool does not route as wanted yet ('' when done) */
  why: string;
}

/** pgpool answers a request at once and acts on it a moment later: the same request is not
 *  sent again within this time. */
export const RESEND_AFTER_MS = 3000;
/** between two looks; a look pgpool did not answer waits longer (it ends sessions while it
 *  switches and restarts its children, and every new one opens sessions on all its nodes) */
export const POLL_MS = 50;
export const NO_ANSWER_BACKOFF_MS = 250;

export const requestKey = (r: Pick<RouteRequest, 'kind' | 'node'>) => `${r.kind}:${r.node}`;

const statusOf = (backends: PoolBackend[], node: string) => backends.find((b) => b.name === node)?.status;

const routesTo = (backends: PoolBackend[] | null, node: string | null) =>
  !!node && !!backends?.some((b) => b.name === node && b.status === 'up' && b.role === 'primary');

/** Whether the wanted primary's postgres must be probed: routing to one that stopped answering
 *  (it failed meanwhile) cannot succeed, and the operator must look again rather than wait. */
export function mustProbePrimary(goal: RoutingGoal, backends: PoolBackend[] | null): boolean {
  return goal.primary !== null && goal.nodes.includes(goal.primary) && !routesTo(backends, goal.primary);
}

/** Whether each node's postgres answers, as far as known without a probe (undefined: probe
 *  it). Only a node pgpool holds down is probed (each accepted connect costs postgres a
 *  backend, every round): one it routes to stays unless the operator saw it fail. */
export function knownReach(
  goal: RoutingGoal,
  backends: PoolBackend[],
  primaryAnswers: boolean | undefined,
): (boolean | undefined)[] {
  return goal.nodes.map((name) => {
    if (name === goal.primary && primaryAnswers !== undefined) return primaryAnswers;
    // not held whether it answers or not
    if (name !== goal.primary && goal.standbys === 'detached') return false;
    if (goal.failed.includes(name) && name !== goal.primary) return false;
    return statusOf(backends, name) === 'up' ? true : undefined;
  });
}

/** Since when the wanted primary has been silent, after `look` at `now`. */
export function primaryGoneSince(previous: number | null, look: PoolLook, now: number): number | null {
  return look.primaryAnswers === false ? (previous ?? now) : null;
}

/** The next step towards `goal`, from one look at pgpool. */
export function nextRoutingStep(goal: RoutingGoal, look: PoolLook, clock: RoutingClock): RoutingStep {
  if (clock.primaryGoneSince !== null && clock.now - clock.primaryGoneSince > clock.primaryGoneLimitMs) {
    const why = 'the primary does not answer';
    return { send: [], next: { kind: 'give-up', cause: 'primary-silent' }, why };
  }
  const { backends } = look;
  if (!backends) return notYet(clock, [], `pgpool does not answer: ${look.error ?? 'no answer'}`, true);
  const primaryOk = goal.primary === null || routesTo(backends, goal.primary);
  const wanted = primaryOk
    ? followersRequests(goal, look.reach, backends)
    : primaryRequest(goal, look, backends);
  const send = wanted.filter((r) => clock.now - (clock.sent.get(requestKey(r)) ?? 0) > RESEND_AFTER_MS);
  const matches = goal.nodes.every(
    (name, i) => name === goal.primary || (statusOf(backends, name) === 'up') === holds(goal, look.reach, i),
  );
  if (primaryOk && matches) return { send: [], next: { kind: 'done' }, why: '' };
  const sees = backends.map((b) => `${b.name}:${b.status}/${b.role}`).join(' ');
  return notYet(clock, send, `pgpool sees ${sees}, want primary ${goal.primary ?? '(none)'}`, false);
}

/** pgpool routes writes elsewhere (or nowhere). An attached node is made its primary at once
 *  with a PCP promote (pgpool only switches its routing and marks every other node down; they
 *  are attached again afterwards). A detached one is attached: pgpool then looks for the
 *  primary among its nodes and finds it. Nothing while the primary does not answer. */
function primaryRequest(goal: RoutingGoal, look: PoolLook, backends: PoolBackend[]): RouteRequest[] {
  const nodeId = goal.primary === null ? -1 : goal.nodes.indexOf(goal.primary);
  if (nodeId < 0 || !look.reach[nodeId]) return [];
  const kind = statusOf(backends, goal.primary!) === 'up' ? 'promote' : 'attach';
  return [{ kind, node: goal.primary!, nodeId }];
}

/** Every other node: attached once its postgres answers, detached when the operator saw it
 *  fail (pgpool does neither by itself: its health checks and failover are off). */
function followersRequests(goal: RoutingGoal, reach: boolean[], backends: PoolBackend[]): RouteRequest[] {
  const out: RouteRequest[] = [];
  goal.nodes.forEach((node, nodeId) => {
    if (node === goal.primary) return;
    const status = statusOf(backends, node);
    const wanted = holds(goal, reach, nodeId);
    if (status === 'down' && wanted) out.push({ kind: 'attach', node, nodeId });
    else if (status === 'up' && !wanted) out.push({ kind: 'detach', node, nodeId });
  });
  return out;
}

/** Whether pgpool should hold the node at `nodeId` (not the primary) up. */
function holds(goal: RoutingGoal, reach: boolean[], nodeId: number): boolean {
  return goal.standbys === 'attached' && !!reach[nodeId];
}

/** Not routed as wanted yet: wait for pgpool, or past the deadline restart it once, then give up. */
function notYet(clock: RoutingClock, send: RouteRequest[], why: string, noAnswer: boolean): RoutingStep {
  if (clock.now > clock.deadline) {
    return { send, next: clock.restarted ? { kind: 'give-up', cause: 'stuck' } : { kind: 'restart' }, why };
  }
  return { send, next: { kind: 'wait', ms: noAnswer ? NO_ANSWER_BACKOFF_MS + POLL_MS : POLL_MS }, why };
}
