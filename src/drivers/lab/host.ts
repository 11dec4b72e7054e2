// One lab host on this machine: its directories (bind-mounted on the seed's paths inside the
// host), its sshd files and the sshd process that makes it a machine. LabProvider decides when.

import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PgopError, terminal, transient } from '../../errors.js';
import { shellJoin } from '../ssh/quote.js';
import { ensurePinnedHostKey } from '../ssh/keys.js';
import type { HostKeyPins } from '../ssh/shell.js';
import { machineCgroup, pidInNetns, procComm } from './netns.js';

const SSHD = '/usr/sbin/sshd';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One lab host: a spec node or the pool host. */
export interface LabHost {
  cluster: string;
  name: string;
  id: string;
  address: string;
  ns: string;
  dir: string;
  /** hub-side veth (the node side is eth0 inside ns) */
  hubVeth: string;
}

export interface PrivateMount {
  sub: string;
  target: string;
  owner: 'root' | 'postgres';
  mode: number;
  createMountPoint: boolean;
  tmpfs?: boolean;
}

/** What each lab node sees as its own: <host>/<sub> bind-mounted on <target> in the node's
 *  private mount namespace (in this order: /run before /var/run/postgresql, which is a path
 *  below /run). Everything else (binaries, /etc, /usr) is the machine's own, shared. */
export const PRIVATE_MOUNTS: readonly PrivateMount[] = [
  // The seed's layout.
  { sub: 'u01', target: '/u01', owner: 'postgres', mode: 0o700, createMountPoint: true },
  { sub: 'u02', target: '/u02', owner: 'postgres', mode: 0o755, createMountPoint: true },
  { sub: 'log', target: '/var/log/postgres', owner: 'postgres', mode: 0o755, createMountPoint: true },
  { sub: 'opt-postgres', target: '/opt/postgres', owner: 'postgres', mode: 0o755, createMountPoint: true },
  // The postgres user's home (~/.pgpass, Debian's default cluster dirs) and pgpool's config dir.
  { sub: 'pghome', target: '/var/lib/postgresql', owner: 'postgres', mode: 0o755, createMountPoint: true },
  { sub: 'etc-pgpool2', target: '/etc/pgpool2', owner: 'root', mode: 0o755, createMountPoint: true },
  // sudo rules pgop writes for a node (pgpool's watchdog) are that node's, never this machine's
  { sub: 'etc-sudoers', target: '/etc/sudoers.d', owner: 'root', mode: 0o755, createMountPoint: true },
  // A home of its own for root, as on a real machine: the build machine's /root/.bashrc (which
  // bash sources for every command sshd runs) must not run on nodes (it costs a command ~1 s).
  { sub: 'root', target: '/root', owner: 'root', mode: 0o700, createMountPoint: false },
  // A /tmp of its own: nodes must not see each other's (or the machine's) temp files.
  { sub: 'tmp', target: '/tmp', owner: 'root', mode: 0o1777, createMountPoint: false },
  // sshd wants /run/sshd; three postgres on one machine need distinct socket dirs. /run is a
  // tmpfs, as on a real machine: emptied when the node is fenced (powered off), and a file
  // synced there costs nothing (pgpool syncs its status file there during every failover).
  { sub: 'run', target: '/run', owner: 'root', mode: 0o755, createMountPoint: false, tmpfs: true },
  { sub: 'pgrun', target: '/var/run/postgresql', owner: 'postgres', mode: 0o2775, createMountPoint: false },
];

/** A node path on the seed's layout (/u01/..., /u02/...) as seen from this machine. */
export function hostPath(h: Pick<LabHost, 'dir' | 'id'>, nodePath: string): string {
  for (const root of ['/u01', '/u02']) {
    if (nodePath === root || nodePath.startsWith(`${root}/`)) {
      return join(h.dir, root.slice(1), nodePath.slice(root.length));
    }
  }
  throw terminal(`cannot locate ${nodePath} of ${h.id}: lab nodes keep data under /u01 or /u02 only`);
}

export function wrap(err: unknown, what: string): PgopError {
  if (err instanceof PgopError) return new PgopError(err.kind, `${what}: ${err.message}`, { cause: err });
  return terminal(`${what}: ${(err as Error)?.message ?? String(err)}`, err);
}

