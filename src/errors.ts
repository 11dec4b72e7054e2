// Three error kinds, mapped to exit codes at the one top-level CLI catch (src/cli/main.ts).
// transient: retry with backoff (network blip, node still booting);
// terminal: will not fix itself (bad input, missing image): no retry, node marked degraded;
// internal: a bug in pgop: say so loudly.

export type ErrorKind = 'transient' | 'terminal' | 'internal';

export class PgopError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'PgopError';
  }
}

export const transient = (message: string, cause?: unknown) => new PgopError('transient', message, { cause });
export const terminal = (message: string, cause?: unknown) => new PgopError('terminal', message, { cause });
export const internal = (message: string, cause?: unknown) => new PgopError('internal', message, { cause });

/** A spec that does not validate. `problems` each name file:line:column and the field path. */
export class SpecError extends PgopError {
  constructor(readonly problems: SpecProblem[]) {
    super('terminal', problems.map(formatProblem).join('\n'));
    this.name = 'SpecError';
  }
}

export interface SpecProblem {
  file: string;
  line: number; // 1-based
  column: number; // 1-based
  /** JSON path of the field, e.g. spec.nodes[1].address */
  path: string;
  message: string;
}

export const formatProblem = (p: SpecProblem) => `${p.file}:${p.line}:${p.column}: ${p.path}: ${p.message}`;

/** Exit codes: one per kind, so scripts can tell them apart. */
export const EXIT = {
  ok: 0,
  /** `diff`: changes pending; `serve --until-converged`: timed out. */
  changes: 1,
  invalidInput: 2,
  transient: 3,
  terminal: 4,
  internal: 70,
  /** another `serve` holds the store */
  locked: 5,
  /** this `serve` lost its lock to another one (taken over as stale) and stopped */
  lockLost: 6,
} as const;

export function exitCodeFor(err: unknown): number {
  if (err instanceof SpecError) return EXIT.invalidInput;
  if (err instanceof PgopError) {
    if (err.kind === 'transient') return EXIT.transient;
    if (err.kind === 'terminal') return EXIT.terminal;
  }
  return EXIT.internal;
}

export const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));
