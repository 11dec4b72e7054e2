// The backup repository on the operator's host: `pgbackrest server` (pgBackRest's TLS server)
// per cluster, listening on the cluster network's gateway address, and the stanza in the
// repository. The nodes push WAL to it (archive_command); see README.md here.
//
// On the operator's host, per cluster:
//   /var/lib/pgop/backup-servers/<cluster>-<id>/  root 0755
//     server.pid, server.hash, server.out  root's: the process pgop started and with what
//     server/                              root:pgbackrest 0750: pgbackrest.conf, the server's
//                                          certificate, key (0640) and the CA bundle
//     server/log, server/lock              pgbackrest's (the server writes only there)
// and the repository directory of the spec, pgbackrest's (0750). The server runs as the system
// user `pgbackrest` (made when missing): a pgBackRest client names the repository path itself,
// so a node that was taken over must not be able to write as root on this host. Root never
// writes into a directory that user owns.

import { execFile, execFileSync, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { makeDirs, stateRoot } from '../../state-dirs.js';
import type { BackupObservation, BackupRecord } from '../../observe/types.js';
import { terminal, transient } from '../../errors.js';
import type { BackupType, ClusterSpec, NodeSpec } from '../../spec/types.js';
import { REPO_HOST, type ClusterTls } from '../../tls/material.js';
import { resolveSecret } from '../../spec/secrets.js';
import type { BackupDriver, DriverLog, HostRef, JobContext, NodeShell } from '../types.js';
import { failureDetail, sleep, tail } from '../remote/run.js';
import {
  backupOf,
  nodeConfArgs,
  nodeConfPath,
  nodeIncludeDir,
  nodeWorkDir,
  renderBackupConf,
  renderRepoConf,
  repoHostAddress,
  stanzaOf,
  type RepoPaths,
} from './config.js';
import { BackupProgress, newBackupLabel, parseInfo, type StanzaListing } from './info.js';
import { historyFileOf, segmentsBeforeSwitches } from './timeline-wal.js';
import { pgPort, socketDir, tlsNodePaths } from '../postgres/config.js';

export const REPO_USER = 'pgbackrest';
const execFileAsync = promisify(execFile);
/** how long a started server may take to listen */
const LISTEN_WAIT_MS = 5_000;

export interface BackupDriverOptions {
  shell: NodeShell;
  hostRef(cluster: ClusterSpec, node: NodeSpec): HostRef;
  tls: ClusterTls;
  log?: DriverLog;
}

interface ServerFiles {
  conf: string;
  cert: string;
  key: string;
  ca: string;
  /** sha256 of all four: what a running server was started with */
  hash: string;
}

interface StanzaInfo {
  at: number;
  running: boolean;
  listing?: StanzaListing;
  /** when the listing was read */
  listedAt?: number;
}

/** how often `pgbackrest info` is asked which system a stanza holds */
const INFO_EVERY_MS = 30_000;

export class SshBackupDriver implements BackupDriver {
  /** per cluster: what `pgbackrest info` last said of the stanza */
  private readonly stanzaInfo = new Map<string, StanzaInfo>();
  private user: RepoUser | undefined;

  constructor(private readonly o: BackupDriverOptions) {}

  async observe(cluster: ClusterSpec): Promise<BackupObservation> {
    const info = join(backupOf(cluster).repo.path, 'archive', stanzaOf(cluster), 'archive.info');
    const stanza = existsSync(info);
    if (stanza) this.refreshStanzaInfo(cluster);
    const known = stanza ? this.stanzaInfo.get(cluster.name) : undefined;
    const listing = known?.listing;
    const found = {
      stanza,
      ...(listing?.systemId ? { stanzaSystemId: listing.systemId } : {}),
      ...(listing?.problem ? { stanzaProblem: listing.problem } : {}),
      ...(listing && known?.listedAt ? { backups: listing.backups, listedAt: known.listedAt } : {}),
    };
    const dir = this.stateDir(cluster);
    if (serverPid(dir) === null) return { server: 'stopped', ...found, ...lastWords(dir) };
    const files = this.files(cluster, this.o.tls.peek(cluster));
    return { server: files && startedWith(dir) === files.hash ? 'running' : 'outdated', ...found };
  }

  /** Which database system the stanza holds (`pgbackrest info`, as the server's user: an
   *  encrypted repository encrypts its info files too). In the background, every 30 s at most:
   *  the look never waits for it. */
  private refreshStanzaInfo(cluster: ClusterSpec): void {
    const last = this.stanzaInfo.get(cluster.name);
    if (last && (last.running || Date.now() - last.at < INFO_EVERY_MS)) return;
    if (!existsSync(this.infoConf(cluster))) return; // the server's files are not written yet
    const entry: StanzaInfo = { ...last, at: Date.now(), running: true };
    this.stanzaInfo.set(cluster.name, entry);
    void this.readStanzaInfo(cluster)
      .then((listing) => {
        entry.listing = listing;
        entry.listedAt = Date.now();
      })
      .catch((err: unknown) =>
        this.o.log?.warn({ cluster: cluster.name, err: String(err) }, 'backup: pgbackrest info failed'),
      )
      .finally(() => {
        entry.running = false;
        entry.at = Date.now();
      });
  }

  /** The repository's user, looked up (or made) once per process. */
  private repoUser(): RepoUser {
    return (this.user ??= ensureRepoUser());
  }

  private infoConf(cluster: ClusterSpec): string {
    return join(this.stateDir(cluster), 'server', 'info.conf');
  }

  private async readStanzaInfo(cluster: ClusterSpec): Promise<StanzaListing> {
    const b = backupOf(cluster);
    const user = this.repoUser();
    const conf = this.infoConf(cluster);
    const args = [
      `--config=${conf}`,
      `--stanza=${stanzaOf(cluster)}`,
      `--repo1-path=${b.repo.path}`,
      ...(b.encryption ? ['--repo1-cipher-type=aes-256-cbc'] : []),
      '--output=json',
      'info',
    ];
    const { stdout } = await execFileAsync('pgbackrest', args, {
      uid: user.uid,
      gid: user.gid,
      env: repoEnv(cluster),
      timeout: 30_000,
    });
    return parseInfo(stdout);
  }

  async ensureRepoServer(cluster: ClusterSpec): Promise<void> {
    const files = this.files(cluster, await this.o.tls.ensure(cluster));
    if (!files) throw transient(`cannot start the backup repository's server: no certificate issued yet`);
    const dir = this.stateDir(cluster);
    const pid = serverPid(dir);
    if (pid !== null && startedWith(dir) === files.hash) return;
    const user = this.repoUser();
    this.prepare(cluster, files, user);
    if (pid !== null) await stopProcess(pid);
    await this.start(cluster, dir, user, files.hash);
  }

  async ensureStanza(cluster: ClusterSpec, primary: NodeSpec): Promise<void> {
    const argv = ['pgbackrest', ...nodeConfArgs(cluster), 'stanza-create'];
    const res = await this.o.shell.exec(this.o.hostRef(cluster, primary), argv, {
      user: 'postgres',
      timeoutMs: 120_000,
    });
    if (res.code !== 0)
      throw transient(`cannot create the backup stanza on ${primary.name}: ${failureDetail(res)}`);
    this.o.log?.info({ cluster: cluster.name, node: primary.name }, 'backup: stanza created');
  }

  async backup(
    cluster: ClusterSpec,
    source: NodeSpec,
    type: BackupType,
    job: JobContext,
  ): Promise<BackupRecord> {
    if (!this.o.tls.peek(cluster)?.hosts.has(REPO_HOST))
      throw transient(`cannot back up ${cluster.name}: no repository certificate issued yet`);
    const user = this.repoUser();
    await this.ensureNodeServer(cluster, source);
    await this.checkpoint(cluster, source);
    const server = join(this.stateDir(cluster), 'server');
    const conf = join(server, 'backup.conf');
    const pg = { dataDir: cluster.postgres.dataDir, port: pgPort(cluster), socketDir: socketDir(cluster) };
    const text = renderBackupConf(cluster, { address: source.address, ...pg }, this.repoPaths(cluster));
    writeRootFile(conf, text, user.gid, 0o640);
    const args = [`--config=${conf}`, `--stanza=${stanzaOf(cluster)}`, `--type=${type}`, 'backup'];
    const started = Date.now();
    const output = await runRepoCommand(args, user, repoEnv(cluster), job);
    const label = newBackupLabel(output);
    const listing = await this.readStanzaInfo(cluster);
    this.stanzaInfo.set(cluster.name, { at: Date.now(), running: false, listing, listedAt: Date.now() });
    const made = label
      ? listing.backups.find((b) => b.label === label)
      : listing.backups.filter((b) => b.startedAt >= started - 1_000).pop();
    if (!made) throw transient(`the backup of ${cluster.name} ended, but the repository does not list it`);
    this.o.log?.info({ cluster: cluster.name, label: made.label, type }, 'backup: done');
    return made;
  }

  /** pgBackRest's server on the node (as postgres, on the node's address): what the repository's
   *  side copies the data directory through. Started when missing or when its configuration or
   *  certificate changed; adopted through a pid file whose command line is checked. */
  private async ensureNodeServer(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const tls = tlsNodePaths(cluster);
    const argv = [
      'sh',
      '-c',
      NODE_SERVER_SCRIPT,
      'pgop-backup-server',
      nodeConfPath(cluster),
      nodeIncludeDir(cluster),
      nodeWorkDir(cluster),
      node.address,
      String(backupOf(cluster).repo.nodePort),
      tls.cert,
      tls.ca,
    ];
    const res = await this.o.shell.exec(this.o.hostRef(cluster, node), argv, {
      user: 'postgres',
      timeoutMs: 30_000,
    });
    if (res.code !== 0)
      throw transient(`cannot start pgBackRest's server on ${node.name}: ${failureDetail(res)}`);
  }

  /** Push the earlier timelines' segments the promoted `primary` still holds (timeline-wal.ts);
   *  pgBackRest skips the ones already archived (same checksum). */
  async pushEarlierTimelines(cluster: ClusterSpec, primary: NodeSpec, timeline: number): Promise<string> {
    const host = this.o.hostRef(cluster, primary);
    const wal = `${cluster.postgres.dataDir}/pg_wal`;
    const look = await this.o.shell.exec(
      host,
      [
        'sh',
        '-c',
        WAL_LOOK_SCRIPT,
        'pgop-wal-look',
        wal,
        historyFileOf(timeline),
        socketDir(cluster),
        String(pgPort(cluster)),
      ],
      { user: 'postgres', timeoutMs: 30_000 },
    );
    if (look.code !== 0) throw transient(`cannot list the WAL of ${primary.name}: ${failureDetail(look)}`);
    const [files = '', history = '', size = ''] = look.stdout.split('\n--\n');
    const segments = segmentsBeforeSwitches(files.split('\n'), history, Number(size.trim()));
    if (segments.length === 0) return `no segment of an earlier timeline left on ${primary.name}`;
    const argv = [
      'sh',
      '-c',
      WAL_PUSH_SCRIPT,
      'pgop-wal-push',
      ...nodeConfArgs(cluster),
      '--',
      ...segments.map((s) => `${wal}/${s}`),
    ];
    const res = await this.o.shell.exec(host, argv, {
      user: 'postgres',
      timeoutMs: 60_000 + 10_000 * segments.length,
    });
    const already = (res.stdout + res.stderr).match(/already exists/g)?.length ?? 0;
    if (res.code !== 0)
      throw transient(`cannot push earlier timelines' WAL from ${primary.name}: ${failureDetail(res)}`);
    const range = `${segments[0]}..${segments.at(-1)}`;
    const counts = `${segments.length - already} of ${segments.length} segments`;
    return `${counts} of earlier timelines pushed from ${primary.name} (${range}; the rest were there)`;
  }

  /** A checkpoint first: just after a promotion pg_control still names the old timeline until
   *  one completes, and pgBackRest refuses to start (WAL timeline does not match pg_control). */
  private async checkpoint(cluster: ClusterSpec, node: NodeSpec): Promise<void> {
    const argv = ['psql', '-X', '-q', '-h', socketDir(cluster), '-p', String(pgPort(cluster))];
    const res = await this.o.shell.exec(this.o.hostRef(cluster, node), [...argv, '-c', 'CHECKPOINT'], {
      user: 'postgres',
      timeoutMs: 120_000,
    });
    if (res.code !== 0) throw transient(`cannot checkpoint ${node.name} for a backup: ${failureDetail(res)}`);
  }

  private repoPaths(cluster: ClusterSpec): RepoPaths {
    const server = join(this.stateDir(cluster), 'server');
    return {
      cert: join(server, 'server.crt'),
      key: join(server, 'server.key'),
      ca: join(server, 'ca.crt'),
      logDir: join(server, 'log'),
      lockDir: join(server, 'lock'),
    };
  }

  async stopRepoServer(cluster: ClusterSpec): Promise<void> {
    const dir = this.stateDir(cluster);
    const pid = serverPid(dir);
    if (pid !== null) await stopProcess(pid);
    // its configuration, certificate and logs; the repository itself stays
    rmSync(dir, { recursive: true, force: true });
  }

  /** <state root>/backup-servers/<cluster>-<hash of its TLS directory>: in a traversable
   *  directory (the cluster's own state is root's alone, and the server runs as another user),
   *  and one per cluster state (tests run clusters of the same name in other state dirs). */
  private stateDir(cluster: ClusterSpec): string {
    const id = createHash('sha256').update(this.o.tls.dir(cluster)).digest('hex').slice(0, 8);
    return join(stateRoot(), 'backup-servers', `${cluster.name}-${id}`);
  }

  private files(cluster: ClusterSpec, m: ReturnType<ClusterTls['peek']>): ServerFiles | null {
    const host = m?.hosts.get(REPO_HOST);
    if (!m || !host) return null;
    const conf = renderRepoConf(cluster, this.repoPaths(cluster));
    const hash = createHash('sha256');
    for (const part of [conf, host.cert, host.key, m.caBundle]) hash.update(part).update('\0');
    return { conf, cert: host.cert, key: host.key, ca: m.caBundle, hash: hash.digest('hex') };
  }

  /** The server's files (root's, readable by its group) and the directories it writes in. */
  private prepare(cluster: ClusterSpec, f: ServerFiles, user: RepoUser): void {
    const dir = this.stateDir(cluster);
    const server = join(dir, 'server');
    makeDirs(server, 0o755);
    chownSync(dir, 0, 0);
    chmodSync(dir, 0o755);
    ownedBy(server, 0, user.gid, 0o750);
    writeRootFile(join(server, 'pgbackrest.conf'), f.conf, user.gid, 0o640);
    writeRootFile(join(server, 'server.crt'), f.cert, user.gid, 0o640);
    writeRootFile(join(server, 'server.key'), f.key, user.gid, 0o640);
    writeRootFile(join(server, 'ca.crt'), f.ca, user.gid, 0o640);
    // for the commands pgop runs here itself (info): logs and locks of their own
    const info = ['[global]', `log-path=${join(server, 'log')}`, `lock-path=${join(server, 'lock')}`]
      .concat('log-level-file=off', '')
      .join('\n');
    writeRootFile(join(server, 'info.conf'), info, user.gid, 0o640);
    for (const d of ['log', 'lock']) userDir(join(server, d), user);
    repoDir(backupOf(cluster).repo.path, user);
  }

  private async start(cluster: ClusterSpec, dir: string, user: RepoUser, hash: string): Promise<void> {
    const conf = join(dir, 'server', 'pgbackrest.conf');
    const out = openSync(join(dir, 'server.out'), 'w', 0o644);
    let pid: number | undefined;
    try {
      const child = spawn('pgbackrest', [`--config=${conf}`, 'server'], {
        cwd: join(dir, 'server'),
        detached: true, // its own session: it outlives the operator (adopted through server.pid)
        stdio: ['ignore', out, out],
        uid: user.uid,
        gid: user.gid,
        // also the configuration of the remote processes it forks per client, which would
        // otherwise read the machine's /etc/pgbackrest.conf
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', PGBACKREST_CONFIG: conf },
      });
      child.on('error', () => undefined);
      pid = child.pid;
      child.unref();
    } finally {
      closeSync(out);
    }
    if (!pid)
      throw transient(
        `cannot start the backup repository's server: ${lastWords(dir).error ?? 'spawn failed'}`,
      );
    writeFileSync(join(dir, 'server.pid'), `${pid}\n`, { mode: 0o644 });
    const address = repoHostAddress(cluster);
    const port = backupOf(cluster).repo.port;
    if (!(await listening(address, port, pid))) {
      await stopProcess(pid);
      throw transient(
        `cannot start the backup repository's server on ${address}:${port}: ` +
          (lastWords(dir).error ?? 'it does not listen'),
      );
    }
    writeFileSync(join(dir, 'server.hash'), hash, { mode: 0o644 });
    this.o.log?.info({ cluster: cluster.name, pid, address, port }, 'backup: repository server started');
  }
}

// ------------------------------------------------------------------------------ process

/** The node's pgbackrest server, as postgres: $1 conf, $2 include dir, $3 work dir, $4 address,
 *  $5 port, $6 certificate, $7 CA. Its files are postgres's, in postgres's directory. */
const NODE_SERVER_SCRIPT = `set -eu
conf=$1 inc=$2 work=$3 addr=$4 port=$5
pidf="$work/server.pid" hashf="$work/server.hash"
want=$(cat "$conf" "$6" "$7" | sha256sum | cut -d' ' -f1)
pid=$(cat "$pidf" 2>/dev/null || true)
cmd=$(tr '\\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
if [ -n "$pid" ] && case "$cmd" in *"--tls-server-address=$addr server"*) true;; *) false;; esac; then
  [ "$(cat "$hashf" 2>/dev/null || true)" = "$want" ] && exit 0
  kill "$pid" 2>/dev/null || true
  for i in $(seq 20); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
fi
rm -f "$pidf" "$hashf"
setsid env -i PATH=/usr/bin:/bin LANG=C.UTF-8 PGBACKREST_CONFIG="$conf" \\
  PGBACKREST_CONFIG_INCLUDE_PATH="$inc" pgbackrest --tls-server-address="$addr" server \\
  </dev/null >"$work/server.out" 2>&1 &
echo $! >"$pidf"
for i in $(seq 50); do
  if ! [ -d "/proc/$!" ]; then echo "it exited: $(tail -c 400 "$work/server.out")" >&2; exit 3; fi
  if pgbackrest --config="$conf" --tls-server-address="$addr" --tls-server-port="$port" \\
    --log-level-console=off server-ping >/dev/null 2>&1; then echo "$want" >"$hashf"; exit 0; fi
  sleep 0.1
done
echo "it does not answer on $addr:$port: $(tail -c 400 "$work/server.out")" >&2
exit 4
`;

/** $1 pg_wal, $2 the current timeline's history file, $3 socket dir, $4 port: the segment
 *  files, the history and the segment size in bytes, separated by lines of `--`. */
const WAL_LOOK_SCRIPT = `set -eu
ls "$1"
echo --
cat "$1/$2" 2>/dev/null || true
echo --
psql -X -A -t -h "$3" -p "$4" -d postgres -c "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'"
`;

/** pgbackrest's options, then --, then the segment paths: each pushed in turn; every failure
 *  is told, and the exit status says whether there was one. */
const WAL_PUSH_SCRIPT = `opts=""
while [ "$1" != -- ]; do opts="$opts $1"; shift; done
shift
rc=0
for f; do
  # shellcheck disable=SC2086 (the options are pgop's own words, without spaces)
  pgbackrest $opts archive-push "$f" || { echo "failed: $f" >&2; rc=1; }
done
exit $rc
`;

/** The environment of pgbackrest commands on the operator's host: the passphrase travels here,
 *  never in a file or on a command line. */
function repoEnv(cluster: ClusterSpec): Record<string, string> {
  const b = backupOf(cluster);
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' };
  if (b.encryption)
    env.PGBACKREST_REPO1_CIPHER_PASS = resolveSecret(b.encryption.passphrase, 'the backup passphrase');
  return env;
}

/** How long a stopped command may take to end before it is killed */
const STOP_GRACE_MS = 10_000;

/** Run pgbackrest as the repository's user; its console output feeds the job's progress. The
 *  job's signal stops it (SIGTERM: pgBackRest ends cleanly and keeps what a resume can reuse). */
function runRepoCommand(args: string[], user: RepoUser, env: Record<string, string>, job: JobContext) {
  return new Promise<string>((resolve, reject) => {
    const child = spawn('pgbackrest', args, {
      uid: user.uid,
      gid: user.gid,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const progress = new BackupProgress();
    let output = '';
    const take = (chunk: Buffer) => {
      const s = chunk.toString('utf8');
      output = (output + s).slice(-64 * 1024);
      if (progress.feed(s)) job.progress(progress.done, progress.total);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    let killer: NodeJS.Timeout | undefined;
    const stop = () => {
      child.kill('SIGTERM');
      killer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    };
    job.signal.addEventListener('abort', stop, { once: true });
    child.on('error', (err) => reject(transient(`cannot run pgbackrest: ${err.message}`)));
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      job.signal.removeEventListener('abort', stop);
      if (job.signal.aborted) return reject(job.signal.reason as Error);
      if (code === 0) return resolve(output);
      const errors = output
        .split('\n')
        .filter((l) => /ERROR|WARN/.test(l))
        .join('\n');
      reject(
        transient(
          `pgbackrest ${args.at(-1)} failed (${signal ?? `exit ${code}`}): ${tail(errors || output)}`,
        ),
      );
    });
  });
}

/** The server pgop started for this directory, if it still runs (a PID is trusted only while
 *  its command line is that server's: never a recycled one). */
function serverPid(dir: string): number | null {
  const pid = Number(readText(join(dir, 'server.pid')));
  if (!Number.isInteger(pid) || pid <= 1) return null;
  let cmd: string;
  try {
    cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return null;
  }
  const conf = `--config=${join(dir, 'server', 'pgbackrest.conf')}`;
  return cmd.split('\0').includes(conf) && cmd.includes('server') ? pid : null;
}

/** The configuration hash the running server was started with (server.hash). */
function startedWith(dir: string): string {
  return readText(join(dir, 'server.hash'));
}

async function stopProcess(pid: number): Promise<void> {
  const alive = () => existsSync(`/proc/${pid}`) && !isZombie(pid);
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  for (let i = 0; i < 40 && alive(); i++) await sleep(50);
  if (alive()) process.kill(pid, 'SIGKILL');
}

function isZombie(pid: number): boolean {
  return / Z /.test(readText(`/proc/${pid}/stat`));
}

/** Whether the server accepts connections on its address (or has exited: false at once). */
async function listening(address: string, port: number, pid: number): Promise<boolean> {
  const deadline = Date.now() + LISTEN_WAIT_MS;
  while (Date.now() < deadline) {
    if (!existsSync(`/proc/${pid}`) || isZombie(pid)) return false;
    if (await accepts(address, port)) return true;
    await sleep(50);
  }
  return false;
}

function accepts(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: address, port, timeout: 500 });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.once('timeout', () => done(false));
  });
}

