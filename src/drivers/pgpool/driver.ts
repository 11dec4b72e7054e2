// pgpool-II 4.3 on one pool host, reached through NodeShell (SSH) for files and processes and
// over PCP (src/drivers/pgpool/pcp.ts) for routing. SshPoolDriver (pool-hosts.ts) runs one of
// these per pool host and moves the virtual IP among them.
//
// pgpool runs as the postgres OS user from <dir> (default /u01/pgpool: the lab pool host's
// private /u01), started `pgpool -n` under setsid/nohup from a status file pgop writes (the
// backends that do not answer marked down), with its stderr in <dir>/log. It never decides
// anything: its health checks and failover are off. The operator switches its routing when it
// promotes a node (routeToPrimary, failover.ts), and ensurePool() makes its view match the
// operator's (the given primary up and primary, every node attached while its postgres
// answers: the steps in routing.ts), restarting pgpool when its idea of the primary stays wrong.

import { randomBytes } from 'node:crypto';
import {
  poolCutsByRoute,
  poolHoldsStandbys,
  poolHostNode,
  poolHosts,
  poolVip,
  type ClusterSpec,
  type NodeSpec,
} from '../../spec/types.js';
import type { PoolBackend, PoolObservation } from '../../observe/types.js';
import type {
  DriverLog,
  ExecOptions,
  ExecResult,
  HostRef,
  NodeShell,
  PoolDriver,
  Signals,
} from '../types.js';
import { PgopError, messageOf, terminal, transient } from '../../errors.js';
import { resolveSecret } from '../../spec/secrets.js';
import { pgPort } from '../postgres/config.js';
import { acceptsSessions } from '../postgres/ready.js';
import { putFiles, type FileOp } from '../remote/files.js';
import { failureDetail, runScript, sleep, tail } from '../remote/run.js';
import { NODE_FS_FUNCS } from '../ssh/node-fs.js';
import { pgMessage } from '../pg-clients.js';
import { REFUSAL_WAIT_MS, poolLookTimeoutMs } from '../timeouts.js';
import { tcpPortState } from '../remote/port.js';
import { ClusterTls, POOL_HOST } from '../../tls/material.js';
import {
  desiredPoolConfigHash,
  poolPaths,
  renderPoolFiles,
  restartFiles,
  type PoolPaths,
  type PoolSecrets,
  type PoolTlsFiles,
} from './config.js';
import { poolBackends } from './backends.js';
import { FailoverRouting } from './failover.js';
import { poolSessionConfig, waitFailbackDone } from './failback.js';
import { sendPcp, warmPcp, type PcpLink } from './pcp-link.js';
import {
  knownReach,
  mustProbePrimary,
  nextRoutingStep,
  primaryGoneSince,
  requestKey,
  type PoolLook,
  type RouteRequest,
  type RoutingClock,
  type RoutingGoal,
} from './routing.js';
import {
  ALIAS_SH,
  CUT_OFF_SH,
  CUT_SESSIONS_SH,
  PREPARE_SH,
  READ_CUT_OFFS_SH,
  REMOVE_DIR_SH,
  ROUTE_AND_ALIAS_BACK_SH,
  ROUTE_CUT_SH,
  START_SH,
  STOP_SH,
  UNSTICK_CHILDREN_SH,
  VIP_DROP_SH,
} from './scripts.js';
import { pgpoolPorts, watchdogFiles, watchdogOn } from './watchdog.js';
import { PoolClusterState } from './state.js';

// the shared DriverLog, under the name this module exported first
export type PoolDriverLog = DriverLog;

export interface PgpoolOnHostOptions {
  shell: NodeShell;
  /** The pool host's name (poolHosts in src/spec/types.ts). */
  host: string;
  /** How to reach a pool host (lab: provider.hostRef(cluster, name)). */
  hostRef(cluster: ClusterSpec, host: string): HostRef;
  /** pgpool's directory on the pool host (default /u01/pgpool). */
  dir?: string;
  /** pgpool binaries (default /usr/sbin). */
  binDir?: string;
  logger?: PoolDriverLog;
  /** The world's signals: a dropped probe session makes the driver open a PCP session at once,
   *  for the switch a failover may ask of pgpool moments later. */
  signals?: Signals;
  /** How long ensurePool waits for pgpool's view to match before restarting it (default 6 s;
   *  after a restart it waits at least 15 s). */
  settleTimeoutMs?: number;
  /** The clusters' CAs and certificates (default: in each provider's state directory). */
  tls?: ClusterTls;
}

const silent: PoolDriverLog = { info() {}, warn() {} };

/** rootSh's code for a script that timed out or lost its connection: it may have run. */
const NO_ANSWER = -1;

