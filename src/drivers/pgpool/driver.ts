// PoolDriver: pgpool-II 4.3 on the pool host, reached through NodeShell (SSH).
//
// pgpool runs as the postgres OS user from <dir> (default /u01/pgpool: the lab pool host's
// private /u01), started `pgpool -n` under setsid/nohup from a status file pgop writes (the
// backends that do not answer marked down), with its stderr in <dir>/log. It never decides a
// promotion: ensurePool() makes its view match the operator's (the given primary up and
// primary, every reachable node attached), re-attaching nodes with pcp_attach_node and restarting
// pgpool when its idea of the primary stays wrong.

import { randomBytes } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import pg from 'pg';
import type { ClusterSpec, NodeSpec } from '../../spec/types.js';
import type { PoolBackend, PoolObservation } from '../../observe/types.js';
import type { DriverLog, ExecOptions, ExecResult, HostRef, NodeShell, PoolDriver } from '../types.js';
import { PgopError, messageOf, terminal, transient } from '../../errors.js';
import { resolveSecret } from '../../spec/secrets.js';
import { pgPort } from '../postgres/config.js';
import { putFiles, type FileOp } from '../postgres/driver.js';
import { ClientCache } from '../pg-clients.js';
import {
  PCP_USER,
  desiredPoolConfigHash,
  poolPaths,
  renderPcpConf,
  renderPcpPass,
  renderPgpoolConf,
  renderPoolHba,
  renderPoolPasswd,
  renderReportScript,
  type PoolPaths,
  type ReportTarget,
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
  /** How long ensurePool waits for pgpool's view to match before restarting it (default 10 s;
   *  after a restart it waits at least 15 s). */
  settleTimeoutMs?: number;
  /** Where the running operator hears pgpool's failover reports, as seen from the pool host
   *  (lab: the hub's bridge address). Without it failover_command only writes events.log. */
  reportTarget?(cluster: ClusterSpec): ReportTarget | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
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
  private readonly reportTargetOf: (cluster: ClusterSpec) => ReportTarget | null;
  /** the most recent view of pgpool's backends per cluster (observe() and settle() keep it) */
  private readonly views = new Map<string, PoolObservation>();

  constructor(opts: SshPoolDriverOptions) {
    this.shell = opts.shell;
    this.hostRefOf = opts.hostRef;
    this.connectOf = opts.connect ?? defaultPoolConnect;
    this.paths = poolPaths(opts.dir);
    this.bin = opts.binDir ?? '/usr/sbin';
    this.log = opts.logger ?? silent;
    // A pgpool failing over takes 1-3 s here (longer on a loaded host); one still silent or wrong
    // after this is stuck (seen: its search for the primary hanging on a node whose link is down)
    // and a restart, which starts with the unreachable nodes marked down, is the quicker way out.
    this.settleTimeoutMs = opts.settleTimeoutMs ?? 6_000;
    this.reportTargetOf = opts.reportTarget ?? (() => null);
  }

  desiredConfigHash(cluster: ClusterSpec): string {
    return desiredPoolConfigHash(cluster, this.paths, this.reportTargetOf(cluster));
  }

  // ---------------------------------------------------------------- remote helpers

  private sh(cluster: ClusterSpec, script: string, args: (string | number)[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.shell.exec(this.hostRefOf(cluster), ['sh', '-c', `cd / || exit 1\n${script}`, 'pgop', ...args.map(String)], opts);
  }

  private async must(cluster: ClusterSpec, what: string, script: string, args: (string | number)[], opts: ExecOptions & { kind?: 'transient' | 'terminal' } = {}): Promise<ExecResult> {
    const { kind = 'transient', ...o } = opts;
    const res = await this.sh(cluster, script, args, o);
    if (res.code !== 0) throw new PgopError(kind, `cannot ${what} on the pgpool host of ${cluster.name}: ${tail(res.stderr) || tail(res.stdout) || `exit ${res.code}`}`);
    return res;
  }

  // ---------------------------------------------------------------- observe

  private client(cluster: ClusterSpec): Promise<pg.Client> {
    const timeout = cluster.failureDetection.connectTimeoutMs;
    return this.clients.get(cluster.name, () => new pg.Client({
      ...this.connectOf(cluster),
      // A pgpool that just started connects to every backend first: give it time. (A pgpool busy
      // failing over does not hold up a pass: observe() waits only briefly for this answer.)
      connectionTimeoutMillis: Math.max(2000, timeout * 2),
      query_timeout: Math.max(2000, timeout * 2),
      application_name: 'pgop-pool-probe',
      keepAlive: true,
    }));
  }

  private dropClient(cluster: ClusterSpec): void {
    this.clients.drop(cluster.name);
  }

  /** pgpool's view of the backends, mapped to spec node names. SHOW POOL_BACKEND_STATS, not
   *  SHOW POOL_NODES: the latter (4.3) opens a fresh session to every backend to fill its
   *  pg_status/pg_role columns and took 0.5-0.9 s here; the former answers from shared memory
   *  in ~2 ms with the same node_id/hostname/status/role. */
  private async poolNodes(cluster: ClusterSpec): Promise<PoolBackend[]> {
    try {
      const c = await this.client(cluster);
      const r = await c.query<PoolNodeRow>('SHOW POOL_BACKEND_STATS');
      return r.rows.map((row) => this.backendOf(cluster, row));
    } catch (err) {
      this.dropClient(cluster);
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
    return this.remember(cluster, backends, configHash);
  }

  latest(cluster: ClusterSpec): PoolObservation | null {
    return this.views.get(cluster.name) ?? null;
  }

  private remember(cluster: ClusterSpec, backends: PoolBackend[], configHash: string): PoolObservation {
    const primary = backends.find((b) => b.role === 'primary' && b.status === 'up')?.name ?? null;
    const view = { reachable: true, primary, backends, configHash };
    this.views.set(cluster.name, view);
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

  async ensurePool(cluster: ClusterSpec, primary: string | null): Promise<void> {
    if (!cluster.pgpool.enabled) return;
    const t0 = performance.now();
    const host = this.hostRefOf(cluster);
    const p = this.paths;
    const report = this.reportTargetOf(cluster);
    const desired = desiredPoolConfigHash(cluster, p, report);
    // During a failover only routing is wrong: when the files on the pool host are known to be
    // current, skip the round trips that would rewrite them and go straight to routing.
    const known = this.hashes.get(cluster.name);
    if (known?.hash === desired && Date.now() - known.at < 60_000) {
      await this.settle(cluster, primary);
      this.log.info({ cluster: cluster.name, primary, ms: Math.round(performance.now() - t0) }, 'pgpool routed');
      return;
    }
    // One round trip: pgpool installed (apt/dnf when missing), directories, the two secrets kept on the pool host (the AES key of
    // pool_passwd and the PCP password, generated once, mode 0600), is pgpool running.
    const prep = await this.must(cluster, 'prepare pgpool', PREPARE_SH, [p.dir, p.run, p.log, p.oiddir, `${this.bin}/pgpool`, p.key, p.pcpSecret, p.pid], {
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
    files.push(
      { op: 'write', path: p.conf, content: renderPgpoolConf(cluster, p, report) },
      { op: 'write', path: p.hba, content: renderPoolHba(cluster) },
      { op: 'write', path: p.pcp, content: renderPcpConf(pcpPassword) },
      { op: 'write', path: p.passwd, content: renderPoolPasswd(this.poolUsers(cluster), key) },
      { op: 'write', path: p.pcpPass, content: renderPcpPass(cluster, pcpPassword) },
      { op: 'write', path: p.confHash, content: `${desired}\n` },
    );
    if (report) files.push({ op: 'write', path: p.reportScript, content: renderReportScript(cluster, p, report) });
    const changedPaths = await putFiles(this.shell, host, files);
    this.hashes.set(cluster.name, { hash: desired, at: Date.now() });
    const changed = [p.conf, p.hba, p.pcp, p.passwd, p.key].some((f) => changedPaths.has(f));
    if (running && changed) {
      this.log.info({ cluster: cluster.name }, 'pgpool configuration changed: restarting');
      await this.stopPgpool(cluster);
      running = false;
    }
    if (!running) await this.startPgpool(cluster);
    await this.settle(cluster, primary);
    this.log.info({ cluster: cluster.name, primary, ms: Math.round(performance.now() - t0) }, 'pgpool ensured');
  }

  /** Make pgpool's view match: `primary` up as primary, every reachable node attached. */
  private async settle(cluster: ClusterSpec, primary: string | null): Promise<void> {
    const t0 = Date.now();
    let restarted = false;
    let deadline = t0 + this.settleTimeoutMs;
    const attached = new Map<string, number>();
    const detached = new Set<string>();
    const probeMs = Math.max(200, cluster.failureDetection.connectTimeoutMs);
    for (;;) {
      let backends: PoolBackend[] | null = null;
      let why = '';
      try {
        backends = await this.poolNodes(cluster);
      } catch (e) {
        why = `pgpool does not answer: ${pgMessage(e)}`;
      }
      if (backends) {
        // Re-attach every node pgpool holds down but that answers again (pgpool never does it
        // itself: auto_failback is off).
        // The desired primary first, alone: attaching a standby while pgpool has no primary makes
        // it search for one (search_primary_node_timeout) and queue every later request.
        const isDown = (name: string) => backends!.find((x) => x.name === name)?.status === 'down';
        // pgpool still routes writes to a node that is not the primary (an old primary pgop
        // fenced or demoted): detach it. pgpool then fails over by itself: its failover_command
        // hears from the operator that the new primary is ready, and its search finds it at once.
        const wrong = primary ? backends.find((b) => b.role === 'primary' && b.status === 'up' && b.name !== primary) : undefined;
        if (wrong && !detached.has(wrong.name)) {
          const i = cluster.nodes.findIndex((n) => n.name === wrong.name);
          if (i >= 0) {
            detached.add(wrong.name);
            try {
              await this.pcp(cluster, 'pcp_detach_node', ['-n', String(i)]);
              this.log.info({ cluster: cluster.name, node: wrong.name, primary }, 'pgpool: former primary detached');
            } catch (e) {
              this.log.warn({ cluster: cluster.name, node: wrong.name, error: messageOf(e) }, 'pcp_detach_node failed');
            }
            continue;
          }
        }
        const reach = await Promise.all(cluster.nodes.map((n) => (isDown(n.name) ? tcpReachable(n.address, pgPort(cluster), probeMs) : Promise.resolve(true))));
        const pi = primary ? cluster.nodes.findIndex((n) => n.name === primary) : -1;
        const order = pi >= 0 && isDown(primary!) && reach[pi] ? [pi] : cluster.nodes.map((_, i) => i);
        let attachedAll = !cluster.nodes.some((n, i) => isDown(n.name) && reach[i]);
        for (const i of order) {
          const n = cluster.nodes[i]!;
          if (!isDown(n.name) || !reach[i]) continue;
          if (Date.now() - (attached.get(n.name) ?? 0) > 3000) {
            attached.set(n.name, Date.now());
            try {
              // the route detachBackend set when the node was fenced (none: a no-op)
              if (n.address !== cluster.pgpool.address) await this.sh(cluster, 'ip route del unreachable "$1"/32 2>/dev/null; exit 0', [n.address], { user: 'root', timeoutMs: 5000 });
              await this.pcp(cluster, 'pcp_attach_node', ['-n', String(i)]);
              this.log.info({ cluster: cluster.name, node: n.name }, 'pgpool: node attached');
            } catch (e) {
              this.log.warn({ cluster: cluster.name, node: n.name, error: messageOf(e) }, 'pcp_attach_node failed');
            }
          }
        }
        const pb = primary ? backends.find((b) => b.name === primary) : undefined;
        const primaryOk = primary === null || (pb?.status === 'up' && pb.role === 'primary');
        const falsePrimary = primary !== null && backends.some((b) => b.role === 'primary' && b.status === 'up' && b.name !== primary);
        if (attachedAll && primaryOk && !falsePrimary) {
          this.remember(cluster, backends, this.hashes.get(cluster.name)?.hash ?? '');
          this.log.info({ cluster: cluster.name, primary, ms: Date.now() - t0, restarted }, 'pgpool routes as desired');
          return;
        }
        why = `pgpool sees ${backends.map((b) => `${b.name}:${b.status}/${b.role}`).join(' ')}, want primary ${primary ?? '(none)'}`;
      }
      // A pgpool that keeps not answering or keeps routing wrong is stuck (e.g. searching for a
      // primary that is not there): restarting it lets it find the primary by itself. Only
      // after settleTimeoutMs: right after a failover pgpool restarts its children and drops our
      // session, and a hasty restart would only add seconds.
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

  private async pcp(cluster: ClusterSpec, cmd: string, args: string[], timeoutMs = 30_000): Promise<ExecResult> {
    return this.must(
      cluster,
      cmd,
      '"$1" -h "$2" -p "$3" -U "$4" -w "$5" "$6"',
      [`${this.bin}/${cmd}`, cluster.pgpool.address ?? '', cluster.pgpool.pcpPort, PCP_USER, ...args],
      { user: 'postgres', env: { PCPPASSFILE: this.paths.pcpPass }, timeoutMs },
    );
  }

  /** Stop routing to a node at once (part of fencing it). pgpool then fails over by itself,
   *  in parallel with the promotion: its failover_command waits for the operator's answer and
   *  its search then finds the new primary. pcp_detach_node returns without waiting for that.
   *  Best effort: a pgpool that is down or already detached the node needs nothing. */
  async detachBackend(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    if (!cluster.pgpool.enabled) return;
    const i = cluster.nodes.findIndex((n) => n.name === node.name);
    if (i < 0) return;
    // Fence the node off the pool host's network too: with an unreachable route pgpool's
    // connects to it (health checks, new sessions) fail at once instead of waiting out a timeout
    // while its link is down. Removed by settle() before the node is attached again.
    const route = node.address === cluster.pgpool.address
      ? Promise.resolve()
      : this.sh(cluster, 'ip route replace unreachable "$1"/32', [node.address], { user: 'root', timeoutMs: 5000 }).then(
          (r) => void (r.code !== 0 && this.log.warn({ cluster: cluster.name, node: node.name, error: tail(r.stderr) }, 'pgpool host: cannot fence the node off its network')),
          (e) => this.log.warn({ cluster: cluster.name, node: node.name, error: messageOf(e) }, 'pgpool host: cannot fence the node off its network'),
        );
    const view = this.views.get(cluster.name);
    const detach = view?.backends.find((b) => b.name === node.name)?.status === 'down' ? Promise.resolve() : this.detach(cluster, node, i);
    await Promise.all([route, detach]);
  }

  private async detach(cluster: ClusterSpec, node: NodeSpec, i: number): Promise<void> {
    const t0 = performance.now();
    try {
      await this.pcp(cluster, 'pcp_detach_node', ['-n', String(i)], Math.max(2000, cluster.failureDetection.connectTimeoutMs * 4));
      this.log.info({ cluster: cluster.name, node: node.name, ms: Math.round(performance.now() - t0) }, 'pgpool: fenced node detached');
    } catch (err) {
      this.log.warn({ cluster: cluster.name, node: node.name, error: messageOf(err) }, 'pgpool: cannot detach the fenced node (routing is fixed after the promotion)');
    }
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
    await this.must(cluster, 'start pgpool', START_SH, [`${this.bin}/pgpool`, p.conf, p.hba, p.pcp, p.key, p.logFile, p.pid, p.dir, `${status.join('\n')}\n`, `${p.log}/pgpool_status`], {
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
    await this.sh(cluster, 'rm -rf -- "$1"', [this.paths.dir], { user: 'root' }).catch(() => {});
    this.hashes.delete(cluster.name);
    this.views.delete(cluster.name);
  }

  async close(): Promise<void> {
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

function tail(s: string, n = 400): string {
  const t = s.trim();
  return t.length > n ? `...${t.slice(-n)}` : t;
}

function pgMessage(err: unknown): string {
  const e = err as { message?: string; code?: string };
  return e?.message ?? String(err);
}

/** alive <pid>: a live (not zombie) pgpool process. */
const ALIVE_FN = `
alive() {
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = pgpool ] || return 1
  [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
`;

/** As root. $1 dir $2 run $3 log $4 oiddir $5 pgpool binary $6 key file $7 pcp secret $8 pid file.
 *  Prints key=, pcp= (the stored secrets, empty when missing) and running=0|1. */
const PREPARE_SH = `${ALIVE_FN}
set -e
if [ ! -x "$5" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgpool2 >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    dnf -y -q install pgpool-II
  fi
fi
[ -x "$5" ] || { echo "pgpool is not installed ($5 missing)" >&2; exit 3; }
mkdir -p "$1" "$2" "$3" "$4"
chown postgres:postgres "$1" "$2" "$3" "$4"
chmod 700 "$1" "$2" "$3" "$4"
echo "key=$(head -n 1 "$6" 2>/dev/null || true)"
echo "pcp=$(head -n 1 "$7" 2>/dev/null || true)"
running=0
if [ -f "$8" ] && alive "$(head -n 1 "$8")"; then running=1; fi
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
