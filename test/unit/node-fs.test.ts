import { describe, expect, it } from 'vitest';
import { assertSafePath, shVar } from '../../src/drivers/ssh/node-fs.js';

describe('assertSafePath: the one check every spec path passes before a node script', () => {
  it('accepts plain absolute paths and drops a trailing slash', () => {
    for (const p of ['/u01/pg15/data', '/var/log/postgres', '/u02/archive', '/opt/pg-15_x.y'])
      expect(assertSafePath('p', p)).toBe(p);
    expect(assertSafePath('p', '/u01/pg15/data/')).toBe('/u01/pg15/data');
  });

  it('refuses anything a shell or pg_ctl could read as more than a path (terminal)', () => {
    const bad = [
      '/var/log/pg$(id>/tmp/pwned)',
      '/var/log/`id`',
      '/u01/a b',
      '/u01/a\nb',
      '/u01/"x"',
      "/u01/'x'",
      '/u01/a\\b',
      '/u01/../etc',
      '/u01/./x',
      '/u01//x',
      'u01/x',
      '',
      '/u01/\u00e9',
      '/u01/x\0',
      `/${'a'.repeat(2000)}`,
    ];
    for (const p of bad)
      expect(() => assertSafePath('postgres.logDir', p), JSON.stringify(p)).toThrow(
        expect.objectContaining({ kind: 'terminal' }),
      );
  });

  it('inner scripts are single-quoted shell variables: a single quote in one is a bug', () => {
    expect(shVar('X', 'echo "$1"')).toBe(`X='echo "$1"'`);
    expect(() => shVar('X', "echo 'x'")).toThrow();
  });
});
