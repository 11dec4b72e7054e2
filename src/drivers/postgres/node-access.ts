// What every part of the postgres driver needs to reach a node: its SSH side (scripts, files,
// the data directory's state), superuser sessions over the pg protocol, and the node's TLS files
// (rewritten over SSH when the node serves a certificate pgop did not issue).

import pg from 'pg';
import type { ClusterSpec, NodeSpec } from '../../spec/types.js';
import type { DriverLog, ExecOptions, ExecResult, HostRef, NodeShell } from '../types.js';
import { PgopError, messageOf, transient } from '../../errors.js';
import { resolveSecret } from '../../spec/secrets.js';
import { ClusterTls, nodeHostId } from '../../tls/material.js';
import { clientTls, explainTlsError } from '../../tls/client.js';
import { connectClient, endClient, newClient, pgMessage } from '../pg-clients.js';
import {
  ADMIN_LOCK_MS,
  ADMIN_STATEMENT_MS,
  CHECKPOINT_MS,
  CLIENT_GRACE_MS,
  KEEPALIVE_IDLE_MS,
  adminConnectTimeoutMs,
  probeTimeoutMs,
} from '../timeouts.js';
import { assertSafePath } from '../ssh/node-fs.js';
import { putFiles, type FileOp } from '../remote/files.js';
import { failureDetail, runScript, tail, type NodeScript } from '../remote/run.js';
import {
  CONF_DIR,
  INCLUDE_DIR_LINE,
  SOCKET_DIR,
  binDir,
  parseLsn,
  pgPort,
  socketDir,
  tlsNodePaths,
  type NodeTlsFiles,
} from './config.js';

export { socketDir };
import { controlDataScript, nodeStateScript, reloadScript } from './scripts.js';

/** What one SSH look at a node tells. */
export interface NodeState {
  initialized: boolean;
  nonEmpty: boolean;
  standbySignal: boolean;
  running: boolean;
  /** pg_ctl status exit code (0 running, 3 not running, 4 no data dir) */
  status: number;
  /** an interrupted clone (or rewind) that never became a standby: cloned again */
  partial: boolean;
}

export interface ControlData {
  state: string;
  timeline: number;
  checkpoint: number;
  minRecovery: number;
  minRecoveryTli: number;
  /** the newer of the checkpoint's and the minimum recovery point's timeline */
  latestTimeline: number;
}

export interface NodeAccessOptions {
  shell: NodeShell;
  hostRef(cluster: ClusterSpec, node: NodeSpec): HostRef;
  connect(cluster: ClusterSpec, node: NodeSpec): pg.ClientConfig;
  log: DriverLog;
  tls: ClusterTls;
}

/** How often at most the TLS files of one node are restored after a refused certificate. */
const TLS_REPAIR_EVERY_MS = 30_000;

export class NodeAccess {
  readonly shell: NodeShell;
  readonly log: DriverLog;
  readonly tls: ClusterTls;
  private readonly hostRefOf: NodeAccessOptions['hostRef'];
  private readonly connectOf: NodeAccessOptions['connect'];
  /** per cluster/node: when the TLS files were last restored after a refused certificate */
  private readonly tlsRepairs = new Map<string, number>();

  constructor(opts: NodeAccessOptions) {
    this.shell = opts.shell;
    this.hostRefOf = opts.hostRef;
    this.connectOf = opts.connect;
    this.log = opts.log;
    this.tls = opts.tls;
  }

  // ---------------------------------------------------------------------- SSH side

  host(cluster: ClusterSpec, node: NodeSpec): HostRef {
    return this.hostRefOf(cluster, node);
  }

  run(cluster: ClusterSpec, node: NodeSpec, script: NodeScript, opts: ExecOptions = {}): Promise<ExecResult> {
    return runScript(this.shell, this.host(cluster, node), script, opts);
  }

  /** As run(), throwing `cannot <what> on <node>: <stderr>` on a non-zero exit. */
  async must(
    cluster: ClusterSpec,
    node: NodeSpec,
    what: string,
    script: NodeScript,
    opts: ExecOptions & { kind?: 'transient' | 'terminal' } = {},
  ): Promise<ExecResult> {
    const { kind = 'transient', ...execOpts } = opts;
    const res = await this.run(cluster, node, script, execOpts);
    if (res.code !== 0) throw new PgopError(kind, `cannot ${what} on ${node.name}: ${failureDetail(res)}`);
    return res;
  }

  /** Write, create-if-missing or delete files on the node (src/drivers/remote/files.ts); with
   *  `dataDir`, also make sure conf.d is included (and after a copy, `clean`: no copied slots). */
  apply(
    cluster: ClusterSpec,
    node: NodeSpec,
    files: FileOp[],
    opts: { dataDir: boolean; clean?: boolean },
  ): Promise<Set<string>> {
    const pre = opts.dataDir
      ? {
          dataDir: this.dataDir(cluster),
          confDir: CONF_DIR,
          includeLine: INCLUDE_DIR_LINE,
          clean: !!opts.clean,
        }
      : undefined;
    return putFiles(this.shell, this.host(cluster, node), files, pre);
  }