export class PgpoolOnHost implements PoolDriver {
  readonly host: string;
  private readonly shell: NodeShell;
  private readonly hostRefOf: (cluster: ClusterSpec) => HostRef;
  private readonly paths: PoolPaths;
  private readonly bin: string;
  private readonly log: PoolDriverLog;
  private readonly settleTimeoutMs: number;
  private readonly tls: ClusterTls;
  /** everything known of each cluster's pgpool, by cluster name */
  private readonly states = new Map<string, PoolClusterState>();
  private readonly failover: FailoverRouting;
  private readonly offSignals?: () => void;

  constructor(opts: PgpoolOnHostOptions) {
    this.shell = opts.shell;
    this.host = opts.host;
    this.hostRefOf = (cluster) => opts.hostRef(cluster, opts.host);
    this.paths = poolPaths(opts.dir);
    this.bin = opts.binDir ?? '/usr/sbin';
    const log = opts.logger ?? silent;
    this.log = {
      info: (obj, msg) => log.info({ poolHost: opts.host, ...obj }, msg),
      warn: (obj, msg) => log.warn({ poolHost: opts.host, ...obj }, msg),
    };
    this.tls = opts.tls ?? new ClusterTls({ log: this.log });
    // A pgpool failing over takes 1-3 s (longer on a loaded host); one still silent or wrong
    // after this is stuck (e.g. its search for the primary hanging on a node whose link is
    // down), and a restart, which starts with the unreachable nodes marked down, is quicker.
    this.settleTimeoutMs = opts.settleTimeoutMs ?? 6_000;
    this.failover = new FailoverRouting({
      log: this.log,
      state: (cluster) => this.state(cluster),
      link: (cluster) => this.link(cluster),
      cutOff: (cluster, node, successor) => this.cutOff(cluster, node, successor),
      aliasTo: (cluster, node, target) => this.aliasTo(cluster, node, target),
      routeBack: (cluster, ...nodes) => this.routeBack(cluster, ...nodes),
      waitRouted: (cluster, primary) => this.waitRouted(cluster, primary),
    });
    this.offSignals = opts.signals?.on((s) => {
      const spec = this.states.get(s.cluster)?.spec;
      if (s.kind === 'connection.lost' && spec?.pgpool.enabled) warmPcp(this.link(spec), true);
    });
  }

  /** The cluster's state, created at first use. */
  private state(cluster: ClusterSpec): PoolClusterState {
    let state = this.states.get(cluster.name);
    if (!state) {
      state = new PoolClusterState();
      this.states.set(cluster.name, state);
    }
    return state;
  }

  /** The pool host's own address (pgpool listens there and, on the holder, on the virtual IP). */
  address(cluster: ClusterSpec): string {
    return poolHosts(cluster).find((h) => h.name === this.host)?.address ?? '';
  }

  private link(cluster: ClusterSpec): PcpLink {
    return {
      cluster,
      address: this.address(cluster),
      state: this.state(cluster),
      readPassword: () => this.shell.readFile(this.hostRefOf(cluster), this.paths.pcpSecret),
    };
  }

  desiredConfigHash(cluster: ClusterSpec): string {
    return desiredPoolConfigHash(cluster, this.paths, this.poolTls(cluster));
  }

  /** pgpool's TLS files as pgop issued them (null: none yet, or TLS off). */
  private poolTls(cluster: ClusterSpec): PoolTlsFiles {
    if (!this.tls.enabled(cluster)) return null;
    const m = this.tls.peek(cluster);
    const h = m?.hosts.get(POOL_HOST);
    return m && h ? { cert: h.cert, key: h.key, ca: m.caBundle } : null;
  }

  // ---------------------------------------------------------------- remote helpers

  private sh(
    cluster: ClusterSpec,
    script: string,
    args: (string | number)[],
    opts: ExecOptions = {},
  ): Promise<ExecResult> {
    return runScript(this.shell, this.hostRefOf(cluster), { text: script, args }, opts);
  }

  /** A short script as root (routes, sockets, signals): its exit code and stderr. One that gave
   *  no answer (timed out, connection lost) is NO_ANSWER: it may have run. */
  private rootSh(
    cluster: ClusterSpec,
    script: string,
    args: string[],
  ): Promise<{ code: number; stderr: string }> {
    return this.sh(cluster, script, args, { user: 'root', timeoutMs: 5000 }).catch((e: unknown) => ({
      code: NO_ANSWER,
      stderr: messageOf(e),
    }));
  }

  private async must(
    cluster: ClusterSpec,
    what: string,
    script: string,
    args: (string | number)[],
    opts: ExecOptions & { kind?: 'transient' | 'terminal' } = {},
  ): Promise<ExecResult> {
    const { kind = 'transient', ...o } = opts;
    const res = await this.sh(cluster, script, args, o);
    if (res.code !== 0) {
      throw new PgopError(
        kind,
        `cannot ${what} on pool host ${this.host} of ${cluster.name}: ${failureDetail(res)}`,
      );
    }
    return res;
  }

