// Spec values that reached files and commands as root (issue 13, holes 2-4), each run through
// `pgop apply` as a user would: exit 2, file:line:column and the field on stderr, and the store
// exactly as it was. Every case here passed `apply` before the schema constrained it.

import { beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, pgop } from '../helpers/pgop-cli.js';
import { tempDir } from '../helpers/temp.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HypervisorResources } from '../../src/drivers/libvirt/resources.js';
import { Virsh } from '../../src/drivers/libvirt/virsh.js';
import { PRIVATE_MOUNTS } from '../../src/drivers/lab/provider.js';
import { LAB_POSTGRES_MOUNTS, LAB_PRIVATE_MOUNTS, parseSpecText } from '../../src/spec/parse.js';

const root = new URL('../../', import.meta.url).pathname;
const bin = join(root, 'bin/pgop');
const SIM = readFileSync(join(root, 'specs/sim-3node.yaml'), 'utf8');
// The test driver's URI: apply checks no base image for it.
const LIBVIRT = readFileSync(join(root, 'specs/libvirt-3node.yaml'), 'utf8').replace(
  'uri: qemu:///system',
  'uri: test:///default',
);
const LAB = readFileSync(join(root, 'specs/lab-3node.yaml'), 'utf8');

/** `text` with `from` (which must occur exactly once) replaced by `to`. */
function edit(text: string, from: string, to: string): string {
  expect(text.split(from)).toHaveLength(2);
  return text.replace(from, () => to);
}

/** 1-based line and column of the first character of `needle` (which must occur once). */
function at(text: string, needle: string): { line: number; column: number } {
  const i = text.indexOf(needle);
  expect(i, needle).toBeGreaterThanOrEqual(0);
  expect(text.indexOf(needle, i + 1), needle).toBe(-1);
  const before = text.slice(0, i).split('\n');
  return { line: before.length, column: before.at(-1)!.length + 1 };
}

const withPostgres = (base: string, lines: string) =>
  edit(base, '  postgres:\n    version: 15\n', `  postgres:\n    version: 15\n${lines}`);

interface Case {
  what: string;
  text: string;
  /** where the problem must be reported: this text's first character */
  needle: string;
  field: string;
  message: RegExp;
}