  // Every spec path passes assertSafePath (one check, terminal) before it reaches a script:
  // the schema constrains them first, this is the driver's own guard (pg_ctl and pg_rewind hand
  // the data directory to sh -c).
  dataDir(cluster: ClusterSpec): string {
    return assertSafePath('postgres.dataDir', cluster.postgres.dataDir);
  }

  logDir(cluster: ClusterSpec): string {
    return assertSafePath('postgres.logDir', cluster.postgres.logDir);
  }

  superuserPassword(cluster: ClusterSpec): string {
    return resolveSecret(cluster.postgres.superuserPassword, 'the postgres superuser password');
  }

  replicationPassword(cluster: ClusterSpec): string {
    return resolveSecret(cluster.replication.password, 'the replication password');
  }

  /** One SSH round trip: is the data directory initialised, does postgres run? */
  async nodeState(cluster: ClusterSpec, node: NodeSpec, timeoutMs?: number): Promise<NodeState> {
    const script = nodeStateScript(this.dataDir(cluster), binDir(cluster));
    const res = await this.run(cluster, node, script, { user: 'postgres', timeoutMs });
    const m = /init=(\d) nonempty=(\d) standby=(\d) status=(\d+) partial=(\d)/.exec(res.stdout);
    if (!m) throw transient(`cannot inspect ${node.name}: ${tail(res.stderr) || `exit ${res.code}`}`);
    return {
      initialized: m[1] === '1',
      nonEmpty: m[2] === '1',
      standbySignal: m[3] === '1',
      status: Number(m[4]),
      running: m[4] === '0',
      partial: m[5] === '1',
    };
  }

  async controlData(cluster: ClusterSpec, node: NodeSpec): Promise<ControlData> {
    const script = controlDataScript(binDir(cluster), this.dataDir(cluster));
    const res = await this.must(cluster, node, 'read pg_controldata', script, {
      user: 'postgres',
      env: { LC_ALL: 'C' },
    });
    const get = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(res.stdout)?.[1]?.trim() ?? '';
    const timeline = Number(get("Latest checkpoint's TimeLineID")) || 0;
    const minRecoveryTli = Number(get("Min recovery ending loc's timeline")) || 0;
    return {
      state: get('Database cluster state'),
      timeline,
      checkpoint: parseLsn(get('Latest checkpoint location')),
      minRecovery: parseLsn(get('Minimum recovery ending location')),
      minRecoveryTli,
      latestTimeline: Math.max(timeline, minRecoveryTli),
    };
  }

  // ---------------------------------------------------------------------- pg sessions

  /** Every pg session to a node is bounded (src/drivers/timeouts.ts): its connect, each
   *  statement on the server and, for a node that hangs and cannot cancel, on the client too.
   *  `extra` narrows them (the probe: its own budget). */
  clientConfig(cluster: ClusterSpec, node: NodeSpec, extra: Partial<pg.ClientConfig> = {}): pg.ClientConfig {
    const base = this.connectOf(cluster, node);
    let ssl: Partial<pg.ClientConfig> = {};
    if (this.tls.enabled(cluster) && !String(base.host ?? '').startsWith('/')) {
      // verify-full against the cluster CA; SCRAM with channel binding where offered (a unix
      // socket, which a custom connect() may name, has no TLS)
      const m = this.tls.peek(cluster);
      if (!m) throw transient(`cannot connect to postgres on ${node.name}: the cluster CA is not issued yet`);
      const tls = clientTls(m.caBundle, { name: node.name, address: base.host ?? node.address });
      ssl = { ssl: tls, enableChannelBinding: true } as Partial<pg.ClientConfig>;
    }
    return {
      port: pgPort(cluster),
      ...base,
      ...ssl,
      connectionTimeoutMillis: probeTimeoutMs(cluster),
      statement_timeout: ADMIN_STATEMENT_MS,
      lock_timeout: ADMIN_LOCK_MS,
      query_timeout: ADMIN_STATEMENT_MS + CLIENT_GRACE_MS,
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEPALIVE_IDLE_MS,
      application_name: 'pgop',
      ...extra,
    };
  }

