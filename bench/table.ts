// What bench:failover's tables are made of: medians, seconds, min/med/max cells, aligned rows.

export const med = (xs: number[]): number | null => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export const sec = (ms: number | null | undefined): string =>
  ms === null || ms === undefined ? '-' : ms === Infinity ? 'never' : `${(ms / 1000).toFixed(2)}`;

export const finite = (xs: (number | null)[]): number[] =>
  xs.filter((x): x is number => x !== null && Number.isFinite(x));

/** "min / med / max" in seconds, with how many never happened. */
export function spread(xs: (number | null)[]): string {
  const ok = finite(xs);
  const never = xs.filter((x) => x === Infinity).length;
  const tail = never ? ` (+${never} never)` : '';
  if (!ok.length) return never ? 'never' : '-';
  return `${sec(Math.min(...ok))} / ${sec(med(ok))} / ${sec(Math.max(...ok))}${tail}`;
}

export function table(rows: string[][]): string {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map(
      (r, j) =>
        r.map((c, i) => c.padEnd(w[i]!)).join(' | ') +
        (j === 0 ? `\n${w.map((x) => '-'.repeat(x)).join('-|-')}` : ''),
    )
    .join('\n');
}
