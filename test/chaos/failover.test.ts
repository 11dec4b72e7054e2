// Chaos on the real lab, pgop serve running as a child process, a writer going through pgpool the
// whole time: kill -9 of the primary's postmaster, the primary's link down (then healed), a standby
// killed, then kill -9 of a primary and of a standby where pgpool's main node (its first node up)
// decides how pgpool is told (standby-death.md §4d: a route, or for the first node an alias),
// and a standby's link down while pgpool's children are connecting to it (§4e). After each:
// exactly one primary (every node asked directly), every acknowledged id on it (sync mode), no
// write accepted by the old primary
// after the promotion, never two writable primaries at once, the old primary back as a streaming
// standby, and `pgop get events` telling the story in order. RTO is printed, never asserted
// (bench:failover reports it). One cluster for the whole file. Root only:
// scripts/test-integration.sh test/chaos.

import { describe, expect, it } from 'vitest';
import { poolHosts } from '../../src/spec/types.js';
import { CHAOS_DEADLINES as DEADLINES, chaosLog as log, useChaosLab } from '../helpers/chaos-suite.js';
import { IN_LAB } from '../helpers/lab-env.js';
import { currentPrimary, errorCounts, failoverTrial, waitConverged } from '../helpers/chaos-scenario.js';
import {
  eventTable,
  expectSafeFailover,
  isFence,
  isPromote,
  poolSaid,
  summary,
} from '../helpers/chaos-assert.js';
import { missing, outage, sleep } from '../helpers/writer.js';
import { expectSessionsBackAfterSilentStandby } from '../helpers/silent-standby.js';
import { eventually } from '../helpers/eventually.js';

