// Probing and death detection: one long-lived session per node for the probe query, an SSH look
// that tells "node up, postgres down" from "node gone", and the news of a postmaster's death
// (a backend's last words) that lets a failover start before the next probe's connect fails.

import type pg from 'pg';
import type { ClusterSpec, NodeSpec } from '../../spec/types.js';
import type { PostgresObservation } from '../../observe/types.js';
import type { ProbeOptions, ProbeResult, Signals } from '../types.js';
import { messageOf } from '../../errors.js';
import { ClientCache, newClient, pgMessage } from '../pg-clients.js';
import type { NodeAccess, NodeState } from './node-access.js';
import { downObservation, queryObservation } from './probe-query.js';
import { lookTimeoutMs, probeDeadlineMs, probeTimeoutMs } from '../timeouts.js';

/** How long a backend's report of its postmaster's death stays news (a probe has looked since). */
const DEATH_NEWS_MS = 5_000;
/** How long after the news of a postmaster's death the node's SSH look waits. */
const LOOK_AFTER_DEATH_MS = 1_500;
/** A probe started at the news of another node's death serves this long (probe, afterDeath). */
const EARLY_PROBE_MS = 2_000;
/** A node that answered this recently is looked at over SSH in the background. */
const RECENT_ANSWER_MS = 10_000;
/** How long an SSH look's answer serves the next probes. */
const LOOK_FRESH_MS = 3_000;

export interface Look {
  at: number;
  /** null: SSH did not answer */
  state: NodeState | null;
  error: string;
  pending?: Promise<void>;
}

export class Prober {
  /** probe connections, one per cluster/node */
  private readonly probes: ClientCache;
  /** serialise probes per node */
  private readonly probing = new Map<string, Promise<unknown>>();
  /** per cluster/node: when postgres last answered a probe (ms since the epoch) */
  private readonly lastAnswer = new Map<string, number>();
  /** per cluster/node: when a backend reported its postmaster dead, not yet told by a probe */
  private readonly deaths = new Map<string, number>();
  /** per cluster/node: the last probe's result and when it came */
  private readonly lastProbe = new Map<string, { at: number; result: ProbeResult }>();
  /** per cluster/node: a probe started when another node's postmaster was reported dead, for
   *  the next probe call to take (once) */
  private readonly postDeath = new Map<string, { at: number; p: Promise<ProbeResult> }>();
  /** per cluster: who wants to hear of a postmaster's death at once (observeCluster) */
  private readonly deathWatchers = new Map<string, Set<(node: string) => void>>();
  /** per cluster: the spec of the last probe (a signal names only the cluster) */
  private readonly probedSpecs = new Map<string, ClusterSpec>();
  /** per cluster/node: the last SSH look after a failed probe */
  private readonly looks = new Map<string, Look>();
  /** Nodes not to look at over SSH for now (their postmaster was reported dead: see probeOnce). */
  private readonly lookLater = new Set<string>();

  constructor(
    private readonly access: NodeAccess,
    signals?: Signals,
  ) {
    this.probes = new ClientCache((key, why) => {
      const i = key.indexOf('/');
      // A backend's last words when its postmaster is gone (postgres.c): as certain as a
      // refused port, and here ~100 ms sooner than a connect on a host busy with the failure.
      if (/unexpected postmaster exit/.test(why)) this.onPostmasterDeath(key);
      const detail = `probe session to postgres lost: ${why}`;
      signals?.emit({ cluster: key.slice(0, i), node: key.slice(i + 1), kind: 'connection.lost', detail });
    });
  }

  /** The node's probe session (opened when there is none). */
  probeClient(cluster: ClusterSpec, node: NodeSpec): Promise<pg.Client> {
    const timeout = probeTimeoutMs(cluster);
    return this.probes.get(`${cluster.name}/${node.name}`, () =>
      newClient(
        this.access.clientConfig(cluster, node, {
          // One probe's budget is the spec's timeout: a link that went down shows as a miss
          // after that long, not after TCP gives up.
          statement_timeout: timeout,
          query_timeout: timeout,
          application_name: 'pgop-probe',
        }),
      ),
    );
  }

