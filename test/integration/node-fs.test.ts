// The shell functions behind every file and directory pgop makes as root on a node
// (src/drivers/ssh/node-fs.ts), run for real on this machine as root, with the OS user postgres
// as the attacker. No network. Root only (part of `bash scripts/test-integration.sh`).

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { NODE_FS_FUNCS } from '../../src/drivers/ssh/node-fs.js';

function hasPostgresUser(): boolean {
  try {
    execFileSync('id', ['postgres'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const canRun = process.getuid?.() === 0 && hasPostgresUser();

/** Run the functions with a script; code and combined output. */
function sh(script: string, args: string[], input = ''): { code: number; out: string } {
  try {
    const out = execFileSync('sh', ['-c', `cd / || exit 1\n${NODE_FS_FUNCS}\n${script}`, 'sh', ...args], {
      input,
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    return { code: 0, out };
  } catch (e) {
    const err = e as { status: number; stdout: string; stderr: string };
    return { code: err.status, out: `${err.stdout}${err.stderr}` };
  }
}
const asPg = (cmd: string, ...args: string[]) =>
  sh('c=$1; shift; as_user postgres postgres sh -c "$c" sh "$@"', [cmd, ...args]);

describe.skipIf(!canRun)('node-fs: root never follows what postgres planted', () => {
  // root 0755 under /var/lib, so postgres can reach its own subdirectory
  const B = `/var/lib/pgop-nodefs-${randomBytes(4).toString('hex')}`;
  const stat = (p: string) => sh('stat -c "%U:%G %a %F" -- "$1"', [p]).out.trim();

  beforeAll(() => {
    expect(
      sh(
        'mkdir -m 755 -- "$1" && mkdir -m 700 -- "$1/pg" && chown postgres:postgres -- "$1/pg" && ' +
          'printf "canary\\n" > "$1/canary" && chmod 644 "$1/canary"',
        [B],
      ).code,
    ).toBe(0);
  });
  afterAll(() => {
    sh('rm -rf -- "$1"', [B]);
  });

  it(
    'put_file writes a postgres file in a postgres directory as postgres: a planted symlink is replaced, ' +
      'its target untouched',
    () => {
      expect(
        asPg(
          'ln -s "$1/canary" "$1/pg/f.conf"; ' +
            'for i in 1 2 3 4 5 6 7 8 9; do ln -s "$1/canary" "$1/pg/f.conf.pgop-$i"; done',
          B,
        ).code,
      ).toBe(0);
      const r = sh('put_file 600 postgres:postgres "$1/pg/f.conf"', [B], 'hello\n');
      expect(r).toEqual({ code: 0, out: '' });
      expect(stat(`${B}/pg/f.conf`)).toBe('postgres:postgres 600 regular file');
      expect(sh('cat -- "$1/pg/f.conf" "$1/canary"', [B]).out).toBe('hello\ncanary\n');
      expect(stat(`${B}/canary`)).toBe('root:root 644 regular file');
    },
  );

  it('put_file as postgres cannot reach a root file even through a link postgres made', () => {
    // postgres swaps the directory itself for a link to root's directory: the write runs as
    // postgres and fails there instead of landing in root's directory
    expect(asPg('mkdir "$1/pg/sub" && rmdir "$1/pg/sub" && ln -s "$1" "$1/pg/sub"', B).code).toBe(0);
    const r = sh('put_file 600 postgres:postgres "$1/pg/sub/canary"', [B], 'owned\n');
    expect(r.code).toBe(3);
    expect(sh('cat -- "$1/canary"', [B]).out).toBe('canary\n');
    expect(stat(`${B}/canary`)).toBe('root:root 644 regular file');
  });

  it(
    'put_file writes root files (and postgres files) in a root-only directory as root, with mode and ' +
      'owner',
    () => {
      expect(sh('put_file 755 root:root "$1/script.sh"', [B], '#!/bin/sh\n').code).toBe(0);
      expect(stat(`${B}/script.sh`)).toBe('root:root 755 regular file');
      expect(sh('put_file 600 postgres:postgres "$1/pass"', [B], 'secret\n').code).toBe(0);
      expect(stat(`${B}/pass`)).toBe('postgres:postgres 600 regular file');
      expect(
        sh('ls -a -- "$1"', [B])
          .out.split('\n')
          .filter((l) => l.includes('pgop-')),
      ).toEqual([]);
    },
  );

  it('put_file refuses a root file in a directory postgres can change', () => {
    const r = sh('put_file 755 root:root "$1/pg/script.sh"', [B], 'x');
    expect(r.code).toBe(3);
    expect(r.out).toMatch(/others than root can change/);
    expect(sh('ls -- "$1/pg"', [B]).out).not.toMatch(/script/);
  });

  it('del_file removes a planted link, never its target', () => {
    expect(asPg('ln -sfn "$1/canary" "$1/pg/gone"', B).code).toBe(0);
    expect(sh('del_file "$1/pg/gone"', [B]).code).toBe(0);
    expect(sh('[ -e "$1/pg/gone" ] || [ -L "$1/pg/gone" ] || echo gone; cat -- "$1/canary"', [B]).out).toBe(
      'gone\ncanary\n',
    );
  });

  it(
    'pg_dir creates as the parent owner, hands over only what root made, refuses links, system and ' +
      'foreign directories',
    () => {
      expect(sh('pg_dir "$1/new/data" 700', [B]).code).toBe(0);
      expect(stat(`${B}/new`)).toBe('root:root 755 directory');
      expect(stat(`${B}/new/data`)).toBe('postgres:postgres 700 directory');
      expect(sh('pg_dir "$1/pg/a/b" 700', [B]).code).toBe(0);
      expect(stat(`${B}/pg/a`)).toBe('postgres:postgres 755 directory');
      expect(stat(`${B}/pg/a/b`)).toBe('postgres:postgres 700 directory');
      // a link postgres planted where a directory is wanted, to root's directory
      expect(asPg('ln -s "$1" "$1/pg/logs"', B).code).toBe(0);
      expect(sh('pg_dir "$1/pg/logs" 700', [B])).toMatchObject({ code: 3 });
      expect(stat(B)).toBe('root:root 755 directory');
      // system directories, also reached through a path
      for (const p of ['/', '/usr/local/bin', '/etc/ssh', '/var/lib', '/root'])
        expect(sh('pg_dir "$1" 700', [p]), p).toMatchObject({ code: 3 });
      // a non-empty directory of root's that pgop did not make
      expect(sh('mkdir "$1/full" && touch "$1/full/x" && pg_dir "$1/full" 700', [B])).toMatchObject({
        code: 3,
      });
      expect(stat(`${B}/full`)).toBe('root:root 755 directory');
    },
  );

  it('pg_rmtree removes a postgres tree as postgres, the top entry as root in a root-only directory', () => {
    expect(
      asPg(
        'mkdir -p "$1/new/data/base/1" && touch "$1/new/data/base/1/x" && ' +
          'ln -s "$1/canary" "$1/new/data/link"',
        B,
      ).code,
    ).toBe(0);
    expect(sh('pg_rmtree "$1/new/data"', [B]).code).toBe(0);
    expect(sh('ls -A -- "$1/new"; cat -- "$1/canary"', [B]).out).toBe('canary\n');
  });
});