  // ---------------------------------------------------------------- observe

  private dropClient(cluster: ClusterSpec): void {
    this.states.get(cluster.name)?.dropPcp();
  }

  private poolNodes(cluster: ClusterSpec, bound = poolLookTimeoutMs(cluster)): Promise<PoolBackend[]> {
    return poolBackends(this.link(cluster), bound);
  }

  /** pgop is switching this pgpool (its children restart: it does not answer meanwhile). */
  isSwitching(cluster: ClusterSpec): boolean {
    return this.state(cluster).switching !== undefined;
  }

  async observe(cluster: ClusterSpec): Promise<PoolObservation> {
    const state = this.state(cluster);
    const to = state.switching;
    // `primary` while unreachable: where pgpool is switching to (the election prefers it among
    // standbys holding the same WAL: no second switch)
    if (to) {
      const error = `pgpool: switching to ${to.primary} (restarting its children)`;
      return { reachable: false, primary: to.primary, backends: [], configHash: '', error };
    }
    let backends: PoolBackend[];
    try {
      backends = await this.poolNodes(cluster);
    } catch (err) {
      const error = `pgpool: ${pgMessage(err)}`;
      const view: PoolObservation = { reachable: false, primary: null, backends: [], configHash: '', error };
      state.view = view;
      return view;
    }
    const configHash = await this.appliedHash(cluster, state);
    // in the background: the loop does not wait on a slow shell (the next look shows them)
    if (!state.routesRead && !state.routesReading) {
      state.routesReading = true;
      void this.readCutOffs(cluster, state)
        .catch(() => undefined) // read again at a later look
        .finally(() => (state.routesReading = false));
    }
    state.spec = cluster;
    warmPcp(this.link(cluster));
    return state.shown(state.remember(backends, configHash));
  }

  /** The nodes an `unreachable` route or a NAT alias keeps from sessions on this pool host,
   *  read once per operator process (an earlier one may have left them: a standby cut off while
   *  it restarted, now taking sessions, would otherwise stay out of every session while pgpool
   *  holds it up), and again after a command setting one went unanswered (it may have run).
   *  Shown down, routing brings each one back that answers; an alias whose target may have
   *  failed meanwhile is not trusted to have kept pgpool's main node (the node is detached,
   *  then attached). A database node has aliases only: no route is set there. */
  private async readCutOffs(cluster: ClusterSpec, state: PoolClusterState): Promise<void> {
    const token = state.rulesReadStarts();
    const r = await this.sh(cluster, READ_CUT_OFFS_SH, [], { user: 'root', timeoutMs: 5000 }).catch(
      () => null,
    );
    if (r?.code !== 0) return; // read again at a later look
    const lines = r.stdout.split('\n').map((l) => l.trim().split(/\s+/));
    for (const n of cluster.nodes) {
      if (lines.some(([kind, a]) => kind === 'unreachable' && a === n.address))
        state.foundCutOff(n.name, false);
      if (lines.some(([kind, a]) => kind === 'alias' && a === n.address)) state.foundCutOff(n.name, true);
    }
    state.rulesReadDone(token);
  }

  /** The config hash applied on the pool host, read at most every 10 s (observe runs every
   *  pass); '' when it could not be read yet (it is informative: routing was observed). */
  private async appliedHash(cluster: ClusterSpec, state: PoolClusterState): Promise<string> {
    if (!state.appliedHash || Date.now() - state.appliedHash.at > 10_000) {
      try {
        const text = await this.shell.readFile(this.hostRefOf(cluster), this.paths.confHash);
        state.appliedHash = { hash: (text ?? '').trim(), at: Date.now() };
      } catch {
        /* keep the last one */
      }
    }
    return state.appliedHash?.hash ?? '';
  }

  /** Forget the cluster's pgpool here (its host was removed with everything on it). */
  forget(cluster: ClusterSpec): void {
    this.states.get(cluster.name)?.dispose();
    this.states.delete(cluster.name);
  }

  /** pgpool's port is not open (pgpool or its host died, or the host restarted): what was known
   *  of its files and view no longer holds, so the next ensurePool prepares and starts it anew. */
  lost(cluster: ClusterSpec, error: string): PoolObservation {
    const state = this.state(cluster);
    const view: PoolObservation = { reachable: false, primary: null, backends: [], configHash: '', error };
    state.view = view;
    state.appliedHash = undefined;
    state.dropPcp();
    return view;
  }

  latest(cluster: ClusterSpec): PoolObservation | null {
    const state = this.states.get(cluster.name);
    return state?.view ? state.shown(state.view) : null;
  }

  // ---------------------------------------------------------------- ensure

  async ensurePool(cluster: ClusterSpec, primary: string | null, failed: string[] = []): Promise<void> {
    if (!cluster.pgpool.enabled) return;
    const state = this.state(cluster);
    state.ensuring++;
    try {
      await this.ensureOnce(cluster, state, primary, failed);
    } finally {
      state.ensuring--;
    }
  }

