// The lab provider and the SSH shell against real namespaces, veths, a bridge and sshd.
//
// How this runs: `bash scripts/test-integration.sh test/integration/lab-provider.test.ts`.
// The wrapper creates a hub namespace for a unique prefix (PGOP_LAB_PREFIX=pgt<random>) and runs
// vitest itself INSIDE that hub, so every connection the tests make comes from the hub (network
// rule: never connect from the root namespace to a lab address); it removes every <prefix>-*
// namespace, the processes in them and the state dir on exit, even when a test fails.
// Run any other way (not root, or not inside the hub) the suite is skipped.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PgopError } from '../../src/errors.js';
import {
  awaitNetnsEmpty,
  hubNs,
  inHub,
  listNetns,
  machineCgroup,
  netnsPids,
  pidInCgroup,
  pidInNetns,
  procComm,
} from '../../src/drivers/lab/netns.js';
import { createLabProvider, type LabTiming } from '../../src/drivers/lab/provider.js';
import { SshShell, createMemoryPins, fingerprint, type ShellLogEntry } from '../../src/drivers/ssh/shell.js';
import { labSpec } from '../helpers/lab-spec.js';
import { generateKeyPair } from '../../src/drivers/ssh/keys.js';
import { eventually } from '../helpers/eventually.js';

const prefix = process.env.PGOP_LAB_PREFIX;
const isRoot = process.getuid?.() === 0;
const ready = isRoot && prefix !== undefined && /^pgt/.test(prefix) && inHub(prefix);

const PG_BIN = '/usr/lib/postgresql/15/bin';

