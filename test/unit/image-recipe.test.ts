// `pgop image build`: the pure parts (recipe hash, options, script argv, manifest, progress
// lines) and the CLI's argument handling. The build itself runs in the libvirt e2e test.

import { describe, expect, it } from 'vitest';
import { cpSync, writeFileSync, chmodSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DEFAULTS,
  DEFAULT_PACKAGES,
  isUpToDate,
  parseManifest,
  recipeHash,
  resolveBuildOptions,
  rootfsCachePath,
  scriptArgs,
  type RecipeInputs,
} from '../../src/image/recipe.js';
import { imageSourceDir, readRecipeFiles, hashOf } from '../../src/image/build.js';
import { Progress } from '../../src/image/progress.js';
import { tempDir } from '../helpers/temp.js';
import { PgopError } from '../../src/errors.js';

const base: RecipeInputs = {
  suite: 'bookworm',
  mirror: 'http://deb.debian.org/debian',
  packages: ['a', 'b', 'c'],
  sizeGiB: 3,
  label: 'pgop-root',
  compress: false,
  files: [
    { path: 'build-image.sh', content: 'echo hi\n' },
    { path: 'files/etc/x.cfg', content: 'x: 1\n' },
  ],
};

describe('recipeHash', () => {
  it('is a sha256 hex and stable for equal inputs', () => {
    const h = recipeHash(base);
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(recipeHash({ ...base, files: [...base.files] })).toBe(h);
  });

  it('ignores the order of packages and files, and duplicate packages', () => {
    const h = recipeHash(base);
    expect(recipeHash({ ...base, packages: ['c', 'a', 'b', 'a'] })).toBe(h);
    expect(recipeHash({ ...base, files: [...base.files].reverse() })).toBe(h);
  });

  const changes: [string, Partial<RecipeInputs>][] = [
    ['the suite', { suite: 'trixie' }],
    ['the mirror', { mirror: 'http://mirror.example/debian' }],
    ['a package added', { packages: ['a', 'b', 'c', 'd'] }],
    ['a package removed', { packages: ['a', 'b'] }],
    ['the size', { sizeGiB: 4 }],
    ['the label', { label: 'other' }],
    ['compression', { compress: true }],
    [
      'one byte of the script',
      { files: [{ path: 'build-image.sh', content: 'echo hi \n' }, base.files[1]!] },
    ],
    ['a config file renamed', { files: [base.files[0]!, { path: 'files/etc/y.cfg', content: 'x: 1\n' }] }],
    ['a config file added', { files: [...base.files, { path: 'files/etc/z', content: '' }] }],
  ];
  for (const [what, change] of changes) {
    it(`changes with ${what}`, () => {
      expect(recipeHash({ ...base, ...change })).not.toBe(recipeHash(base));
    });
  }

  it('does not confuse field boundaries (name/content shifts)', () => {
    const a = recipeHash({ ...base, files: [{ path: 'files/ab', content: 'c' }] });
    const b = recipeHash({ ...base, files: [{ path: 'files/a', content: 'bc' }] });
    expect(a).not.toBe(b);
  });

  it('rejects a file listed twice', () => {
    expect(() => recipeHash({ ...base, files: [base.files[0]!, base.files[0]!] })).toThrow(/listed twice/);
  });
});

