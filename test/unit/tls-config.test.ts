// What TLS changes in the files pgop renders for postgres (conf, pg_hba, standby conninfo, the
// configuration hash) and how the spec's tls section parses.

import { describe, expect, it } from 'vitest';
import { minimalSimYaml, simSpec } from '../helpers/sim-spec.js';
import { labSpec } from '../helpers/lab-spec.js';
import {
  desiredConfigHash,
  nodeSslConninfo,
  renderConf,
  renderHba,
  renderStandbyConf,
  tlsNodePaths,
} from '../../src/drivers/postgres/config.js';
import { parseSpecText } from '../../src/spec/parse.js';
import { tlsOf } from '../../src/tls/settings.js';
import type { ClusterSpec, HbaRule } from '../../src/spec/types.js';

const rows = (hba: string) =>
  hba
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.split('\t').filter(Boolean));

function spec(hba: HbaRule[] = [], tls?: Partial<NonNullable<ClusterSpec['tls']>>): ClusterSpec {
  const s = labSpec({ network: '10.77.0.0/24', nodes: 3 });
  s.postgres.hba = hba;
  if (tls) s.tls = { enabled: true, certificateDays: 90, renewBeforeDays: 30, hostRules: 'hostssl', ...tls };
  return s;
}

describe('postgres TLS rendering', () => {
  it(
    'conf: ssl on with the node files beside the data directory, TLS 1.2 at least; spec ssl settings ' +
      'cannot switch it off',
    () => {
      const s = spec();
      s.postgres.parameters = { ssl: 'off', ssl_cert_file: '/etc/evil.crt', ssl_ciphers: 'HIGH' };
      const conf = renderConf(s, s.nodes[0]!);
      expect(tlsNodePaths(s)).toEqual({
        cert: '/u01/pg15/pgop-server.crt',
        key: '/u01/pg15/pgop-server.key',
        ca: '/u01/pg15/pgop-ca.crt',
      });
      expect(conf).toContain('ssl = on');
      expect(conf).not.toContain('ssl = off');
      expect(conf).not.toContain('evil');
      expect(conf).toContain("ssl_cert_file = '/u01/pg15/pgop-server.crt'");
      expect(conf).toContain("ssl_key_file = '/u01/pg15/pgop-server.key'");
      expect(conf).toContain("ssl_ca_file = '/u01/pg15/pgop-ca.crt'");
      expect(conf).toContain("ssl_min_protocol_version = 'TLSv1.2'");
      expect(conf).toContain("ssl_ciphers = 'HIGH'");
      // a stricter minimum from the spec stands
      s.postgres.parameters = { ssl_min_protocol_version: 'TLSv1.3' };
      expect(renderConf(s, s.nodes[0]!)).toMatch(/ssl_min_protocol_version = 'TLSv1.3'/);
      expect(renderConf(s, s.nodes[0]!)).not.toMatch(/TLSv1.2/);
    },
  );

  it(
    'pg_hba: every network line hostssl + scram, spec host rules too; explicit hostnossl stays; local ' +
      'stays',
    () => {
      const s = spec([
        { type: 'host', database: 'app', user: 'all', address: '10.77.0.0/24', method: 'scram-sha-256' },
        {
          type: 'hostnossl',
          database: 'legacy',
          user: 'old',
          address: '10.77.0.99/32',
          method: 'scram-sha-256',
        },
        { type: 'hostssl', database: 'all', user: 'all', address: '10.77.0.0/24', method: 'cert' },
        { type: 'local', database: 'all', user: 'all', method: 'peer' },
      ]);
      const r = rows(renderHba(s));
      expect(r).toEqual([
        ['local', 'all', 'postgres', 'peer'],
        ['hostssl', 'replication', 'replicator', '10.77.0.0/24', 'scram-sha-256'],
        ['hostssl', 'all', 'postgres', '10.77.0.0/24', 'scram-sha-256'],
        ['hostssl', 'app', 'all', '10.77.0.0/24', 'scram-sha-256'],
        ['hostnossl', 'legacy', 'old', '10.77.0.99/32', 'scram-sha-256'],
        ['hostssl', 'all', 'all', '10.77.0.0/24', 'cert'],
        ['local', 'all', 'all', 'peer'],
      ]);
    },
  );

  it(
    'pg_hba: hostRules as-written keeps the spec host rules (pgop lines stay hostssl); tls off: host ' +
      'everywhere',
    () => {
      const rule: HbaRule = {
        type: 'host',
        database: 'app',
        user: 'all',
        address: '10.77.0.0/24',
        method: 'scram-sha-256',
      };
      const asWritten = rows(renderHba(spec([rule], { hostRules: 'as-written' })));
      expect(asWritten).toContainEqual(['host', 'app', 'all', '10.77.0.0/24', 'scram-sha-256']);
      expect(asWritten).toContainEqual([
        'hostssl',
        'replication',
        'replicator',
        '10.77.0.0/24',
        'scram-sha-256',
      ]);
      const off = rows(renderHba(spec([rule], { enabled: false })));
      expect(off.filter((x) => x[0] === 'hostssl')).toEqual([]);
      expect(renderConf(spec([], { enabled: false }), spec().nodes[0]!)).not.toMatch(/^ssl/m);
    },
  );

  it('pg_hba: password, md5 and trust are refused on network lines', () => {
    for (const method of ['password', 'md5', 'trust']) {
      const s = spec([
        { type: 'host', database: 'all', user: 'all', address: '10.0.0.0/8', method: method as never },
      ]);
      expect(() => renderHba(s), method).toThrow(new RegExp(method));
    }
  });

  it(
    'replication, pg_basebackup and pg_rewind connect ' + 'with verify-full against the CA file on the node',
    () => {
      const s = spec();
      const conf = renderStandbyConf(s, s.nodes[1]!, s.nodes[0]!);
      expect(conf).toContain("sslmode=verify-full sslrootcert=''/u01/pg15/pgop-ca.crt''");
      expect(nodeSslConninfo(s)).toEqual(['sslmode=verify-full', "sslrootcert='/u01/pg15/pgop-ca.crt'"]);
      expect(nodeSslConninfo(spec([], { enabled: false }))).toEqual([]);
      expect(renderStandbyConf(spec([], { enabled: false }), s.nodes[1]!, s.nodes[0]!)).not.toContain(
        'sslmode',
      );
    },
  );

  it('the configuration hash covers the certificate, key and CA: a replaced file on a node is drift', () => {
    const s = spec();
    const n = s.nodes[0]!;
    const good = desiredConfigHash(s, n, { cert: 'C', key: 'K', ca: 'A' });
    expect(desiredConfigHash(s, n, { cert: 'C2', key: 'K', ca: 'A' })).not.toBe(good);
    expect(desiredConfigHash(s, n, { cert: 'C', key: 'K2', ca: 'A' })).not.toBe(good);
    expect(desiredConfigHash(s, n, { cert: 'C', key: 'K', ca: 'A2' })).not.toBe(good);
    // no material yet: never equal to what a node reports (so the next pass writes the files)
    expect(desiredConfigHash(s, n, null)).not.toBe(desiredConfigHash(s, n, { cert: '', key: '', ca: '' }));
    // TLS off: the hash is what it was before TLS existed
    const off = spec([], { enabled: false });
    expect(desiredConfigHash(off, n, null)).toBe(desiredConfigHash(off, n));
  });

  it('the simulated provider has no TLS', () => {
    expect(tlsOf(simSpec()).enabled).toBe(false);
    expect(tlsOf(spec())).toEqual({
      enabled: true,
      certificateDays: 90,
      renewBeforeDays: 30,
      hostRules: 'hostssl',
    });
  });
});

describe('spec tls section', () => {
  const base = minimalSimYaml('t');
  it('absent: no field (the secure defaults apply); present: filled in', () => {
    expect(parseSpecText(base, 't.yaml').spec.tls).toBeUndefined();
    expect(
      parseSpecText(`${base}  tls: {certificateDays: 30, renewBeforeDays: 10}\n`, 't.yaml').spec.tls,
    ).toEqual({ enabled: true, certificateDays: 30, renewBeforeDays: 10, hostRules: 'hostssl' });
  });
  it('rejects a renewal window as long as the lifetime, and unknown settings, with the position', () => {
    expect(() =>
      parseSpecText(`${base}  tls: {certificateDays: 30, renewBeforeDays: 30}\n`, 't.yaml'),
    ).toThrow(
      /t\.yaml:\d+:\d+: spec\.tls\.renewBeforeDays: renewBeforeDays 30 must be less than certificateDays/,
    );
    expect(() => parseSpecText(`${base}  tls: {mode: off}\n`, 't.yaml')).toThrow(/spec\.tls/);
    expect(() => parseSpecText(`${base}  tls: {hostRules: host}\n`, 't.yaml')).toThrow(
      /spec\.tls\.hostRules/,
    );
  });
});
