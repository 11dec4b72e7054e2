// TLS on the real lab, under the operator as a user runs it (apply, serve): every client backend
// and walsender on every node is TLS (the operator's probes, pgpool's backend sessions,
// replication), a client that does not use TLS is refused by postgres and by pgpool, and a node
// whose server certificate is replaced by one of another CA is refused by the operator with an
// event that says why (then pgop, which owns the file, restores it over SSH). Root only; runs
// inside the hub (scripts/test-integration.sh).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labSsl } from '../helpers/lab-tls.js';
import { createCa, issueServer } from '../../src/tls/ca.js';
import { explainTlsError } from '../../src/tls/client.js';
import { eventually as eventuallyPassing, withPg } from '../helpers/eventually.js';

const root = process.getuid?.() === 0 && !!process.env.PGOP_LAB_PREFIX && !!process.env.PGOP_LAB_STATE;
const repo = new URL('../../', import.meta.url).pathname;
const bin = join(repo, 'bin/pgop');

describe.skipIf(!root)('TLS everywhere on the lab (root)', { timeout: 400_000 }, () => {
  const state = process.env.PGOP_LAB_STATE!;
  const work = join(state, 'tls-test');
  const db = join(work, 'pgop.db');
  const su = randomBytes(15).toString('base64url');
  const repl = randomBytes(15).toString('base64url');
  const nodes = ['pg1', 'pg2', 'pg3'];
  const addr = (n: string) => `10.84.0.${11 + nodes.indexOf(n)}`;
  const pool = '10.84.0.10';
  let serve: ChildProcess | null = null;
  let serveLog = '';

  const parameters =
    'wal_level: replica, max_wal_senders: 5, max_replication_slots: 5, ' +
    'hot_standby: "on", wal_log_hints: "on"';
  const failureDetection =
    'probeIntervalMs: 500, missesBeforeFailover: 1, connectTimeoutMs: 3000, retryIntervalMs: 100';
  const spec = `apiVersion: pgop.dev/v1
kind: Cluster
metadata: {name: tl}
spec:
  provider: {type: lab, network: 10.84.0.0/24}
  postgres:
    superuserPassword: {file: ${work}/su}
    parameters: {${parameters}}
    hba: [{type: host, database: all, user: all, address: 10.84.0.0/24, method: scram-sha-256}]
  nodes:
${nodes.map((n) => `    - {name: ${n}, address: ${addr(n)}}`).join('\n')}
  replication: {mode: async, password: {file: ${work}/repl}}
  pgpool: {enabled: true, address: ${pool}, numInitChildren: 4}
  # one refused probe is a failed standby: the event that names the refusal comes at once
  failureDetection: {${failureDetection}}
`;

  function pgop(...args: string[]) {
    const r = spawnSync(process.execPath, [bin, '--db', db, ...args], { encoding: 'utf8', timeout: 300_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }
  const ssl = (name: string, address: string) => labSsl(state, 'tl', name, address);
  const withClient = <T>(cfg: pg.ClientConfig, fn: (c: pg.Client) => Promise<T>) =>
    withPg({ user: 'postgres', password: su, database: 'postgres', ...cfg }, fn);
  const node = (n: string) => ({ host: addr(n), port: 5432, ssl: ssl(n, addr(n)) });
  const eventually = <T>(check: () => Promise<T>, ms = 30_000) => eventuallyPassing(check, ms);
  function startServe() {
    serve = spawn(process.execPath, [bin, '--db', db, 'serve'], { stdio: ['ignore', 'pipe', 'pipe'] });
    serve.stdout!.on('data', (d: Buffer) => (serveLog += d.toString()));
    serve.stderr!.on('data', (d: Buffer) => (serveLog += d.toString()));
  }
  async function stopServe() {
    const s = serve;
    serve = null;
    if (!s || s.exitCode !== null) return;
    const gone = new Promise((r) => s.once('exit', r));
    s.kill('SIGTERM');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 15_000))]);
    if (s.exitCode === null) s.kill('SIGKILL');
  }

  beforeAll(() => {
    mkdirSync(work, { recursive: true, mode: 0o700 });
    writeFileSync(join(work, 'su'), `${su}\n`, { mode: 0o600 });
    writeFileSync(join(work, 'repl'), `${repl}\n`, { mode: 0o600 });
    writeFileSync(join(work, 'spec.yaml'), spec);
  });

  afterAll(async () => {
    await stopServe();
    pgop('delete', 'cluster', 'tl');
    rmSync(work, { recursive: true, force: true });
  });

  it(
    'brings the cluster up with a CA and a certificate per node and for pgpool (keys 0600 in a 0700 ' +
      'directory)',
    () => {
      expect(pgop('apply', '-f', join(work, 'spec.yaml')).code).toBe(0);
      const r = pgop('serve', '--until-converged', '--timeout', '240');
      expect(r.code, r.stderr.slice(-3000)).toBe(0);
      const dir = join(state, 'tl', 'tls');
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      for (const f of ['ca.key', 'node-pg1.key', 'pool.key'])
        expect(statSync(join(dir, f)).mode & 0o777).toBe(0o600);
      // on a node: pgop's files, owned by postgres, the key 0600
      const key = statSync(join(state, 'tl', 'pg2', 'u01', 'pg15', 'pgop-server.key'));
      expect(key.mode & 0o777).toBe(0o600);
      expect(readFileSync(join(state, 'tl', 'pg2', 'u01', 'pg15', 'pgop-server.crt'), 'utf8')).toBe(
        readFileSync(join(dir, 'node-pg2.crt'), 'utf8'),
      );
    },
  );

  it(
    'every client backend and walsender on every node is TLS: operator probes, pgpool backends, ' +
      'replication',
    async () => {
      startServe();
      // a client session through pgpool (verify-full against the CA: pgpool serves the pool
      // certificate), kept open while the nodes are looked at: pgpool holds a backend session on
      // every node for it
      const viaPool = new pg.Client({
        host: pool,
        port: 9999,
        user: 'postgres',
        password: su,
        database: 'postgres',
        ssl: ssl('pgpool', pool),
        connectionTimeoutMillis: 10_000,
      });
      viaPool.on('error', () => {});
      await eventually(() => viaPool.connect());
      try {
        await viaPool.query('SELECT 1');
        const sessions: Record<
          string,
          { kind: string; app: string; addr: string; ssl: boolean; version: string | null }[]
        > = {};
        for (const n of nodes) {
          sessions[n] = await eventually(async () => {
            const rows = await withClient(
              node(n),
              async (c) =>
                (
                  await c.query<{
                    kind: string;
                    app: string;
                    addr: string;
                    ssl: boolean;
                    version: string | null;
                  }>(
                    `SELECT a.backend_type AS kind, a.application_name AS app, ` +
                      `host(a.client_addr) AS addr, s.ssl, s.version
                   FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                  WHERE a.backend_type IN ('client backend', 'walsender') AND a.client_addr IS NOT NULL ` +
                      `AND a.pid <> pg_backend_pid()`,
                  )
                ).rows,
            );
            // wait until the operator probes it and pgpool holds a session there
            expect(rows.some((r) => r.app === 'pgop-probe')).toBe(true);
            expect(rows.some((r) => r.addr === pool)).toBe(true);
            return rows;
          });
        }
        console.log(JSON.stringify(sessions));
        for (const n of nodes) {
          for (const r of sessions[n]!) expect(r, `${n}: ${JSON.stringify(r)}`).toMatchObject({ ssl: true });
          for (const r of sessions[n]!) expect(['TLSv1.2', 'TLSv1.3']).toContain(r.version);
        }
        // replication: the primary's walsenders, one per standby, over TLS
        const primary = nodes.find((n) => sessions[n]!.some((r) => r.kind === 'walsender'))!;
        const senders = sessions[primary]!.filter((r) => r.kind === 'walsender');
        expect(senders.map((r) => r.app).sort()).toEqual(nodes.filter((n) => n !== primary).sort());
        // the walreceivers verify the primary: their conninfo says verify-full with the CA file
        for (const n of nodes.filter((x) => x !== primary)) {
          const ci = await withClient(
            node(n),
            async (c) =>
              (await c.query<{ ci: string }>("SELECT current_setting('primary_conninfo') AS ci")).rows[0]!.ci,
          );
          expect(ci).toMatch(/sslmode=verify-full sslrootcert='\/u01\/pg15\/pgop-ca\.crt'/);
        }
      } finally {
        await viaPool.end().catch(() => {});
      }
    },
  );

  it('a client without TLS is refused by postgres and by pgpool', async () => {
    await expect(
      withClient({ host: addr('pg1'), port: 5432, ssl: false }, (c) => c.query('SELECT 1')),
    ).rejects.toThrow(/no pg_hba\.conf entry .*no encryption/);
    await expect(
      withClient({ host: pool, port: 9999, ssl: false }, (c) => c.query('SELECT 1')),
    ).rejects.toThrow(/client authentication failed|pool_hba|SSL off|no encryption/i);
    // libpq too (sslmode=disable), from the hub
    const r = spawnSync(
      '/usr/lib/postgresql/15/bin/psql',
      [
        `host=${addr('pg2')} port=5432 user=postgres dbname=postgres sslmode=disable connect_timeout=5`,
        '-c',
        'SELECT 1',
      ],
      { env: { ...process.env, PGPASSWORD: su }, encoding: 'utf8' },
    );
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/no pg_hba\.conf entry .*no encryption/);
  });

  it(
    'a node serving a certificate of another CA is refused with an event that says so; pgop then ' +
      'restores its own',
    async () => {
      const items = JSON.parse(pgop('get', 'nodes', '-o', 'json').stdout).items as {
        name: string;
        role: string;
      }[];
      const victim = items
        .filter((x) => x.role === 'standby')
        .map((x) => x.name)
        .sort()
        .pop()!;
      expect(nodes).toContain(victim);
      const now = new Date();
      const other = await createCa('impostor', now, 30);
      const forged = await issueServer(other, { name: victim, ips: [addr(victim)] }, now, 30);
      const files = join(state, 'tl', victim, 'u01', 'pg15');
      const owner = statSync(join(files, 'pgop-server.key'));
      // pgop stays out of it until pgpool and clients have met the foreign certificate (it would
      // restart the node to restore its own, and pgpool would meet a refused port instead)
      await stopServe();
      // a session opened before, to reload the server once its files are swapped
      await withClient(node(victim), async (c) => {
        for (const [f, content] of [
          ['pgop-server.crt', forged.cert],
          ['pgop-server.key', forged.key],
        ] as const) {
          writeFileSync(join(files, f), content, { mode: 0o600 });
          chownSync(join(files, f), owner.uid, owner.gid);
        }
        await c.query('SELECT pg_reload_conf()');
      });
      // any verify-full client refuses it now, before sending anything
      const err = await eventually(async () => {
        const e = await withClient(node(victim), async () => null).catch((x: unknown) => x);
        expect(e).toBeTruthy();
        return e;
      }, 10_000);
      expect(explainTlsError(err, victim)).toMatch(/not issued by the cluster CA/);
      // pgpool verifies the backend's chain too (ssl_ca_cert): a session that needs a new backend
      // connection to the node fails (template1: nothing cached for it)
      const poolErr = await withClient(
        { host: pool, port: 9999, database: 'template1', ssl: ssl('pgpool', pool) },
        (c) => c.query('SELECT 1'),
      ).then(
        () => null,
        (e: Error) => e,
      );
      expect(poolErr, 'a pgpool session over a backend with a foreign certificate').toBeTruthy();
      const poolLog = readFileSync(join(state, 'tl', 'pool', 'u01', 'pgpool', 'log', 'pgpool.log'), 'utf8');
      console.log(
        `pgpool: ${poolErr?.message}; log: ${poolLog
          .split('\n')
          .filter((l) => /ssl|certificate/i.test(l))
          .slice(-3)
          .join(' | ')}`,
      );
      expect(poolLog).toMatch(/certificate verify failed/);
      // the operator: its probe session is made anew, refused; the event names the refusal
      startServe();
      const events = await eventually(async () => {
        const ev = pgop('get', 'events', '--cluster', 'tl', '-o', 'json').stdout;
        expect(ev).toMatch(
          new RegExp(
            `${victim}[^\\n]*not issued by the cluster CA|not issued by the cluster CA[^\\n]*${victim}`,
          ),
        );
        return ev;
      }, 60_000);
      const line = (JSON.parse(events).items as { node: string | null; rule: string; reason: string }[]).find(
        (e) => /not issued by the cluster CA/.test(e.reason),
      )!;
      console.log(`event: ${line.rule}: ${line.reason}`);
      expect(line.node).toBe(victim);
      // pgop owns the file: restored over SSH, and the node is a healthy standby again
      await eventually(async () => {
        expect(readFileSync(join(files, 'pgop-server.crt'), 'utf8')).toBe(
          readFileSync(join(state, 'tl', 'tls', `node-${victim}.crt`), 'utf8'),
        );
        await withClient(node(victim), (c) => c.query('SELECT 1'));
        const n = JSON.parse(pgop('get', 'nodes', '-o', 'json').stdout).items.find(
          (x: { name: string }) => x.name === victim,
        );
        expect(n).toMatchObject({ role: 'standby', state: 'standby' });
      }, 90_000);
      // restored by the repair itself, or by the config-drift pass (whose reload over SQL the
      // refused certificate fails) with the repair then reloading postgres over SSH
      expect(serveLog).toMatch(
        /served a certificate pgop did not issue|holds the certificate pgop issued, yet .* postgres reloaded/,
      );
    },
  );
});
