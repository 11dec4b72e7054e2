// pgop's directories on the hypervisor and their modes. Two needs meet under /var/lib/pgop:
// the store and the secrets must be private, and qemu (user libvirt-qemu under libvirt's qemu
// driver) must reach the guests' disks (the default storage pool /var/lib/pgop/pool, the base
// image under /var/lib/pgop/images): it must be able to traverse (x) every directory above them.
//
//   /var/lib/pgop             0711  traversable, not listable; every member private by its own mode
//   /var/lib/pgop/pgop.db*    0600  the store (SQLite gives -wal/-shm the db file's mode)
//   /var/lib/pgop/serve.log   0600
//   /var/lib/pgop/secrets/    0700  (files 0600)
//   /var/lib/pgop/libvirt/    0700  operator and host keys (0600), ownership markers
//   /var/lib/pgop/lab/        0755  lab hosts (their private parts have their own modes)
//   /var/lib/pgop/images/     0755  base images, read by qemu
//   /var/lib/pgop/pool/       libvirt's (pool-build), traversable
//
// An older pgop made /var/lib/pgop 0700, which hid every disk below it from qemu ("Cannot access
// storage file ... Permission denied"). openPathForQemu fixes that up when pgop is about to use a
// disk path below it, and tightens the private members first, so nothing is opened but the path.

import { chmodSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';

/** The directory pgop keeps its state in as root (PGOP_STATE_ROOT overrides it, for tests). */
export function stateRoot(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.PGOP_STATE_ROOT || '/var/lib/pgop');
}

export const STATE_ROOT_MODE = 0o711;
/** Members of the state root that stay private whatever the root's mode. */
export const PRIVATE_DIRS = ['secrets', 'libvirt'] as const;
export const PRIVATE_FILES = [
  'pgop.db',
  'pgop.db-wal',
  'pgop.db-shm',
  'pgop.db-journal',
  'serve.log',
] as const;

const under = (p: string, dir: string) => p === dir || p.startsWith(dir.endsWith(sep) ? dir : dir + sep);

/**
 * mkdir -p `dir`: every directory made here gets `mode`, except the state root itself, which
 * gets 0711 (so that a secrets or store directory made first does not close it to qemu).
 * Existing directories keep their modes. Returns the directories made.
 */
export function makeDirs(dir: string, mode: number, root = stateRoot()): string[] {
  const missing: string[] = [];
  for (let d = resolve(dir); !existsSync(d); d = dirname(d)) {
    missing.unshift(d);
    if (dirname(d) === d) break;
  }
  for (const d of missing) {
    const m = d === root ? STATE_ROOT_MODE : mode;
    try {
      mkdirSync(d, { mode: m });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      continue;
    }
    chmodSync(d, m); // the umask may have narrowed it
  }
  return missing;
}

/** The existing directories above `path` (and path itself when it is a directory) that others
 *  may not traverse (no o+x), outermost first. */
export function untraversable(path: string): string[] {
  const out: string[] = [];
  const p = resolve(path);
  const dirs: string[] = [];
  for (let d = p; ; d = dirname(d)) {
    dirs.unshift(d);
    if (dirname(d) === d) break;
  }
  for (const d of dirs) {
    let st;
    try {
      st = statSync(d);
    } catch {
      break; // not there (yet): nothing below it exists either
    }
    if (!st.isDirectory()) continue;
    if ((st.mode & 0o001) === 0) out.push(d);
  }
  return out;
}

/** Tighten the private members of the state root (before it is opened for traversal). */
function tightenPrivateMembers(root: string): void {
  for (const d of PRIVATE_DIRS) {
    const p = join(root, d);
    try {
      if (statSync(p).isDirectory() && (statSync(p).mode & 0o077) !== 0) chmodSync(p, 0o700);
    } catch {
      /* missing */
    }
  }
  for (const f of PRIVATE_FILES) {
    const p = join(root, f);
    try {
      if ((statSync(p).mode & 0o077) !== 0) chmodSync(p, 0o600);
    } catch {
      /* missing */
    }
  }
}

/**
 * Let qemu reach `path` (a disk, a pool directory): pgop's own directories above it get o+x
 * (the state root 0711 after its private members were tightened; directories below the root on
 * the way, e.g. images/ or a pool directory, o+x added). Never a private member (secrets/,
 * libvirt/) and never a directory outside the state root: those are reported, not changed.
 * Returns the directories above `path` that stay closed to others.
 */
export function openPathForQemu(path: string, root = stateRoot()): string[] {
  const p = resolve(path);
  if (under(p, root)) {
    const privateHit = PRIVATE_DIRS.some((d) => under(p, join(root, d)));
    for (const d of untraversable(p)) {
      if (!under(d, root) || privateHit) continue;
      if (d === root) {
        tightenPrivateMembers(root);
        chmodSync(d, (statSync(d).mode & 0o777) | 0o011);
      } else {
        chmodSync(d, (statSync(d).mode & 0o777) | 0o001);
      }
    }
  }
  return untraversable(p);
}

/** The advice appended to libvirt's "Cannot access storage file '<path>' ...: Permission
 *  denied": which directories above the file qemu cannot traverse. Null when not that error. */
export function storageAccessAdvice(message: string): string | null {
  const denied = new RegExp(
    [
      String.raw`Cannot access storage file '([^']+)'(?: \([^)]*\))?: Permission denied`,
      "Could not open '([^']+)': Permission denied",
    ].join('|'),
  );
  const m = denied.exec(message);
  if (!m) return null;
  const file = m[1] ?? m[2]!;
  const closed = untraversable(dirname(file));
  const mode = (d: string) => (statSync(d).mode & 0o777).toString(8).padStart(4, '0');
  return closed.length > 0
    ? `qemu (user libvirt-qemu) cannot reach ${file}: it must traverse every directory above it, and ` +
        `${closed.map((d) => `${d} (mode ${mode(d)})`).join(', ')} ${closed.length === 1 ? 'is' : 'are'} ` +
        `closed to it; pgop opens its own directories under ${stateRoot()} itself: ` +
        `put the pool or image there, or \`chmod o+x\` those directories`
    : `qemu (user libvirt-qemu) cannot read ${file} ` +
        `(check its owner and mode, and any security driver such as AppArmor)`;
}