  /** A fresh superuser session for a mutating operation; always ended. */
  async withAdmin<T>(
    cluster: ClusterSpec,
    node: NodeSpec,
    fn: (c: pg.Client) => Promise<T>,
    database?: string,
  ): Promise<T> {
    const cfg = this.clientConfig(cluster, node, {
      connectionTimeoutMillis: adminConnectTimeoutMs(cluster),
      ...(database ? { database } : {}),
    });
    const client = newClient(cfg);
    client.on('error', () => {});
    try {
      await connectClient(client);
    } catch (err) {
      await endClient(client);
      const repaired = explainTlsError(err) ? await this.repairTls(cluster, node, pgMessage(err)) : '';
      const db = database ? ` (database ${database})` : '';
      throw transient(`cannot connect to postgres on ${node.name}${db}: ${pgMessage(err)}${repaired}`, err);
    }
    try {
      return await fn(client);
    } finally {
      await endClient(client);
    }
  }

  // ---------------------------------------------------------------------- TLS files

  /** The node's TLS files as pgop issued them (null: none yet, or TLS off). */
  nodeTls(cluster: ClusterSpec, node: NodeSpec): NodeTlsFiles {
    if (!this.tls.enabled(cluster)) return null;
    const m = this.tls.peek(cluster);
    const h = m?.hosts.get(nodeHostId(node.name));
    return m && h ? { cert: h.cert, key: h.key, ca: m.caBundle } : null;
  }

  /** Issue or renew what the cluster needs (cheap when nothing is due: see ClusterTls). */
  async ensureTls(cluster: ClusterSpec): Promise<void> {
    if (this.tls.enabled(cluster)) await this.tls.ensure(cluster);
  }

  /** The TLS files of a node (certificate, key, CA bundle; owner postgres, 0600). */
  tlsFiles(cluster: ClusterSpec, node: NodeSpec): FileOp[] {
    if (!this.tls.enabled(cluster)) return [];
    const t = this.nodeTls(cluster, node);
    if (!t) throw transient(`cannot configure TLS on ${node.name}: no certificate issued yet`);
    const p = tlsNodePaths(cluster);
    return [
      { op: 'write', path: p.ca, content: t.ca },
      { op: 'write', path: p.cert, content: t.cert },
      { op: 'write', path: p.key, content: t.key },
    ];
  }

  /** An operation found the node serving a certificate pgop refuses (the probe only reports
   *  it: the refusal is the operation's error, so it shows in the events). The files are pgop's
   *  (config drift): rewrite them over SSH, whose host key is pinned (so this is the node, not
   *  whoever took its address), and reload postgres there. Nothing is trusted meanwhile: the
   *  operation fails, and the next one connects only if the certificate verifies. At most every
   *  30 s per node. Returns what to add to the error. */
  private async repairTls(cluster: ClusterSpec, node: NodeSpec, why: string): Promise<string> {
    const key = `${cluster.name}/${node.name}`;
    const last = this.tlsRepairs.get(key) ?? 0;
    if (!this.tls.enabled(cluster) || Date.now() - last < TLS_REPAIR_EVERY_MS) return '';
    this.tlsRepairs.set(key, Date.now());
    try {
      await this.ensureTls(cluster);
      const changed = await this.apply(cluster, node, this.tlsFiles(cluster, node), { dataDir: false });
      // Reloaded even when the files were right already: an earlier repair may have rewritten
      // them and then failed to reload, and postgres reads its certificate only at a reload.
      const reload = reloadScript(this.dataDir(cluster), binDir(cluster));
      await this.must(cluster, node, 'reload postgres', reload, { user: 'postgres', timeoutMs: 10_000 });
      if (changed.size === 0) {
        this.log.warn(
          { node: node.name, why },
          'tls: the node holds the certificate pgop issued, ' +
            'yet what answers at its address does not present it; postgres reloaded',
        );
        return (
          '; the node holds the certificate pgop issued (postgres reloaded): ' +
          'if this persists, something else answers at its address'
        );
      }
      this.log.warn(
        { node: node.name, why, rewritten: [...changed] },
        'tls: the node served a certificate pgop did not issue; ' +
          'its certificate files were rewritten over SSH and postgres reloaded',
      );
      return '; pgop rewrote its certificate files on the node over SSH and reloaded postgres';
    } catch (err) {
      this.log.warn(
        { node: node.name, error: messageOf(err) },
        'tls: cannot restore the certificate files of the node',
      );
      return '';
    }
  }
}

/** CHECKPOINT on an admin session: it may rightly take minutes (every dirty buffer written), so
 *  it gets its own bounds instead of the session's. */
export async function checkpoint(c: pg.Client): Promise<void> {
  await c.query(`SET statement_timeout = ${CHECKPOINT_MS}`);
  await c.query({ text: 'CHECKPOINT', query_timeout: CHECKPOINT_MS + CLIENT_GRACE_MS } as pg.QueryConfig);
}

/** The socket directory postgres listens on (the first of unix_socket_directories). */
/** Milliseconds since `t0` (performance.now()), for the driver's timing logs. */
export function ms(t0: number): number {
  return Math.round(performance.now() - t0);
}
