// The bench:failover baseline for the pool scenarios: pgpool-II's OWN watchdog moving the
// virtual IP between the lab's pool hosts, the way the seed's author runs it (pgcluster), as
// spec.pgpool.watchdog configures it (src/drivers/pgpool/watchdog.ts: heartbeat life checks,
// delegate_IP, a root-owned address script run through sudo). pgop applies the spec with the
// watchdog on, waits until every pgpool runs it and one pool host holds the address, then stops
// serving: the trial sees pgpool alone. Afterwards pgop serves again, and the spec without the
// watchdog is applied (pgop places the address).

import { type ChaosLab, waitFor } from '../test/helpers/chaos-lab.js';
import { poolPaths } from '../src/drivers/pgpool/config.js';
import { onPoolHost, waitPoolPrimary } from './failover-baseline.js';

export { WATCHDOG_TIMING } from '../src/drivers/pgpool/watchdog.js';

const P = poolPaths();

/** pgop's spec with pgpool's watchdog on, every pgpool running it and one host holding the
 *  address; then pgop stopped, pgpool there routing to `primary`. */
export async function enableWatchdogBaseline(lab: ChaosLab, primary: string): Promise<void> {
  await lab.applyPgpool({ watchdog: { enabled: true } });
  await waitFor(
    async () => (await lab.vipHolders()).length === 1,
    60_000,
    `every pgpool under its watchdog, one pool host holding ${lab.poolAddress}`,
    () => watchdogLogs(lab),
  );
  await lab.stopServe('SIGTERM');
  await waitPoolPrimary(lab, primary);
}

/** What each pool host's watchdog did: its pgpool.log lines about the address, the election and
 *  errors (the last 40; since the lab was built), and the watchdog settings in force. */
export async function watchdogLogs(lab: ChaosLab): Promise<string> {
  const lines = 'delegate\\|escalat\\|quorum\\|leader\\|lifecheck\\|FATAL\\|ERROR\\|WARNING';
  const script = `grep -a '${lines}' ${P.logFile} | tail -n 40; grep -n 'delegate_IP\\|_cmd =' ${P.conf}`;
  const tails = await Promise.all(
    lab.poolHosts.map((h) =>
      onPoolHost(lab, script, 30_000, h.address).then(
        (out) => `--- ${h.name}\n${out}`,
        (e: Error) => `--- ${h.name}: ${e.message}`,
      ),
    ),
  );
  return tails.join('\n');
}

/** Back to pgop: a stopped pool host started, pgop serving, the spec without the watchdog. */
export async function disableWatchdogBaseline(lab: ChaosLab): Promise<void> {
  await Promise.all(
    lab.poolHosts.map(async (h) => {
      if (!(await lab.poolPortOpen(h.name, 1000, 22))) await lab.fault(h.name, 'start');
    }),
  );
  await lab.applyPgpool({});
}
