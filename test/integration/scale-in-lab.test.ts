// Scaling in on the real lab (issue 19), as a user drives it: 3 -> 4 -> 3 (a standby removed)
// and then 3 -> 2 (the primary removed), with a writer through pgpool all along the scale-in.
// Afterwards no namespace, process, data directory or replication slot of the removed node is
// left, pgpool no longer lists it, synchronous_standby_names does not name it, and every write
// pgpool acknowledged is on the primary. Root only; runs inside the hub
// (scripts/test-integration.sh).

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TABLE_DDL, Writer, missing } from '../helpers/writer.js';
import { labSsl } from '../helpers/lab-tls.js';
import { IN_LAB, PGOP_BIN, runPgop, writeSecretFiles } from '../helpers/lab-env.js';
import { labClusterYaml, labQuery } from '../helpers/lab-cluster.js';
import { STANDBY_REMOVAL_RULES } from '../helpers/scale-in.js';

describe.skipIf(!IN_LAB)('scale-in on the lab provider (root)', { timeout: 420_000 }, () => {
  const prefix = process.env.PGOP_LAB_PREFIX!;
  const state = process.env.PGOP_LAB_STATE!;
  const work = join(state, 'scale-in-test');
  const db = join(work, 'pgop.db');
  const secrets = {
    postgres: randomBytes(15).toString('base64url'),
    replicator: randomBytes(15).toString('base64url'),
  };
  const all = ['pg1', 'pg2', 'pg3', 'pg4'];
  const addr = (n: string) => `10.83.0.${11 + all.indexOf(n)}`;
  const POOL = '10.83.0.10';

  function spec(nodes: string[]) {
    return labClusterYaml({
      name: 'sc',
      network: '10.83.0.0/24',
      work,
      nodes,
      addr,
      parameters: [
        'wal_level: replica',
        'max_wal_senders: 8',
        'max_replication_slots: 8',
        'hot_standby: "on"',
        'wal_log_hints: "on"',
      ],
      pool: POOL,
    });
  }

  const pgop = (...args: string[]) => runPgop(db, args);
  /** `pgop serve --until-converged` as a child process, leaving this event loop free (writers). */
  function converge(timeoutS = 240): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [PGOP_BIN, '--db', db, 'serve', '--until-converged', '--timeout', String(timeoutS)],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let err = '';
      const keep = (d: Buffer) => (err = (err + d.toString()).slice(-4000));
      child.stdout.on('data', keep);
      child.stderr.on('data', keep);
      child.on('error', reject);
      child.on('exit', (code) =>
        code === 0
          ? resolve()
          : reject(
              new Error(
                `serve exited ${code}: ${err}\n` +
                  `${pgop('get', 'events', '--cluster', 'sc').stdout.split('\n').slice(-25).join('\n')}`,
              ),
            ),
      );
    });
  }
  const apply = (nodes: string[]) => {
    writeFileSync(join(work, 'spec.yaml'), spec(nodes));
    const r = pgop('apply', '-f', join(work, 'spec.yaml'));
    expect(r.code, r.stderr).toBe(0);
  };
  /** TLS, verify-full against the cluster's CA (the lab's hba takes network clients over TLS only). */
  const ssl = (host: string) =>
    labSsl(state, 'sc', host === POOL ? 'pgpool' : all.find((n) => addr(n) === host)!, host);
  const query = <T extends pg.QueryResultRow>(
    host: string,
    sql: string,
    params: unknown[] = [],
    port = 5432,
  ) =>
    labQuery<T>(
      { host, port, user: 'postgres', password: secrets.postgres, database: 'postgres', ssl: ssl(host) },
      sql,
      params,
    );
  const nodesJson = () =>
    JSON.parse(pgop('get', 'nodes', '-o', 'json').stdout).items as {
      name: string;
      role: string;
      state: string;
    }[];
  const primary = () => nodesJson().find((n) => n.role === 'primary')!.name;
  const ns = (n: string) => `${prefix}-sc-${n}`;
  const netnsPids = (n: string) =>
    spawnSync('ip', ['netns', 'pids', ns(n)], { encoding: 'utf8' })
      .stdout.split(/\s+/)
      .filter(Boolean)
      .map(Number);
  /** The process still runs (a zombie waiting for its parent to reap it runs nothing: dead). */
  const alive = (pid: number) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
    } catch {
      return false;
    }
  };
  const describePid = (pid: number) => {
    try {
      return `${pid} ${readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ').slice(1, 4).join(' ')}`;
    } catch {
      return `${pid} gone`;
    }
  };

  /** Scale in to `keep` while a writer writes through pgpool; then check nothing of `gone` is left. */
  async function scaleIn(keep: string[], gone: string, run: string) {
    const pids = netnsPids(gone);
    // sshd, postmaster and its children
    expect(pids.length, `${gone} runs processes before`).toBeGreaterThan(3);
    const writer = new Writer({
      name: 'pool',
      run,
      connect: {
        host: POOL,
        port: 9999,
        user: 'postgres',
        password: secrets.postgres,
        database: 'postgres',
        ssl: ssl(POOL),
      },
      intervalMs: 20,
    }).start();
    await writer.firstAck();
    apply(keep);
    try {
      await converge();
    } finally {
      await writer.stop();
    }
    const p = primary();
    expect(keep).toContain(p);
    expect(
      nodesJson()
        .map((n) => n.name)
        .sort(),
    ).toEqual([...keep].sort());

    // no namespace, process or data directory of it
    const names = existsSync('/run/netns') ? readdirSync('/run/netns') : [];
    expect(names).not.toContain(ns(gone));
    expect(pids.filter(alive).map(describePid), `processes of ${gone} still alive`).toEqual([]);
    expect(existsSync(join(state, 'sc', gone)), `${gone}'s host directory`).toBe(false);
    // no slot for it on the primary, not in the sync set, not in pgpool
    const slots = (
      await query<{ slot_name: string }>(addr(p), 'SELECT slot_name FROM pg_replication_slots')
    ).map((r) => r.slot_name);
    expect(slots).not.toContain(`pgop_${gone}`);
    expect(slots.sort()).toEqual(
      keep
        .filter((n) => n !== p)
        .map((n) => `pgop_${n}`)
        .sort(),
    );
    const ssn = (
      await query<{ synchronous_standby_names: string }>(addr(p), 'SHOW synchronous_standby_names')
    )[0]!.synchronous_standby_names;
    expect(ssn).not.toContain(gone);
    expect(ssn).toMatch(/^ANY 1 \(/); // back to sync with the standbys left
    const poolNodes = await query<{ hostname: string }>(POOL, 'SHOW POOL_NODES', [], 9999);
    expect(poolNodes.map((r) => r.hostname).sort()).toEqual(keep.map(addr).sort());
    // the remaining standbys stream from the primary
    const repl = (
      await query<{ application_name: string; state: string }>(
        addr(p),
        'SELECT application_name, state FROM pg_stat_replication',
      )
    ).map((r) => `${r.application_name}:${r.state}`);
    expect(repl.sort()).toEqual(
      keep
        .filter((n) => n !== p)
        .map((n) => `${n}:streaming`)
        .sort(),
    );

    // no acknowledged write lost
    expect(writer.acks.length).toBeGreaterThan(10);
    const ids = (
      await query<{ id: string }>(addr(p), 'SELECT id FROM chaos_writes WHERE run = $1 AND writer = $2', [
        run,
        'pool',
      ])
    ).map((r) => Number(r.id));
    expect(missing(writer.acks, ids)).toEqual([]);
    console.log(
      `${run}: ${writer.acks.length} writes acknowledged through pgpool during the scale-in, ` +
        `all on primary ${p}; ${writer.failures.length} attempts failed (pgpool restarts, the handover)`,
    );

    // the story
    const events = JSON.parse(pgop('get', 'events', '--cluster', 'sc', '-o', 'json').stdout).items as {
      node: string | null;
      rule: string;
      reason: string;
    }[];
    const story = events.filter((e) => e.node === gone).map((e) => e.rule);
    expect(story).toEqual(expect.arrayContaining(['scale.fence', 'scale.remove-machine', 'scale.forget']));
    expect(story.indexOf('scale.fence')).toBeLessThan(story.indexOf('scale.remove-machine'));
    expect(story.indexOf('scale.remove-machine')).toBeLessThan(story.lastIndexOf('scale.forget'));
    expect(events.map((e) => e.rule)).toContain('scale.pool-remove');
    const told = events.map((e) => `${e.node ?? '-'} ${e.rule}: ${e.reason}`).join('\n');
    expect(story, `the events:\n${told}`).not.toContain('node.machine-vanished');
    return { writer, events };
  }

  beforeAll(() => {
    writeSecretFiles(work, secrets);
  });

  afterAll(() => {
    // Tear down even after a failure.
    pgop('delete', 'cluster', 'sc');
    rmSync(work, { recursive: true, force: true });
  });

  it(
    'brings up 3 nodes, then scales out to 4: ' + 'pg4 streams through its slot and is a sync candidate',
    async () => {
      apply(['pg1', 'pg2', 'pg3']);
      await converge();
      expect(primary()).toBe('pg1');
      await query(POOL, TABLE_DDL, [], 9999);
      apply(all);
      await converge();
      expect(readFileSync(join(state, 'sc', 'pg4', 'address'), 'utf8').trim()).toBe(addr('pg4'));
      const repl = (
        await query<{ application_name: string }>(
          addr('pg1'),
          'SELECT application_name FROM pg_stat_replication',
        )
      ).map((r) => r.application_name);
      expect(repl).toContain('pg4');
      const slots = await query<{ slot_name: string; active: boolean }>(
        addr('pg1'),
        'SELECT slot_name, active FROM pg_replication_slots',
      );
      expect(slots).toContainEqual({ slot_name: 'pgop_pg4', active: true });
      expect(
        (
          await query<{ synchronous_standby_names: string }>(addr('pg1'), 'SHOW synchronous_standby_names')
        )[0]!.synchronous_standby_names,
      ).toContain('pg4');
    },
  );

  it('4 -> 3: removing a standby leaves nothing of it, and no acknowledged write is lost', async () => {
    const { events } = await scaleIn(['pg1', 'pg2', 'pg3'], 'pg4', 'scale-standby');
    const story = events.filter((e) => e.node === 'pg4' || e.reason.startsWith('pg4 ')).map((e) => e.rule);
    expect(story.slice(story.indexOf('scale.sync-remove'))).toEqual(STANDBY_REMOVAL_RULES);
    expect(primary()).toBe('pg1');
  });

  it('3 -> 2: removing the primary hands over first, then leaves nothing of it', async () => {
    const { events } = await scaleIn(['pg2', 'pg3'], 'pg1', 'scale-primary');
    const rules = events.map((e) => e.rule);
    expect(rules).toContain('scale.handover');
    expect(rules.lastIndexOf('scale.handover')).toBeLessThan(rules.lastIndexOf('scale.fence'));
  });
});