  private async ensureOnce(
    cluster: ClusterSpec,
    state: PoolClusterState,
    primary: string | null,
    failed: string[],
  ): Promise<void> {
    const t0 = performance.now();
    const tls = await this.ensureTls(cluster);
    const desired = desiredPoolConfigHash(cluster, this.paths, tls);
    // During a failover only routing is wrong: when the files on the pool host are known to be
    // current, skip the round trips that would rewrite them and go straight to routing.
    const current = this.filesCurrent(state, desired);
    if (!current) await this.configure(cluster, { state, tls, desired, failed, primary });
    await this.settle(cluster, primary, failed);
    const ms = Math.round(performance.now() - t0);
    this.log.info({ cluster: cluster.name, primary, ms }, current ? 'pgpool routed' : 'pgpool ensured');
  }

  private filesCurrent(state: PoolClusterState, desired: string): boolean {
    const known = state.appliedHash;
    return known?.hash === desired && Date.now() - known.at < 60_000;
  }

  /** An ensurePool here would only route (its files are known current: seconds at most), and
   *  none is under way (two would fight over pgpool's restarts). */
  routesOnly(cluster: ClusterSpec): boolean {
    const state = this.states.get(cluster.name);
    return !!state && state.ensuring === 0 && this.filesCurrent(state, this.desiredConfigHash(cluster));
  }

  private async ensureTls(cluster: ClusterSpec): Promise<PoolTlsFiles> {
    const tlsOn = this.tls.enabled(cluster);
    if (tlsOn) await this.tls.ensure(cluster);
    const tls = this.poolTls(cluster);
    if (tlsOn && !tls) {
      throw transient(`cannot configure pgpool of ${cluster.name}: no certificate issued for it yet`);
    }
    return tls;
  }

  /** pgpool installed, its files as desired, running: restarted when a file it reads only at
   *  start changed. */
  private async configure(
    cluster: ClusterSpec,
    how: { state: PoolClusterState; tls: PoolTlsFiles; desired: string } & StartRouting,
  ): Promise<void> {
    const { state, tls, desired } = how;
    const p = this.paths;
    // One round trip: pgpool installed (apt/dnf when missing), directories, the two secrets kept
    // on the pool host (the AES key of pool_passwd and the PCP password, generated once, mode
    // 0600), is pgpool running.
    const pgpool = `${this.bin}/pgpool`;
    const wd = watchdogOn(cluster) ? 'watchdog' : '';
    const t0 = performance.now();
    const args = [p.dir, p.run, p.log, p.oiddir, pgpool, p.key, p.pcpSecret, p.pid, p.statusDir, wd];
    const prep = await this.must(cluster, 'prepare pgpool', PREPARE_SH, args, {
      user: 'root',
      kind: 'terminal',
      timeoutMs: 15 * 60_000,
    });
    const field = (k: string) => new RegExp(`^${k}=(.*)$`, 'm').exec(prep.stdout)?.[1]?.trim() ?? '';
    const secrets: PoolSecrets = { key: field('key'), pcpPassword: field('pcp') };
    const files: FileOp[] = [];
    if (!secrets.key) {
      secrets.key = randomBytes(24).toString('base64url');
      files.push({ op: 'write', path: p.key, content: `${secrets.key}\n` });
    }
    if (!secrets.pcpPassword) {
      secrets.pcpPassword = randomBytes(24).toString('base64url');
      files.push({ op: 'write', path: p.pcpSecret, content: `${secrets.pcpPassword}\n` });
    }
    state.pcpPassword = secrets.pcpPassword;
    files.push(...renderPoolFiles(cluster, p, secrets, tls), ...watchdogFiles(cluster, this.host, p));
    const prepareMs = Math.round(performance.now() - t0);
    const changedPaths = await putFiles(this.shell, this.hostRefOf(cluster), files);
    const filesMs = Math.round(performance.now() - t0) - prepareMs;
    state.appliedHash = { hash: desired, at: Date.now() };
    let running = field('running') === '1';
    if (running && restartFiles(p).some((f) => changedPaths.has(f))) {
      this.log.info({ cluster: cluster.name }, 'pgpool configuration changed: restarting');
      await this.stopPgpool(cluster);
      running = false;
    }
    if (!running) {
      // a pgpool killed while its watchdog held the address left it here: it starts without
      // it, and the watchdogs' leader brings it up
      if (wd)
        await this.must(cluster, 'drop the virtual IP', VIP_DROP_SH, [poolVip(cluster)!], { user: 'root' });
      await this.startPgpool(cluster, how);
    }
    // where a slow configuration's time goes (the pass that runs it waits for all of it)
    const ms = { prepareMs, filesMs, startMs: Math.round(performance.now() - t0) - prepareMs - filesMs };
    this.log.info({ cluster: cluster.name, ...ms, started: !running }, 'pgpool configured');
  }

