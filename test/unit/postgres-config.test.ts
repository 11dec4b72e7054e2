import { describe, expect, it } from 'vitest';
import { createHash, createHmac } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, existsSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simSpec } from '../helpers/sim-spec.js';
import { SEED_PARAMS } from '../helpers/seed.js';
import {
  ARCHIVE_SCRIPT_PATH,
  LAB_SCRIPT_DIR,
  archiveScriptPath,
  PER_NODE_KEYS,
  canFollowTimeline,
  confQuote,
  configHashOf,
  desiredConfigHash,
  formatLsn,
  nodeOptionString,
  nodeOptions,
  parseLsn,
  parseTimelineHistory,
  quoteIdent,
  quoteLiteral,
  renderArchiveScript,
  renderConf,
  renderHba,
  renderStandbyConf,
  renderReplicationPassfile,
  replicationPassfilePath,
  renderSyncConf,
  scramKeys,
  scramVerifier,
  slotName,
  syncStandbyNamesValue,
  verifyScram,
} from '../../src/drivers/postgres/config.js';
import { conninfoHost } from '../../src/drivers/postgres/probe-query.js';
import { printfEscape } from '../../src/drivers/remote/files.js';
import type { ClusterSpec } from '../../src/spec/types.js';

function seedSpec(over: Partial<ClusterSpec['postgres']> = {}): ClusterSpec {
  const s = simSpec({ provider: { type: 'lab', network: '10.77.0.0/24' } as never });
  s.provider = { type: 'lab', network: '10.77.0.0/24' };
  s.postgres = {
    ...s.postgres,
    parameters: { ...SEED_PARAMS },
    hba: [
      { type: 'host', database: 'critlib', user: 'all', address: '10.77.0.0/24', method: 'scram-sha-256' },
    ],
    ...over,
  };
  return s;
}

