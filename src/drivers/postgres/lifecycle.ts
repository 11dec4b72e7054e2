// A node's postgres from nothing to running: install (packages, directories), the files pgop
// manages in and beside the data directory, initdb, start/stop, configuration reloads, and the
// primary's own setup. Every step is idempotent: a pass that crashed half-way runs it again.

import type pg from 'pg';
import type { ClusterSpec, NodeSpec } from '../../spec/types.js';
import { PgopError, messageOf, terminal, transient } from '../../errors.js';
import { assertSafePath } from '../ssh/node-fs.js';
import type { FileOp } from '../remote/files.js';
import { failureDetail, sleep, tail } from '../remote/run.js';
import {
  CONFHASH_FILE,
  CONF_DIR,
  CONF_FILE,
  EMPTY_AUTO_CONF,
  SOCKET_DIR,
  STANDBY_CONF_FILE,
  SYNC_CONF_FILE,
  archiveFileOf,
  archiveScriptPath,
  binDir,
  desiredConfigHash,
  nodeOptionString,
  pgPort,
  renderArchiveScript,
  renderConf,
  renderHba,
  renderReplicationPassfile,
  renderStandbyConf,
  renderSyncConf,
  replicationPassfilePath,
  scriptDir,
  tlsNodePaths,
} from './config.js';
import { checkpoint, ms, socketDir, type NodeAccess } from './node-access.js';
import type { Prober } from './probe.js';
import {
  nodeCipherPath,
  nodeWorkDir,
  renderNodeCipher,
  renderRestoreConf,
  restoreArgs,
  restoreConfPath,
} from '../backup/config.js';
import { resolveSecret } from '../../spec/secrets.js';
import {
  initdbScript,
  installScript,
  psqlScript,
  startScript,
  startupErrorsScript,
  stopScript,
} from './scripts.js';
import {
  ensureRolesAndDatabases,
  ensureSchemasAndGrants,
  ensureSlots,
  ensureSuperuserPassword,
} from './sql-objects.js';

/** How long a restored node may replay the archive before its job gives up (and is retried) */
const RECOVERY_WAIT_MS = 3_600_000;

/** As postgres. $1 the data directory (made, empty, 0700: pgbackrest restores into an existing
 *  one), then pgbackrest's arguments. */
const RESTORE_SH = `set -eu
umask 077
mkdir -p "$1"
shift
exec pgbackrest "$@"
`;

export class Lifecycle {
  constructor(
    private readonly a: NodeAccess,
    private readonly prober: Prober,
  ) {}

  desiredConfigHash(cluster: ClusterSpec, node: NodeSpec): string {
    return desiredConfigHash(cluster, node, this.a.nodeTls(cluster, node));
  }

  // ---------------------------------------------------------------------- install

  async ensureInstalled(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const t0 = performance.now();
    const p = cluster.postgres;
    const script = installScript({
      binDir: binDir(cluster),
      version: p.version,
      dataDir: this.a.dataDir(cluster),
      archiveDir: assertSafePath('postgres.archiveDir', p.archiveDir),
      backupDir: assertSafePath('postgres.backupDir', p.backupDir),
      logDir: this.a.logDir(cluster),
      family: cluster.provider.type === 'libvirt' ? cluster.provider.osFamily : 'debian',
      scriptDir: scriptDir(cluster),
      socketDir: SOCKET_DIR,
      waitForCloudInit: cluster.provider.type === 'libvirt',
      pgbackrestWorkDir: cluster.backup ? nodeWorkDir(cluster) : null,
    });
    const res = await this.a.run(cluster, node, script, { user: 'root', timeoutMs: 15 * 60_000 });
    if (res.code !== 0) {
      // exit 3: a directory the install refuses to hand to postgres, or no binaries: retrying
      // cannot help; anything else (a package download) may
      const kind = res.code === 3 ? 'terminal' : 'transient';
      throw new PgopError(kind, `cannot install postgres on ${node.name}: ${failureDetail(res)}`);
    }
    if (p.archiveScript) await this.a.apply(cluster, node, [this.scriptFile(cluster)], { dataDir: false });
    this.a.log.info({ node: node.name, ms: ms(t0) }, 'postgres installed');
  }

