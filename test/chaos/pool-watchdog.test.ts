// Chaos on the real lab with pgpool's OWN watchdog moving the virtual IP between two pool hosts
// (spec.pgpool.watchdog.enabled), pgop serve running and a writer going through the address:
// pgop writes the root-owned address script and sudo rule (each lab node's own, never this
// machine's), the watchdogs' leader holds the address, and pgop never moves it (rule
// pool.vip-holder stands down). The holder's pgpool killed: pgop restarts it without the
// address, and the watchdogs' new leader (either host) brings it up. The holder's link down:
// the other host takes it. Times and the most holders seen are printed, not asserted: pgop
// fences no old holder in this mode (bench:failover's watchdog rows count two holders), and a
// client may wait for its ARP entry after two holders (printed). Root only:
// scripts/test-integration.sh test/chaos. Budget: ~3 min (one cluster, two trials).

import { statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chaosLog as log, useChaosLab } from '../helpers/chaos-suite.js';
import { IN_LAB } from '../helpers/lab-env.js';
import { poolHostTrial, waitConverged, type PoolFault } from '../helpers/chaos-scenario.js';
import { reportPoolTrial } from '../helpers/chaos-assert.js';
import { WATCHDOG_SUDOERS, WATCHDOG_VIP_SCRIPT } from '../../src/drivers/pgpool/watchdog.js';

const FAULTS: { fault: PoolFault; title: string }[] = [
  { fault: 'kill', title: "the holder's pgpool killed (-9)" },
  { fault: 'partition', title: "the holder's link down (healed after 10 s)" },
];

describe.skipIf(!IN_LAB)(
  "chaos: pgpool's own watchdog moves the virtual IP (root)",
  { timeout: 300_000 },
  () => {
    const lab = useChaosLab({
      name: 'cw',
      network: '10.99.0.0/24',
      mode: 'sync',
      poolHosts: 2,
      pgpool: { watchdog: { enabled: true } },
    });

    it("the address script and sudo rule are root's and each node's own; one watchdog holds it", async () => {
      await waitConverged(lab, 120_000);
      for (const h of lab.poolHosts) {
        const dir = join(lab.stateDir, lab.name, h.name);
        const script = statSync(join(dir, 'etc-pgpool2', WATCHDOG_VIP_SCRIPT.split('/').pop()!));
        const rule = statSync(join(dir, 'etc-sudoers', WATCHDOG_SUDOERS.split('/').pop()!));
        const parent = statSync(join(dir, 'etc-pgpool2'));
        expect([script.uid, script.mode & 0o777], h.name).toEqual([0, 0o755]);
        expect([rule.uid, rule.mode & 0o777], h.name).toEqual([0, 0o440]);
        expect([parent.uid, parent.mode & 0o022], `${h.name}: nobody but root writes there`).toEqual([0, 0]);
      }
      expect(existsSync(WATCHDOG_SUDOERS), "never this machine's own sudo rule").toBe(false);
      expect((await lab.vipHolders()).map((h) => h.host)).toHaveLength(1);
    });

    for (const { fault, title } of FAULTS) {
      it(`${title}: the watchdogs' leader holds the address, writes resume, nothing lost`, async () => {
        await waitConverged(lab, 120_000);
        const r = await poolHostTrial(lab, {
          fault,
          run: `wd-${fault}`,
          system: 'pgop',
          healAfterMs: 10_000,
          // after the heal both hosts held the address; the one that keeps it announces nothing,
          // so the client's ARP entry may name the other until Linux checks it (15-45 s, then a
          // probe): pgpool's watchdog, not pgop, which announces every address it moves
          staleArpWaitMs: 60_000,
        });
        const ctx = reportPoolTrial(r, log);
        expect(r.notes, ctx).toEqual([]);
        // killed: pgop restarts that pgpool (without the address) within a second or so, and
        // the watchdogs may elect it again; cut off: the other host must take the address
        if (fault === 'partition') expect(r.newHolder, ctx).not.toBe(r.holder);
        expect((await lab.vipHolders()).length, `one holder in the end\n${ctx}`).toBe(1);
        expect(r.lostAcked, ctx).toEqual([]);
        expect(r.maxPrimaries, ctx).toBe(1);
        expect(r.finalPrimary, `a pool fault moves no primary\n${ctx}`).toBe(r.primary);
        expect(r.converged, ctx).toBe(true);
        expect(
          r.events.filter((e) => e.rule === 'pool.vip-holder'),
          `pgop left the address to the watchdog\n${ctx}`,
        ).toEqual([]);
      });
    }
  },
);
