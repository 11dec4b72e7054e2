// The libvirt provider against a real libvirtd (libvirt's test driver through the daemon): pool,
// network, volumes and domains are made, observed, fenced and deleted by libvirt itself, and
// lifecycle events come from the supervised `virsh event` child. The daemon is private to this
// file (test/libvirt/helpers/libvirtd.ts: own network + mount namespace, killed by PID at the
// end). The test driver keeps no volume content and runs no guests: booting real VMs is the
// end-to-end test's job. Root only (namespaces).

import { execFile } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LibvirtProvider } from '../../src/drivers/libvirt/provider.js';
import { Virsh, type VirshResult } from '../../src/drivers/libvirt/virsh.js';
import { macFor, POOL_HOST } from '../../src/drivers/libvirt/names.js';
import { networkFacts, pgopMetadata, volumeFacts } from '../../src/drivers/libvirt/xml.js';
import type { LibvirtEvent } from '../../src/drivers/libvirt/events.js';
import { PgopError, transient } from '../../src/errors.js';
import { createMemoryPins } from '../../src/drivers/ssh/shell.js';
import { readKeyPair } from '../../src/drivers/ssh/keys.js';
import type { ClusterSpec } from '../../src/spec/types.js';
import {
  isRoot,
  startPrivateLibvirtd,
  tearDownContract,
  virshXml,
  type PrivateLibvirtd,
} from './helpers/libvirtd.js';
import { libvirtTestSpec, type LibvirtTestSpecOptions } from './helpers/spec.js';

const execFileP = promisify(execFile);
const GiB = 1024 ** 3;

/** Fails the n-th virsh command (a crash of the operator at that point). */
class CrashingVirsh extends Virsh {
  calls = 0;
  readonly verbs: string[] = [];
  constructor(private readonly failAt: number) {
    super();
  }
  override run(uri: string, args: string[], what: string): Promise<VirshResult> {
    this.calls++;
    this.verbs.push(args[0] ?? '');
    if (this.calls === this.failAt)
      return Promise.reject(transient(`simulated crash before virsh ${args[0]}`));
    return super.run(uri, args, what);
  }
}

