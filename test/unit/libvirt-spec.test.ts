// Malformed libvirt settings are rejected at apply, before anything is created: unknown URI
// scheme, a base image missing on a local hypervisor, addresses outside the network. Each
// problem names file:line:column of the field; `pgop apply` exits 2 and stores nothing.

import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, pgop } from '../helpers/pgop-cli.js';
import { parseSpecText } from '../../src/spec/parse.js';
import { SpecError, type SpecProblem } from '../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'pgop-libvirt-spec-'));
const image = join(dir, 'base.qcow2');
writeFileSync(image, 'not really qcow2, but a file');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SPEC = (
  o: {
    uri?: string;
    image?: string;
    hypervisor?: string;
    pg2?: string;
    pool?: string;
    gateway?: string;
  } = {},
) => `apiVersion: pgop.dev/v1
kind: Cluster
metadata:
  name: lv
spec:
  provider:
    type: libvirt
    uri: "${o.uri ?? 'qemu:///system'}"
    baseImage: ${o.image ?? image}
    network:
      cidr: 10.60.0.0/24
      gateway: ${o.gateway ?? '10.60.0.1'}
  postgres:
    superuserPassword: {env: PGOP_X}
  replication:
    password: {env: PGOP_Y}
  nodes:
    - {name: pg01, address: 10.60.0.11${o.hypervisor ? `, hypervisor: "${o.hypervisor}"` : ''}}
    - {name: pg02, address: ${o.pg2 ?? '10.60.0.12'}}
  pgpool:
    address: ${o.pool ?? '10.60.0.20'}
`;

/** line:column (1-based) of the value after `key:` on the first line that has it */
function at(text: string, key: string, nth = 0): { line: number; column: number } {
  const lines = text.split('\n');
  let seen = 0;
  for (let i = 0; i < lines.length; i++) {
    const j = lines[i]!.indexOf(`${key}: `);
    if (j >= 0 && seen++ === nth) return { line: i + 1, column: j + key.length + 3 };
  }
  throw new Error(`no ${key} in spec`);
}

function problems(text: string, checkHost = true): SpecProblem[] {
  try {
    parseSpecText(text, 'lv.yaml', { checkHost });
    return [];
  } catch (err) {
    if (err instanceof SpecError) return err.problems;
    throw err;
  }
}

