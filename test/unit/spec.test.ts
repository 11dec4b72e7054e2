import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterEach, describe, expect, it } from 'vitest';
import schema from '../../schema/cluster.schema.json' with { type: 'json' };
import { PgopError, SpecError, type SpecProblem } from '../../src/errors.js';
import { canonicalJson, parseSpecFile, parseSpecText } from '../../src/spec/parse.js';
import { describeSecret, resolveSecret } from '../../src/spec/secrets.js';
import { minimalSimYaml } from '../helpers/sim-spec.js';
import { tempDir } from '../helpers/temp.js';
import { specDefaults } from '../helpers/spec-defaults.js';
import { SEED_PARAMS, seedDatabases, seedGrants, seedRoles } from '../helpers/seed.js';

const specsDir = join(import.meta.dirname, '../../specs');

/** The problems a text yields; fails the test when it parses. */
function problems(text: string, file = 'c.yaml'): SpecProblem[] {
  try {
    parseSpecText(text, file);
  } catch (err) {
    expect(err).toBeInstanceOf(SpecError);
    return (err as SpecError).problems;
  }
  throw new Error('expected a SpecError, the spec parsed');
}

/** Replace exactly one occurrence (keeps line numbers when `to` is one line). */
function edit(text: string, from: string, to: string): string {
  expect(text.split(from).length, `"${from}" must occur once`).toBe(2);
  return text.replace(from, to);
}

const problem = (line: number, column: number, path: string, message: string) => ({
  file: 'c.yaml',
  line,
  column,
  path,
  message: expect.stringContaining(message),
});

// Line numbers matter: the expected positions below refer to them.
const LAB = `apiVersion: pgop.dev/v1
kind: Cluster
metadata:
  name: lab
spec:
  provider:
    type: lab
    network: 10.77.0.0/24
  postgres:
    superuserPassword: {env: PGOP_SUPERUSER_PASSWORD}
    parameters:
      wal_level: replica
  nodes:
    - name: pg01
      address: 10.77.0.11
    - name: pg02
      address: 10.77.0.12
    - name: pg03
      address: 10.77.0.13
  replication:
    mode: sync
    syncQuorum: 1
    password: {env: PGOP_REPLICATION_PASSWORD}
  pgpool:
    address: 10.77.0.10
`;

const LIBVIRT = `apiVersion: pgop.dev/v1
kind: Cluster
metadata:
  name: vm
spec:
  provider:
    type: libvirt
    uri: qemu:///system
    baseImage: /var/lib/pgop/images/debian-12-pgop.qcow2
    network: {cidr: 192.168.122.0/24, gateway: 192.168.122.1}
  postgres:
    superuserPassword: {file: /etc/pgop/superuser}
  nodes:
    - {name: pg01, address: 192.168.122.10}
    - {name: pg02, address: 192.168.122.11}
  replication:
    password: {env: PGOP_REPLICATION_PASSWORD}
`;

const SIM_MINIMAL = minimalSimYaml('s');