describe.skipIf(!IN_LAB)('chaos: failover on the lab (root)', { timeout: 300_000 }, () => {
  const lab = useChaosLab({ name: 'cf', network: '10.91.0.0/24', mode: 'sync' });

  it(
    'kill -9 of the primary postmaster: fenced, a standby promoted, nothing acknowledged lost, old ' +
      'primary rejoins',
    async () => {
      const first = lab.spec().nodes[0]!.name;
      await primaryTo(first, (primary) => primary !== first);
      const logFrom = lab.serveLogSize();
      const r = await failoverTrial(lab, {
        fault: 'kill',
        run: 'kill-primary',
        system: 'pgop',
        ...DEADLINES,
      });
      log(summary(r));
      await expectSafeFailover(lab, r);
      // pgpool's first node, its main node: never held up behind a route (a skipped connect to
      // it would move the main node for good), but behind an alias to the other standby: its
      // connects succeed, and its return is the alias removed, not an attach
      expect(r.oldPrimary).toBe(first);
      const said = poolSaid(lab.serveLogFrom(logFrom), r.oldPrimary);
      expect(said.text, said.why).not.toContain('attached again behind a route');
      expect(said.text, said.why).toMatch(/old primary attached again behind an alias to pg\d+/);
      expect(said.text, said.why).toContain('alias of a standby removed, no attach');
      expect(said.text, said.why).not.toContain('pgpool: attach sent');
      for (const h of poolHosts(lab.spec())) expect(await lab.aliasesOn(h.name), h.name).toEqual([]);
      await expectNewSessions();
    },
  );

  it(
    "the primary's link down, then healed: fenced before the promotion, no write on the isolated primary " +
      'after it',
    async () => {
      await waitConverged(lab, 120_000);
      const r = await failoverTrial(lab, {
        fault: 'partition',
        run: 'partition-primary',
        system: 'pgop',
        ...DEADLINES,
      });
      log(summary(r));
      await expectSafeFailover(lab, r);
    },
  );

  it('a standby killed: the primary stays, writes go on, the standby streams again', async () => {
    await waitConverged(lab, 120_000);
    const { primary, standbys } = await currentPrimary(lab);
    const victim = standbys[standbys.length - 1]!;
    const before = lab.lastEventId();
    const pool = lab.writer({ name: 'pool', run: 'kill-standby', via: 'pool' }).start();
    const logFrom = lab.serveLogSize();
    let t0 = 0;
    try {
      await pool.firstAck();
      await sleep(300);
      t0 = await lab.fault(victim, 'kill');
      await waitConverged(lab, 120_000);
      await sleep(300);
    } finally {
      await pool.stop();
    }
    const events = (await lab.eventsCli()).filter((e) => e.id > before);
    const ctx = `events (seconds after the kill):\n${eventTable(events, t0)}`;
    const o = outage(pool.acks, t0);
    const errs = Object.entries(errorCounts(pool, t0))
      .map(([m, n]) => `${n}x ${m.slice(0, 100)}`)
      .join(' | ');
    log(
      `kill-standby ${victim}: write gap ${(o.ms / 1000).toFixed(2)} s ` +
        `(from +${(((o.lastBefore ?? t0) - t0) / 1000).toFixed(2)} s), acks ${pool.acks.length}` +
        `${errs ? `\npgpool writer errors after the kill: ${errs}` : ''}\n${ctx}`,
    );
    expect(await lab.primaries(), ctx).toEqual([primary]);
    expect(missing(pool.acks, await lab.ids(primary, 'kill-standby', 'pool')), ctx).toEqual([]);
    expect((await lab.replicas(primary))[victim], ctx).toBe('streaming');
    expect(
      events.filter((e) => isFence(e) || isPromote(e)),
      `no failover for a standby\n${ctx}`,
    ).toEqual([]);
    expect(
      events.some((e) => e.node === victim && !e.rule.endsWith('.failed') && e.reason.length > 0),
      `an event explains what happened to ${victim}\n${ctx}`,
    ).toBe(true);
    // its own pool host: the dead standby is cut off by a route and brought back, never detached
    // or attached (pgpool ends every session running a query while it handles either)
    const said = poolSaid(lab.serveLogFrom(logFrom), victim);
    const why = `${ctx}\n${said.why}`;
    expect(said.text, why).toContain('standby cut off by a route');
    expect(said.text, why).toContain('route to a standby back, no attach');
    expect(said.text, why).not.toMatch(/pgpool: (detach|attach) sent/);
    await expectNewSessions();
  });

  it(
    "kill -9 of a primary that is not pgpool's first node: attached again behind a route at once, " +
      'so its rejoin needs no attach',
    async () => {
      await primaryNotFirst();
      const logFrom = lab.serveLogSize();
      const r = await failoverTrial(lab, { fault: 'kill', run: 'kill-later', system: 'pgop', ...DEADLINES });
      log(summary(r));
      await expectSafeFailover(lab, r);
      const said = poolSaid(lab.serveLogFrom(logFrom), r.oldPrimary);
      expect(said.text, said.why).toContain('old primary attached again behind a route');
      expect(said.text, said.why).toContain('route to a standby back, no attach');
      expect(said.text, said.why).not.toContain('pgpool: attach sent');
      await expectNewSessions();
    },
  );

  it("a standby that is pgpool's first node killed: detached and attached, not only cut off", async () => {
    await primaryNotFirst();
    const first = lab.spec().nodes[0]!.name;
    const logFrom = lab.serveLogSize();
    await lab.fault(first, 'kill');
    await waitConverged(lab, 120_000);
    const said = poolSaid(lab.serveLogFrom(logFrom), first);
    expect(said.text, said.why).not.toContain('standby cut off by a route');
    expect(said.text, said.why).toContain('pgpool: detach sent');
    expect(said.text, said.why).toContain('pgpool: attach sent');
    await expectNewSessions();
  });

  it("a standby's link down as pgpool's children connect to it: new sessions work in seconds", async () => {
    await waitConverged(lab, 120_000);
    const first = lab.spec().nodes[0]!.name;
    const victim = (await currentPrimary(lab)).standbys.find((n) => n !== first)!;
    await expectSessionsBackAfterSilentStandby(lab, victim);
    await expectNewSessions();
  });

  /** A switchover when pgpool's first node is the primary. */
  async function primaryNotFirst(): Promise<void> {
    const [first, second] = lab.spec().nodes.map((n) => n.name);
    await primaryTo(second!, (primary) => primary === first);
  }

  /** The primary moved to `to` by a switchover when `move(primary)` says so. */
  async function primaryTo(to: string, move: (primary: string | null) => boolean): Promise<void> {
    await waitConverged(lab, 120_000);
    if (!move((await currentPrimary(lab)).primary)) return;
    const r = await lab.pgop(['switchover', lab.name, '--to', to], 300_000);
    expect(r.code, r.stderr).toBe(0);
    await waitConverged(lab, 120_000);
  }

  /** New sessions through pgpool work again: five in a row within 15 s. */
  async function expectNewSessions(): Promise<void> {
    await eventually(async () => {
      for (let i = 0; i < 5; i++) {
        const failed = await lab.newSessionFails();
        if (failed) throw new Error(`a new session through pgpool failed: ${failed}`);
      }
    }, 15_000);
  }
});
