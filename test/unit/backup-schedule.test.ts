// Scheduled backups (src/plan/backup-schedule.ts): which cron expressions a spec may use, which
// backup is due at a given time given when each type last started, and which one comes next.

import { describe, expect, it } from 'vitest';
import {
  backupJobHeadline,
  cronError,
  dueBackup,
  labelOfBackupJob,
  lastBackupStarts,
  nextBackup,
} from '../../src/plan/backup-schedule.js';

const at = (iso: string): number => Date.parse(iso);
const DAILY_FULL = '0 1 * * *';
const HOURLY_INCR = '0 * * * *';

describe('cronError', () => {
  it.each([
    ['0 1 * * *'],
    ['30 2 * * 0'],
    ['*/20 * * * * *'],
    ['0 0 1 * * *'],
    ['0 0 29 2 *'],
    ['  0 1 * * *  '],
    ['@daily'],
    ['@hourly'],
    ['0 1 * * THU'],
  ])('accepts %j', (expr) => {
    expect(cronError(expr)).toBeNull();
  });

  it.each([
    ['', /^empty cron expression$/],
    ['   ', /^empty cron expression$/],
    ['0 1 * *', /expected 5 fields .* or 6 with seconds first, got 4/],
    ['*', /got 1$/],
    ['0 0 1 * * * 2026', /got 7$/],
    ['61 * * * *', /^invalid cron expression: .*61/],
    ['0 0 30 2 *', /^invalid cron expression: /],
    ['*/0 * * * *', /^invalid cron expression: /],
    ['0 1 * * funday', /^invalid cron expression: /],
    ['@reboot', /^invalid cron expression: /],
    ['* * * * * *', /^fires every second: the seconds field must not be "\*"/],
    ['*/1 * * * * *', /^fires every second/],
    ['@secondly', /^fires every second/],
    ['H 1 * * *', /^hashed values \(H\) are not supported/],
    ['0 H/6 * * *', /^hashed values \(H\) are not supported/],
  ])('rejects %j', (expr, msg) => {
    expect(cronError(expr)).toMatch(msg);
  });
});

describe('dueBackup', () => {
  it('a scheduled full whose fire time passed since the last full is due, at that fire time', () => {
    const due = dueBackup({ full: DAILY_FULL }, at('2026-12-04T01:30:00Z'), {
      full: at('2026-12-03T01:00:02Z'),
    });
    expect(due).toEqual({
      type: 'full',
      dueAt: at('2026-12-04T01:00:00Z'),
      reason: 'scheduled full backup (cron "0 1 * * *", due 2026-12-04T01:00:00Z)',
    });
  });

  it('is not due again once started after the fire time', () => {
    const last = { full: at('2026-12-04T01:00:02Z') };
    expect(dueBackup({ full: DAILY_FULL }, at('2026-12-04T01:30:00Z'), last)).toBeUndefined();
    expect(dueBackup({ full: DAILY_FULL }, at('2026-12-05T00:59:59.999Z'), last)).toBeUndefined();
    expect(dueBackup({ full: DAILY_FULL }, at('2026-12-05T01:00:00Z'), last)?.dueAt).toBe(
      at('2026-12-05T01:00:00Z'),
    );
  });

  it('a fire time exactly at now is due', () => {
    const now = at('2026-12-04T01:00:00Z');
    expect(dueBackup({ full: DAILY_FULL }, now, { full: now - 86_400_000 })?.dueAt).toBe(now);
  });

  it('a full covers a diff and an incr; a diff covers an incr', () => {
    const now = at('2026-12-04T01:30:00Z');
    const sched = { diff: '0 1 * * *', incr: HOURLY_INCR };
    const old = at('2026-12-01T00:00:00Z');
    expect(dueBackup(sched, now, { full: at('2026-12-04T01:10:00Z'), diff: old, incr: old })).toBeUndefined();
    expect(
      dueBackup({ incr: HOURLY_INCR }, now, { diff: at('2026-12-04T01:10:00Z'), incr: old }),
    ).toBeUndefined();
    // a weaker start does not cover a stronger type
    expect(dueBackup(sched, now, { diff: old, incr: at('2026-12-04T01:10:00Z') })?.type).toBe('diff');
  });

  it('a type never started, while a weaker one was, is due at its latest fire time', () => {
    const due = dueBackup({ full: '0 1 * * 0' }, at('2026-12-04T12:00:00Z'), {
      incr: at('2026-12-04T11:00:00Z'),
    });
    expect(due?.type).toBe('full');
    expect(due?.dueAt).toBe(at('2026-11-29T01:00:00Z')); // the Sunday before
  });

  it('when several types are due, the strongest wins', () => {
    const now = at('2026-12-06T01:00:30Z'); // a Sunday
    const old = at('2026-11-01T00:00:00Z');
    const sched = { full: '0 1 * * 0', diff: '0 1 * * *', incr: HOURLY_INCR };
    expect(dueBackup(sched, now, { full: old, diff: old, incr: old })?.type).toBe('full');
    const afterFull = { full: at('2026-12-06T01:00:10Z'), diff: old, incr: old };
    expect(dueBackup(sched, now, afterFull)).toBeUndefined();
    expect(dueBackup(sched, at('2026-12-06T02:00:00Z'), afterFull)?.type).toBe('incr');
    expect(dueBackup(sched, at('2026-12-07T01:00:00Z'), afterFull)?.type).toBe('diff');
  });

  it('a last start in the future (the clock went back) is not due: no storm', () => {
    const now = at('2026-12-04T01:30:00Z');
    const future = at('2026-12-04T05:00:00Z');
    const sched = { full: DAILY_FULL, incr: '*/20 * * * * *' };
    expect(dueBackup(sched, now, { full: future })).toBeUndefined();
    expect(dueBackup(sched, now, { full: at('2026-12-01T00:00:00Z'), incr: future })?.type).toBe('full');
    expect(dueBackup({ incr: '*/20 * * * * *' }, now, { diff: future, incr: now - 60_000 })).toBeUndefined();
  });

  it('no backup ever started: a first full, due now, whatever the schedule', () => {
    const now = at('2026-12-04T01:30:00Z');
    const first = { type: 'full', dueAt: now, reason: 'no backup yet: a first full backup' };
    expect(dueBackup({ incr: HOURLY_INCR }, now, {})).toEqual(first);
    expect(dueBackup({ full: '0 1 1 1 *', diff: DAILY_FULL }, now, {})).toEqual(first);
  });

  it('nothing scheduled (or nothing valid): nothing due, even with no backup yet', () => {
    const now = at('2026-12-04T01:30:00Z');
    expect(dueBackup({}, now, {})).toBeUndefined();
    expect(dueBackup({ full: 'nope', incr: '* * * * * *' }, now, {})).toBeUndefined();
  });

  it('an invalid entry is skipped, the others still count', () => {
    const now = at('2026-12-04T01:30:00Z');
    const due = dueBackup({ full: 'nope', incr: HOURLY_INCR }, now, { incr: at('2026-12-04T00:10:00Z') });
    expect(due?.type).toBe('incr');
    expect(due?.dueAt).toBe(at('2026-12-04T01:00:00Z'));
  });

  it('a seconds field: every 20 s, each fire once', () => {
    const sched = { incr: '*/20 * * * * *' };
    const now = at('2026-12-04T00:00:45.500Z');
    const due = dueBackup(sched, now, { incr: at('2026-12-04T00:00:20.100Z') });
    expect(due).toEqual({
      type: 'incr',
      dueAt: at('2026-12-04T00:00:40Z'),
      reason: 'scheduled incr backup (cron "*/20 * * * * *", due 2026-12-04T00:00:40Z)',
    });
    expect(dueBackup(sched, now, { incr: now })).toBeUndefined();
    expect(dueBackup(sched, at('2026-12-04T00:00:59.999Z'), { incr: now })).toBeUndefined();
    expect(dueBackup(sched, at('2026-12-04T00:01:00Z'), { incr: now })?.dueAt).toBe(
      at('2026-12-04T00:01:00Z'),
    );
  });

  it('evaluates cron in UTC', () => {
    const due = dueBackup({ full: '0 1 * * *' }, at('2026-07-01T01:00:00Z'), {
      full: at('2026-06-01T00:00:00Z'),
    });
    expect(due?.dueAt).toBe(at('2026-07-01T01:00:00Z'));
  });
});