describe('example specs', () => {
  it('parse, and the templates used below are valid', () => {
    const sim = parseSpecFile(join(specsDir, 'sim-3node.yaml')).spec;
    expect(sim.name).toBe('sim');
    expect(sim.provider).toEqual({ type: 'sim' });
    expect(sim.nodes.map((n) => `${n.name}=${n.address}`)).toEqual([
      'pg01=10.0.0.11',
      'pg02=10.0.0.12',
      'pg03=10.0.0.13',
    ]);
    expect(sim.replication.mode).toBe('async');

    const lab = parseSpecFile(join(specsDir, 'lab-3node.yaml')).spec;
    expect(lab.name).toBe('lab');
    expect(lab.provider).toEqual({ type: 'lab', network: '10.77.0.0/24' });
    expect(lab.nodes.map((n) => `${n.name}=${n.address}`)).toEqual([
      'pg01=10.77.0.11',
      'pg02=10.77.0.12',
      'pg03=10.77.0.13',
    ]);
    expect(lab.pgpool.address).toBe('10.77.0.10');
    expect(lab.pgpool.hosts).toEqual([
      { name: 'pool1', address: '10.77.0.21' },
      { name: 'pool2', address: '10.77.0.22' },
    ]);
    expect(lab.replication).toMatchObject({
      mode: 'sync',
      syncQuorum: 1,
      password: { file: '/var/lib/pgop/secrets/lab/replicator' },
    });

    const vm = parseSpecFile(join(specsDir, 'libvirt-3node.yaml')).spec;
    expect(vm.provider).toEqual({
      type: 'libvirt',
      uri: 'qemu:///system',
      baseImage: '/var/lib/pgop/images/debian-12-pgop.qcow2',
      pool: { name: 'pgop', path: '/var/lib/pgop/pool' },
      network: { name: 'default', cidr: '192.168.122.0/24', gateway: '192.168.122.1' },
      dataDisk: { layout: 'lvm', filesystem: 'xfs' },
      osFamily: 'debian',
      domainType: 'auto',
      sshUser: 'pgop',
    });

    expect(parseSpecText(LAB, 'c.yaml').spec.name).toBe('lab');
    expect(parseSpecText(LIBVIRT, 'c.yaml').spec.name).toBe('vm');
  });

  it('fills every default', () => {
    const { spec } = parseSpecText(SIM_MINIMAL, 'c.yaml');
    const { postgres, replication, pgpool, ...objects } = specDefaults();
    expect(spec).toEqual({
      apiVersion: 'pgop.dev/v1',
      kind: 'Cluster',
      name: 's',
      provider: { type: 'sim' },
      postgres: {
        ...postgres,
        archiveScript: true,
        superuserPassword: { env: 'PGOP_SIM_PASSWORD' },
        hba: [],
      },
      nodes: [
        { name: 'a', address: '10.0.0.1', vcpus: 2, memoryMiB: 1024, rootDiskGiB: 20, dataDiskGiB: 40 },
      ],
      replication: { ...replication, password: { env: 'PGOP_SIM_PASSWORD' } },
      pgpool: {
        enabled: true,
        ...pgpool,
        numInitChildren: 24, // 32 would exceed (max_connections 100 - 3) / max_pool 4
      },
      ...objects,
    });
    expect(
      parseSpecText(edit(SIM_MINIMAL, 'metadata:', 'metadata:') + '  postgres: {version: 16}\n', 'c.yaml')
        .spec.postgres.dataDir,
    ).toBe('/u01/pg16/data');
  });

  it('documents in the schema the defaults parse applies', () => {
    const { spec } = parseSpecText(SIM_MINIMAL, 'c.yaml');
    const d = schema.$defs;
    expect(d.pgpool.default).toEqual(spec.pgpool);
    expect(d.failureDetection.default).toEqual(spec.failureDetection);
    const { password: _, ...replication } = spec.replication;
    expect(d.replication.default).toEqual(replication);
    for (const [k, v] of Object.entries(spec.nodes[0]!)) {
      const prop = (d.node.properties as Record<string, { default?: unknown }>)[k];
      if (prop?.default !== undefined) expect(prop.default, k).toEqual(v);
    }
    for (const k of ['archiveDir', 'backupDir', 'logDir', 'archiveScript', 'version'] as const) {
      expect(d.postgres.properties[k].default, k).toEqual(spec.postgres[k]);
    }
    const vm = parseSpecText(edit(LIBVIRT, '    uri: qemu:///system\n', ''), 'c.yaml').spec.provider;
    const lv = d.provider.oneOf[2]!.properties as unknown as Record<string, { default?: unknown }>;
    for (const k of ['uri', 'pool', 'dataDisk', 'osFamily', 'domainType', 'sshUser']) {
      expect(lv[k]!.default, k).toEqual((vm as unknown as Record<string, unknown>)[k]);
    }
  });

  it('has a schema that is valid JSON Schema 2020-12 under ajv strict mode', () => {
    const ajv = new Ajv2020({
      strict: true,
      strictRequired: false,
      allowUnionTypes: true,
      discriminator: true,
    });
    ajv.addKeyword({ keyword: 'patternErrorMessage', schemaType: 'string' });
    expect(ajv.validateSchema(schema), JSON.stringify(ajv.errors)).toBe(true);
    expect(() => ajv.compile(schema)).not.toThrow();
  });
});

