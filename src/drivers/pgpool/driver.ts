// PoolDriver: pgpool-II 4.3 on the pool host, reached through NodeShell (SSH) for files and
// processes and over PCP (src/drivers/pgpool/pcp.ts) for routing.
//
// pgpool runs as the postgres OS user from <dir> (default /u01/pgpool: the lab pool host's
// private /u01), started `pgpool -n` under setsid/nohup from a status file pgop writes (the
// backends that do not answer marked down), with its stderr in <dir>/log. It never decides
// anything: its health checks and failover are off. The operator switches its routing when it
// promotes a node (routeToPrimary), and ensurePool() makes its view match the operator's (the
// given primary up and primary, every node attached while its postgres answers), restarting
// pgpool when its idea of the primary stays wrong.

import { randomBytes } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import pg from 'pg';
import type { ClusterSpec, NodeSpec } from '../../spec/types.js';
import type { PoolBackend, PoolObservation } from '../../observe/types.js';
import type { DriverLog, ExecOptions, ExecResult, HostRef, NodeShell, PoolDriver, Signals } from '../types.js';
import { PgopError, messageOf, terminal, transient } from '../../errors.js';
import { resolveSecret } from '../../spec/secrets.js';
import { pgPort } from '../postgres/config.js';
import { putFiles, type FileOp } from '../remote/files.js';
import { failureDetail, runScript, sleep, tail } from '../remote/run.js';
import { NODE_FS_FUNCS } from '../ssh/node-fs.js';
import { ClientCache, newClient, pgMessage } from '../pg-clients.js';
import { ClusterTls, POOL_HOST } from '../../tls/material.js';
import { clientTls } from '../../tls/client.js';
import { PcpRefused, PcpSession, pcpRequest, type PcpRequest } from './pcp.js';
import {
  PCP_USER,
  desiredPoolConfigHash,
  poolPaths,
  renderPcpConf,
  renderPcpPass,
  renderPgpoolConf,
  renderPoolHba,
  renderPoolPasswd,
  type PoolPaths,
  type PoolTlsFiles,
} from './config.js';

// the shared DriverLog, under the name this module exported first
export type PoolDriverLog = DriverLog;

export interface SshPoolDriverOptions {
  shell: NodeShell;
  /** How to reach the pool host (lab: provider.hostRef(cluster, 'pool')). */
  hostRef(cluster: ClusterSpec): HostRef;
  /** pg client options for connecting to pgpool itself (default: spec.pgpool.address:port as
   *  postgres with the superuser password). */
  connect?(cluster: ClusterSpec): pg.ClientConfig;
  /** pgpool's directory on the pool host (default /u01/pgpool). */
  dir?: string;
  /** pgpool binaries (default /usr/sbin). */
  binDir?: string;
  logger?: PoolDriverLog;
  /** The world's signals: a dropped probe session makes the driver open a PCP session at once,
   *  for the switch a failover may ask of pgpool moments later. */
  signals?: Signals;
  /** How long ensurePool waits for pgpool's view to match before restarting it (default 10 s;
   *  after a restart it waits at least 15 s). */
  settleTimeoutMs?: number;
  /** The clusters' CAs and certificates (default: in each provider's state directory). */
  tls?: ClusterTls;
}

const silent: PoolDriverLog = { info() {}, warn() {} };

export function defaultPoolConnect(cluster: ClusterSpec): pg.ClientConfig {
  if (!cluster.pgpool.address) throw terminal(`cannot reach pgpool of ${cluster.name}: spec.pgpool.address is not set`);
  return {
    host: cluster.pgpool.address,
    port: cluster.pgpool.port,
    user: 'postgres',
    database: 'postgres',
    password: resolveSecret(cluster.postgres.superuserPassword, 'the postgres superuser password'),
  };
}

interface PoolNodeRow {
  node_id: string;
  hostname: string;
  port: string;
  status: string;
  role: string;
  pg_role?: string;
}

export class SshPoolDriver implements PoolDriver {
  private readonly shell: NodeShell;
  private readonly hostRefOf: (cluster: ClusterSpec) => HostRef;
  private readonly connectOf: (cluster: ClusterSpec) => pg.ClientConfig;
  private readonly paths: PoolPaths;
  private readonly bin: string;
  private readonly log: PoolDriverLog;
  private readonly settleTimeoutMs: number;
  private readonly clients = new ClientCache();
  private readonly hashes = new Map<string, { hash: string; at: number }>();
  /** the most recent view of pgpool's backends per cluster (observe() and settle() keep it) */
  private readonly views = new Map<string, PoolObservation>();
  /** pgpool's nodes as last known: its last answer, updated by our own PCP requests, and kept
   *  while it does not answer (a backend it holds up died: that changes nothing about the
   *  others). heldDown() reads it: a view emptied by a failed look once made the driver promote
   *  a node pgpool held down, which pgpool refused, and routing waited 7 s and a restart. */
  private readonly knownBackends = new Map<string, PoolBackend[]>();
  /** a routing switch pgpool is still carrying out (restarting its children) per cluster */
  private readonly switching = new Map<string, { primary: string; done: Promise<void> }>();
  /** cut-offs put off until the failover is over (cluster/address) */
  private readonly laterCutOffs = new Map<string, NodeJS.Timeout>();
  /** cluster -> the standby pgpool was switched to alongside a fence (skip it at the promotion) */
  private readonly switchedEarly = new Map<string, { node: string; at: number; done: Promise<boolean> }>();
  /** a PCP session per cluster opened ahead of the request that needs it, and when */
  private readonly pcpReady = new Map<string, { at: number; session: Promise<PcpSession | null> }>();
  /** no session is opened ahead before this time (see warmPcp) */
  private readonly pcpQuietUntil = new Map<string, number>();
  /** the spec each cluster was last looked at with (a signal names only the cluster) */
  private readonly specs = new Map<string, ClusterSpec>();
  /** the PCP password per cluster (generated once, kept on the pool host in pcp.secret) */
  private readonly pcpPasswords = new Map<string, string>();
  private readonly tls: ClusterTls;

