// synchronous_standby_names as pgop sets it: pure, so the simulated world formats it the same
// way as the real driver does (and the property suite checks the real format).

/** `ANY q ("a", "b")` with the names sorted and q clamped to 1..names.length; '' when names is
 *  empty (asynchronous). */
export function syncStandbyNamesValue(names: string[], quorum: number): string {
  if (names.length === 0) return '';
  const q = Math.max(1, Math.min(Math.floor(quorum), names.length));
  return `ANY ${q} (${[...names]
    .sort()
    .map((n) => `"${n.replace(/"/g, '')}"`)
    .join(', ')})`;
}