describe('the seed cluster round-trips', () => {
  // shared/seed: $PGDATA/conf.d/custom.conf, verbatim values (quotes removed).
  const SEED_CONF: Record<string, string> = {
    ...Object.fromEntries(Object.entries(SEED_PARAMS).map(([k, v]) => [k, String(v)])),
    archive_command: '/opt/posgres/scripts/archive.sh  %p %f',
  };

  it('libvirt-3node expresses the seed', () => {
    const { spec } = parseSpecFile(join(specsDir, 'libvirt-3node.yaml'));
    const params = Object.fromEntries(
      Object.entries(spec.postgres.parameters).map(([k, v]) => [k, String(v)]),
    );
    const expected = { ...SEED_CONF };
    delete expected.listen_addresses; // pgop sets it per node
    delete expected.archive_command; // archiveScript: the seed's archive.sh (its typo'd path fixed)
    expect(params).toEqual(expected);
    expect(spec.postgres).toMatchObject({
      archiveScript: true,
      dataDir: '/u01/pg15/data',
      archiveDir: '/u02/archive',
      backupDir: '/u02/backup',
      logDir: '/var/log/postgres',
    });
    expect(spec.nodes).toEqual(
      ['pg01', 'pg02', 'pg03'].map((name, i) => ({
        name,
        address: `192.168.122.${10 + i}`,
        vcpus: 2, // virt-install --vcpus 2
        memoryMiB: 1024, // --memory 1024
        rootDiskGiB: 20, // qemu-img resize 20G
        dataDiskGiB: 40, // vol-create-as --capacity 40G
      })),
    );
    expect(spec.pgpool).toMatchObject({
      enabled: true,
      address: '192.168.122.20',
      onNodes: true, // the seed's pgpool on each guest, its virtual IP moved by pgop
      watchdog: { enabled: false },
    });
    expect(spec.roles).toEqual(
      seedRoles({ env: 'PGOP_CL_OWNER_PASSWORD' }, { env: 'PGOP_CL_USER_PASSWORD' }),
    );
    expect(spec.databases).toEqual(seedDatabases());
    expect(spec.grants).toEqual(seedGrants());
  });

  it('lab-3node keeps the seed settings with lab sizes and stderr logging', () => {
    const { spec } = parseSpecFile(join(specsDir, 'lab-3node.yaml'));
    const params = Object.fromEntries(
      Object.entries(spec.postgres.parameters).map(([k, v]) => [k, String(v)]),
    );
    const expected: Record<string, string> = {
      ...SEED_CONF,
      shared_buffers: '128MB',
      log_destination: 'stderr',
      log_directory: spec.postgres.logDir,
      wal_log_hints: 'on',
    };
    delete expected.listen_addresses;
    delete expected.archive_command;
    expect(params).toEqual(expected);
    // the seed's archive.sh gives way to pgBackRest (spec.backup), into a repository off the nodes
    expect(spec.postgres.archiveScript).toBe(false);
    expect(spec.backup).toMatchObject({
      repo: { path: '/var/lib/pgop/backup/lab', port: 8432 },
      encryption: { passphrase: { file: '/var/lib/pgop/secrets/lab/backup' } },
    });
    expect(spec.postgres.superuserPassword).toEqual({ file: '/var/lib/pgop/secrets/lab/postgres' });
    expect(spec.roles.map((r) => r.password)).toEqual([
      { file: '/var/lib/pgop/secrets/lab/cl_owner' },
      { file: '/var/lib/pgop/secrets/lab/cl_user' },
    ]);
    expect(spec.grants[0]).toMatchObject({
      role: 'cl_user',
      schema: 'cl_owner',
      tablePrivileges: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'],
    });
    expect(spec.roles[1]!.searchPath).toEqual(['$user', 'cl_owner', 'public']);
  });
});

