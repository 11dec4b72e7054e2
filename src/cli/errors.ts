// Errors only the CLI raises: a mistake in how a command was called (exit 2, as commander's own
// usage errors) and a named object that does not exist (exit 1, as kubectl's NotFound).

import { PgopError } from '../errors.js';

export const CLI_EXIT = { notFound: 1, usage: 2 } as const;

export class UsageError extends PgopError {
  constructor(message: string) {
    super('terminal', message);
    this.name = 'UsageError';
  }
}

export class NotFoundError extends PgopError {
  constructor(message: string) {
    super('terminal', message);
    this.name = 'NotFoundError';
  }
}

/** The exit code of a CLI-only error, or undefined for every other error. */
export function cliExitCode(err: unknown): number | undefined {
  if (err instanceof UsageError) return CLI_EXIT.usage;
  if (err instanceof NotFoundError) return CLI_EXIT.notFound;
  return undefined;
}