  dropProbe(cluster: ClusterSpec, node: NodeSpec): void {
    this.probes.drop(`${cluster.name}/${node.name}`);
  }

  /** The probe's view, through a fresh admin session (used by the ensure* operations). */
  look(cluster: ClusterSpec, node: NodeSpec): Promise<PostgresObservation> {
    return this.access.withAdmin(cluster, node, (c) => this.query(cluster, c));
  }

  async probe(cluster: ClusterSpec, node: NodeSpec, opts: ProbeOptions = {}): Promise<ProbeResult> {
    const key = `${cluster.name}/${node.name}`;
    this.probedSpecs.set(cluster.name, cluster);
    const last = this.lastProbe.get(key);
    if (opts.maxAgeMs !== undefined && last && Date.now() - last.at <= opts.maxAgeMs) return last.result;
    // certificates issued or renewed when due (an in-memory check when nothing is)
    await this.access
      .ensureTls(cluster)
      .catch((err) =>
        this.access.log.warn(
          { cluster: cluster.name, error: messageOf(err) },
          'tls: cannot issue certificates',
        ),
      );
    // Right after an urgent fence, the probe started at the news of the postmaster's death
    // serves as fresh, once (see onPostmasterDeath), if it found postgres running: one that
    // failed in the thick of the failure (a timeout while the host is busiest) is asked again.
    // Any other look drops it: the operator may have acted on the node since.
    const early = this.postDeath.get(key);
    this.postDeath.delete(key);
    if (opts.afterDeath && early && Date.now() - early.at < EARLY_PROBE_MS) {
      const r = await early.p.catch(() => null);
      if (r?.reachable && r.postgres?.running) return r;
    }
    return this.probeNow(cluster, node);
  }

  watchPostmasterDeaths(cluster: ClusterSpec, listener: (node: string) => void): () => void {
    const set = this.deathWatchers.get(cluster.name) ?? new Set();
    this.deathWatchers.set(cluster.name, set);
    set.add(listener);
    return () => void set.delete(listener);
  }

  postmasterDeaths(cluster: ClusterSpec): string[] {
    // news older than a few seconds is no longer news: a probe has looked since, or will
    const now = Date.now();
    const since = (n: NodeSpec) => now - (this.deaths.get(`${cluster.name}/${n.name}`) ?? -Infinity);
    return cluster.nodes.filter((n) => since(n) < DEATH_NEWS_MS).map((n) => n.name);
  }

  close(): Promise<void> {
    return this.probes.close();
  }

  private async probeNow(cluster: ClusterSpec, node: NodeSpec): Promise<ProbeResult> {
    const key = `${cluster.name}/${node.name}`;
    // news of its postmaster's death answers at once, not after a probe still connecting
    const prev = this.deaths.has(key) ? undefined : this.probing.get(key);
    if (prev) await prev.catch(() => {});
    const p = this.bounded(cluster, node, this.probeOnce(cluster, node));
    this.probing.set(key, p);
    try {
      const result = await p;
      this.lastProbe.set(key, { at: Date.now(), result });
      return result;
    } finally {
      if (this.probing.get(key) === p) this.probing.delete(key);
    }
  }

  /** Every step of a probe is bounded, and so is the whole: a step that hangs anyway (a library
   *  promise that never settles) costs one miss, not every later probe of the node (they wait
   *  for this one) and the loop's view of its cluster. */
  private bounded(cluster: ClusterSpec, node: NodeSpec, probe: Promise<ProbeResult>): Promise<ProbeResult> {
    const ms = probeDeadlineMs(cluster);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<ProbeResult>((resolve) => {
      timer = setTimeout(() => {
        this.dropProbe(cluster, node);
        const error = `probe: no result within ${ms} ms (a hang in pgop; the session is dropped)`;
        this.access.log.warn({ cluster: cluster.name, node: node.name, ms }, error);
        resolve({ reachable: false, postgres: null, error });
      }, ms);
    });
    probe.catch(() => undefined);
    return Promise.race([probe, late]).finally(() => clearTimeout(timer));
  }

