// The monitor: a pure, synchronous function from (spec, fresh observation, stored node states)
// to ONE decision with a reason and a rule id. It never performs anything; the reconciler
// steps the node machine with the decision's event and runs the edge's actor.
//
// Rules are tried in priority order; the first that applies decides. Safety rules (fence before
// promote, sync-quorum evidence before promote) come before liveness rules.

import type { NodeGoal, NodeState } from '../../machines/node-edges.js';
import type { NodeObservation } from '../observe/types.js';
import type { NodeSpec } from '../spec/types.js';
import type { Decision, NodeDecision, PlanInput, PlanResult } from './types.js';
import { formatLsn, parseLsn } from '../observe/lsn.js';

/** Requeue delays (ms). Acting requeues at once: the next pass re-observes and re-plans. */
export const REQUEUE = { afterAct: 0, waitShort: 200, waitBoot: 500 } as const;

const holdsData = (s: NodeState) => s === 'standby' || s === 'degraded' || s === 'fenced' || s === 'rejoining';

export function healthy(o: NodeObservation | undefined): boolean {
  return !!o && o.reachable && !!o.postgres?.running;
}

function streamingFrom(o: NodeObservation | undefined, primary: string): boolean {
  const pg = o?.postgres;
  return !!pg && healthy(o) && pg.inRecovery && pg.streaming && pg.upstream === primary;
}

/** `ANY 1 (pg02, pg03)` / `ANY 1 ("pg02","pg03")` / `FIRST 1 (..)` / `pg02, pg03` / '' */
export function parseSyncNames(s: string): { quorum: number; names: string[] } {
  const t = s.trim();
  if (t === '') return { quorum: 0, names: [] };
  const m = /^(?:(ANY|FIRST)\s+)?(\d+)\s*\((.*)\)$/i.exec(t);
  const list = (m ? m[3]! : t).split(',').map((x) => x.trim().replace(/^"(.*)"$/, '$1')).filter(Boolean);
  return { quorum: m ? Number(m[2]) : 1, names: list.sort() };
}

function lsnOf(o: NodeObservation | undefined): number {
  const pg = o?.postgres;
  return pg ? Math.max(pg.lsn, pg.receiveLsn) : -1;
}

/** Node-local rules whose actions may run on several nodes in the same pass. */
const PARALLEL_RULES: ReadonlySet<string> = new Set(['node.provision', 'node.install', 'node.clone-standby', 'node.start-machine', 'rejoin.start-machine', 'rejoin.standby', 'standby.repoint', 'node.config-drift']);