  constructor(opts: SshPoolDriverOptions) {
    this.shell = opts.shell;
    this.hostRefOf = opts.hostRef;
    this.connectOf = opts.connect ?? defaultPoolConnect;
    this.paths = poolPaths(opts.dir);
    this.bin = opts.binDir ?? '/usr/sbin';
    this.log = opts.logger ?? silent;
    this.tls = opts.tls ?? new ClusterTls({ log: this.log });
    // A pgpool failing over takes 1-3 s here (longer on a loaded host); one still silent or wrong
    // after this is stuck (seen: its search for the primary hanging on a node whose link is down)
    // and a restart, which starts with the unreachable nodes marked down, is the quicker way out.
    this.settleTimeoutMs = opts.settleTimeoutMs ?? 6_000;
    this.offSignals = opts.signals?.on((s) => {
      const spec = this.specs.get(s.cluster);
      if (s.kind === 'connection.lost' && spec?.pgpool.enabled) this.warmPcp(spec, true);
    });
  }

  private readonly offSignals?: () => void;

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

  private sh(cluster: ClusterSpec, script: string, args: (string | number)[], opts: ExecOptions = {}): Promise<ExecResult> {
    return runScript(this.shell, this.hostRefOf(cluster), { text: script, args }, opts);
  }

  private async must(cluster: ClusterSpec, what: string, script: string, args: (string | number)[], opts: ExecOptions & { kind?: 'transient' | 'terminal' } = {}): Promise<ExecResult> {
    const { kind = 'transient', ...o } = opts;
    const res = await this.sh(cluster, script, args, o);
    if (res.code !== 0) throw new PgopError(kind, `cannot ${what} on the pgpool host of ${cluster.name}: ${failureDetail(res)}`);
    return res;
  }

  // ---------------------------------------------------------------- observe

  private client(cluster: ClusterSpec): Promise<pg.Client> {
    const timeout = cluster.failureDetection.connectTimeoutMs;
    return this.clients.get(cluster.name, () => newClient({
      ...this.connectOf(cluster),
      ...this.sslConfig(cluster),
      // A pgpool that just started connects to every backend first: give it time. (A pgpool busy
      // failing over does not hold up a pass: observe() waits only briefly for this answer.)
      connectionTimeoutMillis: Math.max(2000, timeout * 2),
      query_timeout: Math.max(2000, timeout * 2),
      application_name: 'pgop-pool-probe',
      keepAlive: true,
    }));
  }

  /** verify-full to pgpool (its certificate names spec.pgpool.address) when TLS is on. */
  private sslConfig(cluster: ClusterSpec): Partial<pg.ClientConfig> {
    if (!this.tls.enabled(cluster)) return {};
    const m = this.tls.peek(cluster);
    if (!m) throw transient(`cannot connect to pgpool of ${cluster.name}: the cluster CA is not issued yet`);
    const host = this.connectOf(cluster).host ?? cluster.pgpool.address ?? '';
    return { ssl: clientTls(m.caBundle, { name: 'pgpool', address: host }), enableChannelBinding: true } as Partial<pg.ClientConfig>;
  }

  private dropClient(cluster: ClusterSpec): void {
    this.clients.drop(cluster.name);
    this.dropPcp(cluster.name);
  }

  private dropPcp(name: string): void {
    const ready = this.pcpReady.get(name);
    this.pcpReady.delete(name);
    void ready?.session.then((s) => s?.close());
  }

  /** Open a PCP session now for the next request (a failover's), unless one is open.
   *  pgpool restarts its PCP process 1 s after each failover or failback it carries out, and
   *  its main process waits for that until every PCP session of the old one is closed (seen:
   *  a promote queued 0.6 s behind a session opened ahead). So: none is opened ahead for 8 s
   *  after a request of ours (pgpool's failover, its search for a primary of at most 5 s, the
   *  1 s, the restart), and one is kept at most 20 s (then opened anew), which bounds such a
   *  wait should pgpool ever fail over by itself (its own failover is off). */
  private warmPcp(cluster: ClusterSpec, failing = false): void {
    const ready = this.pcpReady.get(cluster.name);
    if (ready && Date.now() - ready.at < 20_000) {
      void ready.session.then((s) => {
        if ((!s || !s.usable) && this.pcpReady.get(cluster.name) === ready) this.pcpReady.delete(cluster.name);
      });
      return;
    }
    if (ready) this.dropPcp(cluster.name);
    // While a node fails (a probe session dropped) a switch is likely within the next moments:
    // open one now whatever was sent before (pgpool's main waits at most until it is used),
    // and close it unused after 3 s.
    if (!failing && Date.now() < (this.pcpQuietUntil.get(cluster.name) ?? 0)) return;
    const session = this.pcpTarget(cluster)
      .then((t) => PcpSession.open(t, this.pcpTimeoutMs(cluster)))
      .catch(() => null);
    const entry = { at: Date.now(), session };
    this.pcpReady.set(cluster.name, entry);
    if (failing) {
      setTimeout(() => {
        if (this.pcpReady.get(cluster.name) === entry) this.dropPcp(cluster.name);
      }, 3000).unref();
    }
  }

  private pcpTimeoutMs(cluster: ClusterSpec): number {
    return Math.max(2000, cluster.failureDetection.connectTimeoutMs * 4);
  }

  /** pgpool's view of the backends, mapped to spec node names. SHOW POOL_BACKEND_STATS, not
   *  SHOW POOL_NODES: the latter (4.3) opens a fresh session to every backend to fill its
   *  pg_status/pg_role columns and took 0.5-0.9 s here; the former answers from shared memory
   *  in ~2 ms with the same node_id/hostname/status/role. */
  private async poolNodes(cluster: ClusterSpec, bound = Math.max(2000, cluster.failureDetection.connectTimeoutMs * 2) + 1000): Promise<PoolBackend[]> {
    // Bounded here as well as by pg's own timeouts: a pass once stayed stuck for minutes while
    // routing pgpool right after a failover, with nothing else left to wait on.
    try {
      const c = await within(this.client(cluster), bound, 'connecting to pgpool');
      const r = await within(c.query<PoolNodeRow>('SHOW POOL_BACKEND_STATS'), bound, 'SHOW POOL_BACKEND_STATS');
      return r.rows.map((row) => this.backendOf(cluster, row));
    } catch (err) {
      // Only the SQL session: pgpool ends it when the backend it used fails, which is the very
      // moment a PCP session opened ahead is about to serve (a dead PCP session shows itself).
      this.clients.drop(cluster.name);
      throw err;
    }
  }

