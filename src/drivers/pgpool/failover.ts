// pgpool during a failover, ahead of the pool-route step (ensurePool): the pool host cut off
// the failed primary, pgpool switched to its successor as early as possible, and writes routed
// to the promoted node with one PCP request. Best effort throughout: ensurePool checks and
// repairs whatever this could not do.

import { poolCutsByRoute, poolHoldsStandbys, type ClusterSpec, type NodeSpec } from '../../spec/types.js';
import type { DriverLog } from '../types.js';
import { messageOf } from '../../errors.js';
import { PcpRefused } from './pcp.js';
import { sendPcp, type PcpLink } from './pcp-link.js';
import type { PoolClusterState } from './state.js';

/** What the failover steps need of the driver. */
export interface FailoverHost {
  log: DriverLog;
  state(cluster: ClusterSpec): PoolClusterState;
  link(cluster: ClusterSpec): PcpLink;
  /** The route to `node` made unreachable and its sessions ended; the route to `successor`
   *  (a fence of it long ago may have left one) removed. Never throws. */
  cutOff(cluster: ClusterSpec, node: NodeSpec, successor?: NodeSpec): Promise<void>;
  /** pgpool's connects to `node` sent to the standby `target` (a NAT alias on the pool host),
   *  the route a fence set to it removed: whether the alias is in place. Never throws. */
  aliasTo(cluster: ClusterSpec, node: NodeSpec, target: NodeSpec): Promise<boolean>;
  /** The routes a fence set to these nodes removed, and their later cut-offs called off. */
  routeBack(cluster: ClusterSpec, ...nodes: NodeSpec[]): Promise<void>;
  /** Until pgpool answers that it routes writes to `primary` (bounded). */
  waitRouted(cluster: ClusterSpec, primary: string): Promise<void>;
}

/** How a node pgpool keeps attached while it is away is kept from sessions. */
interface HeldUp {
  alias: boolean;
  /** for the log: "a route", "an alias to pg03" */
  behind: string;
}

/** A switch made at the fence is used by the promotion only this long after. */
const SWITCHED_EARLY_VALID_MS = 60_000;

export class FailoverRouting {
  constructor(private readonly host: FailoverHost) {}

  /** Cut the pool host off a node being fenced: an `unreachable` route makes pgpool's new
   *  connects to it fail at once instead of waiting out a timeout while its link is down, and
   *  `ss -K` ends the sessions pgpool already has there (a read from a node whose link is down
   *  would otherwise block until TCP gives up). Given the successor, pgpool is switched to it
   *  at the same time (switchEarly); without one, by the promotion (routeToPrimary). Not a PCP
   *  detach of the old primary: pgpool would then search for a primary (up to 5 s, blocking
   *  everything else it does) before there is one. The route is removed before the node is
   *  attached again. */
  async detachBackend(
    cluster: ClusterSpec,
    node: NodeSpec,
    successor?: NodeSpec,
    opts: { cutOffAfterMs?: number } = {},
  ): Promise<void> {
    if (!cluster.pgpool.enabled || node.address === cluster.pgpool.address) return;
    const cut = opts.cutOffAfterMs
      ? this.cutOffLater(cluster, node, opts.cutOffAfterMs)
      : this.host.cutOff(cluster, node, successor);
    await Promise.all([cut, successor ? this.switchEarly(cluster, successor, node) : undefined]);
  }

  /** The cut-off, later (nothing of the node hangs a client now); called off when the node is
   *  routed back first. */
  private cutOffLater(cluster: ClusterSpec, node: NodeSpec, afterMs: number): void {
    const state = this.host.state(cluster);
    state.callOffCutOff(node.address);
    const timer = setTimeout(() => {
      state.laterCutOffs.delete(node.address);
      void this.host.cutOff(cluster, node);
    }, afterMs);
    timer.unref();
    state.laterCutOffs.set(node.address, timer);
  }

  /** pgpool to the standby about to be promoted, while the old primary is being fenced: pgpool
   *  stops sending anything to the old primary at once, and its restart of every child (~0.3 s
   *  with 8 children, 1 s with 32) overlaps the fence and the promotion instead of following
   *  them. Writes routed there fail (read-only) until the promotion, as they failed on the dead
   *  primary before. Should the election pick another standby after all, the promotion step
   *  switches pgpool again. */
  private async switchEarly(cluster: ClusterSpec, successor: NodeSpec, failed: NodeSpec): Promise<void> {
    const i = cluster.nodes.findIndex((n) => n.name === successor.name);
    if (i < 0) return;
    const state = this.host.state(cluster);
    // pgpool would not promote a node it holds down (the promotion step attaches it instead)
    if (state.heldDown(successor.name)) return this.detachLastUp(cluster, failed);
    const done = this.pcpPromote(cluster, successor, i).then(
      () => true,
      (e) => {
        this.host.log.warn(
          { cluster: cluster.name, node: successor.name, error: messageOf(e) },
          'pgpool: cannot switch to the successor yet (the promotion step does)',
        );
        return false;
      },
    );
    state.switchedEarly = { node: successor.name, at: Date.now(), done };
    await done;
  }

