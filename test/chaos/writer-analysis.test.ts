// The arithmetic the chaos tests and bench:failover report: write unavailability from the acks
// around a fault, acknowledged ids missing on a node. Pure; runs everywhere.

import { describe, expect, it } from 'vitest';
import { acksAfter, missing, outage, type Ack } from '../helpers/writer.js';

const acks = (...times: number[]): Ack[] => times.map((t, i) => ({ id: i + 1, sentAt: t - 1, ackAt: t }));

describe('outage()', () => {
  it('is the longest gap from the last ack at or before the fault', () => {
    // steady writes every 10 ms, fault at 105, nothing until 900, then steady again
    const a = acks(80, 90, 100, 900, 910, 920);
    expect(outage(a, 105)).toEqual({ lastBefore: 100, firstAfter: 900, ms: 800 });
  });

  it('counts stragglers acknowledged just after the fault as before the outage', () => {
    const a = acks(100, 110, 112, 700, 710);
    expect(outage(a, 105)).toEqual({ lastBefore: 100, firstAfter: 700, ms: 588 });
  });

  it('picks a later, longer gap (a second outage during the repair is unavailability too)', () => {
    const a = acks(100, 300, 310, 1500, 1510);
    expect(outage(a, 105).ms).toBe(1190);
    // ... unless the window ends before it
    expect(outage(a, 105, 310).ms).toBe(200);
  });

  it(
    'is infinite when nothing was acknowledged after the fault, ' + 'and counts a trailing gap up to `until`',
    () => {
      expect(outage(acks(100), 105).ms).toBe(Infinity);
      expect(outage(acks(100, 200), 105, 1200)).toEqual({ lastBefore: 100, firstAfter: null, ms: 1000 });
    },
  );

  it('does not depend on the order acks were recorded in (hedged attempts finish out of order)', () => {
    const a = acks(900, 100, 910, 90);
    expect(outage(a, 105).ms).toBe(800);
  });
});

describe('missing() and acksAfter()', () => {
  it('lists acknowledged ids absent from a node, sorted', () => {
    const a: Ack[] = [5, 3, 9, 1].map((id) => ({ id, sentAt: 0, ackAt: id }));
    expect(missing(a, [1, 9])).toEqual([3, 5]);
    expect(missing(a, [1, 3, 5, 9, 11])).toEqual([]);
  });

  it('counts acks strictly after a moment', () => {
    expect(acksAfter(acks(100, 200, 300), 200).map((x) => x.ackAt)).toEqual([300]);
  });
});
