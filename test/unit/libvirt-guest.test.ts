// The libvirt provider's guest-facing parts: cloud-init documents (and the real NoCloud ISO read
// back with isoinfo), event line parsing, the accelerator probe and URI handling.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import {
  DATADISK_SCRIPT,
  DATADISK_SCRIPT_PATH,
  SSHD_DROPIN_PATH,
  buildSeedIso,
  renderMetaData,
  renderNetworkConfig,
  renderSeed,
  renderUserData,
  type SeedInput,
} from '../../src/drivers/libvirt/cloudinit.js';
import { parseEventLine } from '../../src/drivers/libvirt/events.js';
import { generateKeyPair, publicOfPrivate } from '../../src/drivers/ssh/keys.js';
import {
  ACCEL_MARKER,
  bootSector,
  parseUri,
  probeAccel,
  qemuBinary,
  resolveDomainType,
} from '../../src/drivers/libvirt/accel.js';

const KEY =
  'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHr4ZLu2e6hzvYyS0Q3mWQ3Q9m3m0dE2xgk8w5m3n0aA pgop-operator@critlib';
const HOST_KEY = generateKeyPair('pgop-host@critlib/pg01');
const seed: SeedInput = {
  cluster: 'critlib',
  name: 'pg01',
  hostname: 'pg01',
  osFamily: 'debian',
  sshUser: 'pgop',
  publicKey: KEY,
  hostKey: HOST_KEY,
  mac: '52:54:00:12:34:56',
  address: '192.168.122.10',
  prefixLen: 24,
  gateway: '192.168.122.1',
  dataDisk: { layout: 'lvm', filesystem: 'xfs' },
};