async function waitFor<T>(
  what: string,
  f: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.skipIf(!isRoot())(
  'libvirt provider contract (real libvirtd, test driver; root only, skipped otherwise)',
  () => {
    let d: PrivateLibvirtd;
    let state: string;
    let spec: ClusterSpec;
    let provider: LibvirtProvider;
    const events: LibvirtEvent[] = [];

    const virsh = async (...args: string[]) =>
      (await execFileP('virsh', ['-q', '-c', d.testUri, ...args], { timeout: 30_000 })).stdout;
    const maybeVirsh = (...args: string[]) => virsh(...args).catch(() => null);
    /** A `virsh ... --name` listing: one name a line, sorted. */
    const names = async (...args: string[]) =>
      (await virsh(...args))
        .split('\n')
        .map((s) => s.trim())
        .filter(Boolean)
        .sort();
    const domains = () => names('list', '--all', '--name');
    const volumes = async (pool = 'pgt') =>
      (await virsh('vol-list', pool))
        .split('\n')
        .map((l) => l.trim().split(/\s+/)[0]!)
        .filter(Boolean)
        .sort();
    const networks = () => names('net-list', '--all', '--name');
    const reservations = async (net: string) => networkFacts(await virsh('net-dumpxml', net)).hosts;
    /** Domains, volumes and the cluster network's reservations: what a repeated or crashed
     *  ensureMachine must leave as a clean one does. */
    const machines = async () => ({
      doms: await domains(),
      vols: await volumes(),
      res: await reservations('pgop-lvc'),
    });
    /** A spec on this daemon and storage pool. */
    const testSpec = (o: Omit<LibvirtTestSpecOptions, 'uri' | 'poolPath'>) =>
      libvirtTestSpec({ uri: d.testUri, poolPath: join(state, 'pool'), ...o });
    /** Another cluster: one node, no pgpool, on 10.77.`subnet`.0/24 (in `network` when given). */
    const otherCluster = (name: string, subnet: number, network?: string) =>
      testSpec({ name, subnet, nodes: 1, pgpool: false, ...(network ? { network } : {}) });
    const pins = createMemoryPins();
    const newProvider = (opts: ConstructorParameters<typeof LibvirtProvider>[0] = {}) =>
      new LibvirtProvider({
        stateDir: state,
        eventBackoffMs: { min: 50, max: 200 },
        hostKeys: pins,
        ...opts,
      });

    beforeAll(async () => {
      d = await startPrivateLibvirtd();
      await d.keepTestDriverAlive();
      state = await mkdtemp(join(tmpdir(), 'pgop-libvirt-state-'));
      spec = testSpec({ name: 'lvc', nodes: 2 });
      provider = newProvider();
      provider.onEvent((e) => events.push(e));
      provider.watch(spec);
      // The watcher is connected once it reports a domain event caused by someone else.
      await waitFor('the event watcher', async () => {
        await virsh('destroy', 'test').catch(() => undefined);
        await virsh('start', 'test').catch(() => undefined);
        return events.find((e) => e.domain === 'test' && e.type === 'lifecycle') ? true : undefined;
      });
    }, 120_000);

    afterAll(() => tearDownContract(provider, d, state), 120_000);

    it('observes every node of a fresh cluster as missing', async () => {
      const obs = await provider.observeMachines(spec);
      expect(Object.keys(obs).sort()).toEqual(['pg1', 'pg2']);
      expect(obs.pg1!.state).toBe('missing');
      expect(obs.pg2!.state).toBe('missing');
    });

    it('ensureMachine makes pool, network, volumes and a running domain (and the pool host)', async () => {
      const node = spec.nodes[0]!;
      await provider.ensureMachine(spec, node);

      expect((await virsh('pool-info', 'pgt')).match(/^State:\s+(\S+)/m)?.[1]).toBe('running');
      expect(await virsh('pool-dumpxml', 'pgt')).toContain(`<path>${join(state, 'pool')}</path>`);

      const netName = spec.provider.type === 'libvirt' ? spec.provider.network.name : '';
      const netXml = await virsh('net-dumpxml', netName);
      const facts = networkFacts(netXml);
      expect(facts.gateway).toBe('10.77.50.1');
      expect(facts.prefixLen).toBe(24);
      expect(facts.owner).toEqual({ cluster: 'lvc' });
      expect(facts.hosts.sort((a, b) => a.ip.localeCompare(b.ip))).toEqual([
        { mac: macFor('lvc', POOL_HOST), name: 'lvc-pool', ip: '10.77.50.10' },
        { mac: macFor('lvc', 'pg1'), name: 'lvc-pg1', ip: '10.77.50.11' },
      ]);
      expect((await virsh('net-info', netName)).match(/^Active:\s+(\S+)/m)?.[1]).toBe('yes');

      expect(await volumes()).toEqual([
        'lvc-pg1-data.qcow2',
        'lvc-pg1-root.qcow2',
        'lvc-pg1-seed.iso',
        'lvc-pool-root.qcow2',
        'lvc-pool-seed.iso',
      ]);
      const root = volumeFacts(await virsh('vol-dumpxml', '--pool', 'pgt', 'lvc-pg1-root.qcow2'));
      expect(root).toMatchObject({
        format: 'qcow2',
        capacityBytes: 4 * GiB,
        backingPath: '/var/lib/pgop/images/test-base.qcow2',
      });
      expect(
        volumeFacts(await virsh('vol-dumpxml', '--pool', 'pgt', 'lvc-pg1-data.qcow2')).capacityBytes,
      ).toBe(2 * GiB);

      expect(await domains()).toEqual(['lvc-pg1', 'lvc-pool', 'test']);
      const xml = await virsh('dumpxml', 'lvc-pg1');
      expect(pgopMetadata(xml, 'machine')).toEqual({ cluster: 'lvc', node: 'pg1' });
      expect(xml).toContain(`<mac address='${macFor('lvc', 'pg1')}'/>`);
      expect(xml).toContain(`<source network='${netName}'`);
      expect(xml).toContain(`<source file='${join(state, 'pool', 'lvc-pg1-seed.iso')}'`);
      expect(xml).toMatch(/<domain type='qemu'/); // auto on the test driver: qemu
      expect((await virsh('domstate', 'lvc-pg1')).trim()).toBe('running');

      const obs = await provider.observeMachines(spec);
      expect(obs.pg1!.state).toBe('running');
      expect(obs.pg2!.state).toBe('missing');
      expect((await provider.observePoolHost(spec)).state).toBe('running');
      await waitFor('the Started event of pg1', () =>
        events.find((e) => e.node === 'pg1' && e.cluster === 'lvc' && e.lifecycle?.kind === 'started')
          ? true
          : undefined,
      );
    });

    it('ensureMachine again changes nothing (no duplicate domain, volume or reservation)', async () => {
      const before = { ...(await machines()), nets: await networks() };
      const uuid = await virsh('domuuid', 'lvc-pg1');
      await provider.ensureMachine(spec, spec.nodes[0]!);
      expect({ ...(await machines()), nets: await networks() }).toEqual(before);
      expect(await virsh('domuuid', 'lvc-pg1')).toBe(uuid);
    });

    it('fenceMachine destroys the domain at once, is idempotent, and the watcher reports it', async () => {
      const node = spec.nodes[0]!;
      const seen = events.length;
      await provider.fenceMachine(spec, node);
      expect((await virsh('domstate', '--reason', 'lvc-pg1')).trim()).toBe('shut off (destroyed)');
      expect((await provider.observeMachines(spec)).pg1!.state).toBe('stopped');
      const ev = await waitFor('the Stopped event', () =>
        events.slice(seen).find((e) => e.node === 'pg1' && e.lifecycle?.kind === 'stopped'),
      );
      expect(ev).toMatchObject({
        type: 'lifecycle',
        domain: 'lvc-pg1',
        cluster: 'lvc',
        lifecycle: { kind: 'stopped', detail: 'Destroyed' },
      });
      await provider.fenceMachine(spec, node); // stopped already
      await provider.fenceMachine(spec, spec.nodes[1]!); // missing
      expect((await provider.observeMachines(spec)).pg1!.detail).toMatch(/shut off.*Stopped Destroyed/);
    });

    it('ensureMachine starts a stopped machine and resumes a paused one', async () => {
      await provider.ensureMachine(spec, spec.nodes[0]!);
      expect((await virsh('domstate', 'lvc-pg1')).trim()).toBe('running');
      await virsh('suspend', 'lvc-pg1');
      const obs = await provider.observeMachines(spec);
      expect(obs.pg1).toMatchObject({ state: 'stopped', detail: expect.stringContaining('paused') });
      await provider.ensureMachine(spec, spec.nodes[0]!);
      expect((await virsh('domstate', 'lvc-pg1')).trim()).toBe('running');
    });

    it(
      'a crash at any step of creating a machine is ' + 'completed by the next call, never duplicated',
      async () => {
        const node = spec.nodes[1]!;
        // How many virsh commands a clean creation of pg2 takes (pool host and pg1 exist already).
        const counting = new CrashingVirsh(-1);
        const probe = newProvider({ virsh: counting, watchEvents: false });
        await probe.ensureMachine(spec, node);
        await probe.close();
        // A crash before a read leaves the state a crash before the next change leaves: crash
        // before every command that changes something (and the binding's define/start come after
        // the last one, so "crash after the last virsh command" is covered by the define test below).
        const changes = counting.verbs.flatMap((v, i) =>
          /^(pool|net|vol)-(define|build|start|autostart|update|create|upload|delete|destroy|undefine)$/.test(
            v,
          )
            ? [i + 1]
            : [],
        );
        expect(counting.verbs).toEqual(expect.arrayContaining(['net-update', 'vol-create']));
        expect(changes.length).toBeGreaterThanOrEqual(4); // reservation, root, data, seed
        const want = await machines();
        for (const k of changes) {
          await provider.deleteMachine(spec, node);
          expect(await domains()).not.toContain('lvc-pg2');
          const crashing = newProvider({ virsh: new CrashingVirsh(k), watchEvents: false });
          await expect(crashing.ensureMachine(spec, node), `crash at virsh call ${k}`).rejects.toThrow(
            /simulated crash/,
          );
          await crashing.close();
          const fresh = newProvider({ watchEvents: false });
          await fresh.ensureMachine(spec, node);
          await fresh.close();
          expect(await machines(), `after a crash at virsh call ${k}`).toEqual(want);
          expect((await virsh('domstate', 'lvc-pg2')).trim()).toBe('running');
        }
      },
      120_000,
    );

    it('a domain defined but never started (crash after define) is started, not redefined', async () => {
      const node = spec.nodes[1]!;
      await provider.fenceMachine(spec, node);
      const uuid = await virsh('domuuid', 'lvc-pg2');
      await newProvider({ watchEvents: false }).ensureMachine(spec, node);
      expect(await virsh('domuuid', 'lvc-pg2')).toBe(uuid);
      expect((await virsh('domstate', 'lvc-pg2')).trim()).toBe('running');
    });

    it('refuses a domain of the same name that pgop did not make, and leaves it alone', async () => {
      const other = otherCluster('lvx', 51);
      await virshXml(
        d.testUri,
        'define',
        `<domain type='test'><name>lvx-pg1</name><memory>65536</memory><os><type>hvm</type></os></domain>`,
      );
      const err = await provider.ensureMachine(other, other.nodes[0]!).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PgopError);
      expect((err as PgopError).kind).toBe('terminal');
      expect((err as Error).message).toMatch(/lvx-pg1.*not made by pgop/);
      await expect(provider.deleteMachine(other, other.nodes[0]!)).rejects.toThrow(/not made by pgop/);
      expect(await domains()).toContain('lvx-pg1');
      await virsh('undefine', 'lvx-pg1');
      await provider.deleteClusterResources(other);
    });

    it("refuses a network of the spec's name with another address", async () => {
      const clash = otherCluster('lvy', 52, 'pgop-lvc');
      await expect(provider.ensureMachine(clash, clash.nodes[0]!)).rejects.toThrow(
        /exists with address 10\.77\.50\.1\/24, not the spec's 10\.77\.52\.1\/24/,
      );
      expect(await domains()).not.toContain('lvy-pg1');
    });

    it(
      "a shared network keeps the other cluster's " + 'reservations and is deleted with the last one',
      async () => {
        const shared = otherCluster('lvz', 53, 'pgop-shared');
        const shared2 = otherCluster('lvw', 53, 'pgop-shared');
        shared2.nodes[0]!.address = '10.77.53.21';
        await provider.ensureMachine(shared, shared.nodes[0]!);
        await provider.ensureMachine(shared2, shared2.nodes[0]!);
        expect((await reservations('pgop-shared')).map((h) => h.name).sort()).toEqual(['lvw-pg1', 'lvz-pg1']);
        // The same address for another machine is refused.
        const thief = otherCluster('lvv', 53, 'pgop-shared');
        await expect(provider.ensureMachine(thief, thief.nodes[0]!)).rejects.toThrow(
          /10\.77\.53\.11.*reserved for lvz-pg1/,
        );
        await provider.deleteClusterResources(shared);
        expect(await networks()).toContain('pgop-shared');
        expect((await reservations('pgop-shared')).map((h) => h.name)).toEqual(['lvw-pg1']);
        await provider.deleteClusterResources(shared2);
        expect(await networks()).not.toContain('pgop-shared');
      },
    );

    it('the event watcher is restarted when its virsh child dies, and events flow again', async () => {
      const w = provider.watcher(d.testUri)!;
      const pid = w.pid!;
      const starts = w.starts;
      const seen = events.length;
      process.kill(pid, 'SIGKILL');
      await waitFor('a restarted watcher', () =>
        w.starts > starts && w.pid !== undefined && w.pid !== pid ? true : undefined,
      );
      expect(events.slice(seen).some((e) => e.type === 'resync' && e.text === 'watcher restarted')).toBe(
        true,
      );
      // events after the restart arrive (retrying the fence/start pair until the new child listens)
      await waitFor('an event from the new watcher', async () => {
        await provider.fenceMachine(spec, spec.nodes[1]!);
        await provider.ensureMachine(spec, spec.nodes[1]!);
        return events.slice(seen).find((e) => e.node === 'pg2' && e.lifecycle?.kind === 'started')
          ? true
          : undefined;
      });
    });

    it(
      'each machine has its own host key, made and pinned before its domain was defined (0600 in a 0700 ' +
        'dir)',
      async () => {
        for (const m of [spec.nodes[0]!, spec.nodes[1]!, POOL_HOST] as const) {
          const path = provider.hostKeyPath(spec, m);
          const key = await readKeyPair(path);
          expect(key, path).not.toBeNull();
          const id = provider.hostRef(spec, m).id;
          expect(pins.getPinned(id)).toEqual({ algo: 'ssh-ed25519', keyB64: key!.keyB64 });
          expect(statSync(path).mode & 0o777).toBe(0o600);
          expect(statSync(dirname(path)).mode & 0o777).toBe(0o700);
        }
        const keys = new Set(
          ([spec.nodes[0]!, spec.nodes[1]!, POOL_HOST] as const).map(
            (m) => pins.getPinned(provider.hostRef(spec, m).id)!.keyB64,
          ),
        );
        expect(keys.size).toBe(3);
      },
    );

    it(
      'deleteMachine removes domain, volumes, reservation and host key; twice is fine; made again, it ' +
        'has a new pinned key',
      async () => {
        const node = spec.nodes[1]!;
        const id = provider.hostRef(spec, node).id;
        const before = pins.getPinned(id)!.keyB64;
        await provider.deleteMachine(spec, node);
        expect(await domains()).not.toContain('lvc-pg2');
        expect((await volumes()).filter((v) => v.startsWith('lvc-pg2-'))).toEqual([]);
        expect((await reservations('pgop-lvc')).map((h) => h.name)).not.toContain('lvc-pg2');
        expect((await provider.observeMachines(spec)).pg2!.state).toBe('missing');
        expect(existsSync(provider.hostKeyPath(spec, node))).toBe(false);
        await provider.deleteMachine(spec, node);
        // re-provisioned: a new key, pinned (the provider pins before define + start)
        await provider.ensureMachine(spec, node);
        const after = pins.getPinned(id)!.keyB64;
        expect(after).not.toBe(before);
        expect((await readKeyPair(provider.hostKeyPath(spec, node)))!.keyB64).toBe(after);
        await provider.deleteMachine(spec, node);
      },
    );

    it(
      'listMachines finds a node that left the spec (pgop metadata, reserved address); its removal ' +
        'leaves no domain, volume, seed or reservation',
      async () => {
        const bigger = testSpec({ name: 'lvc', nodes: 3 });
        const pg3 = bigger.nodes[2]!;
        await provider.ensureMachine(bigger, pg3);
        expect((await volumes()).filter((v) => v.startsWith('lvc-pg3-'))).toEqual([
          'lvc-pg3-data.qcow2',
          'lvc-pg3-root.qcow2',
          'lvc-pg3-seed.iso',
        ]);
        // the spec no longer names pg3: observeMachines does not look, listMachines finds it
        expect(Object.keys(await provider.observeMachines(spec))).not.toContain('pg3');
        const listed = await provider.listMachines(spec);
        expect(listed.pg3).toMatchObject({ state: 'running', address: pg3.address });
        expect(Object.keys(listed)).not.toContain('pool');
        // removed as scale-in does: fence, then delete through the NodeSpec it was made with
        await provider.fenceMachine(spec, pg3);
        await provider.deleteMachine(spec, pg3);
        expect(await domains()).not.toContain('lvc-pg3');
        expect((await volumes()).filter((v) => v.startsWith('lvc-pg3-'))).toEqual([]);
        expect((await reservations('pgop-lvc')).map((h) => h.name)).not.toContain('lvc-pg3');
        expect((await provider.listMachines(spec)).pg3).toBeUndefined();
      },
    );

    it(
      'deleteClusterResources removes every machine, ' + 'the network, the pool pgop made and the keys',
      async () => {
        // A domain of a node no longer in the spec, found by its metadata.
        const bigger = testSpec({ name: 'lvc', nodes: 3 });
        await provider.ensureMachine(bigger, bigger.nodes[2]!);
        expect(await domains()).toContain('lvc-pg3');
        expect(existsSync(provider.keyPath(spec))).toBe(true);
        await provider.deleteClusterResources(spec);
        expect(await domains()).toEqual(['test']);
        expect(await networks()).not.toContain('pgop-lvc');
        expect(await maybeVirsh('pool-info', 'pgt')).toBeNull();
        expect(existsSync(provider.keyPath(spec))).toBe(false);
        await provider.deleteClusterResources(spec); // again: nothing left to do
        expect((await provider.observeMachines(spec)).pg1!.state).toBe('missing');
      },
    );

    it(
      'survives a libvirtd restart: connections, ' + 'the virsh session and the event watcher come back',
      async () => {
        const node = spec.nodes[0]!;
        await provider.ensureMachine(spec, node);
        const w = provider.watcher(d.testUri)!;
        const starts = w.starts;
        await d.restart(); // the test driver forgets everything
        // The first calls after the restart may fail as transient (the loop retries); within a few
        // tries everything works again on fresh connections.
        const retry = async <T>(f: () => Promise<T>): Promise<T> => {
          for (let i = 0; ; i++) {
            try {
              return await f();
            } catch (err) {
              if (i >= 3 || !(err instanceof PgopError) || err.kind !== 'transient') throw err;
            }
          }
        };
        expect((await retry(() => provider.observeMachines(spec))).pg1!.state).toBe('missing');
        await retry(() => provider.ensureMachine(spec, node));
        expect((await virsh('domstate', 'lvc-pg1')).trim()).toBe('running');
        const seen = events.length;
        await waitFor(
          'an event after the restart',
          async () => {
            await provider.fenceMachine(spec, node);
            await provider.ensureMachine(spec, node);
            return events.slice(seen).find((e) => e.node === 'pg1' && e.lifecycle?.kind === 'started')
              ? true
              : undefined;
          },
          60_000,
        );
        expect(w.starts).toBeGreaterThan(starts); // the watcher noticed the lost connection
        await provider.deleteClusterResources(spec);
        expect(await domains()).toEqual(['test']); // the fresh test driver's own
      },
      120_000,
    );
  },
);