describe('problems name file, line, column and path', () => {
  it('malformed YAML', () => {
    expect(problems(edit(LAB, '    type: lab', '\ttype: lab'))).toEqual([
      problem(7, 1, '(yaml)', 'Tabs are not allowed as indentation'),
    ]);
    expect(problems(edit(LAB, '    syncQuorum: 1', '    syncQuorum: 1\n    mode: async'))).toEqual([
      problem(23, 5, '(yaml)', 'Map keys must be unique'),
    ]);
    expect(problems(edit(LAB, '    address: 10.77.0.10', '    address: *pool'))).toEqual([
      problem(25, 14, '(yaml)', 'unknown alias *pool'),
    ]);
  });

  it('more than one document', () => {
    expect(problems(`${LAB}---\n${LAB}`)).toEqual([problem(26, 1, '(document)', 'one cluster per file')]);
  });

  it('an empty document', () => {
    expect(problems('# nothing\n')).toEqual([problem(1, 1, '(document)', 'empty document')]);
  });

  it('unknown field, at its key', () => {
    expect(problems(edit(LAB, '      address: 10.77.0.12', '      adress: 10.77.0.12'))).toEqual([
      problem(16, 7, 'spec.nodes[1].address', 'missing required field "address"'),
      problem(17, 7, 'spec.nodes[1].adress', 'unknown field "adress" (did you mean "address"?)'),
    ]);
    expect(problems(edit(LAB, 'kind: Cluster', 'kind: Cluster\nstatus: {}'))).toEqual([
      problem(3, 1, 'status', 'unknown field "status"'),
    ]);
  });

  it('wrong type, at the value', () => {
    expect(
      problems(edit(LAB, '      address: 10.77.0.12', '      address: 10.77.0.12\n      vcpus: two')),
    ).toEqual([problem(18, 14, 'spec.nodes[1].vcpus', 'must be integer, got string "two"')]);
    expect(problems(edit(LAB, '    syncQuorum: 1', '    syncQuorum: 1.5'))).toEqual([
      problem(22, 17, 'spec.replication.syncQuorum', 'must be integer, got number 1.5'),
    ]);
  });

  it('missing required field, at the parent map', () => {
    expect(
      problems(edit(LAB, '    superuserPassword: {env: PGOP_SUPERUSER_PASSWORD}', '    version: 15')),
    ).toEqual([
      problem(10, 5, 'spec.postgres.superuserPassword', 'missing required field "superuserPassword"'),
    ]);
  });

  it('duplicate node names', () => {
    expect(problems(edit(LAB, '    - name: pg03', '    - name: pg01'))).toEqual([
      problem(18, 13, 'spec.nodes[2].name', 'duplicate node name pg01 (also spec.nodes[0].name)'),
    ]);
  });

  it('duplicate node addresses', () => {
    expect(problems(edit(LAB, '      address: 10.77.0.13', '      address: 10.77.0.11'))).toEqual([
      problem(
        19,
        16,
        'spec.nodes[2].address',
        'duplicate node address 10.77.0.11 (also spec.nodes[0].address)',
      ),
    ]);
  });

  it('sync quorum larger than the standbys', () => {
    expect(problems(edit(LAB, '    syncQuorum: 1', '    syncQuorum: 3'))).toEqual([
      problem(22, 17, 'spec.replication.syncQuorum', 'syncQuorum 3 is more than the 2 standbys of 3 nodes'),
    ]);
    expect(problems(edit(LAB, '    syncQuorum: 1', '    syncQuorum: 0'))).toEqual([
      problem(22, 17, 'spec.replication.syncQuorum', 'must be >= 1, got number 0'),
    ]);
  });

  it('addresses outside the network or reserved', () => {
    expect(problems(edit(LAB, '      address: 10.77.0.12', '      address: 10.78.0.12'))).toEqual([
      problem(
        17,
        16,
        'spec.nodes[1].address',
        '10.78.0.12 is outside the network 10.77.0.0/24 (spec.provider.network)',
      ),
    ]);
    expect(problems(edit(LAB, '      address: 10.77.0.12', '      address: 10.77.0.1'))).toEqual([
      problem(17, 16, 'spec.nodes[1].address', 'reserved for the lab bridge'),
    ]);
    expect(problems(edit(LAB, '      address: 10.77.0.12', '      address: 10.77.0.255'))).toEqual([
      problem(17, 16, 'spec.nodes[1].address', 'broadcast address'),
    ]);
    expect(problems(edit(LAB, '    address: 10.77.0.10', '    address: 10.77.0.13'))).toEqual([
      problem(25, 14, 'spec.pgpool.address', 'is also the address of spec.nodes[2].address'),
    ]);
    expect(problems(edit(LIBVIRT, 'address: 192.168.122.11', 'address: 192.168.122.1'))).toEqual([
      problem(15, 29, 'spec.nodes[1].address', 'gateway'),
    ]);
    expect(problems(edit(LIBVIRT, 'address: 192.168.122.11', 'address: 192.168.122.0'))).toEqual([
      problem(15, 29, 'spec.nodes[1].address', 'network address'),
    ]);
    expect(problems(edit(LAB, '      address: 10.77.0.12', '      address: 10.77.0.256'))).toEqual([
      problem(17, 16, 'spec.nodes[1].address', 'must be an IPv4 address'),
    ]);
    expect(problems(edit(LAB, '    network: 10.77.0.0/24', '    network: 10.77.0.5/24'))).toEqual([
      problem(8, 14, 'spec.provider.network', 'host bits set: the network is 10.77.0.0/24'),
    ]);
  });

  it('the lab needs a pgpool address when pgpool is enabled', () => {
    expect(problems(LAB.replace('  pgpool:\n    address: 10.77.0.10\n', ''))).toEqual([
      problem(5, 1, 'spec.pgpool.address', 'missing required field "address"'),
    ]);
    expect(
      parseSpecText(edit(LAB, '    address: 10.77.0.10', '    enabled: false'), 'c.yaml').spec.pgpool.enabled,
    ).toBe(false);
  });

  describe('pool hosts (pgpool.hosts)', () => {
    // LAB's lines 1-25, then these (lines 26-30)
    const HOSTS = edit(
      LAB,
      '    address: 10.77.0.10\n',
      '    address: 10.77.0.10\n    hosts:\n      - name: pool-a\n        address: 10.77.0.21\n' +
        '      - name: pool-b\n        address: 10.77.0.22\n',
    );

    it('valid: each with its own address, the spec address the virtual IP', () => {
      const pp = parseSpecText(HOSTS, 'c.yaml').spec.pgpool;
      expect(pp.address).toBe('10.77.0.10');
      expect(pp.hosts).toEqual([
        { name: 'pool-a', address: '10.77.0.21' },
        { name: 'pool-b', address: '10.77.0.22' },
      ]);
    });

    it('names unique among pool hosts and nodes', () => {
      expect(problems(edit(HOSTS, 'name: pool-b', 'name: pool-a'))).toEqual([
        problem(
          29,
          15,
          'spec.pgpool.hosts[1].name',
          'duplicate pool host name pool-a (also spec.pgpool.hosts[0])',
        ),
      ]);
      expect(problems(edit(HOSTS, 'name: pool-b', 'name: pg02'))).toEqual([
        problem(29, 15, 'spec.pgpool.hosts[1].name', 'pool host name pg02 is also spec.nodes[1].name'),
      ]);
    });

    it("addresses their own: not a node's, not the virtual IP, not another pool host's", () => {
      const at = (message: string) => [problem(30, 18, 'spec.pgpool.hosts[1].address', message)];
      expect(problems(edit(HOSTS, 'address: 10.77.0.22', 'address: 10.77.0.12'))).toEqual(
        at('pool host address 10.77.0.12 is also the address of spec.nodes[1].address'),
      );
      expect(problems(edit(HOSTS, 'address: 10.77.0.22', 'address: 10.77.0.10'))).toEqual(
        at('10.77.0.10 is the virtual IP (spec.pgpool.address): give the pool host an address of its own'),
      );
      expect(problems(edit(HOSTS, 'address: 10.77.0.22', 'address: 10.77.0.21'))).toEqual(
        at('duplicate pool host address 10.77.0.21 (also spec.pgpool.hosts[0])'),
      );
    });

    it('the virtual IP is required with hosts', () => {
      const sim = `${SIM_MINIMAL}  pgpool:
    hosts:
      - {name: pool-a, address: 10.0.0.21}
      - {name: pool-b, address: 10.0.0.22}
`;
      expect(problems(sim)).toEqual([
        problem(
          8,
          5,
          'spec.pgpool.address',
          'missing required field "address" (the virtual IP the pool hosts',
        ),
      ]);
    });

    it("pgpool's own watchdog: with several pgpools, moving the spec's virtual IP", () => {
      const on = edit(HOSTS, '    hosts:', '    watchdog: {enabled: true}\n    hosts:');
      expect(parseSpecText(on, 'c.yaml').spec.pgpool.watchdog).toEqual({ enabled: true });
      const otherVip = edit(
        HOSTS,
        '    hosts:',
        '    watchdog: {enabled: true, vip: 10.77.0.30}\n    hosts:',
      );
      expect(problems(otherVip)).toEqual([
        problem(
          26,
          36,
          'spec.pgpool.watchdog.vip',
          "the watchdog moves the cluster's endpoint, address 10.77.0.10",
        ),
      ]);
      const onePool = edit(
        LAB,
        '    address: 10.77.0.10\n',
        '    address: 10.77.0.10\n    watchdog: {enabled: true}\n',
      );
      expect(problems(onePool)).toEqual([
        problem(
          26,
          25,
          'spec.pgpool.watchdog.enabled',
          "pgpool's own watchdog moves the virtual IP among several",
        ),
      ]);
    });

    it('pgpool on the nodes: the virtual IP is required, and hosts are excluded', () => {
      const onNodes = edit(HOSTS, '    hosts:', '    onNodes: true\n    hosts:');
      expect(problems(onNodes)).toEqual([
        problem(26, 14, 'spec.pgpool.onNodes', 'pgpool runs either on the nodes or on pool hosts'),
      ]);
      const noVip = edit(LAB, '    address: 10.77.0.10\n', '    onNodes: true\n');
      expect(problems(noVip).map((p) => p.path)).toEqual(['spec.pgpool.address']);
    });

    it('at least two', () => {
      const one = edit(HOSTS, '      - name: pool-b\n        address: 10.77.0.22\n', '');
      expect(problems(one)).toEqual([problem(27, 7, 'spec.pgpool.hosts', 'must have at least 2 items')]);
    });
  });

  it('plaintext passwords, never echoed', () => {
    let err: SpecError | undefined;
    try {
      parseSpecText(
        edit(LAB, '    password: {env: PGOP_REPLICATION_PASSWORD}', '    password: s3cr3t-Value'),
        'c.yaml',
      );
    } catch (e) {
      err = e as SpecError;
    }
    expect(err?.problems).toEqual([
      problem(23, 15, 'spec.replication.password', 'passwords are referenced, never written in a spec'),
    ]);
    expect(err?.message).not.toContain('s3cr3t');
    expect(problems(edit(LAB, '{env: PGOP_SUPERUSER_PASSWORD}', '{env: A, file: /etc/pgop/b}'))).toEqual([
      problem(10, 24, 'spec.postgres.superuserPassword', 'exactly one of {env: NAME} or {file: /abs/path}'),
    ]);
    expect(problems(edit(LAB, '{env: PGOP_SUPERUSER_PASSWORD}', '{value: s3cr3t}'))).toEqual([
      problem(10, 25, 'spec.postgres.superuserPassword.value', 'unknown field "value"'),
    ]);
  });

  it('unknown libvirt URI scheme, relative base image', () => {
    expect(problems(edit(LIBVIRT, 'uri: qemu:///system', 'uri: xen:///system'))).toEqual([
      problem(8, 10, 'spec.provider.uri', 'unknown URI scheme "xen"'),
    ]);
    expect(problems(edit(LIBVIRT, 'baseImage: /var/lib/pgop/images/', 'baseImage: images/'))).toEqual([
      problem(9, 16, 'spec.provider.baseImage', 'must be an absolute path'),
    ]);
    expect(problems(edit(LIBVIRT, 'type: libvirt', 'type: vmware'))).toEqual([
      problem(
        7,
        11,
        'spec.provider.type',
        'unknown provider type "vmware": must be one of sim, lab, libvirt',
      ),
    ]);
  });

  it('parameters pgop manages, and bad parameter names', () => {
    expect(problems(edit(LAB, '      wal_level: replica', "      listen_addresses: '*'"))).toEqual([
      problem(12, 7, 'spec.postgres.parameters.listen_addresses', 'listen_addresses is managed by pgop'),
    ]);
    expect(problems(edit(LAB, '      wal_level: replica', '      Shared_Buffers: 1GB'))).toEqual([
      problem(12, 7, 'spec.postgres.parameters.Shared_Buffers', 'invalid name "Shared_Buffers"'),
    ]);
    expect(problems(edit(LAB, '      wal_level: replica', '      work_mem: [1]'))).toEqual([
      problem(12, 17, 'spec.postgres.parameters.work_mem', 'must be string, number or boolean, got array'),
    ]);
  });

  it('pgpool children that postgres could not give a pooled session each', () => {
    // pgpool's sizing rule:
    //   num_init_children * max_pool (4) <= max_connections - superuser_reserved_connections
    expect(
      problems(edit(LAB, '    address: 10.77.0.10', '    address: 10.77.0.10\n    numInitChildren: 25')),
    ).toEqual([
      problem(
        26,
        22,
        'spec.pgpool.numInitChildren',
        'numInitChildren 25 x max_pool 4 = 100 pooled sessions per backend, ' +
          'more than max_connections 100 - superuser_reserved_connections 3 = 97: use at most 24',
      ),
    ]);
    expect(
      parseSpecText(
        edit(LAB, '    address: 10.77.0.10', '    address: 10.77.0.10\n    numInitChildren: 24'),
        'c.yaml',
      ).spec.pgpool.numInitChildren,
    ).toBe(24);
    const raised = edit(
      edit(
        LAB,
        '      wal_level: replica',
        "      wal_level: replica\n      max_connections: '200'\n      superuser_reserved_connections: 5",
      ),
      '    address: 10.77.0.10',
      '    address: 10.77.0.10\n    numInitChildren: 48',
    );
    expect(parseSpecText(raised, 'c.yaml').spec.pgpool.numInitChildren).toBe(48);
    expect(problems(edit(raised, 'numInitChildren: 48', 'numInitChildren: 49'))).toEqual([
      problem(
        28,
        22,
        'spec.pgpool.numInitChildren',
        'numInitChildren 49 x max_pool 4 = 196 pooled sessions per backend, ' +
          'more than max_connections 200 - superuser_reserved_connections 5 = 195: use at most 48',
      ),
    ]);
    // unset: pgpool's default 32 where it fits, else the most that fits
    expect(
      parseSpecText(raised.replace('    numInitChildren: 48\n', ''), 'c.yaml').spec.pgpool.numInitChildren,
    ).toBe(32);
    expect(parseSpecText(LAB, 'c.yaml').spec.pgpool.numInitChildren).toBe(24);
  });

  it('names that become host names', () => {
    expect(problems(edit(LAB, '  name: lab', '  name: Lab_1'))).toEqual([
      problem(4, 9, 'metadata.name', 'must be a lowercase name'),
    ]);
  });

  it('roles, databases and schemas that are referenced must exist', () => {
    const text = `${LAB}  roles: [{name: cl_owner}]
  databases:
    - name: critlib
      owner: nobody
      schemas: [{name: cl_owner, owner: cl_owner}]
  grants:
    - {role: cl_user, database: critlib, schema: cl_owner}
    - {role: cl_owner, database: other, schema: cl_owner}
    - {role: cl_owner, database: critlib, schema: nope}
`;
    expect(problems(text)).toEqual([
      problem(29, 14, 'spec.databases[0].owner', 'unknown role "nobody"'),
      problem(32, 14, 'spec.grants[0].role', 'unknown role "cl_user"'),
      problem(33, 34, 'spec.grants[1].database', 'unknown database "other"'),
      problem(34, 51, 'spec.grants[2].schema', 'unknown schema "nope"'),
    ]);
  });

  it('lists every problem at once, in document order', () => {
    let text = edit(LAB, '  name: lab', '  name: LAB');
    text = edit(text, '      address: 10.77.0.12', '      address: 10.77.0.11');
    text = edit(text, '    syncQuorum: 1', '    syncQuorum: 5');
    expect(problems(text).map((p) => `${p.line}:${p.column} ${p.path}`)).toEqual([
      '4:9 metadata.name',
      '17:16 spec.nodes[1].address',
      '22:17 spec.replication.syncQuorum',
    ]);
  });

  it('a missing file', () => {
    expect(() => parseSpecFile('/nonexistent/pgop.yaml')).toThrow(SpecError);
    try {
      parseSpecFile('/nonexistent/pgop.yaml');
    } catch (e) {
      expect((e as SpecError).problems).toEqual([
        {
          file: '/nonexistent/pgop.yaml',
          line: 1,
          column: 1,
          path: '(file)',
          message: 'cannot read spec: no such file',
        },
      ]);
      expect((e as SpecError).kind).toBe('terminal');
    }
  });
});

