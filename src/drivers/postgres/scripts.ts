// Every shell script the postgres driver runs on a node, each rendered by a named function that
// binds its values to $1, $2, ... (the text is constant; values never become shell text, and
// NodeShell quotes each argv word with shellQuote on its way over SSH).

import { NODE_FS_FUNCS } from '../ssh/node-fs.js';
import type { NodeScript } from '../remote/run.js';

// ------------------------------------------------------------------------------ renderers

export function nodeStateScript(dataDir: string, binDir: string): NodeScript {
  return { text: NODE_STATE_SH, args: [dataDir, binDir] };
}

export function controlDataScript(binDir: string, dataDir: string): NodeScript {
  return { text: '"$1/pg_controldata" -D "$2"', args: [binDir, dataDir] };
}

export interface InstallValues {
  binDir: string;
  version: string | number;
  dataDir: string;
  archiveDir: string;
  backupDir: string;
  logDir: string;
  family: string;
  scriptDir: string;
  socketDir: string;
  waitForCloudInit: boolean;
  /** pgBackRest archives the WAL (spec.backup): install it when missing, and make its work
   *  directory (locks, spool, the include directory of the passphrase) */
  pgbackrestWorkDir: string | null;
}

export function installScript(v: InstallValues): NodeScript {
  const args = [
    v.binDir,
    v.version,
    v.dataDir,
    v.archiveDir,
    v.backupDir,
    v.logDir,
    v.family,
    v.scriptDir,
    v.socketDir,
  ];
  const backup = v.pgbackrestWorkDir === null ? [0, ''] : [1, v.pgbackrestWorkDir];
  return { text: INSTALL_SH, args: [...args, v.waitForCloudInit ? 1 : 0, ...backup] };
}

export function initdbScript(dataDir: string, binDir: string): NodeScript {
  return { text: INITDB_SH, args: [dataDir, binDir] };
}

export interface StartValues {
  dataDir: string;
  binDir: string;
  /** the `pg_ctl -o` string (nodeOptionString) */
  options: string;
  logFile: string;
  socketDir: string;
  port: number;
}

export function startScript(v: StartValues): NodeScript {
  return { text: START_SH, args: [v.dataDir, v.binDir, v.options, v.logFile, v.socketDir, v.port] };
}

/** The last lines of the startup log and the newest server log's errors (why a start failed). */
export function startupErrorsScript(logDir: string): NodeScript {
  return { text: STARTUP_ERRORS_SH, args: [logDir] };
}

export function stopScript(
  dataDir: string,
  binDir: string,
  mode: 'fast' | 'immediate',
  socketDir: string,
  port: number,
): NodeScript {
  return { text: STOP_SH, args: [dataDir, binDir, mode, socketDir, port] };
}

export function waitGoneScript(dataDir: string, socketDir: string, port: number): NodeScript {
  return { text: WAIT_GONE_SH, args: [dataDir, socketDir, port] };
}

export function reloadScript(dataDir: string, binDir: string): NodeScript {
  return { text: '"$2/pg_ctl" -D "$1" reload >/dev/null', args: [dataDir, binDir] };
}

export function promoteScript(dataDir: string, binDir: string): NodeScript {
  return { text: '"$2/pg_ctl" -D "$1" -w -t 30 promote', args: [dataDir, binDir] };
}

/** The superuser's password goes on stdin, never on a command line. */
export function rewindScript(
  dataDir: string,
  binDir: string,
  sourceConninfo: string,
  pidFile: string,
): NodeScript {
  return { text: REWIND_SH, args: [dataDir, binDir, sourceConninfo, pidFile] };
}

export function prepareDataDirScript(dataDir: string, systemId: string, binDir: string): NodeScript {
  return { text: PREPARE_DATADIR_SH, args: [dataDir, systemId, binDir] };
}

export interface BasebackupValues {
  dataDir: string;
  binDir: string;
  host: string;
  port: number;
  user: string;
  /** '' = no slot */
  slot: string;
  applicationName: string;
  /** pg_basebackup --max-rate; '' = none */
  maxRate: string;
  /** where the script leaves pg_basebackup's pid (a directory of postgres) */
  pidFile: string;
}

/** The replication password goes on stdin, never on a command line. */
export function basebackupScript(v: BasebackupValues): NodeScript {
  return {
    text: BASEBACKUP_SH,
    args: [v.dataDir, v.binDir, v.host, v.port, v.user, v.slot, v.applicationName, v.maxRate, v.pidFile],
  };
}

/** Stop the copy (pg_basebackup / pg_rewind) into `dataDir` whose pid `pidFile` holds. */
export function stopCopyScript(pidFile: string, dataDir: string): NodeScript {
  return { text: STOP_COPY_SH, args: [pidFile, dataDir] };
}