  /** A backend reported its postmaster gone: remember it for the node's next probe, and probe
   *  the cluster's other nodes at once. The promotion that follows the fence is then planned on
   *  answers already there (fresh ones take 50-170 ms on a host busy with the failure). Their
   *  WAL positions are final enough to elect on: a primary whose postmaster is dead acknowledges
   *  no more commits (a backend waiting for its synchronous standbys exits without an answer),
   *  so every acknowledged commit lies at or below what some standby had flushed by then. */
  private onPostmasterDeath(key: string): void {
    const now = Date.now();
    this.deaths.set(key, now);
    const cluster = key.slice(0, key.indexOf('/'));
    for (const w of this.deathWatchers.get(cluster) ?? []) w(key.slice(cluster.length + 1));
    const spec = this.probedSpecs.get(cluster);
    for (const n of spec?.nodes ?? []) {
      const k = `${cluster}/${n.name}`;
      if (k === key || this.deaths.has(k)) continue;
      const p = this.probeNow(spec!, n);
      p.catch(() => undefined);
      this.postDeath.set(k, { at: now, p });
    }
  }

  private async probeOnce(cluster: ClusterSpec, node: NodeSpec): Promise<ProbeResult> {
    const key = `${cluster.name}/${node.name}`;
    const told = this.takeDeathNews(key);
    let pgError = told
      ? 'postgres: the postmaster exited ' +
        '(its backend said: terminating connection due to unexpected postmaster exit)'
      : '';
    let refused = told;
    let timedOut = false;
    let refusesSessions = false;
    // A cached session may have died with a restart since the last probe: one fresh try then.
    const cached = this.probes.has(key);
    for (let attempt = 0; !refused && !timedOut && attempt < (cached ? 2 : 1); attempt++) {
      try {
        const client = await this.probeClient(cluster, node);
        const obs = await this.query(cluster, client);
        this.lastAnswer.set(key, Date.now());
        this.looks.delete(key);
        return { reachable: true, postgres: obs };
      } catch (err) {
        this.dropProbe(cluster, node);
        pgError = `postgres: ${pgMessage(err)}`;
        const e = err as { code?: string; message?: string };
        refused = e.code === 'ECONNREFUSED';
        // the server refuses us, or gave no answer in the probe's budget: no second connect
        timedOut = e.code === 'ETIMEDOUT' || /timeout/i.test(e.message ?? '');
        refusesSessions = e.code === '57P03';
      }
    }
    return this.afterMiss(cluster, node, { pgError, refused, timedOut, refusesSessions });
  }

  /** Takes the news of the node's postmaster's death, if fresh: the probe then reports it instead
   *  of connecting (the next one connects). */
  private takeDeathNews(key: string): boolean {
    const death = this.deaths.get(key);
    this.deaths.delete(key);
    if (death === undefined || Date.now() - death >= DEATH_NEWS_MS) return false;
    // The SSH look that tells "node up, postgres down" waits a moment: the failover needs
    // none (the news is the whole miss budget) and a primary is fenced meanwhile, while a
    // look's processes on the node (sshd, shells) took CPU from the promotion and pgpool's
    // restart on a host busy with the failure.
    if (!this.lookLater.has(key)) {
      this.lookLater.add(key);
      setTimeout(() => this.lookLater.delete(key), LOOK_AFTER_DEATH_MS).unref();
    }
    return true;
  }