  private backendOf(cluster: ClusterSpec, row: PoolNodeRow): PoolBackend {
    const id = Number(row.node_id);
    const node = cluster.nodes[id]?.address === row.hostname ? cluster.nodes[id] : cluster.nodes.find((n) => n.address === row.hostname);
    const s = row.status.toLowerCase();
    const status: PoolBackend['status'] = s === 'up' || s === 'waiting' ? 'up' : s === 'unused' ? 'unused' : 'down';
    const rl = row.role.toLowerCase();
    const role: PoolBackend['role'] = rl === 'primary' ? 'primary' : rl === 'standby' ? 'standby' : 'unknown';
    return { name: node?.name ?? row.hostname, status, role };
  }

  async observe(cluster: ClusterSpec): Promise<PoolObservation> {
    const to = this.switching.get(cluster.name);
    // `primary` while unreachable: where pgpool is switching to (the election prefers it among
    // standbys holding the same WAL: no second switch)
    if (to) return { reachable: false, primary: to.primary, backends: [], configHash: '', error: `pgpool: switching to ${to.primary} (restarting its children)` };
    let backends: PoolBackend[];
    try {
      backends = await this.poolNodes(cluster);
    } catch (err) {
      const view: PoolObservation = { reachable: false, primary: null, backends: [], configHash: '', error: `pgpool: ${pgMessage(err)}` };
      this.views.set(cluster.name, view);
      return view;
    }
    // The applied hash lives on the pool host; read it at most every 10 s (observe runs every pass).
    let cached = this.hashes.get(cluster.name);
    if (!cached || Date.now() - cached.at > 10_000) {
      try {
        cached = { hash: ((await this.shell.readFile(this.hostRefOf(cluster), this.paths.confHash)) ?? '').trim(), at: Date.now() };
        this.hashes.set(cluster.name, cached);
      } catch {
        /* the hash is informative; routing was observed */
      }
    }
    const configHash = cached?.hash ?? '';
    this.specs.set(cluster.name, cluster);
    this.warmPcp(cluster);
    return this.remember(cluster, backends, configHash);
  }

  latest(cluster: ClusterSpec): PoolObservation | null {
    return this.views.get(cluster.name) ?? null;
  }

  private remember(cluster: ClusterSpec, backends: PoolBackend[], configHash: string): PoolObservation {
    const primary = backends.find((b) => b.role === 'primary' && b.status === 'up')?.name ?? null;
    const view = { reachable: true, primary, backends, configHash };
    this.views.set(cluster.name, view);
    this.knownBackends.set(cluster.name, backends);
    return view;
  }

  // ---------------------------------------------------------------- ensure

  private poolUsers(cluster: ClusterSpec): { name: string; password: string }[] {
    const users = new Map<string, string>();
    users.set('postgres', resolveSecret(cluster.postgres.superuserPassword, 'the postgres superuser password'));
    for (const r of cluster.roles) {
      if (r.password && r.login) users.set(r.name, resolveSecret(r.password, `the password of role ${r.name}`));
    }
    return [...users].map(([name, password]) => ({ name, password }));
  }

  async ensurePool(cluster: ClusterSpec, primary: string | null, failed: string[] = []): Promise<void> {
    if (!cluster.pgpool.enabled) return;
    const t0 = performance.now();
    const host = this.hostRefOf(cluster);
    const p = this.paths;
    const tlsOn = this.tls.enabled(cluster);
    if (tlsOn) await this.tls.ensure(cluster);
    const tls = this.poolTls(cluster);
    if (tlsOn && !tls) throw transient(`cannot configure pgpool of ${cluster.name}: no certificate issued for it yet`);
    const desired = desiredPoolConfigHash(cluster, p, tls);
    // During a failover only routing is wrong: when the files on the pool host are known to be
    // current, skip the round trips that would rewrite them and go straight to routing.
    const known = this.hashes.get(cluster.name);
    if (known?.hash === desired && Date.now() - known.at < 60_000) {
      await this.settle(cluster, primary, failed);
      this.log.info({ cluster: cluster.name, primary, ms: Math.round(performance.now() - t0) }, 'pgpool routed');
      return;
    }
    // One round trip: pgpool installed (apt/dnf when missing), directories, the two secrets kept on the pool host (the AES key of
    // pool_passwd and the PCP password, generated once, mode 0600), is pgpool running.
    const prep = await this.must(cluster, 'prepare pgpool', PREPARE_SH, [p.dir, p.run, p.log, p.oiddir, `${this.bin}/pgpool`, p.key, p.pcpSecret, p.pid, p.statusDir], {
      user: 'root',
      kind: 'terminal',
      timeoutMs: 15 * 60_000,
    });
    const field = (k: string) => new RegExp(`^${k}=(.*)$`, 'm').exec(prep.stdout)?.[1]?.trim() ?? '';
    let key = field('key');
    let pcpPassword = field('pcp');
    let running = field('running') === '1';
    const files: FileOp[] = [];
    if (!key) {
      key = randomBytes(24).toString('base64url');
      files.push({ op: 'write', path: p.key, content: `${key}\n` });
    }
    if (!pcpPassword) {
      pcpPassword = randomBytes(24).toString('base64url');
      files.push({ op: 'write', path: p.pcpSecret, content: `${pcpPassword}\n` });
    }
    this.pcpPasswords.set(cluster.name, pcpPassword);
    if (tls) {
      files.push({ op: 'write', path: p.sslCa, content: tls.ca }, { op: 'write', path: p.sslCert, content: tls.cert }, { op: 'write', path: p.sslKey, content: tls.key });
    }
    files.push(
      { op: 'write', path: p.conf, content: renderPgpoolConf(cluster, p) },
      { op: 'write', path: p.hba, content: renderPoolHba(cluster) },
      { op: 'write', path: p.pcp, content: renderPcpConf(pcpPassword) },
      { op: 'write', path: p.passwd, content: renderPoolPasswd(this.poolUsers(cluster), key) },
      { op: 'write', path: p.pcpPass, content: renderPcpPass(cluster, pcpPassword) },
      { op: 'write', path: p.confHash, content: `${desired}\n` },
    );

    const changedPaths = await putFiles(this.shell, host, files);
    this.hashes.set(cluster.name, { hash: desired, at: Date.now() });
    // pgpool reads its TLS files only at start
    const changed = [p.conf, p.hba, p.pcp, p.passwd, p.key, p.sslCa, p.sslCert, p.sslKey].some((f) => changedPaths.has(f));
    if (running && changed) {
      this.log.info({ cluster: cluster.name }, 'pgpool configuration changed: restarting');
      await this.stopPgpool(cluster);
      running = false;
    }
    if (!running) await this.startPgpool(cluster);
    await this.settle(cluster, primary, failed);
    this.log.info({ cluster: cluster.name, primary, ms: Math.round(performance.now() - t0) }, 'pgpool ensured');
  }