/** The title of the postmaster's startup process in `dataDir` ("startup recovering <WAL
 *  segment>"): it names the segment being replayed, so two looks tell whether recovery moves. */
export function recoveryTitleScript(dataDir: string): NodeScript {
  return { text: RECOVERY_TITLE_SH, args: [dataDir] };
}

/** psql over the local socket (peer auth); the SQL goes on stdin. */
export function psqlScript(binDir: string, socketDir: string, port: number): NodeScript {
  return { text: PSQL_SH, args: [binDir, socketDir, port] };
}

// ------------------------------------------------------------------------------ script texts
// Constant scripts; values arrive as $1, $2, ... (never interpolated).

/** Shell functions shared by the scripts below. A postmaster killed with -9 stays a zombie until
 *  its parent (init) reaps it, and pg_ctl/postgres take a zombie for a live server (kill -0
 *  succeeds): liveness here is "pid alive, not a zombie, named postgres". */
const PM_FUNCS =
  `
pid_alive() {
  # $1: a postgres lock file (postmaster.pid, .s.PGSQL.<port>.lock): is the pid on its line 1 alive?
  [ -f "$1" ] || return 1
  pid=$(sed -n 1p "$1" 2>/dev/null | tr -d ' -')
  case "$pid" in ''|*[!0-9]*) return 1;; esac
  [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)
  [ "$state" != Z ] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null)
  [ "$comm" = postgres ] || [ "$comm" = postmaster ]
}
pm_alive() { pid_alive "$1/postmaster.pid"; }
shm_attached() {
  # children of a dead postmaster keep its shared memory attached for a moment. Only the segment
  # that postmaster created (its pid as cpid): a freed id is reused, e.g. by a pgpool on the node.
  f="$1/postmaster.pid"
  [ -f "$f" ] || return 1
  pmpid=$(sed -n 1p "$f" 2>/dev/null | tr -d ' -')
  shmid=$(sed -n 7p "$f" 2>/dev/null | awk '{print $2}')
  [ -n "$shmid" ] && [ -n "$pmpid" ] || return 1
  n=$(awk -v id="$shmid" -v pm="$pmpid" '$2==id && $5==pm {print $7}' /proc/sysvipc/shm 2>/dev/null)
  [ -n "$n" ] && [ "$n" != 0 ]
}
clear_stale() {
  # $1 data dir, $2 socket dir, $3 port. No live postmaster: wait (up to 10 s) for its children
  # to go, then drop the stale lock files (postmaster.pid, the socket's .lock).
  pm_alive "$1" && return 0
  if [ -f "$1/postmaster.pid" ]; then
    i=0
    while shm_attached "$1" && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
    if shm_attached "$1"; then ` +
  `echo "children of the old postmaster still hold its shared memory" >&2; return 1; fi
    rm -f "$1/postmaster.pid"
  fi
  if [ -n "$2" ] && [ -n "$3" ] && [ -f "$2/.s.PGSQL.$3.lock" ] && ! pid_alive "$2/.s.PGSQL.$3.lock"; then
    rm -f "$2/.s.PGSQL.$3.lock" "$2/.s.PGSQL.$3"
  fi
  return 0
}
`;

/** What a data directory or a copy of one may hold besides the cluster itself (pgdata_kind). */
const CLUSTER_ENTRIES = [
  'PG_VERSION',
  'backup_label',
  'backup_label.old',
  'backup_manifest',
  'backup_manifest.tmp',
  'base',
  'global',
  'pg_*',
  'postgresql.conf',
  'postgresql.auto.conf',
  'postmaster.opts',
  'postmaster.pid',
  'tablespace_map',
  'tablespace_map.old',
  'standby.signal',
  'recovery.signal',
  'current_logfiles',
  'log',
  'conf.d',
  'pgop.confhash',
].join('|');

/** pgdata_kind DIR: what a data directory holds. missing | empty | cluster (a database cluster
 *  postgres can start) | partial (only what a data directory or a copy of one has, but no
 *  global/pg_control, or a backup_label without a recovery signal: a pg_basebackup or pg_rewind
 *  that did not finish, or whose standby files were never written; pg_basebackup sends
 *  pg_control last) | other (anything else). */
