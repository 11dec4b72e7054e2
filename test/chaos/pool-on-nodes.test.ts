// Chaos on the real lab with pgpool on every database node (pgpool.onNodes, the seed's layout)
// behind a virtual IP, pgop serve running and a writer going through the address the whole time:
// the holder's pgpool killed (the primary stays where it is), then the holder's whole machine
// stopped twice (the second time the holder is likely the primary: a database failover and an
// address move at once), then its link down and healed. After each: the address is on another
// node alone (sampled every 50 ms), writes through it resumed, nothing acknowledged was lost
// (sync mode), never two primaries, and the old holder is back with its pgpool as a spare. Times
// are printed, never asserted. Then kill -9 of the primary, held up behind an alias on every
// node's pgpool while it rejoins; last, a standby's link down while the holder's children connect
// to it. Root only: scripts/test-integration.sh test/chaos.
// Budget: ~2 min (one cluster, six trials).

import { describe, expect, it } from 'vitest';
import { poolHosts } from '../../src/spec/types.js';
import { CHAOS_DEADLINES as DEADLINES, chaosLog as log, useChaosLab } from '../helpers/chaos-suite.js';
import { IN_LAB } from '../helpers/lab-env.js';
import {
  currentPrimary,
  failoverTrial,
  poolHostTrial,
  waitConverged,
  type PoolTrialResult,
} from '../helpers/chaos-scenario.js';
import { expectSessionsBackAfterSilentStandby } from '../helpers/silent-standby.js';
import { expectSafeFailover, poolSaid, reportPoolTrial, summary } from '../helpers/chaos-assert.js';

describe.skipIf(!IN_LAB)(
  'chaos: pgpool on every node behind a virtual IP (root)',
  { timeout: 300_000 },
  () => {
    const lab = useChaosLab({ name: 'cn', network: '10.96.0.0/24', mode: 'sync', poolOnNodes: true });

    const report = (r: PoolTrialResult) => reportPoolTrial(r, log);

    const common = (r: PoolTrialResult, ctx: string) => {
      expect(r.newHolder, ctx).not.toBeNull();
      expect(r.newHolder, ctx).not.toBe(r.holder);
      expect(r.maxVipHolders, `never two holders\n${ctx}`).toBeLessThanOrEqual(1);
      expect(r.lostAcked, ctx).toEqual([]);
      expect(r.maxPrimaries, ctx).toBe(1);
      expect(r.converged, ctx).toBe(true);
      expect(
        r.events.some((e) => e.rule === 'pool.vip-holder'),
        `pgop moved it (rule pool.vip-holder)\n${ctx}`,
      ).toBe(true);
    };

    it("the holder's pgpool killed: the address moves to another node, the primary stays", async () => {
      await waitConverged(lab, 120_000);
      const r = await poolHostTrial(lab, { fault: 'kill', run: 'nodes-kill', system: 'pgop' });
      const ctx = report(r);
      expect(r.notes, ctx).toEqual([]);
      common(r, ctx);
      expect(r.finalPrimary, `a pgpool fault moves no primary\n${ctx}`).toBe(r.primary);
    });

    // the second stop finds the address on the primary (the move prefers a node routing to it)
    const MACHINE_FAULTS = [
      { fault: 'stop', run: 'nodes-stop', title: 'stopped' },
      { fault: 'stop', run: 'nodes-stop-again', title: 'stopped (again: now the primary, likely)' },
      { fault: 'partition', run: 'nodes-partition', title: 'link down, then healed' },
    ] as const;
    for (const { fault, run, title } of MACHINE_FAULTS) {
      const what = `the holder's machine ${title}`;
      it(`${what}: the address moves, a lost primary is replaced, nothing lost`, async () => {
        await waitConverged(lab, 120_000);
        const r = await poolHostTrial(lab, { fault, run, system: 'pgop' });
        const ctx = report(r);
        // the holder may be the primary: then the primary moves too, which the trial notes
        const primaryMoved = r.holder === r.primary;
        expect(
          r.notes.filter((n) => !(primaryMoved && n.startsWith('primary at the end'))),
          ctx,
        ).toEqual([]);
        common(r, ctx);
        if (primaryMoved) expect(r.finalPrimary, ctx).not.toBe(r.primary);
        else expect(r.finalPrimary, ctx).toBe(r.primary);
      });
    }

    // a route on a node would cut its replication too: each pgpool sends its connects to the old
    // primary to a standby instead (standby-death.md §4d), so its return needs no attach, which
    // would end the sessions running a query on that pgpool
    it("kill -9 of the primary: held up by an alias on each node's pgpool, no attach", async () => {
      await waitConverged(lab, 120_000);
      const logFrom = lab.serveLogSize();
      const r = await failoverTrial(lab, {
        fault: 'kill-postgres',
        run: 'nodes-kill-primary',
        system: 'pgop',
        ...DEADLINES,
      });
      log(summary(r));
      await expectSafeFailover(lab, r);
      // its own pgpool went with the fence: started again, it attaches the node (no client there)
      const said = poolSaid(lab.serveLogFrom(logFrom), r.oldPrimary, r.oldPrimary);
      expect(said.text, said.why).toMatch(/old primary attached again behind an alias to pg\d+/);
      expect(said.text, said.why).toContain('alias of a standby removed, no attach');
      expect(said.text, said.why).not.toContain('pgpool: attach sent');
      expect(said.text, said.why).not.toContain('cannot alias');
      for (const h of poolHosts(lab.spec())) expect(await lab.aliasesOn(h.name), h.name).toEqual([]);
    });

    // detached here, not cut off by a route (a route on a node would cut its replication too):
    // the children caught on it are freed beside the detach (standby-death.md §4e)
    it("a standby's link down as the holder's children connect to it: new sessions work again", async () => {
      await waitConverged(lab, 120_000);
      const holder = await lab.vipHolder();
      const victim = (await currentPrimary(lab)).standbys.find((n) => n !== holder)!;
      await expectSessionsBackAfterSilentStandby(lab, victim);
    });
  },
);