  // ---------------------------------------------------------------- routing

  /** Make pgpool's view match: `primary` up as primary, every other node attached once its
   *  postgres answers again, and detached when the operator saw it fail (`failed`). The
   *  decisions are nextRoutingStep's (routing.ts); this loop looks, sends and waits. */
  private async settle(cluster: ClusterSpec, primary: string | null, failed: string[] = []): Promise<void> {
    const state = this.state(cluster);
    await state.switching?.done;
    // Whatever fenced it once, the node pgpool must route writes to is reachable from the pool
    // host (a left-over `unreachable` route makes pgpool fail every session: "failed to create
    // a backend connection", while the operator itself reaches the node).
    const primaryNode = primary ? cluster.nodes.find((n) => n.name === primary) : undefined;
    if (primaryNode) await this.routeBack(cluster, primaryNode);
    const goal: RoutingGoal = {
      nodes: cluster.nodes.map((n) => n.name),
      primary,
      failed,
      standbys: standbysOf(cluster),
    };
    const probeMs = Math.max(200, cluster.failureDetection.connectTimeoutMs);
    const t0 = Date.now();
    const sent = new Map<string, number>();
    let attached = false;
    const clock: RoutingClock = {
      now: t0,
      deadline: t0 + this.settleTimeoutMs,
      restarted: false,
      primaryGoneSince: null,
      primaryGoneLimitMs: Math.max(1000, 3 * probeMs),
      sent,
    };
    let lastSaid = t0;
    for (;;) {
      const look = await this.look(cluster, goal, probeMs);
      clock.now = Date.now();
      clock.primaryGoneSince = primaryGoneSince(clock.primaryGoneSince, look, clock.now);
      const { send, next, why } = nextRoutingStep(goal, look, clock);
      for (const r of send) sent.set(requestKey(r), clock.now);
      const viaPcp = await Promise.all(send.map((r) => this.sendRouteRequest(cluster, r, look, probeMs)));
      attached ||= send.some((r, i) => r.kind === 'attach' && viaPcp[i]);
      const ms = Date.now() - t0;
      if (next.kind === 'done') {
        state.remember(look.backends ?? [], state.appliedHash?.hash ?? '');
        const { restarted } = clock;
        this.log.info({ cluster: cluster.name, primary, ms, restarted }, 'pgpool routes as desired');
        if (attached) this.watchFailback(cluster);
        return;
      }
      if (next.kind === 'give-up') throw transient(this.notRouted(cluster, primary, next.cause, why));
      if (Date.now() - lastSaid > 2000) {
        lastSaid = Date.now();
        this.log.info({ cluster: cluster.name, primary, ms, why }, 'pgpool: still settling');
      }
      if (next.kind === 'wait') {
        await sleep(next.ms);
        continue;
      }
      this.log.warn({ cluster: cluster.name, primary, why }, 'pgpool disagrees: restarting it');
      await this.stopPgpool(cluster);
      await this.startPgpool(cluster, { failed, primary });
      clock.restarted = true;
      clock.deadline = Date.now() + Math.max(15_000, this.settleTimeoutMs * 3);
    }
  }

  /** pgpool shows an attached node up before it has finished handling the attach, and ends
   *  every new session until it has (failback.ts): until a new session through it answers,
   *  observe() says so and the cluster is not Healthy. In the background: the loop goes on. */
  private watchFailback(cluster: ClusterSpec): void {
    const state = this.state(cluster);
    state.attachesSent++;
    if (state.handlingAttach) return; // the running watch sees the new attach
    state.handlingAttach = true;
    const watch = async () => {
      const config = poolSessionConfig(cluster, this.address(cluster), this.tls);
      for (;;) {
        const seen = state.attachesSent;
        const { ms, refused, error } = await waitFailbackDone(config);
        if (error) {
          this.log.warn({ cluster: cluster.name, ms, refused, error }, 'pgpool: takes no session yet');
          return;
        }
        this.log.info({ cluster: cluster.name, ms, refused }, 'pgpool: attach handled, takes sessions');
        if (state.attachesSent === seen) return;
      }
    };
    void watch()
      .catch((e: unknown) =>
        this.log.warn({ cluster: cluster.name, error: messageOf(e) }, 'pgpool: cannot watch its attach'),
      )
      .finally(() => (state.handlingAttach = false));
  }

  private notRouted(
    cluster: ClusterSpec,
    primary: string | null,
    cause: 'primary-silent' | 'stuck',
    why: string,
  ): string {
    const to = `cannot route pgpool of ${cluster.name} to ${primary ?? 'no primary'}`;
    if (cause === 'stuck') return `${to}: ${why}`;
    const address = cluster.nodes.find((n) => n.name === primary)?.address;
    return `${to}: its postgres does not answer (${address}:${pgPort(cluster)})`;
  }

