// The HTTP side of `pgop serve`: the API answers what `get -o json` prints, a non-loopback
// listen without token and TLS is refused, the event stream delivers a new event, writes and
// non-loopback reads need the token, and the metrics count a failover.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt } from '../helpers/pgop-cli.js';
import { tempDir } from '../helpers/temp.js';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { Store } from '../../src/store/store.js';
import { startHttpServer, type HttpServer } from '../../src/server/http.js';
import { EpisodeTracker, ServeMetrics, lsnBytes } from '../../src/server/metrics.js';
import { ListenError, resolveListen, type ListenConfig } from '../../src/server/listen.js';
import { createCa, issueServer } from '../../src/tls/ca.js';
import type { PassResult } from '../../src/reconcile/reconciler.js';
import { handOverListener } from '../../src/server/serve-http.js';

const root = new URL('../../', import.meta.url).pathname;
const bin = join(root, 'bin/pgop');
const simSpec = join(root, 'specs/sim-3node.yaml');
const ready = () => ({ lockHeld: true, storeWritable: true, loopAlive: true });

function pgop(db: string, args: string[]) {
  const r = spawnSync(process.execPath, [bin, '--db', db, ...args], {
    encoding: 'utf8',
    env: { ...process.env, PGOP_DB: '' },
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(
  server: HttpServer,
  path: string,
  o: { method?: string; token?: string; body?: string; host?: string; tls?: boolean } = {},
): Promise<Reply> {
  const { port } = server.address();
  const request = o.tls ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: o.method ?? 'GET',
        rejectUnauthorized: false,
        headers: {
          ...(o.token ? { authorization: `Bearer ${o.token}` } : {}),
          ...(o.host ? { host: o.host } : {}),
        },
      },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end(o.body);
  });
}

const loopback = (over: Partial<ListenConfig> = {}): ListenConfig => ({
  host: '127.0.0.1',
  port: 0,
  token: null,
  tls: null,
  explicit: true,
  ...over,
});

let dir: string;
let db: string;

beforeAll(() => {
  ensureBuilt();
  dir = tempDir('pgop-server');
  db = join(dir, 'pgop.db');
  expect(pgop(db, ['apply', '-f', simSpec]).code).toBe(0);
  const served = pgop(db, ['serve', '--until-converged', '--timeout', '30', '--listen', 'off']);
  expect(served.code, served.stderr).toBe(0);
}, 90_000);

describe('the JSON API', { timeout: 30_000 }, () => {
  let store: Store;
  let server: HttpServer;
  beforeAll(async () => {
    store = Store.open(db, { readonly: true });
    server = await startHttpServer({ store, listen: loopback(), readiness: ready });
  });
  afterAll(async () => {
    await server.close();
    store.close();
  });

  it('returns the same documents as `pgop get -o json`', async () => {
    for (const [kind, query] of [
      ['clusters', ''],
      ['nodes', ''],
      ['events', ''],
      ['events', '?cluster=sim'],
      ['nodes', '?cluster=sim'],
      ['jobs', ''],
      ['jobs', '?cluster=sim'],
    ] as const) {
      const cli = JSON.parse(
        pgop(db, ['get', kind, '-o', 'json', ...(query ? ['--cluster', 'sim'] : [])]).stdout,
      ) as { kind: string; items: unknown[] };
      const api = await call(server, `/api/v1/${kind}${query}`);
      expect(api.status).toBe(200);
      expect(api.headers['content-type']).toMatch(/^application\/json/);
      expect(cli.items.length).toBeGreaterThan(0);
      // the operator's heartbeat age is read at each request: the same up to that
      const settle = (doc: { items: unknown[] }) =>
        JSON.stringify(doc).replace(/"heartbeat_age_s":[0-9.]+/g, '"heartbeat_age_s":0');
      expect(settle(JSON.parse(api.body) as { items: unknown[] })).toEqual(settle(cli));
    }
  });

  it('lists the bring-up jobs, finished, and answers an unknown cluster with 404', async () => {
    const jobs = JSON.parse((await call(server, '/api/v1/jobs')).body) as {
      items: { kind: string; state: string }[];
    };
    expect(new Set(jobs.items.map((j) => j.kind))).toEqual(
      new Set(['provisionVm', 'installPostgres', 'initPrimary', 'cloneStandby']),
    );
    expect(jobs.items.every((j) => j.state === 'succeeded')).toBe(true);
    const missing = await call(server, '/api/v1/nodes?cluster=nope');
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.body).error).toMatch(/no cluster named nope/);
    expect((await call(server, '/api/v1/pods')).status).toBe(404);
  });

  it('serves health, readiness, the dashboard (self-contained) and metrics promtool-style', async () => {
    expect((await call(server, '/healthz')).body).toBe('ok\n');
    expect(JSON.parse((await call(server, '/readyz')).body)).toEqual({ ready: true, checks: ready() });
    const page = await call(server, '/');
    expect(page.headers['content-security-policy']).toMatch(/default-src 'none'.*connect-src 'self'/);
    expect(page.body).not.toMatch(/<(script|link|img)[^>]+(src|href)=/);
    const metrics = (await call(server, '/metrics')).body;
    expect(metrics).toMatch(/^pgop_node_role\{cluster="sim",node="pg01",role="primary"\} 1$/m);
    expect(metrics).toMatch(/^pgop_pgpool_primary\{cluster="sim",node="pg01"\} 1$/m);
    expect(metrics).toMatch(/^pgop_failovers_total\{cluster="sim"\} 0$/m);
    expect(metrics).toMatch(/^# TYPE pgop_reconcile_pass_duration_seconds histogram$/m);
  });

  it('answers a loopback listener only when addressed to loopback (DNS rebinding)', async () => {
    expect((await call(server, '/api/v1/nodes', { host: 'attacker.example:9187' })).status).toBe(421);
    expect((await call(server, '/api/v1/nodes', { host: 'localhost:9187' })).status).toBe(200);
  });

  it('refuses writes when no token is configured', async () => {
    const r = await call(server, '/api/v1/clusters/sim/switchover', { method: 'POST', body: '{}' });
    expect(r.status).toBe(403);
  });
});

