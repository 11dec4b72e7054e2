// The image recipe: what goes into the offline Debian cloud image `pgop image build` makes, and
// its content hash. Pure functions here (tested in test/unit/image-recipe.test.ts); the file
// reading lives in build.ts.

import { createHash } from 'node:crypto';
import { isAbsolute, join } from 'node:path';
import { terminal } from '../errors.js';

/** Bump when the meaning of the recipe changes in a way its inputs do not show. */
export const RECIPE_VERSION = 1;

/**
 * Packages debootstrap installs (minbase + these + their dependencies). python3-cffi-backend must
 * be named: debootstrap does not resolve the virtual package cloud-init's dependencies need.
 * GRUB (grub-pc) is installed afterwards in a chroot (its postinst wants a configured disk).
 */
export const DEFAULT_PACKAGES: readonly string[] = [
  'linux-image-cloud-amd64',
  'systemd-sysv',
  'udev',
  'dbus',
  'openssh-server',
  'cloud-init',
  'cloud-guest-utils',
  'fdisk', // growpart needs sfdisk
  'python3-cffi-backend',
  'postgresql-15',
  'pgpool2',
  'postgresql-15-pgpool2',
  'pgbackrest', // spec.backup: archive-push to the repository's server on the hypervisor
  'ifupdown',
  'isc-dhcp-client',
  'iproute2',
  'iputils-arping', // the virtual IP's new holder announces it (gratuitous ARP)
  'iptables', // a pool host sends pgpool's first node's connects to a standby while it is away
  'iputils-ping', // pgpool's own watchdog (spec.pgpool.watchdog) pings the address it took
  'netbase',
  'sudo',
  'procps',
  'qemu-guest-agent',
  'ca-certificates',
  'lvm2', // the data disk (the seed's vg01/lv_01)
  'xfsprogs',
  'locales', // en_US.UTF-8 for databases; C.UTF-8 is the default
  'less',
];

export const DEFAULTS = {
  suite: 'bookworm',
  mirror: 'http://deb.debian.org/debian',
  output: '/var/lib/pgop/images/debian-12-pgop.qcow2',
  cacheDir: '/var/cache/pgop/image',
  sizeGiB: 3,
  label: 'pgop-root',
} as const;

export interface ImageBuildOptions {
  /** the qcow2 to write (its manifest goes next to it: `<output>.manifest.json`) */
  output: string;
  cacheDir: string;
  suite: string;
  mirror: string;
  packages: string[];
  sizeGiB: number;
  label: string;
  compress: boolean;
  /** build even when the recipe is unchanged */
  force: boolean;
  /** run debootstrap again instead of unpacking the cached system */
  fresh: boolean;
}

/** Flags as commander hands them over (all optional; strings as typed). */
export interface ImageBuildFlags {
  output?: string;
  cacheDir?: string;
  suite?: string;
  mirror?: string;
  /** extra packages, comma or space separated, added to DEFAULT_PACKAGES */
  addPackages?: string;
  sizeGib?: string | number;
  compress?: boolean;
  force?: boolean;
  fresh?: boolean;
}

const PKG_RE = /^[a-z0-9][a-z0-9+.-]+$/;
const SUITE_RE = /^[a-z][a-z0-9-]*$/;
const LABEL_RE = /^[A-Za-z0-9_-]{1,16}$/;

/**
 * Flags (+ the spec's baseImage when a spec was given) -> validated options. Throws terminal
 * errors `cannot build image: ...` for bad input. Precedence: --output, then the spec's
 * provider.baseImage, then the default path.
 */
