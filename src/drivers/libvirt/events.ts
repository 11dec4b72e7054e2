// Domain lifecycle events. @unraid/libvirt has no event API, so one supervised child per
// hypervisor URI runs `virsh -c URI event --all --loop --timestamp` and its lines are parsed here.
// A child that dies is restarted with backoff (250 ms doubling to 30 s; back to 250 ms once a
// child lived 10 s); every (re)start is announced as a `resync` event, because events may have
// been missed meanwhile: a listener should then observe everything again.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { VIRSH } from './virsh.js';

const SETPRIV = '/usr/bin/setpriv';

export type LifecycleKind =
  | 'defined'
  | 'undefined'
  | 'started'
  | 'suspended'
  | 'resumed'
  | 'stopped'
  | 'shutdown'
  | 'pmsuspended'
  | 'crashed'
  | 'unknown';

/** One event as the provider hands it to listeners. */
export interface LibvirtEvent {
  uri: string;
  /** 'lifecycle', 'reboot', 'agent-lifecycle', ... as virsh names them; 'resync' when the
   *  watcher (re)started and events may have been missed. */
  type: string;
  /** domain name ('' for resync) */
  domain: string;
  /** lifecycle events: what happened, e.g. {kind: 'stopped', detail: 'Destroyed'} */
  lifecycle?: { kind: LifecycleKind; detail: string };
  /** the rest of the line after the domain name (e.g. agent state) */
  text: string;
  /** ms since epoch: virsh's timestamp when it printed one, else when the line was read */
  at: number;
  /** set by the provider when the domain is one of pgop's machines */
  cluster?: string;
  node?: string;
}

const LIFECYCLE: Record<string, LifecycleKind> = {
  Defined: 'defined',
  Undefined: 'undefined',
  Started: 'started',
  Suspended: 'suspended',
  Resumed: 'resumed',
  Stopped: 'stopped',
  Shutdown: 'shutdown',
  PMSuspended: 'pmsuspended',
  Crashed: 'crashed',
};

const LINE = new RegExp(
  String.raw`^(?:(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?)([+-]\d{4})?: )?` +
    String.raw`event '([^']+)' for domain (?:'((?:[^']|'(?!:))*)'|(\S+?)):?(?: (.*))?$`,
);

/** Parse one line of `virsh event --loop [--timestamp]` output; null for anything else (the
 *  closing "events received" line, blank lines). */
export function parseEventLine(line: string, uri: string, now: number = Date.now()): LibvirtEvent | null {
  const m = LINE.exec(line.trimEnd());
  if (!m) return null;
  const [, stamp, zone, type, quoted, bare, rest] = m;
  let at = now;
  if (stamp) {
    const z = zone ? `${zone.slice(0, 3)}:${zone.slice(3)}` : 'Z';
    const t = Date.parse(`${stamp.replace(' ', 'T')}${z}`);
    if (!Number.isNaN(t)) at = t;
  }
  const text = (rest ?? '').trim();
  const ev: LibvirtEvent = { uri, type: type!, domain: quoted ?? bare ?? '', text, at };
  if (type === 'lifecycle') {
    const [what, ...detail] = text.split(/\s+/);
    ev.lifecycle = { kind: LIFECYCLE[what ?? ''] ?? 'unknown', detail: detail.join(' ') };
  }
  return ev;
}

export interface EventWatcherOptions {
  bin?: string;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** a child that lived this long resets the backoff */
  healthyAfterMs?: number;
  log?: { warn(obj: object, msg?: string): void };
}

/** One supervised `virsh event` child for one URI. */
export class EventWatcher {
  private child: ChildProcess | null = null;
  private stopped = false;
  private backoffMs: number;
  private timer: NodeJS.Timeout | null = null;
  private readonly bin: string;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly healthyAfterMs: number;
  /** how many children were started (1 + restarts) */
  starts = 0;

  constructor(
    readonly uri: string,
    private readonly emit: (e: LibvirtEvent) => void,
    private readonly opts: EventWatcherOptions = {},
  ) {
    this.bin = opts.bin ?? VIRSH;
    this.minBackoffMs = opts.minBackoffMs ?? 250;
    this.maxBackoffMs = opts.maxBackoffMs ?? 30_000;
    this.healthyAfterMs = opts.healthyAfterMs ?? 10_000;
    this.backoffMs = this.minBackoffMs;
    this.start();
  }

  /** PID of the current child (tests kill it to check the supervision). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  private start(): void {
    if (this.stopped) return;
    this.starts++;
    const started = Date.now();
    const argv = ['-q', '-c', this.uri, 'event', '--all', '--loop', '--timestamp'];
    // `virsh event --loop` never exits by itself: with setpriv --pdeathsig it dies with this
    // process even when that one is killed without a chance to stop it.
    const child = existsSync(SETPRIV)
      ? spawn(SETPRIV, ['--pdeathsig', 'TERM', '--', this.bin, ...argv], {
          stdio: ['ignore', 'pipe', 'pipe'],
        })
      : spawn(this.bin, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      stderr = (stderr + d).slice(-2000);
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const ev = parseEventLine(line, this.uri);
      if (ev) this.emit(ev);
    });
    child.on('error', (err) => {
      stderr += err.message;
    });
    let exited = false;
    const onExit = (code: number | null, sig: NodeJS.Signals | null) => {
      if (exited) return;
      exited = true;
      if (this.child === child) this.child = null;
      if (this.stopped) return;
      if (Date.now() - started >= this.healthyAfterMs) this.backoffMs = this.minBackoffMs;
      const delay = this.backoffMs;
      this.backoffMs = Math.min(this.maxBackoffMs, this.backoffMs * 2);
      this.opts.log?.warn(
        { uri: this.uri, code, signal: sig, restartInMs: delay, stderr: stderr.trim().slice(-400) },
        'libvirt event watcher exited; restarting',
      );
      this.timer = setTimeout(() => {
        this.timer = null;
        this.start();
      }, delay);
      this.timer.unref();
    };
    child.on('exit', onExit);
    child.on('error', () => onExit(null, null));
    // The child must not keep the operator alive on its own.
    child.unref();
    (child.stdout as unknown as { unref?: () => void }).unref?.();
    (child.stderr as unknown as { unref?: () => void }).unref?.();
    this.emit({
      uri: this.uri,
      type: 'resync',
      domain: '',
      text: this.starts === 1 ? 'watcher started' : 'watcher restarted',
      at: Date.now(),
    });
  }

  /** Stop for good: kill the child by its PID and wait for it to exit. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const child = this.child;
    this.child = null;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 5000);
      child.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      try {
        child.kill('SIGTERM');
      } catch {
        clearTimeout(t);
        resolve();
      }
    });
  }
}
