// The libvirt provider against a real libvirtd with the qemu driver (TCG): real storage pool,
// qcow2 overlay made by libvirt on a base image, the seed ISO uploaded into its volume, a NAT
// network with dnsmasq, a real qemu process per domain, destroy as the fence. The base image
// here is an empty qcow2 (the guest finds nothing to boot and sits in the BIOS): booting a cloud
// image is the end-to-end test's job. Own network + mount namespace (helpers/libvirtd.ts).

import { execFile } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LibvirtProvider } from '../../src/drivers/libvirt/provider.js';
import { macFor } from '../../src/drivers/libvirt/names.js';
import { qemuBinary } from '../../src/drivers/libvirt/accel.js';
import type { ClusterSpec } from '../../src/spec/types.js';
import { isRoot, startPrivateLibvirtd, tearDownContract, type PrivateLibvirtd } from './helpers/libvirtd.js';
import { libvirtTestSpec } from './helpers/spec.js';
import { parse as parseYaml } from 'yaml';
import { createMemoryPins } from '../../src/drivers/ssh/shell.js';
import { readKeyPair } from '../../src/drivers/ssh/keys.js';

const execFileP = promisify(execFile);

describe.skipIf(!isRoot() || !qemuBinary())(
  'libvirt provider on the qemu driver (real qemu, TCG; root and qemu only, skipped otherwise)',
  () => {
    let d: PrivateLibvirtd;
    let state: string;
    let spec: ClusterSpec;
    let provider: LibvirtProvider;
    const pins = createMemoryPins();
    const virsh = async (...args: string[]) =>
      (await execFileP('virsh', ['-q', '-c', d.qemuUri, ...args], { timeout: 60_000 })).stdout;

    beforeAll(async () => {
      state = await mkdtemp(join(tmpdir(), 'pgop-libvirt-qemu-'));
      d = await startPrivateLibvirtd({ qemuUser: 'root' });
      const base = join(state, 'base.qcow2');
      await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
      spec = libvirtTestSpec({
        name: 'lvq',
        uri: d.qemuUri,
        poolPath: join(state, 'pool'),
        baseImage: base,
        nodes: 1,
        pgpool: false,
        subnet: 60,
      });
      provider = new LibvirtProvider({ stateDir: join(state, 'state'), serialLogDir: null, hostKeys: pins });
    }, 120_000);

    afterAll(() => tearDownContract(provider, d, state), 120_000);

    it('makes real volumes, a NAT network with the reservation and a running qemu guest', async () => {
      await provider.ensureMachine(spec, spec.nodes[0]!);
      const pool = join(state, 'pool');
      const info = JSON.parse(
        (await execFileP('qemu-img', ['info', '--output=json', '-U', join(pool, 'lvq-pg1-root.qcow2')]))
          .stdout,
      ) as Record<string, unknown>;
      expect(info).toMatchObject({
        format: 'qcow2',
        'virtual-size': 4 * 1024 ** 3,
        'backing-filename': join(state, 'base.qcow2'),
      });
      const data = JSON.parse(
        (await execFileP('qemu-img', ['info', '--output=json', '-U', join(pool, 'lvq-pg1-data.qcow2')]))
          .stdout,
      ) as Record<string, unknown>;
      expect(data).toMatchObject({ format: 'qcow2', 'virtual-size': 2 * 1024 ** 3 });
      // the uploaded seed is an ISO with volume id cidata holding the node's network-config
      const iso = join(pool, 'lvq-pg1-seed.iso');
      expect((await execFileP('isoinfo', ['-d', '-i', iso])).stdout).toMatch(/^Volume id: cidata$/m);
      expect((await execFileP('isoinfo', ['-J', '-i', iso, '-x', '/network-config'])).stdout).toContain(
        '10.77.60.11/24',
      );
      // its user-data hands over the host key pgop made and pinned before this first boot
      const userData = parseYaml(
        (await execFileP('isoinfo', ['-J', '-i', iso, '-x', '/user-data'])).stdout,
      ) as Record<string, any>;
      const hostKey = (await readKeyPair(provider.hostKeyPath(spec, spec.nodes[0]!)))!;
      expect(userData.ssh_keys).toEqual({
        ed25519_private: hostKey.privateKey,
        ed25519_public: hostKey.publicLine,
      });
      expect(userData.ssh_deletekeys).toBe(true);
      expect(pins.getPinned('lvq/pg1')).toEqual({ algo: 'ssh-ed25519', keyB64: hostKey.keyB64 });
      expect((await virsh('domstate', 'lvq-pg1')).trim()).toBe('running');
      const hostsFile = readFileSync(join(d.dir, 'lib', 'dnsmasq', 'pgop-lvq.hostsfile'), 'utf8');
      expect(hostsFile).toContain(`${macFor('lvq', 'pg1')},10.77.60.11,lvq-pg1`);
      // the bridge lives in the test's namespace, never in the machine's own
      const links = (await execFileP('ip', ['-n', d.netns, '-br', 'addr'])).stdout;
      expect(links).toMatch(/10\.77\.60\.1\/24/);
      expect((await execFileP('ip', ['-br', 'addr'])).stdout).not.toMatch(/10\.77\.60\.1\/24/);
      expect((await provider.observeMachines(spec)).pg1!.state).toBe('running');
    }, 120_000);

    it('fence kills the qemu process at once; delete removes domain, disks and reservation', async () => {
      const pid = Number(readFileSync(join(d.dir, 'run', 'qemu', 'lvq-pg1.pid'), 'utf8'));
      expect(existsSync(`/proc/${pid}`)).toBe(true);
      await provider.fenceMachine(spec, spec.nodes[0]!);
      expect(existsSync(`/proc/${pid}`)).toBe(false);
      expect((await provider.observeMachines(spec)).pg1!.state).toBe('stopped');
      await provider.deleteMachine(spec, spec.nodes[0]!);
      expect((await virsh('list', '--all', '--name')).trim()).toBe('');
      for (const v of ['root.qcow2', 'data.qcow2', 'seed.iso'])
        expect(existsSync(join(state, 'pool', `lvq-pg1-${v}`))).toBe(false);
      await provider.deleteClusterResources(spec);
      expect((await virsh('net-list', '--all', '--name')).trim()).toBe('');
      expect(existsSync(join(state, 'pool'))).toBe(false);
      expect(statSync(join(state, 'base.qcow2')).isFile()).toBe(true);
    }, 120_000);
  },
);
