import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { simSpec } from '../helpers/sim-spec.js';
import {
  desiredPoolConfigHash,
  poolAesEncrypt,
  poolPaths,
  renderPcpConf,
  renderPcpPass,
  renderPgpoolConf,
  renderPoolHba,
  renderPoolPasswd,
} from '../../src/drivers/pgpool/config.js';
import {
  WATCHDOG_SUDOERS,
  WATCHDOG_VIP_SCRIPT,
  renderVipScript,
  renderVipSudoers,
  watchdogFiles,
} from '../../src/drivers/pgpool/watchdog.js';

function labSpec() {
  const s = simSpec();
  s.provider = { type: 'lab', network: '10.77.0.0/24' };
  s.nodes = s.nodes.map((n, i) => ({ ...n, address: `10.77.0.${11 + i}` }));
  s.pgpool.address = '10.77.0.10';
  return s;
}

function watchdogSpec() {
  const s = labSpec();
  s.pgpool.hosts = [
    { name: 'pool-a', address: '10.77.0.21' },
    { name: 'pool-b', address: '10.77.0.22' },
  ];
  s.pgpool.watchdog = { enabled: true };
  return s;
}

const settings = (conf: string) =>
  Object.fromEntries(
    conf
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith('#'))
      .map((l) => {
        const i = l.indexOf('=');
        return [l.slice(0, i).trim(), l.slice(i + 1).trim()];
      }),
  );

