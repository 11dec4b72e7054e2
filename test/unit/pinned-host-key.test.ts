// ensurePinnedHostKey: the one rule both providers follow when they make a machine's host key.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureOperatorKey, ensurePinnedHostKey, removeKeyPair } from '../../src/drivers/ssh/keys.js';
import { TRUST_NEXT_KEY, createMemoryPins } from '../../src/drivers/ssh/shell.js';
import { PgopError } from '../../src/errors.js';

const tmp = mkdtempSync(join(tmpdir(), 'pgop-pinned-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('ensurePinnedHostKey', () => {
  it('pins a new key, replacing whatever was pinned', async () => {
    const pins = createMemoryPins();
    pins.pin('c/n1', 'ssh-ed25519', 'OLD');
    const key = await ensurePinnedHostKey(join(tmp, 'a', 'key'), 'c/n1', pins, 'lab');
    expect(key.created).toBe(true);
    expect(key.publicLine).toMatch(/ pgop-host@c\/n1$/);
    expect(pins.getPinned('c/n1')).toEqual({ algo: 'ssh-ed25519', keyB64: key.keyB64 });
  });

  it('pins an existing key only over nothing or the forget placeholder', async () => {
    const path = join(tmp, 'b', 'key');
    const first = await ensurePinnedHostKey(path, 'c/n2', createMemoryPins(), 'lab');
    const empty = createMemoryPins();
    expect((await ensurePinnedHostKey(path, 'c/n2', empty, 'lab')).created).toBe(false);
    expect(empty.getPinned('c/n2')?.keyB64).toBe(first.keyB64);
    const forgotten = createMemoryPins();
    forgotten.pin('c/n2', TRUST_NEXT_KEY, '');
    await ensurePinnedHostKey(path, 'c/n2', forgotten, 'libvirt');
    expect(forgotten.getPinned('c/n2')?.keyB64).toBe(first.keyB64);
    const other = createMemoryPins();
    other.pin('c/n2', 'ssh-ed25519', 'SOMEONE-ELSE');
    await ensurePinnedHostKey(path, 'c/n2', other, 'libvirt');
    expect(other.getPinned('c/n2')?.keyB64).toBe('SOMEONE-ELSE');
  });

  it('needs pins to make a key, not to reuse one', async () => {
    const path = join(tmp, 'c', 'key');
    const err = await ensurePinnedHostKey(path, 'c/n3', undefined, 'lab').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PgopError);
    expect((err as PgopError).message).toBe(
      'cannot create c/n3: this lab provider was given no host key pins',
    );
    expect((await ensurePinnedHostKey(path, 'c/n3', undefined, 'lab')).created).toBe(false);
    await removeKeyPair(path);
  });

  it('the operator key is made once, named after its cluster', async () => {
    const path = join(tmp, 'op', 'operator_ed25519');
    const a = await ensureOperatorKey(path, 'c');
    const b = await ensureOperatorKey(path, 'c');
    expect([a.created, b.created]).toEqual([true, false]);
    expect(b.publicLine).toBe(a.publicLine);
    expect(a.publicLine).toMatch(/ pgop-operator@c$/);
  });
});
