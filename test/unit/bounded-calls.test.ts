// Every remote call is bounded (src/drivers/timeouts.ts): pg sessions to a node carry a connect,
// statement, lock and client-side query bound and TCP keepalive; a probe of a postgres that
// accepts the connect but never answers (a SIGSTOPped postmaster) ends within its budget and is
// reported as a node that cannot be read, not as a running one; and the planner neither rejoins
// nor restarts such a node. The hanging server is a real TCP listener on loopback.

import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseSpecFile } from '../../src/spec/parse.js';
import type { ClusterSpec } from '../../src/spec/types.js';
import type { ExecResult, HostRef, NodeShell } from '../../src/drivers/types.js';
import { NodeAccess } from '../../src/drivers/postgres/node-access.js';
import { Prober, fromLook, type Look } from '../../src/drivers/postgres/probe.js';
import { ClusterTls } from '../../src/tls/material.js';
import { plan } from '../../src/plan/plan.js';
import { pg as pgObservation } from '../helpers/plan-input.js';
import type { PlanInput } from '../../src/plan/types.js';
import type { NodeObservation, PostgresObservation } from '../../src/observe/types.js';
import {
  ADMIN_STATEMENT_MS,
  KEEPALIVE_IDLE_MS,
  pcpTimeoutMs,
  poolLookTimeoutMs,
  probeDeadlineMs,
} from '../../src/drivers/timeouts.js';

const lab = (): ClusterSpec => {
  const spec = parseSpecFile(join(__dirname, '../../specs/lab-3node.yaml')).spec;
  return { ...spec, tls: { enabled: false, certificateDays: 90, renewBeforeDays: 30, hostRules: 'hostssl' } };
};

/** A NodeShell whose every command answers like the node-state script of a running postgres. */
const runningShell: NodeShell = {
  async exec(): Promise<ExecResult> {
    return { code: 0, stdout: 'init=1 nonempty=1 standby=0 status=0 partial=0\n', stderr: '' };
  },
  async writeFile() {
    return false;
  },
  async readFile() {
    return null;
  },
  async close() {},
};

const hostRef = (): HostRef => ({
  id: 'n',
  address: '127.0.0.1',
  port: 22,
  user: 'root',
  privateKeyPath: '/x',
});

function access(port = 5432): NodeAccess {
  return new NodeAccess({
    shell: runningShell,
    hostRef,
    connect: () => ({ host: '127.0.0.1', port, user: 'postgres', password: 'x', database: 'postgres' }),
    log: { info() {}, warn() {} },
    tls: new ClusterTls(),
  });
}

describe('pg sessions to a node are bounded', () => {
  it('every session: connect, statement, lock and client-side query timeouts, keepalive in seconds', () => {
    const spec = lab();
    const cfg = access().clientConfig(spec, spec.nodes[0]!);
    expect(cfg.connectionTimeoutMillis).toBe(spec.failureDetection.connectTimeoutMs);
    expect(cfg.statement_timeout).toBe(ADMIN_STATEMENT_MS);
    expect(cfg.lock_timeout).toBeGreaterThan(0);
    // the client gives up after the server would have: a hung node cannot cancel
    expect(cfg.query_timeout).toBeGreaterThan(ADMIN_STATEMENT_MS);
    expect(cfg.keepAlive).toBe(true);
    expect(cfg.keepAliveInitialDelayMillis).toBe(KEEPALIVE_IDLE_MS);
    expect(KEEPALIVE_IDLE_MS).toBeLessThanOrEqual(10_000);
  });

  it("a caller narrows them (the probe: the spec's probe budget) without losing the others", () => {
    const spec = lab();
    const t = spec.failureDetection.connectTimeoutMs;
    const cfg = access().clientConfig(spec, spec.nodes[0]!, { statement_timeout: t, query_timeout: t });
    expect(cfg).toMatchObject({ statement_timeout: t, query_timeout: t, keepAlive: true });
    expect(cfg.lock_timeout).toBeGreaterThan(0);
  });

  it('pgpool and PCP bounds follow the spec and never drop under 2 s', () => {
    const spec = lab();
    for (const connectTimeoutMs of [100, 300, 1000, 5000]) {
      const s = { ...spec, failureDetection: { ...spec.failureDetection, connectTimeoutMs } };
      expect(poolLookTimeoutMs(s)).toBeGreaterThanOrEqual(Math.max(2000, connectTimeoutMs));
      expect(pcpTimeoutMs(s)).toBeGreaterThanOrEqual(Math.max(2000, connectTimeoutMs));
    }
  });
});

