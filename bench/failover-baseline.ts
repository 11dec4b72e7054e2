// The bench:failover baseline: pgpool-II's OWN failover on the same lab cluster. pgop is
// stopped, pgpool.conf on the pool host becomes pgop's rendered one with pgpool deciding
// (failover_on_backend_error / _shutdown on, fast health checks, a failover_command that
// promotes pgpool's new main node with pg_promote() over psql), and pgpool is restarted. Standbys
// are not repointed (follow_primary_command stays empty): the other standby keeps following the
// dead primary, which does not change the write RTO measured here. Afterwards the conf pgop
// rendered comes back, pgpool restarts with it, the old primary's node is fenced (its processes
// killed: after a partition it is still a writable primary) and pgop repairs the rest.
//
// Everything goes over SSH to the pool host as root with the cluster's operator key; the
// superuser password reaches the pool host's .pgpass on ssh's stdin, never in an argv.

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PCP_USER, poolPaths } from '../src/drivers/pgpool/config.js';
import type { ChaosLab, CliResult } from '../test/helpers/chaos-lab.js';
import { sleep } from '../test/helpers/writer.js';

const P = poolPaths();
const PSQL = '/usr/lib/postgresql/15/bin/psql';
const SCRIPT = `${P.dir}/baseline-failover.sh`;
const PGPASS = `${P.dir}/baseline.pgpass`;
const SAVED = `${P.conf}.pgop`;
export const BASELINE_LOG = `${P.log}/baseline-failover.log`;

/** The settings changed in pgop's rendered pgpool.conf (printed by the bench). */
export const BASELINE_SETTINGS: Record<string, string> = {
  failover_command: `'${SCRIPT} %d %h %m %H %P'`,
  failover_on_backend_error: 'on',
  failover_on_backend_shutdown: 'on',
  health_check_period: '1',
  health_check_timeout: '2',
  health_check_max_retries: '0',
  // pgop's own pgpool.conf has no health or replication checks (it drives pgpool over PCP):
  // the baseline gets back what earlier baseline runs had (passwords from pool_passwd)
  health_check_user: "'postgres'",
  health_check_password: "''",
  health_check_database: "'postgres'",
  sr_check_period: '1',
  connect_timeout: '2000',
  follow_primary_command: "''",
  search_primary_node_timeout: '5',
};

/** pgpool.conf with the baseline settings in place of pgop's. */
export const baselineConf = (pgopConf: string): string =>
  withSettings(pgopConf, BASELINE_SETTINGS, 'bench:failover baseline: pgpool decides failovers itself');

/** pgop's pgpool.conf with `settings` in place of its own (set once, appended if absent). */
export function withSettings(conf: string, settings: Record<string, string>, why: string): string {
  let out = conf;
  for (const [k, v] of Object.entries(settings)) {
    const re = new RegExp(`^\\s*${k}\\s*=.*$`, 'mi');
    const line = `${k} = ${v}`.replace(/\$/g, '$$$$');
    out = re.test(out) ? out.replace(re, line) : `${out}\n${k} = ${v}\n`;
  }
  return `${out.trimEnd()}\n# ${why}\n`;
}

const FAILOVER_SH =
  `#!/bin/sh
# bench:failover baseline failover_command: %d %h %m %H %P
failed=$1; failed_host=$2; new_main=$3; new_host=$4; old_primary=$5
echo "$(date +%s.%N) failover node=$failed host=$failed_host new_main=$new_main ` +
  `new_host=$new_host old_primary=$old_primary" >> ${BASELINE_LOG}
# only the primary's failure needs a promotion
[ "$failed" = "$old_primary" ] || exit 0
[ -n "$new_host" ] || exit 0
PGPASSFILE=${PGPASS} PGCONNECT_TIMEOUT=3 ${PSQL} -h "$new_host" -p 5432 -U postgres -d postgres -w ` +
  `-Atc 'SELECT pg_promote(true, 10)' >> ${BASELINE_LOG} 2>&1
echo "$(date +%s.%N) promote $new_host rc=$?" >> ${BASELINE_LOG}
exit 0
`;