// ------------------------------------------------------------------ directories and files

function osUser(name: string): { uid: number; gid: number } | null {
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[0] === name) return { uid: Number(f[2]), gid: Number(f[3]) };
    }
  } catch {
    /* no passwd */
  }
  return null;
}

export async function ensureHostDirs(h: LabHost): Promise<void> {
  try {
    const pg = osUser('postgres');
    for (const m of PRIVATE_MOUNTS) {
      const src = join(h.dir, m.sub);
      await mkdir(src, { recursive: true });
      if (m.owner === 'postgres' && pg) await chown(src, pg.uid, pg.gid);
      await chmod(src, m.mode);
      // Mount point on the machine's own filesystem (left empty: only lab nodes mount over it).
      if (m.createMountPoint) await mkdir(m.target, { recursive: true, mode: 0o755 });
    }
    for (const sub of ['run/sshd', 'run/postgresql', 'u02/archive', 'ssh']) {
      await mkdir(join(h.dir, sub), { recursive: true });
    }
    await chmod(join(h.dir, 'run', 'sshd'), 0o755); // sshd's privilege separation dir: root, 0755
    await chmod(join(h.dir, 'ssh'), 0o700);
    if (pg) await chown(join(h.dir, 'u02', 'archive'), pg.uid, pg.gid);
    await chmod(join(h.dir, 'u02', 'archive'), 0o700);
  } catch (err) {
    throw wrap(err, `cannot create the directories of ${h.id}`);
  }
}

/** The host's key (made once, pinned before sshd first starts), the operator's key as its
 *  only authorized key, and its sshd_config. */
export async function ensureSshFiles(
  h: LabHost,
  operatorKeyPath: string,
  pins: HostKeyPins | undefined,
): Promise<void> {
  const ssh = join(h.dir, 'ssh');
  const hostKey = join(ssh, 'ssh_host_ed25519_key');
  // A host made anew (its directory was removed with it) gets a new key.
  await ensurePinnedHostKey(hostKey, h.id, pins, 'lab');
  const pub = await readFile(`${operatorKeyPath}.pub`, 'utf8');
  await writeIfChanged(join(ssh, 'authorized_keys'), pub, 0o600);
  await writeIfChanged(join(ssh, 'sshd_config'), renderSshdConfig(h, ssh, hostKey), 0o600);
}

function renderSshdConfig(h: LabHost, ssh: string, hostKey: string): string {
  return [
    '# Written by pgop (lab provider). Key-only root login; no environment accepted.',
    'Port 22',
    `ListenAddress ${h.address}`,
    'AddressFamily inet',
    `HostKey ${hostKey}`,
    'HostKeyAlgorithms ssh-ed25519',
    'PidFile /run/sshd.pid',
    `AuthorizedKeysFile ${join(ssh, 'authorized_keys')}`,
    'PermitRootLogin prohibit-password',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    'StrictModes no',
    'PermitUserEnvironment no',
    'X11Forwarding no',
    'AllowAgentForwarding no',
    'AllowTcpForwarding no',
    'PrintMotd no',
    'PrintLastLog no',
    'UseDNS no',
    'MaxSessions 64',
    'MaxStartups 64:30:128',
    'LoginGraceTime 20',
    'ClientAliveInterval 5',
    'ClientAliveCountMax 3',
    '',
  ].join('\n');
}

export async function writeIfChanged(path: string, content: string, mode: number): Promise<void> {
  try {
    if ((await readFile(path, 'utf8')) === content && (statSync(path).mode & 0o777) === mode) return;
  } catch {
    /* missing */
  }
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, content, { mode });
  await chmod(tmp, mode);
  await rename(tmp, path);
}

// ------------------------------------------------------------------ sshd

/** The pid of the host's sshd as last started (it may have died since). */
export function sshdPid(h: LabHost): number | null {
  try {
    const pid = Number(readFileSync(join(h.dir, 'sshd.pid'), 'utf8').trim());
    return Number.isInteger(pid) && pid > 1 ? pid : null;
  } catch {
    return null;
  }
}

