// What the pgpool driver knows of one cluster's pgpool between calls: one object per cluster,
// created at the first look, dropped by deletePool.

import type { ClusterSpec } from '../../spec/types.js';
import type { PoolBackend, PoolObservation } from '../../observe/types.js';
import type { PcpSession } from './pcp.js';

/** A PCP session opened ahead of the request that needs it (see warmPcp). */
export interface PcpOpenedAhead {
  at: number;
  session: Promise<PcpSession | null>;
}

export class PoolClusterState {
  /** the spec the cluster was last looked at with (a signal names only the cluster) */
  spec: ClusterSpec | undefined;
  /** the most recent view of pgpool's backends (observe() and routing keep it) */
  view: PoolObservation | null = null;
  /** pgpool's nodes as last known: its last answer, updated by our own PCP requests, and kept
   *  while it does not answer (a backend it holds up died: that changes nothing about the
   *  others). heldDown() reads it: a view emptied by a failed look would let the driver
   *  promote a node pgpool holds down, which pgpool refuses. */
  knownBackends: PoolBackend[] = [];
  /** the config hash applied on the pool host, and when it was read or written */
  appliedHash: { hash: string; at: number } | undefined;
  /** a routing switch pgpool is still carrying out (restarting its children) */
  switching: { primary: string; done: Promise<void> } | undefined;
  /** the standby pgpool was switched to alongside a fence (the promotion then skips it) */
  switchedEarly: { node: string; at: number; done: Promise<boolean> } | undefined;
  pcpOpenedAhead: PcpOpenedAhead | undefined;
  /** no PCP session is opened ahead before this time (see warmPcp) */
  pcpQuietUntil = 0;
  /** attaches sent so far, and whether pgpool may still be handling one (driver.watchFailback) */
  attachesSent = 0;
  handlingAttach = false;
  /** ensurePool calls under way here (a pool host's job and a pass may both route it) */
  ensuring = 0;
  /** the PCP password (generated once, kept on the pool host in pcp.secret) */
  pcpPassword: string | undefined;
  /** cut-offs put off until the failover is over, by node address */
  readonly laterCutOffs = new Map<string, NodeJS.Timeout>();
  /** nodes this pool host holds an unreachable route to (cutOff, cutStandby), until routed back */
  readonly cutOffNodes = new Set<string>();
  /** nodes held up behind a NAT alias (ALIAS_SH; also in cutOffNodes), each with whether every
   *  other node kept its place since (aliasIntact) */
  private readonly aliases = new Map<string, boolean>();
  /** whether the routes an earlier operator process left were read, or are being read
   *  (driver.readCutOffs) */
  routesRead = false;
  routesReading = false;
  /** commands that set rules and went unanswered so far (rulesUnknown) */
  private rulesUnknownSince = 0;
  /** nodes whose route this process removed (or found none) since their last cut-off */
  private readonly routedBack = new Set<string>();
  /** cut-offs started so far (a route back that overlapped one proves nothing) */
  private cutOffsStarted = 0;

  /** pgpool's answer about its backends, taken as its current view. */
  remember(backends: PoolBackend[], configHash: string): PoolObservation {
    const primary = backends.find((b) => b.role === 'primary' && b.status === 'up')?.name ?? null;
    const view = { reachable: true, primary, backends, configHash };
    this.view = view;
    this.knownBackends = backends;
    return view;
  }

  /** pgpool held `node` down at its last answer: it ignores a PCP promote of such a node (and
   *  still answers CommandComplete), so the node must be attached instead. */
  heldDown(node: string): boolean {
    return this.knownBackends.some((b) => b.name === node && b.status !== 'up');
  }

  /** What pgpool does with a promote (its "follow degeneration"): the node becomes its primary
   *  and every other one is marked down. Kept as its view until it answers again, so that a
   *  second failure right after does not ask it to promote a node it now holds down. */
  markPromoted(node: string): void {
    this.voidAliases();
    const promoted = (list: PoolBackend[]) =>
      list.map((b): PoolBackend =>
        b.name === node ? { ...b, status: 'up', role: 'primary' } : { ...b, status: 'down', role: 'standby' },
      );
    if (this.view) this.view = { ...this.view, primary: node, backends: promoted(this.view.backends) };
    this.knownBackends = promoted(this.knownBackends);
  }

  /** The node pgpool routes writes to now, when a promote of `node` would also mark a standby
   *  down that pgpool holds up (its follow degeneration): a detach of that old primary, once
   *  `node` is writable, keeps them. */
  promoteWouldDrop(node: string): string | undefined {
    const known = this.knownBackends;
    const old = known.find((b) => b.role === 'primary' && b.status === 'up');
    if (!old || old.name === node || !known.some((b) => b.name === node && b.status === 'up'))
      return undefined;
    return known.some((b) => b !== old && b.name !== node && b.status === 'up') ? old.name : undefined;
  }

  /** pgpool took a detach of `node`: it holds it down and routes writes nowhere. `from`: the
   *  backends as known when the detach was sent. */
  markDetached(node: string, from: PoolBackend[] = this.knownBackends): void {
    this.voidAliases(node);
    const detached = from.map((b): PoolBackend => (b.name === node ? { ...b, status: 'down' } : b));
    this.knownBackends = detached;
    if (this.view) this.view = { ...this.view, primary: null, backends: detached };
  }

  /** Names of the backends pgpool held up at its last answer. */
  upBackends(): string[] {
    return this.knownBackends.filter((b) => b.status === 'up').map((b) => b.name);
  }

  /** The session opened ahead, closed and forgotten. */
  dropPcp(): void {
    const ready = this.pcpOpenedAhead;
    this.pcpOpenedAhead = undefined;
    void ready?.session.then((s) => s?.close());
  }

