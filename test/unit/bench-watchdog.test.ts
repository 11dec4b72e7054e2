import { describe, expect, it } from 'vitest';
import { baselineConf, withSettings } from '../../bench/failover-baseline.js';
import { watchdogSettings } from '../../bench/failover-watchdog.js';

const hosts = [{ address: '10.9.0.21' }, { address: '10.9.0.22' }];

describe("bench:failover's pgpool baselines", () => {
  it('replaces a setting in place, once, whatever its case, and appends a missing one', () => {
    const conf = "use_watchdog = off\nDelegate_IP = ''\nport = 9999\n";
    const out = withSettings(
      conf,
      { use_watchdog: 'on', delegate_ip: "'10.9.0.10'", wd_port0: '9000' },
      'why',
    );
    expect(out).toBe("use_watchdog = on\ndelegate_ip = '10.9.0.10'\nport = 9999\n\nwd_port0 = 9000\n# why\n");
  });

  it("keeps pgpool's $_IP_$ placeholder literally", () => {
    const out = withSettings("if_up_cmd = ''\n", { if_up_cmd: "'ip addr add $_IP_$/32 dev eth0'" }, 'w');
    expect(out).toContain("if_up_cmd = 'ip addr add $_IP_$/32 dev eth0'");
  });

  it('names every pool host for the watchdog and the heartbeat, with the virtual IP as delegate_IP', () => {
    const s = watchdogSettings(hosts, '10.9.0.10', 9999);
    expect(s).toMatchObject({
      use_watchdog: 'on',
      hostname1: "'10.9.0.22'",
      heartbeat_hostname0: "'10.9.0.21'",
      pgpool_port1: '9999',
      delegate_IP: "'10.9.0.10'",
      enable_consensus_with_half_votes: 'on',
    });
    expect(
      watchdogSettings([...hosts, { address: '10.9.0.23' }], 'x', 1).enable_consensus_with_half_votes,
    ).toBe('off');
  });

  it("turns pgpool's own failover on in pgop's configuration", () => {
    const out = baselineConf('failover_on_backend_error = off\nport = 9999\n');
    expect(out).toMatch(/^failover_on_backend_error = on$/m);
    expect(out).toMatch(/^health_check_period = 1$/m);
  });
});
