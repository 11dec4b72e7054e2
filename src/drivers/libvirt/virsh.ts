// virsh as a child process, for what @unraid/libvirt has no binding for (networks, storage pools
// and volumes, events). argv arrays through execFile: no shell anywhere. XML documents go
// through a 0600 temp file (virsh reads them from a path).

import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PgopError, terminal, transient } from '../../errors.js';

export const VIRSH = process.env.PGOP_VIRSH ?? 'virsh';

export interface VirshResult {
  stdout: string;
  stderr: string;
}

/** libvirt's "no such object" answers (domain, network, pool, volume). */
export const NOT_FOUND = /not found|no (?:domain|network|storage pool|storage vol(?:ume)?) with matching|Storage volume not found|Storage pool not found/i;
/** The daemon or the connection went away: worth a retry. */
export const CONNECTION_LOST =
  /Failed to connect socket|Cannot recv data|End of file while reading|Cannot write data|client socket is closed|not connected|connection.*(?:closed|reset|refused)|Broken pipe|failed to connect to the hypervisor|timed out|Unable to connect/i;

export class VirshError extends PgopError {
  constructor(
    kind: 'transient' | 'terminal',
    message: string,
    readonly stderr: string,
    readonly notFound: boolean,
    cause?: unknown,
  ) {
    super(kind, message, { cause });
    this.name = 'VirshError';
  }
}

export interface VirshOptions {
  /** per command (default 120 s: vol-upload of a seed is small, but a busy host is slow) */
  timeoutMs?: number;
  bin?: string;
}

/** The cause libvirt gave, without virsh's "error: failed to get ..." preamble. */
export function virshCause(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.replace(/^error:\s*/, '').trim())
    .filter((l) => l.length > 0 && !/^failed to get /.test(l));
  return lines.join('; ') || stderr.trim();
}

export class Virsh {
  private readonly timeoutMs: number;
  private readonly bin: string;

  constructor(opts: VirshOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    this.bin = opts.bin ?? VIRSH;
  }

  /** Run `virsh -c uri ...args`. Throws VirshError (notFound set for missing objects). `what`
   *  completes the message: "cannot <what>: <cause>". */
  run(uri: string, args: string[], what: string): Promise<VirshResult> {
    return new Promise((resolve, reject) => {
      execFile(this.bin, ['-q', '-c', uri, ...args], { timeout: this.timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr });
        const e = err as NodeJS.ErrnoException & { killed?: boolean };
        if (e.code === 'ENOENT') {
          return reject(new VirshError('terminal', `cannot ${what}: ${this.bin} is not installed (Debian package libvirt-clients)`, '', false, err));
        }
        const cause = e.killed ? `virsh timed out after ${this.timeoutMs} ms` : virshCause(String(stderr)) || e.message;
        const notFound = NOT_FOUND.test(String(stderr));
        const kind = e.killed || CONNECTION_LOST.test(String(stderr)) ? 'transient' : 'terminal';
        reject(new VirshError(kind, `cannot ${what}: ${cause}`, String(stderr), notFound, err));
      });
    });
  }

  /** Like run(), but null when libvirt says the object does not exist. */
  async maybe(uri: string, args: string[], what: string): Promise<VirshResult | null> {
    try {
      return await this.run(uri, args, what);
    } catch (err) {
      if (err instanceof VirshError && err.notFound) return null;
      throw err;
    }
  }

  /** Run with an XML document as a temp file; `{}` in args is replaced by its path. */
  async withXml(uri: string, xml: string, args: string[], what: string): Promise<VirshResult> {
    const dir = await mkdtemp(join(tmpdir(), 'pgop-virsh-'));
    try {
      const path = join(dir, 'doc.xml');
      await writeFile(path, xml, { mode: 0o600 });
      return await this.run(uri, args.map((a) => (a === '{}' ? path : a)), what);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** Upload bytes into a volume (vol-upload reads a file). */
  async upload(uri: string, pool: string, volume: string, bytes: Buffer, what: string): Promise<void> {
    const dir = await mkdtemp(join(tmpdir(), 'pgop-virsh-'));
    try {
      const path = join(dir, 'content');
      await writeFile(path, bytes, { mode: 0o600 });
      await this.run(uri, ['vol-upload', '--pool', pool, volume, path], what);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}

export function isVirshError(err: unknown): err is VirshError {
  return err instanceof VirshError;
}

export function wrapTerminal(err: unknown, what: string): PgopError {
  if (err instanceof PgopError) return err;
  return terminal(`cannot ${what}: ${(err as Error)?.message ?? String(err)}`, err);
}

export function wrapTransient(err: unknown, what: string): PgopError {
  if (err instanceof PgopError) return err;
  return transient(`cannot ${what}: ${(err as Error)?.message ?? String(err)}`, err);
}