  /** The view as observe() and latest() give it: cut-off primaries shown down (shownWithCutOffs),
   *  and an attach pgpool is still handling said. */
  shown(view: PoolObservation): PoolObservation {
    const v = this.shownWithCutOffs(view);
    return this.handlingAttach ? { ...v, handlingAttach: true } : v;
  }

  /** pgpool's view as its clients feel it: a node this pool host has cut off (a fenced primary,
   *  a dead standby: cutOff, driver.cutStandby) takes no session, whatever pgpool believes.
   *  Routing then brings each one back that answers again (settle removes its route), which a
   *  node pgpool still holds up would otherwise never be. */
  shownWithCutOffs(view: PoolObservation): PoolObservation {
    const backends = this.asClientsFeel(view.backends);
    if (backends === view.backends) return view;
    const primary = view.primary && this.cutOffNodes.has(view.primary) ? null : view.primary;
    return { ...view, primary, backends };
  }

  /** pgpool's backends with every node cut off from this pool host shown down. */
  asClientsFeel(backends: PoolBackend[]): PoolBackend[] {
    if (!backends.some((b) => b.status === 'up' && this.cutOffNodes.has(b.name))) return backends;
    return backends.map((b): PoolBackend => (this.cutOffNodes.has(b.name) ? { ...b, status: 'down' } : b));
  }

  /** Whether pgpool's main node stays put while `node` is kept from sessions by a route alone:
   *  a node of a lower id serves them. pgpool's main node is its lowest-numbered node up; a
   *  child that cannot connect to it moves it to the next one for good, and once the node is
   *  back every session that reaches it fails (standby-death.md §4d). */
  mainStaysWithout(node: string, backends: PoolBackend[] = this.knownBackends): boolean {
    const shown = this.asClientsFeel(backends);
    const i = shown.findIndex((b) => b.name === node);
    return shown.slice(0, Math.max(i, 0)).some((b) => b.status === 'up');
  }

  /** A cut-off of `node` starts: its route must be removed again before it is routed to. */
  cuttingOff(node: string): void {
    this.cutOffsStarted++;
    this.routedBack.delete(node);
    this.voidAliases(); // the node's own alias too: a route now holds it
  }

  /** The standby pgpool's connects to `node` may be sent to while `node` is away (ALIAS_SH): one
   *  pgpool holds up as a standby, not `primary` (pgpool would find two primaries), not cut off. */
  aliasTargetFor(node: string, primary: string): string | undefined {
    const fit = (b: PoolBackend) =>
      b.status === 'up' && b.role !== 'primary' && !this.cutOffNodes.has(b.name);
    return this.knownBackends.find((b) => b.name !== node && b.name !== primary && fit(b))?.name;
  }

  /** A route or an alias to `node` found on the pool host (readCutOffs): kept from sessions until
   *  routed back, like one this process set. */
  foundCutOff(node: string, alias: boolean): void {
    this.routedBack.delete(node);
    if (alias) this.aliased(node, false);
    else this.cutOffNodes.add(node);
  }

  /** A command setting a route or an alias gave no answer (timed out, connection lost): it may
   *  have run. What is in place is read again at the next look. */
  rulesUnknown(): void {
    this.rulesUnknownSince++;
    this.routesRead = false;
  }

  /** A read of the rules in place starts: the token for rulesReadDone. */
  rulesReadStarts(): number {
    return this.rulesUnknownSince;
  }

  /** The read of `token` is applied; it counts only if no command went unanswered meanwhile. */
  rulesReadDone(token: number): void {
    if (token === this.rulesUnknownSince) this.routesRead = true;
  }

  /** `node` is held up behind an alias: one just set (intact), or one an earlier operator process
   *  left (its target may have failed since: not intact). */
  aliased(node: string, intact: boolean): void {
    this.cutOffNodes.add(node);
    this.aliases.set(node, intact);
  }

  /** Whether `node`'s return can be its alias removed alone: every connect pgpool made to it
   *  went to its target since, so no child skipped it and pgpool's main node stayed. Any other
   *  node cut off, detached or promoted meanwhile (the target among them) voids that. */
  aliasIntact(node: string): boolean {
    return this.aliases.get(node) === true;
  }

  /** Whether an alias holds `node` up (intact or not). */
  holdsAlias(node: string): boolean {
    return this.aliases.has(node);
  }

  /** Every alias but `except`'s no longer intact (another node moved). */
  private voidAliases(except?: string): void {
    for (const n of this.aliases.keys()) if (n !== except) this.aliases.set(n, false);
  }

  /** Of `nodes`, those a route back must still run for (a cut-off since, or never checked: a
   *  route left by an earlier operator process is removed at the first routing), and a token
   *  for routedBackDone. Once checked, routing does not wait for a round trip that changes
   *  nothing. */
  needRouteBack(nodes: string[]): { nodes: string[]; token: number } {
    return { nodes: nodes.filter((n) => !this.routedBack.has(n)), token: this.cutOffsStarted };
  }

  /** The route back to `nodes` ran (token: from needRouteBack); a cut-off meanwhile voids it. */
  routedBackDone(nodes: string[], token: number): void {
    for (const n of nodes) this.cutOffNodes.delete(n);
    for (const n of nodes) this.aliases.delete(n);
    if (token === this.cutOffsStarted) for (const n of nodes) this.routedBack.add(n);
  }

  /** A later cut-off of `address` called off (the node is routed back first). */
  callOffCutOff(address: string): void {
    clearTimeout(this.laterCutOffs.get(address));
    this.laterCutOffs.delete(address);
  }

  /** Everything pending closed: the cluster's pgpool is gone. */
  dispose(): void {
    this.dropPcp();
    for (const address of [...this.laterCutOffs.keys()]) this.callOffCutOff(address);
  }
}