  /** What a probe that got no answer from postgres reports, from the SSH look. */
  private async afterMiss(cluster: ClusterSpec, node: NodeSpec, miss: Miss): Promise<ProbeResult> {
    const { pgError, refused } = miss;
    const key = `${cluster.name}/${node.name}`;
    const last = this.lastAnswer.get(key);
    const recent = last !== undefined && Date.now() - last < RECENT_ANSWER_MS;
    // A refused port on a postgres that answered moments ago: its postmaster is gone for certain
    // (`gone`: the whole miss budget at once). Whether the node itself still answers (postgres
    // crashed) or not (fenced, sshd gone too) is the SSH look's to say, not the kernel's.
    const gone = refused && recent ? { gone: true as const } : {};
    // ONE ssh look tells "node up, postgres down" from "node gone". For a node that was healthy
    // moments ago it runs in the background (its answer serves the next probes): a failed
    // primary is confirmed at the probe cadence, not at SSH's.
    const look = this.looks.get(key);
    const lookFresh = !!look && look.at !== 0 && Date.now() - look.at < LOOK_FRESH_MS;
    if (recent || lookFresh) {
      if (!this.lookLater.has(key)) void this.refreshLook(cluster, node);
      // an older look (from a failure long ago) says nothing about now
      if (!lookFresh)
        return { reachable: false, postgres: null, error: `${pgError}; ssh: not checked yet`, ...gone };
      return { ...fromLook(look, miss), ...gone };
    }
    await this.refreshLook(cluster, node);
    return fromLook(this.looks.get(key)!, miss);
  }

  /** Start (or join) an SSH look at the node; its result lands in `looks`. */
  private refreshLook(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const key = `${cluster.name}/${node.name}`;
    const have = this.looks.get(key);
    if (have?.pending) return have.pending;
    const timeoutMs = lookTimeoutMs(cluster);
    const pending = this.access.nodeState(cluster, node, timeoutMs).then(
      (state) => void this.looks.set(key, { at: Date.now(), state, error: '' }),
      (err) => void this.looks.set(key, { at: Date.now(), state: null, error: messageOf(err) }),
    );
    if (have) have.pending = pending;
    else this.looks.set(key, { at: 0, state: null, error: 'not checked yet', pending });
    return pending;
  }

  private query(cluster: ClusterSpec, client: pg.Client): Promise<PostgresObservation> {
    return queryObservation(cluster, client, this.access.tls.enabled(cluster));
  }
}

/** Why a probe got no observation from postgres. */
interface Miss {
  pgError: string;
  /** the port was refused (or a backend told of its postmaster's death) */
  refused: boolean;
  /** no answer within the probe's budget: the link is down, or postgres hangs */
  timedOut: boolean;
  /** postgres answered "cannot connect now" (57P03: starting up, not consistent, shutting down) */
  refusesSessions?: boolean;
}

/** The probe's result from the SSH look. A postmaster that runs (pg_ctl status: its pid is
 *  alive) yet gave no answer within the probe's budget hangs (stopped, stuck in the kernel):
 *  it is no healthier than one that is gone, and its state cannot be read (postgres: null) -
 *  the misses count on towards a failover as after a link-down. One that answered with an
 *  error (starting up, too many connections) is running as the look says. */
export function fromLook(look: Look, miss: Miss): ProbeResult {
  const { pgError } = miss;
  if (!look.state) return { reachable: false, postgres: null, error: `${pgError}; ssh: ${look.error}` };
  const s = look.state;
  if (s.running && miss.timedOut)
    return {
      reachable: true,
      postgres: null,
      error: `${pgError}; ssh: postgres runs but does not answer`,
      hung: true,
    };
  const refuses = s.running && !!miss.refusesSessions;
  return {
    reachable: true,
    postgres: {
      ...downObservation(s.initialized, s.standbySignal, s.running),
      ...(refuses ? { refusesSessions: true } : {}),
    },
    error: pgError,
  };
}
