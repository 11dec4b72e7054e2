// The one parser behind every duration flag (`serve --timeout`, `delete --timeout`, ...).
// A bare number is seconds, as the flags said before they took units.

import { InvalidArgumentError } from 'commander';

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;
const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/;

/** `90`, `90s`, `5m`, `1h`, `500ms` -> milliseconds; anything else (or zero) throws. */
export function parseDuration(text: string): number {
  const m = DURATION.exec(text.trim());
  const ms = m ? Number(m[1]) * UNIT_MS[(m[2] ?? 's') as keyof typeof UNIT_MS] : NaN;
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new InvalidArgumentError(
      `not a duration: ${JSON.stringify(text)} (examples: 90, 90s, 5m, 1h, 500ms)`,
    );
  }
  return Math.round(ms);
}
