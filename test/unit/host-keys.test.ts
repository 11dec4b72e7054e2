// Hole 5 of issue 13: host keys made by pgop and verified from the first contact. Key files and
// the SSH client's verifier, against an ssh2 server on loopback (no lab needed).

import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Server } from 'ssh2';
import {
  ensureKeyPair,
  generateKeyPair,
  publicOfPrivate,
  readKeyPair,
  removeKeyPair,
  type KeyPair,
} from '../../src/drivers/ssh/keys.js';
import {
  SshShell,
  TRUST_NEXT_KEY,
  createMemoryPins,
  fingerprint,
  type HostKeyRefusal,
} from '../../src/drivers/ssh/shell.js';
import { PgopError } from '../../src/errors.js';
import { Store } from '../../src/store/store.js';
import { simSpec } from '../helpers/sim-spec.js';

const tmp = mkdtempSync(join(tmpdir(), 'pgop-hostkeys-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('key pairs made by pgop', () => {
  it('ed25519 in OpenSSH formats; the public line matches the private key; every pair is new', () => {
    const a = generateKeyPair('pgop-host@c/n1');
    expect(a.privateKey).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----\n/);
    expect(a.publicLine).toMatch(/^ssh-ed25519 [A-Za-z0-9+/]+=* pgop-host@c\/n1$/);
    expect(publicOfPrivate(a.privateKey)).toBe(a.keyB64);
    expect(generateKeyPair('pgop-host@c/n1').keyB64).not.toBe(a.keyB64);
    expect(() => generateKeyPair('two\nlines')).toThrow(/one line/);
  });

  it('every pair carries a whole 32-byte key (ssh2 alone drops a leading zero byte in ~1 of 230)', () => {
    // 1500 pairs: the library's short key would show up here with probability ~99.8%
    for (let i = 0; i < 1500; i++) {
      const k = generateKeyPair('pgop-host@c/n');
      expect(Buffer.from(k.keyB64, 'base64').length).toBe(51);
      expect(publicOfPrivate(k.privateKey)).toBe(k.keyB64);
    }
  });

  it(
    'ensureKeyPair: made once (private 0600, public 0644, ' + 'new directory 0700), then read back unchanged',
    async () => {
      const path = join(tmp, 'state', 'c1', 'hostkeys', 'n1_ed25519');
      const made = await ensureKeyPair(path, 'pgop-host@c1/n1');
      expect(made.created).toBe(true);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      expect(statSync(`${path}.pub`).mode & 0o777).toBe(0o644);
      expect(statSync(dirname(path)).mode & 0o777).toBe(0o700);
      const again = await ensureKeyPair(path, 'pgop-host@c1/n1');
      expect(again).toEqual({ ...made, created: false });
      expect((await readKeyPair(path))!.keyB64).toBe(made.keyB64);
      await removeKeyPair(path);
      const remade = await ensureKeyPair(path, 'pgop-host@c1/n1');
      expect(remade.created).toBe(true);
      expect(remade.keyB64).not.toBe(made.keyB64);
    },
  );
});

