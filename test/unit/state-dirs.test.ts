// Hole 8 of issue 13: the store and the secrets stay private while qemu (libvirt-qemu) can
// reach the disks below /var/lib/pgop. The state root is a temp dir here (PGOP_STATE_ROOT);
// everything is made by the code paths pgop uses.

import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { ensureSecretFiles } from '../../src/cli/commands/lab.js';
import { ensureKeyPair } from '../../src/drivers/ssh/keys.js';
import { makeDirs, openPathForQemu, storageAccessAdvice, untraversable } from '../../src/state-dirs.js';
import { simSpec } from '../helpers/sim-spec.js';

const mode = (p: string) => statSync(p).mode & 0o777;
/** every directory from / down to p can be traversed by others (o+x) */
const traversableByOthers = (p: string) => untraversable(p).length === 0;

let base: string;
let root: string;
beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), 'pgop-perms-'));
  chmodSync(base, 0o755); // mkdtemp makes it 0700: stands for /var/lib here
  root = join(base, 'pgop');
  process.env.PGOP_STATE_ROOT = root;
});
afterEach(() => {
  delete process.env.PGOP_STATE_ROOT;
  rmSync(base, { recursive: true, force: true });
});

describe('the state root on a fresh machine', () => {
  it(
    'secrets first (as `pgop lab up` does), then the store, keys, image dir and a pool: private where it ' +
      'must be, traversable to the disks',
    async () => {
      const secret = (n: string) => ({ file: join(root, 'secrets', 'lab', n) });
      const spec = simSpec({ name: 'lab', roles: [] });
      spec.postgres.superuserPassword = secret('postgres');
      spec.replication.password = secret('replicator');
      expect(ensureSecretFiles(spec).sort()).toEqual([
        join(root, 'secrets', 'lab', 'postgres'),
        join(root, 'secrets', 'lab', 'replicator'),
      ]);
      const store = Store.open(join(root, 'pgop.db'));
      store.applySpec(spec, 'h', 's', 1); // writes: -wal and -shm appear
      const key = await ensureKeyPair(join(root, 'libvirt', 'c1', 'operator_ed25519'), 'pgop-operator@c1');
      makeDirs(join(root, 'images'), 0o755); // image build
      mkdirSync(join(root, 'pool'), { mode: 0o711 }); // libvirt's pool-build
      expect(openPathForQemu(join(root, 'pool'))).toEqual([]);
      expect(openPathForQemu(join(root, 'images', 'debian-12-pgop.qcow2'))).toEqual([]);

      expect(mode(root)).toBe(0o711); // traversable, not listable
      expect(mode(join(root, 'pgop.db'))).toBe(0o600);
      expect(mode(join(root, 'pgop.db-wal'))).toBe(0o600);
      expect(mode(join(root, 'secrets'))).toBe(0o700);
      expect(mode(join(root, 'secrets', 'lab'))).toBe(0o700);
      expect(mode(join(root, 'secrets', 'lab', 'postgres'))).toBe(0o600);
      expect(mode(join(root, 'secrets', 'lab', 'replicator'))).toBe(0o600);
      expect(mode(join(root, 'libvirt'))).toBe(0o700);
      expect(mode(join(root, 'libvirt', 'c1', 'operator_ed25519'))).toBe(0o600);
      expect(key.created).toBe(true);
      // qemu's way to the disks: o+x on every directory above them
      expect(traversableByOthers(join(root, 'pool'))).toBe(true);
      expect(traversableByOthers(join(root, 'images'))).toBe(true);
      // ... and not into the secrets or the keys
      expect(untraversable(join(root, 'secrets', 'lab'))).toEqual([
        join(root, 'secrets'),
        join(root, 'secrets', 'lab'),
      ]);
      expect(untraversable(join(root, 'libvirt', 'c1'))).toEqual([
        join(root, 'libvirt'),
        join(root, 'libvirt', 'c1'),
      ]);
      store.close();
    },
  );

  it(
    'a store made first (outside a lab) leaves the root 0711 too; a store elsewhere keeps its directory ' +
      'private',
    () => {
      Store.open(join(root, 'pgop.db')).close();
      expect(mode(root)).toBe(0o711);
      const elsewhere = join(base, 'home', 'me', '.local', 'state', 'pgop');
      Store.open(join(elsewhere, 'pgop.db')).close();
      expect(mode(elsewhere)).toBe(0o700);
      expect(mode(join(elsewhere, 'pgop.db'))).toBe(0o600);
    },
  );
});

describe('a state root an older pgop made 0700', () => {
  beforeEach(() => {
    mkdirSync(root, { mode: 0o700 });
    chmodSync(root, 0o700);
    mkdirSync(join(root, 'secrets', 'lab'), { recursive: true, mode: 0o755 });
    chmodSync(join(root, 'secrets'), 0o755); // loose below a closed root: harmless before, not after
    writeFileSync(join(root, 'secrets', 'lab', 'postgres'), 'x\n', { mode: 0o600 });
    writeFileSync(join(root, 'pgop.db'), '', { mode: 0o644 });
    mkdirSync(join(root, 'e2e-1', 'pool'), { recursive: true, mode: 0o755 });
  });

  it(
    'qemu could not reach a disk below it; opening the path for qemu makes the root 0711 after closing ' +
      'its private members',
    () => {
      const pool = join(root, 'e2e-1', 'pool');
      expect(untraversable(pool)).toEqual([root]);
      expect(openPathForQemu(pool)).toEqual([]);
      expect(mode(root)).toBe(0o711);
      expect(mode(join(root, 'secrets'))).toBe(0o700);
      expect(mode(join(root, 'pgop.db'))).toBe(0o600);
      expect(traversableByOthers(pool)).toBe(true);
    },
  );

  it('never opens a private member, nor a directory outside the state root: those are reported', () => {
    expect(openPathForQemu(join(root, 'secrets', 'lab', 'disk.qcow2'))).toEqual([root]);
    expect(mode(root)).toBe(0o700);
    const outside = join(base, 'private', 'pool');
    mkdirSync(outside, { recursive: true });
    chmodSync(join(base, 'private'), 0o700);
    expect(openPathForQemu(outside)).toEqual([join(base, 'private')]);
    expect(mode(join(base, 'private'))).toBe(0o700);
  });

  it('libvirt\'s "Permission denied" on a disk becomes advice naming the closed directories', () => {
    const disk = join(root, 'e2e-1', 'pool', 'c-pg1-root.qcow2');
    const advice = storageAccessAdvice(
      'internal error: process exited while connecting to monitor: ' +
        `Cannot access storage file '${disk}' (as uid:64055, gid:64055): Permission denied`,
    );
    expect(advice).toContain(`qemu (user libvirt-qemu) cannot reach ${disk}`);
    expect(advice).toContain(`${root} (mode 0700) is closed to it`);
    expect(storageAccessAdvice('some other error')).toBeNull();
    openPathForQemu(dirname(disk));
    expect(storageAccessAdvice(`Cannot access storage file '${disk}': Permission denied`)).toMatch(
      /cannot read .*check its owner and mode/,
    );
  });
});