/** The promise's result, or 'still pending' if it has none within `ms`. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | 'still pending'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'still pending'>((r) => (timer = setTimeout(() => r('still pending'), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

describe('a probe of a node that does not answer ends', () => {
  let server: Server | undefined;
  const sockets: Socket[] = [];
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = undefined;
  });

  it('within its budget when postgres takes the connect, says nothing: unreadable, not running', async () => {
    server = createServer((s) => void sockets.push(s)); // takes the startup packet, says nothing
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const spec = lab();
    const prober = new Prober(access(port));
    const t0 = performance.now();
    try {
      const r = await prober.probe(spec, spec.nodes[0]!);
      const took = performance.now() - t0;
      expect(r).toMatchObject({ reachable: true, postgres: null, hung: true });
      expect(r.error).toMatch(/timeout/);
      expect(r.error).toMatch(/runs but does not answer/);
      // bounded: the connect budget (300 ms) and one SSH look, not TCP's minutes
      expect(took).toBeLessThan(5_000);
    } finally {
      await prober.close();
    }
  });

  it('when its session is dropped mid-connect (a job stopping postgres)', async () => {
    // reads and says nothing, and closes when the client does (as postgres does)
    server = createServer((s) => void sockets.push(s.resume()));
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const spec = lab();
    const prober = new Prober(access((server.address() as { port: number }).port));
    try {
      const probe = prober.probe(spec, spec.nodes[0]!);
      while (sockets.length === 0) await new Promise((r) => setTimeout(r, 5));
      prober.dropProbe(spec, spec.nodes[0]!); // what stop() does before pg_ctl stop
      const r = await within(probe, 2_000);
      expect(r).not.toBe('still pending');
      expect(r).toMatchObject({ reachable: true, error: expect.stringMatching(/closed before/) });
    } finally {
      await prober.close();
    }
  });

  it('within its deadline when a step never settles: one miss, not the node for good', async () => {
    const hangingShell: NodeShell = { ...runningShell, exec: () => new Promise<ExecResult>(() => {}) };
    const spec = lab();
    const node = spec.nodes[0]!;
    const prober = new Prober(
      new NodeAccess({
        shell: hangingShell,
        hostRef,
        // nothing listens on port 1: refused, then the SSH look that hangs
        connect: () => ({ host: '127.0.0.1', port: 1, user: 'postgres', password: 'x' }),
        log: { info() {}, warn() {} },
        tls: new ClusterTls(),
      }),
    );
    try {
      const deadline = probeDeadlineMs(spec);
      const r = await within(prober.probe(spec, node), deadline + 2_000);
      expect(r).toMatchObject({
        reachable: false,
        postgres: null,
        error: expect.stringMatching(/no result/),
      });
    } finally {
      await prober.close();
    }
  }, 20_000);
});

describe('fromLook', () => {
  const look = (running: boolean): Look => ({
    at: Date.now(),
    error: '',
    state: {
      initialized: true,
      nonEmpty: true,
      standbySignal: false,
      running,
      status: running ? 0 : 3,
      partial: false,
    },
  });

  it('a running postmaster that answered with an error (starting up) is running', () => {
    const r = fromLook(look(true), {
      pgError: 'postgres: starting up (57P03)',
      refused: false,
      timedOut: false,
      refusesSessions: true,
    });
    expect(r.postgres?.running).toBe(true);
    // pgpool must not hold it up: it takes no session yet
    expect(r.postgres?.refusesSessions).toBe(true);
  });

  it('a running postmaster that gave no answer in time hangs: postgres unreadable', () => {
    const r = fromLook(look(true), { pgError: 'postgres: timeout expired', refused: false, timedOut: true });
    expect(r).toMatchObject({ reachable: true, postgres: null, hung: true });
  });

  it('a stopped postmaster is down, timed out or not', () => {
    const r = fromLook(look(false), { pgError: 'postgres: timeout expired', refused: false, timedOut: true });
    expect(r.postgres).toMatchObject({ initialized: true, running: false });
  });
});

describe('the planner and a hung node', () => {
  const spec = lab();
  const names = spec.nodes.map((n) => n.name);
  const [p, s1, s2] = names as [string, string, string];
  const pg = (over: Partial<PostgresObservation> = {}) => pgObservation({ upstream: p, ...over });
  const up = (name: string, over: Partial<PostgresObservation> = {}): NodeObservation => ({
    name,
    machine: { state: 'running' },
    reachable: true,
    postgres: pg(over),
    misses: 0,
  });
  const hung = (name: string): NodeObservation => ({
    name,
    machine: { state: 'running' },
    reachable: true,
    postgres: null,
    misses: 5,
    error: 'postgres: timeout expired; ssh: postgres runs but does not answer',
    hung: true,
  });
  const input = (states: PlanInput['states'], nodes: Record<string, NodeObservation>): PlanInput => ({
    spec: { ...spec, pgpool: { ...spec.pgpool, enabled: false } },
    deletionRequested: false,
    observation: { cluster: spec.name, at: 0, nodes, pool: null },
    states,
    desiredConfigHash: Object.fromEntries(names.map((n) => [n, 'h'])),
    requests: [],
    now: 0,
  });
  const primaryUp = () => up(p, { inRecovery: false, upstream: null, streaming: false, lsn: 2000 });

  it('a hung degraded standby is waited for, not rejoined', () => {
    const r = plan(
      input(
        { [p]: 'primary', [s1]: 'degraded', [s2]: 'standby' },
        { [p]: primaryUp(), [s1]: hung(s1), [s2]: up(s2) },
      ),
    );
    expect(r.decision.kind).not.toBe('act');
    expect(r.also ?? []).toEqual([]);
  });

  it('a hung primary past its miss budget is fenced', () => {
    const r = plan(
      input(
        { [p]: 'primary', [s1]: 'standby', [s2]: 'standby' },
        { [p]: hung(p), [s1]: up(s1), [s2]: up(s2) },
      ),
    );
    expect(r.decision).toMatchObject({ kind: 'act', node: p, ruleId: 'failover.fence-primary' });
  });

  it('a hung primary nobody can replace is not restarted in place (pg_ctl would only wait)', () => {
    const down = { ...up(s1), reachable: false, postgres: null, misses: 5 };
    const r = plan(
      input(
        { [p]: 'primary', [s1]: 'standby', [s2]: 'standby' },
        { [p]: hung(p), [s1]: down, [s2]: { ...down, name: s2 } },
      ),
    );
    expect(r.decision).not.toMatchObject({ ruleId: 'recover.restart-primary' });
  });
});
