// pgbench as bench:failover's real client: TPC-B-like transactions through pgpool, each client
// its own pgbench process (-c 1) with a per-transaction log. A client whose session aborts starts
// again at once, as an application reconnects: one pgbench with -c N cannot restart one client,
// and a client that stays dead has no next commit to measure its gap by. No --max-tries, so a
// session that breaks aborts visibly. Stopped with SIGALRM, which pgbench 15 takes as the end of
// -T: it finishes its transaction, writes its log and its report. Its log is written in blocks,
// so whether a client commits again is read live from its progress lines (-P 1) instead.
//
// The password reaches pgbench in a 0600 PGPASSFILE, never on its command line.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { now, sleep } from '../test/helpers/writer.js';
import { commitTimes, parseReport, progressCommits, type PgbenchReport } from './pgbench-parse.js';

const PGBENCH = '/usr/lib/postgresql/15/bin/pgbench';

export interface PgbenchTarget {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** verify-full against this CA; null: no TLS */
  caFile: string | null;
}

/** One pgbench process: one client's life from (re)connecting to its abort or the stop. */
export interface ClientRun {
  client: number;
  seq: number;
  exitCode: number | null;
  /** its first error line, else its last line (how it ended) */
  ended: string;
  report: PgbenchReport;
  /** epoch ms of its commits, from its log */
  commits: number[];
}

function pgEnv(t: PgbenchTarget, dir: string): NodeJS.ProcessEnv {
  const passfile = join(dir, 'pgpass');
  const esc = (s: string) => s.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
  writeFileSync(passfile, `*:*:*:${esc(t.user)}:${esc(t.password)}\n`, { mode: 0o600 });
  return {
    ...process.env,
    PGHOST: t.host,
    PGPORT: String(t.port),
    PGUSER: t.user,
    PGDATABASE: t.database,
    PGPASSFILE: passfile,
    PGSSLMODE: t.caFile ? 'verify-full' : 'disable',
    ...(t.caFile ? { PGSSLROOTCERT: t.caFile } : {}),
    PGCONNECT_TIMEOUT: '3',
  };
}

/** Exit code and everything it printed (report on stdout, aborts and progress on stderr). */
function collect(
  child: ChildProcess,
  onOutput: (text: string) => void = () => {},
): Promise<{ code: number | null; output: string }> {
  let output = '';
  const take = (d: Buffer) => {
    output += d.toString();
    onOutput(d.toString());
  };
  child.stdout?.on('data', take);
  child.stderr?.on('data', take);
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, output })));
}

/** `pgbench -i` at `scale` (it drops and recreates the pgbench tables). */
export async function initPgbench(t: PgbenchTarget, dir: string, scale: number): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const child = spawn(PGBENCH, ['-i', '-q', '-s', String(scale)], { env: pgEnv(t, dir) });
  const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
  const { code, output } = await collect(child);
  clearTimeout(timer);
  if (code !== 0) throw new Error(`cannot initialise pgbench: exit ${code}: ${output.trim().slice(-500)}`);
}

function ended(output: string): string {
  const lines = output.split('\n').filter((l) => l.trim() && !l.startsWith('progress:'));
  return (lines.find((l) => l.includes('error:')) ?? lines[lines.length - 1] ?? '').slice(0, 200);
}

/** The log files pgbench wrote for --log-prefix=`prefix` (`prefix.<pid>`). */
function readLogs(prefix: string): string {
  const dir = dirname(prefix);
  const start = `${basename(prefix)}.`;
  return readdirSync(dir)
    .filter((f) => f.startsWith(start))
    .map((f) => readFileSync(join(dir, f), 'utf8'))
    .join('\n');
}

export class PgbenchLoad {
  private stopping = false;
  private readonly current = new Map<number, ChildProcess>();
  private loops: Promise<ClientRun[]>[] = [];
  private env: NodeJS.ProcessEnv = {};
  /** per client, when it last reported a second with commits */
  private readonly committedAt = new Map<number, number>();

  constructor(
    private readonly o: { target: PgbenchTarget; clients: number; dir: string; restartMs?: number },
  ) {}

  start(): this {
    mkdirSync(this.o.dir, { recursive: true });
    this.env = pgEnv(this.o.target, this.o.dir);
    this.loops = Array.from({ length: this.o.clients }, (_, k) => this.client(k));
    return this;
  }

  private async client(k: number): Promise<ClientRun[]> {
    const runs: ClientRun[] = [];
    for (let seq = 0; !this.stopping; seq++) {
      const prefix = join(this.o.dir, `c${k}-${seq}`);
      const args = ['-n', '-c', '1', '-j', '1', '-T', '86400', '-P', '1', '-l', `--log-prefix=${prefix}`];
      const child = spawn(PGBENCH, args, { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
      this.current.set(k, child);
      const { code, output } = await collect(child, (text) => {
        if (progressCommits(text)) this.committedAt.set(k, now());
      });
      runs.push({
        client: k,
        seq,
        exitCode: code,
        ended: ended(output),
        report: parseReport(output),
        commits: commitTimes(readLogs(prefix)),
      });
      if (!this.stopping) await sleep(this.o.restartMs ?? 50);
    }
    return runs;
  }

  /** Whether every client reported a whole second with commits that began after `t`, within
   *  timeoutMs (the trial's window stays open until each client is back). */
  async committingAfter(t: number, timeoutMs: number): Promise<boolean> {
    const deadline = now() + timeoutMs;
    const back = () =>
      Array.from({ length: this.o.clients }, (_, k) => k).every(
        (k) => (this.committedAt.get(k) ?? 0) > t + 1000,
      );
    while (!back() && now() < deadline) await sleep(100);
    return back();
  }

  /** End every client (SIGALRM; SIGKILL after timeoutMs: a session stuck on a dead peer) and
   *  return every run. */
  async stop(timeoutMs = 20_000): Promise<ClientRun[]> {
    this.stopping = true;
    for (const c of this.current.values()) c.kill('SIGALRM');
    const timer = setTimeout(() => {
      for (const c of this.current.values()) c.kill('SIGKILL');
    }, timeoutMs);
    const runs = (await Promise.all(this.loops)).flat();
    clearTimeout(timer);
    return runs;
  }
}
