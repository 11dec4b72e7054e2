// `pgop host-key rotate`: a machine's host key replaced over its current, verified session.
//
// 1. the current session is checked (the pinned key answers);
// 2. a new key pair is made and kept on the hypervisor as <statePath>.next (a rotation cut short
//    is finished by the next run: if the node already presents the .next key, it is adopted);
// 3. the new key is written on the node (as root, 0600, renamed into place) and sshd re-reads it
//    (SIGHUP: open sessions stay);
// 4. a fresh connection that accepts ONLY the new key must answer within a few seconds;
// 5. only then is the pin swapped and the state file replaced. If the new key does not answer,
//    the old key is put back over the still-open session and the pin is untouched.

import { existsSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import type { HostRef } from '../types.js';
import { PgopError, messageOf, terminal } from '../../errors.js';
import {
  HOST_KEY_ALGO,
  generateKeyPair,
  readKeyPair,
  removeKeyPair,
  writeKeyPair,
  type KeyPair,
} from './keys.js';
import { SshShell, TRUST_NEXT_KEY, createMemoryPins, fingerprint, type HostKeyPins } from './shell.js';

export interface HostKeyTarget {
  /** the sshd host key file on the node */
  nodePath: string;
  /** the copy pgop keeps on the hypervisor (the lab: the same file) */
  statePath: string;
  /** argv (run as root on the node) that makes sshd re-read its host keys */
  reload: string[];
}

export interface RotateOptions {
  shell: SshShell;
  pins: HostKeyPins;
  ref: HostRef;
  target: HostKeyTarget;
  /** how long the new key may take to answer after the reload (default 8000 ms) */
  verifyTimeoutMs?: number;
}

export interface RotateResult {
  id: string;
  previous: string;
  current: string;
  /** a rotation cut short earlier was finished rather than a new one made */
  resumed: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Does the host answer with exactly this key? (a fresh connection that accepts nothing else) */
async function answersWith(
  ref: HostRef,
  key: KeyPair,
  timeoutMs: number,
): Promise<{ ok: boolean; why: string }> {
  const deadline = Date.now() + timeoutMs;
  let why = '';
  for (;;) {
    const pins = createMemoryPins();
    pins.pin(ref.id, HOST_KEY_ALGO, key.keyB64);
    const probe = new SshShell(pins, {
      connectTimeoutMs: 2000,
      readyTimeoutMs: 3000,
      defaultTimeoutMs: 5000,
    });
    try {
      const r = await probe.exec(ref, ['true']);
      if (r.code === 0) return { ok: true, why: '' };
      why = `exit ${r.code}`;
    } catch (err) {
      why = messageOf(err);
    } finally {
      await probe.close();
    }
    if (Date.now() >= deadline) return { ok: false, why };
    await sleep(200);
  }
}

async function adopt(o: RotateOptions, next: string, key: KeyPair): Promise<void> {
  o.pins.pin(o.ref.id, HOST_KEY_ALGO, key.keyB64);
  await rename(`${next}.pub`, `${o.target.statePath}.pub`);
  await rename(next, o.target.statePath);
}

export async function rotateHostKey(o: RotateOptions): Promise<RotateResult> {
  const { ref, target, shell } = o;
  const pinned = o.pins.getPinned(ref.id);
  if (!pinned || pinned.algo === TRUST_NEXT_KEY) {
    throw terminal(
      `cannot rotate the host key of ${ref.id}: no verified key is pinned for it ` +
        `(a rotation needs a session the current key proves)`,
    );
  }
  const previous = fingerprint(pinned.keyB64);
  const next = `${target.statePath}.next`;
  const verifyMs = o.verifyTimeoutMs ?? 8000;

  // A rotation cut short after the node took the new key: finish it.
  const pending = existsSync(next) ? await readKeyPair(next) : null;
  if (pending && pending.keyB64 !== pinned.keyB64 && (await answersWith(ref, pending, 1500)).ok) {
    await adopt(o, next, pending);
    return { id: ref.id, previous, current: fingerprint(pending.keyB64), resumed: true };
  }

  // 1. the current key answers (the shell refuses anything but the pin)
  const check = await shell.exec(ref, ['true']);
  if (check.code !== 0)
    throw terminal(`cannot rotate the host key of ${ref.id}: a command on it failed (exit ${check.code})`);
  const old = await readKeyPair(target.statePath);
  if (old && old.keyB64 !== pinned.keyB64) {
    throw terminal(
      `cannot rotate the host key of ${ref.id}: ` +
        `the key pgop keeps for it (${target.statePath}) is not the pinned one`,
    );
  }

  // 2. the new key, kept on the hypervisor before anything changes on the node
  const key = generateKeyPair(`pgop-host@${ref.id}`);
  await writeKeyPair(next, key);

  const restore = async (why: string): Promise<never> => {
    let restored = 'the old key could not be put back (pgop keeps no copy of it)';
    if (old) {
      try {
        await shell.writeFile(ref, target.nodePath, old.privateKey, { mode: 0o600, owner: 'root:root' });
        await shell.writeFile(ref, `${target.nodePath}.pub`, `${old.publicLine}\n`, {
          mode: 0o644,
          owner: 'root:root',
        });
        await shell.exec(ref, target.reload);
        restored = 'the old key was put back';
      } catch (err) {
        restored = `putting the old key back failed: ${messageOf(err)}`;
      }
    }
    await removeKeyPair(next);
    throw terminal(`cannot rotate the host key of ${ref.id}: ${why}; ${restored}, the pin is unchanged`);
  };

  // 3. onto the node, over the verified session, and sshd re-reads it
  try {
    await shell.writeFile(ref, target.nodePath, key.privateKey, { mode: 0o600, owner: 'root:root' });
    await shell.writeFile(ref, `${target.nodePath}.pub`, `${key.publicLine}\n`, {
      mode: 0o644,
      owner: 'root:root',
    });
    const r = await shell.exec(ref, target.reload);
    if (r.code !== 0) return await restore(`sshd did not reload (exit ${r.code}: ${r.stderr.trim()})`);
  } catch (err) {
    if (err instanceof PgopError && /host key refused/.test(err.message)) throw err;
    return await restore(`cannot install the new key: ${messageOf(err)}`);
  }

  // 4. the new key must answer, alone
  const answer = await answersWith(ref, key, verifyMs);
  if (!answer.ok) return await restore(`the new key did not answer within ${verifyMs} ms (${answer.why})`);

  // 5. only now: the pin and the state file
  await adopt(o, next, key);
  return { id: ref.id, previous, current: fingerprint(key.keyB64), resumed: false };
}
