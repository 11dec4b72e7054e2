// shellQuote / shellJoin against real shells (sh = dash, and bash: root's login shell on nodes).
// Local processes only (execFileSync of sh/bash): no network at all.

import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PgopError } from '../../src/errors.js';
import { assertEnvName, assertSafeName, shellJoin, shellQuote } from '../../src/drivers/ssh/quote.js';
import { SshShell } from '../../src/drivers/ssh/shell.js';

const SHELLS = ['sh', 'bash'] as const;

/** What `<shell> -c 'printf %s <quoted>'` prints. */
const printed = (shell: string, s: string) =>
  execFileSync(shell, ['-c', `printf %s ${shellQuote(s)}`], { encoding: 'utf8' });

/** The argv a shell sees for `<shell> -c 'for a in <joined>...'`, NUL-separated. */
const splitBack = (shell: string, argv: string[]) =>
  execFileSync(shell, ['-c', `for a in ${shellJoin(argv)}; do printf '%s\\0' "$a"; done`], {
    encoding: 'utf8',
  })
    .split('\0')
    .slice(0, -1);

/** Strings without NUL (no argv can carry one), any Unicode code point, and the nasty ASCII. */
const nasty = fc.constantFrom(
  ...`'"\\$\`!*?[]{}()<>|&;~#= \t\n%@+:,./-`.split(''),
  '$(id)',
  '`id`',
  "'\\''",
  '${HOME}',
  '~root',
  'a=b',
);
const anyString = fc
  .array(fc.oneof(fc.string({ unit: 'binary' }), nasty), { maxLength: 6 })
  .map((parts) => parts.join('').replace(/\0/g, ''));

describe('shellQuote', () => {
  for (const shell of SHELLS) {
    it(`${shell} -c 'printf %s <quoted>' prints exactly the input, for any string`, () => {
      fc.assert(
        fc.property(anyString, (s) => {
          expect(printed(shell, s)).toBe(s);
        }),
        { numRuns: 150 },
      );
    });
  }

  it('leaves plain words alone and quotes everything a shell could interpret', () => {
    expect(shellQuote('pg_ctl')).toBe('pg_ctl');
    expect(shellQuote('/u01/pg15/data')).toBe('/u01/pg15/data');
    expect(shellQuote('-D')).toBe('-D');
    expect(shellQuote('')).toBe("''");
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
    expect(shellQuote('a b')).toBe("'a b'");
    expect(shellQuote('$(id)')).toBe("'$(id)'");
    expect(shellQuote('FOO=bar')).toBe("'FOO=bar'"); // would be an assignment unquoted
    expect(shellQuote('~root')).toBe("'~root'"); // would be tilde-expanded
    expect(shellQuote('*.conf')).toBe("'*.conf'");
  });

  it('a leading NAME=value word stays a command argument, not an assignment', () => {
    for (const shell of SHELLS) {
      expect(
        execFileSync(shell, ['-c', `${shellJoin(['printf', '%s', 'PATH=/nowhere'])}`], { encoding: 'utf8' }),
      ).toBe('PATH=/nowhere');
    }
  });

  it('always: quotes plain words too, and the shell still reads back exactly the input', () => {
    expect(shellQuote('/u01/pg15/data', { always: true })).toBe("'/u01/pg15/data'");
    expect(shellQuote('', { always: true })).toBe("''");
    for (const shell of SHELLS) {
      fc.assert(
        fc.property(anyString, (s) => {
          const out = execFileSync(shell, ['-c', `printf %s ${shellQuote(s, { always: true })}`], {
            encoding: 'utf8',
          });
          expect(out).toBe(s);
        }),
        { numRuns: 50 },
      );
    }
  });

  it('refuses NUL bytes (no argv can carry them) with a terminal error', () => {
    expect(() => shellQuote('a\0b', { always: true })).toThrow(/NUL/);
    expect(() => shellQuote('a\0b')).toThrow(PgopError);
    expect(() => shellQuote('a\0b')).toThrow(/NUL/);
  });
});

describe('shellJoin', () => {
  for (const shell of SHELLS) {
    it(`${shell} splits the joined line back into exactly the argv`, () => {
      fc.assert(
        fc.property(fc.array(anyString, { minLength: 1, maxLength: 5 }), (argv) => {
          expect(splitBack(shell, argv)).toEqual(argv);
        }),
        { numRuns: 100 },
      );
    });
  }

  it('refuses an empty argv', () => {
    expect(() => shellJoin([])).toThrow(/empty argv/);
  });
});

describe('assertSafeName / assertEnvName', () => {
  it('accepts names usable in paths, namespaces and user names', () => {
    for (const ok of ['pg1', 'db-01', 'a.b_c', 'postgres', 'X'.repeat(63)])
      expect(assertSafeName('node', ok)).toBe(ok);
  });

  it('refuses anything else with a terminal error naming the kind', () => {
    for (const bad of ['', '-x', '.hidden', '..', 'a/b', 'a b', "a'b", '$(id)', 'x'.repeat(64), 'é']) {
      expect(() => assertSafeName('node', bad)).toThrow(/^cannot use node name/);
      try {
        assertSafeName('node', bad);
      } catch (e) {
        expect((e as PgopError).kind).toBe('terminal');
      }
    }
  });

  it('property: every accepted name needs no quoting', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary-ascii', maxLength: 70 }), (s) => {
        let ok = true;
        try {
          assertSafeName('x', s);
        } catch {
          ok = false;
        }
        if (ok) expect(shellQuote(s)).toBe(s);
      }),
    );
  });

  it('env names', () => {
    expect(assertEnvName('PGPASSWORD')).toBe('PGPASSWORD');
    expect(() => assertEnvName('1X')).toThrow(/invalid name/);
    expect(() => assertEnvName('A=B')).toThrow(/invalid name/);
  });
});

describe('SshShell.command (the string sent to the node), run by a local shell', () => {
  it('passes env values of any content to the command, behind `timeout`', () => {
    fc.assert(
      fc.property(anyString, (value) => {
        const cmd = SshShell.command(['printenv', 'PGOP_V'], { env: { PGOP_V: value }, timeoutMs: 5000 });
        expect(cmd.startsWith('timeout -s KILL 5.000 env ')).toBe(true);
        // printenv adds a newline; bash -c is what sshd runs for root on a node.
        expect(execFileSync('bash', ['-c', cmd], { encoding: 'utf8' })).toBe(`${value}\n`);
      }),
      { numRuns: 60 },
    );
  });

  it("puts runuser outermost, so env and timeout apply to the user's command", () => {
    expect(
      SshShell.command(['psql', '-c', 'select 1'], {
        user: 'postgres',
        env: { PGPASSWORD: 'x y' },
        timeoutMs: 1500,
      }),
    ).toBe("runuser -u postgres -- timeout -s KILL 1.500 env 'PGPASSWORD=x y' psql -c 'select 1'");
    expect(SshShell.command(['true'], { timeoutMs: 0 })).toBe('true');
  });

  it('refuses unsafe user names and env names', () => {
    expect(() => SshShell.command(['id'], { user: 'root; id' })).toThrow(/cannot use user name/);
    expect(() => SshShell.command(['id'], { env: { 'A B': '1' } })).toThrow(/invalid name/);
  });
});