const PGDATA_KIND_FN =
  `
pgdata_kind() {
  [ -d "$1" ] || { echo missing; return 0; }
  [ -n "$(ls -A -- "$1" 2>/dev/null)" ] || { echo empty; return 0; }
  if [ -f "$1/PG_VERSION" ] && [ -f "$1/global/pg_control" ] && ` +
  `{ [ ! -f "$1/backup_label" ] || [ -f "$1/standby.signal" ] || [ -f "$1/recovery.signal" ]; }; then
    echo cluster; return 0
  fi
  for _e in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    [ -e "$_e" ] || [ -L "$_e" ] || continue
    case "\${_e##*/}" in
      ${CLUSTER_ENTRIES}) ;;
      *) echo other; return 0;;
    esac
  done
  echo partial
}
`;

/** $1 data dir, $2 bin dir -> "init=0|1 nonempty=0|1 standby=0|1 status=N partial=0|1". A
 *  partial data directory (an interrupted clone) is not initialised: it is cloned again. */
const NODE_STATE_SH = `${PM_FUNCS}${PGDATA_KIND_FN}
d="$1"
k=$(pgdata_kind "$d")
init=0; [ "$k" = cluster ] && init=1
nonempty=1; case "$k" in missing|empty) nonempty=0;; esac
partial=0; [ "$k" = partial ] && partial=1
sb=0; [ -f "$d/standby.signal" ] && sb=1
st=4
if [ -d "$d" ]; then if pm_alive "$d"; then st=0; else st=3; fi; fi
echo "init=$init nonempty=$nonempty standby=$sb status=$st partial=$partial"
`;

/** The postgres user, when the package did not make it (INSTALL_SH). */
const USERADD_POSTGRES =
  'useradd --system --create-home --home-dir /var/lib/postgresql --shell /bin/bash postgres';

/** As root. $1 bin $2 version $3 data $4 archive $5 backup $6 log $7 family $8 script dir $9 socket dir
 *  ${10} wait for cloud-init ${11} pgBackRest wanted ${12} its work directory. The spec's
 *  directories become postgres's through pg_dir (src/drivers/ssh/node-fs.ts): created by the
 *  owner of their parent, handed over (chown, never -R) only when root made them in a root-only
 *  directory; a system directory, a symlink another user could have made, or a non-empty
 *  directory of root's or of another user is refused. */
const INSTALL_SH =
  `${NODE_FS_FUNCS}
set -e
b="$1"; v="$2"; d="$3"; arch="$4"; bk="$5"; logd="$6"; fam="$7"; sdir="$8"; sock="$9"
# A guest answers SSH before cloud-init's last stage (runcmd) has mounted the data disk on /u01:
# directories made now would end up hidden under that mount. Wait for cloud-init to finish.
if [ "\${10}" = 1 ] && command -v cloud-init >/dev/null 2>&1; then
  timeout 900 cloud-init status --wait >/dev/null 2>&1 || true
fi
if [ ! -x "$b/postgres" ]; then
  if [ "$fam" = rhel ]; then
    dnf -y -q install "postgresql$v-server" "postgresql$v-contrib"
  else
    mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/pgop.conf
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "postgresql-$v" >/dev/null
  fi
fi
[ -x "$b/postgres" ] || { echo "postgres binaries missing in $b" >&2; exit 3; }
if [ "\${11}" = 1 ] && ! command -v pgbackrest >/dev/null 2>&1; then
  if [ "$fam" = rhel ]; then dnf -y -q install pgbackrest
  else DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbackrest >/dev/null; fi
  command -v pgbackrest >/dev/null 2>&1 || { echo "pgbackrest missing (spec.backup)" >&2; exit 3; }
fi
# Postgres never starts at boot: only the operator starts it.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  for u in postgresql.service "postgresql@$v-main.service" "postgresql-$v.service"; do
    systemctl disable --now "$u" >/dev/null 2>&1 || true
    systemctl mask "$u" >/dev/null 2>&1 || true
  done
fi
id postgres >/dev/null 2>&1 || ${USERADD_POSTGRES}
set +e
pg_dir "$d" 700
pg_dir "$arch" 700
pg_dir "$bk" -
pg_dir "$logd" -
if [ "\${11}" = 1 ]; then
  pg_dir "\${12}" 700
  pg_dir "\${12}/conf.d" 700
fi
# the socket directory is pgop's own constant (/var/run/postgresql), not a spec value
pg_dir "$sock" 2775 fixed
# The script directory: root's (755) in a root-only directory, so that postgres cannot change
# what it runs; on a lab node it lies in the seed's /opt/postgres, which is postgres's, and is
# then postgres's too (postgres runs the script as itself: nothing to protect from it there).
mk_parents "$sdir"
if [ "$(stat -L -c %U -- "$sdir")" = root ]; then
  root_only "$sdir" >/dev/null || fs_die "cannot use $sdir for scripts: others than root can change it"
  chmod 755 -- "$sdir" || exit 1
fi
set -e
if [ -d /usr/lib/tmpfiles.d ] && [ ! -f /usr/lib/tmpfiles.d/postgresql.conf ] && ` +
  `[ ! -f /etc/tmpfiles.d/pgop-postgresql.conf ]; then
  echo "d $sock 2775 postgres postgres -" > /etc/tmpfiles.d/pgop-postgresql.conf 2>/dev/null || true
fi
`;