describe('the SSH client accepts the pinned key and nothing else (loopback ssh2 server)', () => {
  let server: Server;
  let port = 0;
  let hostKey: KeyPair;
  const operator = generateKeyPair('pgop-operator@t');
  const operatorPath = join(tmp, 'operator_ed25519');

  beforeAll(async () => {
    hostKey = generateKeyPair('pgop-host@t/n1');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(operatorPath, operator.privateKey, { mode: 0o600 });
    server = new Server({ hostKeys: [hostKey.privateKey] }, (client) => {
      client.on('authentication', (ctx) =>
        ctx.method === 'publickey' ? ctx.accept() : ctx.reject(['publickey']),
      );
      client.on('ready', () => {
        client.on('session', (accept) => {
          const session = accept();
          session.on('exec', (acc) => {
            const ch = acc();
            ch.exit(0);
            ch.end();
          });
        });
      });
      client.on('error', () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const ref = () => ({ id: 't/n1', address: '127.0.0.1', port, user: 'root', privateKeyPath: operatorPath });
  const attempt = async (pins: ReturnType<typeof createMemoryPins>, refusals: HostKeyRefusal[] = []) => {
    const shell = new SshShell(pins, { connectTimeoutMs: 2000, onHostKeyRefused: (r) => refusals.push(r) });
    try {
      return await shell.exec(ref(), ['true']);
    } finally {
      await shell.close();
    }
  };

  it('connects when the presented key is the pinned one', async () => {
    const pins = createMemoryPins();
    pins.pin('t/n1', 'ssh-ed25519', hostKey.keyB64);
    expect((await attempt(pins)).code).toBe(0);
  });

  it('refuses a host with no pin (no trust on first use), and pins nothing', async () => {
    const pins = createMemoryPins();
    const refusals: HostKeyRefusal[] = [];
    const err = await attempt(pins, refusals).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PgopError);
    expect((err as PgopError).kind).toBe('terminal');
    expect((err as PgopError).message).toMatch(
      /host key refused: it presented SHA256:\S+, and no key is pinned for it/,
    );
    expect(pins.all().size).toBe(0);
    expect(refusals).toEqual([
      expect.objectContaining({ id: 't/n1', expected: null, presented: fingerprint(hostKey.keyB64) }),
    ]);
  });

  it('refuses another key, naming the pinned and the presented fingerprints', async () => {
    const pins = createMemoryPins();
    const other = generateKeyPair('x');
    pins.pin('t/n1', 'ssh-ed25519', other.keyB64);
    const refusals: HostKeyRefusal[] = [];
    const err = (await attempt(pins, refusals).catch((e: unknown) => e)) as PgopError;
    expect(err.kind).toBe('terminal');
    expect(err.message).toContain(
      `it presented ${fingerprint(hostKey.keyB64)}, ` +
        `but the key pinned for it is ${fingerprint(other.keyB64)}`,
    );
    expect(pins.getPinned('t/n1')!.keyB64).toBe(other.keyB64); // unchanged
    expect(refusals[0]).toMatchObject({
      expected: fingerprint(other.keyB64),
      presented: fingerprint(hostKey.keyB64),
    });
  });

  it(
    'after `host-key forget` (an explicit placeholder) ' + 'the next key is accepted once and pinned',
    async () => {
      const pins = createMemoryPins();
      pins.pin('t/n1', TRUST_NEXT_KEY, '');
      expect((await attempt(pins)).code).toBe(0);
      expect(pins.getPinned('t/n1')).toEqual({ algo: 'ssh-ed25519', keyB64: hostKey.keyB64 });
    },
  );

  it('the pin a store keeps is replaced only on purpose', () => {
    const store = Store.open(join(tmp, 'pins.db'));
    try {
      store.applySpec(simSpec({ name: 'c1' }), 'h', 's', 1);
      store.pinHostKey('c1', 'n1', 'ssh-ed25519', 'K1', 2);
      expect(() => store.pinHostKey('c1', 'n1', 'ssh-ed25519', 'K2', 3)).toThrow(/pgop host-key rotate/);
      store.pinHostKey('c1', 'n1', 'ssh-ed25519', 'K2', 4, { replace: true });
      store.pinHostKey('c1', 'pool', 'ssh-ed25519', 'K3', 5);
      expect(store.listHostKeys('c1').map((k) => [k.node, k.keyB64, k.pinnedAt])).toEqual([
        ['n1', 'K2', 4],
        ['pool', 'K3', 5],
      ]);
      expect(store.listHostKeys('other')).toEqual([]);
    } finally {
      store.close();
    }
  });
});

describe('pgop host-key list | forget', () => {
  const capture = async (fn: () => Promise<number>) => {
    const out: string[] = [];
    const err: string[] = [];
    const w1 = process.stdout.write;
    const w2 = process.stderr.write;
    process.stdout.write = ((s: string) => (out.push(String(s)), true)) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => (err.push(String(s)), true)) as typeof process.stderr.write;
    try {
      return { code: await fn(), stdout: out.join(''), stderr: err.join('') };
    } finally {
      process.stdout.write = w1;
      process.stderr.write = w2;
    }
  };

  it('lists fingerprints only; forget leaves an explicit accept-next placeholder and an event', async () => {
    const { hostKeyListCommand, hostKeyForgetCommand } = await import('../../src/cli/commands/host-key.js');
    const db = join(tmp, 'cli.db');
    const k1 = generateKeyPair('a');
    const store = Store.open(db);
    store.applySpec(simSpec({ name: 'c1' }), 'h', 's', 1);
    store.pinHostKey('c1', 'pg01', 'ssh-ed25519', k1.keyB64, Date.parse('2026-01-01T00:00:00Z'));
    store.close();

    const list = await capture(() => hostKeyListCommand(db, {}));
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^CLUSTER\s+NODE\s+ALGO\s+FINGERPRINT\s+PINNED\n/);
    expect(list.stdout).toContain(`c1       pg01  ssh-ed25519  ${fingerprint(k1.keyB64)}`);
    expect(list.stdout).not.toContain(k1.keyB64); // no key material, fingerprints only
    const json = JSON.parse(
      (await capture(() => hostKeyListCommand(db, { cluster: 'c1', output: 'json' }))).stdout,
    );
    expect(json.items).toEqual([
      {
        cluster: 'c1',
        node: 'pg01',
        algo: 'ssh-ed25519',
        fingerprint: fingerprint(k1.keyB64),
        pinnedAt: '2026-01-01T00:00:00.000Z',
      },
    ]);
    await expect(hostKeyListCommand(db, { cluster: 'nope' })).rejects.toThrow(/no such cluster/);

    const forget = await capture(() => hostKeyForgetCommand(db, 'c1', 'pg01'));
    expect(forget.code).toBe(0);
    expect(forget.stdout).toContain(`host key of c1/pg01 forgotten (was ${fingerprint(k1.keyB64)})`);
    expect(forget.stderr).toMatch(/not verified/);
    const after = Store.open(db, { readonly: true });
    expect(after.getHostKey('c1', 'pg01')).toMatchObject({ algo: TRUST_NEXT_KEY });
    expect(after.listEvents({ cluster: 'c1' }).map((e) => e.ruleId)).toEqual(['ssh.host-key-forgotten']);
    after.close();
    expect((await capture(() => hostKeyListCommand(db, {}))).stdout).toContain(
      '(forgotten: the next key presented will be accepted)',
    );
    await expect(hostKeyForgetCommand(db, 'c1', 'pg09')).rejects.toThrow(/no such machine/);
  });
});
