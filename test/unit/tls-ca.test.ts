// The cluster CA and its server certificates: what is issued (SANs, validity, key usage), that
// OpenSSL and Node accept it, and when ClusterTls renews (in memory, no issuance when nothing is
// due).

import { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCa, issueServer } from '../../src/tls/ca.js';
import { certFacts, judgeCa, judgeServerCert } from '../../src/tls/check.js';
import { ClusterTls, forgetTlsCache, wantedHosts } from '../../src/tls/material.js';
import { labSpec } from '../helpers/lab-spec.js';

const DAY = 86_400_000;
const T0 = Date.parse('2026-01-10T00:00:00Z');

describe('issuance', () => {
  it(
    'a CA and a server certificate with the node name and address as SANs, verifiable by OpenSSL and ' +
      'Node',
    async () => {
      const ca = await createCa('lab', new Date(T0), 3650);
      const srv = await issueServer(ca, { name: 'pg01', ips: ['10.77.0.11'] }, new Date(T0), 90);
      const c = new X509Certificate(srv.cert);
      const caC = new X509Certificate(ca.cert);
      expect(caC.ca).toBe(true);
      expect(c.ca).toBe(false);
      expect(c.subjectAltName).toBe('DNS:pg01, IP Address:10.77.0.11');
      expect(c.checkIP('10.77.0.11')).toBe('10.77.0.11');
      expect(c.checkIP('10.77.0.12')).toBeUndefined();
      expect(c.checkHost('pg01')).toBe('pg01');
      expect(c.checkIssued(caC) && c.verify(caC.publicKey)).toBe(true);
      expect(c.keyUsage).toContain('1.3.6.1.5.5.7.3.1'); // serverAuth
      const f = certFacts(srv.cert)!;
      expect(f.notAfter - T0).toBe(90 * DAY);
      expect(T0 - f.notBefore).toBe(3_600_000); // an hour back: clock skew
      expect(c.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
      expect(srv.key).toMatch(/^-----BEGIN PRIVATE KEY-----/);
      if (existsSync('/usr/bin/openssl')) {
        const dir = mkdtempSync(join(tmpdir(), 'pgop-tls-'));
        try {
          writeFileSync(join(dir, 'ca.crt'), ca.cert);
          writeFileSync(join(dir, 'srv.crt'), srv.cert);
          const at = String(Math.floor((T0 + DAY) / 1000));
          const out = execFileSync('openssl', [
            'verify',
            '-attime',
            at,
            '-purpose',
            'sslserver',
            '-verify_ip',
            '10.77.0.11',
            '-CAfile',
            join(dir, 'ca.crt'),
            join(dir, 'srv.crt'),
          ]).toString();
          expect(out).toMatch(/OK/);
          expect(() =>
            execFileSync(
              'openssl',
              [
                'verify',
                '-attime',
                at,
                '-verify_ip',
                '10.77.0.99',
                '-CAfile',
                join(dir, 'ca.crt'),
                join(dir, 'srv.crt'),
              ],
              { stdio: 'pipe' },
            ),
          ).toThrow();
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      }
    },
  );

  it('judges: fine, due (usable), and wrong (names, issuer, key, expiry)', async () => {
    const ca = await createCa('lab', new Date(T0), 3650);
    const other = await createCa('lab', new Date(T0), 3650);
    const want = { dns: ['pg01'], ips: ['10.77.0.11'] };
    const srv = await issueServer(ca, { name: 'pg01', ips: ['10.77.0.11'] }, new Date(T0), 90);
    const foreign = await issueServer(other, { name: 'pg01', ips: ['10.77.0.11'] }, new Date(T0), 90);
    expect(judgeServerCert(srv.cert, srv.key, ca.cert, want, T0 + DAY, 30)).toBeNull();
    expect(judgeServerCert(srv.cert, srv.key, ca.cert, want, T0 + 61 * DAY, 30)).toMatchObject({
      usable: true,
      reason: expect.stringMatching(/expires in 29 days/),
    });
    expect(judgeServerCert(srv.cert, srv.key, ca.cert, want, T0 + 91 * DAY, 30)).toMatchObject({
      usable: false,
      reason: expect.stringMatching(/expired/),
    });
    expect(
      judgeServerCert(srv.cert, srv.key, ca.cert, { dns: ['pg01'], ips: ['10.77.0.21'] }, T0 + DAY, 30),
    ).toMatchObject({ usable: false, reason: expect.stringMatching(/names differ/) });
    expect(judgeServerCert(foreign.cert, foreign.key, ca.cert, want, T0 + DAY, 30)).toMatchObject({
      usable: false,
      reason: 'not issued by the current cluster CA',
    });
    expect(judgeServerCert(srv.cert, foreign.key, ca.cert, want, T0 + DAY, 30)).toMatchObject({
      usable: false,
      reason: expect.stringMatching(/key does not match/),
    });
    expect(judgeServerCert(null, null, ca.cert, want, T0, 30)).toMatchObject({ usable: false });
    expect(judgeCa(ca.cert, ca.key, T0 + DAY, 365)).toBeNull();
    expect(judgeCa(ca.cert, ca.key, T0 + 3300 * DAY, 365)).toMatchObject({ usable: true });
    expect(judgeCa(ca.cert, other.key, T0, 365)).toMatchObject({ usable: false });
  });
});

describe('ClusterTls: the material on disk, renewal', () => {
  let dir: string;
  let now: number;
  const spec = () => labSpec({ name: 'tt', network: '10.77.0.0/24', nodes: 3 });
  const make = () => new ClusterTls({ dirOf: () => join(dir, 'tt', 'tls'), now: () => now });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'pgop-tlsm-'));
    now = T0;
    forgetTlsCache();
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it(
    'issues a CA and one certificate per node and for pgpool, ' + 'private files in a 0700 directory',
    async () => {
      const m = await make().ensure(spec());
      const tdir = join(dir, 'tt', 'tls');
      expect(statSync(tdir).mode & 0o777).toBe(0o700);
      for (const f of [
        'ca.crt',
        'ca.key',
        'node-pg1.crt',
        'node-pg1.key',
        'node-pg3.key',
        'pool.crt',
        'pool.key',
      ]) {
        expect(statSync(join(tdir, f)).mode & 0o777, f).toBe(0o600);
      }
      expect([...m.hosts.keys()].sort()).toEqual(['node-pg1', 'node-pg2', 'node-pg3', 'pool']);
      expect(new X509Certificate(m.hosts.get('pool')!.cert).subjectAltName).toBe(
        'DNS:pgpool, IP Address:10.77.0.10',
      );
      expect(new X509Certificate(m.hosts.get('node-pg2')!.cert).subjectAltName).toBe(
        'DNS:pg2, IP Address:10.77.0.12',
      );
      expect(m.caBundle).toBe(readFileSync(join(tdir, 'ca.crt'), 'utf8'));
    },
  );

  it('nothing due: the same material, nothing issued (also after a restart, from disk)', async () => {
    const a = await make().ensure(spec());
    now += DAY;
    const b = await make().ensure(spec());
    expect(b.hosts.get('node-pg1')!.cert).toBe(a.hosts.get('node-pg1')!.cert);
    forgetTlsCache();
    now += 20 * DAY;
    const c = await make().ensure(spec());
    expect(c.hosts.get('node-pg1')!.cert).toBe(a.hosts.get('node-pg1')!.cert);
    expect(c.ca.cert).toBe(a.ca.cert);
  });

  it(
    'a changed address or a new node gets a certificate at once; ' + 'a due one is renewed in the background',
    async () => {
      const tls = make();
      const a = await tls.ensure(spec());
      const moved = spec();
      moved.nodes[1]!.address = '10.77.0.42';
      const b = await tls.ensure(moved);
      expect(new X509Certificate(b.hosts.get('node-pg2')!.cert).subjectAltName).toBe(
        'DNS:pg2, IP Address:10.77.0.42',
      );
      expect(b.hosts.get('node-pg1')!.cert).toBe(a.hosts.get('node-pg1')!.cert);
      // 61 days on: 29 days left of 90, renewed 30 ahead: the probe gets the old ones at once
      now += 61 * DAY;
      const due = await tls.ensure(moved);
      expect(due.hosts.get('node-pg1')!.cert).toBe(a.hosts.get('node-pg1')!.cert);
      await new Promise((r) => setTimeout(r, 300));
      now += 11_000;
      const renewed = await tls.ensure(moved);
      const f = certFacts(renewed.hosts.get('node-pg1')!.cert)!;
      expect(f.notAfter).toBe(T0 + 61 * DAY + 90 * DAY);
      expect(renewed.ca.cert).toBe(a.ca.cert);
    },
  );

  it('a CA near its end is replaced; the previous one stays in the bundle while it is valid', async () => {
    const tls = make();
    const a = await tls.ensure(spec());
    now += 3300 * DAY; // 350 days left of 3650: renewed a year ahead
    await tls.ensure(spec()); // due: renewed in the background
    await new Promise((r) => setTimeout(r, 500));
    now += 11_000;
    const b = await tls.ensure(spec());
    expect(b.ca.cert).not.toBe(a.ca.cert);
    expect(b.caBundle).toContain(a.ca.cert.trim());
    expect(b.caBundle.startsWith(b.ca.cert.trim())).toBe(true);
    // every server certificate is from the new CA
    const caC = new X509Certificate(b.ca.cert);
    for (const h of b.hosts.values()) expect(new X509Certificate(h.cert).checkIssued(caC)).toBe(true);
  });

  it('a cluster deleted (directory gone) and made again gets a new CA', async () => {
    const tls = make();
    const a = await tls.ensure(spec());
    rmSync(join(dir, 'tt'), { recursive: true });
    now += 11_000;
    const b = await tls.ensure(spec());
    expect(b.ca.cert).not.toBe(a.ca.cert);
    expect(existsSync(join(dir, 'tt', 'tls', 'ca.key'))).toBe(true);
  });

  it('the watchdog VIP is a SAN of the pgpool certificate', () => {
    const s = spec();
    s.pgpool.watchdog = { enabled: true, vip: '10.77.0.100' };
    expect(wantedHosts(s).get('pool')).toEqual({ dns: ['pgpool'], ips: ['10.77.0.10', '10.77.0.100'] });
  });

  it('the pgpool certificate names every pool host and the virtual IP', () => {
    const s = spec();
    s.pgpool.hosts = [
      { name: 'pool-a', address: '10.77.0.21' },
      { name: 'pool-b', address: '10.77.0.22' },
    ];
    expect(wantedHosts(s).get('pool')).toEqual({
      dns: ['pgpool'],
      ips: ['10.77.0.10', '10.77.0.21', '10.77.0.22'],
    });
  });
});