describe('pgpool.conf', () => {
  it('pins the named applications to the primary, each name whole and a dot only a dot', () => {
    const s = labSpec();
    expect(settings(renderPgpoolConf(s)).app_name_redirect_preference_list).toBeUndefined();
    s.pgpool.primaryApplications = ['pgbench', 'billing.v2'];
    const c = settings(renderPgpoolConf(s));
    expect(c.app_name_redirect_preference_list).toBe("'pgbench:primary,billing[.]v2:primary'");
    s.pgpool.primaryApplications = ["x',y"];
    expect(() => renderPgpoolConf(s)).toThrow(/unsafe application name/);
  });

  it('one backend per spec node, in spec order, streaming replication mode', () => {
    const s = labSpec();
    const c = settings(renderPgpoolConf(s));
    expect(c.backend_clustering_mode).toBe("'streaming_replication'");
    s.nodes.forEach((n, i) => {
      expect(c[`backend_hostname${i}`]).toBe(`'${n.address}'`);
      expect(c[`backend_port${i}`]).toBe('5432');
      expect(c[`backend_weight${i}`]).toBe('1');
      expect(c[`backend_flag${i}`]).toBe("'ALLOW_TO_FAILOVER'");
      expect(c[`backend_application_name${i}`]).toBe(`'${n.name}'`);
    });
    expect(c[`backend_hostname${s.nodes.length}`]).toBeUndefined();
  });

  it('pgpool only routes: no health or replication checks, no failover or command of its own', () => {
    const c = settings(renderPgpoolConf(labSpec()));
    expect(c.failover_on_backend_error).toBe('off');
    expect(c.failover_on_backend_shutdown).toBe('off');
    expect(c.health_check_period).toBe('0');
    expect(c.sr_check_period).toBe('0');
    expect(c.follow_primary_command).toBe("''");
    expect(c.failover_command).toBe("''");
    expect(c.failback_command).toBe("''");
    expect(c.auto_failback).toBe('off');
    expect(c.detach_false_primary).toBe('off');
  });

  it(
    'listens on the pool address; sockets and pid in its private dir, its status file on /run (tmpfs); ' +
      'spec ports',
    () => {
      const s = labSpec();
      s.pgpool.loadBalancing = false;
      const c = settings(renderPgpoolConf(s, poolPaths('/u01/pgpool')));
      expect(c.listen_addresses).toBe("'10.77.0.10'");
      expect(c.port).toBe('9999');
      expect(c.pcp_port).toBe('9898');
      for (const k of ['socket_dir', 'pcp_socket_dir', 'wd_ipc_socket_dir'])
        expect(c[k]).toBe("'/u01/pgpool/run'");
      expect(c.pid_file_name).toBe("'/u01/pgpool/run/pgpool.pid'");
      // logdir holds only pgpool_status, synced at each status change during a failover
      expect(c.logdir).toBe("'/run/pgop-pgpool'");
      expect(c.load_balance_mode).toBe('off');
      expect(c.sr_check_password).toBe("''"); // from pool_passwd (pgpool's search for the primary)
      expect(c.enable_pool_hba).toBe('on');
      expect(c.pool_passwd).toBe("'/u01/pgpool/pool_passwd'");
    },
  );

  it('with pool hosts listens everywhere (its own address, and the virtual IP while it holds it)', () => {
    const s = labSpec();
    expect(settings(renderPgpoolConf(s)).pcp_listen_addresses).toBe("'10.77.0.10'");
    s.pgpool.hosts = [
      { name: 'pool-a', address: '10.77.0.21' },
      { name: 'pool-b', address: '10.77.0.22' },
    ];
    const c = settings(renderPgpoolConf(s));
    expect(c.listen_addresses).toBe("'*'");
    expect(c.pcp_listen_addresses).toBe("'*'");
  });

  it("pgpool's own watchdog: every pool host a member, the spec's address its delegate IP", () => {
    const s = watchdogSpec();
    const c = settings(renderPgpoolConf(s));
    expect(c.use_watchdog).toBe('on');
    expect([c.hostname0, c.hostname1, c.heartbeat_hostname1]).toEqual([
      "'10.77.0.21'",
      "'10.77.0.22'",
      "'10.77.0.22'",
    ]);
    expect(c.delegate_IP).toBe("'10.77.0.10'");
    expect(c.if_up_cmd).toBe(`'/usr/bin/sudo -n ${WATCHDOG_VIP_SCRIPT} up'`);
    // two hosts: the survivor is a quorum; the operator's host (the lab hub) is trusted
    expect(c.enable_consensus_with_half_votes).toBe('on');
    expect(c.trusted_servers).toBe("'10.77.0.1'");
    expect(c.failover_when_quorum_exists).toBe('off');
    s.pgpool.hosts = undefined;
    s.pgpool.onNodes = true;
    const nodes = settings(renderPgpoolConf(s));
    expect([nodes.hostname0, nodes.hostname2]).toEqual(["'10.77.0.11'", "'10.77.0.13'"]);
    expect(nodes.enable_consensus_with_half_votes).toBe('off');
    expect(settings(renderPgpoolConf(labSpec())).use_watchdog).toBe('off');
  });

  it('the watchdog files: a node id each, a root-owned script and a sudo rule for it alone', () => {
    const s = watchdogSpec();
    const paths = poolPaths();
    const files = watchdogFiles(s, 'pool-b', paths);
    expect(files.map((f) => [f.path, f.mode?.toString(8), f.owner, f.content?.slice(0, 2)])).toEqual([
      [`${paths.dir}/pgpool_node_id`, undefined, undefined, '1\n'],
      [WATCHDOG_VIP_SCRIPT, '755', 'root:root', '#!'],
      [WATCHDOG_SUDOERS, '440', 'root:root', '# '],
    ]);
    expect(renderVipSudoers()).toMatch(
      new RegExp(
        `^postgres ALL=\\(root\\) NOPASSWD: ${WATCHDOG_VIP_SCRIPT} up, \\S+ down, \\S+ arping$`,
        'm',
      ),
    );
    // off: nothing of it stays, least of all the sudo rule
    s.pgpool.watchdog = { enabled: false };
    expect(watchdogFiles(s, 'pool-b', paths).map((f) => `${f.op} ${f.path}`)).toEqual([
      `delete ${paths.dir}/pgpool_node_id`,
      `delete ${WATCHDOG_VIP_SCRIPT}`,
      `delete ${WATCHDOG_SUDOERS}`,
    ]);
  });

  it('sudo accepts the rule; the script parses, has the addresses built in and takes only a verb', () => {
    const dir = execFileSync('mktemp', ['-d']).toString().trim();
    try {
      writeFileSync(`${dir}/rule`, renderVipSudoers(), { mode: 0o440 });
      // visudo comes with sudo (scripts/bootstrap.sh installs it)
      execFileSync('visudo', ['-c', '-q', '-f', `${dir}/rule`], { stdio: 'pipe' });
      const script = renderVipScript(watchdogSpec(), '10.77.0.22');
      writeFileSync(`${dir}/vip`, script, { mode: 0o700 });
      execFileSync('sh', ['-n', `${dir}/vip`]);
      expect(script).toContain("up) vip_up '10.77.0.10' '10.77.0.22'");
      const bad = spawnSync('sh', [`${dir}/vip`, '10.9.9.9'], { encoding: 'utf8' });
      expect([bad.status, bad.stderr.trim()]).toEqual([64, `usage: ${dir}/vip up|down|arping`]);
    } finally {
      execFileSync('rm', ['-rf', dir]);
    }
  });

  it('pgpool accepts the generated file (pgpool -n -f ... parses it)', () => {
    if (!existsSync('/usr/sbin/pgpool')) return;
    // `pgpool -f <conf> -a <hba> -F <pcp> ... stop` parses the config before looking for a pid file
    // (no server is started, nothing listens).
    const dir = execFileSync('mktemp', ['-d']).toString().trim();
    try {
      const paths = poolPaths(dir);
      execFileSync('sh', ['-c', `mkdir -p ${dir}/run ${dir}/log`]);
      // with the watchdog: its settings are the ones pgpool checks hardest
      const s = watchdogSpec();
      require_write(paths.conf, renderPgpoolConf(s, paths));
      require_write(`${dir}/pgpool_node_id`, '0\n');
      require_write(paths.hba, renderPoolHba(s));
      require_write(paths.pcp, renderPcpConf('x'));
      let out = '';
      try {
        execFileSync('/usr/sbin/pgpool', ['-f', paths.conf, '-a', paths.hba, '-F', paths.pcp, 'stop'], {
          stdio: 'pipe',
        });
      } catch (e) {
        out = String((e as { stderr: Buffer }).stderr);
      }
      expect(out).not.toMatch(
        new RegExp(
          'syntax error|invalid value|unrecognized configuration parameter|WARNING|' +
            'could not open configuration',
          'i',
        ),
      );
      expect(out).toMatch(/pid file|could not open pid/i);
    } finally {
      execFileSync('rm', ['-rf', dir]);
    }
  });
});

