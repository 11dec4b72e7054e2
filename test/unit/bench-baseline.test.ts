import { describe, expect, it } from 'vitest';
import { baselineConf, withSettings } from '../../bench/failover-baseline.js';

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

  it("turns pgpool's own failover on in pgop's configuration", () => {
    const out = baselineConf('failover_on_backend_error = off\nport = 9999\n');
    expect(out).toMatch(/^failover_on_backend_error = on$/m);
    expect(out).toMatch(/^health_check_period = 1$/m);
  });
});