  /** pgpool's backends, and whether each node's postgres answers (probed only where pgpool's
   *  answer and the operator's `failed` do not tell). */
  private async look(cluster: ClusterSpec, goal: RoutingGoal, probeMs: number): Promise<PoolLook> {
    const probe = (i: number) => acceptsSessions(cluster.nodes[i]!.address, pgPort(cluster), probeMs);
    let backends: PoolBackend[] | null = null;
    let error: string | undefined;
    try {
      backends = await this.poolNodes(cluster);
    } catch (e) {
      error = pgMessage(e);
    }
    const pi = goal.primary === null ? -1 : goal.nodes.indexOf(goal.primary);
    const primaryAnswers = mustProbePrimary(goal, backends) ? await probe(pi) : undefined;
    if (!backends) return { backends, error, reach: [], primaryAnswers };
    // routing decides on the nodes pgpool can reach from here; it held the cut-off ones up
    const state = this.state(cluster);
    const shown = state.asClientsFeel(backends);
    const heldUp = backends
      .filter((b) => b.status === 'up' && state.cutOffNodes.has(b.name))
      .map((b) => b.name);
    const reach = await Promise.all(
      knownReach(goal, shown, primaryAnswers).map(async (k, i) => k ?? probe(i)),
    );
    return { backends: shown, reach, primaryAnswers, heldUp };
  }

  /** One request of a routing step; a failure is only logged: settle() looks again and
   *  repeats it. An attach first removes the route a fence may have left, and is not sent to a
   *  pgpool that held the node up all along (while a lower-numbered node serves, else it is
   *  detached first); a detach may be a route alone (cutStandby). Whether PCP was sent. */
  private async sendRouteRequest(
    cluster: ClusterSpec,
    r: RouteRequest,
    look: PoolLook,
    probeMs: number,
  ): Promise<boolean> {
    const node = cluster.nodes[r.nodeId]!;
    const state = this.state(cluster);
    const heldUp = r.kind === 'attach' && look.heldUp?.includes(r.node);
    const alias = heldUp && state.aliasIntact(r.node);
    if (heldUp && (alias || state.mainStaysWithout(r.node, look.backends ?? undefined))) {
      await this.routeBack(cluster, node);
      // a failed route back leaves it cut off: the next look asks again
      const what = alias ? 'alias of a standby removed' : 'route to a standby back';
      if (!state.cutOffNodes.has(r.node))
        this.log.info({ cluster: cluster.name, node: r.node }, `pgpool: ${what}, no attach`);
      return false;
    }
    // held up where pgpool's main node may have moved off it: a detach, then the attach, sets it
    const kind = heldUp ? 'detach' : r.kind;
    if (kind === 'attach') await this.routeBack(cluster, node);
    let freeing = Promise.resolve();
    if (r.kind === 'detach') {
      if (await this.cutStandby(cluster, node, probeMs)) return false;
      // a node gone silent may hold children taking clients; the detach does not free them
      if (node.address !== this.address(cluster)) freeing = this.unstickChildren(cluster, node);
    }
    const t0 = performance.now();
    try {
      await sendPcp(this.link(cluster), { kind, nodeId: r.nodeId });
      const ms = Math.round(performance.now() - t0);
      this.log.info({ cluster: cluster.name, node: r.node, ms }, `pgpool: ${kind} sent`);
    } catch (e) {
      const error = messageOf(e);
      this.log.warn({ cluster: cluster.name, node: r.node, error }, `pgpool: cannot ${kind} ${r.node}`);
    }
    await freeing;
    return true;
  }

  /** A failed standby, on a pool host of its own with standbys held: cut off by a route rather
   *  than detached when its port refuses (postgres died, the host lives). pgpool then opens
   *  its sessions without it at once and runs no failover(), which would end every session
   *  running a query (standby-death.md §3, §4b); the route keeps it from sessions while it
   *  restarts (57P03 would fail them all) until routing brings it back. A standby that does
   *  not refuse (host down or cut off, hung) is detached as well: pgpool ends the sessions
   *  load-balanced to it, which would hang. Whether the route alone took it out. */
  private async cutStandby(cluster: ClusterSpec, node: NodeSpec, probeMs: number): Promise<boolean> {
    const state = this.state(cluster);
    if (!poolCutsByRoute(cluster.pgpool) || !state.mainStaysWithout(node.name)) return false;
    state.cuttingOff(node.name);
    const [cut, port] = await Promise.all([
      this.rootSh(cluster, ROUTE_CUT_SH, [node.address]),
      tcpPortState(node.address, pgPort(cluster), Math.min(probeMs, REFUSAL_WAIT_MS)),
    ]);
    if (cut.code !== 0) {
      if (cut.code === NO_ANSWER) state.rulesUnknown();
      const error = tail(cut.stderr);
      this.log.warn(
        { cluster: cluster.name, node: node.name, error },
        'pgpool host: cannot cut off a standby',
      );
      return false;
    }
    state.cutOffNodes.add(node.name);
    this.log.info({ cluster: cluster.name, node: node.name, port }, 'pgpool: standby cut off by a route');
    return port === 'refused';
  }