  /** Make pgpool's view match: `primary` up as primary, every other node attached once its
   *  postgres answers again, and detached when the operator saw it fail (`failed`). */
  private async settle(cluster: ClusterSpec, primary: string | null, failed: string[] = []): Promise<void> {
    await this.switching.get(cluster.name)?.done;
    // Whatever fenced it once, the node pgpool must route writes to is reachable from the pool
    // host (a left-over `unreachable` route made pgpool fail every session: "failed to create
    // a backend connection", while the operator itself reached the node).
    const primaryNode = primary ? cluster.nodes.find((n) => n.name === primary) : undefined;
    if (primaryNode) await this.routeBack(cluster, primaryNode);
    const t0 = Date.now();
    let restarted = false;
    let deadline = t0 + this.settleTimeoutMs;
    /** when each request was last sent: pgpool answers a request at once and acts on it a
     *  moment later, so the same one is not sent again within 3 s */
    const sent = new Map<string, number>();
    const due = (key: string) => Date.now() - (sent.get(key) ?? 0) > 3000;
    const probeMs = Math.max(200, cluster.failureDetection.connectTimeoutMs);
    const pi = primary ? cluster.nodes.findIndex((n) => n.name === primary) : -1;
    let lastSaid = t0;
    /** since when the primary to route to has not answered a connect (null: it did) */
    let primaryGoneSince: number | null = null;
    for (;;) {
      let backends: PoolBackend[] | null = null;
      let why = '';
      try {
        backends = await this.poolNodes(cluster);
      } catch (e) {
        why = `pgpool does not answer: ${pgMessage(e)}`;
        // pgpool ends sessions while it switches routing and restarts its children; every new
        // one opens sessions on all its nodes: do not add to its load by reconnecting at once
        await sleep(250);
      }
      // A primary that stopped answering (it failed meanwhile; pgpool may not answer either):
      // routing to it cannot succeed, and the operator must look again (and fail over) rather
      // than wait out the bounds below.
      const pgpoolRoutes = !!primary && backends?.some((b) => b.name === primary && b.status === 'up' && b.role === 'primary');
      const primaryAnswers = pi >= 0 && !pgpoolRoutes ? await tcpReachable(cluster.nodes[pi]!.address, pgPort(cluster), probeMs) : undefined;
      if (primaryAnswers === false) {
        primaryGoneSince ??= Date.now();
        if (Date.now() - primaryGoneSince > Math.max(1000, 3 * probeMs)) {
          throw transient(`cannot route pgpool of ${cluster.name} to ${primary}: its postgres does not answer (${cluster.nodes[pi]!.address}:${pgPort(cluster)})`);
        }
      } else primaryGoneSince = null;
      if (backends) {
        const status = (name: string) => backends!.find((x) => x.name === name)?.status;
        // Only a node pgpool holds down is probed (each accepted connect costs postgres a
        // backend, every 50 ms round): one it routes to stays unless the operator saw it fail.
        const reach = await Promise.all(cluster.nodes.map((n, i) => {
          if (i === pi && primaryAnswers !== undefined) return Promise.resolve(primaryAnswers);
          if (failed.includes(n.name) && n.name !== primary) return Promise.resolve(false);
          return status(n.name) === 'up' ? Promise.resolve(true) : tcpReachable(n.address, pgPort(cluster), probeMs);
        }));
        const pb = primary ? backends.find((b) => b.name === primary) : undefined;
        const primaryOk = primary === null || (pb?.status === 'up' && pb.role === 'primary');
        if (!primaryOk && pi >= 0 && reach[pi]) {
          // pgpool routes writes elsewhere (or nowhere). An attached node is made its primary at
          // once with a PCP promote (pgpool only switches its routing and marks every other node
          // down; they are attached again below). A detached one is attached: pgpool then looks
          // for the primary among its nodes and finds it.
          const kind = status(primary!) === 'up' ? 'promote' : 'attach';
          if (due(`${kind}:${primary}`)) {
            sent.set(`${kind}:${primary}`, Date.now());
            if (kind === 'attach') await this.routeBack(cluster, cluster.nodes[pi]!);
            await this.pcpLogged(cluster, { kind, nodeId: pi }, primary!);
          }
        } else if (primaryOk) {
          // Every other node: attached once its postgres answers, detached when the operator saw
          // it fail (pgpool does neither by itself: its health checks and failover are off).
          await Promise.all(cluster.nodes.map(async (n, i) => {
            if (n.name === primary) return;
            const st = status(n.name);
            if (st === 'down' && reach[i] && due(`attach:${n.name}`)) {
              sent.set(`attach:${n.name}`, Date.now());
              await this.routeBack(cluster, n);
              await this.pcpLogged(cluster, { kind: 'attach', nodeId: i }, n.name);
            } else if (st === 'up' && !reach[i] && due(`detach:${n.name}`)) {
              sent.set(`detach:${n.name}`, Date.now());
              await this.pcpLogged(cluster, { kind: 'detach', nodeId: i }, n.name);
            }
          }));
        }
        const settled = primaryOk && cluster.nodes.every((n, i) => n.name === primary || (status(n.name) === 'up') === reach[i]);
        if (settled) {
          this.remember(cluster, backends, this.hashes.get(cluster.name)?.hash ?? '');
          this.log.info({ cluster: cluster.name, primary, ms: Date.now() - t0, restarted }, 'pgpool routes as desired');
          return;
        }
        why = `pgpool sees ${backends.map((b) => `${b.name}:${b.status}/${b.role}`).join(' ')}, want primary ${primary ?? '(none)'}`;
      }
      if (Date.now() - lastSaid > 2000) {
        lastSaid = Date.now();
        this.log.info({ cluster: cluster.name, primary, ms: Date.now() - t0, why }, 'pgpool: still settling');
      }
      // A pgpool that keeps not answering or keeps routing wrong is stuck: a restart, which
      // starts it with the unreachable nodes marked down, lets it find the primary by itself.
      if (Date.now() > deadline) {
        if (restarted) throw transient(`cannot route pgpool of ${cluster.name} to ${primary ?? 'no primary'}: ${why}`);
        this.log.warn({ cluster: cluster.name, primary, why }, 'pgpool disagrees: restarting it');
        await this.stopPgpool(cluster);
        await this.startPgpool(cluster);
        restarted = true;
        deadline = Date.now() + Math.max(15_000, this.settleTimeoutMs * 3);
        continue;
      }
      await sleep(50);
    }
  }