/** pgpool's command line as pgop starts it (RESTART_PGPOOL). */
const PGPOOL_ARGS = `-n -D -f ${P.conf} -a ${P.hba} -F ${P.pcp} -k ${P.key}`;

/** Restart pgpool as postgres the way pgop starts it (-n -D, setsid, log to its log file). */
const RESTART_PGPOOL =
  `
pidf=${P.pid}
alive() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(cat /proc/$1/comm 2>/dev/null)" = pgpool ]; }
if [ -f "$pidf" ]; then
  pid=$(head -n 1 "$pidf")
  if alive "$pid"; then
    kill -INT "$pid" 2>/dev/null || true
    i=0; while alive "$pid" && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done
    if alive "$pid"; then ` +
  `kill -KILL "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
  fi
  rm -f "$pidf"
fi
rm -f ${P.run}/.s.PGSQL.* 2>/dev/null
cd ${P.dir}
runuser -u postgres -- setsid nohup /usr/sbin/pgpool ${PGPOOL_ARGS} >> ${P.logFile} 2>&1 < /dev/null &
i=0; while [ ! -s "$pidf" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
[ -s "$pidf" ] || { echo "pgpool did not start" >&2; tail -n 5 ${P.logFile} >&2; exit 1; }
`;

function heredoc(tag: string, body: string): string {
  if (body.includes(`\n${tag}\n`)) throw new Error(`heredoc tag ${tag} inside the body`);
  return `<<'${tag}'\n${body.endsWith('\n') ? body : `${body}\n`}${tag}\n`;
}

/** Run a script as root on the lab's pool host (script on stdin); `address`: one of several. */
export function onPoolHost(
  lab: ChaosLab,
  script: string,
  timeoutMs = 60_000,
  address = lab.poolAddress,
): Promise<string> {
  const key = join(lab.stateDir, lab.name, 'operator_ed25519');
  const args = [
    '-i',
    key,
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'LogLevel=ERROR',
    '-o',
    'BatchMode=yes',
    '-o',
    'ConnectTimeout=5',
    `root@${address}`,
    'sh',
    '-s',
  ];
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(t);
      if (code === 0) resolve(out);
      else reject(new Error(`pool host script failed (exit ${code}): ${err.trim().slice(-600)}`));
    });
    child.stdin.end(`set -e\n${script}`);
  });
}

/** The pgpool.conf pgop rendered, read from the pool host's directory on this machine. */
function pgopConf(lab: ChaosLab): string {
  return readFileSync(join(lab.stateDir, lab.name, 'pool', P.conf), 'utf8');
}

/** Wait until pgpool answers and routes writes to `primary`. */
export async function waitPoolPrimary(lab: ChaosLab, primary: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      const rows = await lab.withPool((c) =>
        c.query<{ hostname: string; status: string; role: string }>('SHOW POOL_NODES').then((r) => r.rows),
      );
      const addr = lab.node(primary).address;
      if (rows.some((r) => r.hostname === addr && r.status === 'up' && r.role === 'primary')) return;
      last = rows.map((r) => `${r.hostname}:${r.status}/${r.role}`).join(' ');
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`pgpool does not route to ${primary}: ${last}`);
    await sleep(200);
  }
}

