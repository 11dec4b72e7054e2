// pgpool's own watchdog (spec.pgpool.watchdog.enabled): the pgpools elect a leader among
// themselves and the leader holds the virtual IP (delegate_IP), the way the seed's author runs
// it (pgcluster). pgop then only configures it: it never moves the address itself.
//
// pgpool runs as postgres and brings the address up and down with if_up_cmd / if_down_cmd /
// arping_cmd. These are sudo and one root-owned script, in a root-owned directory, with the
// address and the host's own address written into it: the sudo rule allows exactly three
// command lines, and postgres can change neither the rule, nor the script, nor what it does.

import type { ClusterSpec } from '../../spec/types.js';
import { poolHosts, poolVip, repoHostAddress } from '../../spec/types.js';
import { internal } from '../../errors.js';
import { formatIpv4, parseIpv4 } from '../../net/ipv4.js';
import { VIP_ADD_SH, VIP_DROP_SH } from './scripts.js';
import type { PoolPaths } from './config.js';
import type { FileOp } from '../remote/files.js';

/** Root's, in the directory pgpool's package made root's (pgop checks that nobody else can
 *  write there before it writes, see src/drivers/ssh/node-fs.ts). */
export const WATCHDOG_VIP_SCRIPT = '/etc/pgpool2/pgop-vip';
export const WATCHDOG_SUDOERS = '/etc/sudoers.d/pgop-pgpool-vip';
const WATCHDOG_PORT = 9000;
const HEARTBEAT_PORT = 9694;
const SUDO = '/usr/bin/sudo -n';

/** A heartbeat every second, a pool host dead after 3 s without one. pgpool's defaults (2 s,
 *  30 s) moved the address in 12-19 s when measured here. */
export const WATCHDOG_TIMING: Readonly<Record<string, string>> = {
  wd_lifecheck_method: "'heartbeat'",
  wd_interval: '1',
  wd_heartbeat_keepalive: '1',
  wd_heartbeat_deadtime: '3',
};

/** `s` when it is an address in canonical dotted form (digits and dots only: safe in a script). */
function ipv4(s: string, what: string): string {
  const n = parseIpv4(s);
  if (n === undefined || formatIpv4(n) !== s)
    throw internal(`unsafe ${what} ${JSON.stringify(s)} for pgpool's watchdog`);
  return s;
}

export const watchdogOn = (cluster: ClusterSpec): boolean =>
  cluster.pgpool.watchdog.enabled && poolVip(cluster) !== undefined;

/** The ports a pool host's pgpool listens on (TCP, and the heartbeat's UDP). */
export const pgpoolPorts = (cluster: ClusterSpec): number[] => [
  cluster.pgpool.port,
  cluster.pgpool.pcpPort,
  ...(watchdogOn(cluster) ? [WATCHDOG_PORT, HEARTBEAT_PORT] : []),
];

/** pgpool.conf's watchdog settings: the same for every pool host (pgpool_node_id, a file beside
 *  pgpool.conf, tells them apart). */
export function watchdogSettings(cluster: ClusterSpec): Record<string, string> {
  const hosts = poolHosts(cluster);
  const vip = ipv4(poolVip(cluster) ?? '', 'virtual IP');
  const s: Record<string, string> = { use_watchdog: 'on' };
  hosts.forEach((h, i) => {
    const a = ipv4(h.address, 'pool host address');
    Object.assign(s, {
      [`hostname${i}`]: `'${a}'`,
      [`wd_port${i}`]: String(WATCHDOG_PORT),
      [`pgpool_port${i}`]: String(cluster.pgpool.port),
      [`heartbeat_hostname${i}`]: `'${a}'`,
      [`heartbeat_port${i}`]: String(HEARTBEAT_PORT),
      [`heartbeat_device${i}`]: "''",
    });
  });
  return {
    ...s,
    ...WATCHDOG_TIMING,
    // pgpool 4.3 matches names case-sensitively: delegate_ip (4.4's spelling) is ignored
    delegate_IP: `'${vip}'`,
    if_up_cmd: `'${SUDO} ${WATCHDOG_VIP_SCRIPT} up'`,
    if_down_cmd: `'${SUDO} ${WATCHDOG_VIP_SCRIPT} down'`,
    arping_cmd: `'${SUDO} ${WATCHDOG_VIP_SCRIPT} arping'`,
    // after if_up_cmd pgpool pings the address (ping from ping_path) before it counts it as up
    ping_path: "'/usr/bin'",
    // a leader that can no longer reach the operator's host is cut off: it gives the address up
    // rather than keep it beside the new leader's
    trusted_servers: `'${ipv4(repoHostAddress(cluster), "operator's address")}'`,
    // two pool hosts: the survivor alone must count as a quorum, or it never takes the address
    enable_consensus_with_half_votes: hosts.length % 2 === 0 ? 'on' : 'off',
    // pgop decides every failover (after fencing) and tells each pgpool over PCP; the
    // watchdog's quorum must not hold that up
    failover_when_quorum_exists: 'off',
    failover_require_consensus: 'off',
    wd_priority: '1',
  };
}