describe('the shipped recipe', () => {
  it('hashes the script and every overlay file, including file modes', () => {
    const files = readRecipeFiles();
    const paths = files.map((f) => f.path);
    expect(paths).toContain('build-image.sh');
    expect(paths).toContain('files/etc/cloud/cloud.cfg.d/90-pgop.cfg');
    const o = resolveBuildOptions({});
    const h = hashOf(o);
    // a copy of src/image hashes the same; editing or chmod-ing a file there changes the hash
    const copy = join(tempDir('pgop-image'), 'image');
    cpSync(imageSourceDir(), copy, { recursive: true });
    expect(hashOf(o, copy)).toBe(h);
    const cfg = join(copy, 'files/etc/cloud/cloud.cfg.d/90-pgop.cfg');
    chmodSync(cfg, 0o600);
    const hMode = hashOf(o, copy);
    expect(hMode).not.toBe(h);
    writeFileSync(cfg, `${readFileSync(cfg, 'utf8')}# changed\n`);
    expect(hashOf(o, copy)).not.toBe(hMode);
    // the recipe inputs, not where the image goes or where packages are cached
    expect(hashOf(resolveBuildOptions({ output: '/srv/x.qcow2', cacheDir: '/srv/cache' }))).toBe(h);
    expect(hashOf(resolveBuildOptions({ addPackages: 'htop' }))).not.toBe(h);
  });

  it(
    'names the packages the guest needs (python3-cffi-backend explicitly: debootstrap misses virtual ' +
      'packages)',
    () => {
      for (const p of [
        'linux-image-cloud-amd64',
        'cloud-init',
        'openssh-server',
        'postgresql-15',
        'pgpool2',
        'postgresql-15-pgpool2',
        'python3-cffi-backend',
        'qemu-guest-agent',
        'lvm2',
        'xfsprogs',
        'locales',
      ])
        expect(DEFAULT_PACKAGES).toContain(p);
    },
  );
});

