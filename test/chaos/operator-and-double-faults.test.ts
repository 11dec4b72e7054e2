// Chaos on the real lab, part two: the operator itself SIGKILLed in the middle of a failover
// (right after it recorded the fence; right after it recorded the promotion) and restarted, and
// two faults in a row (the new primary killed right after its promotion; the primary killed while
// a standby's link is down). After each: exactly one primary, every acknowledged id on it (sync
// mode), no write accepted by the old primary after a promotion, never two writable primaries at
// once, every node streaming again, and the events telling what happened. Root only:
// scripts/test-integration.sh test/chaos.

import { describe, expect, it } from 'vitest';
import { CHAOS_DEADLINES as DEADLINES, chaosLog as log, useChaosLab } from '../helpers/chaos-suite.js';
import { IN_LAB } from '../helpers/lab-env.js';
import { failoverTrial, waitConverged, type DuringContext } from '../helpers/chaos-scenario.js';
import {
  eventTable,
  expectSafeFailover,
  isFence,
  isPromote,
  isRejoin,
  summary,
} from '../helpers/chaos-assert.js';
import { now, sleep } from '../helpers/writer.js';
import type { EventRecord } from '../../src/store/types.js';
import { eventItem } from '../../src/cli/output.js';

describe.skipIf(!IN_LAB)(
  'chaos: operator killed mid-failover, double faults (root)',
  { timeout: 300_000 },
  () => {
    const lab = useChaosLab({ name: 'co', network: '10.92.0.0/24', mode: 'sync' });

    /** Wait (polling the store) for the first event after `afterId` that `pred` accepts. */
    async function waitEvent(
      afterId: number,
      pred: (e: EventRecord) => boolean,
      timeoutMs: number,
      what: string,
    ): Promise<EventRecord> {
      const deadline = now() + timeoutMs;
      for (;;) {
        const e = lab.events(afterId).find(pred);
        if (e) return e;
        if (now() > deadline)
          throw new Error(`no ${what} event within ${timeoutMs / 1000} s\n${lab.serveLogTail(1500)}`);
        await sleep(5);
      }
    }
    /** SIGKILL the operator as soon as an event `pred` accepts is committed, restart it 1 s later. */
    function killOperatorAt(pred: (e: EventRecord, ctx: DuringContext) => boolean, what: string) {
      const seen: { event?: EventRecord; killedAt?: number } = {};
      const during = async (ctx: DuringContext) => {
        const after =
          lab
            .events()
            .filter((e) => e.time < ctx.t0)
            .at(-1)?.id ?? 0;
        seen.event = await waitEvent(after, (e) => pred(e, ctx), 120_000, what);
        await lab.stopServe('SIGKILL');
        seen.killedAt = now();
        log(
          `operator SIGKILLed ${(seen.killedAt - ctx.t0).toFixed(0)} ms after the fault, ` +
            `${(seen.killedAt - seen.event.time).toFixed(0)} ms after event ` +
            `${seen.event.ruleId} on ${seen.event.node}`,
        );
        await sleep(1000);
        lab.startServe();
      };
      return { seen, during };
    }

    /** A kill -9 of the primary, the operator SIGKILLed mid-failover (see killOperatorAt): still safe. */
    async function failoverWithOperatorKilled(
      run: string,
      pred: (e: EventRecord, ctx: DuringContext) => boolean,
      what: string,
    ) {
      await waitConverged(lab, 120_000);
      const k = killOperatorAt(pred, what);
      const r = await failoverTrial(lab, {
        fault: 'kill',
        run,
        system: 'pgop',
        during: k.during,
        ...DEADLINES,
      });
      log(summary(r));
      expect(k.seen.killedAt, 'the operator was killed mid-failover').toBeDefined();
      await expectSafeFailover(lab, r);
    }

    it(
      'the operator SIGKILLed right after it fenced the failed primary, then restarted: the failover ' +
        'completes safely',
      async () => {
        await failoverWithOperatorKilled(
          'operator-killed-after-fence',
          (e, ctx) => e.node === ctx.oldPrimary && isFence(eventItem(e)),
          'fence',
        );
      },
    );

    it(
      'the operator SIGKILLed right after it promoted the new primary, then restarted: repoint, pgpool ' +
        'and rejoin still happen',
      async () => {
        await failoverWithOperatorKilled(
          'operator-killed-after-promote',
          (e) => isPromote(eventItem(e)),
          'promote',
        );
      },
    );

    // Runs before the double kill: when pgop cannot repair that, nothing after it starts from a
    // converged cluster.
    it(
      "two faults in a row: the primary killed while a standby's link is down; no promotion without the " +
        "sync quorum's evidence, safe once healed",
      async () => {
        await waitConverged(lab, 120_000);
        let partitioned: string | undefined;
        let healedAt = Infinity;
        const r = await failoverTrial(lab, {
          fault: 'kill',
          run: 'kill-and-partition',
          system: 'pgop',
          ...DEADLINES,
          // the standby's link goes down first, the primary is killed right after
          beforeFault: async (ctx) => {
            partitioned = ctx.standbys[ctx.standbys.length - 1]!;
            await lab.fault(partitioned, 'partition');
          },
          during: async () => {
            await sleep(6000);
            healedAt = await lab.fault(partitioned!, 'heal');
          },
        });
        log(summary(r));
        await expectSafeFailover(lab, r, { story: false });
        const ctx = `events (seconds after the kill):\n${eventTable(r.events, r.t0)}`;
        // A promotion while the partitioned standby was unreadable would have had to trust the
        // other standby alone: with ANY 1 of two, a commit may sit on the partitioned one only.
        // (The old primary itself taken back as primary trusts no standby: an urgent fence, planned
        // on the standbys' answers from just before the partition, is followed by that.)
        const early = r.events.filter(
          (e) => isPromote(e) && e.node !== r.oldPrimary && Date.parse(e.time) < healedAt,
        );
        log(`promotions while ${partitioned} was partitioned: ${early.length}`);
        expect(early, `no promotion while the quorum evidence was missing\n${ctx}`).toEqual([]);
        expect(
          r.events.every((e) => e.reason.length > 0),
          ctx,
        ).toBe(true);
      },
    );

    it(
      'two faults in a row: the new primary killed right after its promotion; the third node takes over, ' +
        'nothing acknowledged lost',
      async () => {
        await waitConverged(lab, 120_000);
        let second: string | undefined;
        let secondDeadAt = 0;
        const r = await failoverTrial(lab, {
          fault: 'kill',
          run: 'double-kill',
          system: 'pgop',
          ...DEADLINES,
          during: async (ctx) => {
            second = await ctx.firstPromoted;
            await lab.fault(second, 'kill');
            secondDeadAt = now();
          },
        });
        log(summary(r));
        expect(second).toBeDefined();
        const inWindow = r.lostDetail.filter(
          (l) => r.promotedAt !== null && l.ackAt >= r.promotedAt && l.ackAt <= secondDeadAt,
        );
        log(
          `acknowledged by ${second} in its non-strict window and lost with it: ${inWindow.length} ` +
            `(${inWindow.map((l) => `${l.writer}:${l.id}`).join(', ')})`,
        );
        await expectSafeFailover(lab, r, {
          story: false,
          // README: sync mode is non-strict; what the first new primary acknowledged alone before it
          // died may be lost, nothing else.
          lossAllowed: {
            from: r.promotedAt ?? r.t0,
            to: secondDeadAt,
            why: `for writes ${second} acknowledged between its promotion and its death`,
          },
        });
        // The story: the old primary fenced before the first promotion; the second primary fenced
        // before the next promotion; both failed nodes rejoin.
        const ev = r.events;
        const ctx = `events (seconds after the first fault):\n${eventTable(ev, r.t0)}`;
        const i = (p: (e: (typeof ev)[number]) => boolean, from = 0) =>
          ev.findIndex((e, j) => j >= from && p(e));
        const fence1 = i((e) => e.node === r.oldPrimary && isFence(e));
        const promote1 = i((e) => isPromote(e));
        expect(fence1, ctx).toBeGreaterThanOrEqual(0);
        expect(promote1, ctx).toBeGreaterThan(fence1);
        // The third node can take over only if it holds all the WAL the second one had when it was
        // promoted (sync mode, ANY 1: a commit the old primary acknowledged may sit on the second one
        // only). The first election says so: "promoting B: B at LSN x ..., ahead of C at LSN y".
        const lsns = [...(ev[promote1]?.reason ?? '').matchAll(/at LSN ([0-9A-F]+)\/([0-9A-F]+)/gi)].map(
          (m) => parseInt(m[1]!, 16) * 2 ** 32 + parseInt(m[2]!, 16),
        );
        const thirdBehind = lsns.length >= 2 && lsns.slice(1).every((l) => l < lsns[0]!);
        if (thirdBehind) {
          // then the second primary is brought back in place, never replaced by a node lacking commits
          log(`the third node was behind ${second} at the first promotion: ${second} is restarted in place`);
          if (r.finalPrimary === second)
            expect(
              ev.some((e) => e.node === second && /^recover\.restart-primary$/.test(e.rule)),
              ctx,
            ).toBe(true);
        } else {
          expect(r.finalPrimary, ctx).not.toBe(second);
        }
        const promoteFinal = i((e) => e.node === r.finalPrimary && isPromote(e));
        const fence2 = i((e) => e.node === second && isFence(e), promote1 + 1);
        if (r.finalPrimary !== r.oldPrimary && r.finalPrimary !== second) {
          expect(fence2, `${second} fenced before ${r.finalPrimary} was promoted\n${ctx}`).toBeGreaterThan(
            promote1,
          );
          expect(promoteFinal, ctx).toBeGreaterThan(fence2);
        }
        for (const n of [r.oldPrimary, second!].filter((x) => x !== r.finalPrimary)) {
          expect(
            ev.some((e) => e.node === n && isRejoin(e)),
            `${n} rejoined\n${ctx}`,
          ).toBe(true);
        }
      },
    );
  },
);
