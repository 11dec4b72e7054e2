// replication.cloneMaxRate as pg_basebackup --max-rate reads it: kB/s, or with a k or M suffix.

/** The rate in kB/s, or null when it is not written that way. */
export function cloneRateKBps(rate: string | undefined): number | null {
  const m = /^(\d+)([kM]?)$/.exec(rate ?? '');
  return m ? Number(m[1]) * (m[2] === 'M' ? 1024 : 1) : null;
}
