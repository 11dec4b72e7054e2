// Secrets are referenced by a spec, never written in it, and resolved only when used (so a
// spec can be validated, diffed and stored without them). No message ever contains a value.

import { readFileSync } from 'node:fs';
import { terminal } from '../errors.js';
import type { SecretRef } from './types.js';

/** The secret's value: the environment variable, or the file with trailing newlines trimmed.
 *  `what` names it for the error message, e.g. "the replication password". */
export function resolveSecret(ref: SecretRef, what: string): string {
  if ('env' in ref) {
    // Own properties only: process.env inherits from Object.prototype (constructor, toString).
    const value = Object.prototype.hasOwnProperty.call(process.env, ref.env)
      ? process.env[ref.env]
      : undefined;
    if (typeof value !== 'string')
      throw terminal(`cannot resolve ${what}: environment variable ${ref.env} is not set`);
    if (value === '') throw terminal(`cannot resolve ${what}: environment variable ${ref.env} is empty`);
    return value;
  }
  let text: string;
  try {
    text = readFileSync(ref.file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'does not exist'
        : code === 'EACCES'
          ? 'is not readable (permission denied)'
          : `cannot be read (${code ?? 'error'})`;
    // The fs error is not chained as cause: only the path and code matter, and nothing of the
    // file may leak into logs.
    throw terminal(`cannot resolve ${what}: file ${ref.file} ${why}`);
  }
  // Files written by `echo` or editors end with a newline that is not part of the secret.
  const value = text.replace(/(\r?\n)+$/, '');
  if (value === '') throw terminal(`cannot resolve ${what}: file ${ref.file} is empty`);
  return value;
}

/** For display: env:NAME or file:/path (never the value). */
export function describeSecret(ref: SecretRef): string {
  return 'env' in ref ? `env:${ref.env}` : `file:${ref.file}`;
}
