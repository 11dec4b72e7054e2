// How long to wait after the n-th failure in a row: doubling from a base to a cap; a terminal
// failure (it will not fix itself) from a longer base to a longer cap.

import type { ErrorKind } from '../errors.js';

export interface Backoff {
  baseMs: number;
  maxMs: number;
  terminalMs: number;
  terminalMaxMs: number;
}

export function backoffMs(b: Backoff, kind: ErrorKind, failures: number): number {
  const n = Math.max(1, failures);
  return kind === 'terminal'
    ? Math.min(b.terminalMaxMs, b.terminalMs * 2 ** (n - 1))
    : Math.min(b.maxMs, b.baseMs * 2 ** (n - 1));
}