  /** A detached node's cached sessions dropped from pgpool's idle children, and the children
   *  stuck on it while taking a client freed (UNSTICK_CHILDREN_SH); a failure is only logged. */
  private async unstickChildren(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const r = await this.rootSh(cluster, UNSTICK_CHILDREN_SH, [node.address]);
    if (r.code === 0) return;
    const error = tail(r.stderr);
    this.log.warn({ cluster: cluster.name, node: node.name, error }, 'pgpool host: cannot free children');
  }

  /** Remove the route detachBackend set when the node was fenced (none: a no-op). */
  private async routeBack(cluster: ClusterSpec, ...nodes: NodeSpec[]): Promise<void> {
    const state = this.state(cluster);
    // no route to its own address is ever set; an alias may be (pgpool on the old primary's node)
    const others = nodes.filter((n) => n.address !== this.address(cluster) || state.holdsAlias(n.name));
    for (const n of others) state.callOffCutOff(n.address);
    const due = state.needRouteBack(others.map((n) => n.name));
    if (due.nodes.length === 0) return;
    const addresses = others.filter((n) => due.nodes.includes(n.name)).map((n) => n.address);
    const res = await this.rootSh(cluster, ROUTE_AND_ALIAS_BACK_SH, addresses);
    if (res.code === 0) state.routedBackDone(due.nodes, due.token);
  }

  routeToPrimary(cluster: ClusterSpec, node: NodeSpec, promoted: Promise<void>): Promise<void> {
    return this.failover.routeToPrimary(cluster, node, promoted);
  }

  detachBackend(
    cluster: ClusterSpec,
    node: NodeSpec,
    successor?: NodeSpec,
    opts: { cutOffAfterMs?: number } = {},
  ): Promise<void> {
    return this.failover.detachBackend(cluster, node, successor, opts);
  }