describe('hash', () => {
  it('is stable across key order and formatting', () => {
    const a = parseSpecText(SIM_MINIMAL, 'a.yaml');
    const b = parseSpecText(
      `kind: Cluster
spec:
  nodes:
    - address: 10.0.0.1   # same node, keys swapped
      name: a
  provider:
    type: sim
metadata:
  name: s
apiVersion: pgop.dev/v1
`,
      'b.yaml',
    );
    expect(b.hash).toBe(a.hash);
    expect(a.hash).toMatch(/^[0-9a-f]{64}$/);
    // Writing a default explicitly is the same desired state.
    expect(parseSpecText(`${SIM_MINIMAL}  replication: {mode: async}\n`, 'c.yaml').hash).toBe(a.hash);
  });

  it('changes when a value changes', () => {
    const a = parseSpecText(SIM_MINIMAL, 'a.yaml');
    expect(parseSpecText(edit(SIM_MINIMAL, '10.0.0.1', '10.0.0.2'), 'a.yaml').hash).not.toBe(a.hash);
    expect(parseSpecText(`${SIM_MINIMAL}  pgpool: {port: 9998}\n`, 'a.yaml').hash).not.toBe(a.hash);
  });

  it('canonicalJson sorts keys at every level and keeps array order', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { y: 1, x: 2 }], c: 'x' }, u: undefined })).toBe(
      '{"a":{"c":"x","d":[3,{"x":2,"y":1}]},"b":1}',
    );
  });
});