  /** A failed node pgpool still holds up makes every new session fail (pgpool opens each on all
   *  its nodes): when it is the only one up, it is detached now, and pgpool, finding no node to
   *  search, gives up its search for a primary at once. (With another node up the search would
   *  hold pgpool for up to 5 s: left to the pool-route step then.) */
  private async detachLastUp(cluster: ClusterSpec, failed: NodeSpec): Promise<void> {
    const fi = cluster.nodes.findIndex((n) => n.name === failed.name);
    const state = this.host.state(cluster);
    const known = state.knownBackends;
    const up = state.upBackends();
    if (fi < 0 || up.length !== 1 || up[0] !== failed.name) return;
    try {
      await sendPcp(this.host.link(cluster), { kind: 'detach', nodeId: fi });
      this.host.log.info(
        { cluster: cluster.name, node: failed.name },
        'pgpool: failed node detached (the successor is attached once promoted)',
      );
      state.markDetached(failed.name, known);
    } catch (e) {
      this.host.log.warn(
        { cluster: cluster.name, node: failed.name, error: messageOf(e) },
        'pgpool: cannot detach the failed node (the pool-route step does)',
      );
    }
  }

  /** Route writes to `node`, which is being promoted (`promoted` settles when postgres is
   *  writable), with one PCP request, unless the fence switched pgpool to it already. While
   *  pgpool holds other standbys up, the old primary is detached once `node` is writable
   *  (detachOldWhenPromoted). Otherwise a promote in pgpool at once, alongside postgres's
   *  promotion: pgpool's restart of its children then overlaps it (no search for the primary);
   *  sessions opened before both finish get a read-only error and retry. A node pgpool holds
   *  down (it ignores a promote of such a node) is attached once writable instead. */
  async routeToPrimary(cluster: ClusterSpec, node: NodeSpec, promoted: Promise<void>): Promise<void> {
    if (!cluster.pgpool.enabled) return;
    const i = cluster.nodes.findIndex((n) => n.name === node.name);
    if (i < 0) return;
    const state = this.host.state(cluster);
    const early = state.switchedEarly;
    state.switchedEarly = undefined;
    const switched = !!early && Date.now() - early.at < SWITCHED_EARLY_VALID_MS && (await early.done);
    if (switched && early!.node === node.name) return;
    // pgpool holds the node down: the election picked another standby than the one pgpool was
    // switched to at the fence (which marked the others down), or an earlier switch left it down
    if (switched || state.heldDown(node.name)) {
      return this.attachWhenPromoted(cluster, node, i, promoted, early?.node);
    }
    // a promote would mark a standby pgpool holds up down: detach the old primary instead
    const old = state.promoteWouldDrop(node.name);
    const oldId = cluster.nodes.findIndex((n) => n.name === old);
    if (old && oldId >= 0)
      return this.detachOldWhenPromoted(cluster, node, { name: old, nodeId: oldId }, promoted);
    try {
      await this.pcpPromote(cluster, node, i);
    } catch (e) {
      this.warnNotRouted(cluster, node, e);
    }
  }

  /** pgpool holds other standbys up beside the old primary: a PCP promote would mark them down
   *  (its follow degeneration), and each attach back would end the sessions running a query then.
   *  Detaching the old primary once `node` is writable keeps them: pgpool's search for the primary
   *  finds `node` at its first look. The children's restart follows the promotion instead of
   *  overlapping it. The old primary is attached again right away, held up (holdUpWhileAway):
   *  behind a route, or behind an alias to a standby. */
  private async detachOldWhenPromoted(
    cluster: ClusterSpec,
    node: NodeSpec,
    old: { name: string; nodeId: number },
    promoted: Promise<void>,
  ): Promise<void> {
    const state = this.host.state(cluster);
    // held up meanwhile, so that the attach follows the detach soon enough to join its failover()
    const oldNode = cluster.nodes[old.nodeId]!;
    const held = this.holdUpWhileAway(cluster, oldNode, node);
    if (!(await succeeds(promoted))) {
      // pgpool still routes writes to the old primary: through an alias they would reach a standby
      if ((await held)?.alias) await this.host.cutOff(cluster, oldNode);
      return;
    }
    const t0 = performance.now();
    const known = state.knownBackends;
    try {
      await this.host.routeBack(cluster, node); // pgpool's search must reach it
      await sendPcp(this.host.link(cluster), { kind: 'detach', nodeId: old.nodeId });
    } catch (e) {
      return this.warnNotRouted(cluster, node, e);
    }
    this.host.log.info(
      { cluster: cluster.name, node: node.name, old: old.name, ms: Math.round(performance.now() - t0) },
      'pgpool: old primary detached; pgpool finds the new one',
    );
    state.markDetached(old.name, known);
    const heldUp = await held;
    if (heldUp) await this.attachHeldUp(cluster, old, heldUp.behind);
    this.whileSwitching(cluster, node.name);
  }