  // ---------------------------------------------------------------------- managed files

  /** archive.sh: root's in a root-only directory (/opt/pgop/scripts), so that postgres cannot
   *  change what it runs; on a lab node the directory is the seed's /opt/postgres/scripts,
   *  postgres's, and the script is postgres's too (postgres runs it as itself). */
  private scriptFile(cluster: ClusterSpec): FileOp {
    assertSafePath('postgres.archiveDir', cluster.postgres.archiveDir);
    this.a.logDir(cluster);
    const owner = cluster.provider.type === 'lab' ? 'postgres:postgres' : 'root:root';
    return {
      op: 'write',
      path: archiveScriptPath(cluster),
      content: renderArchiveScript(cluster),
      mode: 0o755,
      owner,
    };
  }

  /** TLS files, conf.d/pgop.conf, pg_hba.conf, archive script. */
  private managedFiles(cluster: ClusterSpec, node: NodeSpec): FileOp[] {
    const d = this.a.dataDir(cluster);
    const files: FileOp[] = [
      ...this.a.tlsFiles(cluster, node),
      { op: 'write', path: `${d}/${CONF_DIR}/${CONF_FILE}`, content: renderConf(cluster, node) },
      { op: 'write', path: `${d}/pg_hba.conf`, content: renderHba(cluster) },
    ];
    if (cluster.backup) {
      const f = archiveFileOf(cluster)!;
      files.push({ op: 'write', path: f.path, content: f.content });
      const enc = cluster.backup.encryption;
      files.push(
        enc
          ? {
              op: 'write',
              path: nodeCipherPath(cluster),
              content: renderNodeCipher(resolveSecret(enc.passphrase, 'the backup passphrase')),
            }
          : { op: 'delete', path: nodeCipherPath(cluster) },
      );
    } else if (cluster.postgres.archiveScript) files.push(this.scriptFile(cluster));
    return files;
  }

  /** The record of what configuration the node runs (the probe compares it to the files). */
  confHashFile(cluster: ClusterSpec, node: NodeSpec): FileOp {
    const hash = desiredConfigHash(cluster, node, this.a.nodeTls(cluster, node));
    return { op: 'write', path: `${this.a.dataDir(cluster)}/${CONFHASH_FILE}`, content: `${hash}\n` };
  }

  /** Managed files (+ extra), include_dir; true when a setting file changed (reload needed). */
  async writeManagedFiles(
    cluster: ClusterSpec,
    node: NodeSpec,
    extra: FileOp[] = [],
    clean = false,
  ): Promise<boolean> {
    await this.a.ensureTls(cluster);
    const files = [...this.managedFiles(cluster, node), ...extra];
    const changed = await this.a.apply(cluster, node, files, { dataDir: true, clean });
    changed.delete(`${this.a.dataDir(cluster)}/${CONFHASH_FILE}`);
    changed.delete(replicationPassfilePath(cluster));
    return changed.size > 0;
  }

  private async writeConfHash(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    await this.a.apply(cluster, node, [this.confHashFile(cluster, node)], { dataDir: false });
  }