describe('renderConf', () => {
  it('carries every seed setting', () => {
    const conf = renderConf(seedSpec(), seedSpec().nodes[0]!);
    for (const line of [
      "log_destination = 'syslog,csvlog'",
      "logging_collector = 'on'",
      "log_directory = '/var/log/postgres'",
      "log_filename = 'postgresql-%Y-%m-%d.log'",
      'log_rotation_size = 0',
      'log_min_duration_statement = -1',
      "log_line_prefix = '%m %c %u - '",
      "log_statement = 'all'",
      "log_timezone = 'Europe/Brussels'",
      "shared_buffers = '512MB'",
      "checkpoint_timeout = '15min'",
      'max_replication_slots = 5',
      "archive_mode = 'on'",
      "wal_level = 'replica'",
      'max_wal_senders = 5',
      "hot_standby = 'on'",
      "hot_standby_feedback = 'on'",
      'wal_log_hints = on',
    ]) {
      expect(conf.split('\n')).toContain(line);
    }
  });

  it('adds the archive script when archive_mode is on and no archive_command is given', () => {
    const conf = renderConf(seedSpec(), seedSpec().nodes[0]!);
    // lab nodes keep it on the seed's private /opt/postgres; elsewhere /opt/pgop/scripts
    expect(archiveScriptPath(seedSpec())).toBe(`${LAB_SCRIPT_DIR}/archive.sh`);
    expect(conf).toContain(`archive_command = '${LAB_SCRIPT_DIR}/archive.sh %p %f'`);
    const sim = seedSpec();
    sim.provider = { type: 'sim' };
    expect(renderConf(sim)).toContain(`archive_command = '${ARCHIVE_SCRIPT_PATH} %p %f'`);
    expect(ARCHIVE_SCRIPT_PATH).toBe('/opt/pgop/scripts/archive.sh');
    const off = seedSpec();
    off.postgres.parameters.archive_mode = 'off';
    expect(renderConf(off)).not.toContain('archive_command');
    const noScript = seedSpec({ archiveScript: false });
    expect(renderConf(noScript)).not.toContain('archive_command');
    const own = seedSpec();
    own.postgres.parameters.archive_command = '/bin/true';
    expect(renderConf(own)).toContain("archive_command = '/bin/true'");
    expect(renderConf(own)).not.toContain('archive.sh');
  });

  it('never writes per-node or pgop-managed settings', () => {
    const s = seedSpec();
    s.postgres.parameters.port = 5433;
    s.postgres.parameters.cluster_name = 'x';
    s.postgres.parameters.synchronous_standby_names = '*';
    s.postgres.parameters.primary_conninfo = 'host=x';
    const conf = renderConf(s, s.nodes[0]!);
    const assigned = conf
      .split('\n')
      .filter((l) => !l.startsWith('#') && l.includes('='))
      .map((l) => l.split('=')[0]!.trim());
    for (const k of [...PER_NODE_KEYS, 'synchronous_standby_names', 'primary_conninfo', 'primary_slot_name'])
      expect(assigned).not.toContain(k);
  });

  it('is identical for every node (pg_basebackup copies it)', () => {
    const s = seedSpec();
    expect(renderConf(s, s.nodes[0]!)).toBe(renderConf(s, s.nodes[1]!));
    expect(desiredConfigHash(s, s.nodes[0]!)).toBe(desiredConfigHash(s, s.nodes[2]!));
  });

  it('fills the replication baseline only where the spec is silent', () => {
    const s = seedSpec();
    s.postgres.parameters = { shared_buffers: '128MB' };
    const conf = renderConf(s);
    expect(conf).toContain("wal_level = 'replica'");
    expect(conf).toContain('hot_standby = on');
    expect(conf).toContain('max_wal_senders = 10');
    expect(conf).toContain("log_directory = '/var/log/postgres'");
  });

  it('quotes strings safely and rejects newlines and bad names', () => {
    expect(confQuote("it's")).toBe("'it''s'");
    expect(confQuote('a\\b')).toBe("'a\\\\b'");
    const s = seedSpec();
    s.postgres.parameters = { 'bad name': 1 };
    expect(() => renderConf(s)).toThrow(/invalid name/);
    s.postgres.parameters = { log_line_prefix: 'a\nb' };
    expect(() => renderConf(s)).toThrow(/newline/);
  });
});

describe('per-node options', () => {
  it('go on the command line: listen address, port, cluster name, socket dir', () => {
    const s = seedSpec();
    const n = s.nodes[1]!;
    const opts = nodeOptions(s, n);
    expect(opts).toContain(`listen_addresses=*`); // the spec's value wins when given
    expect(opts).toContain('port=5432');
    expect(opts).toContain(`cluster_name=${n.name}`);
    expect(opts).toContain('unix_socket_directories=/var/run/postgresql');
    delete s.postgres.parameters.listen_addresses;
    expect(nodeOptions(s, n)).toContain(`listen_addresses=${n.address}`);
    expect(nodeOptionString(s, n)).toBe(
      `-c listen_addresses=${n.address} -c port=5432 -c cluster_name=${n.name} ` +
        '-c unix_socket_directories=/var/run/postgresql',
    );
  });

  it('rejects values that would need shell tricks', () => {
    const s = seedSpec();
    s.postgres.parameters.listen_addresses = '$(reboot)';
    expect(() => nodeOptions(s, s.nodes[0]!)).toThrow(/command line/);
  });
});