export function resolveBuildOptions(flags: ImageBuildFlags, specBaseImage?: string): ImageBuildOptions {
  const bad = (why: string) => terminal(`cannot build image: ${why}`);
  const output = flags.output ?? specBaseImage ?? DEFAULTS.output;
  if (!isAbsolute(output)) throw bad(`the output path must be absolute: ${output}`);
  if (!/\.qcow2$/.test(output)) throw bad(`the output must be a .qcow2 file: ${output}`);
  const cacheDir = flags.cacheDir ?? DEFAULTS.cacheDir;
  if (!isAbsolute(cacheDir)) throw bad(`the cache directory must be absolute: ${cacheDir}`);
  const suite = flags.suite ?? DEFAULTS.suite;
  if (!SUITE_RE.test(suite)) throw bad(`not a Debian suite name: ${JSON.stringify(suite)}`);
  const mirror = (flags.mirror ?? DEFAULTS.mirror).replace(/\/+$/, '');
  let url: URL;
  try {
    url = new URL(mirror);
  } catch {
    throw bad(`not a mirror URL: ${JSON.stringify(mirror)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:' && url.protocol !== 'file:')
    throw bad(`the mirror must be an http(s) or file URL: ${mirror}`);
  if (/\s/.test(mirror)) throw bad(`the mirror URL has white space: ${JSON.stringify(mirror)}`);
  const extra = (flags.addPackages ?? '').split(/[\s,]+/).filter(Boolean);
  for (const p of extra) if (!PKG_RE.test(p)) throw bad(`not a Debian package name: ${JSON.stringify(p)}`);
  const packages = [...new Set([...DEFAULT_PACKAGES, ...extra])];
  const sizeGiB = flags.sizeGib === undefined ? DEFAULTS.sizeGiB : Number(flags.sizeGib);
  if (!Number.isInteger(sizeGiB) || sizeGiB < 2 || sizeGiB > 64)
    throw bad(`--size-gib must be a whole number from 2 to 64, not ${JSON.stringify(flags.sizeGib)}`);
  return {
    output,
    cacheDir,
    suite,
    mirror,
    packages,
    sizeGiB,
    label: DEFAULTS.label,
    compress: !!flags.compress,
    force: !!flags.force || !!flags.fresh,
    fresh: !!flags.fresh,
  };
}

/**
 * Where the system debootstrap made is kept (a tar file): named after what decides its content
 * (suite, mirror, the package set), so a changed package list never reuses an old system.
 */
export function rootfsCachePath(
  o: Pick<ImageBuildOptions, 'cacheDir' | 'suite' | 'mirror' | 'packages'>,
): string {
  const key = createHash('sha256')
    .update(
      JSON.stringify({
        v: RECIPE_VERSION,
        variant: 'minbase',
        suite: o.suite,
        mirror: o.mirror,
        packages: [...new Set(o.packages)].sort(),
      }),
    )
    .digest('hex')
    .slice(0, 16);
  return join(o.cacheDir, 'rootfs', `rootfs-${o.suite}-${key}.tar`);
}

/** argv of build-image.sh (after the script path). Values are separate elements: no shell parsing. */
export function scriptArgs(
  o: ImageBuildOptions,
  tmpOutput: string,
  workDir: string,
  filesDir: string,
): string[] {
  for (const p of o.packages)
    if (!PKG_RE.test(p))
      throw terminal(`cannot build image: not a Debian package name: ${JSON.stringify(p)}`);
  if (!LABEL_RE.test(o.label))
    throw terminal(`cannot build image: bad filesystem label ${JSON.stringify(o.label)}`);
  return [
    '--out',
    tmpOutput,
    '--work',
    workDir,
    '--cache',
    o.cacheDir,
    '--suite',
    o.suite,
    '--mirror',
    o.mirror,
    '--packages',
    o.packages.join(','),
    '--files',
    filesDir,
    '--label',
    o.label,
    '--size-gib',
    String(o.sizeGiB),
    '--rootfs-cache',
    rootfsCachePath(o),
    ...(o.compress ? ['--compress'] : []),
  ];
}

export interface RecipeFile {
  /** path relative to src/image (e.g. "build-image.sh", "files/etc/fstab") */
  path: string;
  content: Buffer | string;
}

/** Everything that decides the image's content. The output path and cache dir do not. */
export interface RecipeInputs {
  suite: string;
  mirror: string;
  packages: readonly string[];
  sizeGiB: number;
  label: string;
  compress: boolean;
  /** the build script and every file copied into the image */
  files: readonly RecipeFile[];
}

/** sha256 hex of the recipe. Package and file order do not matter; every byte of every file does. */
export function recipeHash(r: RecipeInputs): string {
  const h = createHash('sha256');
  const field = (name: string, value: string | Buffer) => {
    const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
    h.update(`${name}\0${v.length}\0`);
    h.update(v);
    h.update('\0');
  };
  field('version', String(RECIPE_VERSION));
  field('suite', r.suite);
  field('mirror', r.mirror);
  field('packages', [...new Set(r.packages)].sort().join(','));
  field('size', String(r.sizeGiB));
  field('label', r.label);
  field('compress', r.compress ? '1' : '0');
  const files = [...r.files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (let i = 1; i < files.length; i++)
    if (files[i]!.path === files[i - 1]!.path)
      throw terminal(`cannot hash the image recipe: ${files[i]!.path} listed twice`);
  for (const f of files) field(`file:${f.path}`, f.content);
  return h.digest('hex');
}

export interface ImageManifest {
  recipeHash: string;
  suite: string;
  mirror: string;
  packages: string[];
  sizeGiB: number;
  label: string;
  builtAt: string;
  buildSeconds: number;
  /** bytes of the qcow2 file when it was written */
  fileBytes: number;
}

export const manifestPath = (output: string) => `${output}.manifest.json`;

/** Parse a manifest file's text; null when it is not one (a rebuild follows). */
export function parseManifest(text: string): ImageManifest | null {
  try {
    const m = JSON.parse(text) as Partial<ImageManifest>;
    if (typeof m.recipeHash !== 'string' || !/^[0-9a-f]{64}$/.test(m.recipeHash)) return null;
    if (typeof m.fileBytes !== 'number') return null;
    return m as ImageManifest;
  } catch {
    return null;
  }
}

/** Up to date: the manifest names this recipe and the image file is still the one it describes. */
export function isUpToDate(manifest: ImageManifest | null, hash: string, imageBytes: number | null): boolean {
  return (
    !!manifest && manifest.recipeHash === hash && imageBytes !== null && imageBytes === manifest.fileBytes
  );
}