  /** Standby files (after a clone or rewind, or for a repoint): standby conf + signal + passfile,
   *  and after a copy (`fresh`) an empty sync conf and auto.conf. */
  standbyFiles(cluster: ClusterSpec, node: NodeSpec, primary: NodeSpec, fresh: boolean): FileOp[] {
    const d = this.a.dataDir(cluster);
    const files: FileOp[] = [];
    if (fresh) {
      files.push(
        { op: 'write', path: `${d}/postgresql.auto.conf`, content: EMPTY_AUTO_CONF },
        { op: 'write', path: `${d}/${CONF_DIR}/${SYNC_CONF_FILE}`, content: renderSyncConf([], 1) },
      );
    }
    const passfile = renderReplicationPassfile(cluster, this.a.replicationPassword(cluster));
    files.push(
      { op: 'write', path: replicationPassfilePath(cluster), content: passfile },
      {
        op: 'write',
        path: `${d}/${CONF_DIR}/${STANDBY_CONF_FILE}`,
        content: renderStandbyConf(cluster, node, primary),
      },
      { op: 'write', path: `${d}/standby.signal`, content: '' },
    );
    return files;
  }

  // ---------------------------------------------------------------------- start / stop

  async start(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const t0 = performance.now();
    const script = startScript({
      dataDir: this.a.dataDir(cluster),
      binDir: binDir(cluster),
      options: nodeOptionString(cluster, node),
      logFile: `${this.a.logDir(cluster)}/startup.log`,
      socketDir: socketDir(cluster),
      port: pgPort(cluster),
    });
    const res = await this.a.run(cluster, node, script, { user: 'postgres', timeoutMs: 90_000 });
    if (res.code !== 0) {
      // pg_ctl -w gives up after 60 s while a standby may still be catching up: running is fine.
      const st = await this.a.nodeState(cluster, node);
      if (!st.running) {
        const log = await this.a.run(cluster, node, startupErrorsScript(this.a.logDir(cluster)), {
          user: 'postgres',
        });
        throw transient(
          `cannot start postgres on ${node.name}: ${failureDetail(res)} ${tail(log.stdout)}`.trim(),
        );
      }
    }
    this.a.log.info({ node: node.name, ms: ms(t0) }, 'postgres started');
  }

  async stop(cluster: ClusterSpec, node: NodeSpec, mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    const t0 = performance.now();
    this.prober.dropProbe(cluster, node);
    const script = stopScript(
      this.a.dataDir(cluster),
      binDir(cluster),
      mode,
      socketDir(cluster),
      pgPort(cluster),
    );
    await this.a.must(cluster, node, 'stop postgres', script, { user: 'postgres', timeoutMs: 120_000 });
    this.a.log.info({ node: node.name, ms: ms(t0), mode }, 'postgres stopped');
  }

  // ---------------------------------------------------------------------- configuration

  /** pg_reload_conf(), wait until this session re-read the files, then report file errors. */
  async reloadAndCheck(node: NodeSpec, c: pg.Client): Promise<{ pendingRestart: boolean }> {
    const before = await c.query<{ t: Date }>('SELECT pg_conf_load_time() AS t');
    await c.query('SELECT pg_reload_conf()');
    const deadline = Date.now() + 5000;
    for (;;) {
      await sleep(20);
      const r = await c.query<{ t: Date }>('SELECT pg_conf_load_time() AS t');
      if (r.rows[0]!.t.getTime() !== before.rows[0]!.t.getTime()) break;
      if (Date.now() > deadline) break; // nothing re-read (no change seen by this backend): check anyway
    }
    // Errors in the files pgop wrote are terminal; "needs a restart" is not an error here.
    const errs = await c.query<{ where: string; error: string }>(
      `SELECT coalesce(sourcefile, '?') || ':' || coalesce(sourceline::text, '?') || ' ' || coalesce(name, '')
                AS where, error
         FROM pg_file_settings
        WHERE error IS NOT NULL AND error <> 'setting could not be applied'
          AND error NOT LIKE '%without restarting the server%'
       UNION ALL
       SELECT 'pg_hba.conf:' || line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL`,
    );
    if (errs.rows.length > 0) {
      const why = errs.rows.map((e) => `${e.where}: ${e.error}`).join('; ');
      throw terminal(`cannot configure postgres on ${node.name}: ${why}`);
    }
    const pending = await c.query<{ p: boolean | null }>(
      `SELECT (SELECT bool_or(pending_restart) FROM pg_settings)
           OR EXISTS (SELECT 1 FROM pg_file_settings
                       WHERE error LIKE '%without restarting the server%') AS p`,
    );
    return { pendingRestart: pending.rows[0]?.p === true };
  }