  /** Where pgpool holds standbys: on a pool host of its own the old primary cut off now rather
   *  than later (cutOffLater); when it is pgpool's main node (whose skipped connect would move
   *  that for good, standby-death.md §4d), or on a database node (where a route would cut the
   *  node's replication too), its connects sent to a standby other than the new primary instead.
   *  What holds it up, if anything does. */
  private async holdUpWhileAway(
    cluster: ClusterSpec,
    old: NodeSpec,
    primary: NodeSpec,
  ): Promise<HeldUp | undefined> {
    if (!poolHoldsStandbys(cluster.pgpool)) return undefined;
    const state = this.host.state(cluster);
    state.callOffCutOff(old.address);
    if (poolCutsByRoute(cluster.pgpool) && state.mainStaysWithout(old.name)) {
      await this.host.cutOff(cluster, old);
      return state.cutOffNodes.has(old.name) ? { alias: false, behind: 'a route' } : undefined;
    }
    const target = cluster.nodes.find((n) => n.name === state.aliasTargetFor(old.name, primary.name));
    if (!target || !(await this.host.aliasTo(cluster, old, target))) return undefined;
    return { alias: true, behind: `an alias to ${target.name}` };
  }

  /** The old primary attached again while pgpool still handles its detach (the request joins
   *  that failover() run), held up: new sessions skip it or reach a standby in its place, and
   *  its return as a standby is a route or an alias removed, not an attach, which would end
   *  every session running a query then (standby-death.md §4b). */
  private async attachHeldUp(
    cluster: ClusterSpec,
    old: { name: string; nodeId: number },
    behind: string,
  ): Promise<void> {
    try {
      await sendPcp(this.host.link(cluster), { kind: 'attach', nodeId: old.nodeId });
      this.host.log.info(
        { cluster: cluster.name, node: old.name },
        `pgpool: old primary attached again behind ${behind} (its rejoin needs no attach)`,
      );
    } catch (e) {
      this.host.log.warn(
        { cluster: cluster.name, node: old.name, error: messageOf(e) },
        `pgpool: cannot attach the old primary behind ${behind} (its rejoin attaches it)`,
      );
    }
  }

  /** pgpool does not promote a node it holds down: it is attached once writable, and pgpool's
   *  search for the primary (which a failback starts) finds it. */
  private async attachWhenPromoted(
    cluster: ClusterSpec,
    node: NodeSpec,
    nodeId: number,
    promoted: Promise<void>,
    switchedTo: string | undefined,
  ): Promise<void> {
    if (!(await succeeds(promoted))) return;
    await this.host.state(cluster).switching?.done;
    try {
      await this.host.routeBack(cluster, node);
      await sendPcp(this.host.link(cluster), { kind: 'attach', nodeId });
      this.host.log.info(
        { cluster: cluster.name, node: node.name, switchedTo },
        'pgpool: new primary attached; pgpool looks for it',
      );
      this.whileSwitching(cluster, node.name);
    } catch (e) {
      this.warnNotRouted(cluster, node, e);
    }
  }

  private warnNotRouted(cluster: ClusterSpec, node: NodeSpec, e: unknown): void {
    this.host.log.warn(
      { cluster: cluster.name, node: node.name, error: messageOf(e) },
      'pgpool: cannot route writes to the new primary yet (the pool-route step repeats it)',
    );
  }

  /** PCP promote: pgpool marks every other backend down, restarts its children and routes
   *  writes to `node`. Resolves when pgpool took the request (or routes there already). */
  private async pcpPromote(cluster: ClusterSpec, node: NodeSpec, nodeId: number): Promise<void> {
    const t0 = performance.now();
    let session: string;
    try {
      session = await sendPcp(this.host.link(cluster), { kind: 'promote', nodeId });
    } catch (e) {
      // "already primary": pgpool routes there already
      if (e instanceof PcpRefused && /already primary/i.test(e.message)) return;
      throw e;
    }
    this.host.log.info(
      { cluster: cluster.name, node: node.name, ms: Math.round(performance.now() - t0), pcp: session },
      'pgpool: writes routed to the new primary',
    );
    this.host.state(cluster).markPromoted(node.name);
    this.whileSwitching(cluster, node.name);
  }

  /** Until pgpool answers that it routes writes to `primary` (at most 5 s, in the background),
   *  observe() reports pgpool as busy: the operator's next steps then route it (waiting for
   *  this first) and leave the repointing of standbys over SSH, which competes with pgpool's
   *  restart of its children for the CPU, until it is done. */
  private whileSwitching(cluster: ClusterSpec, primary: string): void {
    const state = this.host.state(cluster);
    const entry = { primary, done: Promise.resolve() };
    entry.done = this.host.waitRouted(cluster, primary).finally(() => {
      if (state.switching === entry) state.switching = undefined;
    });
    state.switching = entry;
  }
}

/** Whether `p` fulfils (a failed promotion leaves routing to the pool-route step). */
const succeeds = (p: Promise<unknown>): Promise<boolean> =>
  p.then(
    () => true,
    () => false,
  );
