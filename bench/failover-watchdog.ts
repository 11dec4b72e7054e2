// The bench:failover baseline for the pool scenarios: pgpool-II's OWN watchdog moving the
// virtual IP between the lab's pool hosts (delegate_IP, heartbeat life checks), the way the
// seed's author runs it (pgcluster). pgop is stopped; each pool host's pgpool.conf becomes pgop's
// rendered one plus the watchdog settings below, with its pgpool_node_id beside it; the address
// is taken off every host and the pgpools restart with the watchdog, whose elected leader
// brings it up. Afterwards pgop's files come back, its pgpools restart without the address, and
// pgop, serving again, places it.
//
// pgpool runs if_up_cmd / if_down_cmd / arping_cmd as its own user; here they are `ip` and
// `arping` themselves, and pgpool (as postgres) is started with CAP_NET_ADMIN and CAP_NET_RAW as
// ambient capabilities (setpriv), which its children inherit. That is the bench's shortcut in a
// lab namespace, not a way to run pgpool for users (they would use sudo rules for these three
// command lines).

import { spawnSync } from 'node:child_process';
import { type ChaosLab, waitFor } from '../test/helpers/chaos-lab.js';
import { poolPaths } from '../src/drivers/pgpool/config.js';
import { heredoc, onPoolHost, restartPgpool, waitPoolPrimary, withSettings } from './failover-baseline.js';
import { VIP_DROP_SH } from '../src/drivers/pgpool/scripts.js';

const P = poolPaths();
const SAVED = `${P.conf}.pgop`;
const NODE_ID = `${P.dir}/pgpool_node_id`;
const WD_PORT = 9000;
/** The lab's hosts share this machine's files: pgpool runs these (it does not say when the exec
 *  itself fails, and checks the address with `ping` from ping_path) */
const which = (cmd: string) =>
  spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).stdout.trim() || `/usr/bin/${cmd}`;
const dirOf = (path: string) => path.slice(0, path.lastIndexOf('/')) || '/';
const HEARTBEAT_PORT = 9694;
const AS_POSTGRES_WITH_NET_CAPS =
  'setpriv --reuid=postgres --regid=postgres --init-groups ' +
  '--inh-caps=+net_admin,+net_raw --ambient-caps=+net_admin,+net_raw --';

/** The watchdog's timing as the bench runs it (printed with the table): a heartbeat every
 *  second, a pool host dead after 3 s without one. pgpool's defaults (2 s, 30 s) moved the
 *  address in 12-19 s when measured here. */
export const WATCHDOG_TIMING: Record<string, string> = {
  wd_lifecheck_method: "'heartbeat'",
  wd_interval: '1',
  wd_heartbeat_keepalive: '1',
  wd_heartbeat_deadtime: '3',
};

/** The watchdog settings for `hosts` (every pool host gets the same; pgpool_node_id tells them
 *  apart). Two hosts need half the votes to count as a quorum, or neither would take the address
 *  once the other is gone. */
export function watchdogSettings(
  hosts: { address: string }[],
  vip: string,
  poolPort: number,
): Record<string, string> {
  const [ip, arping] = [which('ip'), which('arping')];
  const s: Record<string, string> = { use_watchdog: 'on' };
  hosts.forEach((h, i) => {
    s[`hostname${i}`] = `'${h.address}'`;
    s[`wd_port${i}`] = String(WD_PORT);
    s[`pgpool_port${i}`] = String(poolPort);
    s[`heartbeat_hostname${i}`] = `'${h.address}'`;
    s[`heartbeat_port${i}`] = String(HEARTBEAT_PORT);
    s[`heartbeat_device${i}`] = "''";
  });
  return {
    ...s,
    ...WATCHDOG_TIMING,
    // pgpool 4.3 matches names case-sensitively: delegate_ip (4.4's spelling) is ignored
    delegate_IP: `'${vip}'`,
    if_cmd_path: `'${dirOf(ip)}'`,
    if_up_cmd: `'${ip} addr add $_IP_$/32 dev eth0'`,
    if_down_cmd: `'${ip} addr del $_IP_$/32 dev eth0'`,
    arping_path: `'${dirOf(arping)}'`,
    arping_cmd: `'${arping} -U $_IP_$ -w 1 -I eth0'`,
    ping_path: `'${dirOf(which('ping'))}'`,
    enable_consensus_with_half_votes: hosts.length % 2 === 0 ? 'on' : 'off',
    failover_when_quorum_exists: 'on',
    wd_priority: '1',
  };
}

/** The address taken off every interface of the pool host (pgop's own script). */
const dropVip = (vip: string) => `set -- ${vip}\n${VIP_DROP_SH}`;

/** pgop stopped, the address off every pool host, every pgpool restarted under its watchdog;
 *  returns once exactly one host holds the address and pgpool there routes to `primary`. */
export async function enableWatchdogBaseline(lab: ChaosLab, primary: string): Promise<void> {
  await lab.stopServe('SIGTERM');
  const vip = lab.poolAddress;
  const settings = watchdogSettings(lab.poolHosts, vip, lab.poolPort);
  await Promise.all(
    lab.poolHosts.map(async (h, i) => {
      const conf = await onPoolHost(lab, `cat ${P.conf}`, 30_000, h.address);
      const wd = withSettings(conf, settings, "bench:failover baseline: pgpool's own watchdog");
      const script = [
        `[ -f ${SAVED} ] || cp -p ${P.conf} ${SAVED}`,
        `cat > ${P.conf} ${heredoc('PGOP_BENCH_CONF', wd)}`,
        `echo ${i} > ${NODE_ID}`,
        `chown postgres:postgres ${P.conf} ${NODE_ID}`,
        dropVip(vip),
      ].join('\n');
      await onPoolHost(lab, script, 30_000, h.address);
    }),
  );
  await Promise.all(
    lab.poolHosts.map((h) => onPoolHost(lab, restartPgpool(AS_POSTGRES_WITH_NET_CAPS), 60_000, h.address)),
  );
  const oneHolder = async () => (await lab.vipHolders()).length === 1;
  await waitFor(oneHolder, 60_000, `one pool host holding ${vip} (pgpool's watchdog)`, () =>
    watchdogLogs(lab),
  );
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

/** Back to pgop: a stopped pool host started, its files restored, pgpool restarted without the
 *  watchdog and without the address, pgop serving (it places the address). */
export async function disableWatchdogBaseline(lab: ChaosLab): Promise<void> {
  const script = [
    `[ -f ${SAVED} ] && mv -f ${SAVED} ${P.conf}`,
    `rm -f ${NODE_ID}`,
    dropVip(lab.poolAddress),
    restartPgpool(),
    dropVip(lab.poolAddress),
  ].join('\n');
  await Promise.all(
    lab.poolHosts.map(async (h) => {
      if (!(await lab.poolPortOpen(h.name, 1000, 22))) await lab.fault(h.name, 'start');
      await onPoolHost(lab, script, 60_000, h.address);
    }),
  );
  lab.startServe();
}
