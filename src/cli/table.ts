// kubectl-style columns (no borders) through cli-table3, which handles widths and truncation.
import Table from 'cli-table3';

const NO_BORDER = {
  top: '', 'top-mid': '', 'top-left': '', 'top-right': '',
  bottom: '', 'bottom-mid': '', 'bottom-left': '', 'bottom-right': '',
  left: '', 'left-mid': '', mid: '', 'mid-mid': '', right: '', 'right-mid': '', middle: '  ',
};

/** Render rows as aligned columns. `maxWidths[i]` truncates column i (with an ellipsis). */
export function renderTable(head: string[], rows: (string | number)[][], maxWidths: (number | undefined)[] = []): string {
  const widths = head.map((h, i) => {
    const natural = Math.max(h.length, ...rows.map((r) => String(r[i] ?? '').length));
    const cap = maxWidths[i];
    return cap !== undefined ? Math.min(cap, natural) : natural;
  });
  const table = new Table({ head, chars: NO_BORDER, style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0, compact: true }, colWidths: widths, wordWrap: false, truncate: '…' });
  for (const r of rows) table.push(r.map((c) => String(c)));
  return table.toString().split('\n').map((l) => l.trimEnd()).join('\n');
}