describe('the event stream', { timeout: 30_000 }, () => {
  it('delivers an event recorded after the stream opened', async () => {
    const store = Store.open(db);
    const server = await startHttpServer({ store, listen: loopback(), readiness: ready });
    try {
      const frames = await new Promise<string>((resolve, reject) => {
        const req = httpRequest(
          { host: '127.0.0.1', port: server.address().port, path: '/api/v1/events/stream?cluster=sim' },
          (res) => {
            expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
            let text = '';
            res.on('data', (d: Buffer) => {
              text += d.toString();
              if (text.includes('rule.from-the-test')) {
                req.destroy();
                resolve(text);
              }
            });
            // the stream is open: record the event now
            setTimeout(
              () =>
                store.recordEvent({
                  time: Date.now(),
                  cluster: 'sim',
                  node: 'pg02',
                  from: null,
                  to: null,
                  ruleId: 'rule.from-the-test',
                  reason: 'a new event',
                }),
              100,
            );
          },
        );
        req.on('error', reject);
        req.end();
        setTimeout(() => reject(new Error(`no event within 2 s`)), 2000);
      });
      const frame = frames.split('\n\n').find((f) => f.includes('rule.from-the-test'))!;
      expect(frame).toMatch(/^id: \d+\nevent: event\ndata: /);
      const data = JSON.parse(
        frame
          .split('\n')
          .find((l) => l.startsWith('data: '))!
          .slice(6),
      );
      expect(data).toMatchObject({
        cluster: 'sim',
        node: 'pg02',
        rule: 'rule.from-the-test',
        reason: 'a new event',
      });
      // the API lists it the same way
      const listed = JSON.parse((await call(server, '/api/v1/events?cluster=sim')).body).items.at(-1);
      expect(listed).toEqual(data);
    } finally {
      await server.close();
      store.close();
    }
  });
});