  /** Where pgpool's PCP port is, with the password kept on the pool host. */
  private async pcpTarget(cluster: ClusterSpec) {
    let password = this.pcpPasswords.get(cluster.name);
    if (!password) {
      password = ((await this.shell.readFile(this.hostRefOf(cluster), this.paths.pcpSecret)) ?? '').trim();
      if (!password) throw transient(`cannot reach pgpool's PCP port of ${cluster.name}: no PCP password on the pool host yet`);
      this.pcpPasswords.set(cluster.name, password);
    }
    return { host: cluster.pgpool.address ?? '', port: cluster.pgpool.pcpPort, user: PCP_USER, password };
  }

  /** Resolves with the session used: 'ready' (opened ahead) or 'fresh'. */
  private async pcpSend(cluster: ClusterSpec, req: PcpRequest): Promise<'ready' | 'fresh'> {
    // The session opened ahead, if it is still there (taken: one request per session, the
    // next look opens another). It may have died unseen (a pool host that went away): a short
    // bound, then a fresh session. A request sent twice is harmless (pgpool refuses the second
    // promote as "already primary", attach and detach are idempotent).
    const ready = this.pcpReady.get(cluster.name);
    this.pcpReady.delete(cluster.name);
    // every request makes pgpool fail over or back, then restart its PCP process (warmPcp)
    this.pcpQuietUntil.set(cluster.name, Date.now() + 8000);
    // one still logging in (opened when the failure was signalled) is waited for: a fresh one
    // would only start that login later
    const warm = !ready ? null : Date.now() - ready.at < 2000 ? await ready.session : await Promise.race([ready.session, sleep(50).then(() => null)]);
    if (warm?.usable) {
      try {
        await warm.request(req, Math.max(500, cluster.failureDetection.connectTimeoutMs));
        return 'ready';
      } catch (err) {
        if (err instanceof PcpRefused) throw err;
      } finally {
        warm.close();
      }
    } else void ready?.session.then((s) => s?.close());
    try {
      await pcpRequest(await this.pcpTarget(cluster), req, this.pcpTimeoutMs(cluster));
      return 'fresh';
    } catch (err) {
      // a refused login: the password changed on the pool host; read it again next time
      if (err instanceof PcpRefused && /authentication/i.test(err.message)) this.pcpPasswords.delete(cluster.name);
      throw err;
    }
  }

  /** A PCP request whose failure is only logged: settle() looks again and repeats it. */
  private async pcpLogged(cluster: ClusterSpec, req: PcpRequest, node: string): Promise<void> {
    const t0 = performance.now();
    try {
      await this.pcpSend(cluster, req);
      this.log.info({ cluster: cluster.name, node, ms: Math.round(performance.now() - t0) }, `pgpool: ${req.kind} sent`);
    } catch (e) {
      this.log.warn({ cluster: cluster.name, node, error: messageOf(e) }, `pgpool: cannot ${req.kind} ${node}`);
    }
  }

  /** Remove the route detachBackend set when the node was fenced (none: a no-op). */
  private async routeBack(cluster: ClusterSpec, ...nodes: NodeSpec[]): Promise<void> {
    const addresses = nodes.map((n) => n.address).filter((a) => a !== cluster.pgpool.address);
    for (const a of addresses) {
      clearTimeout(this.laterCutOffs.get(`${cluster.name}/${a}`));
      this.laterCutOffs.delete(`${cluster.name}/${a}`);
    }
    if (addresses.length === 0) return;
    await this.sh(cluster, `${ROUTE_BACK_SH}\nexit 0`, addresses, { user: 'root', timeoutMs: 5000 }).catch(() => {});
  }

