// Small typed wrappers over iproute2's `ip` for the lab provider. Every call is execFile with an
// argv array (never a shell string), and every namespace / interface name is validated first.
//
// Network rule: the lab's namespaces never get a default route, and every process that talks to
// lab hosts runs inside the hub namespace (`reexecInHub`), never in the root namespace.

import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { PgopError, internal, terminal, transient } from '../../errors.js';

const IP = 'ip';
const NETNS_DIR = '/run/netns';

/** Namespace names: they are file names under /run/netns. */
const NS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;
/** Interface names: the kernel allows at most 15 bytes (IFNAMSIZ - 1). */
const IF_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
/** The lab prefix starts every namespace name of one lab. */
const PREFIX = /^[a-z][a-z0-9]{0,15}$/;

export function assertNsName(name: string): string {
  if (!NS_NAME.test(name)) throw terminal(`cannot use namespace name ${JSON.stringify(name)}: invalid name`);
  return name;
}

export function assertIfName(name: string): string {
  if (!IF_NAME.test(name))
    throw terminal(`cannot use interface name ${JSON.stringify(name)}: invalid or longer than 15 characters`);
  return name;
}

/** `PGOP_LAB_PREFIX` or `pgop`. Tests use a unique prefix so they never touch a user's lab. */
/** Enter only the network namespace: `ip netns exec` would also give the process a private
 *  (slave) mount namespace, and namespaces it then creates with `ip netns add` would be bind
 *  mounts nobody outside sees (the root namespace could neither list, enter nor clean them). */
export const NSENTER = '/usr/bin/nsenter';

/** argv prefix that runs a command in namespace `ns` (network only). */
export function inNetnsArgv(ns: string): string[] {
  return [NSENTER, `--net=${netnsPath(ns)}`, '--'];
}

export function labPrefix(): string {
  const p = process.env.PGOP_LAB_PREFIX ?? 'pgop';
  if (!PREFIX.test(p)) {
    throw terminal(
      `cannot use lab prefix ${JSON.stringify(p)}: ` +
        `use 1-16 lowercase letters and digits, starting with a letter`,
    );
  }
  return p;
}

export function hubNs(prefix: string = labPrefix()): string {
  return `${prefix}-hub`;
}