  /** reloadAndCheck on a fresh superuser session. */
  reload(cluster: ClusterSpec, node: NodeSpec): Promise<{ pendingRestart: boolean }> {
    return this.a.withAdmin(cluster, node, (c) => this.reloadAndCheck(node, c));
  }

  async ensureConfigured(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const t0 = performance.now();
    await this.a.ensureTls(cluster);
    const st = await this.a.nodeState(cluster, node);
    if (!st.initialized)
      throw transient(`cannot configure ${node.name}: its data directory is not initialised yet`);
    const changed = await this.writeManagedFiles(cluster, node);
    if (st.running) {
      const { pendingRestart } = await this.reload(cluster, node);
      if (pendingRestart) {
        this.a.log.info({ node: node.name }, 'restarting postgres: a changed setting needs it');
        await this.stop(cluster, node, 'fast');
        await this.start(cluster, node);
      }
    } else {
      // The way back when nobody else can serve: start it in place, in whatever role its data
      // directory says (standby.signal or not). start() clears a dead postmaster's stale pid file.
      this.a.log.info(
        { node: node.name, standby: st.standbySignal },
        'postgres is down: starting it in place',
      );
      await this.start(cluster, node);
    }
    await this.writeConfHash(cluster, node);
    this.a.log.info({ node: node.name, changed, ms: ms(t0) }, 'configuration ensured');
  }

  // ---------------------------------------------------------------------- primary

  async ensurePrimary(cluster: ClusterSpec, node: NodeSpec, standbys: string[]): Promise<void> {
    const t0 = performance.now();
    await this.a.ensureTls(cluster);
    const d = this.a.dataDir(cluster);
    const running = await this.initialisedAsPrimary(cluster, node, t0);
    const extra: FileOp[] = [
      { op: 'delete', path: `${d}/${CONF_DIR}/${STANDBY_CONF_FILE}` },
      { op: 'create', path: `${d}/${CONF_DIR}/${SYNC_CONF_FILE}`, content: renderSyncConf([], 1) },
    ];
    if (!running) extra.push(this.confHashFile(cluster, node));
    const changed = await this.writeManagedFiles(cluster, node, extra);
    if (!running) await this.start(cluster, node);
    if (cluster.bootstrap) await this.finishRestore(cluster, node);
    await ensureSuperuserPassword(this.a, cluster, node);
    if (running && changed) await this.reload(cluster, node);
    await this.a.withAdmin(cluster, node, async (c) => {
      const rec = await c.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
      if (rec.rows[0]?.rec)
        throw terminal(`cannot make ${node.name} a primary: it runs in recovery; promote it instead`);
      await ensureRolesAndDatabases(c, cluster, node, this.a.replicationPassword(cluster), this.a.log);
    });
    await ensureSchemasAndGrants(this.a, cluster, node);
    await ensureSlots(this.a, cluster, node, standbys);
    if (running) await this.writeConfHash(cluster, node);
    this.a.log.info({ node: node.name, ms: ms(t0) }, 'primary ensured');
  }

  /** initdb when the data directory is empty; refuses a standby or a directory that holds
   *  something else. Returns whether postgres runs. */
  private async initialisedAsPrimary(cluster: ClusterSpec, node: NodeSpec, t0: number): Promise<boolean> {
    const d = this.a.dataDir(cluster);
    const st = await this.a.nodeState(cluster, node);
    if (st.initialized) {
      if (st.standbySignal)
        throw terminal(
          `cannot make ${node.name} a primary: it is a standby (standby.signal present); promote it instead`,
        );
      return st.running;
    }
    if (st.nonEmpty) {
      const partial = st.partial ? ' (an interrupted clone)' : '';
      const what = `data directory ${d} is not empty and holds no database cluster${partial}`;
      throw terminal(`cannot initialise ${node.name}: ${what}`);
    }
    if (cluster.bootstrap) {
      await this.restore(cluster, node);
      this.a.log.info({ node: node.name, ms: ms(t0) }, 'restore done');
      return st.running;
    }
    const initdb = initdbScript(d, binDir(cluster));
    await this.a.must(cluster, node, 'initdb', initdb, {
      user: 'postgres',
      kind: 'terminal',
      timeoutMs: 300_000,
    });
    this.a.log.info({ node: node.name, ms: ms(t0) }, 'initdb done');
    return st.running;
  }