describe('secrets', () => {
  const saved = { ...process.env };
  afterEach(() => {
    process.env = { ...saved };
  });

  it('resolves env and file references, trimming the trailing newline', () => {
    process.env.PGOP_TEST_SECRET = 'from-env';
    expect(resolveSecret({ env: 'PGOP_TEST_SECRET' }, 'the test password')).toBe('from-env');
    const dir = tempDir('pgop-secret');
    writeFileSync(join(dir, 'pw'), 'from-file\n');
    expect(resolveSecret({ file: join(dir, 'pw') }, 'the test password')).toBe('from-file');
  });

  it('fails terminally without the value in the message', () => {
    delete process.env.PGOP_TEST_MISSING;
    let err: unknown;
    try {
      resolveSecret({ env: 'PGOP_TEST_MISSING' }, 'the replication password');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PgopError);
    expect((err as PgopError).kind).toBe('terminal');
    expect((err as PgopError).message).toBe(
      'cannot resolve the replication password: environment variable PGOP_TEST_MISSING is not set',
    );
    expect(() => resolveSecret({ file: '/nonexistent/pw' }, 'x')).toThrow(
      'cannot resolve x: file /nonexistent/pw does not exist',
    );
  });

  it('describes references for display', () => {
    expect(describeSecret({ env: 'A' })).toBe('env:A');
    expect(describeSecret({ file: '/p' })).toBe('file:/p');
  });
});