/** pgop stopped, pgpool deciding failovers itself. */
export async function enableBaseline(lab: ChaosLab, primary: string): Promise<void> {
  if (lab.poolHosts.length)
    throw new Error(
      "the pgpool baseline drives one pgpool: no baseline on pool hosts (it needs pgpool's watchdog)",
    );
  await lab.stopServe('SIGTERM');
  const conf = baselineConf(pgopConf(lab));
  const pgpass = `*:5432:*:postgres:${lab.superuserPassword().replace(/\\/g, '\\\\').replace(/:/g, '\\:')}`;
  const script = [
    `cp -p ${P.conf} ${SAVED}`,
    `cat > ${P.conf} ${heredoc('PGOP_BENCH_CONF', conf)}`,
    `cat > ${SCRIPT} ${heredoc('PGOP_BENCH_SH', FAILOVER_SH)}`,
    `(umask 077; cat > ${PGPASS} ${heredoc('PGOP_BENCH_PASS', pgpass)})`,
    `chown postgres:postgres ${P.conf} ${SCRIPT} ${PGPASS}`,
    `chmod 0700 ${SCRIPT}`,
    `chmod 0600 ${PGPASS}`,
    `: > ${BASELINE_LOG}; chown postgres:postgres ${BASELINE_LOG}`,
    RESTART_PGPOOL,
  ].join('\n');
  try {
    logOffsets.set(lab.name, readFileSync(poolLogPath(lab), 'utf8').length);
  } catch {
    logOffsets.set(lab.name, 0);
  }
  await onPoolHost(lab, script);
  await waitPoolPrimary(lab, primary);
}

/** pgpool.log on this machine (the pool host's /u01 is a directory of the lab's state). */
const poolLogPath = (lab: ChaosLab) => join(lab.stateDir, lab.name, 'pool', P.logFile);
const logOffsets = new Map<string, number>();

/** What pgpool did in the last baseline trial: the failover script's log, and pgpool's own log
 *  lines since the baseline was enabled that mention failover, health checks, the primary or
 *  children (at most 200). */
export async function baselineLog(lab: ChaosLab): Promise<string> {
  const script = await onPoolHost(lab, `cat ${BASELINE_LOG} 2>/dev/null || true`).catch(
    (e: Error) => e.message,
  );
  let pool = '';
  try {
    const all = readFileSync(poolLogPath(lab), 'utf8').slice(logOffsets.get(lab.name) ?? 0);
    const lines = all
      .split('\n')
      .filter((l) => /failover|degenerat|promot|primary|restart|health|child|detach|down|timed out/i.test(l));
    pool = lines.slice(-200).join('\n');
  } catch (err) {
    pool = (err as Error).message;
  }
  return `${script}\n--- pgpool.log\n${pool}`;
}

/** Back to pgop: its pgpool.conf, pgpool restarted, the old primary's node fenced, pgop serving. */
export async function disableBaseline(lab: ChaosLab, oldPrimary: string): Promise<void> {
  await onPoolHost(
    lab,
    [`[ -f ${SAVED} ] && mv -f ${SAVED} ${P.conf}`, `rm -f ${SCRIPT} ${PGPASS}`, RESTART_PGPOOL].join('\n'),
  );
  await lab.fault(oldPrimary, 'stop');
  lab.startServe();
}

/** pgpool's own switchover to `to` (pcp_promote_node --switchover): pgpool detaches the primary
 *  and its failover_command promotes `to`; the old primary is left running (fenced afterwards by
 *  disableBaseline, as after a failover). */
export async function poolSwitchover(lab: ChaosLab, to: string): Promise<CliResult> {
  const nodes = await lab.withPool((c) =>
    c.query<{ node_id: string; hostname: string }>('SHOW POOL_NODES').then((r) => r.rows),
  );
  const id = nodes.find((n) => n.hostname === lab.node(to).address)?.node_id;
  if (id === undefined) return { code: 1, stdout: '', stderr: `pgpool has no backend for ${to}` };
  const pcp =
    `PCPPASSFILE=${P.pcpPass} pcp_promote_node -h ${P.run} -p ${lab.spec().pgpool.pcpPort} ` +
    `-U ${PCP_USER} -w -s -n ${id}`;
  return onPoolHost(lab, pcp).then(
    (stdout) => ({ code: 0, stdout, stderr: '' }),
    (err: Error) => ({ code: 1, stdout: '', stderr: err.message }),
  );
}