describe('listen addresses and the token', { timeout: 60_000 }, () => {
  it('refuses a non-loopback listen without a token or TLS (exit 2), never printing the token', () => {
    const none = pgop(db, ['serve', '--listen', '0.0.0.0:0', '--timeout', '1']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/cannot listen on 0.0.0.0:0: a non-loopback address needs --token-file/);
    const tokenFile = join(dir, 'token');
    const secret = 'tok-' + 'x'.repeat(20) + Math.random().toString(36).slice(2);
    writeFileSync(tokenFile, `${secret}\n`, { mode: 0o600 });
    const noTls = pgop(db, [
      'serve',
      '--listen',
      '10.1.2.3:9187',
      '--token-file',
      tokenFile,
      '--timeout',
      '1',
    ]);
    expect(noTls.code).toBe(2);
    expect(noTls.stderr).toMatch(/needs --tls-cert and --tls-key/);
    expect(noTls.stdout + noTls.stderr).not.toContain(secret);
    expect(pgop(db, ['serve', '--listen', 'nonsense', '--timeout', '1']).code).toBe(2);
  });

  it('parses and checks listen flags', () => {
    expect(resolveListen({ listen: 'off' })).toBeNull();
    expect(resolveListen({})).toMatchObject({
      host: '127.0.0.1',
      port: 9187,
      token: null,
      tls: null,
      explicit: false,
    });
    expect(resolveListen({ listen: '[::1]:9000' })).toMatchObject({
      host: '::1',
      port: 9000,
      explicit: true,
    });
    expect(() => resolveListen({ listen: 'example.com:80' })).toThrow(ListenError);
    expect(() => resolveListen({ listen: '127.0.0.1:70000' })).toThrow(ListenError);
    expect(() => resolveListen({ listen: '[::]:9187' })).toThrow(/needs --token-file/);
    expect(() => resolveListen({ listen: '127.0.0.1:1', tlsCert: '/x' })).toThrow(
      /both --tls-cert and --tls-key/,
    );
  });

  it('on a non-loopback listener: TLS; reads and writes need the token; switchover and apply', async () => {
    const ca = await createCa('serve-test', new Date(), 1);
    const cert = await issueServer(ca, { name: 'localhost', ips: ['127.0.0.1'] }, new Date(), 1);
    const token = 'a-test-token-of-some-length';
    const store = Store.open(db);
    const server = await startHttpServer({
      store,
      readiness: ready,
      listen: {
        host: '0.0.0.0',
        port: 0,
        token,
        tls: { cert: Buffer.from(cert.cert), key: Buffer.from(cert.key) },
        explicit: true,
      },
    });
    try {
      expect((await call(server, '/healthz', { tls: true })).status).toBe(200);
      expect((await call(server, '/api/v1/nodes', { tls: true })).status).toBe(401);
      expect((await call(server, '/metrics', { tls: true, token: 'wrong-token-wrong-token' })).status).toBe(
        401,
      );
      expect((await call(server, '/api/v1/nodes', { tls: true, token })).status).toBe(200);
      const post = (body: string, t?: string) =>
        call(server, '/api/v1/clusters/sim/switchover', {
          method: 'POST',
          body,
          tls: true,
          ...(t ? { token: t } : {}),
        });
      expect((await post('{"to":"pg02"}')).status).toBe(401);
      expect((await post('{"to":"pg09"}', token)).status).toBe(400);
      const ok = await post('{"to":"pg02"}', token);
      expect(ok.status).toBe(202);
      const id = JSON.parse(ok.body).request as number;
      expect(store.pendingRequests('sim')).toContainEqual(
        expect.objectContaining({ id, kind: 'switchover', args: { from: 'pg01', to: 'pg02' } }),
      );
      expect(ok.body + JSON.stringify(ok.headers)).not.toContain(token);
      store.completeRequest(id, Date.now());

      const apply = (body: string, query = '', t: string | undefined = token) =>
        call(server, `/api/v1/apply${query}`, {
          method: 'POST',
          body,
          tls: true,
          ...(t ? { token: t } : {}),
        });
      const yaml = readFileSync(simSpec, 'utf8');
      const generation = store.getCluster('sim')!.generation;
      expect((await apply(yaml, '', '')).status).toBe(401);
      expect(JSON.parse((await apply(yaml)).body)).toMatchObject({ cluster: 'sim', result: 'unchanged' });
      const refused = await apply(yaml.replace('mode: async', 'mode: sometimes'));
      expect(refused.status).toBe(400);
      expect(JSON.parse(refused.body).error).toMatch(/<request>:27:\d+.*mode/s);
      const sync = yaml.replace('mode: async', 'mode: sync');
      const dry = JSON.parse((await apply(sync, '?dryRun=true')).body);
      expect(dry).toMatchObject({ result: 'configured', dryRun: true });
      expect(store.getCluster('sim')!.generation).toBe(generation);
      const applied = JSON.parse((await apply(sync)).body);
      expect(applied).toMatchObject({ result: 'configured', generation: generation + 1 });
      expect(store.getCluster('sim')!.spec.replication.mode).toBe('sync');
    } finally {
      await server.close();
      store.close();
    }
  });
});