const tmp = mkdtempSync(join(tmpdir(), 'pgop-guest-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('cloud-init seed', () => {
  it('meta-data: a stable instance id and the node name as hostname', () => {
    expect(parse(renderMetaData(seed))).toEqual({
      'instance-id': 'pgop-critlib-pg01',
      'local-hostname': 'pg01',
    });
  });

  it('user-data: root and the ssh user with the operator key only, no sudo, growpart, the data disk', () => {
    const text = renderUserData(seed);
    expect(text.startsWith('#cloud-config\n')).toBe(true);
    const doc = parse(text) as Record<string, any>;
    expect(doc.hostname).toBe('pg01');
    expect(doc.disable_root).toBe(false);
    expect(doc.ssh_authorized_keys).toEqual([KEY]);
    expect(doc).not.toHaveProperty('ssh_pwauth'); // cloud-init would restart sshd mid-boot
    // pgop logs in as root; the people's account has no sudo and no password
    expect(doc.users).toEqual([
      {
        name: 'pgop',
        gecos: 'pgop operator',
        shell: '/bin/bash',
        lock_passwd: true,
        ssh_authorized_keys: [KEY],
      },
    ]);
    expect(text).not.toMatch(/sudo|NOPASSWD/);
    expect(doc.growpart).toEqual({ mode: 'auto', devices: ['/'] });
    const files = Object.fromEntries(
      (doc.write_files as { path: string; content: string; permissions: string }[]).map((f) => [f.path, f]),
    );
    expect(files[SSHD_DROPIN_PATH]!.content).toMatch(/^PasswordAuthentication no$/m);
    expect(files[SSHD_DROPIN_PATH]!.content).toMatch(/^PermitRootLogin prohibit-password$/m);
    expect(files[SSHD_DROPIN_PATH]!.content).toMatch(/^KbdInteractiveAuthentication no$/m);
    expect(files[SSHD_DROPIN_PATH]!.content).toMatch(/^AuthenticationMethods publickey$/m);
    expect(files[SSHD_DROPIN_PATH]!.content).toMatch(/^HostKey \/etc\/ssh\/ssh_host_ed25519_key$/m);
    expect(files[DATADISK_SCRIPT_PATH]).toMatchObject({ content: DATADISK_SCRIPT, permissions: '0755' });
    expect(doc.runcmd).toEqual([[DATADISK_SCRIPT_PATH, 'lvm', 'xfs']]);
  });

  it(
    "user-data: the host key pgop made (and pinned) is the machine's only host key; cloud-init generates " +
      'none',
    () => {
      const doc = parse(renderUserData(seed)) as Record<string, any>;
      expect(doc.ssh_keys).toEqual({
        ed25519_private: HOST_KEY.privateKey,
        ed25519_public: HOST_KEY.publicLine,
      });
      expect(doc.ssh_deletekeys).toBe(true); // the image's (shared) keys go
      expect(doc.ssh_genkeytypes).toEqual([]);
      // what the guest will present is what was pinned: the private key's own public half
      expect(publicOfPrivate(doc.ssh_keys.ed25519_private)).toBe(HOST_KEY.keyB64);
      // two machines never share a key
      expect(generateKeyPair('x').keyB64).not.toBe(HOST_KEY.keyB64);
    },
  );

  it('refuses a host key that is not an OpenSSH ed25519 pair (nothing else reaches user-data)', () => {
    expect(() => renderUserData({ ...seed, hostKey: { ...HOST_KEY, publicLine: 'ssh-rsa AAAA' } })).toThrow(
      /host key is not/,
    );
    expect(() =>
      renderUserData({
        ...seed,
        hostKey: { ...HOST_KEY, privateKey: `${HOST_KEY.privateKey}runcmd: [reboot]\n` },
      }),
    ).toThrow(/host key is not/);
  });

  it('user-data: plain ext4; the pool host has no data disk', () => {
    const rhel = parse(
      renderUserData({ ...seed, osFamily: 'rhel', dataDisk: { layout: 'plain', filesystem: 'ext4' } }),
    ) as Record<string, any>;
    expect(rhel.users[0]).not.toHaveProperty('sudo');
    expect(rhel.runcmd).toEqual([[DATADISK_SCRIPT_PATH, 'plain', 'ext4']]);
    const pool = parse(renderUserData({ ...seed, name: 'pool', dataDisk: null })) as Record<string, any>;
    expect(pool.runcmd).toEqual([['mkdir', '-p', '/u01', '/u02']]);
    expect((pool.write_files as { path: string }[]).map((f) => f.path)).toEqual([SSHD_DROPIN_PATH]);
  });

  it('refuses anything but an ed25519 public key', () => {
    expect(() => renderUserData({ ...seed, publicKey: '-----BEGIN OPENSSH PRIVATE KEY-----' })).toThrow(
      /not an ssh-ed25519 public key/,
    );
    expect(() => renderUserData({ ...seed, publicKey: `${KEY}\nruncmd: [reboot]` })).toThrow(
      /not an ssh-ed25519 public key/,
    );
  });

  it('network-config v2: the NIC by MAC, static address, default route and DNS via the gateway', () => {
    expect(parse(renderNetworkConfig(seed))).toEqual({
      version: 2,
      ethernets: {
        eth0: {
          match: { macaddress: '52:54:00:12:34:56' },
          'set-name': 'eth0',
          dhcp4: false,
          addresses: ['192.168.122.10/24'],
          routes: [{ to: '0.0.0.0/0', via: '192.168.122.1' }],
          nameservers: { addresses: ['192.168.122.1'] },
        },
      },
    });
  });

  it('the data disk script is valid sh (layouts lvm and plain: VG vg01, /u01, /u02, nofail mounts)', () => {
    const f = join(tmp, 'datadisk.sh');
    writeFileSync(f, DATADISK_SCRIPT);
    execFileSync('sh', ['-n', f]);
    expect(DATADISK_SCRIPT).toContain('vgcreate vg01');
    expect(DATADISK_SCRIPT).toContain('lv_01');
    expect(DATADISK_SCRIPT).toContain('/u01');
    expect(DATADISK_SCRIPT).toContain('nofail');
  });

  it.skipIf(!existsSync('/usr/bin/genisoimage') || !existsSync('/usr/bin/isoinfo'))(
    'the ISO is a NoCloud seed (volume id cidata) holding exactly the three documents',
    async () => {
      const files = renderSeed(seed);
      const iso = await buildSeedIso(files);
      const f = join(tmp, 'seed.iso');
      writeFileSync(f, iso);
      expect(iso.length % 2048).toBe(0);
      expect(execFileSync('isoinfo', ['-d', '-i', f], { encoding: 'utf8' })).toMatch(/^Volume id: cidata$/m);
      const listing = execFileSync('isoinfo', ['-J', '-f', '-i', f], { encoding: 'utf8' })
        .trim()
        .split('\n')
        .sort();
      expect(listing).toEqual(['/meta-data', '/network-config', '/user-data']);
      for (const name of ['meta-data', 'user-data', 'network-config'] as const) {
        expect(execFileSync('isoinfo', ['-J', '-i', f, '-x', `/${name}`], { encoding: 'utf8' })).toBe(
          files[name],
        );
      }
    },
  );
});

