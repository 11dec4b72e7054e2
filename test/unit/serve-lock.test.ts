// Hole 7 of issue 13: a serve whose lock was taken over must stop at once and commit nothing
// more. Two Store connections on one db file stand for two serve processes.

import { mkdtempSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Store, isServeLockLost } from '../../src/store/store.js';
import { Reconciler } from '../../src/reconcile/reconciler.js';
import { ServeLockLostError, runServe, serveCommand } from '../../src/cli/commands/serve.js';
import { EXIT } from '../../src/errors.js';
import { simSpec } from '../helpers/sim-spec.js';

const dirs: string[] = [];
const newDb = () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgop-lock-'));
  dirs.push(dir);
  return join(dir, 'pgop.db');
};

afterEach(() => {
  vi.restoreAllMocks();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('serve lock guard (store)', () => {
  it('a guarded connection commits nothing once its lock is taken over; the new holder writes', () => {
    const db = newDb();
    const a = Store.open(db);
    const b = Store.open(db);
    try {
      expect(a.acquireServeLock(100, 'h1', 1000, () => true)).toEqual({ ok: true });
      a.guardWithServeLock(100, 'h1');
      a.applySpec(simSpec({ name: 'c1' }), 'h-1', 'src', 1000);
      a.recordEvent({
        time: 1,
        cluster: 'c1',
        node: null,
        from: null,
        to: null,
        ruleId: 'x',
        reason: 'while holding',
      });
      // b judges 100 dead (stale) and takes over
      expect(b.acquireServeLock(200, 'h1', 2000, () => false)).toEqual({ ok: true });
      const refused = (fn: () => unknown) => {
        let err: unknown;
        try {
          fn();
        } catch (e) {
          err = e;
        }
        expect(isServeLockLost(err), String(err)).toBe(true);
      };
      refused(() =>
        a.recordEvent({
          time: 2,
          cluster: 'c1',
          node: null,
          from: null,
          to: null,
          ruleId: 'x',
          reason: 'after losing',
        }),
      );
      refused(() =>
        a.commitStep({
          cluster: 'c1',
          node: 'pg01',
          state: 'provisioned',
          goal: 'primary',
          message: 'm',
          event: { ruleId: 'r', reason: 'r' },
          now: 3,
        }),
      );
      refused(() => a.setClusterStatus('c1', { phase: 'X', primary: null, message: 'm' }));
      refused(() => a.saveSimWorld('{}', 4));
      expect(a.heartbeat(100, 5000, 'h1')).toBe(false);
      expect(a.releaseServeLock(100, 'h1')).toBe(false);
      expect(b.listEvents().map((e) => e.reason)).toEqual(['while holding']);
      expect(b.getNode('c1', 'pg01')).toBeUndefined();
      // the new holder's connection is not affected by a's (temporary, per-connection) guard
      b.recordEvent({
        time: 6,
        cluster: 'c1',
        node: null,
        from: null,
        to: null,
        ruleId: 'x',
        reason: 'new holder',
      });
      expect(b.serveLockHolder()).toMatchObject({ pid: 200, hostname: 'h1' });
    } finally {
      a.close();
      b.close();
    }
  });
});

describe('pgop serve losing its lock', () => {
  it(
    'stops before its next pass, commits nothing more, ' + "keeps the new holder's lock and exits 6",
    async () => {
      const db = newDb();
      const setup = Store.open(db);
      setup.applySpec(simSpec({ name: 'c1' }), 'h-1', 'src', Date.now());
      setup.close();

      const other = Store.open(db);
      const original = Reconciler.prototype.pass;
      let calls = 0;
      let eventsAtTakeover = -1;
      const TAKEOVER_AT = 3;
      vi.spyOn(Reconciler.prototype, 'pass').mockImplementation(async function (
        this: Reconciler,
        name: string,
      ) {
        calls++;
        if (calls === TAKEOVER_AT) {
          // another serve on this host finds our pid "dead" and takes the lock over, just as this
          // pass begins: the pass runs on, but none of its writes may land
          eventsAtTakeover = other.listEvents().length;
          expect(other.acquireServeLock(process.pid + 1, hostname(), Date.now(), () => false)).toEqual({
            ok: true,
          });
        }
        return original.call(this, name);
      });
      const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
      try {
        const t0 = Date.now();
        const code = await serveCommand(db, { untilConverged: true, timeout: 30 });
        expect(code).toBe(EXIT.lockLost);
        expect(Date.now() - t0).toBeLessThan(5_000);
        expect(calls).toBe(TAKEOVER_AT); // no pass after the takeover's
        expect(eventsAtTakeover).toBeGreaterThan(0); // the serve did commit while it held the lock
        expect(other.listEvents().length).toBe(eventsAtTakeover);
        expect(other.serveLockHolder()).toMatchObject({ pid: process.pid + 1, hostname: hostname() });
        expect(stderr.mock.calls.map((c) => String(c[0])).join('')).toMatch(
          new RegExp(`lost the lock of .* to pid ${process.pid + 1} on `),
        );
      } finally {
        stderr.mockRestore();
        other.close();
      }
    },
  );

  it('a lock taken over while the loop sleeps is noticed within a second', async () => {
    const db = newDb();
    const other = Store.open(db);
    try {
      // no cluster: the loop only sleeps and ticks
      const serving = runServe(db, { quiet: true });
      const outcome = serving.then(
        () => 'returned',
        (e: unknown) => e,
      );
      await new Promise((r) => setTimeout(r, 300));
      expect(other.acquireServeLock(process.pid + 1, hostname(), Date.now(), () => false)).toEqual({
        ok: true,
      });
      const t0 = Date.now();
      const res = await outcome;
      expect(res).toBeInstanceOf(ServeLockLostError);
      expect(Date.now() - t0).toBeLessThan(2_500);
      expect(other.serveLockHolder()?.pid).toBe(process.pid + 1);
    } finally {
      other.close();
    }
  });
});
