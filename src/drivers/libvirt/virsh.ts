// virsh as a child process, for what @unraid/libvirt has no binding for (networks, storage pools
// and volumes, events). argv arrays through execFile: no shell anywhere. XML documents go
// through a 0600 temp file (virsh reads them from a path).

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PgopError, internal, messageOf, terminal, transient } from '../../errors.js';

export const VIRSH = process.env.PGOP_VIRSH ?? 'virsh';

export interface VirshResult {
  stdout: string;
  stderr: string;
}

/** libvirt's "no such object" answers (domain, network, pool, volume). */
export const NOT_FOUND = new RegExp(
  [
    'not found',
    'no (?:domain|network|storage pool|storage vol(?:ume)?) with matching',
    'Storage volume not found',
    'Storage pool not found',
  ].join('|'),
  'i',
);
/** The daemon or the connection went away: worth a retry. */
export const CONNECTION_LOST = new RegExp(
  [
    'Failed to connect socket',
    'Cannot recv data',
    'End of file while reading',
    'Cannot write data',
    'client socket is closed',
    'not connected',
    'connection.*(?:closed|reset|refused)',
    'Broken pipe',
    'failed to connect to the hypervisor',
    'timed out',
    'Unable to connect',
  ].join('|'),
  'i',
);

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
  /** Run commands through one long-lived interactive virsh per URI (default true; env
   *  PGOP_VIRSH_SESSION=0 turns it off): a virsh process and its connection cost 0.1-0.8 s
   *  each, a command in a session a few ms. */
  session?: boolean;
}

/** Quote one argument for virsh's own command parser (single quotes; ' as '\''). */
export function virshQuote(arg: string): string {
  if (/[\n\r\0]/.test(arg))
    throw terminal(`cannot pass ${JSON.stringify(arg)} to virsh: it contains a line break or NUL`);
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** Output of one interactive virsh for a URI. Each command is framed by markers virsh echoes
 *  itself (echo --xml turns <M> into &lt;M&gt;, so the echoed command line never matches the
 *  marker), where P is virsh's prompt (read once at start):
 *  stdout  P echo --xml '<A>'\n &lt;A&gt; P echo --err ...\n P <cmd>\n OUTPUT P echo --xml '<B>'\n &lt;B&gt;
 *  stderr  error: &lt;A&gt;\n ERRORS error: &lt;B&gt;\n. */
class VirshSession {
  private child: ChildProcess | null = null;
  private out = '';
  private err = '';
  private prompt: string | null = null;
  private seq = 0;
  private readonly token = randomBytes(4).toString('hex');
  private queue: Promise<unknown> = Promise.resolve();
  private waiter: (() => void) | null = null;
  private exited: string | null = null;

  constructor(
    private readonly bin: string,
    private readonly uri: string,
    private readonly timeoutMs: number,
  ) {}

  run(args: string[]): Promise<{ stdout: string; stderr: string; failed: boolean }> {
    const next = this.queue.then(() => this.runNow(args));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private start(): void {
    this.out = '';
    this.err = '';
    this.prompt = null;
    this.exited = null;
    const child = spawn(this.bin, ['-q', '-c', this.uri], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, VIRSH_HISTSIZE: '0', COLUMNS: '100000', LINES: '1000', TERM: 'dumb' },
    });
    this.child = child;
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      this.out += d;
      this.waiter?.();
    });
    child.stderr!.on('data', (d: string) => {
      this.err += d;
      this.waiter?.();
    });
    const gone = (why: string) => {
      if (this.child !== child) return;
      this.exited = why;
      this.child = null;
      this.waiter?.();
    };
    child.on('exit', (code, sig) => gone(`virsh exited (${sig ?? code})`));
    child.on('error', (e) => gone(e.message));
    child.stdin!.on('error', () => undefined);
  }

  private idle(ref: boolean): void {
    const c = this.child;
    if (!c) return;
    for (const s of [c.stdin, c.stdout, c.stderr] as unknown as ({
      ref?: () => void;
      unref?: () => void;
    } | null)[]) {
      if (ref) s?.ref?.();
      else s?.unref?.();
    }
    if (ref) c.ref();
    else c.unref();
  }

  private async waitFor(cond: () => boolean, deadline: number): Promise<void> {
    while (!cond()) {
      if (this.exited !== null)
        throw transient(
          `virsh session for ${this.uri} ended: ${this.exited}: ${this.err.trim().slice(-300)}`,
        );
      const left = deadline - Date.now();
      if (left <= 0) throw transient(`virsh timed out after ${this.timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = null;
    }
  }

  private kill(): void {
    const c = this.child;
    this.child = null;
    if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }

  private async runNow(args: string[]): Promise<{ stdout: string; stderr: string; failed: boolean }> {
    const deadline = Date.now() + this.timeoutMs;
    const cmdline = args.map(virshQuote).join(' ');
    if (!this.child) this.start();
    this.idle(true);
    try {
      if (this.prompt === null) {
        const init = `<PGOP${this.token}I>`;
        this.child!.stdin!.write(`echo --xml ${virshQuote(init)}\n`);
        const echoed = `echo --xml ${virshQuote(init)}\n`;
        const mark = xmlEsc(init);
        await this.waitFor(() => this.out.includes(mark), deadline);
        this.prompt = this.out.slice(0, this.out.indexOf(echoed));
        this.out = this.out.slice(this.out.indexOf(mark) + mark.length);
      }
      const n = ++this.seq;
      const A = `<PGOP${this.token}A${n}>`;
      const B = `<PGOP${this.token}B${n}>`;
      const eA = xmlEsc(A);
      const eB = xmlEsc(B);
      const echoB = `echo --xml ${virshQuote(B)}\n`;
      this.child!.stdin!.write(
        `echo --xml ${virshQuote(A)}\necho --err --xml ${virshQuote(A)}\n` +
          `${cmdline}\n${echoB}echo --err --xml ${virshQuote(B)}\n`,
      );
      await this.waitFor(() => this.out.includes(eB) && this.err.includes(`${eB}\n`), deadline);
      // stdout
      const a = this.out.indexOf(eA);
      const b = this.out.indexOf(eB);
      const seg = this.out.slice(a + eA.length, b);
      this.out = this.out.slice(b + eB.length);
      // seg = P "echo --err ... <A>" \n P <the command line as readline echoed it> \n OUTPUT P echoB
      const first = seg.indexOf('\n');
      const second = first < 0 ? -1 : seg.indexOf('\n', first + 1);
      const start = second + 1;
      const end = seg.lastIndexOf(echoB) - (this.prompt ?? '').length;
      if (a < 0 || second < 0 || end < start || !seg.slice(first + 1, second).includes(args[0] ?? ''))
        throw internal(
          `cannot read virsh's answer to ${args[0]}: ` +
            `unexpected session output ${JSON.stringify(seg.slice(0, 600))} ` +
            `(command ${JSON.stringify(cmdline.slice(0, 300))})`,
        );
      const stdout = seg.slice(start, end);
      // stderr
      const ea = this.err.indexOf(`${eA}\n`);
      const eb = this.err.indexOf(`${eB}\n`);
      // virsh's own notes about its connection are not the command's errors: it reconnects by
      // itself before the next command ("Reconnected to the hypervisor").
      const stderr = this.err
        .slice(ea + eA.length + 1, eb)
        .replace(/error: $/, '')
        .replace(/^error: (?:Reconnected to the hypervisor|Disconnected from .* due to .*)\n/gm, '');
      this.err = this.err.slice(eb + eB.length + 1);
      const failed = /^error:/m.test(stderr);
      return { stdout, stderr, failed };
    } catch (err) {
      this.kill();
      throw err;
    } finally {
      this.idle(false);
    }
  }

  async close(): Promise<void> {
    const c = this.child;
    if (!c) return;
    this.child = null;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        c.kill('SIGKILL');
        resolve();
      }, 2000);
      c.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      c.stdin!.end('quit\n');
    });
  }
}

