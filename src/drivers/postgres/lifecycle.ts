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
} from './config.js';
import { checkpoint, ms, socketDir, type NodeAccess } from './node-access.js';
import type { Prober } from './probe.js';
import { nodeCipherPath, nodeWorkDir, renderNodeCipher } from '../backup/config.js';
import { resolveSecret } from '../../spec/secrets.js';
import { initdbScript, installScript, startScript, startupErrorsScript, stopScript } from './scripts.js';
import {
  ensureRolesAndDatabases,
  ensureSchemasAndGrants,
  ensureSlots,
  ensureSuperuserPassword,
} from './sql-objects.js';

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
    const initdb = initdbScript(d, binDir(cluster));
    await this.a.must(cluster, node, 'initdb', initdb, {
      user: 'postgres',
      kind: 'terminal',
      timeoutMs: 300_000,
    });
    this.a.log.info({ node: node.name, ms: ms(t0) }, 'initdb done');
    return st.running;
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