describe('libvirt settings at apply', () => {
  it('accepts a valid spec whose base image exists', () => {
    expect(problems(SPEC())).toEqual([]);
  });

  it('a base image missing on a local hypervisor: file:line:col of baseImage', () => {
    const text = SPEC({ image: '/var/lib/pgop/images/nope.qcow2' });
    expect(problems(text)).toEqual([
      {
        file: 'lv.yaml',
        ...at(text, 'baseImage'),
        path: 'spec.provider.baseImage',
        message:
          'base image /var/lib/pgop/images/nope.qcow2 does not exist on this machine ' +
          '(the hypervisor of qemu:///system): ' +
          'build it with `pgop image build` or point baseImage at a downloaded cloud image',
      },
    ]);
    // pure parsing (diff, tests) does not look at the machine
    expect(problems(text, false)).toEqual([]);
  });

  it('a base image that is a directory is refused too', () => {
    const d = join(dir, 'imgdir');
    mkdirSync(d, { recursive: true });
    expect(problems(SPEC({ image: d })).map((p) => p.message)).toEqual([
      expect.stringContaining(`${d} is not a file`),
    ]);
  });

  it('remote and test-driver hypervisors are not checked here; a local node hypervisor is', () => {
    const missing = '/var/lib/pgop/images/nope.qcow2';
    expect(problems(SPEC({ uri: 'qemu+ssh://root@hv1/system', image: missing }))).toEqual([]);
    expect(problems(SPEC({ uri: 'test+unix:///default?socket=/tmp/s', image: missing }))).toEqual([]);
    expect(
      problems(SPEC({ uri: 'qemu+ssh://root@hv1/system', image: missing, hypervisor: 'qemu:///system' })).map(
        (p) => p.path,
      ),
    ).toEqual(['spec.provider.baseImage']);
  });

  it('an unknown URI scheme, in the provider or a node', () => {
    const text = SPEC({ uri: 'vmware://host/x' });
    expect(problems(text)).toEqual([
      {
        file: 'lv.yaml',
        ...at(text, 'uri'),
        path: 'spec.provider.uri',
        message: expect.stringMatching(/^unknown URI scheme "vmware": must be one of qemu, /),
      },
    ]);
    const node = SPEC({ hypervisor: 'xen://h/' });
    expect(problems(node).map((p) => [p.path, p.line])).toEqual([
      ['spec.nodes[0].hypervisor', at(node, 'address').line],
    ]);
    expect(problems(SPEC({ uri: 'not a uri' })).map((p) => p.message)).toEqual([
      expect.stringMatching(/must be a libvirt URI like qemu:\/\/\/system/),
    ]);
  });

  it('addresses outside the network: a node, the pgpool host, the gateway', () => {
    const text = SPEC({ pg2: '10.61.0.12', pool: '192.168.1.20' });
    expect(
      problems(text).map((p) => ({ path: p.path, line: p.line, column: p.column, message: p.message })),
    ).toEqual([
      {
        path: 'spec.nodes[1].address',
        line: at(text, 'address', 1).line,
        column: expect.any(Number),
        message: '10.61.0.12 is outside the network 10.60.0.0/24 (spec.provider.network.cidr)',
      },
      {
        path: 'spec.pgpool.address',
        ...at(text, 'address', 2),
        message: '192.168.1.20 is outside the network 10.60.0.0/24 (spec.provider.network.cidr)',
      },
    ]);
    const gw = SPEC({ gateway: '10.70.0.1' });
    expect(problems(gw).map((p) => [p.path, p.line])).toEqual([
      ['spec.provider.network.gateway', at(gw, 'gateway').line],
    ]);
  });
});

describe('pgop apply with malformed libvirt settings', () => {
  beforeAll(() => {
    ensureBuilt();
  });

  const cases: [string, string, RegExp][] = [
    [
      'a missing base image',
      SPEC({ image: '/var/lib/pgop/images/nope.qcow2' }),
      new RegExp(
        String.raw`bad\.yaml:9:16: spec\.provider\.baseImage: ` +
          String.raw`base image \/var\/lib\/pgop\/images\/nope\.qcow2 does not exist`,
      ),
    ],
    [
      'an unknown URI scheme',
      SPEC({ uri: 'vmware://h/x' }),
      /bad\.yaml:8:10: spec\.provider\.uri: unknown URI scheme "vmware"/,
    ],
    [
      'an address outside the network',
      SPEC({ pg2: '10.61.0.12' }),
      /bad\.yaml:19:\d+: spec\.nodes\[1\]\.address: 10\.61\.0\.12 is outside the network/,
    ],
  ];
  for (const [what, text, expected] of cases) {
    it(`rejects ${what}: exit 2, file:line:col, nothing stored`, () => {
      const d = mkdtempSync(join(dir, 'cli-'));
      const db = join(d, 'pgop.db');
      const file = join(d, 'bad.yaml');
      writeFileSync(file, text);
      const r = pgop(db, ['apply', '-f', file]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(expected);
      expect(r.stdout).toBe('');
      expect(existsSync(db)).toBe(false);
    });
  }

  it('applies the same spec once the base image exists', () => {
    const d = mkdtempSync(join(dir, 'cli-'));
    const db = join(d, 'pgop.db');
    const file = join(d, 'good.yaml');
    writeFileSync(file, SPEC());
    expect(pgop(db, ['apply', '-f', file])).toMatchObject({
      code: 0,
      stdout: 'cluster/lv created (generation 1)\n',
    });
  });
});
