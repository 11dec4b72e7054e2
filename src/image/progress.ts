// Progress of `pgop image build` on stderr: on a terminal one live line (phase, elapsed time, the
// build's latest output) and a summary line per finished phase; otherwise plain lines only, a
// line when a phase starts and ends plus a heartbeat every 30 s (CI logs stay short and readable).

export const PHASE_TITLES: Readonly<Record<string, string>> = {
  disk: 'partition and format the disk',
  debootstrap: 'debootstrap: download and install packages',
  unpack: 'unpack the cached debootstrap system',
  configure: 'configure the system',
  bootloader: 'install GRUB',
  finish: 'clean up and unmount',
  convert: 'convert to qcow2',
};

export interface ProgressSink {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

const SPIN = ['|', '/', '-', '\\'];
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export class Progress {
  private current: { name: string; start: number } | null = null;
  private readonly t0: number;
  private lastLine = '';
  private timer: NodeJS.Timeout | null = null;
  private tick = 0;
  private lastBeat = 0;
  readonly durations: Record<string, number> = {};

  constructor(
    private readonly out: ProgressSink,
    private readonly tty = !!out.isTTY,
    private readonly now: () => number = () => performance.now(),
    private readonly heartbeatMs = 30_000,
  ) {
    this.t0 = this.now();
    // Long silent steps (update-initramfs) get a heartbeat too, not only chatty ones.
    this.timer = this.tty
      ? setInterval(() => this.redraw(), 250)
      : setInterval(() => this.beat(), Math.min(heartbeatMs, 5000));
    this.timer.unref();
  }

  /** A new phase starts (the previous one, if any, ends). */
  phase(name: string): void {
    this.endPhase();
    this.current = { name, start: this.now() };
    this.lastBeat = this.current.start;
    this.lastLine = '';
    if (!this.tty) this.out.write(`image build: ${PHASE_TITLES[name] ?? name} ...\n`);
    else this.redraw();
  }

  /** A line of the build's own output (shown on the live line; a heartbeat in plain mode). */
  line(text: string): void {
    const t = text.trim();
    if (t) this.lastLine = t;
    this.beat();
  }

  private beat(): void {
    if (!this.tty && this.current && this.now() - this.lastBeat >= this.heartbeatMs) {
      this.lastBeat = this.now();
      this.out.write(
        `image build: ${PHASE_TITLES[this.current.name] ?? this.current.name} ` +
          `still running (${secs(this.now() - this.current.start)})\n`,
      );
    }
  }

  /** Ends the current phase; returns the total elapsed milliseconds. */
  finish(ok: boolean): number {
    if (ok) this.endPhase();
    else if (this.current) {
      this.clearLine();
      this.out.write(
        `image build: ${PHASE_TITLES[this.current.name] ?? this.current.name} ` +
          `FAILED after ${secs(this.now() - this.current.start)}\n`,
      );
      this.current = null;
    }
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    return this.now() - this.t0;
  }

  private endPhase(): void {
    if (!this.current) return;
    const ms = this.now() - this.current.start;
    this.durations[this.current.name] = ms / 1000;
    this.clearLine();
    const title = PHASE_TITLES[this.current.name] ?? this.current.name;
    this.out.write(
      this.tty
        ? `  done  ${title.padEnd(44)} ${secs(ms).padStart(8)}\n`
        : `image build: ${title} done (${secs(ms)})\n`,
    );
    this.current = null;
  }

  private clearLine(): void {
    if (this.tty) this.out.write('\r\x1b[K');
  }

  private redraw(): void {
    if (!this.current) return;
    const width = Math.max(40, (this.out.columns ?? 80) - 1);
    const head =
      `  ${SPIN[this.tick++ % SPIN.length]}  ` +
      `${(PHASE_TITLES[this.current.name] ?? this.current.name).padEnd(44)} ` +
      `${secs(this.now() - this.current.start).padStart(8)}  total ${secs(this.now() - this.t0)}`;
    const room = width - head.length - 3;
    const tail = room > 10 && this.lastLine ? `   ${this.lastLine.slice(0, room)}` : '';
    this.out.write(`\r\x1b[K${(head + tail).slice(0, width)}`);
  }
}
