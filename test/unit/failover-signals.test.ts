// The parts that make failover event-driven: wake-ups of the loop, pgpool's failover report
// (rendered script + the operator's HTTP endpoint and its verdicts), all without a lab.

import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import { Store } from '../../src/store/store.js';
import { Wakeups, silentLog } from '../../src/reconcile/reconciler.js';
import { ReportServer } from '../../src/server/reports.js';
import { poolPaths, renderPgpoolConf, renderReportScript, desiredPoolConfigHash } from '../../src/drivers/pgpool/config.js';
import { simSpec } from '../helpers/sim-spec.js';
import type { ClusterObservation } from '../../src/observe/types.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('Wakeups', () => {
  it('cuts a sleep short when a cluster is woken, and hands out each wake-up once', async () => {
    const w = new Wakeups();
    // A sleep that ends only when interrupted (or after a minute, failing the test below).
    let interrupted = 0;
    const sleep = (ms: number, signal?: AbortSignal) =>
      new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 60_000 + ms);
        signal?.addEventListener('abort', () => (interrupted++, clearTimeout(t), resolve()), { once: true });
      });
    setTimeout(() => w.wake('lab'), 20);
    await w.sleep(10_000, sleep);
    expect(interrupted).toBe(1);
    expect([...w.take()]).toEqual(['lab']);
    expect([...w.take()]).toEqual([]);
    // a wake-up that came before the sleep is not lost: no sleep at all
    w.wake('other');
    await w.sleep(10_000, sleep);
    expect(interrupted).toBe(1);
    expect([...w.take()]).toEqual(['other']);
  });
});

describe('pgpool failover report', () => {
  const spec = simSpec({ name: 'lab' });
  const paths = poolPaths('/u01/pgpool');

  it('without a report target pgpool only logs and never fails a backend over by itself', () => {
    const conf = renderPgpoolConf(spec, paths);
    expect(conf).toMatch(/^failover_on_backend_error = off$/m);
    expect(conf).toMatch(/^failover_command = 'echo failover/m);
  });

  it('with one, failover_command runs the report script (bounded) and pgpool detaches what it sees fail', () => {
    const target = { address: '10.77.0.1', port: 7433 };
    const conf = renderPgpoolConf(spec, paths, target);
    expect(conf).toMatch(/^failover_on_backend_error = on$/m);
    expect(conf).toContain("failover_command = '/usr/bin/timeout 15 /bin/bash /u01/pgpool/report-failover.sh %d %h %m %P'");
    const script = renderReportScript(spec, paths, target);
    expect(script).toContain('exec 3<>/dev/tcp/10.77.0.1/7433');
    expect(script).toContain('POST /v1/clusters/lab/pool-failover?node_id=%s&host=%s&old_primary=%s&started=%s HTTP/1.0\\r\\n');
    expect(desiredPoolConfigHash(spec, paths, target)).not.toBe(desiredPoolConfigHash(spec, paths));
    expect(() => renderReportScript(spec, paths, { address: '10.0.0.1; rm -rf /', port: 1 })).toThrow(/bad operator address/);
  });
});

describe('ReportServer', () => {
  function setup(answerWithinMs = 2_000) {
    const dir = mkdtempSync(join(tmpdir(), 'pgop-reports-'));
    const store = Store.open(join(dir, 'pgop.db'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    cleanups.push(() => store.close());
    const spec = simSpec({ name: 'lab' });
    store.applySpec(spec, 'h', 'test', 1);
    for (const [n, s] of [['pg01', 'primary'], ['pg02', 'standby'], ['pg03', 'standby']] as const) store.saveNodeState('lab', n, s, { goal: s, message: '', now: 1 });
    const woken: string[] = [];
    const server = new ReportServer({ store, log: silentLog, wake: (c) => woken.push(c), answerWithinMs });
    cleanups.push(() => server.close());
    return { store, server, woken };
  }
  const post = (port: number, path: string) =>
    new Promise<{ status: number; body: string; ms: number }>((resolve, reject) => {
      const t0 = Date.now();
      const req = request({ host: '127.0.0.1', port, path, method: 'POST' }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body.trim(), ms: Date.now() - t0 }));
      });
      req.on('error', reject);
      req.end();
    });
  const port = () => 20_000 + Math.floor(Math.random() * 20_000);

  it('wakes the cluster at once, records the report, and answers only once the failover committed', async () => {
    const { store, server, woken } = setup();
    const p = port();
    expect(await server.listen('127.0.0.1', p)).toBe(true);
    const answer = post(p, '/v1/clusters/lab/pool-failover?node_id=0&host=10.0.0.11&old_primary=0');
    await new Promise((r) => setTimeout(r, 150));
    expect(woken).toEqual(['lab']);
    expect(store.listEvents({ cluster: 'lab' }).map((e) => e.ruleId)).toContain('pool.reported');
    // still pg01 primary: no answer yet; the failover commits pg02 as primary
    store.saveNodeState('lab', 'pg01', 'fenced', { goal: 'standby', message: '', now: 2 });
    store.saveNodeState('lab', 'pg02', 'primary', { goal: 'primary', message: '', now: 2 });
    const r = await answer;
    expect(r).toMatchObject({ status: 200, body: 'primary pg02' });
  });

  it('answers at once for a standby, says when the reported primary proved healthy, and gives up after its bound', async () => {
    const { store, server } = setup(300);
    const p = port();
    await server.listen('127.0.0.1', p);
    expect((await post(p, '/v1/clusters/lab/pool-failover?node_id=1&host=x')).body).toBe('primary pg01');
    const healthyObs = (at: number): ClusterObservation => ({
      cluster: 'lab',
      at,
      pool: null,
      nodes: { pg01: { name: 'pg01', machine: { state: 'running' }, reachable: true, misses: 0, postgres: { initialized: true, running: true, inRecovery: false, timeline: 1, lsn: 1, receiveLsn: 0, upstream: null, streaming: false, replicas: [], syncStandbyNames: '', configHash: '' } } },
    });
    const pending = post(p, '/v1/clusters/lab/pool-failover?node_id=0&host=x');
    await new Promise((r) => setTimeout(r, 50));
    store.saveObservation(healthyObs(Date.now() + 10));
    expect((await pending).body).toBe('primary pg01 is healthy; attach it again');
    store.saveObservation(healthyObs(0));
    const late = await post(p, '/v1/clusters/lab/pool-failover?node_id=0&host=x');
    expect(late.body).toBe('primary pg01 still being checked');
    expect((await post(p, '/v1/clusters/nope/pool-failover?node_id=0')).status).toBe(404);
    expect((await post(p, '/elsewhere')).status).toBe(404);
  });
});