  /** Until pgpool routes writes to `primary`, at most 5 s. Short looks: pgpool answers a fresh
   *  session within ~0.3 s once it has restarted its children. */
  private async waitRouted(cluster: ClusterSpec, primary: string, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      try {
        const backends = await this.poolNodes(cluster, 1000);
        if (backends.some((b) => b.name === primary && b.status === 'up' && b.role === 'primary')) {
          const state = this.state(cluster);
          state.remember(backends, state.appliedHash?.hash ?? '');
          return;
        }
        await sleep(100);
      } catch {
        // pgpool ends sessions while it switches: ask again a little later
        await sleep(250);
      }
    }
  }

  /** pgpool's connects to `node` sent to `target` (ALIAS_SH): whether the alias is in place. On
   *  a database node the rule holds the node's other connects to that port too: a walreceiver
   *  still after the old primary reaches the standby (a valid upstream) until it is repointed. */
  private async aliasTo(cluster: ClusterSpec, node: NodeSpec, target: NodeSpec): Promise<boolean> {
    const state = this.state(cluster);
    state.cuttingOff(node.name);
    const r = await this.rootSh(cluster, ALIAS_SH, [node.address, target.address, String(pgPort(cluster))]);
    if (r.code !== 0) {
      if (r.code === NO_ANSWER) state.rulesUnknown();
      const error = tail(r.stderr);
      this.log.warn({ cluster: cluster.name, node: node.name, error }, 'pgpool host: cannot alias a node');
      return false;
    }
    state.aliased(node.name, true);
    return true;
  }

  /** The route to `node` unreachable (not on a database node), its sessions ended; in the same
   *  round trip, the route to the node pgpool is switched to is removed (a fence of it long ago
   *  may have left one). */
  private async cutOff(cluster: ClusterSpec, node: NodeSpec, successor?: NodeSpec): Promise<void> {
    const what = 'pgpool host: cannot fence the node off its network';
    const state = this.state(cluster);
    state.cuttingOff(node.name);
    try {
      const back = successor && successor.address !== this.address(cluster) ? [successor.address] : [];
      const opts = { user: 'root', timeoutMs: 5000 };
      const onNode = poolHostNode(cluster, this.host) !== undefined;
      const r = await this.sh(cluster, onNode ? CUT_SESSIONS_SH : CUT_OFF_SH, [node.address, ...back], opts);
      if (r.code !== 0) {
        this.log.warn({ cluster: cluster.name, node: node.name, error: tail(r.stderr) }, what);
        return;
      }
      if (!onNode) state.cutOffNodes.add(node.name);
      if (successor && back.length > 0) state.cutOffNodes.delete(successor.name);
    } catch (e) {
      state.rulesUnknown();
      this.log.warn({ cluster: cluster.name, node: node.name, error: messageOf(e) }, what);
    }
  }

  // ---------------------------------------------------------------- process

  /** Starts pgpool with the nodes the operator saw fail (never the wanted primary) marked down,
   *  and with load balancing off every node but the primary. */
  private async startPgpool(cluster: ClusterSpec, { failed, primary }: StartRouting): Promise<void> {
    const p = this.paths;
    this.dropClient(cluster);
    // pgpool starts from a status file that marks down the backends that take no session now. A
    // backend it believes up but cannot reach (a fenced old primary whose link is down) would
    // hold its start-up search for a primary, and one that refuses sessions (a standby starting
    // up) fails every new session. Nodes marked down are attached again once they answer (settle).
    const probeMs = Math.max(300, cluster.failureDetection.connectTimeoutMs);
    const port = pgPort(cluster);
    const detached = standbysOf(cluster) === 'detached' && primary !== null;
    const reach = await Promise.all(
      cluster.nodes.map(async (n) => {
        const notHeld = n.name !== primary && (detached || failed.includes(n.name));
        return !notHeld && acceptsSessions(n.address, port, probeMs);
      }),
    );
    // all down: pgpool would have nothing to search; let it try every backend itself
    const status = reach.some(Boolean) ? reach.map((r) => (r ? 'up' : 'down')) : reach.map(() => 'up');
    // a node started as up must be reachable from the pool host too
    await this.routeBack(cluster, ...cluster.nodes.filter((_, i) => status[i] === 'up'));
    const statusLines = `${status.join('\n')}\n`;
    const args = [`${this.bin}/pgpool`, p.conf, p.hba, p.pcp, p.key, p.logFile, p.pid, p.dir, statusLines];
    const ports = pgpoolPorts(cluster).join(' ');
    await this.must(cluster, 'start pgpool', START_SH, [...args, `${p.statusDir}/pgpool_status`, ports], {
      user: 'postgres',
      kind: 'transient',
      timeoutMs: 20_000,
    });
    const down = cluster.nodes.filter((_, i) => status[i] === 'down').map((n) => n.name);
    if (down.length > 0) {
      this.log.info(
        { cluster: cluster.name, down },
        'pgpool starts with the nodes that take no session down',
      );
    }
    await this.waitAnswering(cluster);
    this.log.info({ cluster: cluster.name }, 'pgpool started');
  }

  /** Until pgpool answers for its backends over PCP and a child of its answers a session's
   *  start (15 s). */
  private async waitAnswering(cluster: ClusterSpec): Promise<void> {
    const deadline = Date.now() + 15_000;
    const address = this.address(cluster);
    const probeMs = Math.max(300, cluster.failureDetection.connectTimeoutMs);
    for (;;) {
      let cause: string;
      try {
        await this.poolNodes(cluster);
        if (await acceptsSessions(address, cluster.pgpool.port, probeMs)) return;
        cause = `no child answers on ${address}:${cluster.pgpool.port}`;
      } catch (err) {
        cause = pgMessage(err);
      }
      if (Date.now() > deadline) {
        const opts = { user: 'postgres' };
        const log = await this.sh(cluster, 'tail -n 5 "$1"', [this.paths.logFile], opts).catch(() => null);
        const detail = `${cause} ${tail(log?.stdout ?? '')}`.trim();
        throw transient(`cannot start pgpool of ${cluster.name}: ${detail}`);
      }
      await sleep(100);
    }
  }

  private async stopPgpool(cluster: ClusterSpec): Promise<void> {
    this.dropClient(cluster);
    const args = [`${this.bin}/pgpool`, this.paths.conf, this.paths.pid];
    await this.must(cluster, 'stop pgpool', STOP_SH, args, { user: 'postgres', timeoutMs: 60_000 });
  }

  async deletePool(cluster: ClusterSpec): Promise<void> {
    this.dropClient(cluster);
    try {
      await this.stopPgpool(cluster);
    } catch (err) {
      // an unreachable pool host has nothing left to stop
      if (!(err instanceof PgopError && err.kind === 'transient')) throw err;
    }
    await this.sh(cluster, REMOVE_DIR_SH, [this.paths.dir], { user: 'root' }).catch(() => {});
    this.states.get(cluster.name)?.dispose();
    this.states.delete(cluster.name);
  }

  close(): Promise<void> {
    this.offSignals?.();
    for (const state of this.states.values()) state.dropPcp();
    return Promise.resolve();
  }
}

// ------------------------------------------------------------------ helpers

const standbysOf = (cluster: ClusterSpec): RoutingGoal['standbys'] =>
  poolHoldsStandbys(cluster.pgpool) ? 'attached' : 'detached';

/** What a (re)start of pgpool needs to know of the routing wanted. */
interface StartRouting {
  failed: string[];
  primary: string | null;
}
