// Scheduled pgBackRest backups: which one is due now, and which comes next. Pure and synchronous
// like the rest of the planner: time comes in as `now` (ms since epoch), and every cron expression
// is evaluated in UTC, so neither the host's clock zone nor a DST change moves a backup.

import { CronExpressionParser, type CronExpression } from 'cron-parser';
import { BACKUP_TYPES, type BackupSchedule, type BackupType } from '../spec/types.js';

export type { BackupSchedule, BackupType };
/** per type: when the last backup of that type was started (attempted), ms since epoch */
export type LastBackupStarts = Partial<Record<BackupType, number>>;
export interface DueBackup {
  type: BackupType;
  /** the fire time that made it due */
  dueAt: number;
  reason: string;
}

/** A backup job's kind in the store: backup.full, backup.diff, backup.incr. */
export const backupJobKind = (type: BackupType): string => `backup.${type}`;

/** How a succeeded backup job's message starts, and the label read back from it (`pgop backup`
 *  waits for `get backups` to list that label). */
export const backupJobHeadline = (type: BackupType, label: string): string => `${type} backup ${label}`;
export function labelOfBackupJob(message: string): string | undefined {
  return new RegExp(`^(?:${BACKUP_TYPES.join('|')}) backup (\\S+):`).exec(message)?.[1];
}

/** When each type was last started: by a job of this store (`jobStarts`, by job kind), or as
 *  the repository lists it (`listed`: backups taken by hand count too). */
export function lastBackupStarts(
  jobStarts: Record<string, number>,
  listed: readonly { type: BackupType; startedAt: number }[],
): LastBackupStarts {
  const starts: LastBackupStarts = {};
  for (const type of BACKUP_TYPES) {
    const fromRepo = listed.filter((b) => b.type === type).map((b) => b.startedAt);
    const at = Math.max(jobStarts[backupJobKind(type)] ?? -Infinity, ...fromRepo);
    if (Number.isFinite(at)) starts[type] = at;
  }
  return starts;
}

/** cronError tries a first fire time from here: an expression that parses may still never fire. */
const REFERENCE = Date.UTC(2026, 0, 1);

function parse(expr: string, at: number): CronExpression {
  // A fixed seed: an `H` field (rejected by cronError anyway) would otherwise differ call to call.
  return CronExpressionParser.parse(expr, { currentDate: at, tz: 'UTC', hashSeed: 'pgop' });
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** What the library does not check: a field count it would pad, and an empty string. */
function shapeError(expr: string): string | null {
  const fields = expr.trim().split(/\s+/);
  if (expr.trim() === '') return 'empty cron expression';
  if (fields.length === 1 && expr.trim().startsWith('@')) return null; // @daily and the like
  if (fields.length >= 5 && fields.length <= 6) return null;
  return `expected 5 fields (minute hour day month weekday) or 6 with seconds first, got ${fields.length}`;
}

/** null when `expr` is a usable schedule, else a short message saying what is wrong. */
export function cronError(expr: string): string | null {
  const shape = shapeError(expr);
  if (shape !== null) return shape;
  let cron: CronExpression;
  try {
    cron = parse(expr, REFERENCE);
  } catch (err) {
    return `invalid cron expression: ${message(err)}`;
  }
  // `H` picks a pseudo-random value: a backup time must be what the spec says.
  if (/(^|[^A-Za-z])H/.test(expr)) return 'hashed values (H) are not supported: give the field a value';
  if (cron.fields.second.values.length === 60) {
    return 'fires every second: the seconds field must not be "*" (e.g. "0" or "*/20")';
  }
  try {
    cron.next();
  } catch (err) {
    return `never fires: ${message(err)}`;
  }
  return null;
}

/** The schedule's valid entries, strongest first; the spec check rejects the others earlier. */
function entries(schedule: BackupSchedule): [BackupType, string][] {
  return BACKUP_TYPES.flatMap((t): [BackupType, string][] => {
    const expr = schedule[t];
    return expr !== undefined && cronError(expr) === null ? [[t, expr]] : [];
  });
}

/** The latest fire time <= now (prev() is strictly before its start, hence the 1 ms). The library
 *  bounds its own search: it throws rather than loop, and that counts as no fire. */
function prevFire(expr: string, now: number): number | undefined {
  try {
    return parse(expr, Math.floor(now) + 1)
      .prev()
      .getTime();
  } catch {
    return undefined;
  }
}

function nextFire(expr: string, now: number): number | undefined {
  try {
    return parse(expr, Math.floor(now)).next().getTime();
  } catch {
    return undefined;
  }
}

/** When the last backup that counts as a `type` started: its own or a stronger type's. */
function coveringStart(type: BackupType, last: LastBackupStarts): number | undefined {
  const starts = BACKUP_TYPES.slice(0, BACKUP_TYPES.indexOf(type) + 1)
    .map((t) => last[t])
    .filter((s): s is number => s !== undefined);
  return starts.length > 0 ? Math.max(...starts) : undefined;
}

function noneStarted(last: LastBackupStarts): boolean {
  return BACKUP_TYPES.every((t) => last[t] === undefined);
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.000Z$/, 'Z');
}

/** The strongest scheduled backup whose latest fire time has no covering start since. A start
 *  after `now` (the clock went back) covers every fire time up to now: no burst of backups. */
export function dueBackup(
  schedule: BackupSchedule,
  now: number,
  last: LastBackupStarts,
): DueBackup | undefined {
  const scheduled = entries(schedule);
  if (scheduled.length === 0) return undefined;
  // Unprotected until the first backup; pgBackRest would turn a first diff or incr into a full anyway.
  if (noneStarted(last)) return { type: 'full', dueAt: now, reason: 'no backup yet: a first full backup' };
  for (const [type, expr] of scheduled) {
    const fire = prevFire(expr, now);
    const covered = coveringStart(type, last);
    if (fire === undefined || (covered !== undefined && fire <= covered)) continue;
    return { type, dueAt: fire, reason: `scheduled ${type} backup (cron "${expr}", due ${iso(fire)})` };
  }
  return undefined;
}

/** For display: the earliest fire time after `now` (the stronger type on a tie); with no backup
 *  started yet, the first full, due now. */
export function nextBackup(
  schedule: BackupSchedule,
  now: number,
  last: LastBackupStarts,
): { type: BackupType; at: number } | undefined {
  const scheduled = entries(schedule);
  if (scheduled.length > 0 && noneStarted(last)) return { type: 'full', at: now };
  let best: { type: BackupType; at: number } | undefined;
  for (const [type, expr] of scheduled) {
    const at = nextFire(expr, now);
    if (at !== undefined && (best === undefined || at < best.at)) best = { type, at };
  }
  return best;
}
