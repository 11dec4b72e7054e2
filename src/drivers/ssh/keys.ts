// SSH key pairs pgop makes itself: the operator's login key of each cluster and every machine's
// host key. Generated in-process with ssh2's keygen (OpenSSH formats, no ssh-keygen child), kept
// on the hypervisor as <path> (private, 0600) and <path>.pub (0644) in a 0700 directory.

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { makeDirs } from '../../state-dirs.js';
import { dirname } from 'node:path';
// ssh2 is CommonJS: Node's ESM loader finds Client as a named export but not utils
import ssh2 from 'ssh2';
import { internal, messageOf, terminal } from '../../errors.js';
import { TRUST_NEXT_KEY, type HostKeyPins } from './shell.js';

const { utils } = ssh2;

export const HOST_KEY_ALGO = 'ssh-ed25519';

export interface KeyPair {
  /** OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----), unencrypted */
  privateKey: string;
  /** `ssh-ed25519 AAAA... comment` */
  publicLine: string;
  /** the public key blob, base64 (what the host key pins hold) */
  keyB64: string;
}

/** A fresh ed25519 key pair. The comment must be one line. */
export function generateKeyPair(comment: string): KeyPair {
  if (/[\r\n]/.test(comment))
    throw terminal(`cannot make a key with comment ${JSON.stringify(comment)}: it must be one line`);
  // ssh2's keygen drops a leading zero byte of the 32-byte public key (about 1 key in 230): sshd
  // then cannot load the host key. Such a pair is thrown away and another one made.
  for (;;) {
    const k = utils.generateKeyPairSync('ed25519', { comment });
    const publicLine = k.public.trim();
    const keyB64 = publicKeyB64(publicLine);
    if (
      Buffer.from(keyB64, 'base64').length === ED25519_BLOB_BYTES &&
      publicOfPrivate(k.private) === keyB64
    ) {
      return { privateKey: k.private, publicLine, keyB64 };
    }
  }
}

/** An ssh-ed25519 public key blob: string "ssh-ed25519" (4 + 11 bytes) and the key (4 + 32). */
const ED25519_BLOB_BYTES = 51;

/** The base64 blob of an `ssh-ed25519 AAAA... [comment]` line. */
export function publicKeyB64(line: string): string {
  const m = /^ssh-ed25519 ([A-Za-z0-9+/]+={0,2})(?:\s|$)/.exec(line.trim());
  if (!m) throw terminal(`not an ssh-ed25519 public key: ${JSON.stringify(line.slice(0, 40))}`);
  return m[1]!;
}

/** The public key of an OpenSSH private key, as a base64 blob. */
export function publicOfPrivate(privateKey: string): string {
  const k = utils.parseKey(privateKey);
  if (k instanceof Error) throw terminal(`cannot read a private key: ${k.message}`);
  const key = Array.isArray(k) ? k[0]! : k;
  if (key.type !== HOST_KEY_ALGO)
    throw terminal(`cannot use a ${key.type} key: pgop's keys are ${HOST_KEY_ALGO}`);
  return key.getPublicSSH().toString('base64');
}

/** Write a file that did not exist (O_EXCL, never following a link) with this mode. */
async function writeNew(path: string, content: string, mode: number): Promise<void> {
  const fh = await open(path, 'wx', mode);
  try {
    await fh.writeFile(content, 'utf8');
    await fh.chmod(mode); // the umask may have narrowed it
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Write `pair` to path / path.pub, replacing what is there, atomically (each file renamed into
 *  place from a fresh temp file in the same directory, made 0700 when missing; an existing
 *  directory keeps its mode: the private key file is 0600 either way). */
export async function writeKeyPair(path: string, pair: KeyPair): Promise<void> {
  makeDirs(dirname(path), 0o700);
  const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  try {
    await writeNew(tmp, pair.privateKey, 0o600);
    await writeNew(`${tmp}.pub`, `${pair.publicLine}\n`, 0o644);
    await rename(`${tmp}.pub`, `${path}.pub`);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    await rm(`${tmp}.pub`, { force: true });
    throw terminal(`cannot write key ${path}: ${messageOf(err)}`, err);
  }
}

/** The key pair at path, if both files are there. */
export async function readKeyPair(path: string): Promise<KeyPair | null> {
  if (!existsSync(path) || !existsSync(`${path}.pub`)) return null;
  const privateKey = await readFile(path, 'utf8');
  const publicLine = (await readFile(`${path}.pub`, 'utf8')).trim();
  return { privateKey, publicLine, keyB64: publicKeyB64(publicLine) };
}

/** The key pair at path, made once if missing (0600 / 0644 in a 0700 directory). `created`
 *  says whether this call made it. Concurrent callers in one process should serialise. */
export async function ensureKeyPair(path: string, comment: string): Promise<KeyPair & { created: boolean }> {
  const have = await readKeyPair(path);
  if (have) return { ...have, created: false };
  const pair = generateKeyPair(comment);
  await writeKeyPair(path, pair);
  return { ...pair, created: true };
}

/** The cluster's operator login key pair (the providers' SSH identity on every machine). */
export function ensureOperatorKey(path: string, cluster: string): Promise<KeyPair & { created: boolean }> {
  return ensureKeyPair(path, `pgop-operator@${cluster}`);
}

/** A machine's host key pair, made once and pinned before its sshd first starts, so that the
 *  first SSH contact is verified too. A new key is always pinned; an existing one only when
 *  nothing (or a `host-key forget` placeholder) is pinned: a different pin over it is left for
 *  the SSH client to refuse, and say so. Pins are needed to make a key, not to reuse one. */
export async function ensurePinnedHostKey(
  path: string,
  id: string,
  pins: HostKeyPins | undefined,
  provider: string,
): Promise<KeyPair & { created: boolean }> {
  const key = await ensureKeyPair(path, `pgop-host@${id}`);
  if (!pins) {
    if (key.created)
      throw internal(`cannot create ${id}: this ${provider} provider was given no host key pins`);
    return key;
  }
  const current = pins.getPinned(id);
  if (key.created || !current || current.algo === TRUST_NEXT_KEY) pins.pin(id, HOST_KEY_ALGO, key.keyB64);
  return key;
}

/** Remove a key pair (both files); missing is fine. */
export async function removeKeyPair(path: string): Promise<void> {
  await rm(path, { force: true });
  await rm(`${path}.pub`, { force: true });
}