describe('metrics of the loop', () => {
  const pass = (ruleId: string, kind: 'act' | 'wait' | 'done', acted: boolean): PassResult => ({
    cluster: 'c',
    decision: { kind, ruleId, reason: '', requeueAfterMs: 0 } as unknown as PassResult['decision'],
    phase: 'Healthy',
    acted,
    requeueAfterMs: 0,
    converged: kind === 'done',
  });

  it('times a failover from the first failing look to the promotion, and a switchover to its end', () => {
    const t = new EpisodeTracker();
    expect(t.note(pass('primary.unhealthy', 'wait', false), 1_000)).toBeNull();
    expect(t.note(pass('failover.fence-primary', 'act', true), 2_000)).toBeNull();
    expect(t.note(pass('failover.promote', 'act', true), 3_500)).toEqual({ kind: 'failover', seconds: 2.5 });
    expect(t.note(pass('failover.pool-route', 'act', true), 4_000)).toBeNull();
    expect(t.note(pass('cluster.converged', 'done', false), 5_000)).toBeNull();
    expect(t.note(pass('switchover.requested', 'act', true), 10_000)).toBeNull();
    expect(t.note(pass('switchover.done', 'act', true), 11_250)).toEqual({
      kind: 'switchover',
      seconds: 1.25,
    });
    // a primary that recovers on its own is no failover
    t.note(pass('primary.unhealthy', 'wait', false), 20_000);
    t.note(pass('cluster.converged', 'done', false), 21_000);
    expect(t.note(pass('failover.promote', 'act', true), 30_000)).toEqual({ kind: 'failover', seconds: 0 });
  });

  it('counts failovers and observes pass durations', async () => {
    const store = Store.open(db, { readonly: true });
    try {
      const m = new ServeMetrics(store);
      m.onPass({ ...pass('primary.unhealthy', 'wait', false), cluster: 'sim', observeMs: 12 }, 15, 1_000);
      m.onPass({ ...pass('failover.promote', 'act', true), cluster: 'sim' }, 900, 3_000);
      const text = await m.scrape();
      expect(text).toMatch(/^pgop_failovers_total\{cluster="sim"\} 1$/m);
      expect(text).toMatch(/^pgop_failover_duration_seconds_sum\{cluster="sim"\} 2$/m);
      expect(text).toMatch(
        /^pgop_reconcile_pass_duration_seconds_count\{cluster="sim",outcome="acted"\} 1$/m,
      );
      expect(text).toMatch(/^pgop_probe_duration_seconds_sum\{cluster="sim"\} 0.012$/m);
      expect(lsnBytes('1/2A')).toBe(2 ** 32 + 42);
    } finally {
      store.close();
    }
  });
});

describe('readiness', () => {
  it('is 503 and names the failing check', async () => {
    const store = Store.open(db, { readonly: true });
    const server = await startHttpServer({
      store,
      listen: loopback(),
      readiness: () => ({ lockHeld: true, storeWritable: true, loopAlive: false }),
    });
    try {
      const r = await call(server, '/readyz');
      expect(r.status).toBe(503);
      expect(JSON.parse(r.body).checks.loopAlive).toBe(false);
    } finally {
      await server.close();
      store.close();
    }
  });
});

describe('a listening socket handed to a serve in another namespace', { timeout: 30_000 }, () => {
  it('is served by the child; the parent that bound it accepts nothing', async () => {
    const listen = { host: '127.0.0.1', port: 0, token: null, tls: null, explicit: true };
    const handOver = (await handOverListener(listen))!;
    const child = spawn(
      process.execPath,
      [bin, '--db', db, 'serve', '--timeout', '8', '--listen', '127.0.0.1:1'],
      {
        stdio: ['ignore', 'pipe', 'pipe', ...handOver.fds],
        env: { ...process.env, PGOP_DB: '' },
      },
    );
    handOver.spawned();
    expect(process.env.PGOP_LISTEN_FD).toBeUndefined();
    let log = '';
    child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise((r) => child.on('exit', r));
    try {
      const nodes = async () => {
        for (let i = 0; ; i++) {
          const r = await fetch(`http://127.0.0.1:${handOver.port}/api/v1/nodes`).catch((err: Error) => err);
          if (!(r instanceof Error) || i > 50) return r;
          await new Promise((res) => setTimeout(res, 100));
        }
      };
      // several requests: none may land in (and hang on) this process
      for (let i = 0; i < 5; i++) {
        const r = await nodes();
        expect(r instanceof Error ? r.message : r.status, log).toBe(200);
      }
      expect(log).toMatch(/HTTP API, metrics and dashboard listening/);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});