describe('resolveBuildOptions', () => {
  it('defaults', () => {
    expect(resolveBuildOptions({})).toEqual({
      output: DEFAULTS.output,
      cacheDir: DEFAULTS.cacheDir,
      suite: 'bookworm',
      mirror: 'http://deb.debian.org/debian',
      packages: [...DEFAULT_PACKAGES],
      sizeGiB: 3,
      label: 'pgop-root',
      compress: false,
      force: false,
      fresh: false,
    });
    expect(DEFAULTS.cacheDir).toBe('/var/cache/pgop/image');
  });

  it('--fresh implies --force', () => {
    expect(resolveBuildOptions({ fresh: true })).toMatchObject({ fresh: true, force: true });
  });

  it('output: the flag, else the spec baseImage, else the default', () => {
    expect(resolveBuildOptions({ output: '/a/b.qcow2' }, '/spec/img.qcow2').output).toBe('/a/b.qcow2');
    expect(resolveBuildOptions({}, '/spec/img.qcow2').output).toBe('/spec/img.qcow2');
  });

  it("adds extra packages once, comma or space separated; trims the mirror's trailing slash", () => {
    const o = resolveBuildOptions({
      addPackages: 'htop, vim  htop,cloud-init',
      mirror: 'http://deb.debian.org/debian/',
      sizeGib: '5',
      force: true,
      compress: true,
    });
    expect(o.packages.filter((p) => p === 'htop')).toHaveLength(1);
    expect(o.packages.filter((p) => p === 'cloud-init')).toHaveLength(1);
    expect(o.packages.slice(-2)).toEqual(['htop', 'vim']);
    expect(o).toMatchObject({
      mirror: 'http://deb.debian.org/debian',
      sizeGiB: 5,
      force: true,
      compress: true,
    });
  });

  const bad: [string, Parameters<typeof resolveBuildOptions>[0], RegExp][] = [
    ['a relative output', { output: 'img.qcow2' }, /output path must be absolute/],
    ['a non-qcow2 output', { output: '/x/img.raw' }, /must be a \.qcow2 file/],
    ['a relative cache dir', { cacheDir: 'cache' }, /cache directory must be absolute/],
    ['a suite with shell characters', { suite: 'bookworm;rm -rf /' }, /not a Debian suite name/],
    ['a mirror that is no URL', { mirror: 'deb.debian.org' }, /not a mirror URL/],
    ['an ftp mirror', { mirror: 'ftp://deb.debian.org/debian' }, /http\(s\) or file URL/],
    ['a package with shell characters', { addPackages: 'vim,$(reboot)' }, /not a Debian package name/],
    ['an option-looking package', { addPackages: '--allow-unauthenticated' }, /not a Debian package name/],
    ['a size of one GiB', { sizeGib: '1' }, /--size-gib must be a whole number from 2 to 64/],
    ['a fractional size', { sizeGib: '2.5' }, /--size-gib/],
    ['a size that is no number', { sizeGib: 'big' }, /--size-gib/],
  ];
  for (const [what, flags, msg] of bad) {
    it(`rejects ${what} as a terminal error`, () => {
      let err: unknown;
      try {
        resolveBuildOptions(flags);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(PgopError);
      expect((err as PgopError).kind).toBe('terminal');
      expect((err as PgopError).message).toMatch(/^cannot build image: /);
      expect((err as PgopError).message).toMatch(msg);
    });
  }
});

describe('rootfsCachePath', () => {
  const o = resolveBuildOptions({});
  it('lives in the cache dir and is named after suite, mirror and package set only', () => {
    const p = rootfsCachePath(o);
    expect(p).toMatch(/^\/var\/cache\/pgop\/image\/rootfs\/rootfs-bookworm-[0-9a-f]{16}\.tar$/);
    expect(rootfsCachePath({ ...o, packages: [...o.packages].reverse() })).toBe(p);
    expect(rootfsCachePath(resolveBuildOptions({ output: '/x/y.qcow2', sizeGib: 8, compress: true }))).toBe(
      p,
    );
    expect(rootfsCachePath(resolveBuildOptions({ addPackages: 'htop' }))).not.toBe(p);
    expect(rootfsCachePath(resolveBuildOptions({ mirror: 'http://mirror.example/debian' }))).not.toBe(p);
    expect(rootfsCachePath(resolveBuildOptions({ suite: 'trixie' }))).toMatch(/rootfs-trixie-/);
    expect(rootfsCachePath(resolveBuildOptions({ cacheDir: '/srv/c' }))).toMatch(/^\/srv\/c\/rootfs\//);
  });
});

describe('scriptArgs', () => {
  it('passes every value as its own argv element', () => {
    const o = resolveBuildOptions({ output: '/var/lib/pgop/images/with space.qcow2', compress: true });
    const args = scriptArgs(o, '/w/img.qcow2', '/w/build', '/src/files');
    const get = (flag: string) => args[args.indexOf(flag) + 1];
    expect(get('--out')).toBe('/w/img.qcow2');
    expect(get('--work')).toBe('/w/build');
    expect(get('--packages')).toBe(DEFAULT_PACKAGES.join(','));
    expect(get('--size-gib')).toBe('3');
    expect(get('--label')).toBe('pgop-root');
    expect(get('--rootfs-cache')).toBe(rootfsCachePath(o));
    expect(args).toContain('--compress');
    expect(scriptArgs({ ...o, compress: false }, '/a', '/b', '/c')).not.toContain('--compress');
  });

  it('refuses packages or labels that did not come through validation', () => {
    const o = resolveBuildOptions({});
    expect(() => scriptArgs({ ...o, packages: ['ok', 'a b'] }, '/a', '/b', '/c')).toThrow(
      /not a Debian package name/,
    );
    expect(() => scriptArgs({ ...o, label: 'a label that is far too long' }, '/a', '/b', '/c')).toThrow(
      /bad filesystem label/,
    );
  });
});

describe('manifest', () => {
  const h = 'a'.repeat(64);
  const m = JSON.stringify({ recipeHash: h, fileBytes: 1234, suite: 'bookworm' });
  it('parses a manifest and rejects junk', () => {
    expect(parseManifest(m)?.recipeHash).toBe(h);
    expect(parseManifest('{')).toBeNull();
    expect(parseManifest('{"recipeHash":"abc","fileBytes":1}')).toBeNull();
    expect(parseManifest('{"recipeHash":"' + h + '"}')).toBeNull();
  });
  it('is up to date only for the same hash and the same image file size', () => {
    const man = parseManifest(m);
    expect(isUpToDate(man, h, 1234)).toBe(true);
    expect(isUpToDate(man, 'b'.repeat(64), 1234)).toBe(false);
    expect(isUpToDate(man, h, 999)).toBe(false);
    expect(isUpToDate(man, h, null)).toBe(false);
    expect(isUpToDate(null, h, 1234)).toBe(false);
  });
});

describe('Progress (plain mode, not a terminal)', () => {
  it('prints one line per phase start and end with its duration, and a heartbeat', () => {
    let now = 0;
    const out: string[] = [];
    const p = new Progress({ write: (s: string) => out.push(s), isTTY: false }, false, () => now, 30_000);
    p.phase('disk');
    now = 1500;
    p.phase('debootstrap');
    now = 20_000;
    p.line('I: Retrieving libc6');
    now = 32_000;
    p.line('I: Retrieving libc6');
    now = 40_000;
    p.line('I: Validating libc6');
    now = 41_500;
    expect(p.finish(true)).toBe(41_500);
    expect(out.join('')).toBe(
      [
        'image build: partition and format the disk ...',
        'image build: partition and format the disk done (1.5 s)',
        'image build: debootstrap: download and install packages ...',
        'image build: debootstrap: download and install packages still running (30.5 s)',
        'image build: debootstrap: download and install packages done (40.0 s)',
        '',
      ].join('\n'),
    );
    expect(p.durations).toEqual({ disk: 1.5, debootstrap: 40 });
    expect(out.join('')).not.toContain('\r');
  });

  it('names the failed phase', () => {
    let now = 0;
    const out: string[] = [];
    const p = new Progress({ write: (s: string) => out.push(s) }, false, () => now);
    p.phase('bootloader');
    now = 2000;
    p.finish(false);
    expect(out.at(-1)).toBe('image build: install GRUB FAILED after 2.0 s\n');
  });
});

describe('Progress (terminal)', () => {
  it('redraws one live line (cleared with CR + erase) and leaves a summary line per phase', () => {
    let now = 0;
    const out: string[] = [];
    const p = new Progress({ write: (s: string) => out.push(s), isTTY: true, columns: 100 }, true, () => now);
    p.phase('configure');
    now = 500;
    p.line('Generating locales (this might take a while)...');
    (p as unknown as { redraw(): void }).redraw();
    now = 3000;
    p.finish(true);
    const text = out.join('');
    expect(text).toContain('\r\x1b[K');
    expect(text).toMatch(/configure the system\s+0\.5 s\s+total 0\.5 s\s+Generating locales/);
    expect(
      text.endsWith(
        '  done  configure the system' + ' '.repeat(44 - 'configure the system'.length) + '    3.0 s\n',
      ),
    ).toBe(true);
    for (const chunk of out)
      for (const line of chunk.split('\r'))
        expect(line.replace('\x1b[K', '').replace(/\n$/, '').length).toBeLessThanOrEqual(99);
  });
});

describe('pgop image build (CLI arguments)', () => {
  const bin = join(new URL('../../', import.meta.url).pathname, 'bin/pgop');
  const run = (args: string[]) =>
    spawnSync(process.execPath, [bin, 'image', 'build', ...args], { encoding: 'utf8' });
  it('rejects bad flags with exit 4 before building anything', () => {
    const r = run(['--size-gib', '1', '-o', join(tmpdir(), 'never.qcow2')]);
    expect(r.status).toBe(4);
    expect(r.stderr).toMatch(/cannot build image: --size-gib/);
  });
  it('rejects a spec whose provider is not libvirt', () => {
    const spec = new URL('../../specs/sim-3node.yaml', import.meta.url).pathname;
    const r = run(['-f', spec]);
    expect(r.status).toBe(4);
    expect(r.stderr).toMatch(/provider is not libvirt/);
  });
  it('rejects an unknown option as a usage error (exit 2)', () => {
    expect(run(['--frobnicate']).status).toBe(2);
  });
});