  /** Route writes to `node`, which is being promoted (`promoted` settles when postgres is
   *  writable), with one PCP request: a promote in pgpool at once, alongside postgres's
   *  promotion, unless the fence switched pgpool to it already. pgpool's restart of its
   *  children then overlaps the promotion (no search for the primary, which took 0.1-0.45 s
   *  here); sessions opened before both finish get a read-only error and retry. pgpool marks
   *  every other node down until the pool-route step attaches it again. A node pgpool holds
   *  down (it ignores a promote of such a node) is attached once writable instead. Best effort,
   *  never throws: the pool-route step also repairs whatever this could not do. */
  async routeToPrimary(cluster: ClusterSpec, node: NodeSpec, promoted: Promise<void>): Promise<void> {
    if (!cluster.pgpool.enabled) return;
    const i = cluster.nodes.findIndex((n) => n.name === node.name);
    if (i < 0) return;
    // switched to it already, alongside the fence of the old primary (detachBackend)
    const early = this.switchedEarly.get(cluster.name);
    this.switchedEarly.delete(cluster.name);
    const switched = !!early && Date.now() - early.at < 60_000 && (await early.done);
    if (switched && early!.node === node.name) return;
    if (switched || this.heldDown(cluster, node)) {
      // pgpool holds the node down: the election picked another standby than the one pgpool
      // was switched to at the fence (which marked the others down), or an earlier switch left
      // it down. pgpool does not promote a node it holds down: attach it once it is writable,
      // and pgpool's search for the primary (which a failback starts) finds it.
      if (!(await promoted.then(() => true, () => false))) return;
      await this.switching.get(cluster.name)?.done;
      try {
        await this.routeBack(cluster, node);
        await this.pcpSend(cluster, { kind: 'attach', nodeId: i });
        this.log.info({ cluster: cluster.name, node: node.name, switchedTo: early?.node }, 'pgpool: new primary attached; pgpool looks for it');
        this.whileSwitching(cluster, node.name);
      } catch (e) {
        this.log.warn({ cluster: cluster.name, node: node.name, error: messageOf(e) }, 'pgpool: cannot route writes to the new primary yet (the pool-route step repeats it)');
      }
      return;
    }
    // Not switched yet: promoted in pgpool now, alongside postgres's promotion, so that pgpool's
    // restart of its children overlaps it (writes routed there fail read-only meanwhile, as
    // they failed on the dead primary before).
    try {
      await this.pcpPromote(cluster, node, i);
    } catch (e) {
      this.log.warn({ cluster: cluster.name, node: node.name, error: messageOf(e) }, 'pgpool: cannot route writes to the new primary yet (the pool-route step repeats it)');
    }
  }

  /** pgpool held `node` down at its last answer: it ignores a PCP promote of such a node (and
   *  still answers CommandComplete), so the node must be attached instead. */
  private heldDown(cluster: ClusterSpec, node: NodeSpec): boolean {
    return this.knownBackends.get(cluster.name)?.some((b) => b.name === node.name && b.status !== 'up') ?? false;
  }

  /** PCP promote: pgpool marks every other backend down, restarts its children and routes
   *  writes to `node`. Resolves when pgpool took the request (or routes there already). */
  private async pcpPromote(cluster: ClusterSpec, node: NodeSpec, nodeId: number): Promise<void> {
    const t0 = performance.now();
    let session: string;
    try {
      session = await this.pcpSend(cluster, { kind: 'promote', nodeId });
    } catch (e) {
      // "already primary": pgpool routes there already
      if (e instanceof PcpRefused && /already primary/i.test(e.message)) return;
      throw e;
    }
    this.log.info({ cluster: cluster.name, node: node.name, ms: Math.round(performance.now() - t0), pcp: session }, 'pgpool: writes routed to the new primary');
    // What pgpool does with a promote (its "follow degeneration"): the node becomes its primary
    // and every other one is marked down. Kept as its view until it answers again, so that a
    // second failure right after does not ask it to promote a node it now holds down.
    const view = this.views.get(cluster.name);
    const promoted = (list: PoolBackend[]) => list.map((b): PoolBackend => (b.name === node.name ? { ...b, status: 'up', role: 'primary' } : { ...b, status: 'down', role: 'standby' }));
    if (view) this.views.set(cluster.name, { ...view, primary: node.name, backends: promoted(view.backends) });
    this.knownBackends.set(cluster.name, promoted(this.knownBackends.get(cluster.name) ?? []));
    this.whileSwitching(cluster, node.name);
  }

  /** Until pgpool answers that it routes writes to `primary` (at most 5 s, in the background),
   *  observe() reports pgpool as busy: the operator's next steps then route it (waiting for
   *  this first) and leave the repointing of standbys over SSH, which competed with pgpool's
   *  restart of its children for the CPU, until it is done. */
  private whileSwitching(cluster: ClusterSpec, primary: string): void {
    const entry = { primary, done: Promise.resolve() };
    entry.done = this.waitRouted(cluster, primary).finally(() => {
      if (this.switching.get(cluster.name) === entry) this.switching.delete(cluster.name);
    });
    this.switching.set(cluster.name, entry);
  }

