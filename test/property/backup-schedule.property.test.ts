// Property tests of the backup schedule (src/plan/backup-schedule.ts): for random schedules drawn
// from a small set of valid expressions, random times and random last starts (in the past, or
// in the future as after a clock going back):
//   (a) a due backup's fire time lies at or before now and after the start covering its type
//       (or it is the first full, due now, when nothing ever started), and it is the latest
//       fire time: the next one after it is later than now;
//   (b) once the due type is recorded as started now, neither it nor a weaker type is due again
//       at the same now;
//   (c) nothing throws, and nextBackup lies after now (or is the first full, due now).
//
// Replay or explore:
//   PGOP_PROPERTY_SEED=<seed> PGOP_PROPERTY_RUNS=<n> npx vitest run test/property/backup-schedule

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  cronError,
  dueBackup,
  nextBackup,
  type BackupSchedule,
  type BackupType,
  type LastBackupStarts,
} from '../../src/plan/backup-schedule.js';

const SEED =
  process.env.PGOP_PROPERTY_SEED === 'random'
    ? Date.now() % 2 ** 31
    : Number(process.env.PGOP_PROPERTY_SEED ?? 2024);
const RUNS = Number(process.env.PGOP_PROPERTY_RUNS ?? 500);

const TYPES: readonly BackupType[] = ['full', 'diff', 'incr'];
const EXPRESSIONS = [
  '0 1 * * *',
  '0 1 * * 0',
  '0 */6 * * *',
  '*/15 * * * *',
  '*/20 * * * * *',
  '30 2 1 * *',
  '0 0 29 2 *',
  '@hourly',
];
const DAY = 86_400_000;

const expr = fc.option(fc.constantFrom(...EXPRESSIONS), { nil: undefined });
const schedule: fc.Arbitrary<BackupSchedule> = fc.record({ full: expr, diff: expr, incr: expr });
const now = fc.integer({ min: Date.UTC(2020, 0, 1), max: Date.UTC(2035, 0, 1) });
/** Offsets from now: mostly the past (up to 400 days, past a yearly fire), some the future. */
const offset = fc.option(fc.integer({ min: -400 * DAY, max: DAY }), { nil: undefined });
const offsets = fc.record({ full: offset, diff: offset, incr: offset });

function lastFrom(t: number, o: Partial<Record<BackupType, number>>): LastBackupStarts {
  const last: LastBackupStarts = {};
  for (const type of TYPES) {
    const d = o[type];
    if (d !== undefined) last[type] = t + d;
  }
  return last;
}

/** Written out here rather than imported: the test states the covering rule on its own. */
function covering(type: BackupType, last: LastBackupStarts): number | undefined {
  const starts = TYPES.slice(0, TYPES.indexOf(type) + 1).flatMap((t) => last[t] ?? []);
  return starts.length > 0 ? Math.max(...starts) : undefined;
}

const rank = (t: BackupType): number => TYPES.indexOf(t);

describe('backup schedule properties', () => {
  it('every expression the schedules use is valid', () => {
    for (const e of EXPRESSIONS) expect(cronError(e), e).toBeNull();
  });

  it('(a) a due backup is due at its latest fire time, after the covering start', () => {
    fc.assert(
      fc.property(schedule, now, offsets, (s, t, o) => {
        const last = lastFrom(t, o);
        const due = dueBackup(s, t, last);
        if (!due) return;
        expect(due.dueAt).toBeLessThanOrEqual(t);
        if (Object.keys(last).length === 0) {
          expect(due).toMatchObject({ type: 'full', dueAt: t });
          return;
        }
        const expression = s[due.type];
        expect(expression).toBeDefined();
        const c = covering(due.type, last);
        if (c !== undefined) expect(due.dueAt).toBeGreaterThan(c);
        const next = nextBackup({ [due.type]: expression }, due.dueAt, last);
        expect(next?.at).toBeGreaterThan(t);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  it('(b) once started at now, that type and the weaker ones are not due again at now', () => {
    fc.assert(
      fc.property(schedule, now, offsets, (s, t, o) => {
        const last = lastFrom(t, o);
        const due = dueBackup(s, t, last);
        if (!due) return;
        const again = dueBackup(s, t, { ...last, [due.type]: t });
        if (again) expect(rank(again.type)).toBeLessThan(rank(due.type));
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  it('(c) never throws; the next backup lies after now, or is the first full due now', () => {
    fc.assert(
      fc.property(schedule, now, offsets, (s, t, o) => {
        const last = lastFrom(t, o);
        const scheduled = TYPES.some((type) => s[type] !== undefined);
        expect(() => dueBackup(s, t, last)).not.toThrow();
        const next = nextBackup(s, t, last);
        if (!scheduled) {
          expect(next).toBeUndefined();
          expect(dueBackup(s, t, last)).toBeUndefined();
        } else if (Object.keys(last).length === 0) {
          expect(next).toEqual({ type: 'full', at: t });
        } else {
          expect(next?.at).toBeGreaterThan(t);
        }
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });
});