/** Short stable hex hash, for interface names (≤ 15 characters). */
export function shortHash(s: string, len = 6): string {
  return createHash('sha256').update(s).digest('hex').slice(0, len);
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Run a program with an argv array; rejects with the exit code and stderr in the error. */
export function run(file: string, args: readonly string[], timeoutMs = 15_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
          const cause = e.killed
            ? `timed out after ${timeoutMs} ms`
            : (String(stderr).trim() || e.message).split('\n').slice(-3).join(' | ');
          const signal = (err as { signal?: string | null }).signal ?? undefined;
          reject(
            Object.assign(new Error(signal && !e.killed ? `${cause} (killed by ${signal})` : cause), {
              exitCode: typeof e.code === 'number' ? e.code : undefined,
              stderr: String(stderr),
              killedFromOutside: !!signal && !e.killed,
            }),
          );
          return;
        }
        resolve({ stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

/** `ip <args>`; throws terminal `cannot run ip <args>: <stderr>`. An `ip -n NS` runs inside NS
 *  for a moment, and a fence of that machine by another process (the operator's and a lab
 *  fault's at once) kills whatever runs there: such a kill is tried again, twice. */
export async function ip(args: readonly string[]): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    try {
      return (await run(IP, args)).stdout;
    } catch (err) {
      if ((err as { killedFromOutside?: boolean }).killedFromOutside && attempt < 2) continue;
      throw terminal(`cannot run ip ${args.join(' ')}: ${(err as Error).message}`, err);
    }
  }
}

/** `ip -n <ns> <args>`: the command acts inside namespace ns. */
export function ipIn(ns: string, args: readonly string[]): Promise<string> {
  return ip(['-n', assertNsName(ns), ...args]);
}

export function netnsPath(ns: string): string {
  return `${NETNS_DIR}/${assertNsName(ns)}`;
}

export function netnsExists(ns: string): boolean {
  return existsSync(netnsPath(ns));
}

export function listNetns(): string[] {
  try {
    return readdirSync(NETNS_DIR).filter((n) => NS_NAME.test(n));
  } catch {
    return [];
  }
}

/** Create the namespace (lo up) if missing. Safe against a concurrent creator. */
export async function ensureNetns(ns: string): Promise<void> {
  assertNsName(ns);
  if (!netnsExists(ns)) {
    try {
      await ip(['netns', 'add', ns]);
    } catch (err) {
      if (!netnsExists(ns)) throw terminal(`cannot create namespace ${ns}: ${(err as Error).message}`, err);
    }
  }
  await ipIn(ns, ['link', 'set', 'lo', 'up']);
}

export async function deleteNetns(ns: string): Promise<void> {
  assertNsName(ns);
  if (!netnsExists(ns)) return;
  try {
    await ip(['netns', 'delete', ns]);
  } catch (err) {
    if (netnsExists(ns)) throw terminal(`cannot delete namespace ${ns}: ${(err as Error).message}`, err);
  }
}

export interface LinkInfo {
  ifname: string;
  operstate?: string;
  flags?: string[];
  master?: string;
  link_type?: string;
  linkinfo?: { info_kind?: string };
}

/** Links of a namespace (`ip -j -d link show`), optionally only those of a type (bridge, veth). */
export async function listLinks(ns: string, type?: string): Promise<LinkInfo[]> {
  const out = await ipIn(ns, ['-j', '-d', 'link', 'show', ...(type ? ['type', type] : [])]);
  const parsed = JSON.parse(out.trim() || '[]') as LinkInfo[];
  return parsed;
}

export async function linkExists(ns: string, dev: string): Promise<boolean> {
  assertIfName(dev);
  return (await listLinks(ns)).some((l) => l.ifname === dev);
}

/** IPv4 addresses (CIDR form) configured on dev. */
export async function linkAddresses(ns: string, dev: string): Promise<string[]> {
  assertIfName(dev);
  const out = await ipIn(ns, ['-j', '-4', 'addr', 'show', 'dev', dev]);
  const parsed = JSON.parse(out.trim() || '[]') as { addr_info?: { local: string; prefixlen: number }[] }[];
  return parsed.flatMap((l) => (l.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`));
}

/** Set exactly this one IPv4 address on dev (adds it; removes other IPv4 addresses). */
export async function ensureAddress(ns: string, dev: string, cidr: string): Promise<void> {
  const have = await linkAddresses(ns, dev);
  for (const a of have) if (a !== cidr) await ipIn(ns, ['addr', 'del', a, 'dev', dev]);
  if (!have.includes(cidr)) await ipIn(ns, ['addr', 'add', cidr, 'dev', dev]);
}

/** Routes of a namespace, one per line (`ip -n ns route show`). */
export async function routes(ns: string, family: '-4' | '-6' = '-4'): Promise<string[]> {
  const out = await ipIn(ns, [family, 'route', 'show']);
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

/** Inode identity of a namespace file, for comparisons with /proc/<pid>/ns/net. */
function nsId(path: string): string | null {
  try {
    const st = statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

/** True when the (non-zombie) process pid lives in network namespace ns. */
export function pidInNetns(pid: number, ns: string): boolean {
  if (!Number.isInteger(pid) || pid <= 1) return false;
  const want = nsId(netnsPath(ns));
  if (want === null) return false;
  return nsId(`/proc/${pid}/ns/net`) === want;
}

/** PIDs of every live process in namespace ns (what `ip netns pids` prints, read directly). */
export function netnsPids(ns: string): number[] {
  const want = nsId(netnsPath(ns));
  if (want === null) return [];
  const pids: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const pid = Number(d);
    if (pid === process.pid) continue;
    if (nsId(`/proc/${d}/ns/net`) === want) pids.push(pid);
  }
  return pids;
}

/** Process name (/proc/<pid>/comm) or null. */
export function procComm(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return null;
  }
}

/** Parent pid from /proc/<pid>/stat, or null. */
export function procPpid(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[1]);
  } catch {
    return null;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * SIGKILL every process of namespace ns: the fence of a lab machine without a cgroup. Scans
 * again until a scan finds no process it has not killed yet (a child forked before the kill
 * shows up in the next scan; a killed process cannot fork), then waits until each has begun to
 * exit (awaitExiting): from then on nothing of the machine acts any more, and the fence holds.
 * Their teardown (it can take a few hundred ms) is left to `awaitNetnsEmpty`, where
 * it matters: before the machine starts again or is removed. Refuses a namespace the operator
 * itself lives in. Returns how many were killed.
 */
export async function killNetnsProcesses(ns: string, timeoutMs = 10_000): Promise<number> {
  if (pidInNetns(process.pid, ns))
    throw internal(`cannot fence namespace ${ns}: the operator itself runs in it`);
  // a process is its pid and start time (a pid may be reused once its holder is gone)
  const killed = new Set<string>();
  const killedPids: number[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const fresh = netnsPids(ns)
      .map((pid) => ({ pid, id: `${pid}@${procStartTime(pid)}` }))
      .filter((p) => !killed.has(p.id));
    if (fresh.length === 0) {
      await awaitExiting(killedPids, deadline);
      return killed.size;
    }
    for (const { pid, id } of fresh) {
      killedPids.push(pid);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      killed.add(id);
    }
    if (Date.now() > deadline) {
      throw transient(
        `cannot fence namespace ${ns}: processes still appearing after ${timeoutMs} ms ` +
          `(${fresh.map((p) => p.pid).join(' ')})`,
      );
    }
  }
}

/**
 * Wait until each of `pids` is exiting (the kernel has begun do_exit: PF_EXITING) or gone. A
 * SIGKILL is only pending until its target is next scheduled: a process running on another CPU
 * at that moment carries on for as long as the interrupt that stops it takes to land. Once it
 * is exiting, it runs no code of its own again. (Its teardown, which takes longer, is not
 * waited for.)
 */
export async function awaitExiting(pids: readonly number[], deadline = Date.now() + 10_000): Promise<void> {
  let left = [...pids];
  for (;;) {
    left = left.filter((pid) => !exitingOrGone(pid));
    if (left.length === 0) return;
    if (Date.now() > deadline)
      throw transient(`${left.length} killed process(es) not exiting yet (${left.join(' ')})`);
    await sleep(1);
  }
}

function exitingOrGone(pid: number): boolean {
  const fields = procStatFields(pid);
  if (!fields) return true;
  const PF_EXITING = 0x4;
  return fields[0] === 'Z' || fields[0] === 'X' || (Number(fields[6]) & PF_EXITING) !== 0;
}

/** /proc/<pid>/stat from field 3 (state) on, or null when the process is gone. The command name
 *  before it is in parentheses and may hold spaces. */
function procStatFields(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** Wait until no process is left in namespace ns (killed ones included: until the kernel has
 *  torn them down, they may hold the machine's ports and shared memory). */
export async function awaitNetnsEmpty(ns: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = netnsPids(ns);
    if (pids.length === 0) return;
    if (Date.now() > deadline)
      throw transient(
        `namespace ${ns}: ${pids.length} process(es) still there after ${timeoutMs} ms (${pids.join(' ')})`,
      );
    await sleep(5);
  }
}

// ---------------------------------------------------------------- machine cgroups

let cgroup2RootCache: string | null | undefined;

/** Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a
 *  hybrid host), or null without one. */
export function cgroup2Root(): string | null {
  // read once: every fence asks, and the host's cgroup mounts do not move under a running pgop
  if (cgroup2RootCache !== undefined) return cgroup2RootCache;
  cgroup2RootCache = null;
  try {
    for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
      const f = line.split(' ');
      if (f[2] === 'cgroup2' && f[1]) return (cgroup2RootCache = f[1]);
    }
  } catch {
    /* no /proc: no cgroups either */
  }
  return cgroup2RootCache;
}

/** The cgroup (v2) a lab machine's processes run in, or null where the host has none. Every
 *  process of the machine descends from its sshd, which starts in it: killing the cgroup kills
 *  the machine at once, forks in flight included, without scanning /proc (40 ms on a busy host). */
export function machineCgroup(ns: string): string | null {
  const root = cgroup2Root();
  return root === null ? null : `${root}/pgop-lab/${ns}`;
}

/** The processes of cgroup dir (its cgroup.procs), none when it is gone. */
export function cgroupPids(dir: string): number[] {
  try {
    return readFileSync(`${dir}/cgroup.procs`, 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** True when process pid runs in cgroup dir (a path under the v2 root). */
export function pidInCgroup(pid: number, dir: string): boolean {
  const root = cgroup2Root();
  if (root === null || !dir.startsWith(root)) return false;
  try {
    const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('0::'));
    return line?.slice(3) === dir.slice(root.length);
  } catch {
    return false;
  }
}

/** A process's start time (clock ticks since boot, /proc/<pid>/stat field 22), or -1. */
function procStartTime(pid: number): number {
  const fields = procStatFields(pid);
  return fields ? Number(fields[19]) : -1;
}

/** Create the hub namespace (lo up, no default route) for a prefix if it is missing. */
export async function ensureHub(prefix: string = labPrefix()): Promise<string> {
  const hub = hubNs(prefix);
  await ensureNetns(hub);
  return hub;
}

/** True when this process runs in the hub's network namespace. */
export function inHub(prefix: string = labPrefix()): boolean {
  const hub = nsId(netnsPath(hubNs(prefix)));
  return hub !== null && nsId('/proc/self/ns/net') === hub;
}

/** Run this same program again inside the hub namespace (creating the hub first) with stdio
 *  inherited, forward SIGTERM/SIGINT to it, and exit with its exit code. The CLI calls it for lab
 *  clusters so that the operator connects to lab hosts directly and never from the root
 *  namespace. Never returns. */
export async function reexecInHub(
  argv: readonly string[] = process.argv.slice(1),
  handOver?: { fds: number[]; spawned(): void },
): Promise<never> {
  const prefix = labPrefix();
  if (process.env.PGOP_IN_HUB === prefix) {
    throw internal(`cannot enter hub namespace ${hubNs(prefix)}: re-executed already but not inside it`);
  }
  const hub = await ensureHub(prefix);
  const child = spawn(
    NSENTER,
    [`--net=${netnsPath(hub)}`, '--', process.execPath, ...process.execArgv, ...argv],
    {
      // handed-over fds (serve's HTTP socket, bound in this namespace) become fd 3, 4, ...
      stdio: ['inherit', 'inherit', 'inherit', ...(handOver?.fds ?? [])],
      env: { ...process.env, PGOP_IN_HUB: prefix },
    },
  );
  handOver?.spawned();
  const forward = (sig: NodeJS.Signals) => () => {
    try {
      child.kill(sig);
    } catch {
      /* gone */
    }
  };
  const onTerm = forward('SIGTERM');
  const onInt = forward('SIGINT');
  process.on('SIGTERM', onTerm);
  process.on('SIGINT', onInt);
  return new Promise<never>((_, reject) => {
    child.on('error', (err) =>
      reject(new PgopError('terminal', `cannot enter hub namespace ${hub}: ${err.message}`, { cause: err })),
    );
    child.on('exit', (code, signal) => {
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      if (signal) {
        const n = ({ SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[signal] ?? 1;
        process.exit(128 + n);
      }
      process.exit(code ?? 1);
    });
  });
}

/** Everything a lab of `prefix` left on this machine: its namespaces (the processes in them
 *  ended by PID first) and its machines' cgroups. Returns the namespaces removed. Only the names
 *  `<prefix>-*`: another lab's (tests, benches) have prefixes of their own. */
export async function sweepLab(prefix: string): Promise<string[]> {
  const removed: string[] = [];
  for (const ns of listNetns().filter((n) => n.startsWith(`${prefix}-`))) {
    await killNetnsProcesses(ns).catch(() => undefined);
    await awaitNetnsEmpty(ns).catch(() => undefined);
    await deleteNetns(ns)
      .then(() => removed.push(ns))
      .catch(() => undefined);
  }
  const root = cgroup2Root();
  let cgroups: string[] = [];
  try {
    cgroups = root ? readdirSync(`${root}/pgop-lab`).filter((n) => n.startsWith(`${prefix}-`)) : [];
  } catch {
    // no lab cgroup was ever made
  }
  for (const d of cgroups) {
    try {
      rmdirSync(`${root}/pgop-lab/${d}`);
    } catch {
      // still in use, or gone
    }
  }
  return removed;
}