function require_write(path: string, content: string) {
  writeFileSync(path, content, { mode: 0o600 });
}

describe('pool_hba.conf, pcp.conf, pool_passwd', () => {
  it('scram from the network, never trust', () => {
    const hba = renderPoolHba(labSpec());
    expect(hba).toContain('hostssl\tall\tall\t10.77.0.0/24\tscram-sha-256');
    expect(hba).not.toMatch(/^host\t/m);
    expect(hba).not.toMatch(/\btrust\b/);
  });

  it(
    'TLS: clients over hostssl, pgpool serves and verifies with the cluster CA files; off only when the ' +
      'spec says',
    () => {
      const s = labSpec();
      const paths = poolPaths('/u01/pgpool');
      const conf = renderPgpoolConf(s, paths);
      expect(conf).toContain('ssl = on');
      expect(conf).toContain("ssl_cert = '/u01/pgpool/server.crt'");
      expect(conf).toContain("ssl_key = '/u01/pgpool/server.key'");
      expect(conf).toContain("ssl_ca_cert = '/u01/pgpool/ca.crt'");
      // the certificate material is part of the desired hash: a renewal rewrites and restarts pgpool
      const a = desiredPoolConfigHash(s, paths, { cert: 'c1', key: 'k', ca: 'ca' });
      expect(desiredPoolConfigHash(s, paths, { cert: 'c2', key: 'k', ca: 'ca' })).not.toBe(a);
      expect(desiredPoolConfigHash(s, paths, null)).not.toBe(a);
      const asWritten = {
        ...s,
        tls: { enabled: true, certificateDays: 90, renewBeforeDays: 30, hostRules: 'as-written' as const },
      };
      expect(renderPoolHba(asWritten)).toContain('host\tall\tall\t10.77.0.0/24\tscram-sha-256');
      const off = { ...s, tls: { ...asWritten.tls, enabled: false, hostRules: 'hostssl' as const } };
      expect(renderPgpoolConf(off, paths)).not.toMatch(/^ssl/m);
      expect(renderPoolHba(off)).toContain('host\tall\tall\t10.77.0.0/24\tscram-sha-256');
      expect(desiredPoolConfigHash(off, paths, null)).toBe(
        desiredPoolConfigHash(off, paths, { cert: 'x', key: 'y', ca: 'z' }),
      );
    },
  );

  it('pcp.conf holds md5(password), the pass file the password for the pcp port', () => {
    expect(renderPcpConf('secret')).toContain(`pgop:${createHash('md5').update('secret').digest('hex')}`);
    expect(renderPcpPass(labSpec(), 'a:b')).toBe('*:9898:pgop:a\\:b\n');
  });

  it('AES entries match pg_enc (known vectors from pgpool 4.3.5 pg_enc -K)', () => {
    expect(poolAesEncrypt('secret', 'testkey')).toBe('AESYLROATKETwgvY557eVg7dQ==');
    expect(poolAesEncrypt('a much longer password with spaces and $ymbols!', 'Another Key 123')).toBe(
      'AESif9fVjhtwhkN8FZ5/eRCua9Lwfo5zPh+V8nnwihilF48XMX9awtc2BjcVXgTtfDt',
    );
  });

  it('pool_passwd has one AES line per user and no clear password', () => {
    const pw = renderPoolPasswd(
      [
        { name: 'postgres', password: 'su-pw' },
        { name: 'cl_user', password: 'clu-pw' },
      ],
      'k',
    );
    const lines = pw.trim().split('\n');
    expect(lines.map((l) => l.split(':')[0])).toEqual(['cl_user', 'postgres']);
    for (const l of lines) expect(l.split(':')[1]).toMatch(/^AES[A-Za-z0-9+/=]+$/);
    expect(pw).not.toContain('su-pw');
    expect(pw).not.toContain('clu-pw');
  });

  it('the desired hash follows the configuration', () => {
    const a = labSpec();
    const b = labSpec();
    b.pgpool.numInitChildren = 8;
    expect(desiredPoolConfigHash(a)).toBe(desiredPoolConfigHash(labSpec()));
    expect(desiredPoolConfigHash(a)).not.toBe(desiredPoolConfigHash(b));
  });
});