describe('virsh event lines', () => {
  it('lifecycle with virsh --timestamp', () => {
    expect(
      parseEventLine(
        "2026-11-26 01:21:32.030+0000: event 'lifecycle' for domain 'c-n1': Stopped Destroyed",
        'test:///x',
        1,
      ),
    ).toEqual({
      uri: 'test:///x',
      type: 'lifecycle',
      domain: 'c-n1',
      text: 'Stopped Destroyed',
      at: Date.parse('2026-11-26T01:21:32.030Z'),
      lifecycle: { kind: 'stopped', detail: 'Destroyed' },
    });
  });

  it('without timestamp, unquoted names (older virsh), every lifecycle kind, other event types', () => {
    expect(parseEventLine("event 'lifecycle' for domain c-n1: Started Booted", 'u', 7)).toMatchObject({
      domain: 'c-n1',
      at: 7,
      lifecycle: { kind: 'started', detail: 'Booted' },
    });
    const kinds = [
      'Defined',
      'Undefined',
      'Started',
      'Suspended',
      'Resumed',
      'Stopped',
      'Shutdown',
      'PMSuspended',
      'Crashed',
    ].map((k) => parseEventLine(`event 'lifecycle' for domain 'd': ${k} X`, 'u')?.lifecycle?.kind);
    expect(kinds).toEqual([
      'defined',
      'undefined',
      'started',
      'suspended',
      'resumed',
      'stopped',
      'shutdown',
      'pmsuspended',
      'crashed',
    ]);
    expect(parseEventLine("event 'lifecycle' for domain 'd': Weird", 'u')?.lifecycle).toEqual({
      kind: 'unknown',
      detail: '',
    });
    expect(parseEventLine("event 'reboot' for domain 'c-n1'", 'u')).toMatchObject({
      type: 'reboot',
      domain: 'c-n1',
      text: '',
    });
    expect(
      parseEventLine(
        "event 'agent-lifecycle' for domain 'c-n1': state: 'connected' reason: 'channel event'",
        'u',
      ),
    ).toMatchObject({
      type: 'agent-lifecycle',
      text: "state: 'connected' reason: 'channel event'",
    });
    expect(
      parseEventLine("2026-11-26 01:21:32+0100: event 'lifecycle' for domain 'it's': Started Booted", 'u'),
    ).toMatchObject({
      domain: "it's",
      at: Date.parse('2026-11-26T00:21:32Z'),
    });
  });

  it('ignores anything else', () => {
    for (const l of [
      '',
      'events received: 3',
      'error: Disconnected from test:///default due to end of file',
      'event loop',
    ]) {
      expect(parseEventLine(l, 'u')).toBeNull();
    }
  });
});

describe('domain type', () => {
  it('the probe guest is one boot sector that prints the marker', () => {
    const b = bootSector();
    expect(b.length).toBe(512);
    expect(b.readUInt16LE(510)).toBe(0xaa55);
    expect(b.includes(Buffer.from([0xb0, ACCEL_MARKER.charCodeAt(0), 0xee]))).toBe(true);
  });

  it.skipIf(!qemuBinary())(
    'the probe guest boots under TCG and the probe sees its marker',
    async () => {
      const r = await probeAccel('tcg', 60_000);
      expect(r).toMatchObject({ ok: true, detail: 'tcg guest booted' });
    },
    90_000,
  );

  it.skipIf(existsSync('/dev/kvm') || !qemuBinary())(
    'without /dev/kvm the kvm probe fails',
    async () => {
      expect((await probeAccel('kvm', 30_000)).ok).toBe(false);
    },
    60_000,
  );

  it(
    'explicit types are kept; auto on the test driver is qemu; ' + 'remote hosts trust the advertisement',
    async () => {
      const never = async () => {
        throw new Error('must not ask');
      };
      expect(await resolveDomainType('qemu:///system', 'kvm', never)).toEqual({
        type: 'kvm',
        why: 'set in the spec',
      });
      expect((await resolveDomainType('test+unix:///default?socket=/x', 'auto', never)).type).toBe('qemu');
      expect((await resolveDomainType('qemu+ssh://root@h2/system', 'auto', async () => true)).type).toBe(
        'kvm',
      );
      expect((await resolveDomainType('qemu+ssh://h2/system', 'auto', async () => false)).type).toBe('qemu');
      expect(parseUri('qemu+ssh://root@h2:22/system')).toEqual({
        scheme: 'qemu+ssh',
        host: 'h2:22',
        driver: 'qemu',
        test: false,
      });
      expect(parseUri('qemu:///system')).toMatchObject({ host: '', driver: 'qemu' });
    },
  );
});