const cases: Case[] = [
  {
    what: 'a pgpool.conf quote in an application name (it would end app_name_redirect_preference_list)',
    text: edit(LAB, 'primaryApplications: [pgbench]', `primaryApplications: [pgbench, "x'"]`),
    needle: `"x'"`,
    field: 'spec.pgpool.primaryApplications[1]',
    message: /must be an application_name of 1-63 letters/,
  },
  {
    what: 'a libvirt pool name that walks out of the state directory (hole 2)',
    text: edit(
      LIBVIRT,
      '      name: pgop\n      path: /var/lib/pgop/pool',
      '      name: "x/../../../../root/.ssh/authorized_keys"\n      path: /var/lib/pgop/pool',
    ),
    needle: '"x/../../',
    field: 'spec.provider.pool.name',
    message: /must be a libvirt object name/,
  },
  {
    what: 'a command substitution in logDir (hole 3: pg_ctl runs -l through /bin/sh)',
    text: edit(
      SIM,
      'parameters:\n      wal_level',
      'logDir: "/var/log/pg$(id>/tmp/pwned)"\n    parameters:\n      wal_level',
    ),
    needle: '"/var/log/pg$(',
    field: 'spec.postgres.logDir',
    message: /must be a path of letters, digits and \. _ - \/ only \(not "\$"\)/,
  },
  {
    what: 'a newline in archiveDir (hole 3: it was written into a comment of archive.sh)',
    text: withPostgres(SIM, '    archiveDir: "/u02/archive\\ntouch /tmp/pwned"\n'),
    needle: '"/u02/archive\\n',
    field: 'spec.postgres.archiveDir',
    message: /must be a path of letters, digits and \. _ - \/ only \(not "\\n"\)/,
  },
  {
    what: 'a parameter value with a newline',
    text: edit(
      SIM,
      '      wal_level: replica',
      `      wal_level: "replica\\nshared_preload_libraries = 'evil'"`,
    ),
    needle: '"replica\\n',
    field: 'spec.postgres.parameters.wal_level',
    message: /must be one line without control characters/,
  },
  {
    what: 'a parameter named __proto__',
    text: edit(SIM, '      wal_level: replica', '      wal_level: replica\n      __proto__: x'),
    needle: '__proto__',
    field: 'spec.postgres.parameters.__proto__',
    message: /invalid name "__proto__": must be a lowercase PostgreSQL parameter name/,
  },
  {
    what: 'an hba word with a double quote (the renderer refused it later)',
    text: withPostgres(
      SIM,
      `    hba:\n` +
        `      - {type: host, database: all, user: 'x"#', address: 10.0.0.0/24, method: scram-sha-256}\n`,
    ),
    needle: `'x"`,
    field: 'spec.postgres.hba[0].user',
    message: /must be a lowercase role name/,
  },
  {
    what: 'a dataDir with a space (exit 70 later)',
    text: withPostgres(SIM, '    dataDir: /u01/pg 15/data\n'),
    needle: '/u01/pg 15',
    field: 'spec.postgres.dataDir',
    message: /must be a path of letters, digits and \. _ - \/ only \(not " "\)/,
  },
  {
    what: 'archiveDir: / (the install script chowned / to postgres)',
    text: withPostgres(SIM, '    archiveDir: /\n'),
    needle: '/\n    parameters',
    field: 'spec.postgres.archiveDir',
    message: /must not be \/: pgop makes this directory owned by postgres/,
  },
  {
    what: "logDir: /usr/local/bin (postgres would own a directory on root's PATH)",
    text: withPostgres(SIM, '    logDir: /usr/local/bin\n'),
    needle: '/usr/local/bin',
    field: 'spec.postgres.logDir',
    message: new RegExp(
      String.raw`must lie strictly below \/u00-\/u99, \/srv, \/data, ` +
        String.raw`or at or below \/var\/lib\/postgresql.*: pgop makes this directory owned by postgres`,
    ),
  },
  {
    what: 'backupDir .. traversal',
    text: withPostgres(SIM, '    backupDir: /u02/../etc\n'),
    needle: '/u02/../etc',
    field: 'spec.postgres.backupDir',
    message: /must be a normalised path/,
  },
  {
    what: 'a secret file in /etc (its content would become a password on the nodes)',
    text: edit(LAB, '{file: /var/lib/pgop/secrets/lab/postgres}', '{file: /etc/shadow}'),
    needle: '/etc/shadow',
    field: 'spec.postgres.superuserPassword.file',
    message: /must lie below \/var\/lib\/pgop/,
  },
  {
    what: "a lab logDir outside the node's private mounts",
    text: edit(LAB, 'logDir: /var/log/postgres', 'logDir: /srv/pglog'),
    needle: '/srv/pglog',
    field: 'spec.postgres.logDir',
    message: /is not private to a lab node/,
  },
  {
    what: 'a libvirt URI that runs a command on the hypervisor',
    text: edit(LIBVIRT, 'uri: test:///default', 'uri: "qemu+ssh://root@hv1/system?netcat=sh%20-c%20id"'),
    needle: '"qemu+ssh://root@hv1/system?netcat',
    field: 'spec.provider.uri',
    message: /must be a libvirt URI|not allowed/,
  },
  {
    what: 'sshUser postgres (cloud-init would give the database owner sudo)',
    text: edit(LIBVIRT, 'sshUser: pgop', 'sshUser: postgres'),
    needle: 'postgres\n  postgres:',
    field: 'spec.provider.sshUser',
    message: /not a system account/,
  },
  {
    what: 'a bridge name that is not an interface name',
    text: edit(
      LIBVIRT,
      '      gateway: 192.168.122.1',
      '      gateway: 192.168.122.1\n      bridge: "br0\'/><x"',
    ),
    needle: '"br0',
    field: 'spec.provider.network.bridge',
    message: /must be a network interface name/,
  },
];

