// Chaos on the real lab with pgpool on two pool hosts behind a virtual IP, pgop serve running and a
// writer going through the virtual IP the whole time: the holder's pgpool killed, the holder's
// host stopped, the holder's link down (then healed). After each: the address moved to the other
// pool host, never two pool hosts held it at once (sampled every 50 ms inside the lab), writes
// through the address resumed and nothing acknowledged was lost, the primary stayed where it
// was, and the old holder is back as a spare (its pgpool listening, pgop Healthy). Times are
// printed, never asserted (bench:failover measures them under load). And a client that waits for an
// answer when the holder's link goes down is told its session is gone (the new holder's tickle),
// instead of waiting for TCP keepalive. Root only: scripts/test-integration.sh test/chaos.
// Budget: ~4 min (one cluster, four trials).

import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { chaosLog as log, useChaosLab } from '../helpers/chaos-suite.js';
import { IN_LAB } from '../helpers/lab-env.js';
import { poolHostTrial, waitConverged, type PoolFault } from '../helpers/chaos-scenario.js';
import { reportPoolTrial } from '../helpers/chaos-assert.js';
import { destroyClient, now, sleep } from '../helpers/writer.js';

const FAULTS: { fault: PoolFault; title: string }[] = [
  { fault: 'kill', title: "the holder's pgpool killed (-9)" },
  { fault: 'stop', title: "the holder's host stopped" },
  { fault: 'partition', title: "the holder's link down, then healed" },
];

describe.skipIf(!IN_LAB)('chaos: the virtual IP across two pool hosts (root)', { timeout: 300_000 }, () => {
  const lab = useChaosLab({ name: 'cv', network: '10.94.0.0/24', mode: 'sync', poolHosts: 2 });

  for (const { fault, title } of FAULTS) {
    it(`${title}: the address moves to the other pool host alone, writes resume, nothing lost`, async () => {
      await waitConverged(lab, 120_000);
      const r = await poolHostTrial(lab, { fault, run: `vip-${fault}`, system: 'pgop' });
      const ctx = reportPoolTrial(r, log);
      expect(r.notes, ctx).toEqual([]);
      expect(r.newHolder, ctx).not.toBeNull();
      expect(r.newHolder, ctx).not.toBe(r.holder);
      expect(r.maxVipHolders, `never two holders\n${ctx}`).toBeLessThanOrEqual(1);
      expect(r.lostAcked, ctx).toEqual([]);
      expect(r.maxPrimaries, ctx).toBe(1);
      expect(r.finalPrimary, `a pool fault moves no primary\n${ctx}`).toBe(r.primary);
      expect(r.converged, ctx).toBe(true);
      expect(
        r.events.some((e) => e.rule === 'pool.vip-holder'),
        `pgop moved it (rule pool.vip-holder)\n${ctx}`,
      ).toBe(true);
    });
  }

  it('a client waiting on the holder when its link goes down is told its session ended', async () => {
    await waitConverged(lab, 120_000);
    const holder = await lab.vipHolder();
    // no keepalive, as most clients: the holder's answer never comes, and nothing else would end it
    const client = new pg.Client({ ...lab.poolConfig(), application_name: 'waiting' });
    client.on('error', () => undefined);
    await client.connect();
    try {
      const ended = client.query('SELECT pg_sleep(120)').then(
        () => 'answered',
        (e: unknown) => (e as Error).message,
      );
      // the query reached pgpool (acknowledged): from now on the client only listens. pgop reads
      // the holder's clients every second over SSH: one that connected less than a read (and its
      // round trip) ago may not be in the list yet (README), so the fault waits for two reads
      await sleep(2_500);
      const t0 = await lab.fault(holder, 'partition');
      const outcome = await Promise.race([ended, sleep(30_000).then(() => 'still waiting after 30 s')]);
      log(
        `waiting client: "${outcome}" ${((now() - t0) / 1000).toFixed(2)} s after ${holder}'s link went down`,
      );
      expect(outcome).not.toBe('still waiting after 30 s');
      expect(outcome).not.toBe('answered');
      expect(await lab.vipHolder()).not.toBe(holder);
    } finally {
      destroyClient(client);
      await lab.fault(holder, 'heal');
    }
    await waitConverged(lab, 180_000);
  });
});
