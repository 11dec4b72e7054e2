// Hole 5 of issue 13 on the real lab: every host's SSH key is made by pgop and pinned in the
// store before the host's sshd first starts; a host presenting any other key is refused with an
// event naming both fingerprints; a re-provisioned host gets a new pinned key; rotation swaps
// the pin only once the new key answers.
//
// Run: `bash scripts/test-integration.sh test/integration/host-keys.test.ts` (root; vitest runs
// in a private hub namespace, everything is removed afterwards).

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inHub, pidInNetns, procComm } from '../../src/drivers/lab/netns.js';
import { createLabWorld, storePins, type LabWorld } from '../../src/drivers/lab/world.js';
import { createLabProvider } from '../../src/drivers/lab/provider.js';
import { SshShell, createMemoryPins, fingerprint, type HostKeyPins } from '../../src/drivers/ssh/shell.js';
import { generateKeyPair, readKeyPair } from '../../src/drivers/ssh/keys.js';
import { Store } from '../../src/store/store.js';
import { labSpec } from '../helpers/lab-spec.js';

const prefix = process.env.PGOP_LAB_PREFIX;
const ready = process.getuid?.() === 0 && prefix !== undefined && /^pgt/.test(prefix) && inHub(prefix);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(!ready)(
  'host keys made and pinned by pgop (real lab; run via scripts/test-integration.sh)',
  () => {
    const spec = labSpec({ name: 'hk', network: '10.85.0.0/24', nodes: 1, pgpool: true });
    const node = spec.nodes[0]!;
    const info = createLabProvider(); // paths only
    const dir = mkdtempSync(join(tmpdir(), 'pgop-hk-'));
    let store: Store;
    let world: LabWorld;
    /** every pin the provider made: was the host's sshd already running at that moment? */
    const pinLog: { id: string; keyB64: string; sshdRunning: boolean }[] = [];

    const sshdPid = (name: string) => {
      const h = info.describeHost(spec, name === 'pool' ? 'pool' : node);
      try {
        const pid = Number(readFileSync(join(h.dir, 'sshd.pid'), 'utf8'));
        return pidInNetns(pid, h.ns) && procComm(pid) === 'sshd' ? pid : null;
      } catch {
        return null;
      }
    };
    /** a connection from a fresh client that trusts exactly these pins */
    const tryConnect = async (pins: HostKeyPins) => {
      const shell = new SshShell(pins, { connectTimeoutMs: 5000 });
      try {
        return await shell.exec(info.hostRef(spec, node), ['id', '-u']);
      } finally {
        await shell.close();
      }
    };
    /** sshd re-reads its key on SIGHUP (and re-executes: a moment without a listener) */
    const hupSshd = async () => {
      process.kill(sshdPid(node.name)!, 'SIGHUP');
      await sleep(300);
    };

    beforeAll(() => {
      store = Store.open(join(dir, 'pgop.db'));
      store.applySpec(spec, 'hash', 'test', Date.now());
      const inner = storePins(store);
      const pins: HostKeyPins = {
        getPinned: (id) => inner.getPinned(id),
        pin: (id, algo, keyB64) => {
          pinLog.push({ id, keyB64, sshdRunning: sshdPid(id.split('/')[1]!) !== null });
          inner.pin(id, algo, keyB64);
        },
      };
      world = createLabWorld({ store, pins });
    });

    afterAll(async () => {
      try {
        await world?.provider.deleteMachine(spec, node);
        await world?.provider.deleteClusterResources(spec);
      } catch {
        /* the wrapper cleans up too */
      }
      await world?.provider.close();
      store?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it(
      "pins the key it made for each host before that host's sshd first starts; the first contact is " +
        'verified',
      async () => {
        expect(store.listHostKeys('hk')).toEqual([]);
        await world.provider.ensureMachine(spec, node);
        expect(pinLog.map((p) => [p.id, p.sshdRunning])).toEqual([
          ['hk/pg1', false],
          ['hk/pool', false],
        ]);
        for (const name of ['pg1', 'pool']) {
          const h = info.describeHost(spec, name === 'pool' ? 'pool' : node);
          const made = (await readKeyPair(join(h.dir, 'ssh', 'ssh_host_ed25519_key')))!;
          expect(store.getHostKey('hk', name)).toMatchObject({ algo: 'ssh-ed25519', keyB64: made.keyB64 });
          expect(sshdPid(name)).not.toBeNull();
        }
        // the very first connection accepts that key (and only that key: the client has no TOFU)
        expect((await tryConnect(storePins(store))).stdout).toBe('0\n');
        expect((await world.shell.exec(info.hostRef(spec, node), ['true'])).code).toBe(0);
      },
    );

    it(
      'a node whose sshd presents another key is refused, ' + 'with an event naming both fingerprints',
      async () => {
        const h = info.describeHost(spec, node);
        const keyFile = join(h.dir, 'ssh', 'ssh_host_ed25519_key');
        const original = (await readKeyPair(keyFile))!;
        const foreign = generateKeyPair('someone-else');
        writeFileSync(keyFile, foreign.privateKey, { mode: 0o600 });
        writeFileSync(`${keyFile}.pub`, `${foreign.publicLine}\n`);
        await hupSshd();
        world.shell.disconnect(h.id);
        try {
          let message = '';
          for (let i = 0; i < 20 && !/host key refused/.test(message); i++) {
            message = await world.shell.exec(info.hostRef(spec, node), ['true']).then(
              () => 'connected',
              (e: Error) => e.message,
            );
            if (!/host key refused/.test(message)) await sleep(200);
          }
          expect(message).toContain(
            `it presented ${fingerprint(foreign.keyB64)}, ` +
              `but the key pinned for it is ${fingerprint(original.keyB64)}`,
          );
          const events = store
            .listEvents({ cluster: 'hk' })
            .filter((e) => e.ruleId === 'ssh.host-key-refused');
          expect(events).toHaveLength(1);
          expect(events[0]).toMatchObject({ node: 'pg1' });
          expect(events[0]!.reason).toContain(fingerprint(foreign.keyB64));
          expect(events[0]!.reason).toContain(fingerprint(original.keyB64));
          expect(store.getHostKey('hk', 'pg1')!.keyB64).toBe(original.keyB64); // the pin stands
          // a client with no pin trusts it no more
          await expect(tryConnect(createMemoryPins())).rejects.toThrow(/no key is pinned for it/);
        } finally {
          writeFileSync(keyFile, original.privateKey, { mode: 0o600 });
          writeFileSync(`${keyFile}.pub`, `${original.publicLine}\n`);
          await hupSshd();
        }
        expect((await tryConnect(storePins(store))).stdout).toBe('0\n');
      },
    );

    it(
      'rotate: the new key goes over the verified session, the pin is swapped once it answers, the old ' +
        'key is refused',
      async () => {
        const h = info.describeHost(spec, node);
        const before = store.getHostKey('hk', 'pg1')!;
        const old = createMemoryPins();
        old.pin(h.id, 'ssh-ed25519', before.keyB64);
        const r = await world.rotateHostKey(spec, node);
        expect(r).toMatchObject({ id: 'hk/pg1', previous: fingerprint(before.keyB64), resumed: false });
        const after = store.getHostKey('hk', 'pg1')!;
        expect(after.keyB64).not.toBe(before.keyB64);
        expect(r.current).toBe(fingerprint(after.keyB64));
        expect((await readKeyPair(join(h.dir, 'ssh', 'ssh_host_ed25519_key')))!.keyB64).toBe(after.keyB64);
        expect(existsSync(join(h.dir, 'ssh', 'ssh_host_ed25519_key.next'))).toBe(false);
        expect((await tryConnect(storePins(store))).stdout).toBe('0\n');
        await expect(tryConnect(old)).rejects.toThrow(/host key refused/);
        // the session opened before the rotation keeps working
        expect((await world.shell.exec(info.hostRef(spec, node), ['true'])).code).toBe(0);
      },
    );

    it(
      "`pgop host-key rotate CLUSTER pool` rotates the pool host's key and says so in an event; `list` " +
        'shows the new fingerprint',
      async () => {
        const { hostKeyRotateCommand, hostKeyListCommand } =
          await import('../../src/cli/commands/host-key.js');
        const before = store.getHostKey('hk', 'pool')!.keyB64;
        const out: string[] = [];
        const write = process.stdout.write;
        process.stdout.write = ((s: string) => (out.push(String(s)), true)) as typeof process.stdout.write;
        try {
          expect(await hostKeyRotateCommand(join(dir, 'pgop.db'), 'hk', 'pool')).toBe(0);
          expect(await hostKeyListCommand(join(dir, 'pgop.db'), { cluster: 'hk' })).toBe(0);
        } finally {
          process.stdout.write = write;
        }
        const after = store.getHostKey('hk', 'pool')!.keyB64;
        expect(after).not.toBe(before);
        expect(out.join('')).toContain(
          `host key of hk/pool rotated: ${fingerprint(before)} -> ${fingerprint(after)}`,
        );
        expect(
          out
            .join('')
            .split('\n')
            .some((l) => /^hk\s+pool\s+ssh-ed25519\s+/.test(l) && l.includes(fingerprint(after))),
        ).toBe(true);
        expect(
          store
            .listEvents({ cluster: 'hk' })
            .filter((e) => e.ruleId === 'ssh.host-key-rotated')
            .map((e) => e.node),
        ).toEqual(['pool']);
        const pool = new SshShell(storePins(store), { connectTimeoutMs: 2000 });
        try {
          expect((await pool.exec(info.hostRef(spec, 'pool'), ['true'])).code).toBe(0);
        } finally {
          await pool.close();
        }
      },
    );

    it(
      'a re-provisioned node (deleteMachine + ensureMachine) gets a new key, pinned before its boot, ' +
        'that connects',
      async () => {
        const before = store.getHostKey('hk', 'pg1')!.keyB64;
        await world.provider.deleteMachine(spec, node);
        expect(store.getHostKey('hk', 'pg1')).toBeUndefined();
        pinLog.length = 0;
        await world.provider.ensureMachine(spec, node);
        expect(pinLog.map((p) => [p.id, p.sshdRunning])).toEqual([['hk/pg1', false]]);
        const now = store.getHostKey('hk', 'pg1')!.keyB64;
        expect(now).not.toBe(before);
        expect(pinLog[0]!.keyB64).toBe(now);
        expect((await tryConnect(storePins(store))).stdout).toBe('0\n');
      },
    );
  },
);