const xmlEsc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

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
  private readonly session: boolean;
  private readonly sessions = new Map<string, VirshSession>();

  constructor(opts: VirshOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    this.bin = opts.bin ?? VIRSH;
    this.session = opts.session ?? process.env.PGOP_VIRSH_SESSION !== '0';
  }

  /** Run `virsh -c uri ...args`. Throws VirshError (notFound set for missing objects). `what`
   *  completes the message: "cannot <what>: <cause>". */
  async run(uri: string, args: string[], what: string): Promise<VirshResult> {
    if (!this.session) return this.runProcess(uri, args, what);
    let s = this.sessions.get(uri);
    if (!s) {
      s = new VirshSession(this.bin, uri, this.timeoutMs);
      this.sessions.set(uri, s);
    }
    let r: { stdout: string; stderr: string; failed: boolean };
    try {
      r = await s.run(args);
    } catch (err) {
      if (err instanceof PgopError && err.kind === 'internal') throw err;
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || /ENOENT/.test(messageOf(err))) {
        throw new VirshError(
          'terminal',
          `cannot ${what}: ${this.bin} is not installed (Debian package libvirt-clients)`,
          '',
          false,
          err,
        );
      }
      throw new VirshError('transient', `cannot ${what}: ${messageOf(err)}`, '', false, err);
    }
    if (!r.failed) return { stdout: r.stdout, stderr: r.stderr };
    const notFound = NOT_FOUND.test(r.stderr);
    const kind = CONNECTION_LOST.test(r.stderr) ? 'transient' : 'terminal';
    throw new VirshError(kind, `cannot ${what}: ${virshCause(r.stderr)}`, r.stderr, notFound);
  }

  /** Close the interactive sessions. */
  async close(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.allSettled(all.map((s) => s.close()));
  }

  /** One `virsh -c uri ...args` process. */
  runProcess(uri: string, args: string[], what: string): Promise<VirshResult> {
    return new Promise((resolve, reject) => {
      execFile(
        this.bin,
        ['-q', '-c', uri, ...args],
        { timeout: this.timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 },
        (err, stdout, stderr) => {
          if (!err) return resolve({ stdout, stderr });
          const e = err as NodeJS.ErrnoException & { killed?: boolean };
          if (e.code === 'ENOENT') {
            return reject(
              new VirshError(
                'terminal',
                `cannot ${what}: ${this.bin} is not installed (Debian package libvirt-clients)`,
                '',
                false,
                err,
              ),
            );
          }
          const cause = e.killed
            ? `virsh timed out after ${this.timeoutMs} ms`
            : virshCause(String(stderr)) || e.message;
          const notFound = NOT_FOUND.test(String(stderr));
          const kind = e.killed || CONNECTION_LOST.test(String(stderr)) ? 'transient' : 'terminal';
          reject(new VirshError(kind, `cannot ${what}: ${cause}`, String(stderr), notFound, err));
        },
      );
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
      return await this.run(
        uri,
        args.map((a) => (a === '{}' ? path : a)),
        what,
      );
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
