// NodeShell over SSH (ssh2): one cached connection per host, host keys verified from the first
// contact and every remote command built by shellJoin (quote.ts).
//
// Host keys: pgop generates each machine's host key itself and pins it (HostKeyPins, the store's
// host_keys table) before the machine first starts (lab: the sshd's HostKey; libvirt: cloud-init
// ssh_keys). The client accepts the pinned key and nothing else; a host with no pin is refused
// too. The one exception is explicit: `pgop host-key forget` leaves a TRUST_NEXT_KEY placeholder,
// and the next key that host presents is pinned (for a machine pgop did not make).
//
// Remote command layout (each piece quoted by shellJoin):
//   [runuser -u <user> --] [timeout -s KILL <secs>] [env K=V ...] argv...
// `timeout` runs the command in its own process group and kills that group when the command
// outlives timeoutMs, so a command whose channel we closed does not linger on the node (daemons
// that detach with setsid, such as a postmaster started by pg_ctl, are not in that group).
// argv[0] must therefore be a program, not a shell builtin (wrap those: ['sh', '-c', script]).
// Env values travel inside the command string (sshd's AcceptEnv is empty on lab hosts) and are
// never logged: logs show argv and env names only.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Socket, connect as netConnect } from 'node:net';
import { Client, type ClientChannel } from 'ssh2';
import type { ExecOptions, ExecResult, HostRef, NodeShell } from '../types.js';
import { PgopError, terminal, transient } from '../../errors.js';
import { assertEnvName, assertSafeName, shellJoin } from './quote.js';
import { NODE_FS_FUNCS } from './node-fs.js';
import {
  SSH_CONNECT_MS,
  SSH_EXEC_DEFAULT_MS,
  SSH_KEEPALIVE_COUNT,
  SSH_KEEPALIVE_MS,
  SSH_READY_MS,
} from '../timeouts.js';

export interface PinnedKey {
  algo: string;
  keyB64: string;
}

/** The algo of a placeholder pin: accept (and pin) the next key the host presents, once. Only
 *  `pgop host-key forget` sets it. */
export const TRUST_NEXT_KEY = 'trust-next-key';

/** Where pinned host keys live (the store in production, a Map in tests), by host id. */
export interface HostKeyPins {
  getPinned(id: string): PinnedKey | undefined;
  /** Pin a key pgop generated (or verified) for the host, replacing any earlier pin: a machine
   *  made anew gets a new key, pinned before it starts. */
  pin(id: string, algo: string, keyB64: string): void;
}

/** In-memory pins: enough for tests and one-shot commands. */
export function createMemoryPins(): HostKeyPins & {
  all(): Map<string, PinnedKey>;
  forget(id: string): void;
} {
  const m = new Map<string, PinnedKey>();
  return {
    getPinned: (id) => m.get(id),
    pin: (id, algo, keyB64) => void m.set(id, { algo, keyB64 }),
    all: () => m,
    forget: (id) => void m.delete(id),
  };
}

/** What a refused host key looked like (for an event naming both fingerprints). */
export interface HostKeyRefusal {
  id: string;
  address: string;
  /** fingerprint of the pinned key; null when nothing is pinned */
  expected: string | null;
  presented: string;
  message: string;
}

export interface ShellLogEntry {
  event: 'connect' | 'exec' | 'disconnect';
  id: string;
  /** connect: time to an authenticated session; exec: command run time */
  ms?: number;
  argv?: string[];
  user?: string;
  /** env names with values redacted */
  env?: Record<string, string>;
  code?: number;
  error?: string;
}

/** A shell log entry as a debug log line: each argument cut short (scripts are long). */
export function shellDebugLog(
  log: { debug?(obj: object, msg?: string): void } | undefined,
): ((entry: ShellLogEntry) => void) | undefined {
  if (!log?.debug) return undefined;
  return (e) =>
    log.debug!(
      {
        host: e.id,
        ms: e.ms === undefined ? undefined : Math.round(e.ms),
        user: e.user,
        code: e.code,
        error: e.error,
        argv: e.argv?.map((a) => (a.length > 60 ? `${a.slice(0, 60)}...` : a)),
        env: e.env,
      },
      `ssh ${e.event}`,
    );
}