describe('pgop apply rejects spec values that reached files and commands', () => {
  let dir: string;
  let db: string;
  beforeAll(() => {
    ensureBuilt();
    dir = tempDir('pgop-inject');
    db = join(dir, 'pgop.db');
    const file = join(dir, 'sim.yaml');
    writeFileSync(file, SIM);
    expect(pgop(db, ['apply', '-f', file]).code).toBe(0);
    // the unmodified bases are valid: each case below fails only for its value
    for (const [name, base] of [
      ['lab', LAB],
      ['libvirt', LIBVIRT],
    ] as const) {
      writeFileSync(join(dir, `${name}.yaml`), base);
      const r = pgop(db, ['apply', '--dry-run', '-f', join(dir, `${name}.yaml`)]);
      expect(r.code, r.stderr).toBe(0);
    }
  });

  for (const c of cases) {
    it(`${c.what}: exit 2, file:line:column and the field, nothing stored`, () => {
      const file = join(dir, 'bad.yaml');
      writeFileSync(file, c.text);
      const before = readFileSync(db);
      for (const args of [
        ['apply', '--dry-run', '-f', file],
        ['apply', '-f', file],
      ]) {
        const r = pgop(db, args);
        expect(r.code, r.stderr).toBe(2);
        expect(r.stdout).toBe('');
        const { line, column } = at(c.text, c.needle);
        const lines = r.stderr.split('\n').filter((l) => l.includes(`: ${c.field}: `));
        expect(lines, r.stderr).toHaveLength(1);
        expect(lines[0]).toContain(`${file}:${line}:${column}: ${c.field}: `);
        expect(lines[0]).toMatch(c.message);
      }
      expect(readFileSync(db).equals(before)).toBe(true);
      expect(pgop(db, ['get', 'clusters', '-o', 'json']).stdout).toContain('"generation": 1');
    });
  }
});

describe('the libvirt ownership marker', () => {
  it('refuses a pool name that is not a libvirt name, whatever reached the provider', () => {
    const r = new HypervisorResources(new Virsh(), tempDir('pgop-marker'), {
      info() {},
      warn() {},
    });
    const markerPath = (uri: string, kind: 'pool' | 'network', name: string) => r.markerPath(uri, kind, name);
    expect(() => markerPath('qemu:///system', 'pool', 'x/../../../../root/.ssh/authorized_keys')).toThrow(
      /cannot use pool name/,
    );
    expect(() => markerPath('qemu:///system', 'pool', '..')).toThrow(/cannot use pool name/);
    expect(markerPath('qemu:///system', 'pool', 'pgop')).toMatch(/\/owned\/pool-[0-9a-f]{12}-pgop$/);
  });
});

describe('the lab mounts the parser knows', () => {
  it(
    "are the lab provider's: postgres directories on postgres-owned private mounts, stateDir off every " +
      'private mount',
    () => {
      const postgresOwned = PRIVATE_MOUNTS.filter((m) => m.owner === 'postgres').map((m) => m.target);
      for (const m of LAB_POSTGRES_MOUNTS) expect(postgresOwned).toContain(m);
      expect([...LAB_PRIVATE_MOUNTS].sort()).toEqual(
        [...PRIVATE_MOUNTS.map((m) => m.target), '/var/run'].sort(),
      );
      const text = edit(
        LAB,
        '    network: 10.77.0.0/24 ',
        '    stateDir: /tmp/pgop-lab\n    network: 10.77.0.0/24 ',
      );
      expect(() => parseSpecText(text, 'lab.yaml')).toThrow(
        /stateDir: \/tmp\/pgop-lab lies under \/tmp, which every lab node mounts privately/,
      );
    },
  );
});