  /** spec.bootstrap.restore: the data directory from a backup of another stanza (pgbackrest
   *  restore, as postgres, through the cluster's own repository server), with recovery settings
   *  up to the target; postgres replays the archive when it starts. */
  private async restore(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const r = cluster.bootstrap!.restore;
    const pass = r.encryption ? resolveSecret(r.encryption.passphrase, 'the source passphrase') : undefined;
    const conf = restoreConfPath(cluster);
    await this.a.apply(
      cluster,
      node,
      [
        // the node's certificate reaches the repository's server (the other files come later)
        ...this.a.tlsFiles(cluster, node),
        {
          op: 'write',
          path: conf,
          content: renderRestoreConf(cluster, tlsNodePaths(cluster), pass),
          mode: 0o600,
        },
      ],
      { dataDir: false },
    );
    const script = {
      text: RESTORE_SH,
      args: [this.a.dataDir(cluster), `--config=${conf}`, ...restoreArgs(cluster)],
    };
    await this.a.must(cluster, node, 'restore the backup', script, {
      user: 'postgres',
      timeoutMs: 6 * 3600_000,
    });
  }

  /** A restored node replays the archive up to its target, then promotes itself: waited for;
   *  then the recovery settings go (postgresql.auto.conf empty, the restore's configuration
   *  removed). A node that is already past it has nothing to wait for. */
  private async finishRestore(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const d = this.a.dataDir(cluster);
    const conf = restoreConfPath(cluster);
    const left = await this.a.run(
      cluster,
      node,
      { text: 'test -e "$1" || test -e "$2"', args: [`${d}/recovery.signal`, conf] },
      { user: 'postgres' },
    );
    if (left.code !== 0) return;
    const t0 = performance.now();
    // over the socket as postgres: the restored roles still have the source's passwords
    const psql = psqlScript(binDir(cluster), socketDir(cluster), pgPort(cluster));
    for (;;) {
      const res = await this.a.run(cluster, node, psql, {
        user: 'postgres',
        input: '\\pset tuples_only on\n\\pset format unaligned\nSELECT pg_is_in_recovery();\n',
      });
      if (res.code === 0 && res.stdout.trim() === 'f') break;
      if (ms(t0) > RECOVERY_WAIT_MS)
        throw transient(`${node.name} still replays the archive after ${ms(t0)} ms`);
      await sleep(500);
    }
    const files: FileOp[] = [
      { op: 'write', path: `${d}/postgresql.auto.conf`, content: EMPTY_AUTO_CONF },
      { op: 'delete', path: conf },
    ];
    await this.a.apply(cluster, node, files, { dataDir: false });
    await this.reload(cluster, node);
    this.a.log.info({ node: node.name, ms: ms(t0) }, 'restored node promoted itself');
  }

  // ---------------------------------------------------------------------- demote

  async demote(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const t0 = performance.now();
    const st = await this.a.nodeState(cluster, node);
    if (!st.running) return;
    try {
      await this.a.withAdmin(cluster, node, checkpoint);
    } catch (err) {
      this.a.log.warn({ node: node.name, error: messageOf(err) }, 'checkpoint before demote failed');
    }
    await this.stop(cluster, node, 'fast');
    this.a.log.info({ node: node.name, ms: ms(t0) }, 'demoted (stopped)');
  }
}