export interface SshShellOptions {
  /** TCP connect timeout (default 3000 ms). */
  connectTimeoutMs?: number;
  /** SSH handshake + authentication timeout after the TCP connect (default 5000 ms). */
  readyTimeoutMs?: number;
  /** Per-command timeout when ExecOptions.timeoutMs is not given (default 60000 ms; 0 = none). */
  defaultTimeoutMs?: number;
  /** Keepalive probe interval (default 2000 ms; 3 misses drop the connection). */
  keepaliveIntervalMs?: number;
  log?: (entry: ShellLogEntry) => void;
  /** Called when a host presents a key other than its pin (or has none pinned). */
  onHostKeyRefused?: (r: HostKeyRefusal) => void;
}

interface Conn {
  key: string;
  client: Client;
  ready: Promise<Client>;
  closed: boolean;
}

export const REDACTED = '<redacted>';

/** How an exec fails when its connection went away mid-command (the outcome is unknown). */
export const LOST_MID_COMMAND = 'connection lost before the command finished';

/** OpenSSH-style fingerprint of a raw public key blob: SHA256:<base64 without padding>. */
export function fingerprint(keyB64: string): string {
  const digest = createHash('sha256').update(Buffer.from(keyB64, 'base64')).digest('base64');
  return `SHA256:${digest.replace(/=+$/, '')}`;
}

/** Algorithm name inside an SSH public key blob (string length + name). */
function keyAlgo(blob: Buffer): string {
  if (blob.length < 4) return 'unknown';
  const n = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + n).toString('latin1');
}

function redact(env: Record<string, string> | undefined): Record<string, string> | undefined {
  if (!env) return undefined;
  return Object.fromEntries(Object.keys(env).map((k) => [k, REDACTED]));
}

export class SshShell implements NodeShell {
  private readonly conns = new Map<string, Conn>();
  private readonly keys = new Map<string, Promise<Buffer>>();
  private readonly connectTimeoutMs: number;
  private readonly readyTimeoutMs: number;
  private readonly defaultTimeoutMs: number;
  private readonly keepaliveIntervalMs: number;
  private readonly log: (e: ShellLogEntry) => void;
  private readonly onHostKeyRefused: (r: HostKeyRefusal) => void;
  /** id -> milliseconds the last successful connect took (TCP + handshake + auth). */
  readonly connectMs = new Map<string, number>();

  constructor(
    private readonly pins: HostKeyPins,
    opts: SshShellOptions = {},
  ) {
    this.connectTimeoutMs = opts.connectTimeoutMs ?? SSH_CONNECT_MS;
    this.readyTimeoutMs = opts.readyTimeoutMs ?? SSH_READY_MS;
    this.defaultTimeoutMs = opts.defaultTimeoutMs ?? SSH_EXEC_DEFAULT_MS;
    this.keepaliveIntervalMs = opts.keepaliveIntervalMs ?? SSH_KEEPALIVE_MS;
    this.log = opts.log ?? (() => {});
    this.onHostKeyRefused = opts.onHostKeyRefused ?? (() => {});
  }

  // ---------------------------------------------------------------- connections

  private privateKey(path: string): Promise<Buffer> {
    let p = this.keys.get(path);
    if (!p) {
      p = readFile(path);
      this.keys.set(path, p);
      p.catch(() => this.keys.delete(path));
    }
    return p;
  }

  private connection(host: HostRef): Promise<Client> {
    const key = `${host.user}@${host.address}:${host.port}/${host.privateKeyPath}`;
    const have = this.conns.get(host.id);
    if (have && !have.closed && have.key === key) return have.ready;
    if (have) this.drop(host.id, have);
    const conn = this.open(host, key);
    this.conns.set(host.id, conn);
    conn.ready.catch(() => this.drop(host.id, conn));
    return conn.ready;
  }

  private drop(id: string, conn: Conn): void {
    conn.closed = true;
    if (this.conns.get(id) === conn) this.conns.delete(id);
    try {
      conn.client.end();
    } catch {
      /* already closed */
    }
  }