export function plan(input: PlanInput): PlanResult {
  const { spec, observation } = input;
  const obs = (n: string) => observation.nodes[n];
  const state = (n: string): NodeState => input.states[n] ?? 'absent';
  const specNames = spec.nodes.map((n) => n.name);
  // Nodes that left the spec: recorded ones (until they are forgotten: rule scale.forget), and
  // machines the provider holds for the cluster that no record knows.
  const strayNames = [...new Set([...Object.keys(input.states), ...Object.keys(observation.strays ?? {})])]
    .filter((n) => !specNames.includes(n))
    .sort();
  const budget = spec.failureDetection.missesBeforeFailover;
  const probeMs = spec.failureDetection.probeIntervalMs;
  // After a failed probe the next comes quickly: a dead primary is confirmed in `budget` quick
  // probes; a merely slow one answers one of them and nothing happens.
  const retryMs = spec.failureDetection.retryIntervalMs;

  const primary = specNames.find((n) => state(n) === 'primary') ?? strayNames.find((n) => state(n) === 'primary') ?? null;
  /** nodes pgpool must not open sessions on: their postgres failed missesBeforeFailover probes */
  const poolFailed = specNames.filter((n) => n !== primary && (obs(n)?.misses ?? 0) >= budget && !obs(n)?.postgres?.running);

  const goals: Record<string, NodeGoal> = {};
  for (const n of specNames) goals[n] = input.deletionRequested ? 'absent' : n === primary ? 'primary' : 'standby';
  for (const n of strayNames) goals[n] = 'absent';

  const result = (decision: Decision, phase?: PlanResult['phase']): PlanResult => ({
    decision,
    goals,
    primary,
    phase: phase ?? phaseFor(decision),
  });
  const phaseFor = (d: Decision): PlanResult['phase'] => {
    if (input.deletionRequested) return d.kind === 'done' ? 'Deleted' : 'Deleting';
    if (d.kind === 'done') return 'Healthy';
    if (d.ruleId.startsWith('failover.')) return 'FailingOver';
    if (d.ruleId.startsWith('switchover.')) return 'SwitchingOver';
    const everStarted = specNames.some((n) => state(n) === 'primary' || holdsData(state(n)));
    return everStarted ? 'Degraded' : 'Provisioning';
  };
  const act = (node: string, event: NodeDecision['event'], ruleId: string, reason: string, extra: Partial<NodeDecision> = {}) =>
    result({ kind: 'act', node, event, ruleId, reason, requeueAfterMs: REQUEUE.afterAct, ...extra });
  const wait = (ruleId: string, reason: string, node?: string, requeueAfterMs: number = REQUEUE.waitShort) =>
    result({ kind: 'wait', node, ruleId, reason, requeueAfterMs });

  // --- deletion: fence, then delete every machine, then cluster-wide resources -------------
  if (input.deletionRequested) {
    for (const n of [...specNames, ...strayNames]) {
      const s = state(n);
      if (s === 'absent') continue;
      if (s === 'deleting') return act(n, 'machine.fenced', 'delete.remove-machine', `cluster deletion: removing ${n}'s machine and data`);
      return act(n, 'node.unwanted', 'delete.fence', `cluster deletion: powering ${n} off first`);
    }
    // Also removes machines pgop created but never recorded (a crash between side effect and
    // commit), then networks and the pgpool host; the reconciler then forgets the cluster.
    return result({ kind: 'cluster', action: { type: 'deleteClusterResources' }, ruleId: 'delete.resources', reason: 'cluster deletion: every node is gone; removing machines left over, networks and the pgpool host', requeueAfterMs: REQUEUE.afterAct });
  }

  // --- bookkeeping: a machine that disappeared under a node (a node that left the spec is
  // removed step by step instead, below; only a primary's loss is news to the election) ------
  for (const n of [...specNames, ...strayNames.filter((x) => state(x) === 'primary')]) {
    const s = state(n);
    if (s !== 'absent' && s !== 'deleting' && obs(n)?.machine.state === 'missing') {
      const why = s === 'primary' ? ' (the primary is gone for good: no fencing needed)' : '';
      return act(n, 'machine.vanished', 'node.machine-vanished', `${n}'s machine no longer exists${why}; starting it over from nothing`);
    }
  }

  // --- bookkeeping: an installed node that already holds a clone (operator died after the
  // clone succeeded): start it if needed, then record it as the standby it is.
  for (const n of specNames) {
    const pg = obs(n)?.postgres;
    if (state(n) !== 'installed' || !pg?.initialized || !obs(n)?.reachable) continue;
    if (pg.running && pg.inRecovery) return act(n, 'standby.found', 'node.adopt-clone', `${n} already runs as a standby (its clone finished before the operator recorded it); recording it`);
    // Started in place, a clone comes up in recovery and the first primary (initdb finished,
    // commit lost) as a primary: either is then adopted by the rules here or the bootstrap.
    if (!pg.running) return act(n, 'postgres.stopped', 'node.start-unrecorded', `${n} holds a data directory pgop has not recorded and postgres is down; starting it in place to adopt it`);
  }

  // --- failover, step 1: fence a failed primary before anything else ------------------------
  if (primary) {
    const o = obs(primary);
    if (o && !healthy(o) && o.misses >= budget) {
      // Fence only when someone can then be promoted (in sync mode: with quorum evidence):
      // fencing a primary nobody can replace turns an outage into a longer one.
      const successor = promotable(primary)[0];
      if (successor && syncEvidence().ok) {
        // pgpool is switched to the likely successor during the fence only on a fresh look: an
        // urgent one's standby answers predate the failure, and a switch to a standby the
        // election then passes over costs pgpool a second failover (~1 s); the promotion step
        // switches it then.
        const early = spec.pgpool.enabled && !observation.urgent;
        const told = observation.urgent?.includes(primary) ? { postmasterDeathReported: true as const } : {};
        return act(primary, 'probe.failed', 'failover.fence-primary', `primary ${primary} failed ${o.misses} consecutive probes (${o.error ?? 'postgres not running'}); fencing it before promoting a standby${early ? ` (pgpool switches to ${successor} meanwhile)` : ''}`, { ...(early ? { successor } : {}), ...told });
      }
      // Nobody could take over: bring the primary itself back rather than fence the last copy.
      if (o.machine.state === 'stopped') return act(primary, 'machine.down', 'recover.start-primary', `primary ${primary}'s machine is off and no standby can take over; starting it again`);
      if (o.reachable) return act(primary, 'postgres.stopped', 'recover.restart-primary', `primary ${primary}'s postgres is down and no standby can take over; restarting it in place`);
      return wait('failover.no-candidate', `primary ${primary} failed ${o.misses} probes (${o.error ?? 'postgres down'}) and no standby is healthy enough to take over`, primary, probeMs);
    }
  }

  // --- no primary: elect one ------------------------------------------------------------
  let electionBlocked: PlanResult | undefined;
  /** Of the fenced or rejoining nodes, the one that changed state last: the newest old primary. */
  const freshestOldPrimary = [...specNames]
    .filter((n) => state(n) === 'fenced' || state(n) === 'rejoining')
    .sort((a, b) => (input.since?.[b] ?? 0) - (input.since?.[a] ?? 0))[0];
  /** Standbys whose machine answers but whose postgres is down. One of them may have been
   *  promoted after the old primary was fenced (a promotion whose outcome the operator never
   *  saw): an old primary is brought back only once each was restarted in place and looked at
   *  (a writable one is adopted), or its newer commits would be rewound away. */
  const mayHoldNewerPrimary = specNames.filter((n) => (state(n) === 'standby' || state(n) === 'degraded') && !!obs(n)?.reachable && !healthy(obs(n)));
  if (!primary) {
    // A standby already writable: we promoted it and died before recording it. Adopt it.
    // A standby already writable: we promoted it and died before recording it, or its promotion
    // succeeded although the actor reported a failure (it died right after) and it was then
    // restarted in place (degraded -> standby). Adopt it: it holds the newest timeline.
    const adopted = specNames.find((n) => state(n) === 'standby' && healthy(obs(n)) && obs(n)!.postgres!.inRecovery === false);
    if (adopted) return act(adopted, 'primary.elected', 'failover.adopt-promoted', `${adopted} is already writable (its promotion finished though it was not recorded); recording it as primary`);

    // Data counts whether recorded or only observed (a clone whose commit was lost); a node
    // running as a writable primary while 'installed' is the bootstrap itself, not other data.
    const anyData = specNames.some((n) => {
      const pg = obs(n)?.postgres;
      return holdsData(state(n)) || (!!pg?.initialized && !(state(n) === 'installed' && pg.running && !pg.inRecovery));
    });
    if (!anyData) {
      // Bootstrap: the first installed node in spec order becomes the primary. One that already
      // runs as a primary (initPrimary succeeded, commit lost) wins.
      const installed = specNames.filter((n) => state(n) === 'installed');
      // An installed node we cannot see may already hold the first primary (initdb done, the
      // commit lost): initialising another one would make two. Wait until every one is seen.
      const unseen = installed.filter((n) => !obs(n)?.reachable);
      const off = unseen.find((n) => obs(n)?.machine.state === 'stopped');
      if (off) return act(off, 'machine.down', 'node.start-machine', `${off}'s machine is off; starting it`);
      if (unseen.length > 0) return wait('bootstrap.wait-unseen', `no node holds recorded data yet, but ${unseen.join(', ')} cannot be read and may hold an unrecorded primary; waiting before initialising one`, unseen[0], probeMs);
      const running = installed.find((n) => healthy(obs(n)) && obs(n)!.postgres!.inRecovery === false);
      const first = running ?? installed.find((n) => obs(n)?.reachable);
      if (first) return act(first, 'primary.elected', 'bootstrap.init-primary', `no node holds data yet; initialising ${first} as the first primary`, { standbys: specNames.filter((x) => x !== first) });
    } else {
      const candidates = promotable(null);
      const request = input.requests.find((r) => r.kind === 'switchover');
      if (candidates.length > 0) {
        const enough = syncEvidence();
        // Not enough evidence yet: let the nodes that could supply it recover (below) first.
        if (!enough.ok) electionBlocked = wait('failover.sync-evidence', enough.reason, undefined, probeMs);
        else {
        const best = candidates[0]!;
        const target = request?.args.to && candidates.includes(request.args.to) && lsnOf(obs(request.args.to)) >= lsnOf(obs(best)) ? request.args.to : best;
        const rule = request ? 'switchover.promote' : 'failover.promote';
        return act(target, 'primary.elected', rule, `no primary; promoting ${target}: ${describeCandidate(target)}${candidates.length > 1 ? `, ahead of ${candidates.filter((c) => c !== target).map(describeCandidate).join(', ')}` : ''}`, {
          standbys: specNames.filter((x) => x !== target),
        });
        }
      }
    }
  }

  // --- right after a failover: clients first. pgpool must route writes to the new primary and
  // the other standbys must follow it (in sync mode commits wait for them) before anything
  // slower (rewinding the old primary) happens; both run in the same pass.
  if (primary && healthy(obs(primary)) && spec.pgpool.enabled && specNames.includes(primary)) {
    const pool = observation.pool;
    const afterFailover = specNames.some((n) => state(n) === 'fenced' || state(n) === 'rejoining') || (!!pool?.reachable && pool.primary !== null && pool.primary !== primary);
    if (afterFailover && (!pool?.reachable || pool.primary !== primary)) {
      // While pgpool does not answer it is still switching (restarting its children): the
      // standbys follow once it does, not alongside (their SSH round trips and reloads competed
      // for the CPU with pgpool's restart and delayed the first write through it by up to 1 s).
      // Commits on the new primary do not wait for them meanwhile: it starts with no sync set.
      const repoints = !pool?.reachable ? [] : specNames
        .filter((n) => n !== primary && state(n) === 'standby' && healthy(obs(n)) && !streamingFrom(obs(n), primary))
        .map((n): NodeDecision => ({ kind: 'act', node: n, event: 'primary.changed', ruleId: 'standby.repoint', reason: `standby ${n} follows ${obs(n)!.postgres!.upstream ?? 'nobody'}; pointing it at primary ${primary}`, requeueAfterMs: REQUEUE.afterAct, primary }));
      const why = !pool?.reachable ? `pgpool is not answering${pool?.error ? ` (${pool.error})` : ''}` : `pgpool routes writes to ${pool.primary}`;
      const r = result({ kind: 'cluster', action: { type: 'ensurePool', primary, failed: poolFailed }, ruleId: 'failover.pool-route', reason: `${why}; pointing it at new primary ${primary}${repoints.length ? ` while ${repoints.map((d) => d.node).join(', ')} follow it` : ''}`, requeueAfterMs: REQUEUE.afterAct });
      if (repoints.length) r.also = repoints;
      return r;
    }
  }

  // --- pgpool still sends sessions to a standby whose postgres failed: pgpool opens every new
  // session on all its nodes, so each one would fail until the node is detached (pgpool does
  // not detach anything by itself). Before slower per-node repairs.
  if (primary && healthy(obs(primary)) && spec.pgpool.enabled && observation.pool?.reachable) {
    const failed = observation.pool.backends.filter((b) => b.status === 'up' && poolFailed.includes(b.name)).map((b) => b.name);
    if (failed.length > 0) {
      return result({ kind: 'cluster', action: { type: 'ensurePool', primary, failed: poolFailed }, ruleId: 'pool.detach-failed', reason: `postgres on ${failed.join(', ')} failed ${budget}+ probes but pgpool still opens sessions there; detaching ${failed.length > 1 ? 'them' : 'it'}`, requeueAfterMs: REQUEUE.afterAct });
    }
  }

  // --- per-node convergence, in spec order. Actions that touch only their own node
  // (provision, install, clone, restart, rewind, reconfigure a standby) on several nodes run
  // together, one per node: bring-up and rejoin do not wait for each other. -----------------
  function perNode(n: string): PlanResult | undefined {
    const s = state(n);
    const o = obs(n);
    switch (s) {
      case 'absent':
        return act(n, 'node.wanted', 'node.provision', `${n} is in the spec but has no machine; provisioning it`);
      case 'provisioned':
        if (o?.reachable) return act(n, 'machine.reachable', 'node.install', `${n} answers over SSH; installing and configuring postgres`);
        if (o?.machine.state === 'stopped') return act(n, 'machine.vanished', 'node.reprovision', `${n}'s machine stopped before installation; provisioning it again`);
        return undefined; // booting: other nodes may still progress
      case 'installed':
        if (o?.machine.state === 'stopped') return act(n, 'machine.down', 'node.start-machine', `${n}'s machine is off; starting it`);
        if (primary && healthy(obs(primary)) && o?.reachable) {
          return act(n, 'primary.found', 'node.clone-standby', `${primary} is primary; cloning ${n} from it as a streaming standby`, { primary });
        }
        return undefined;
      case 'standby':
        // Marked degraded with or without a primary: a degraded node has ways back (restart
        // in place, then promotion) that a stuck 'standby' has not.
        if (!healthy(o) && (o?.misses ?? 0) >= budget) {
          return act(n, 'probe.failed', 'standby.failed', `standby ${n} failed ${o?.misses} consecutive probes (${o?.error ?? 'postgres not running'})`);
        }
        if (!primary) return undefined;
        if (healthy(o) && healthy(obs(primary)) && !streamingFrom(o, primary)) {
          const up = o!.postgres!.upstream;
          return act(n, 'primary.changed', 'standby.repoint', `standby ${n} ${up && up !== primary ? `follows ${up}` : 'is not streaming'}; pointing it at primary ${primary}`, { primary });
        }
        if (healthy(o) && o!.postgres!.configHash !== input.desiredConfigHash[n]) {
          return act(n, 'config.drifted', 'node.config-drift', `${n}'s configuration differs from the spec; rewriting and reloading it`);
        }
        return undefined;
      case 'primary':
        if (healthy(o) && o!.postgres!.configHash !== input.desiredConfigHash[n]) {
          return act(n, 'config.drifted', 'node.config-drift', `${n}'s configuration differs from the spec; rewriting and reloading it`);
        }
        return undefined;
      case 'degraded':
      case 'rejoining':
        if (o?.machine.state === 'stopped') return act(n, 'machine.down', 'rejoin.start-machine', `${n}'s machine is off; starting it to rejoin`);
        if (!o?.reachable) return undefined;
        if (primary && healthy(obs(primary))) return act(n, 'machine.reachable', 'rejoin.standby', `${n} is reachable again; ${s === 'rejoining' ? 'rewinding it into' : 'rejoining it as'} a standby of ${primary}`, { primary });
        // Without a primary (the election above could not promote anyone), bring the node's
        // own postgres back in place: a degraded standby comes up in recovery and may hold
        // commits a sync-mode promotion must see. A rejoining node may be an old primary: only
        // the most recent one comes back (writable, with all its commits, then recorded as
        // primary again), and only when no standby can be promoted instead. Never two.
        if (!primary && (s === 'degraded' || (n === freshestOldPrimary && mayHoldNewerPrimary.length === 0 && (electionBlocked || promotable(null).length === 0)))) return act(n, 'postgres.stopped', 'recover.restart-in-place', `no primary; restarting ${n}'s postgres in place so the most advanced node can be promoted`);
        return undefined;
      case 'fenced': {
        if (primary && healthy(obs(primary))) return act(n, 'fence.released', 'rejoin.release-fence', `${primary} is the new primary; restarting fenced ${n} to rejoin as a standby`);
        if (!primary && n === freshestOldPrimary && mayHoldNewerPrimary.length === 0 && (electionBlocked || promotable(null).length === 0)) {
          return act(n, 'fence.released', 'recover.release-last-primary', `no standby can be promoted${electionBlocked ? ` (${electionBlocked.decision.reason})` : ''}; restarting ${n}, the most recent primary, which holds every commit it acknowledged`);
        }
        return undefined;
      }
      case 'deleting':
        return act(n, 'machine.fenced', 'node.remove-machine', `${n} is powered off; removing its machine`);
    }
    return undefined;
  }
  for (const n of specNames) {
    const r = perNode(n);
    if (!r) continue;
    if (r.decision.kind === 'act' && PARALLEL_RULES.has(r.decision.ruleId) && !(r.decision.ruleId === 'node.config-drift' && n === primary)) {
      const also = specNames
        .slice(specNames.indexOf(n) + 1)
        .map((x) => (x === primary ? undefined : perNode(x)?.decision))
        .filter((d): d is NodeDecision => d?.kind === 'act' && PARALLEL_RULES.has(d.ruleId));
      if (also.length) r.also = also;
    }
    return r;
  }

  if (electionBlocked) return electionBlocked;

  // --- nodes removed from the spec (scale-in), one step a pass, in this order: out of the sync
  // set (no commit waits for it), out of pgpool (no client reaches it), fenced, its machine and
  // data deleted, its replication slot dropped on the primary (no WAL held for it), forgotten.
  // A primary is handed over first (scale.handover, below) and then removed the same way.
  for (const n of strayNames) {
    const r = removeStray(n);
    if (r) return r;
  }

  // --- cluster-wide: sync quorum, pgpool, switchover ---------------------------------------
  if (primary && healthy(obs(primary))) {
    const p = obs(primary)!.postgres!;
    const streaming = specNames.filter((n) => n !== primary && streamingFrom(obs(n), primary)).sort();
    const current = parseSyncNames(p.syncStandbyNames);
    if (spec.replication.mode === 'sync') {
      const k = spec.replication.syncQuorum;
      // Enable only once k standbys stream (else every write hangs). Adding a streaming
      // standby to the set is always safe; dropping a member is safe only once every
      // remaining member holds all the primary's WAL (else a commit acknowledged by the dropped
      // member alone would be outside the set the failover rule trusts).
      const caughtUp = streaming.every((n) => (p.replicas.find((r) => r.name === n)?.flushLsn ?? -1) >= p.lsn);
      const keep = caughtUp && streaming.length >= k ? [] : current.names;
      const wanted = streaming.length >= k || current.names.length > 0 ? [...new Set([...streaming, ...keep])].sort() : [];
      if (wanted.join(',') !== current.names.join(',') || (wanted.length > 0 && current.quorum !== k)) {
        return result({ kind: 'cluster', action: { type: 'ensureSyncStandbys', primary, names: wanted, quorum: k }, ruleId: 'sync.quorum', reason: wanted.length ? `requiring ANY ${k} of (${wanted.join(', ')}) to acknowledge commits` : `only ${streaming.length} of ${k} required standbys stream; keeping commits asynchronous until they do`, requeueAfterMs: REQUEUE.afterAct });
      }
    } else if (current.names.length > 0) {
      return result({ kind: 'cluster', action: { type: 'ensureSyncStandbys', primary, names: [], quorum: 0 }, ruleId: 'sync.off', reason: 'replication mode is async; clearing synchronous_standby_names', requeueAfterMs: REQUEUE.afterAct });
    }

    // (A primary that left the spec is handed over first: pgpool is configured from the spec,
    // which no longer holds it; the failover's pool step points pgpool at its successor.)
    if (spec.pgpool.enabled && specNames.includes(primary)) {
      const pool = observation.pool;
      const downButHealthy = pool?.backends.filter((b) => b.status !== 'up' && (b.name === primary || streaming.includes(b.name))) ?? [];
      if (!pool || !pool.reachable || pool.primary !== primary || downButHealthy.length > 0) {
        const why = !pool || !pool.reachable ? `pgpool is not answering${pool?.error ? ` (${pool.error})` : ''}` : pool.primary !== primary ? `pgpool routes writes to ${pool.primary ?? 'nothing'}` : `pgpool marks ${downButHealthy.map((b) => b.name).join(', ')} down`;
        return result({ kind: 'cluster', action: { type: 'ensurePool', primary, failed: poolFailed }, ruleId: 'pool.route', reason: `${why}; pointing it at primary ${primary}`, requeueAfterMs: REQUEUE.afterAct });
      }
      // After routing (a restart ends every client session: not in the middle of a failover).
      if (input.desiredPoolConfigHash !== undefined && pool.configHash !== input.desiredPoolConfigHash) {
        return result({ kind: 'cluster', action: { type: 'ensurePool', primary, failed: poolFailed }, ruleId: 'pool.reconfigure', reason: `pgpool's configuration differs from the spec (${pool.configHash ? 'changed' : 'not recorded'}); rewriting it and restarting pgpool`, requeueAfterMs: REQUEUE.afterAct });
      }
    }

    // The primary left the spec (scale-down): hand over first, then it is removed as a stray.
    if (!specNames.includes(primary)) {
      const to = streaming.sort((a, b) => lsnOf(obs(b)) - lsnOf(obs(a)))[0];
      if (!to) return wait('scale.wait-handover', `primary ${primary} left the spec; waiting for a streaming standby to hand over to`, primary, probeMs);
      return act(primary, 'switchover.requested', 'scale.handover', `primary ${primary} left the spec; shutting it down cleanly so ${to} takes over with every commit`);
    }

    const request = input.requests.find((r) => r.kind === 'switchover');
    if (request) {
      // args.from: the primary when the request was made; args.to: the wanted one, if named.
      const target = request.args.to;
      const from = request.args.from;
      if (target && !specNames.includes(target)) {
        return result({ kind: 'cluster', action: { type: 'completeRequest', requestId: request.id }, ruleId: 'switchover.rejected', reason: `switchover to ${target} dropped: no such node in the spec`, requeueAfterMs: REQUEUE.afterAct });
      }
      if (target ? target === primary : !from || from !== primary) {
        return result({ kind: 'cluster', action: { type: 'completeRequest', requestId: request.id }, ruleId: 'switchover.done', reason: `switchover complete: ${primary} is primary`, requeueAfterMs: REQUEUE.afterAct });
      }
      const candidates = streaming.filter((n) => specNames.includes(n));
      const to = target ?? candidates.sort((a, b) => lsnOf(obs(b)) - lsnOf(obs(a)))[0];
      if (!to || !candidates.includes(to)) {
        return wait('switchover.wait-target', `switchover requested${target ? ` to ${target}` : ''}: no streaming standby to hand over to yet`, undefined, probeMs);
      }
      return act(primary, 'switchover.requested', 'switchover.demote', `switchover to ${to} requested: shutting ${primary} down cleanly so ${to} receives every commit`);
    }
  } else if (primary) {
    return wait('primary.unhealthy', `primary ${primary} is not answering (${obs(primary)?.error ?? 'postgres down'}; ${obs(primary)?.misses ?? 0}/${budget} misses)`, primary, retryMs);
  }

  // --- nothing to do, or only waiting -------------------------------------------------------
  const pending = specNames.filter((n) => {
    const s = state(n);
    return !(s === 'primary' ? healthy(obs(n)) : s === 'standby' && primary ? streamingFrom(obs(n), primary) : false);
  });
  if (pending.length > 0) {
    const n = pending[0]!;
    return wait('node.waiting', `waiting for ${n} (${state(n)}${obs(n)?.error ? `: ${obs(n)!.error}` : ''})`, n, state(n) === 'provisioned' ? REQUEUE.waitBoot : REQUEUE.waitShort);
  }
  // A completed switchover request whose target did not become primary (another won): close it.
  const stale = input.requests.find((r) => r.kind === 'switchover');
  if (stale) return result({ kind: 'cluster', action: { type: 'completeRequest', requestId: stale.id }, ruleId: 'switchover.done', reason: `switchover settled: ${primary} is primary`, requeueAfterMs: REQUEUE.afterAct });
  return result({ kind: 'done', ruleId: 'cluster.converged', reason: `primary ${primary}, ${specNames.length - 1} streaming standbys; matches generation's spec`, requeueAfterMs: probeMs });

  // --- helpers (hoisted) -----------------------------------------------------------------
  /** The next step of removing `n`, a node that left the spec, or undefined (wait for it). */
  function removeStray(n: string): PlanResult | undefined {
    const s = state(n);
    if (s === 'primary') return undefined; // handed over first (scale.handover)
    const o = obs(n);
    const livePrimary = primary && specNames.includes(primary) && healthy(obs(primary)) ? obs(primary)!.postgres! : null;
    if (livePrimary && s !== 'absent') {
      const current = parseSyncNames(livePrimary.syncStandbyNames);
      if (current.names.includes(n)) {
        const k = spec.replication.mode === 'sync' ? spec.replication.syncQuorum : current.quorum;
        const left = current.names.filter((x) => !strayNames.includes(x));
        // fewer members than the quorum would stop every commit: asynchronous until sync.quorum
        // finds enough streaming standbys again
        const names = left.length >= k ? left : [];
        return result({ kind: 'cluster', action: { type: 'ensureSyncStandbys', primary: primary!, names, quorum: k }, ruleId: 'scale.sync-remove', reason: `${n} left the spec; taking it out of synchronous_standby_names first (${names.length ? `ANY ${k} of (${names.join(', ')})` : 'asynchronous commits until enough standbys stream'})`, requeueAfterMs: REQUEUE.afterAct });
      }
      const pool = observation.pool;
      // pgpool names a backend the spec no longer holds by its address
      const address = observation.strays?.[n]?.address;
      if (spec.pgpool.enabled && pool?.reachable && pool.backends.some((b) => b.status !== 'unused' && (b.name === n || (address !== undefined && b.name === address)))) {
        return result({ kind: 'cluster', action: { type: 'ensurePool', primary: primary!, failed: poolFailed }, ruleId: 'scale.pool-remove', reason: `${n} left the spec; removing it from pgpool's backends before it is fenced (pgpool restarts, ending its client sessions)`, requeueAfterMs: REQUEUE.afterAct });
      }
    }
    if (s !== 'deleting' && s !== 'absent') {
      return act(n, 'node.unwanted', 'scale.fence', `${n} left the spec${o?.postgres?.running ? ` (postgres ${o.postgres.inRecovery ? 'streaming' : 'running'})` : ''}; fencing it before its machine is removed`, { leavingSpec: true });
    }
    // a failed listing says nothing about the machine (observeCluster): ask again next pass
    if (s === 'absent' && o?.machine.detail?.startsWith('provider unavailable')) return undefined;
    if (s === 'absent' && o && o.machine.state !== 'missing') {
      // a machine made for it before its record (or left by a removal that died half-way)
      return act(n, 'node.unwanted', 'scale.fence', `${n} left the spec but its machine still exists (${o.machine.detail ?? o.machine.state}); fencing it before removal`, { leavingSpec: true });
    }
    if (s === 'deleting') return act(n, 'machine.fenced', 'scale.remove-machine', `${n} left the spec and is fenced; deleting its machine with its disks and data`);
    // absent, machine gone: its slot on the primary, then the record
    const slot = input.slotNames?.[n];
    if (slot && primary && !specNames.includes(primary)) return undefined; // after the handover
    if (slot && !livePrimary) return undefined; // the slot is dropped on a primary that answers
    if (slot && livePrimary?.slots?.includes(slot)) {
      return result({ kind: 'cluster', action: { type: 'dropSlots', primary: primary!, node: n }, ruleId: 'scale.drop-slot', reason: `${n}'s machine is gone; dropping its replication slot ${slot} on primary ${primary}, which would otherwise keep WAL for it for ever`, requeueAfterMs: REQUEUE.afterAct });
    }
    if (livePrimary && !livePrimary.slots && slot) return undefined; // slots not read: cannot tell yet
    return result({ kind: 'cluster', action: { type: 'forgetNode', node: n }, ruleId: 'scale.forget', reason: `${n} left the spec and is gone: no machine, no pgpool backend, no replication slot, not in synchronous_standby_names; forgetting it`, requeueAfterMs: REQUEUE.afterAct });
  }

  /** Standbys that could be promoted now, best first (highest WAL position, then spec order). */
  function promotable(exclude: string | null): string[] {
    // Among equals, the one pgpool routes to (or is switching to, after the fence): no second
    // switch of pgpool.
    const poolTarget = observation.pool?.primary ?? null;
    return specNames
      .filter((n) => n !== exclude && state(n) === 'standby' && healthy(obs(n)))
      .sort((a, b) => lsnOf(obs(b)) - lsnOf(obs(a)) || Number(b === poolTarget) - Number(a === poolTarget) || specNames.indexOf(a) - specNames.indexOf(b));
  }
  function describeCandidate(n: string): string {
    const pg = obs(n)?.postgres;
    return pg ? `${n} at LSN ${formatLsn(lsnOf(obs(n)))} on timeline ${pg.timeline}` : n;
  }
  /** Every commit acknowledged under `ANY k (N)` sits on at least k members of N. Promoting
   *  the most advanced of at least |N|-k+1 readable members is the only way to be sure to hold
   *  every acknowledged commit (quorum intersection). N is the set last seen on the primary;
   *  when it was never seen (a fresh operator), every node that may have streamed counts. */
  function syncEvidence(): { ok: true } | { ok: false; reason: string } {
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
    return { ok: false, reason: `sync mode: commits were acknowledged by ANY ${k} of (${names.join(', ')}); only ${visible.length} of them can be read and ${needed} are needed to be sure the promoted node holds every acknowledged commit` };
  }
}

export { formatLsn, parseLsn };

export type { NodeSpec };