describe.skipIf(!ready)(
  'lab provider + ssh shell (real namespaces; run via scripts/test-integration.sh)',
  () => {
    const spec = labSpec({ name: 'lt', network: '10.78.0.0/24', nodes: 2, pgpool: true });
    const [a, b] = spec.nodes as [(typeof spec.nodes)[0], (typeof spec.nodes)[0]];
    const timings: LabTiming[] = [];
    const pins = createMemoryPins();
    const provider = createLabProvider({ onTiming: (t) => timings.push(t), hostKeys: pins });
    const logs: ShellLogEntry[] = [];
    const shell = new SshShell(pins, { log: (e) => logs.push(e) });
    const refA = () => provider.hostRef(spec, a);
    const refB = () => provider.hostRef(spec, b);
    const labNamespaces = () => listNetns().filter((n) => n.startsWith(`${prefix}-lt-`));
    const report: Record<string, number | number[]> = {};

    beforeAll(() => {
      // A leftover of an earlier run with the same (random) prefix would be a bug of the wrapper.
      expect(labNamespaces()).toEqual([]);
    });

    afterAll(async () => {
      await shell.close();
      try {
        await provider.deleteClusterResources(spec);
      } catch {
        /* the wrapper cleans up too */
      }
      console.log('lab measurements (ms):', JSON.stringify(report));
    });

    it('observes missing machines before anything exists', async () => {
      expect(await provider.observeMachines(spec)).toEqual({
        pg1: expect.objectContaining({ state: 'missing' }),
        pg2: expect.objectContaining({ state: 'missing' }),
      });
    });

    it('ensureMachine creates both nodes and the pool host, and is idempotent', async () => {
      await provider.ensureMachine(spec, a);
      await provider.ensureMachine(spec, b);
      report.ensureMachineFirstMs = timings.filter((t) => t.op === 'ensureMachine').map((t) => t.ms);
      report.sshdStartMs = timings.filter((t) => t.op === 'startSshd').map((t) => t.ms);

      const obs = await provider.observeMachines(spec);
      expect(obs.pg1?.state).toBe('running');
      expect(obs.pg2?.state).toBe('running');
      expect((await provider.observePoolHost(spec)).state).toBe('running');

      const hA = provider.describeHost(spec, a);
      const pidBefore = readFileSync(join(hA.dir, 'sshd.pid'), 'utf8');
      const n = timings.length;
      await provider.ensureMachine(spec, a);
      await provider.ensureMachine(spec, a);
      expect(readFileSync(join(hA.dir, 'sshd.pid'), 'utf8')).toBe(pidBefore);
      expect(timings.slice(n).filter((t) => t.op === 'startSshd')).toEqual([]);
      report.ensureMachineIdempotentMs = timings
        .slice(n)
        .filter((t) => t.op === 'ensureMachine')
        .map((t) => t.ms);

      // Topology: hub bridge with the first host address, eth0 with the node address.
      const hubAddr = execFileSync('ip', ['-n', hA.hub, '-4', '-o', 'addr', 'show', 'dev', hA.bridge], {
        encoding: 'utf8',
      });
      expect(hubAddr).toContain('10.78.0.1/24');
      const nodeAddr = execFileSync('ip', ['-n', hA.ns, '-4', '-o', 'addr', 'show', 'dev', 'eth0'], {
        encoding: 'utf8',
      });
      expect(nodeAddr).toContain('10.78.0.11/24');
      expect(hA.bridge.length).toBeLessThanOrEqual(15);
      expect(hA.hubVeth.length).toBeLessThanOrEqual(15);
      expect(labNamespaces().sort()).toEqual([`${prefix}-lt-pg1`, `${prefix}-lt-pg2`, `${prefix}-lt-pool`]);
      // Key files: operator key pair once per cluster, 0600.
      expect(statSync(hA.keyPath).mode & 0o777).toBe(0o600);
      for (const sub of ['u01', 'u02', 'log', 'run', 'pgrun', 'ssh'])
        expect(existsSync(join(hA.dir, sub))).toBe(true);
      expect(statSync(join(hA.dir, 'u01')).mode & 0o777).toBe(0o700);
      expect(statSync(join(hA.dir, 'u02', 'archive')).mode & 0o777).toBe(0o700);
    });

    it(
      'listMachines reports every node host with the address it was made at (not the pool host), also ' +
        'one made before addresses were recorded',
      async () => {
        const withoutB = { ...spec, nodes: [a] }; // pg2 left the spec
        const listed = await provider.listMachines(withoutB);
        expect(Object.keys(listed).sort()).toEqual(['pg1', 'pg2']);
        expect(listed.pg2).toMatchObject({ state: 'running', address: b.address });
        const hB = provider.describeHost(spec, b);
        rmSync(join(hB.dir, 'address'));
        expect((await provider.listMachines(withoutB)).pg2).toMatchObject({
          state: 'running',
          address: b.address,
        });
        await provider.ensureMachine(spec, b); // records it again
        expect(readFileSync(join(hB.dir, 'address'), 'utf8')).toBe(`${b.address}\n`);
      },
    );

    it('no lab namespace has a default route (the hub neither)', async () => {
      for (const ns of [hubNs(prefix), ...labNamespaces()]) {
        for (const fam of ['-4', '-6']) {
          const out = execFileSync('ip', ['-n', ns, fam, 'route', 'show', 'default'], { encoding: 'utf8' });
          expect(out.trim(), `${ns} ${fam}`).toBe('');
        }
      }
      // And this very process (vitest) has none either: it lives in the hub.
      expect(execFileSync('ip', ['route', 'show', 'default'], { encoding: 'utf8' }).trim()).toBe('');
    });

    it(
      'ssh: runs commands as root and as another user, ' + 'passes stdin and env, never logs env values',
      async () => {
        const t0 = performance.now();
        const r = await shell.exec(refA(), ['id', '-u']);
        report.sshFirstExecMs = Math.round(performance.now() - t0);
        report.sshConnectMs = shell.connectMs.get(refA().id)!;
        expect(r).toEqual({ code: 0, stdout: '0\n', stderr: '' });

        const t1 = performance.now();
        await shell.exec(refA(), ['true']);
        report.sshCachedExecMs = Math.round(performance.now() - t1);

        expect((await shell.exec(refA(), ['id', '-un'], { user: 'postgres' })).stdout).toBe('postgres\n');
        expect((await shell.exec(refA(), ['cat'], { input: 'from stdin\n' })).stdout).toBe('from stdin\n');
        const secret = 's3cr3t-$(touch /tmp/pwned)-\'"';
        const env = await shell.exec(refA(), ['printenv', 'PGPASSWORD'], {
          env: { PGPASSWORD: secret },
          user: 'postgres',
        });
        expect(env.stdout).toBe(`${secret}\n`);
        const failing = await shell.exec(refA(), ['sh', '-c', 'echo oops >&2; exit 7']);
        expect(failing).toEqual({ code: 7, stdout: '', stderr: 'oops\n' });
        expect(JSON.stringify(logs)).not.toContain('s3cr3t');
        expect(logs.some((l) => l.env?.PGPASSWORD === '<redacted>')).toBe(true);

        // The pool host answers too.
        expect((await shell.exec(provider.hostRef(spec, 'pool'), ['hostname', '-I'])).stdout).toContain(
          '10.78.0.10',
        );
        // sshd accepted no environment: LANG etc. from the client never reach the node.
        expect((await shell.exec(refA(), ['sh', '-c', 'echo "${PGOP_IN_HUB-unset}"'])).stdout).toBe(
          'unset\n',
        );
      },
    );

    it('the pin is the host key pgop made for the node (pinned before its sshd started)', () => {
      const hA = provider.describeHost(spec, a);
      const pubB64 = readFileSync(hA.hostKeyPub, 'utf8').split(' ')[1];
      expect(pins.getPinned(hA.id)).toEqual({ algo: 'ssh-ed25519', keyB64: pubB64 });
      const fp = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', hA.hostKeyPub], {
        encoding: 'utf8',
      }).split(' ')[1];
      expect(fingerprint(pubB64!)).toBe(fp);
    });

    it(
      'writeFile/readFile round-trip a hostile file ' + 'name and content without executing anything',
      async () => {
        // No '/' inside the name (it would be a directory); commands that would create PWNED* in the
        // remote shell's working directory (/root) or in /tmp if anything were evaluated.
        const name =
          `/tmp/we ird 'q' "dq" $(touch PWNED1) \`touch PWNED2\`; ` + `touch PWNED3; *.txt \\ $HOME ~ \u00e9`;
        const content = `line1\n$(touch PWNED4)\n'quotes' "dq" \\ \u00e9\u2603\n`;
        expect(await shell.writeFile(refA(), name, content)).toBe(true);
        expect(await shell.readFile(refA(), name)).toBe(content);
        expect(await shell.writeFile(refA(), name, content)).toBe(false);
        const pwned = await shell.exec(refA(), [
          'sh',
          '-c',
          'ls -1 /root /tmp / | grep -x "PWNED[0-9]" || true',
        ]);
        expect(pwned.stdout).toBe('');
        expect(await shell.readFile(refA(), '/tmp/does not exist')).toBeNull();
        const ls = await shell.exec(refA(), ['ls', '-1', '/tmp']);
        expect(ls.stdout.split('\n').filter((l) => l.startsWith('we ird'))).toHaveLength(1);
        await shell.exec(refA(), ['rm', '-f', '--', name]);
      },
    );

    it('writeFile sets mode and owner atomically and reports whether anything changed', async () => {
      const p = '/u01/pgop-test.conf';
      expect(await shell.writeFile(refA(), p, 'a = 1\n', { mode: 0o600, owner: 'postgres:postgres' })).toBe(
        true,
      );
      expect(await shell.writeFile(refA(), p, 'a = 1\n', { mode: 0o600, owner: 'postgres:postgres' })).toBe(
        false,
      );
      expect((await shell.exec(refA(), ['stat', '-c', '%a %U:%G', p])).stdout).toBe(
        '600 postgres:postgres\n',
      );
      expect(await shell.writeFile(refA(), p, 'a = 1\n', { mode: 0o640, owner: 'postgres:postgres' })).toBe(
        true,
      );
      expect(await shell.writeFile(refA(), p, 'a = 2\n', { mode: 0o640, owner: 'postgres:postgres' })).toBe(
        true,
      );
      expect(await shell.readFile(refA(), p)).toBe('a = 2\n');
      // no temp file left
      expect((await shell.exec(refA(), ['ls', '-a', '/u01'])).stdout).toBe('.\n..\npgop-test.conf\n');
      await expect(shell.writeFile(refA(), '/no/such/dir/f', 'x')).rejects.toMatchObject({
        kind: 'terminal',
      });
      await shell.exec(refA(), ['rm', '-f', p]);
    });

    it(
      'each node sees its own private /u01, /u02, /var/log/postgres, /var/run/postgresql, /root, /tmp, ' +
        '/opt/postgres, /var/lib/postgresql, /etc/pgpool2',
      async () => {
        await shell.writeFile(refA(), '/u01/x', 'node A\n');
        expect(await shell.readFile(refA(), '/u01/x')).toBe('node A\n');
        expect(await shell.readFile(refB(), '/u01/x')).toBeNull();
        // It is the host dir of A, and not the machine's own /u01.
        const hA = provider.describeHost(spec, a);
        expect(readFileSync(join(hA.dir, 'u01', 'x'), 'utf8')).toBe('node A\n');
        expect(existsSync('/u01/x')).toBe(false);
        const paths = [
          '/u01',
          '/u02',
          '/u02/archive',
          '/var/log/postgres',
          '/var/run/postgresql',
          '/run/sshd',
          '/root',
          '/tmp',
          '/opt/postgres',
          '/var/lib/postgresql',
          '/etc/pgpool2',
        ];
        const st = await shell.exec(refB(), ['stat', '-c', '%n %U %a', ...paths]);
        expect(st.stdout.trim().split('\n')).toEqual([
          '/u01 postgres 700',
          '/u02 postgres 755',
          '/u02/archive postgres 700',
          '/var/log/postgres postgres 755',
          '/var/run/postgresql postgres 2775',
          '/run/sshd root 755',
          '/root root 700',
          '/tmp root 1777',
          '/opt/postgres postgres 755',
          '/var/lib/postgresql postgres 755',
          '/etc/pgpool2 root 755',
        ]);
        // Every one of them is a mount of its own on the node, none on the machine.
        const mounts = (await shell.exec(refB(), ['cat', '/proc/self/mountinfo'])).stdout
          .split('\n')
          .map((l) => l.split(' ')[4]);
        for (const p of [
          '/u01',
          '/u02',
          '/var/log/postgres',
          '/run',
          '/run/postgresql',
          '/root',
          '/tmp',
          '/opt/postgres',
          '/var/lib/postgresql',
          '/etc/pgpool2',
        ]) {
          expect(mounts, p).toContain(p);
        }
        const own = readFileSync('/proc/self/mountinfo', 'utf8')
          .split('\n')
          .map((l) => l.split(' ')[4]);
        for (const p of ['/u01', '/u02', '/var/log/postgres', '/opt/postgres', '/etc/pgpool2'])
          expect(own, p).not.toContain(p);
        await shell.writeFile(refA(), '/tmp/only-on-a', 'a');
        expect(await shell.readFile(refB(), '/tmp/only-on-a')).toBeNull();
        expect(existsSync('/tmp/only-on-a')).toBe(false);
        await shell.exec(refA(), ['rm', '-f', '/u01/x']);
      },
    );

    it('a command that outlives its timeout is killed, on the node too', async () => {
      const t0 = performance.now();
      const err = await shell.exec(refA(), ['sleep', '37'], { timeoutMs: 700 }).catch((e: unknown) => e);
      const ms = performance.now() - t0;
      expect(err).toBeInstanceOf(PgopError);
      expect(err).toMatchObject({
        kind: 'transient',
        message: `cannot run sleep on ${refA().id}: timed out after 700 ms`,
      });
      report.timeoutKillMs = Math.round(ms); // reported, not asserted: the message names the timeout
      // The remote sleep dies within the remote timeout; the connection stays usable.
      const hA = provider.describeHost(spec, a);
      const deadline = Date.now() + 3000;
      const sleeping = () => netnsPids(hA.ns).filter((p) => procComm(p) === 'sleep');
      while (sleeping().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(sleeping()).toEqual([]);
      expect((await shell.exec(refA(), ['echo', 'ok'])).stdout).toBe('ok\n');
    });

    it('kill: SIGKILLs the postmaster only; its children go with it, sshd stays', async () => {
      const hA = provider.describeHost(spec, a);
      const init = await shell.exec(
        refA(),
        [`${PG_BIN}/initdb`, '-D', '/u01/pg15/data', '-U', 'postgres', '-A', 'trust', '--no-sync'],
        {
          user: 'postgres',
          timeoutMs: 60_000,
        },
      );
      expect(init.code, init.stderr).toBe(0);
      const start = await shell.exec(
        refA(),
        [
          `${PG_BIN}/pg_ctl`,
          '-D',
          '/u01/pg15/data',
          '-l',
          '/var/log/postgres/postgresql.log',
          '-w',
          '-o',
          "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql",
          'start',
        ],
        { user: 'postgres', timeoutMs: 30_000 },
      );
      expect(start.code, start.stdout + start.stderr).toBe(0);
      // The socket is in the node's private /var/run/postgresql, i.e. <host>/pgrun.
      expect(existsSync(join(hA.dir, 'pgrun', '.s.PGSQL.5432'))).toBe(true);
      expect(existsSync(join(hA.dir, 'log', 'postgresql.log'))).toBe(true);
      const pgPids = () => netnsPids(hA.ns).filter((p) => procComm(p) === 'postgres');
      expect(pgPids().length).toBeGreaterThan(3);
      const sshdPid = Number(readFileSync(join(hA.dir, 'sshd.pid'), 'utf8'));

      const t0 = performance.now();
      await provider.kill(spec, a);
      report.killMs = Math.round(performance.now() - t0);
      expect(pgPids()).toEqual([]);
      expect(pidInNetns(sshdPid, hA.ns)).toBe(true);
      expect((await provider.observeMachines(spec)).pg1?.state).toBe('running');
      // The stale postmaster.pid stays; a second kill is a no-op.
      expect(existsSync(join(hA.dir, 'u01', 'pg15', 'data', 'postmaster.pid'))).toBe(true);
      await provider.kill(spec, a);
    });

    it('partition: connects fail within the connect timeout (no hang); heal restores', async () => {
      const fresh = new SshShell(pins, { connectTimeoutMs: 1000 });
      try {
        await provider.partition(spec, a);
        const t0 = performance.now();
        const err = await fresh.exec(refA(), ['true']).catch((e: unknown) => e);
        report.partitionConnectFailMs = Math.round(performance.now() - t0);
        expect(err).toMatchObject({ kind: 'transient' });
        expect((err as Error).message).toMatch(
          /^cannot connect to lt\/pg1 \(10\.78\.0\.11:22\): timed out after 1000 ms/,
        );
        // A command on the cached (now silent) connection ends at its timeout.
        await expect(shell.exec(refA(), ['true'], { timeoutMs: 800 })).rejects.toMatchObject({
          kind: 'transient',
        });
        // The other node is unaffected.
        expect((await fresh.exec(refB(), ['echo', 'b'])).stdout).toBe('b\n');
        // The machine itself still runs: a partition is not a stop.
        expect((await provider.observeMachines(spec)).pg1?.state).toBe('running');
      } finally {
        await provider.heal(spec, a);
      }
      // The link is back; a SYN sent while the bridge port comes up can be lost and a connect with a
      // 1 s budget then times out once: heal restores within a few attempts, not at the first one.
      expect(
        (
          await eventually(() => fresh.exec(refA(), ['echo', 'back'], { timeoutMs: 10_000 }), 10_000, {
            stepMs: 0,
            retryIf: (e) => (e as { kind?: string }).kind === 'transient',
          })
        ).stdout,
      ).toBe('back\n');
      expect((await shell.exec(refA(), ['echo', 'back'], { timeoutMs: 15_000 })).stdout).toBe('back\n');
      await fresh.close();
    });

    it(
      'fence kills every process of the node (sshd too); ' + 'observe says stopped; connects are refused',
      async () => {
        const hB = provider.describeHost(spec, b);
        // Something else running on the node besides sshd.
        await shell.exec(refB(), ['sh', '-c', 'nohup sleep 300 >/dev/null 2>&1 & echo started']);
        expect(netnsPids(hB.ns).length).toBeGreaterThanOrEqual(3);
        const sshdPid = Number(readFileSync(join(hB.dir, 'sshd.pid'), 'utf8'));
        // the machine runs in a cgroup of its own (the fence kills that) where the host has cgroup v2
        const cg = machineCgroup(hB.ns);
        if (cg) expect(pidInCgroup(sshdPid, cg)).toBe(true);
        // A command in flight when the node is fenced: its outcome is unknown, so it throws.
        const inFlight = shell.exec(refB(), ['sleep', '30']).catch((e: unknown) => e);
        await new Promise((r) => setTimeout(r, 300));
        const t0 = performance.now();
        await provider.fenceMachine(spec, b);
        report.fenceMs = Math.round(performance.now() - t0);
        // The fence does not wait for the kernel to tear the killed processes down; what it
        // guarantees is that each one left is killed or exiting: none runs code of its own.
        expect(netnsPids(hB.ns).filter((p) => !killedOrExiting(p))).toEqual([]);
        await awaitNetnsEmpty(hB.ns, 5000);
        expect(pidInNetns(sshdPid, hB.ns)).toBe(false);
        expect(await inFlight).toMatchObject({
          kind: 'transient',
          message: 'cannot run sleep on lt/pg2: connection lost before the command finished',
        });
        expect((await provider.observeMachines(spec)).pg2).toMatchObject({ state: 'stopped' });
        // Namespace, veth and data stay.
        expect(labNamespaces()).toContain(hB.ns);
        expect(existsSync(join(hB.dir, 'u01'))).toBe(true);
        const fresh = new SshShell(pins);
        // refused at once (not a timeout): the message says ECONNREFUSED
        await expect(fresh.exec(refB(), ['true'])).rejects.toMatchObject({
          kind: 'transient',
          message: expect.stringContaining('ECONNREFUSED'),
        });
        await fresh.close();
        await provider.fenceMachine(spec, b); // idempotent
        if (cg && existsSync(join(cg, 'cgroup.kill'))) {
          // Fences again, at once: they kill the machine's cgroup only, not a process that merely
          // entered its namespace (such as another fence's `ip -n`, which then failed).
          const visitor = spawn('ip', ['netns', 'exec', hB.ns, 'sleep', '60'], { stdio: 'ignore' });
          const visitorPid = visitor.pid ?? -1;
          const exited = new Promise((r) => visitor.once('exit', r));
          try {
            await eventually(async () => expect(pidInNetns(visitorPid, hB.ns)).toBe(true), 5000);
            await Promise.all([provider.fenceMachine(spec, b), provider.fenceMachine(spec, b)]);
            expect(pidInNetns(visitorPid, hB.ns) && !killedOrExiting(visitorPid)).toBe(true);
          } finally {
            visitor.kill('SIGKILL');
            await exited;
          }
        }
      },
    );

    it('start brings sshd back (postgres stays down); the cached connection is replaced', async () => {
      const t0 = performance.now();
      await provider.start(spec, b);
      report.startMs = Math.round(performance.now() - t0);
      expect((await provider.observeMachines(spec)).pg2?.state).toBe('running');
      expect((await shell.exec(refB(), ['echo', 'again'])).stdout).toBe('again\n');
      const hB = provider.describeHost(spec, b);
      expect(
        netnsPids(hB.ns)
          .map(procComm)
          .filter((c) => c !== 'sshd'),
      ).toEqual([]);
    });

    it(
      'refuses a replaced host key with a terminal error naming both fingerprints; nothing unpinned is ' +
        'trusted',
      async () => {
        const hB = provider.describeHost(spec, b);
        const oldPin = pins.getPinned(hB.id)!;
        expect(oldPin).toBeDefined();
        await provider.stop(spec, b);
        // someone else's key in its place (the files exist, so pgop neither makes nor pins a new one)
        const foreign = generateKeyPair('not-pgop');
        writeFileSync(join(hB.dir, 'ssh', 'ssh_host_ed25519_key'), foreign.privateKey, { mode: 0o600 });
        writeFileSync(join(hB.dir, 'ssh', 'ssh_host_ed25519_key.pub'), `${foreign.publicLine}\n`);
        await provider.start(spec, b);
        expect(readFileSync(hB.hostKeyPub, 'utf8').split(' ')[1]).toBe(foreign.keyB64);

        const err = await shell.exec(refB(), ['true']).catch((e: unknown) => e);
        expect(err).toMatchObject({ kind: 'terminal' });
        expect((err as Error).message).toContain(
          `it presented ${fingerprint(foreign.keyB64)}, ` +
            `but the key pinned for it is ${fingerprint(oldPin.keyB64)}`,
        );
        expect(pins.getPinned(hB.id)).toEqual(oldPin); // the pin is not overwritten
        // and with no pin at all nothing is trusted either (no TOFU)
        const other = new SshShell(createMemoryPins());
        const err2 = await other.exec(refB(), ['id', '-u']).catch((e: unknown) => e);
        expect((err2 as Error).message).toMatch(/no key is pinned for it/);
        await other.close();
      },
    );

    it(
      'delete leaves no namespace, no process and no directory; the hub stays while this process lives ' +
        'in it',
      async () => {
        const hosts = [
          provider.describeHost(spec, a),
          provider.describeHost(spec, b),
          provider.describeHost(spec, 'pool'),
        ];
        const pids = hosts.flatMap((h) => netnsPids(h.ns));
        expect(pids.length).toBeGreaterThanOrEqual(3);
        await shell.close();
        await provider.deleteMachine(spec, a);
        await provider.deleteMachine(spec, b);
        expect(existsSync(hosts[0]!.dir)).toBe(false);
        await provider.deleteClusterResources(spec);
        await provider.deleteClusterResources(spec); // idempotent
        await provider.fenceMachine(spec, a); // fencing a missing machine succeeds
        expect(labNamespaces()).toEqual([]);
        // and no machine cgroup (the pool host's was left behind once: a zombie held it at rmdir)
        for (const h of hosts)
          expect(existsSync(machineCgroup(h.ns) ?? '/nonexistent'), `${h.ns}'s cgroup`).toBe(false);
        for (const pid of pids)
          expect(existsSync(`/proc/${pid}/ns/net`) && procComm(pid) === 'sshd').toBe(false);
        expect(existsSync(join(process.env.PGOP_LAB_STATE ?? '/var/lib/pgop/lab', 'lt'))).toBe(false);
        expect(
          execFileSync('ip', ['-o', 'link', 'show', 'type', 'bridge'], { encoding: 'utf8' }).trim(),
        ).toBe('');
        expect(inHub(prefix)).toBe(true);
        expect((await provider.observeMachines(spec)).pg1?.state).toBe('missing');
        expect(readdirSync(process.env.PGOP_LAB_STATE ?? '/nonexistent')).toEqual([]);
      },
    );
  },
);

/** A SIGKILL is pending for the process, or it is exiting already (PF_EXITING), or it is gone. */
function killedOrExiting(pid: number): boolean {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const pending = (field: string) => BigInt(`0x${/^${field}:\s*([0-9a-f]+)/m.exec(status)?.[1] ?? '0'}`);
    const SIGKILL_BIT = 1n << 8n;
    if ((pending('SigPnd') | pending('ShdPnd')) & SIGKILL_BIT) return true;
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const flags = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[6]);
    const PF_EXITING = 0x4;
    return (flags & PF_EXITING) !== 0;
  } catch {
    return true;
  }
}