/** The end of what the server printed, or of its log: why it is not running. */
function lastWords(dir: string): { error?: string } {
  const out = tail(readText(join(dir, 'server.out')));
  const logs = join(dir, 'server', 'log');
  let log = '';
  try {
    const f = readdirSync(logs).find((n) => n.endsWith('server.log'));
    if (f) log = readText(join(logs, f));
  } catch {
    /* no log yet */
  }
  const error =
    out ||
    tail(
      log
        .split('\n')
        .filter((l) => /ERROR|WARN/.test(l))
        .join('\n'),
    );
  return error ? { error } : {};
}

// ------------------------------------------------------------------------------ files and user

interface RepoUser {
  uid: number;
  gid: number;
}

/** The unprivileged user the repository's server runs as, made when missing. */
function ensureRepoUser(): RepoUser {
  const ids = () => {
    try {
      const uid = Number(execFileSync('id', ['-u', REPO_USER], { encoding: 'utf8' }).trim());
      const gid = Number(execFileSync('id', ['-g', REPO_USER], { encoding: 'utf8' }).trim());
      return { uid, gid };
    } catch {
      return null;
    }
  };
  const found = ids();
  if (found) return found;
  try {
    execFileSync(
      'useradd',
      [
        '--system',
        '--user-group',
        '--no-create-home',
        '--home-dir',
        '/nonexistent',
        '--shell',
        '/usr/sbin/nologin',
        REPO_USER,
      ],
      { stdio: 'pipe' },
    );
  } catch (err) {
    throw terminal(`cannot create the system user ${REPO_USER} for the backup repository: ${String(err)}`);
  }
  const made = ids();
  if (!made) throw terminal(`cannot find the system user ${REPO_USER} after creating it`);
  return made;
}