  private open(host: HostRef, key: string): Conn {
    const client = new Client();
    const conn: Conn = { key, client, ready: undefined as unknown as Promise<Client>, closed: false };
    const t0 = performance.now();
    conn.ready = (async () => {
      const privateKey = await this.privateKey(host.privateKeyPath).catch((err: Error) => {
        throw terminal(
          `cannot connect to ${host.id}: cannot read private key ${host.privateKeyPath}: ${err.message}`,
          err,
        );
      });
      const sock = await this.tcpConnect(host);
      return new Promise<Client>((resolve, reject) => {
        let mismatch: PgopError | undefined;
        let settled = false;
        const fail = (err: Error) => {
          conn.closed = true;
          if (settled) return;
          settled = true;
          sock.destroy();
          if (mismatch) return reject(mismatch);
          const msg = /Timed out while waiting for handshake/.test(err.message)
            ? `handshake timed out after ${this.readyTimeoutMs} ms`
            : err.message;
          const authFailed = /authentication methods failed/i.test(err.message);
          reject(
            (authFailed ? terminal : transient)(
              `cannot connect to ${host.id} (${host.address}:${host.port}): ${msg}`,
              err,
            ),
          );
        };
        client.on('ready', () => {
          settled = true;
          const ms = Math.round(performance.now() - t0);
          this.connectMs.set(host.id, ms);
          this.log({ event: 'connect', id: host.id, ms });
          resolve(client);
        });
        client.on('error', fail);
        client.on('close', () => {
          const wasOpen = settled;
          fail(new Error('connection closed during handshake'));
          if (wasOpen) {
            if (this.conns.get(host.id) === conn) this.conns.delete(host.id);
            this.log({ event: 'disconnect', id: host.id });
          }
        });
        client.connect({
          sock,
          username: host.user,
          privateKey,
          readyTimeout: this.readyTimeoutMs,
          keepaliveInterval: this.keepaliveIntervalMs,
          keepaliveCountMax: SSH_KEEPALIVE_COUNT,
          algorithms: { serverHostKey: ['ssh-ed25519'] },
          // hostHash unset: the verifier receives the raw public key blob.
          hostVerifier: (blob: Buffer) => {
            const algo = keyAlgo(blob);
            const keyB64 = blob.toString('base64');
            const pinned = this.pins.getPinned(host.id);
            if (pinned?.algo === TRUST_NEXT_KEY) {
              // explicitly asked for (`pgop host-key forget`): this one key is taken as presented
              this.pins.pin(host.id, algo, keyB64);
              return true;
            }
            if (pinned && pinned.algo === algo && pinned.keyB64 === keyB64) return true;
            const presented = fingerprint(keyB64);
            const expected = pinned ? fingerprint(pinned.keyB64) : null;
            const message = pinned
              ? `cannot connect to ${host.id} (${host.address}:${host.port}): host key refused: ` +
                `it presented ${presented}, but the key pinned for it is ${expected} ` +
                `(another machine answers at this address, or its key was replaced outside pgop; ` +
                `see \`pgop host-key list\`)`
              : `cannot connect to ${host.id} (${host.address}:${host.port}): host key refused: ` +
                `it presented ${presented}, and no key is pinned for it ` +
                `(pgop pins the key it makes for a machine before the machine first starts; ` +
                `for a machine made otherwise, \`pgop host-key forget\` accepts the next key it presents)`;
            mismatch = terminal(message);
            try {
              this.onHostKeyRefused({ id: host.id, address: host.address, expected, presented, message });
            } catch {
              /* a listener's problem */
            }
            return false;
          },
        });
      });
    })();
    return conn;
  }

