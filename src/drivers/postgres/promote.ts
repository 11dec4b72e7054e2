// Promotion of a standby: pg_promote on the probe session (no new connection on the failover's
// critical path), pg_ctl promote when that fails, and the standby conf removed afterwards.

import type pg from 'pg';
import type { ClusterSpec, NodeSpec } from '../../spec/types.js';
import { AFTER_FAILOVER_MS } from '../types.js';
import { messageOf, transient } from '../../errors.js';
import { sleep } from '../remote/run.js';
import { CONF_DIR, STANDBY_CONF_FILE, binDir } from './config.js';
import { ms, type NodeAccess } from './node-access.js';
import type { Prober } from './probe.js';
import { promoteScript } from './scripts.js';

export class Promotion {
  constructor(
    private readonly a: NodeAccess,
    private readonly prober: Prober,
  ) {}

  async promote(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const t0 = performance.now();
    const phases: Record<string, number> = {};
    let done = false;
    try {
      done = await this.onProbeSession(cluster, node, (c) => this.pgPromote(c, t0, phases));
    } catch (err) {
      this.a.log.warn({ node: node.name, error: messageOf(err) }, 'pg_promote failed: trying pg_ctl promote');
    }
    if (done) this.dropStandbyConfLater(cluster, node);
    else await this.promoteWithPgCtl(cluster, node);
    this.a.log.info({ node: node.name, ms: ms(t0), ...phases }, 'promoted');
  }

  /** On the probe session when it is open (no new connection + SCRAM on the failover's
   *  critical path), else on a fresh one; the steps are idempotent, so a retry is safe. */
  private async onProbeSession<T>(
    cluster: ClusterSpec,
    node: NodeSpec,
    fn: (c: pg.Client) => Promise<T>,
  ): Promise<T> {
    let c: pg.Client | null = null;
    try {
      c = await this.prober.probeClient(cluster, node);
    } catch {
      this.prober.dropProbe(cluster, node);
    }
    if (c) {
      try {
        return await fn(c);
      } catch (err) {
        this.prober.dropProbe(cluster, node);
        this.a.log.warn(
          { node: node.name, error: messageOf(err) },
          'promote on the probe session failed: again on a fresh session',
        );
      }
    }
    return this.a.withAdmin(cluster, node, fn);
  }

  /** pg_promote on a session; false when postgres refused or did not finish within 10 s. */
  private async pgPromote(c: pg.Client, t0: number, phases: Record<string, number>): Promise<boolean> {
    phases.connectMs = ms(t0);
    const inRecovery = async () =>
      (await c.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec')).rows[0]?.rec;
    if (!(await inRecovery())) return true;
    // pg_promote(wait) polls every 100 ms; polling ourselves every 5 ms saves most of it.
    const p = await c.query<{ ok: boolean }>('SELECT pg_promote(false) AS ok');
    if (p.rows[0]?.ok !== true) return false;
    const deadline = Date.now() + 10_000;
    // PostgreSQL 15's startup process can take the request and then sleep out the rest of
    // wal_retrieve_retry_interval (5 s) in its wait for WAL before it ends recovery. Asking
    // again wakes it.
    let askAgainAt = Date.now() + 40;
    while (await inRecovery()) {
      if (Date.now() > deadline) return false;
      if (Date.now() >= askAgainAt) {
        // fails once recovery is over ("recovery is not in progress"): the loop ends then
        await c.query('SELECT pg_promote(false)').catch(() => undefined);
        askAgainAt = Date.now() + 40;
      }
      await sleep(5);
    }
    phases.writableMs = ms(t0);
    return true;
  }

  private dropStandbyConf(cluster: ClusterSpec, node: NodeSpec): Promise<Set<string>> {
    const path = `${this.a.dataDir(cluster)}/${CONF_DIR}/${STANDBY_CONF_FILE}`;
    return this.a.apply(cluster, node, [{ op: 'delete', path }], { dataDir: false });
  }

  /** The standby conf (primary_conninfo of the old primary) is removed once the failover is
   *  over: on a primary it is inert (read only in recovery), and the SSH round trips' processes
   *  would take CPU from the promotion and pgpool's restart on a busy host. A later rejoin as a
   *  standby rewrites it anyway. */
  private dropStandbyConfLater(cluster: ClusterSpec, node: NodeSpec): void {
    setTimeout(() => {
      // unless it is a standby again by then (a quick switchover back): its conf is current
      void this.a
        .withAdmin(cluster, node, (a) => a.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec'))
        .then((rec) => (rec.rows[0]?.rec === false ? this.dropStandbyConf(cluster, node) : null))
        .then((changed) =>
          changed?.size
            ? this.a.withAdmin(cluster, node, (a) => a.query('SELECT pg_reload_conf()'))
            : undefined,
        )
        .catch((err) =>
          this.a.log.warn(
            { node: node.name, error: messageOf(err) },
            'cannot remove the standby configuration of the promoted node (inert on a primary)',
          ),
        );
    }, AFTER_FAILOVER_MS).unref();
  }

  /** The slow way, when pg_promote failed: pg_ctl promote, then wait until writable (30 s). */
  private async promoteWithPgCtl(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const st = await this.a.nodeState(cluster, node);
    if (!st.running) throw transient(`cannot promote ${node.name}: postgres is not running`);
    if (st.standbySignal) {
      const script = promoteScript(this.a.dataDir(cluster), binDir(cluster));
      await this.a.must(cluster, node, 'promote', script, { user: 'postgres', timeoutMs: 60_000 });
    }
    await this.dropStandbyConf(cluster, node);
    await this.a.withAdmin(cluster, node, async (c) => {
      const deadline = Date.now() + 30_000;
      while ((await c.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec')).rows[0]?.rec) {
        if (Date.now() > deadline)
          throw transient(`cannot promote ${node.name}: still in recovery after 30 s`);
        await sleep(20);
      }
      await c.query('SELECT pg_reload_conf()');
    });
  }
}
