// What pgBackRest prints, read: `pgbackrest --output=json info` (the stanza's database system and
// backups) and a backup's console lines at log level detail (its progress). Pure.

import type { BackupRecord } from '../../observe/types.js';

export interface StanzaListing {
  /** the database system the stanza holds (text: a 64-bit integer is past 2^53) */
  systemId?: string;
  backups: BackupRecord[];
  /** the stanza's status when not ok (pgbackrest info exits 0 on errors) */
  problem?: string;
}

interface InfoBackup {
  label?: string;
  type?: string;
  prior?: string | null;
  error?: boolean;
  timestamp?: { start?: number; stop?: number };
  lsn?: { start?: string; stop?: string };
  archive?: { start?: string; stop?: string };
  info?: { size?: number; delta?: number; repository?: { size?: number; delta?: number } };
}

interface InfoStanza {
  status?: { code?: number; message?: string };
  backup?: InfoBackup[];
}

/** status.code values that still describe a usable stanza (ok; no valid backup yet) */
const USABLE = new Set([0, 2]);

export function parseInfo(stdout: string): StanzaListing {
  const ids = [...stdout.matchAll(/"system-id"\s*:\s*(\d+)/g)].map((m) => m[1]!);
  const stanza = (JSON.parse(stdout) as InfoStanza[])[0];
  const code = stanza?.status?.code;
  const listing: StanzaListing = { backups: (stanza?.backup ?? []).flatMap(toRecord) };
  const systemId = ids[ids.length - 1];
  if (systemId) listing.systemId = systemId;
  if (code !== undefined && !USABLE.has(code))
    listing.problem = `${stanza?.status?.message ?? 'error'} (status ${code})`;
  return listing;
}

function toRecord(b: InfoBackup): BackupRecord[] {
  const type = b.type;
  if (!b.label || (type !== 'full' && type !== 'diff' && type !== 'incr')) return [];
  return [
    {
      label: b.label,
      type,
      ...(b.prior ? { prior: b.prior } : {}),
      startedAt: (b.timestamp?.start ?? 0) * 1000,
      stoppedAt: (b.timestamp?.stop ?? 0) * 1000,
      lsnStart: b.lsn?.start ?? '',
      lsnStop: b.lsn?.stop ?? '',
      walStart: b.archive?.start ?? '',
      walStop: b.archive?.stop ?? '',
      size: b.info?.size ?? 0,
      delta: b.info?.delta ?? 0,
      repoSize: b.info?.repository?.size ?? 0,
      repoDelta: b.info?.repository?.delta ?? 0,
      error: b.error === true,
    },
  ];
}

const UNIT: Record<string, number> = { B: 1, KB: 2 ** 10, MB: 2 ** 20, GB: 2 ** 30, TB: 2 ** 40 };

/** A file the backup accounted for, with its size and the share of the whole so far: copied,
 *  matched in the prior backup (diff, incr, delta), or checked after a resume. */
const FILE_LINE = new RegExp(
  ' (?:backup file|match file from prior backup|checksum resumed file) .* ' +
    '\\((\\d+(?:\\.\\d+)?)(B|KB|MB|GB|TB), (\\d+(?:\\.\\d+)?)%\\)',
);

/** Progress of a backup from its console output (log-level-console=detail): every copied file
 *  prints `backup file <path> (<size>, <percent>%)`. Sums the sizes; the total follows from the
 *  percentage of the last line. */
export class BackupProgress {
  done = 0;
  total: number | undefined;
  private partial = '';

  /** Feed a chunk of output; true when the figures moved. */
  feed(chunk: string): boolean {
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop() ?? '';
    let moved = false;
    for (const line of lines) {
      const m = FILE_LINE.exec(line);
      if (!m) continue;
      this.done += Math.round(Number(m[1]) * UNIT[m[2]!]!);
      const pct = Number(m[3]);
      if (pct > 0) this.total = Math.max(this.done, Math.round(this.done / (pct / 100)));
      moved = true;
    }
    return moved;
  }
}

/** The label pgBackRest printed for the backup it made (`new backup label = ...`). */
export function newBackupLabel(output: string): string | undefined {
  return /new backup label = (\S+)/.exec(output)?.[1];
}
