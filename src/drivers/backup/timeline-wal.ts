// After a failover, the WAL of the timelines before the promotion that the old primary had
// completed but not yet pushed when it died: the promoted node still holds those segments (it
// streamed them), but with archive_mode=on it never archives what it received. pgop pushes them
// from there. Which ones: pure, from the node's pg_wal listing and its timeline history.

/** The segments of earlier timelines that a restore through the current timeline needs: for
 *  each switch in the history file (`parentTLI <tab> switchLSN <tab> reason`), the parent's
 *  segments before the one holding the switch point (that one continues on the child timeline,
 *  and the parent's copy of it is `.partial`). Files past a switch point may be recycled ones
 *  with stale content: never chosen. */
export function segmentsBeforeSwitches(files: string[], history: string, segmentSize: number): string[] {
  const switches = parseHistory(history);
  const chosen = files.filter((f) => {
    if (!/^[0-9A-F]{24}$/.test(f)) return false;
    const tli = parseInt(f.slice(0, 8), 16);
    const end = switches.get(tli);
    return end !== undefined && segmentNumber(f, segmentSize) < end / BigInt(segmentSize);
  });
  return chosen.sort();
}

/** parent timeline -> the LSN (bytes) where its child took over */
function parseHistory(history: string): Map<number, bigint> {
  const out = new Map<number, bigint>();
  for (const line of history.split('\n')) {
    const m = /^\s*(\d+)\s+([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)/.exec(line);
    if (!m) continue;
    out.set(Number(m[1]), (BigInt(`0x${m[2]}`) << 32n) | BigInt(`0x${m[3]}`));
  }
  return out;
}

/** A segment file's number: its log and segment parts, per the segment size. */
function segmentNumber(file: string, segmentSize: number): bigint {
  const perLog = 0x100000000n / BigInt(segmentSize);
  return BigInt(`0x${file.slice(8, 16)}`) * perLog + BigInt(`0x${file.slice(16, 24)}`);
}

export const historyFileOf = (timeline: number): string =>
  `${timeline.toString(16).toUpperCase().padStart(8, '0')}.history`;
