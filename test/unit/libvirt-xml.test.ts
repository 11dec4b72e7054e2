// The libvirt provider's pure parts: domain/network/pool/volume XML (checked against libvirt's
// own RNG schemas with virt-xml-validate when libvirt-clients is installed), reading libvirt's
// XML back, names and MACs.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  allAttrs,
  networkFacts,
  pgopMetadata,
  poolPathOf,
  renderDomainXml,
  renderNetworkXml,
  renderPoolXml,
  renderVolumeXml,
  volumeFacts,
  xmlEscape,
  type DomainXmlInput,
} from '../../src/drivers/libvirt/xml.js';
import {
  POOL_HOST,
  allMachines,
  clusterUris,
  domainName,
  macFor,
  machinePlan,
  volumeNames,
} from '../../src/drivers/libvirt/names.js';
import { PGOP_XMLNS } from '../../src/drivers/libvirt/names.js';
import { parseSpecText } from '../../src/spec/parse.js';
import type { ClusterSpec } from '../../src/spec/types.js';

const VALIDATE = '/usr/bin/virt-xml-validate';
const canValidate = existsSync(VALIDATE) && existsSync('/usr/bin/xmllint');
const tmp = mkdtempSync(join(tmpdir(), 'pgop-xml-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** libvirt's schema check of a document ('domain', 'network', 'storagepool', 'storagevol'). */
function validate(xml: string, schema: string): void {
  const f = join(tmp, `${schema}-${Math.random().toString(36).slice(2)}.xml`);
  writeFileSync(f, xml);
  execFileSync(VALIDATE, [f, schema], { stdio: 'pipe' });
}

const base: DomainXmlInput = {
  name: 'critlib-pg01',
  type: 'qemu',
  cluster: 'critlib',
  node: 'pg01',
  vcpus: 2,
  memoryMiB: 1024,
  rootDisk: '/var/lib/pgop/pool/critlib-pg01-root.qcow2',
  dataDisk: '/var/lib/pgop/pool/critlib-pg01-data.qcow2',
  seedIso: '/var/lib/pgop/pool/critlib-pg01-seed.iso',
  mac: '52:54:00:12:34:56',
  network: 'pgop-critlib',
  serialLog: '/var/log/libvirt/qemu/critlib-pg01-serial.log',
};

function spec(extra = ''): ClusterSpec {
  return parseSpecText(
    `apiVersion: pgop.dev/v1
kind: Cluster
metadata: {name: critlib}
spec:
  provider:
    type: libvirt
    uri: qemu:///system
    baseImage: /var/lib/pgop/images/base.qcow2
    network: {cidr: 10.9.0.0/24, gateway: 10.9.0.1}
  postgres: {superuserPassword: {env: A}}
  replication: {password: {env: B}}
  nodes:
    - {name: pg01, address: 10.9.0.11, vcpus: 4, memoryMiB: 2048, rootDiskGiB: 30, dataDiskGiB: 50}
    - {name: pg02, address: 10.9.0.12, hypervisor: "qemu+ssh://h2/system"}
  pgpool: {address: 10.9.0.20}
${extra}`,
    'x.yaml',
  ).spec;
}

describe('renderDomainXml', () => {
  it('renders vCPUs, memory, disks, seed cdrom, NIC, serial console and type from the input', () => {
    const xml = renderDomainXml(base);
    expect(xml).toMatch(/^<domain type='qemu'>/);
    expect(xml).toContain('<name>critlib-pg01</name>');
    expect(xml).toContain("<vcpu placement='static'>2</vcpu>");
    expect(xml).toContain("<memory unit='MiB'>1024</memory>");
    const disks = allAttrs(xml, 'target').filter((t) => t.dev);
    expect(disks).toEqual([
      { dev: 'vda', bus: 'virtio' },
      { dev: 'vdb', bus: 'virtio' },
      { dev: 'hdc', bus: 'ide' },
    ]);
    expect(allAttrs(xml, 'source').map((s) => s.file ?? s.network)).toEqual([
      base.rootDisk,
      base.dataDisk,
      base.seedIso,
      'pgop-critlib',
    ]);
    expect(xml).toMatch(/<disk type='file' device='cdrom'>[\s\S]*<readonly\/>[\s\S]*<\/disk>/);
    expect(xml).toContain("<mac address='52:54:00:12:34:56'/>");
    expect(xml).toContain("<serial type='pty'>");
    expect(xml).toContain("<log file='/var/log/libvirt/qemu/critlib-pg01-serial.log' append='on'/>");
    expect(xml).toContain("<console type='pty'>");
    expect(xml).toContain('<serial>pgop-data</serial>');
    expect(xml).toContain("<cpu mode='maximum' check='none'/>");
    expect(xml).toContain('<on_crash>destroy</on_crash>');
    expect(pgopMetadata(xml, 'machine')).toEqual({ cluster: 'critlib', node: 'pg01' });
  });

  it('kvm gets host-passthrough; no data disk means no vdb', () => {
    const xml = renderDomainXml({ ...base, type: 'kvm', dataDisk: null, vcpus: 1, memoryMiB: 768 });
    expect(xml).toMatch(/^<domain type='kvm'>/);
    expect(xml).toContain("<cpu mode='host-passthrough' check='none' migratable='off'/>");
    expect(xml).not.toContain("dev='vdb'");
    expect(xml).not.toContain('pgop-data');
    expect(xml).toContain("<vcpu placement='static'>1</vcpu>");
    expect(xml).toContain("<memory unit='MiB'>768</memory>");
  });

  it('escapes every value it places into XML', () => {
    const xml = renderDomainXml({ ...base, rootDisk: "/p/a'b<c>&.qcow2" });
    expect(xml).toContain("<source file='/p/a&apos;b&lt;c&gt;&amp;.qcow2'/>");
    expect(xmlEscape(`<"'&>`)).toBe('&lt;&quot;&apos;&amp;&gt;');
  });

  it.skipIf(!canValidate)("passes libvirt's domain schema (both types, with and without data disk)", () => {
    validate(renderDomainXml(base), 'domain');
    validate(renderDomainXml({ ...base, type: 'kvm', dataDisk: null, serialLog: undefined }), 'domain');
  });
});

describe('network, pool and volume XML', () => {
  const net = renderNetworkXml({
    name: 'pgop-critlib',
    cluster: 'critlib',
    gateway: '10.9.0.1',
    prefixLen: 24,
    hosts: [
      { mac: '52:54:00:aa:bb:01', name: 'critlib-pg01', ip: '10.9.0.11' },
      { mac: '52:54:00:aa:bb:02', name: 'critlib-pg02', ip: '10.9.0.12' },
    ],
  });

  it("a NAT network with only static reservations, marked as pgop's", () => {
    expect(net).toContain("<forward mode='nat'/>");
    expect(net).not.toContain('<range');
    const f = networkFacts(net);
    expect(f).toEqual({
      gateway: '10.9.0.1',
      prefixLen: 24,
      owner: { cluster: 'critlib' },
      bridge: null,
      hosts: [
        { mac: '52:54:00:aa:bb:01', name: 'critlib-pg01', ip: '10.9.0.11' },
        { mac: '52:54:00:aa:bb:02', name: 'critlib-pg02', ip: '10.9.0.12' },
      ],
    });
    expect(
      networkFacts(
        renderNetworkXml({
          name: 'n',
          cluster: 'c',
          gateway: '10.0.0.1',
          prefixLen: 16,
          bridge: 'pgbr0',
          hosts: [],
        }),
      ).bridge,
    ).toBe('pgbr0');
  });

  it(
    "reads libvirt's own output: netmask instead of prefix, " + 'a stored metadata prefix, foreign networks',
    () => {
      const dumped = `<network>
  <name>default</name>
  <metadata>
    <x:network xmlns:x="${PGOP_XMLNS}" owner="pgop" cluster="c1"/>
  </metadata>
  <forward mode='nat'/>
  <bridge name='virbr0' stp='on' delay='0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
      <host mac='52:54:00:AA:00:01' name='h' ip='192.168.122.5'/>
    </dhcp>
  </ip>
</network>`;
      const f = networkFacts(dumped);
      expect(f.prefixLen).toBe(24);
      expect(f.owner).toEqual({ cluster: 'c1' });
      expect(f.hosts).toEqual([{ mac: '52:54:00:aa:00:01', name: 'h', ip: '192.168.122.5' }]);
      expect(networkFacts(dumped.replace(/<metadata>[\s\S]*<\/metadata>/, '')).owner).toBeNull();
    },
  );

  it('volumes: qcow2 overlay with backing store, raw seed; facts read back', () => {
    const vol = renderVolumeXml({
      name: 'c-n-root.qcow2',
      capacityBytes: 20 * 1024 ** 3,
      format: 'qcow2',
      backing: { path: '/img/base.qcow2', format: 'qcow2' },
    });
    expect(vol).toContain('<backingStore>');
    const dumped = `<volume type='file'>
  <name>c-n-root.qcow2</name>
  <key>/p/c-n-root.qcow2</key>
  <capacity unit='bytes'>21474836480</capacity>
  <allocation unit='bytes'>200704</allocation>
  <target>
    <path>/p/c-n-root.qcow2</path>
    <format type='qcow2'/>
  </target>
  <backingStore>
    <path>/img/base.qcow2</path>
    <format type='qcow2'/>
  </backingStore>
</volume>`;
    expect(volumeFacts(dumped)).toEqual({
      path: '/p/c-n-root.qcow2',
      capacityBytes: 20 * 1024 ** 3,
      format: 'qcow2',
      backingPath: '/img/base.qcow2',
    });
    expect(
      volumeFacts(renderVolumeXml({ name: 's.iso', capacityBytes: 374784, format: 'raw' })),
    ).toMatchObject({ capacityBytes: 374784, backingPath: null });
    expect(poolPathOf(renderPoolXml('pgop', '/var/lib/pgop/pool'))).toBe('/var/lib/pgop/pool');
  });

  it.skipIf(!canValidate)("passes libvirt's network, pool and volume schemas", () => {
    validate(net, 'network');
    validate(renderPoolXml('pgop', '/var/lib/pgop/pool'), 'storagepool');
    validate(
      renderVolumeXml({
        name: 'c-n-root.qcow2',
        capacityBytes: 1 << 30,
        format: 'qcow2',
        backing: { path: '/img/b.qcow2', format: 'qcow2' },
      }),
      'storagevol',
    );
    validate(renderVolumeXml({ name: 'c-n-seed.iso', capacityBytes: 374784, format: 'raw' }), 'storagevol');
  });
});

describe('names and MACs', () => {
  it('MACs are deterministic, locally administered KVM addresses, distinct per node and cluster', () => {
    expect(macFor('critlib', 'pg01')).toBe(macFor('critlib', 'pg01'));
    expect(macFor('critlib', 'pg01')).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
    const macs = new Set(
      ['pg01', 'pg02', 'pg03', 'pool'].flatMap((n) => [macFor('critlib', n), macFor('other', n)]),
    );
    expect(macs.size).toBe(8);
  });

  it('a machine plan follows the conventions (domain, volumes, reservation, hypervisor)', () => {
    const s = spec();
    const m = machinePlan(s, s.nodes[0]!);
    expect(m).toMatchObject({
      domain: 'critlib-pg01',
      id: 'critlib/pg01',
      uri: 'qemu:///system',
      address: '10.9.0.11',
      mac: macFor('critlib', 'pg01'),
      vcpus: 4,
      memoryMiB: 2048,
      rootDiskGiB: 30,
      dataDiskGiB: 50,
      dhcpName: 'critlib-pg01',
      volumes: {
        root: 'critlib-pg01-root.qcow2',
        data: 'critlib-pg01-data.qcow2',
        seed: 'critlib-pg01-seed.iso',
      },
    });
    expect(machinePlan(s, s.nodes[1]!).uri).toBe('qemu+ssh://h2/system');
    expect(machinePlan(s, POOL_HOST)).toMatchObject({
      domain: 'critlib-pool',
      address: '10.9.0.20',
      dataDiskGiB: 0,
      volumes: { data: null },
    });
    expect(allMachines(s).map((x) => x.name)).toEqual(['pg01', 'pg02', 'pool']);
    expect(clusterUris(s)).toEqual(['qemu:///system', 'qemu+ssh://h2/system']);
    expect(domainName('a', 'b')).toBe('a-b');
    expect(volumeNames('a', 'b').seed).toBe('a-b-seed.iso');
    expect(s.provider.type === 'libvirt' && s.provider.network.name).toBe('pgop-critlib');
  });

  it('refuses a node called pool and two machines whose derived MACs collide', () => {
    const s = spec();
    expect(() => machinePlan(s, { ...s.nodes[0]!, name: 'pool' })).toThrow(/names a pgpool host/);
    // find two node names whose 24-bit MAC suffix collides (birthday search, a few thousand names)
    const seen = new Map<string, string>();
    let pair: [string, string] | undefined;
    for (let i = 0; !pair; i++) {
      const name = `n${i}`;
      const mac = macFor('critlib', name);
      const other = seen.get(mac);
      if (other) pair = [other, name];
      else seen.set(mac, name);
    }
    const clash = {
      ...s,
      nodes: [
        { ...s.nodes[0]!, name: pair[0] },
        { ...s.nodes[0]!, name: pair[1], address: '10.9.0.13' },
      ],
    };
    expect(() => allMachines(clash)).toThrow(/collides/);
  });
});

describe('virsh session quoting', () => {
  it("single-quotes every argument for virsh's parser and refuses line breaks", async () => {
    const { virshQuote } = await import('../../src/drivers/libvirt/virsh.js');
    expect(virshQuote('net-update')).toBe("'net-update'");
    expect(virshQuote("<host mac='a'/>")).toBe("'<host mac='\\''a'\\''/>'");
    expect(() => virshQuote('a\nquit')).toThrow(/line break/);
  });
});