/** Start sshd in the host's namespace, inside a private mount namespace that puts the host's
 *  directories on the seed's paths, and wait until it listens. */
export async function startSshd(h: LabHost, timeoutMs: number): Promise<void> {
  const errPath = join(h.dir, 'sshd.stderr');
  const child = spawnSshd(h, errPath);
  if (child.pid === undefined) {
    throw terminal(
      `cannot start sshd on ${h.id}: spawn failed${child.exited() ? ` (${child.exited()})` : ''}`,
    );
  }
  const pid = child.pid;
  // Beside run/, outside the private mount: the operator finds it from the root view.
  await writeFile(join(h.dir, 'sshd.pid'), `${pid}\n`, { mode: 0o644 });
  const log = join(h.dir, 'sshd.log');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (pidInNetns(pid, h.ns) && procComm(pid) === 'sshd' && listensOn22(pid)) return;
    const exited = child.exited();
    if (exited !== null) {
      throw terminal(`cannot start sshd on ${h.id}: ${exited}: ${tail(errPath)} ${tail(log)}`.trim());
    }
    if (Date.now() > deadline) {
      throw transient(`cannot start sshd on ${h.id}: not listening after ${timeoutMs} ms: ${tail(log)}`);
    }
    await sleep(5);
  }
}

function spawnSshd(h: LabHost, errPath: string): { pid: number | undefined; exited: () => string | null } {
  const d = h.dir;
  const script = [
    ...PRIVATE_MOUNTS.map((m) =>
      m.tmpfs
        ? shellJoin([
            'mount',
            '-t',
            'tmpfs',
            '-o',
            `mode=${m.mode.toString(8)},size=64m`,
            'tmpfs',
            m.target,
          ]) + ` && mkdir -p ${m.target}/sshd ${m.target}/postgresql`
        : shellJoin(['mount', '--bind', join(d, m.sub), m.target]),
    ),
    `exec ${shellJoin([SSHD, '-D', '-f', join(d, 'ssh', 'sshd_config'), '-E', join(d, 'sshd.log')])}`,
  ].join(' && ');
  const errFd = openSync(errPath, 'w', 0o600);
  let exited: string | null = null;
  try {
    // A private IPC namespace too, as a real machine has: postgres and pgpool keep SysV shared
    // memory, which a SIGKILL (fence, kill -9) leaves behind; the kernel frees a namespace's
    // segments when its last process exits, so fenced lab hosts leak nothing on this host.
    const unshare = ['unshare', '--mount', '--ipc', '--propagation', 'private', '--', 'sh', '-c', script];
    const start = ['ip', 'netns', 'exec', h.ns, ...unshare];
    // Into the machine's cgroup first (from this mount view: `ip netns exec` hides the
    // cgroup mounts), so that sshd and all it starts are in it: the fence kills that.
    const cg = machineCgroup(h.ns);
    if (cg) mkdirSync(cg, { recursive: true });
    const stdio: ['ignore', 'ignore', number] = ['ignore', 'ignore', errFd];
    const child = cg
      ? spawn('sh', ['-c', `echo $$ > "$1/cgroup.procs" && shift && exec "$@"`, 'pgop', cg, ...start], {
          detached: true,
          stdio,
        })
      : spawn(start[0]!, start.slice(1), { detached: true, stdio });
    child.on('error', (err) => (exited = err.message));
    child.on('exit', (code, sig) => (exited = sig ? `killed by ${sig}` : `exit ${code}`));
    child.unref();
    return { pid: child.pid, exited: () => exited };
  } finally {
    closeSync(errFd);
  }
}

function listensOn22(pid: number): boolean {
  try {
    const lines = readFileSync(`/proc/${pid}/net/tcp`, 'utf8').split('\n').slice(1);
    return lines.some((l) => {
      const f = l.trim().split(/\s+/);
      return f[1]?.endsWith(':0016') === true && f[3] === '0A';
    });
  } catch {
    return false;
  }
}

function tail(path: string, max = 400): string {
  try {
    const s = readFileSync(path, 'utf8').trim();
    return s.length > max ? `...${s.slice(-max)}` : s;
  } catch {
    return '';
  }
}
