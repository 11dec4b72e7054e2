// A private libvirtd for a test file (scripts/libvirtd-test.sh does the work): its own network
// namespace without a default route and its own libvirt directories, reached through a socket
// in a temp dir. stop() kills every process of the namespace by PID and removes everything.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const SCRIPT = resolve(import.meta.dirname, '../../../scripts/libvirtd-test.sh');

export interface PrivateLibvirtd {
  dir: string;
  netns: string;
  pid: number;
  socket: string;
  testUri: string;
  qemuUri: string;
  /** Keep one connection to the test driver open (its state is freed on the last close):
   *  a `virsh event --loop` child owned by the test. */
  keepTestDriverAlive(): Promise<void>;
  /** Restart libvirtd alone (virtlogd, guests, dnsmasq stay), as a package upgrade would. The
   *  test driver's state is gone afterwards. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

function parseAssignments(out: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^([A-Z_]+)=(?:'(.*)'|(.*))$/.exec(line.trim());
    if (m) env[m[1]!] = (m[2] ?? m[3] ?? '').replace(/'\\''/g, "'");
  }
  return env;
}

export const isRoot = () => process.getuid?.() === 0;

/** `virsh -c uri <cmd> FILE` with xml in a temp file (virsh cannot read a pipe's /dev/stdin). */
export async function virshXml(uri: string, cmd: string, xml: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pgop-xml-'));
  try {
    await writeFile(join(dir, 'doc.xml'), xml);
    return (await execFileP('virsh', ['-q', '-c', uri, cmd, join(dir, 'doc.xml')], { timeout: 30_000 }))
      .stdout;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function startPrivateLibvirtd(opts: { qemuUser?: string } = {}): Promise<PrivateLibvirtd> {
  const parent = await mkdtemp(join(tmpdir(), 'pgop-libvirtd-'));
  const dir = join(parent, 'd');
  const env = { ...process.env, ...(opts.qemuUser ? { LIBVIRTD_QEMU_USER: opts.qemuUser } : {}) };
  const { stdout } = await execFileP('bash', [SCRIPT, 'start', dir], { timeout: 60_000, env });
  const vars = parseAssignments(stdout);
  let keeper: ChildProcess | null = null;
  const d: PrivateLibvirtd = {
    dir,
    netns: vars.LIBVIRTD_NETNS!,
    pid: Number(vars.LIBVIRTD_PID),
    socket: vars.LIBVIRTD_SOCKET!,
    testUri: vars.LIBVIRT_TEST_URI!,
    qemuUri: vars.LIBVIRT_QEMU_URI!,
    async keepTestDriverAlive() {
      if (keeper) return;
      keeper = spawn('virsh', ['-q', '-c', d.testUri, 'event', '--all', '--loop'], { stdio: 'ignore' });
      // connected once a command on a second connection sees the same driver state
      const marker = `pgop-keeper-${process.pid}`;
      const deadline = Date.now() + 20_000;
      for (;;) {
        await virshXml(d.testUri, 'net-define', `<network><name>${marker}</name></network>`).catch(
          () => undefined,
        );
        const r = await execFileP('virsh', ['-q', '-c', d.testUri, 'net-list', '--all', '--name'], {
          timeout: 10_000,
        }).catch(() => ({ stdout: '' }));
        if (r.stdout.split('\n').includes(marker)) {
          await execFileP('virsh', ['-q', '-c', d.testUri, 'net-undefine', marker], { timeout: 10_000 });
          return;
        }
        if (Date.now() > deadline)
          throw new Error('the keeper connection to the test driver did not come up');
        await new Promise((r2) => setTimeout(r2, 100));
      }
    },
    async restart() {
      const { stdout: out } = await execFileP('bash', [SCRIPT, 'restart', dir], { timeout: 60_000 });
      d.pid = Number(parseAssignments(out).LIBVIRTD_PID);
    },
    async stop() {
      if (keeper && keeper.exitCode === null) {
        const k = keeper;
        await new Promise<void>((res) => {
          k.once('exit', () => res());
          k.kill('SIGKILL');
        });
      }
      await execFileP('bash', [SCRIPT, 'stop', dir], { timeout: 60_000 });
      await execFileP('rm', ['-rf', '--', parent]);
    },
  };
  return d;
}

/** A contract file's teardown: the provider's connections, the daemon, the state dir (each if made). */
export async function tearDownContract(
  provider: { close(): Promise<void> } | undefined,
  daemon: PrivateLibvirtd | undefined,
  state: string | undefined,
): Promise<void> {
  await provider?.close();
  await daemon?.stop();
  if (state) await rm(state, { recursive: true, force: true });
}
