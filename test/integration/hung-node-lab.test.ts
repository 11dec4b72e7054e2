// A node whose postgres hangs while `pgop serve` runs: SIGSTOP of the postmaster and its children
// (`pgop lab fault NODE hang`), so TCP connects still complete in the kernel and nothing answers.
// It costs its own probe budget and nobody else's. A hung standby: the other nodes keep being
// probed at the normal cadence and writes through pgpool go on; resumed, it streams again. A hung
// primary: fenced (SIGKILL ends stopped processes too) and a standby promoted, as after its link
// went down. The time to the failover is printed, asserted only against a generous bound
// (bench:failover measures it). Root only: scripts/test-integration.sh test/integration/hung-node-lab.test.ts

import { describe, expect, it } from 'vitest';
import type { ChaosLab } from '../helpers/chaos-lab.js';
import { chaosLog as log, useChaosLab } from '../helpers/chaos-suite.js';
import { IN_LAB } from '../helpers/lab-env.js';
import { currentPrimary, errorCounts, failoverTrial, waitConverged } from '../helpers/chaos-scenario.js';
import { eventTable, expectSafeFailover, summary } from '../helpers/chaos-assert.js';
import { missing, outage, sleep } from '../helpers/writer.js';

/** How long the standby stays hung: well past the miss budget (3 probes of 300 ms, lab spec). */
const HANG_MS = 6_000;

interface Pass {
  at: number;
  /** per node: consecutive misses and whether postgres answered */
  nodes: Record<string, { misses: number; running: boolean }>;
}

/** pgop's passes as the store records them (one observation per pass), polled every 20 ms. */
class PassWatch {
  readonly passes: Pass[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly lab: ChaosLab) {}

  start(): this {
    this.timer = setInterval(() => {
      const o = this.lab.observation();
      if (!o || o.at === this.passes[this.passes.length - 1]?.at) return;
      const nodes = Object.fromEntries(
        Object.values(o.nodes).map((n) => [n.name, { misses: n.misses, running: !!n.postgres?.running }]),
      );
      this.passes.push({ at: o.at, nodes });
    }, 20);
    return this;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  between(from: number, to: number): Pass[] {
    return this.passes.filter((p) => p.at >= from && p.at <= to);
  }
}

/** The longest time without a pass in [from, to] (the bounds count as passes). */
function longestGap(passes: Pass[], from: number, to: number): number {
  const ts = [from, ...passes.map((p) => p.at), to];
  return Math.max(...ts.slice(1).map((t, i) => t - ts[i]!));
}

describe.skipIf(!IN_LAB)('a hung node on the lab (root)', { timeout: 120_000 }, () => {
  const lab = useChaosLab({ name: 'hung', network: '10.93.0.0/24', mode: 'sync' });

  it('a hung standby: the others keep being probed, writes go on; resumed, it streams again', async () => {
    await waitConverged(lab, 60_000);
    const { primary, standbys } = await currentPrimary(lab);
    const victim = standbys[0]!;
    const others = lab.nodes.map((n) => n.name).filter((n) => n !== victim);
    const before = lab.lastEventId();
    const pool = lab.writer({ name: 'pool', run: 'hang-standby', via: 'pool' }).start();
    const watch = new PassWatch(lab).start();
    let t0 = 0;
    let resumedAt = 0;
    try {
      await pool.firstAck();
      await sleep(500);
      t0 = await lab.fault(victim, 'hang');
      await sleep(HANG_MS);
      resumedAt = await lab.fault(victim, 'resume');
      await waitConverged(lab, 60_000);
      await sleep(300);
    } finally {
      if (!resumedAt) await lab.fault(victim, 'resume').catch(() => undefined);
      watch.stop();
      await pool.stop();
    }
    const events = (await lab.eventsCli()).filter((e) => e.id > before);
    const during = watch.between(t0, resumedAt);
    const gap = longestGap(during, t0, resumedAt);
    const othersMissed = during.filter((p) => others.some((n) => (p.nodes[n]?.misses ?? 1) > 0));
    const o = outage(pool.acks, t0);
    const errs = Object.entries(errorCounts(pool, t0))
      .map(([m, n]) => `${n}x ${m.slice(0, 100)}`)
      .join(' | ');
    const ctx =
      `hung ${victim} for ${HANG_MS} ms: ${during.length} passes, longest gap ${gap} ms, ` +
      `${othersMissed.length} with a miss on ${others.join('/')}; victim misses ` +
      `${during.map((p) => p.nodes[victim]?.misses).join(',')}\n` +
      `write gap ${(o.ms / 1000).toFixed(2)} s, acks ${pool.acks.length}` +
      `${errs ? `\npgpool writer errors after the hang: ${errs}` : ''}\n` +
      `events (s after the hang):\n${eventTable(events, t0)}`;
    log(ctx);
    // probed on: about one pass per probe interval (250 ms), none held up by the hung node
    expect(during.length, ctx).toBeGreaterThanOrEqual(HANG_MS / 1000);
    expect(gap, ctx).toBeLessThan(3_000);
    expect(othersMissed, ctx).toEqual([]);
    // the hung standby was seen failing (its misses counted up), not taken for healthy
    expect(Math.max(...during.map((p) => p.nodes[victim]?.misses ?? 0)), ctx).toBeGreaterThanOrEqual(3);
    // writes through pgpool went on while it was still hung
    expect(
      pool.acks.some((a) => a.ackAt > resumedAt - 1000 && a.ackAt <= resumedAt),
      ctx,
    ).toBe(true);
    expect(await lab.primaries(), ctx).toEqual([primary]);
    expect((await lab.replicas(primary))[victim], ctx).toBe('streaming');
    expect(missing(pool.acks, await lab.ids(primary, 'hang-standby', 'pool')), ctx).toEqual([]);
  });

  it('a hung primary: fenced and a standby promoted, nothing acknowledged lost', async () => {
    await waitConverged(lab, 60_000);
    const r = await failoverTrial(lab, {
      fault: 'hang',
      run: 'hang-primary',
      system: 'pgop',
      recoverTimeoutMs: 15_000,
      convergeTimeoutMs: 60_000,
    });
    const tookMs = r.promotedAt === null ? null : r.promotedAt - r.t0;
    log(`hung primary ${r.oldPrimary}: promoted ${r.newPrimary} after ${tookMs} ms (${r.promotionSource})`);
    log(summary(r));
    expect(tookMs, summary(r)).not.toBeNull();
    expect(tookMs!, summary(r)).toBeLessThan(15_000);
    await expectSafeFailover(lab, r);
  });
});