describe('renderHba', () => {
  it('peer locally, scram from the network, spec rules after, never trust', () => {
    const s = seedSpec();
    const hba = renderHba(s);
    const rows = hba
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => l.split(/\s+/));
    expect(rows[0]).toEqual(['local', 'all', 'postgres', 'peer']);
    // TLS on (the default): every network line is hostssl, the spec's `host` rule too
    expect(rows).toContainEqual(['hostssl', 'replication', 'replicator', '10.77.0.0/24', 'scram-sha-256']);
    expect(rows).toContainEqual(['hostssl', 'all', 'postgres', '10.77.0.0/24', 'scram-sha-256']);
    expect(rows[rows.length - 1]).toEqual(['hostssl', 'critlib', 'all', '10.77.0.0/24', 'scram-sha-256']);
    expect(rows.filter((r) => r[0] === 'host')).toEqual([]);
    expect(hba).not.toMatch(/\btrust\b/);
    for (const r of rows) if (r[0] !== 'local') expect(r[r.length - 1]).not.toBe('trust');
  });

  it('uses the libvirt network cidr and refuses trust rules', () => {
    const s = seedSpec();
    s.provider = {
      type: 'libvirt',
      uri: 'qemu:///system',
      baseImage: '/x',
      pool: { name: 'p', path: '/p' },
      network: { name: 'n', cidr: '192.168.122.0/24', gateway: '192.168.122.1' },
      dataDisk: { layout: 'lvm', filesystem: 'xfs' },
      osFamily: 'debian',
      domainType: 'auto',
      sshUser: 'pgop',
    };
    expect(renderHba(s)).toContain('hostssl\treplication\treplicator\t192.168.122.0/24\tscram-sha-256');
    s.postgres.hba = [
      { type: 'host', database: 'all', user: 'all', address: '0.0.0.0/0', method: 'trust' as never },
    ];
    expect(() => renderHba(s)).toThrow(/trust/);
  });
});

describe('standby and sync includes', () => {
  it('standby conf points at the primary with the slot, only reloadable settings, no password', () => {
    const s = seedSpec();
    const conf = renderStandbyConf(s, s.nodes[1]!, s.nodes[0]!);
    expect(conf).toContain("primary_slot_name = 'pgop_pg02'");
    // only reloadable settings: removing the file on promote must not leave a pending restart
    expect(conf).not.toMatch(/recovery_target_timeline\s*=/);
    expect(conninfoHost(/primary_conninfo = '(.*)'/.exec(conf)![1]!.replace(/''/g, "'"))).toBe(
      s.nodes[0]!.address,
    );
    expect(conf).toContain("application_name=''pg02''");
    expect(conf).toContain("passfile=''/u01/pg15/pgop-replication.pgpass''");
    expect(conf).not.toMatch(/password=/);
    s.replication.slots = false;
    expect(renderStandbyConf(s, s.nodes[1]!, s.nodes[0]!)).not.toContain('primary_slot_name');
  });

  it('the replication passfile lives beside the data directory and escapes : and \\', () => {
    const s = seedSpec();
    expect(replicationPassfilePath(s)).toBe('/u01/pg15/pgop-replication.pgpass');
    expect(renderReplicationPassfile(s, 'a:b\\c')).toBe('*:*:*:replicator:a\\:b\\\\c\n');
    expect(() => renderReplicationPassfile(s, 'a\nb')).toThrow(/newline/);
  });

  it('sync names are ANY quorum of quoted names, or empty', () => {
    expect(syncStandbyNamesValue([], 1)).toBe('');
    expect(syncStandbyNamesValue(['pg03', 'pg02'], 1)).toBe('ANY 1 ("pg02", "pg03")');
    expect(syncStandbyNamesValue(['pg02'], 5)).toBe('ANY 1 ("pg02")');
    expect(renderSyncConf(['pg02', 'pg03'], 2)).toContain(
      `synchronous_standby_names = 'ANY 2 ("pg02", "pg03")'`,
    );
  });

  it('slot names are safe identifiers', () => {
    expect(slotName('pg02')).toBe('pgop_pg02');
    expect(slotName('Node-1.a')).toBe('pgop_node_1_a');
  });
});

