// kubectl-style columns (no borders). Hand-written on purpose: cli-table3 with string-width
// and emoji-regex cost ~25 ms of start-up, a third of `pgop get`'s budget (2x `node -e 0`),
// and everything pgop prints in a table is ASCII (names are validated, LSNs and states are).

/** Render rows as aligned columns. `maxWidths[i]` truncates column i (with an ellipsis). */
export function renderTable(
  head: string[],
  rows: (string | number)[][],
  maxWidths: (number | undefined)[] = [],
): string {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const widths = head.map((_, i) => {
    const natural = Math.max(...cells.map((r) => (r[i] ?? '').length));
    const cap = maxWidths[i];
    return cap !== undefined ? Math.min(cap, natural) : natural;
  });
  const fit = (s: string, w: number) => (s.length > w ? `${s.slice(0, Math.max(0, w - 1))}…` : s.padEnd(w));
  return cells
    .map((r) =>
      widths
        .map((w, i) => fit(r[i] ?? '', w))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
