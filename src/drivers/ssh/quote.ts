// The ONE shell quoting helper: every remote command goes through it, and so does every value
// pgop writes into a generated script. A remote command over SSH is a single string that the
// node's login shell parses (`$SHELL -c <string>`), so every argument is POSIX single-quoted here:
// inside single quotes no character is special, and a single quote itself is written as '\''
// (close, escaped quote, reopen). Works the same in sh, dash and bash.

import { terminal } from '../../errors.js';

/** Characters that never need quoting in any POSIX shell, in any word position. `=` is left out
 *  on purpose (a leading `NAME=value` word is an assignment), as are `~` (tilde expansion at the
 *  start of a word), `{}` `,` combinations (bash brace expansion) and every glob character. */
const SAFE = /^[A-Za-z0-9_@%+:./-]+$/;

/** Quote one argument so that the shell reads it back as exactly `arg`, one word. `always`
 *  quotes even a word that needs none (for generated files whose exact bytes matter). */
export function shellQuote(arg: string, opts: { always?: boolean } = {}): string {
  if (typeof arg !== 'string') throw terminal(`cannot quote argument: not a string (${typeof arg})`);
  if (arg.includes('\0')) throw terminal('cannot quote argument: it contains a NUL byte');
  if (!opts.always && SAFE.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** Quote every element of argv and join them with spaces: a command line the shell splits back
 *  into exactly argv (no expansion, no word splitting, no globbing, no command substitution). */
export function shellJoin(argv: readonly string[]): string {
  if (argv.length === 0) throw terminal('cannot quote command: empty argv');
  return argv.map((a) => shellQuote(a)).join(' ');
}

/** Names that end up in file paths, namespace names, interface names, OS user names: letters,
 *  digits, `_`, `.` and `-`, starting with a letter or digit, at most 63 characters. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Throw a terminal PgopError unless `value` is a safe name of the given kind. */
export function assertSafeName(kind: string, value: string): string {
  if (typeof value !== 'string' || !NAME.test(value)) {
    throw terminal(
      `cannot use ${kind} name ${JSON.stringify(value)}: ` +
        `use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit`,
    );
  }
  return value;
}

/** Environment variable names accepted in ExecOptions.env. */
export function assertEnvName(name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
    throw terminal(`cannot pass environment variable ${JSON.stringify(name)}: invalid name`);
  }
  return name;
}