  private async waitRouted(cluster: ClusterSpec, primary: string, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      try {
        // short looks (a look right after the switch waited out its whole 3 s bound in a quiet
        // lab; pgpool answers a fresh session within ~0.3 s once it has restarted its children)
        const backends = await this.poolNodes(cluster, 1000);
        if (backends.some((b) => b.name === primary && b.status === 'up' && b.role === 'primary')) {
          this.remember(cluster, backends, this.hashes.get(cluster.name)?.hash ?? '');
          return;
        }
        await sleep(100);
      } catch {
        // pgpool ends sessions while it switches: ask again a little later
        await sleep(250);
      }
    }
  }

  /** Cut the pool host off a node being fenced: an `unreachable` route makes pgpool's new
   *  connects to it fail at once instead of waiting out a timeout while its link is down, and
   *  `ss -K` ends the sessions pgpool already has there (a read from a node whose link is down
   *  would otherwise block until TCP gives up). Given the successor, pgpool is switched to it
   *  at the same time (switchEarly); without one, by the promotion (routeToPrimary). Not a PCP
   *  detach of the old primary: pgpool would then search for a primary (up to 5 s, blocking
   *  everything else it does) before there is one. The route is removed before the node is
   *  attached again. Best effort: never throws. */
  async detachBackend(cluster: ClusterSpec, node: NodeSpec, successor?: NodeSpec, opts: { cutOffAfterMs?: number } = {}): Promise<void> {
    if (!cluster.pgpool.enabled || node.address === cluster.pgpool.address) return;
    const cut = opts.cutOffAfterMs ? this.cutOffLater(cluster, node, opts.cutOffAfterMs) : this.cutOff(cluster, node, successor);
    await Promise.all([cut, successor ? this.switchEarly(cluster, successor, node) : undefined]);
  }

  /** The cut-off, later (nothing of the node hangs a client now); called off when the node is
   *  routed back first. */
  private cutOffLater(cluster: ClusterSpec, node: NodeSpec, afterMs: number): void {
    const key = `${cluster.name}/${node.address}`;
    clearTimeout(this.laterCutOffs.get(key));
    const timer = setTimeout(() => {
      this.laterCutOffs.delete(key);
      void this.cutOff(cluster, node);
    }, afterMs);
    timer.unref();
    this.laterCutOffs.set(key, timer);
  }

  /** The route to `node` unreachable, its sessions ended; in the same round trip, the route to
   *  the node pgpool is switched to is removed (a fence of it long ago may have left one). */
  private async cutOff(cluster: ClusterSpec, node: NodeSpec, successor?: NodeSpec): Promise<void> {
    try {
      const back = successor && successor.address !== cluster.pgpool.address ? [successor.address] : [];
      const r = await this.sh(cluster, `ip route replace unreachable "$1"/32 || exit 1; ss -K dst "$1" >/dev/null 2>&1; shift\n${ROUTE_BACK_SH}\nexit 0`, [node.address, ...back], { user: 'root', timeoutMs: 5000 });
      if (r.code !== 0) this.log.warn({ cluster: cluster.name, node: node.name, error: tail(r.stderr) }, 'pgpool host: cannot fence the node off its network');
    } catch (e) {
      this.log.warn({ cluster: cluster.name, node: node.name, error: messageOf(e) }, 'pgpool host: cannot fence the node off its network');
    }
  }

  /** pgpool to the standby about to be promoted, while the old primary is being fenced: pgpool
   *  stops sending anything to the old primary at once, and its restart of every child (~0.3 s
   *  with 8 children here, 1 s with 32) overlaps the fence and the promotion instead of
   *  following them. Writes routed there fail (read-only) until the promotion, as they failed
   *  on the dead primary before. Should the election pick another standby after all, the
   *  promotion step switches pgpool again. */
  private async switchEarly(cluster: ClusterSpec, successor: NodeSpec, failed: NodeSpec): Promise<void> {
    const i = cluster.nodes.findIndex((n) => n.name === successor.name);
    if (i < 0) return;
    if (this.heldDown(cluster, successor)) {
      // pgpool would not promote it (the promotion step attaches it instead). A failed node it
      // still holds up makes every new session fail (pgpool opens each on all its nodes): when
      // it is the only one up, detach it now, and pgpool, finding no node to search, gives up
      // its search for a primary at once. (With another node up the search would hold pgpool
      // for up to 5 s: left to the pool-route step then.)
      const fi = cluster.nodes.findIndex((n) => n.name === failed.name);
      const known = this.knownBackends.get(cluster.name) ?? [];
      const up = known.filter((b) => b.status === 'up').map((b) => b.name);
      if (fi >= 0 && up.length === 1 && up[0] === failed.name) {
        try {
          await this.pcpSend(cluster, { kind: 'detach', nodeId: fi });
          this.log.info({ cluster: cluster.name, node: failed.name }, 'pgpool: failed node detached (the successor is attached once promoted)');
          const detached = known.map((b): PoolBackend => (b.name === failed.name ? { ...b, status: 'down' } : b));
          this.knownBackends.set(cluster.name, detached);
          const view = this.views.get(cluster.name);
          if (view) this.views.set(cluster.name, { ...view, primary: null, backends: detached });
        } catch (e) {
          this.log.warn({ cluster: cluster.name, node: failed.name, error: messageOf(e) }, 'pgpool: cannot detach the failed node (the pool-route step does)');
        }
      }
      return;
    }
    const done = this.pcpPromote(cluster, successor, i).then(() => true, (e) => {
      this.log.warn({ cluster: cluster.name, node: successor.name, error: messageOf(e) }, 'pgpool: cannot switch to the successor yet (the promotion step does)');
      return false;
    });
    this.switchedEarly.set(cluster.name, { node: successor.name, at: Date.now(), done });
    await done;
  }

  private async startPgpool(cluster: ClusterSpec): Promise<void> {
    const p = this.paths;
    this.dropClient(cluster);
    // pgpool starts from a status file that marks down the backends that do not answer now. A
    // backend it believes up but cannot reach (a fenced old primary whose link is down) would
    // hold its start-up search for a primary, and then every new session, until the link came
    // back. Nodes marked down are attached again once they answer (settle).
    const probeMs = Math.max(300, cluster.failureDetection.connectTimeoutMs);
    const reach = await Promise.all(cluster.nodes.map((n) => tcpReachable(n.address, pgPort(cluster), probeMs)));
    // all down: pgpool would have nothing to search; let it try every backend itself
    const status = reach.some(Boolean) ? reach.map((r) => (r ? 'up' : 'down')) : reach.map(() => 'up');
    // a node started as up must be reachable from the pool host too
    await this.routeBack(cluster, ...cluster.nodes.filter((_, i) => status[i] === 'up'));
    await this.must(cluster, 'start pgpool', START_SH, [`${this.bin}/pgpool`, p.conf, p.hba, p.pcp, p.key, p.logFile, p.pid, p.dir, `${status.join('\n')}\n`, `${p.statusDir}/pgpool_status`], {
      user: 'postgres',
      kind: 'transient',
      timeoutMs: 20_000,
    });
    const down = cluster.nodes.filter((_, i) => status[i] === 'down').map((n) => n.name);
    if (down.length > 0) this.log.info({ cluster: cluster.name, down }, 'pgpool starts with the unreachable nodes marked down');
    // Ready when pgpool answers for its backends.
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        await this.poolNodes(cluster);
        break;
      } catch (err) {
        if (Date.now() > deadline) {
          const log = await this.sh(cluster, 'tail -n 5 "$1"', [p.logFile], { user: 'postgres' }).catch(() => null);
          throw transient(`cannot start pgpool of ${cluster.name}: ${pgMessage(err)} ${tail(log?.stdout ?? '')}`.trim());
        }
        await sleep(100);
      }
    }
    this.log.info({ cluster: cluster.name }, 'pgpool started');
  }

  private async stopPgpool(cluster: ClusterSpec): Promise<void> {
    this.dropClient(cluster);
    await this.must(cluster, 'stop pgpool', STOP_SH, [`${this.bin}/pgpool`, this.paths.conf, this.paths.pid], { user: 'postgres', timeoutMs: 60_000 });
  }

  async deletePool(cluster: ClusterSpec): Promise<void> {
    this.dropClient(cluster);
    try {
      await this.stopPgpool(cluster);
    } catch (err) {
      // an unreachable pool host has nothing left to stop
      if (!(err instanceof PgopError && err.kind === 'transient')) throw err;
    }
    // as postgres (its owner): root never recurses into a tree postgres can write
    await this.sh(cluster, `${NODE_FS_FUNCS}\npg_rmtree "$1"`, [this.paths.dir], { user: 'root' }).catch(() => {});
    this.hashes.delete(cluster.name);
    this.views.delete(cluster.name);
    this.pcpPasswords.delete(cluster.name);
  }

  async close(): Promise<void> {
    this.offSignals?.();
    for (const name of [...this.pcpReady.keys()]) this.dropPcp(name);
    await this.clients.close();
  }
}

