// Which earlier-timeline segments a promoted primary pushes (src/drivers/backup/timeline-wal.ts).

import { describe, expect, it } from 'vitest';
import { historyFileOf, segmentsBeforeSwitches } from '../../src/drivers/backup/timeline-wal.js';

const MB16 = 16 * 2 ** 20;

describe('segmentsBeforeSwitches', () => {
  it("takes the parent's segments before the switch point's, never the partial one or what follows", () => {
    const files = [
      '000000010000000000000005',
      '000000010000000000000006',
      '000000010000000000000007', // holds the switch point (0/7000100): continues on timeline 2
      '000000010000000000000008', // recycled ahead of the switch: stale content
      '000000010000000000000007.partial',
      '000000020000000000000007',
      '00000002.history',
      'archive_status',
    ];
    const history = '1\t0/7000100\tno recovery target specified\n';
    expect(segmentsBeforeSwitches(files, history, MB16)).toEqual([
      '000000010000000000000005',
      '000000010000000000000006',
    ]);
  });

  it('follows every switch of a longer history, and the segment size', () => {
    const files = ['000000010000000100000000', '0000000100000000000000FF', '000000020000000100000001'];
    const history = '1\t1/1000000\treason\n2\t1/2800000\treason\n';
    // 16 MB: 1/1000000 is segment 0x101, 1/2800000 is 0x102
    expect(segmentsBeforeSwitches(files, history, MB16)).toEqual([
      '0000000100000000000000FF',
      '000000010000000100000000',
      '000000020000000100000001',
    ]);
    // 64 MB segments: 64 per log; 1/1000000 is segment 64 (file ...0100000000), so only the one before
    expect(
      segmentsBeforeSwitches(['00000001000000000000003F', '000000010000000100000000'], history, 4 * MB16),
    ).toEqual(['00000001000000000000003F']);
  });

  it('takes nothing without a history (timeline 1, or the file missing)', () => {
    expect(segmentsBeforeSwitches(['000000010000000000000005'], '', MB16)).toEqual([]);
  });

  it('names history files as postgres does', () => {
    expect(historyFileOf(2)).toBe('00000002.history');
    expect(historyFileOf(26)).toBe('0000001A.history');
  });
});