  /** TCP connect with its own timeout: a partitioned host fails after connectTimeoutMs. */
  private tcpConnect(host: HostRef): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const sock = netConnect({ host: host.address, port: host.port });
      sock.setNoDelay(true);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(
          transient(
            `cannot connect to ${host.id} (${host.address}:${host.port}): ` +
              `timed out after ${this.connectTimeoutMs} ms`,
          ),
        );
      }, this.connectTimeoutMs);
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(sock);
      });
      sock.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        sock.destroy();
        reject(
          transient(
            `cannot connect to ${host.id} (${host.address}:${host.port}): ${err.code ?? err.message}`,
            err,
          ),
        );
      });
    });
  }

  // ---------------------------------------------------------------- commands

  /** The exact command string sent to the node (also used by tests). */
  static command(
    argv: string[],
    opts: { user?: string; env?: Record<string, string>; timeoutMs?: number } = {},
  ): string {
    if (argv.length === 0) throw terminal('cannot run an empty command');
    const parts: string[] = [];
    if (opts.user !== undefined) parts.push('runuser', '-u', assertSafeName('user', opts.user), '--');
    if (opts.timeoutMs && opts.timeoutMs > 0)
      parts.push('timeout', '-s', 'KILL', (opts.timeoutMs / 1000).toFixed(3));
    const envNames = Object.keys(opts.env ?? {});
    if (envNames.length > 0) {
      parts.push('env');
      for (const k of envNames) parts.push(`${assertEnvName(k)}=${opts.env![k]}`);
    }
    parts.push(...argv);
    return shellJoin(parts);
  }

  async exec(host: HostRef, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
    // Already that user (root's commands on a root login): no runuser, whose PAM session was
    // the dearest of a command's processes here.
    const user = opts.user === host.user ? undefined : opts.user;
    const cmd = SshShell.command(argv, { user, env: opts.env, timeoutMs });
    const what = argv[0] ?? '';
    const t0 = performance.now();
    const deadline = timeoutMs > 0 ? t0 + timeoutMs : Infinity;
    const entry: ShellLogEntry = {
      event: 'exec',
      id: host.id,
      argv: [...argv],
      user: opts.user,
      env: redact(opts.env),
    };
    try {
      // One retry when the cached connection turned out dead before the channel opened:
      // the command has not started then, so running it again is safe.
      let res: ExecResult;
      try {
        res = await this.execOnce(host, cmd, what, opts.input, deadline, timeoutMs);
      } catch (err) {
        if (!(err instanceof ChannelOpenError)) throw err;
        this.dropHost(host.id);
        res = await this.execOnce(host, cmd, what, opts.input, deadline, timeoutMs);
      }
      entry.code = res.code;
      return res;
    } catch (err) {
      const e =
        err instanceof ChannelOpenError
          ? transient(`cannot run ${what} on ${host.id}: ${err.message}`, err)
          : err;
      entry.error = (e as Error).message;
      throw e;
    } finally {
      entry.ms = Math.round(performance.now() - t0);
      this.log(entry);
    }
  }

  private dropHost(id: string): void {
    const c = this.conns.get(id);
    if (c) this.drop(id, c);
  }

  private async execOnce(
    host: HostRef,
    cmd: string,
    what: string,
    input: string | undefined,
    deadline: number,
    timeoutMs: number,
  ): Promise<ExecResult> {
    const timedOut = () => transient(`cannot run ${what} on ${host.id}: timed out after ${timeoutMs} ms`);
    const remaining = () => deadline - performance.now();
    let timer: NodeJS.Timeout | undefined;
    const deadlineHit = new Promise<never>((_, reject) => {
      if (deadline !== Infinity) timer = setTimeout(() => reject(timedOut()), Math.max(0, remaining()));
    });
    deadlineHit.catch(() => {});
    try {
      const client = await Promise.race([this.connection(host), deadlineHit]);
      const lost = () => transient(`cannot run ${what} on ${host.id}: ${LOST_MID_COMMAND}`);
      const { stream, done } = await Promise.race([
        new Promise<RunningCommand>((resolve, reject) => {
          try {
            client.exec(cmd, (err, ch) =>
              err ? reject(new ChannelOpenError(err.message)) : resolve(collectOutput(ch, lost)),
            );
          } catch (err) {
            reject(new ChannelOpenError((err as Error).message));
          }
        }),
        deadlineHit,
      ]);
      stream.end(input ?? undefined);
      try {
        const res = await Promise.race([done, deadlineHit]);
        // The node-side `timeout` may fire a hair before our timer: that is a timeout too.
        if (res.code === 137 && performance.now() >= deadline - 250) throw timedOut();
        return res;
      } catch (err) {
        try {
          stream.signal('KILL');
        } catch {
          /* unsupported or closed */
        }
        try {
          stream.close();
        } catch {
          /* closed */
        }
        throw err;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  async writeFile(
    host: HostRef,
    path: string,
    content: string,
    opts: { mode?: number; owner?: string } = {},
  ): Promise<boolean> {
    assertPath(host, path);
    const mode = (opts.mode ?? 0o644).toString(8).padStart(4, '0');
    const owner = opts.owner;
    if (owner !== undefined) for (const part of owner.split(':')) assertSafeName('owner', part);
    const want = createHash('sha256').update(content, 'utf8').digest('hex');
    const ownerStat = owner === undefined ? undefined : owner.includes(':') ? owner : null;

    // 1. Compare: content hash, mode, owner (one round trip).
    // (sha256sum reads stdin: with a file argument it escapes odd names in its output.)
    const probe = await this.exec(host, [
      'sh',
      '-c',
      `${shellJoin(['sha256sum'])} < ${shellJoin([path])} && ` +
        `${shellJoin(['stat', '-c', '%a %U %U:%G', '--', path])}`,
    ]);
    if (probe.code === 0) {
      const [sumLine, statLine] = probe.stdout.trim().split('\n');
      const sum = sumLine?.split(' ')[0];
      const [haveMode, haveUser, haveUserGroup] = (statLine ?? '').split(' ');
      const modeOk = Number.parseInt(haveMode ?? '', 8) === Number.parseInt(mode, 8);
      const ownerOk = owner === undefined || (ownerStat ? haveUserGroup === ownerStat : haveUser === owner);
      if (sum === want && modeOk && ownerOk) return false;
    }

    // 2. Write it as the directory's owner, or as root in a directory only root can change,
    //    through a temp file with a random name and a rename (put_file, node-fs.ts): never
    //    through a link another user planted. Without an owner, the file is the directory's.
    const res = await this.exec(
      host,
      [
        'sh',
        '-c',
        `cd / || exit 1\n${NODE_FS_FUNCS}\nput_file "$1" "$2" "$3"`,
        'pgop',
        mode,
        owner ?? '',
        path,
      ],
      { input: content },
    );
    if (res.code !== 0)
      throw terminal(`cannot write ${path} on ${host.id}: ${res.stderr.trim() || `exit ${res.code}`}`);
    return true;
  }

  async readFile(host: HostRef, path: string): Promise<string | null> {
    assertPath(host, path);
    const res = await this.exec(host, [
      'sh',
      '-c',
      `[ -e ${shellJoin([path])} ] || exit 100; exec ${shellJoin(['cat', '--', path])}`,
    ]);
    if (res.code === 100) return null;
    if (res.code !== 0)
      throw terminal(`cannot read ${path} on ${host.id}: ${res.stderr.trim() || `exit ${res.code}`}`);
    return res.stdout;
  }

  /** Close the cached connection of one host (e.g. after it was fenced). */
  disconnect(id: string): void {
    this.dropHost(id);
  }

  async close(): Promise<void> {
    for (const [id, c] of [...this.conns]) this.drop(id, c);
  }
}

interface RunningCommand {
  stream: ClientChannel;
  done: Promise<ExecResult>;
}

/** A command's output and exit status, listened to from the moment its channel is confirmed: a
 *  quick command's exit status may come in the same read as the confirmation, and is emitted
 *  before any code awaiting the channel runs (under load that read as a lost connection). ssh2
 *  passes the exit status to 'close' as well; a close with none means the connection went away
 *  mid-command: the outcome is unknown. */
function collectOutput(stream: ClientChannel, lost: () => Error): RunningCommand {
  const out: Buffer[] = [];
  const errOut: Buffer[] = [];
  let code: number | null = null;
  let signal: string | undefined;
  stream.on('error', () => {}); // the close that follows says what matters
  stream.on('data', (d: Buffer) => out.push(d));
  stream.stderr.on('data', (d: Buffer) => errOut.push(d));
  stream.on('exit', (c: number | null, s?: string) => {
    code = c;
    signal = s;
  });
  const done = new Promise<ExecResult>((resolve, reject) => {
    stream.on('close', (c?: number | null, s?: string) => {
      if (code === null && signal === undefined) [code, signal] = [typeof c === 'number' ? c : null, s];
      if (code === null && signal === undefined) return reject(lost());
      resolve({
        // ssh2 names a signal as 'SIGKILL'
        code: code ?? 128 + (SIGNALS[signal!.replace(/^SIG/, '')] ?? 0),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(errOut).toString('utf8'),
      });
    });
  });
  return { stream, done };
}

class ChannelOpenError extends Error {}

/** Exit-signal names (RFC 4254, without "SIG") to numbers, for a shell-like 128+n exit code. */
const SIGNALS: Record<string, number> = {
  HUP: 1,
  INT: 2,
  QUIT: 3,
  ILL: 4,
  ABRT: 6,
  FPE: 8,
  KILL: 9,
  SEGV: 11,
  PIPE: 13,
  ALRM: 14,
  TERM: 15,
  USR1: 10,
  USR2: 12,
};

function assertPath(host: HostRef, path: string): void {
  if (!path.startsWith('/') || path.includes('\0'))
    throw terminal(`cannot use path ${JSON.stringify(path)} on ${host.id}: not an absolute path`);
}