// ------------------------------------------------------------------ helpers

function tcpReachable(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(t);
      s.destroy();
      resolve(ok);
    };
    const t = setTimeout(() => done(false), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** `p`, or a rejection after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** alive <pid>: a live (not zombie) pgpool process. */
const ALIVE_FN = `
alive() {
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = pgpool ] || return 1
  [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
`;

/** As root: remove the `unreachable` route (set by a fence) to each address given. */
const ROUTE_BACK_SH = 'for a in "$@"; do ip route del unreachable "$a"/32 2>/dev/null; done';

/** As root. $1 dir $2 run $3 log $4 oiddir $5 pgpool binary $6 key file $7 pcp secret $8 pid file $9 status dir.
 *  Prints key=, pcp= (the stored secrets, empty when missing) and running=0|1. The directories
 *  become postgres's through pg_dir (src/drivers/ssh/node-fs.ts: the ones inside pgpool's
 *  directory are made by postgres itself); the secrets are read as postgres, their owner (root
 *  would follow a link postgres put in their place). */
const PREPARE_SH = `${ALIVE_FN}${NODE_FS_FUNCS}
set -e
if [ ! -x "$5" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgpool2 >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    dnf -y -q install pgpool-II
  fi
fi
[ -x "$5" ] || { echo "pgpool is not installed ($5 missing)" >&2; exit 3; }
set +e
for dir in "$1" "$2" "$3" "$4"; do pg_dir "$dir" 700 fixed; done
pg_dir "$9" 700 fixed
set -e
echo "key=$(as_user postgres postgres head -n 1 -- "$6" 2>/dev/null || true)"
echo "pcp=$(as_user postgres postgres head -n 1 -- "$7" 2>/dev/null || true)"
running=0
if [ -f "$8" ] && alive "$(as_user postgres postgres head -n 1 -- "$8" 2>/dev/null)"; then running=1; fi
echo "running=$running"
# pgpool never starts at boot by itself (the distro unit would fight over ports and sockets)
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now pgpool2.service >/dev/null 2>&1 || true
  systemctl disable --now pgpool-II.service >/dev/null 2>&1 || true
fi
`;

/** As postgres. $1 pgpool $2 conf $3 hba $4 pcp $5 key $6 log $7 pid $8 dir $9 status lines ${10} status file. */
const START_SH = `${ALIVE_FN}
cd "$8" || exit 1
if [ -f "$7" ]; then
  if alive "$(head -n 1 "$7")"; then exit 0; fi
  rm -f "$7"
fi
rm -f "$(dirname "$7")"/.s.PGSQL.* 2>/dev/null
# /run is emptied at boot; prepare (as root) creates the directory, this covers a restart
mkdir -p "$(dirname "\${10}")" 2>/dev/null
printf '%s' "$9" > "\${10}" || exit 1
setsid nohup "$1" -n -f "$2" -a "$3" -F "$4" -k "$5" >> "$6" 2>&1 < /dev/null &
i=0
while [ $i -lt 100 ]; do
  [ -s "$7" ] && exit 0
  sleep 0.05; i=$((i+1))
done
echo "pgpool did not write its pid file" >&2
tail -n 5 "$6" >&2
exit 1
`;

/** As postgres. $1 pgpool $2 conf $3 pid file. */
const STOP_SH = `${ALIVE_FN}
[ -f "$3" ] || exit 0
pid=$(head -n 1 "$3")
case "$pid" in ''|*[!0-9]*) rm -f "$3"; exit 0 ;; esac
# Fast shutdown (SIGINT). A main process busy searching for a primary, or a hung one, does not
# act on it: after ~1 s SIGKILL its whole process group (started with setsid, the group is pgpool
# and its children). Nothing is lost: pgpool starts from the status file pgop writes and keeps
# no other state.
if alive "$pid"; then
  kill -INT "$pid" 2>/dev/null
  i=0
  while alive "$pid" && [ $i -lt 10 ]; do sleep 0.1; i=$((i+1)); done
  if alive "$pid"; then kill -KILL "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; sleep 0.1; fi
fi
# Children that outlive their main process still hold the listening sockets, and the next start
# fails with "Address already in use": end the rest of that group (pgpool processes only) and
# wait until it is gone.
if pgrep -g "$pid" -x pgpool >/dev/null 2>&1; then
  kill -KILL -- "-$pid" 2>/dev/null
  i=0
  while pgrep -g "$pid" -x pgpool >/dev/null 2>&1 && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done
fi
rm -f "$3"
exit 0
`;