/** initdb's options besides the data directory (INITDB_SH). */
const INITDB_OPTIONS = [
  '--data-checksums',
  '--auth-local=peer',
  '--auth-host=scram-sha-256',
  '--username=postgres',
  '--encoding=UTF8',
  '--locale=C.UTF-8',
].join(' ');

/** As postgres. $1 data dir, $2 bin dir. No password: it is set as a SCRAM verifier after start. */
const INITDB_SH = `
set -e
umask 077
"$2/initdb" -D "$1" ${INITDB_OPTIONS} >/dev/null
`;

/** As postgres. $1 data dir, $2 bin dir, $3 -o options, $4 log file, $5 socket dir, $6 port.
 *  `pg_ctl start` runs the postmaster through `/bin/sh -c` with its -D and -l values inside
 *  double quotes: the data directory goes in PGDATA instead (pg_ctl then puts no -D on that
 *  line) and the output is redirected here, so no spec path is ever shell text. The -o string is
 *  shell-quoted word by word (nodeOptionString). */
const START_SH = `${PM_FUNCS}
d="$1"; b="$2"; o="$3"; log="$4"
if pm_alive "$d"; then exit 0; fi
clear_stale "$d" "$5" "$6" || exit 1
PGDATA="$d"; export PGDATA
"$b/pg_ctl" -w -t 60 -o "$o" start >> "$log" 2>&1 < /dev/null && exit 0
rc=$?
tail -n 5 "$log" >&2
exit $rc
`;

/** As postgres. $1 data dir, $2 bin dir, $3 mode, $4 socket dir, $5 port. Stops and waits until
 *  no child is left. */
const STOP_SH = `${PM_FUNCS}
d="$1"; b="$2"; m="$3"
if pm_alive "$d"; then
  if ! "$b/pg_ctl" -D "$d" -w -t 60 -m "$m" stop >/dev/null; then
    "$b/pg_ctl" -D "$d" -w -t 30 -m immediate stop >/dev/null || exit 1
  fi
fi
clear_stale "$d" "$4" "$5"
`;

/** As postgres. $1 data dir, $2 socket dir, $3 port. After a kill -9 the children linger: wait
 *  until they detached. */
const WAIT_GONE_SH = `${PM_FUNCS}
clear_stale "$1" "$2" "$3"
`;

/** As postgres; password on stdin. $1 data dir, $2 bin dir, $3 source conninfo (no password),
 *  $4 pid file (see BASEBACKUP_SH). */
const REWIND_SH = `
IFS= read -r PGPASSWORD; export PGPASSWORD
d="$1"; b="$2"; src="$3"
rm -f "$d/standby.signal" "$d/recovery.signal"
echo $$ > "$4"
exec "$b/pg_rewind" --target-pgdata="$d" --source-server="$src"
`;

/** As root. $1 data dir, $2 the primary's system identifier, $3 bin dir. Leaves an empty
 *  directory of postgres (mode 0700) for pg_basebackup:
 *  - missing or empty: made so (pg_dir);
 *  - an interrupted clone (pgdata_kind partial): emptied, as postgres;
 *  - a database cluster (a diverged copy, another cluster's data): moved aside to
 *    <dir>.pgop-old-<time>, and kept. Older copies of this cluster (same system identifier as
 *    the primary) are removed as postgres (root never recurses into a tree postgres can write);
 *    a copy of another cluster is kept ("keeping ..." on stdout). The rename runs as postgres
 *    when the parent is postgres's, as root when only root can change the way to it;
 *  - anything else: refused (exit 3): pgop does not move or delete what it does not recognise. */
