// pg_lsn <-> byte position. One place for the planner, the postgres driver and `get` (no
// imports: `get` loads it at start-up).

/** 'X/Y' -> byte position; 0 for a missing value (a standby with no WAL receiver reports null). */
export function parseLsn(s: string | null | undefined): number {
  if (!s) return 0;
  const m = /^([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)$/.exec(s.trim());
  if (!m) return 0;
  return parseInt(m[1]!, 16) * 2 ** 32 + parseInt(m[2]!, 16);
}

/** Byte position -> 'X/Y'; '-' for "none" (negative). */
export function formatLsn(lsn: number): string {
  if (lsn < 0) return '-';
  const hi = Math.floor(lsn / 2 ** 32);
  const lo = lsn - hi * 2 ** 32;
  return `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;
}