describe('SCRAM-SHA-256 verifier', () => {
  it('verifies a verifier postgres 15 generated (password "pencil")', () => {
    const fromPg =
      'SCRAM-SHA-256$4096:x67DhuxM/gGk/9/6/vZfUQ==$sATZxz38PdUH+KYXILU5lDN/4TMCF5qJMpa1hfziXms=:' +
      'QQv07tCotk2AvN1L8tlIKbjpModDHk4q5dnB9A0zJXE=';
    expect(verifyScram(fromPg, 'pencil')).toBe(true);
    expect(verifyScram(fromPg, 'pencil2')).toBe(false);
    expect(scramVerifier('pencil', { salt: Buffer.from('x67DhuxM/gGk/9/6/vZfUQ==', 'base64') })).toBe(fromPg);
  });

  it('matches postgres for a non-ASCII password', () => {
    const fromPg =
      'SCRAM-SHA-256$4096:MloNslyIkl04BFZe0jvbNQ==$bJWQixwoQg74aNxljgwO8HcbmQuIOgoAEZJu1VWOzAw=:' +
      'kXKFUDgyFqfK7qn33+DGYG303iUk8AdIu83jJbZwcvo=';
    expect(verifyScram(fromPg, 'pâss wörd€')).toBe(true);
  });

  it('reproduces the RFC 7677 exchange (user/pencil)', () => {
    const salt = Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64');
    const k = scramKeys('pencil', salt, 4096);
    const authMessage =
      'n=user,r=rOprNGfwEbeRWgbNEkqO,' +
      'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,' +
      'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0';
    const clientSig = createHmac('sha256', k.storedKey).update(authMessage).digest();
    const proof = Buffer.from(k.clientKey.map((b, i) => b ^ clientSig[i]!));
    expect(proof.toString('base64')).toBe('dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=');
    expect(createHmac('sha256', k.serverKey).update(authMessage).digest('base64')).toBe(
      '6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
    );
    expect(createHash('sha256').update(k.clientKey).digest().equals(k.storedKey)).toBe(true);
  });

  it('uses a random salt and never contains the password', () => {
    const a = scramVerifier('s3cret-pw');
    const b = scramVerifier('s3cret-pw');
    expect(a).not.toBe(b);
    expect(a).not.toContain('s3cret-pw');
    expect(verifyScram(a, 's3cret-pw') && verifyScram(b, 's3cret-pw')).toBe(true);
    expect(verifyScram(null, 'x')).toBe(false);
    expect(verifyScram('md5abc', 'x')).toBe(false);
  });
});

describe('quoting, LSNs and timelines', () => {
  it('quotes identifiers and literals', () => {
    expect(quoteIdent('a"b')).toBe('"a""b"');
    expect(quoteIdent('$user')).toBe('"$user"');
    expect(quoteLiteral("o'k")).toBe("'o''k'");
    expect(quoteLiteral('a\\b')).toBe("E'a\\\\b'");
  });

  it('converts LSNs', () => {
    expect(parseLsn('0/3000060')).toBe(0x3000060);
    expect(parseLsn('1/0')).toBe(2 ** 32);
    expect(parseLsn('16/B374D848')).toBe(0x16 * 2 ** 32 + 0xb374d848);
    expect(formatLsn(parseLsn('16/B374D848'))).toBe('16/B374D848');
    expect(parseLsn(null)).toBe(0);
  });

  it('decides from the timeline history whether a node can follow without rewind', () => {
    const h = parseTimelineHistory(
      '1\t0/5000148\tno recovery target specified\n\n2\t0/7000000\tno recovery target specified\n',
    );
    expect(h.get(1)).toBe(0x5000148);
    expect(canFollowTimeline(3, 1, 3, h)).toBe(true);
    expect(canFollowTimeline(1, 0x5000100, 3, h)).toBe(true);
    expect(canFollowTimeline(1, 0x5000148, 3, h)).toBe(true);
    expect(canFollowTimeline(1, 0x5000149, 3, h)).toBe(false);
    expect(canFollowTimeline(4, 0, 3, h)).toBe(false);
    expect(canFollowTimeline(5, 0, 6, h)).toBe(false);
  });

  it('reads host= out of conninfo strings', () => {
    expect(conninfoHost('host=10.0.0.1 port=5432 user=r password=x')).toBe('10.0.0.1');
    expect(conninfoHost("user=r host='10.0.0.2' password='a b'")).toBe('10.0.0.2');
    expect(conninfoHost('')).toBe(null);
  });
});