/** A file of root's (group `gid`), written through a temp file and a rename in its root-owned
 *  directory: never through a link. */
function writeRootFile(path: string, content: string, gid: number, mode: number): void {
  const tmp = `${path}.pgop-${process.pid}`;
  writeFileSync(tmp, content, { mode, flag: 'wx' });
  chownSync(tmp, 0, gid);
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

function ownedBy(path: string, uid: number, gid: number, mode: number): void {
  chownSync(path, uid, gid);
  chmodSync(path, mode);
}

/** A directory the server writes in: made by root in root's directory, then handed over. */
function userDir(path: string, user: RepoUser): void {
  if (!existsSync(path)) mkdirSync(path, { mode: 0o750 });
  const st = statSync(path);
  if (!st.isDirectory()) throw terminal(`cannot use ${path}: not a directory`);
  if (st.uid !== user.uid) ownedBy(path, user.uid, user.gid, 0o750);
}

/** The repository directory: the spec's, made when missing and then the server user's. One that
 *  holds something of another user's is refused (pgop never takes over someone's files). */
function repoDir(path: string, user: RepoUser): void {
  makeDirs(path, 0o755);
  for (let d = dirname(path); d !== '/'; d = dirname(d)) {
    const up = statSync(d);
    if ((up.mode & 0o001) === 0 && up.uid !== user.uid)
      throw terminal(
        `cannot use backup.repo.path ${path}: ${REPO_USER} cannot reach it (${d} is mode ` +
          `${(up.mode & 0o777).toString(8)}; it needs o+x)`,
      );
  }
  const st = statSync(path);
  if (!st.isDirectory()) throw terminal(`cannot use backup.repo.path ${path}: not a directory`);
  if (st.uid === user.uid) return;
  if (readdirSync(path).length > 0)
    throw terminal(
      `cannot use backup.repo.path ${path}: it is not empty and belongs to uid ${st.uid}, ` +
        `not to ${REPO_USER} (choose an empty or new directory)`,
    );
  ownedBy(path, user.uid, user.gid, 0o750);
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return '';
  }
}