const PREPARE_DATADIR_SH =
  `${NODE_FS_FUNCS}${PGDATA_KIND_FN}
d="$1"; sysid="$2"; b="$3"
k=$(pgdata_kind "$d")
case "$k" in
  other) fs_die "cannot clone into $d: it is not empty and holds neither a database cluster ` +
  `nor an interrupted clone (move it away or empty it)";;
  partial|cluster)
    [ ! -L "$d" ] && [ "$(stat -c %U -- "$d")" = postgres ] || ` +
  `fs_die "cannot clone into $d: not a directory of postgres";;
esac
if [ "$k" = partial ]; then
  as_user postgres postgres find "$d" -mindepth 1 -delete || fs_die "cannot empty the interrupted clone in $d"
elif [ "$k" = cluster ]; then
  parent=\${d%/*}; [ -n "$parent" ] || parent=/
  aside="$d.pgop-old-$(date +%Y%m%d%H%M%S)"
  for old in "$d".pgop-old-*; do
    [ -e "$old" ] || continue
    old_id=$(as_user postgres postgres env LC_ALL=C "$b/pg_controldata" -D "$old" 2>/dev/null ` +
  `| sed -n "s/^Database system identifier: *//p")
    if [ -n "$sysid" ] && [ "$old_id" = "$sysid" ]; then pg_rmtree "$old" || true
    else echo "keeping $old: not a copy of this cluster (system identifier \${old_id:-unknown})"; fi
  done
  if [ "$(stat -L -c %U -- "$parent")" = postgres ]; then
    as_user postgres postgres mv -T -- "$d" "$aside" || fs_die "cannot move $d aside"
  elif rparent=$(root_only "$parent"); then
    mv -T -- "$rparent/\${d##*/}" "$rparent/\${aside##*/}" || fs_die "cannot move $d aside"
  else
    fs_die "cannot move $d aside: others than root can change $parent"
  fi
fi
pg_dir "$d" 700
`;

/** As postgres; password on stdin. $1 data $2 bin $3 host $4 port $5 user $6 slot ('' = none)
 *  $7 app name $8 max rate ('' = none) $9 pid file: pg_basebackup's pid (this shell's, as it
 *  execs), so that a cancelled job can stop it (stopCopyScript). */
const BASEBACKUP_SH = `
IFS= read -r PGPASSWORD; export PGPASSWORD
d="$1"; b="$2"; slot="$6"; rate="$8"; pidfile="$9"
set -- -D "$d" -h "$3" -p "$4" -U "$5" -d "application_name=$7" -X stream -c fast -w
[ -z "$slot" ] || set -- "$@" -S "$slot"
[ -z "$rate" ] || set -- "$@" -r "$rate"
echo $$ > "$pidfile"
exec "$b/pg_basebackup" "$@"
`;

/** $1 data dir: the startup process's title, if its postmaster runs (nothing otherwise). */
const RECOVERY_TITLE_SH = `${PM_FUNCS}
pm_alive "$1" || exit 0
for kid in $(pgrep -P "$pid" 2>/dev/null); do
  title=$(tr '\\0' ' ' < "/proc/$kid/cmdline" 2>/dev/null)
  case "$title" in *startup*) printf '%s\\n' "$title"; exit 0;; esac
done
`;

/** As postgres (who can signal only postgres's own processes). $1 pid file, $2 data dir. Stops
 *  the pg_basebackup or pg_rewind the pid file names, if it is one copying into $2 in this
 *  node's mount namespace (a lab machine's nodes share the pid space), and its children
 *  (pg_basebackup -X stream forks its WAL streamer): TERM, then KILL. */
const STOP_COPY_SH = `
pid=$(cat "$1" 2>/dev/null) || exit 0
case "$pid" in ''|*[!0-9]*) exit 0;; esac
[ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "$(readlink /proc/self/ns/mnt)" ] || exit 0
prog=$(tr '\\0' '\\n' < "/proc/$pid/cmdline" 2>/dev/null | head -n 1)
case "$prog" in */pg_basebackup|*/pg_rewind) ;; *) exit 0;; esac
tr '\\0' '\\n' < "/proc/$pid/cmdline" | grep -qxF -e "$2" -e "--target-pgdata=$2" || exit 0
kids=$(pgrep -P "$pid" 2>/dev/null | tr '\\n' ' ')
kill -TERM "$pid" $kids 2>/dev/null || true
for _ in 1 2 3 4 5 6 7 8 9 10; do
  alive=; for p in "$pid" $kids; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ -n "$alive" ] || exit 0; sleep 0.1
done
kill -KILL "$pid" $kids 2>/dev/null || true
`;

/** As postgres; SQL on stdin. $1 bin $2 socket dir $3 port. */
const PSQL_SH = `exec "$1/psql" -X -q -v ON_ERROR_STOP=1 -h "$2" -p "$3" -d postgres -f -`;

/** As postgres. $1 log dir. */
const STARTUP_ERRORS_SH =
  'tail -n 3 "$1/startup.log" 2>/dev/null; ' +
  'f=$(ls -t "$1"/postgresql-* 2>/dev/null | head -n 1); ' +
  '[ -n "$f" ] && grep -E "FATAL|PANIC|ERROR" "$f" | tail -n 3';