describe('lastBackupStarts', () => {
  it("the later of this store's job and the repository's listing, per type", () => {
    const jobs = { 'backup.full': 5000, 'backup.incr': 100 };
    const listed = [
      { type: 'full' as const, startedAt: 4000 },
      { type: 'incr' as const, startedAt: 300 },
      { type: 'diff' as const, startedAt: 200 },
    ];
    expect(lastBackupStarts(jobs, listed)).toEqual({ full: 5000, diff: 200, incr: 300 });
    expect(lastBackupStarts({}, [])).toEqual({});
  });
});

describe('nextBackup', () => {
  const old = { full: at('2026-11-01T00:00:00Z') };

  it('the earliest fire time after now over the types', () => {
    const sched = { full: '0 1 * * 0', diff: DAILY_FULL, incr: HOURLY_INCR };
    expect(nextBackup(sched, at('2026-12-04T01:30:00Z'), old)).toEqual({
      type: 'incr',
      at: at('2026-12-04T02:00:00Z'),
    });
    expect(nextBackup({ full: '0 1 * * 0', diff: DAILY_FULL }, at('2026-12-04T01:30:00Z'), old)).toEqual({
      type: 'diff',
      at: at('2026-12-05T01:00:00Z'),
    });
  });

  it('on a tie the stronger type; a fire time at now is not next', () => {
    const sched = { full: '0 1 * * 0', diff: DAILY_FULL, incr: HOURLY_INCR };
    expect(nextBackup(sched, at('2026-12-06T00:30:00Z'), old)).toEqual({
      type: 'full',
      at: at('2026-12-06T01:00:00Z'),
    });
    expect(nextBackup(sched, at('2026-12-06T01:00:00Z'), old)).toEqual({
      type: 'incr',
      at: at('2026-12-06T02:00:00Z'),
    });
  });

  it('a seconds field', () => {
    expect(nextBackup({ incr: '*/20 * * * * *' }, at('2026-12-04T00:00:40Z'), old)).toEqual({
      type: 'incr',
      at: at('2026-12-04T00:01:00Z'),
    });
  });

  it('no backup ever: the first full, due now; nothing scheduled: nothing', () => {
    const now = at('2026-12-04T01:30:00Z');
    expect(nextBackup({ incr: HOURLY_INCR }, now, {})).toEqual({ type: 'full', at: now });
    expect(nextBackup({}, now, {})).toBeUndefined();
    expect(nextBackup({ diff: 'bad' }, now, old)).toBeUndefined();
  });
});

describe('labelOfBackupJob', () => {
  it("reads back the label a backup job's message starts with, and nothing from other messages", () => {
    const message = `${backupJobHeadline('incr', '20261204-101500F_20261204-111500I')}: 1.0 MiB copied`;
    expect(labelOfBackupJob(message)).toBe('20261204-101500F_20261204-111500I');
    expect(labelOfBackupJob('cannot back up: no primary')).toBeUndefined();
  });
});
