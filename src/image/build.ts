// `pgop image build`: runs src/image/build-image.sh (shipped as a file, read from the package
// directory at run time) inside a private mount namespace, shows its progress, and records the
// recipe's content hash next to the image so an unchanged recipe is not built twice.
//
// Files next to the image: <image>.manifest.json (recipe hash, packages, build time),
// <image>.build.log (the last build's full output). The image is written to a temporary name and
// renamed into place only when complete: a failed or interrupted build leaves the old image.

import { spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { makeDirs, openPathForQemu } from '../state-dirs.js';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { terminal, transient } from '../errors.js';
import { Progress, type ProgressSink } from './progress.js';
import {
  isUpToDate,
  manifestPath,
  parseManifest,
  recipeHash,
  rootfsCachePath,
  scriptArgs,
  type ImageBuildOptions,
  type ImageManifest,
  type RecipeFile,
} from './recipe.js';

/** src/image in the package (works from src/ under vitest and from dist/src/ after the build). */
export function imageSourceDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, 'src', 'image');
    dir = dirname(dir);
  }
  throw terminal('cannot find the pgop package directory (src/image/build-image.sh)');
}

/** The build script and every file of the overlay tree, as hashed. */
export function readRecipeFiles(srcDir = imageSourceDir()): RecipeFile[] {
  const out: RecipeFile[] = [
    { path: 'build-image.sh', content: readFileSync(join(srcDir, 'build-image.sh')) },
  ];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile())
        out.push({
          path: relative(srcDir, p),
          content: Buffer.concat([Buffer.from(`mode ${statSync(p).mode & 0o7777}\n`), readFileSync(p)]),
        });
    }
  };
  walk(join(srcDir, 'files'));
  return out;
}

export function hashOf(o: ImageBuildOptions, srcDir = imageSourceDir()): string {
  return recipeHash({
    suite: o.suite,
    mirror: o.mirror,
    packages: o.packages,
    sizeGiB: o.sizeGiB,
    label: o.label,
    compress: o.compress,
    files: readRecipeFiles(srcDir),
  });
}

export interface BuildResult {
  status: 'built' | 'up-to-date';
  output: string;
  recipeHash: string;
  /** wall-clock seconds of this call (0-ish when up to date) */
  seconds: number;
  fileBytes: number;
  /** seconds per phase (built only) */
  phases: Record<string, number>;
}

const REQUIRED_TOOLS = [
  'debootstrap',
  'qemu-img',
  'sfdisk',
  'losetup',
  'partx',
  'unshare',
  'mkfs.ext4',
  'chroot',
  'fstrim',
];

function which(tool: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin')
    .split(':')
    .concat(['/usr/sbin', '/sbin'])
    .some((d) => d && existsSync(join(d, tool)));
}

const pidAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** One build per output at a time: `<output>.lock` holds the builder's pid (stale ones are taken over). */
function takeLock(output: string): () => void {
  const lock = `${output}.lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lock, 'wx', 0o644);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => rmSync(lock, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(readFileSync(lock, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) {
        throw transient(`cannot build image ${output}: another build (pid ${pid}) is writing it`);
      }
      rmSync(lock, { force: true });
    }
  }
  throw transient(`cannot build image ${output}: cannot take ${lock}`);
}

/** Loop devices still attached to `raw` (a build killed before its own clean-up ran). */
function detachLeftoverLoops(raw: string): void {
  if (!existsSync(raw)) return;
  const r = spawnSync('losetup', ['--associated', raw, '--output', 'NAME', '--noheadings'], {
    encoding: 'utf8',
  });
  for (const dev of (r.stdout ?? '')
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean)) {
    spawnSync('partx', ['-d', dev]);
    spawnSync('losetup', ['-d', dev]);
  }
}

function fileSize(p: string): number | null {
  try {
    return statSync(p).size;
  } catch {
    return null;
  }
}

export function readManifest(output: string): ImageManifest | null {
  try {
    return parseManifest(readFileSync(manifestPath(output), 'utf8'));
  } catch {
    return null;
  }
}

/** Is the image at `o.output` built from exactly this recipe? */
export function imageUpToDate(o: ImageBuildOptions, srcDir = imageSourceDir()): boolean {
  return isUpToDate(readManifest(o.output), hashOf(o, srcDir), fileSize(o.output));
}

export async function buildImage(
  o: ImageBuildOptions,
  stderr: ProgressSink = process.stderr,
): Promise<BuildResult> {
  const t0 = performance.now();
  const srcDir = imageSourceDir();
  const hash = hashOf(o, srcDir);
  if (!o.force && isUpToDate(readManifest(o.output), hash, fileSize(o.output))) {
    return {
      status: 'up-to-date',
      output: o.output,
      recipeHash: hash,
      seconds: (performance.now() - t0) / 1000,
      fileBytes: fileSize(o.output)!,
      phases: {},
    };
  }
  if (process.getuid?.() !== 0)
    throw terminal('cannot build image: needs root (loop devices, mounts, chroot)');
  const missing = REQUIRED_TOOLS.filter((t) => !which(t));
  if (missing.length)
    throw terminal(
      `cannot build image: missing ${missing.join(', ')} ` +
        `(apt-get install debootstrap qemu-utils fdisk util-linux e2fsprogs)`,
    );

  // qemu reads the image: the directories above it must be traversable (src/state-dirs.ts)
  makeDirs(dirname(o.output), 0o755);
  openPathForQemu(dirname(o.output));
  mkdirSync(o.cacheDir, { recursive: true });
  const unlock = takeLock(o.output);
  // We hold the lock: any work dir of this output is from a build that was killed outright.
  for (const e of readdirSync(dirname(o.output))) {
    if (!e.startsWith(`.${basename(o.output)}.build-`)) continue;
    detachLeftoverLoops(join(dirname(o.output), e, 'build', 'root.raw'));
    rmSync(join(dirname(o.output), e), { recursive: true, force: true });
  }
  if (o.fresh) rmSync(rootfsCachePath(o), { force: true });
  const work = mkdtempSync(join(dirname(o.output), `.${basename(o.output)}.build-`));
  const tmpOut = join(work, 'image.qcow2');
  const logPath = `${o.output}.build.log`;
  const log = openSync(logPath, 'w', 0o644);
  const progress = new Progress(stderr);
  const tail: string[] = [];
  let child: ReturnType<typeof spawn> | null = null;
  // To the build's whole process group: unshare --fork ignores INT/TERM while it waits, and
  // the script's trap must run (unmount, detach the loop device) after its current command.
  const forward = (sig: NodeJS.Signals) => () => {
    if (child?.pid) {
      try {
        process.kill(-child.pid, sig);
      } catch {
        /* already gone */
      }
    }
  };
  const onInt = forward('SIGINT');
  const onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  let ok = false;
  try {
    const argv = [
      '--fork',
      '--kill-child=SIGTERM',
      '--mount',
      '--propagation',
      'private',
      '--',
      'bash',
      join(srcDir, 'build-image.sh'),
      ...scriptArgs(o, tmpOut, join(work, 'build'), join(srcDir, 'files')),
    ];
    writeSync(log, `# unshare ${argv.join(' ')}\n`);
    child = spawn('unshare', argv, {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C.UTF-8' },
      detached: true,
    });
    const onLine = (line: string) => {
      writeSync(log, `${line}\n`);
      tail.push(line);
      if (tail.length > 30) tail.shift();
      progress.line(line);
    };
    createInterface({ input: child.stdout! }).on('line', onLine);
    createInterface({ input: child.stderr! }).on('line', onLine);
    createInterface({ input: child.stdio[3] as NodeJS.ReadableStream }).on('line', (line) => {
      const m = /^::phase (\S+)$/.exec(line);
      if (!m) return onLine(line);
      writeSync(log, `${line}\n`);
      if (m[1] !== 'done') progress.phase(m[1]!);
    });
    const code = await new Promise<number>((resolve, reject) => {
      child!.on('error', reject);
      child!.on('close', (c, sig) => resolve(c ?? (sig ? 128 : 1)));
    });
    if (code !== 0) {
      progress.finish(false);
      throw terminal(
        `cannot build image ${o.output}: build-image.sh exited ${code}; last output:\n` +
          `${tail.map((l) => `  ${l}`).join('\n')}\n(full log: ${logPath})`,
      );
    }
    ok = true;
    progress.finish(true);
    renameSync(tmpOut, o.output);
    const fileBytes = statSync(o.output).size;
    const seconds = (performance.now() - t0) / 1000;
    const manifest: ImageManifest = {
      recipeHash: hash,
      suite: o.suite,
      mirror: o.mirror,
      packages: [...o.packages],
      sizeGiB: o.sizeGiB,
      label: o.label,
      builtAt: new Date().toISOString(),
      buildSeconds: Math.round(seconds * 10) / 10,
      fileBytes,
    };
    writeFileSync(`${manifestPath(o.output)}.tmp`, `${JSON.stringify(manifest, null, 2)}\n`);
    renameSync(`${manifestPath(o.output)}.tmp`, manifestPath(o.output));
    return {
      status: 'built',
      output: o.output,
      recipeHash: hash,
      seconds,
      fileBytes,
      phases: { ...progress.durations },
    };
  } finally {
    if (!ok) progress.finish(false);
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    closeSync(log);
    detachLeftoverLoops(join(work, 'build', 'root.raw'));
    rmSync(work, { recursive: true, force: true });
    unlock();
  }
}