/** pgpool.conf lines for the watchdog (or that it is off). */
export function watchdogLines(cluster: ClusterSpec): string[] {
  if (!watchdogOn(cluster)) return ['use_watchdog = off'];
  const lines = Object.entries(watchdogSettings(cluster)).map(([k, v]) => `${k} = ${v}`);
  return ["# pgpool's own watchdog holds the virtual IP (spec.pgpool.watchdog)", ...lines];
}

/** The script pgpool's watchdog runs through sudo: `up` adds the address on the interface that
 *  carries the host's own, `down` removes it from every interface, `arping` announces it. The
 *  addresses are constants here, never arguments. */
export function renderVipScript(cluster: ClusterSpec, ownAddress: string): string {
  const vip = ipv4(poolVip(cluster) ?? '', 'virtual IP');
  const own = ipv4(ownAddress, 'pool host address');
  const fn = (name: string, body: string) => `${name}() {\n${body}\n}`;
  const arping = `dev=$(ip -4 -o addr show to "$2/32" | while read -r _ d _; do echo "$d"; break; done)
[ -n "$dev" ] || exit 2
arping -q -U -c 1 -I "$dev" "$1"`;
  return [
    '#!/bin/sh',
    "# Managed by pgop: pgpool's watchdog (as postgres, through sudo) moves the virtual IP with this.",
    'PATH=/usr/sbin:/usr/bin:/sbin:/bin',
    fn('vip_up', `(${VIP_ADD_SH})`),
    fn('vip_down', `(${VIP_DROP_SH})`),
    fn('vip_arping', `(${arping})`),
    'case "$1" in',
    `  up) vip_up '${vip}' '${own}' ;;`,
    `  down) vip_down '${vip}' ;;`,
    `  arping) vip_arping '${vip}' '${own}' ;;`,
    '  *) echo "usage: $0 up|down|arping" >&2; exit 64 ;;',
    'esac',
    '',
  ].join('\n');
}

/** The sudo rule: postgres may run exactly the three command lines pgpool.conf names. */
export function renderVipSudoers(): string {
  const cmds = ['up', 'down', 'arping'].map((v) => `${WATCHDOG_VIP_SCRIPT} ${v}`).join(', ');
  return [
    '# Managed by pgop: pgpool (as postgres) moves the virtual IP through exactly these commands.',
    `postgres ALL=(root) NOPASSWD: ${cmds}`,
    '',
  ].join('\n');
}

/** pgpool reads its watchdog node id from this file beside pgpool.conf, at start. */
export const nodeIdFile = (paths: PoolPaths): string => `${paths.dir}/pgpool_node_id`;

/** The files the watchdog needs on pool host `host`: its node id (postgres's), the script and
 *  the sudo rule (root's). With the watchdog off, all three are removed where they exist: no
 *  sudo rule outlives it. */
export function watchdogFiles(cluster: ClusterSpec, host: string, paths: PoolPaths): FileOp[] {
  const nodeId = nodeIdFile(paths);
  if (!watchdogOn(cluster))
    return [nodeId, WATCHDOG_VIP_SCRIPT, WATCHDOG_SUDOERS].map((path) => ({ op: 'delete', path }));
  const hosts = poolHosts(cluster);
  const i = hosts.findIndex((h) => h.name === host);
  if (i < 0) throw internal(`${host} is not a pool host of ${cluster.name}`);
  const root = { mode: 0o755, owner: 'root:root' };
  return [
    { op: 'write', path: nodeId, content: `${i}\n` },
    { op: 'write', path: WATCHDOG_VIP_SCRIPT, content: renderVipScript(cluster, hosts[i]!.address), ...root },
    { op: 'write', path: WATCHDOG_SUDOERS, content: renderVipSudoers(), ...root, mode: 0o440 },
  ];
}