describe('config hash', () => {
  it('covers conf, hba and the archive script', () => {
    const s = seedSpec();
    const n = s.nodes[0]!;
    const tls = { cert: 'C', key: 'K', ca: 'A' };
    const h = desiredConfigHash(s, n, tls);
    expect(h).toBe(configHashOf(renderConf(s, n), renderHba(s), renderArchiveScript(s), ['C', 'K', 'A']));
    const s2 = seedSpec();
    s2.postgres.hba = [];
    expect(desiredConfigHash(s2, n, tls)).not.toBe(h);
    const s3 = seedSpec({ archiveDir: '/u02/other' });
    expect(desiredConfigHash(s3, n, tls)).not.toBe(h);
  });
});

describe('archive script (run for real in a temp dir)', () => {
  it('quotes its paths even when plain: its bytes are part of the config hash, so they must not move', () => {
    const s = seedSpec({ archiveDir: '/u01/archive', logDir: '/u01/log' });
    const text = renderArchiveScript(s);
    expect(text).toContain("\nARCHIVE_DIR='/u01/archive'\n");
    expect(text).toContain("\nLOGFILE='/u01/log/archive.log'\n");
  });

  it('archives, accepts an identical retry, refuses to overwrite different content', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgop-arch-'));
    try {
      const s = seedSpec({ archiveDir: join(dir, 'archive'), logDir: join(dir, 'log') });
      execFileSync('mkdir', ['-p', join(dir, 'archive'), join(dir, 'log')]);
      const script = join(dir, 'archive.sh');
      writeFileSync(script, renderArchiveScript(s));
      chmodSync(script, 0o755);
      const seg = join(dir, '000000010000000000000001');
      writeFileSync(seg, 'wal-bytes-1');
      const run = () => {
        try {
          execFileSync(script, [seg, '000000010000000000000001'], { stdio: 'pipe' });
          return 0;
        } catch (e) {
          return (e as { status: number }).status;
        }
      };
      expect(run()).toBe(0);
      expect(readFileSync(join(dir, 'archive', '000000010000000000000001'), 'utf8')).toBe('wal-bytes-1');
      expect(run()).toBe(0); // identical retry
      writeFileSync(seg, 'different');
      expect(run()).not.toBe(0);
      expect(readFileSync(join(dir, 'archive', '000000010000000000000001'), 'utf8')).toBe('wal-bytes-1');
      expect(existsSync(join(dir, 'log', 'archive.log'))).toBe(true);
      expect(readFileSync(join(dir, 'log', 'archive.log'), 'utf8')).toMatch(/not overwriting/);
      // no temp files left behind
      expect(
        execFileSync('ls', ['-A', join(dir, 'archive')])
          .toString()
          .trim(),
      ).toBe('000000010000000000000001');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('printfEscape (file contents on one stdin line)', () => {
  it("round-trips through dash's and bash's read -r + printf %b", () => {
    const tricky =
      '  leading spaces\n\ttab \\ back\\slash \'q\' "dq" %s %% $HOME `x` \\n literal\nünïcødé €\n\n';
    for (const sh of ['sh', 'bash']) {
      const out = execFileSync(sh, ['-c', 'read -r x; printf "%b" "$x"'], {
        input: `${printfEscape(tricky)}\n`,
      });
      expect(out.toString('utf8')).toBe(tricky);
    }
    expect(printfEscape('')).toBe('');
    expect(printfEscape('a b\n')).not.toMatch(/[ \n]/);
  });
});
