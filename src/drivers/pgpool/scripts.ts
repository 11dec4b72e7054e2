// The shell scripts the pgpool driver runs on the pool host (arguments as $1..., never spliced
// into the text).

import { NODE_FS_FUNCS } from '../ssh/node-fs.js';

/** alive <pid>: a live (not zombie) pgpool process. */
const ALIVE_FN = `
alive() {
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = pgpool ] || return 1
  [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
`;

/** As root: remove the `unreachable` route (set by a fence) to each address given. */
export const ROUTE_BACK_SH = 'for a in "$@"; do ip route del unreachable "$a"/32 2>/dev/null; done';

/** drop_alias ADDRESS: the NAT alias (ALIAS_SH) to ADDRESS removed, if any. */
const DROP_ALIAS_FN = `
drop_alias() {
  iptables -w -t nat -S PGOP_ALIAS 2>/dev/null | awk -v d="$1/32" '$3 == "-d" && $4 == d {
    for (i = 5; i < NF; i++) { if ($i == "--dport") p = $(i + 1); if ($i == "--to-destination") t = $(i + 1) }
    print p, t
  }' | while read -r p t; do
    iptables -w -t nat -D PGOP_ALIAS -d "$1"/32 -p tcp -m tcp --dport "$p" -j DNAT --to-destination "$t"
  done
}
`;

/** As root: the `unreachable` route (set by a fence) and the NAT alias (ALIAS_SH) to each
 *  address given removed. A connection pgpool holds through the alias keeps its translation
 *  (conntrack) and so its session; new ones reach the node itself. */
export const ROUTE_AND_ALIAS_BACK_SH = `${DROP_ALIAS_FN}
for a in "$@"; do
  ip route del unreachable "$a"/32 2>/dev/null
  drop_alias "$a"
done
exit 0`;

/** As root. $1 a node pgpool holds up while it is away, $2 a standby that serves, $3 postgres's
 *  port: pgpool's connects to $1 go to $2 (a DNAT rule in chain PGOP_ALIAS of the nat table,
 *  for this host's own connects), the sockets still at $1 ended, then the route a fence set
 *  to $1 removed. pgpool's first node cannot be held up behind a route (standby-death.md
 *  §4d): this keeps its connects succeeding, so no child skips it and pgpool's main node stays. */
export const ALIAS_SH = `${DROP_ALIAS_FN}
command -v iptables >/dev/null 2>&1 || { echo "iptables is not installed" >&2; exit 3; }
ss -K dst "$1" >/dev/null 2>&1
iptables -w -t nat -N PGOP_ALIAS 2>/dev/null
iptables -w -t nat -C OUTPUT -j PGOP_ALIAS 2>/dev/null || iptables -w -t nat -I OUTPUT -j PGOP_ALIAS || exit 1
drop_alias "$1"
iptables -w -t nat -A PGOP_ALIAS -d "$1"/32 -p tcp -m tcp --dport "$3" \\
  -j DNAT --to-destination "$2:$3" || exit 1
ip route del unreachable "$1"/32 2>/dev/null
exit 0`;

/** As root: the nodes a fence or a standby's death left cut off from this host (`unreachable
 *  ADDRESS` lines) and those held up behind a NAT alias (`alias ADDRESS` lines). */
export const READ_CUT_OFFS_SH = `ip -4 route show type unreachable |
  awk '{ sub("/32$", "", $2); print "unreachable", $2 }'
iptables -w -t nat -S PGOP_ALIAS 2>/dev/null |
  awk '$1 == "-A" && $3 == "-d" { sub("/32$", "", $4); print "alias", $4 }'
exit 0`;

/** As root. $1 dir $2 run $3 log $4 oiddir $5 pgpool binary $6 key file $7 pcp secret $8 pid file
 *  $9 status dir $10 `watchdog` when pgpool's own watchdog is on (it needs sudo, arping, ping).
 *  Prints key=, pcp= (the stored secrets, empty when missing) and running=0|1. The directories
 *  become postgres's through pg_dir (src/drivers/ssh/node-fs.ts: the ones inside pgpool's
 *  directory are made by postgres itself); the secrets are read as postgres, their owner (root
 *  would follow a link postgres put in their place). */
export const PREPARE_SH = `${ALIVE_FN}${NODE_FS_FUNCS}
set -e
if [ ! -x "$5" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgpool2 >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    dnf -y -q install pgpool-II
  fi
fi
[ -x "$5" ] || { echo "pgpool is not installed ($5 missing)" >&2; exit 3; }
wd_tools() { [ -x /usr/bin/sudo ] && [ -x /usr/bin/arping ] && [ -x /usr/bin/ping ]; }
if [ "\${10}" = watchdog ] && ! wd_tools; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q sudo iputils-arping iputils-ping >/dev/null
fi
set +e
for dir in "$1" "$2" "$3" "$4"; do pg_dir "$dir" 700 fixed; done
pg_dir "$9" 700 fixed
set -e
echo "key=$(as_user postgres postgres head -n 1 -- "$6" 2>/dev/null || true)"
echo "pcp=$(as_user postgres postgres head -n 1 -- "$7" 2>/dev/null || true)"
running=0
if [ -f "$8" ] && alive "$(as_user postgres postgres head -n 1 -- "$8" 2>/dev/null)"; then running=1; fi
echo "running=$running"
# pgpool never starts at boot by itself (the distro unit would fight over ports and sockets);
# disabled only while enabled or running: a disable reloads systemd, seconds on an emulated VM
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  for unit in pgpool2.service pgpool-II.service; do
    if systemctl -q is-enabled "$unit" 2>/dev/null || systemctl -q is-active "$unit" 2>/dev/null; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
  done
fi
`;

/** As postgres: the pgpool processes (ours: ss names only the caller's) that listen on one of
 *  the ports in $1 (space-separated), and the pgpool processes of their groups, ended; then up to
 *  3 s for every listener there to go, whoever's (a command pgpool's watchdog ran, as root,
 *  inherits its socket until it exits). */
const END_PORT_HOLDERS_FN = `
end_port_holders() {
  f=
  for port in $1; do f="$f\${f:+ or }sport = :$port"; done
  pids=$(ss -Hlntup "( $f )" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | paste -sd, -)
  # each group once (24 children listen on one port): its pgpool processes only
  [ -n "$pids" ] && ps -o pgid=,comm= -p "$pids" | awk '$2 == "pgpool" { print $1 }' | sort -u |
    while read -r g; do pgrep -g "$g" -x pgpool | xargs -r kill -KILL 2>/dev/null; done
  i=0
  while [ $i -lt 30 ]; do
    ss -Hlntu "( $f )" 2>/dev/null | grep -q . || return 0
    sleep 0.1; i=$((i+1))
  done
}
`;

/** As postgres. $1 pgpool $2 conf $3 hba $4 pcp $5 key $6 log $7 pid $8 dir $9 status lines
 *  ${10} status file ${11} the ports it listens on (space-separated). One start at a time (a
 *  lock in $8): two at once would both start a main process, and the one whose pid file lost
 *  would run on unseen. */
export const START_SH = `${ALIVE_FN}${END_PORT_HOLDERS_FN}
cd "$8" || exit 1
exec 9>>"$8/.pgop-start.lock"
flock -w 30 9 || { echo "another start of pgpool holds $8/.pgop-start.lock" >&2; exit 1; }
if [ -f "$7" ]; then
  if alive "$(head -n 1 "$7")"; then exit 0; fi
  rm -f "$7"
fi
# The processes of a main process that died alone (a kill of it, the OOM killer) keep its ports:
# the new main would fail with "Address already in use" for as long as they live.
end_port_holders "\${11}"
rm -f "$(dirname "$7")"/.s.PGSQL.* 2>/dev/null
# /run is emptied at boot; prepare (as root) creates the directory, this covers a restart
mkdir -p "$(dirname "\${10}")" 2>/dev/null
printf '%s' "$9" > "\${10}" || exit 1
setsid nohup "$1" -n -f "$2" -a "$3" -F "$4" -k "$5" >> "$6" 2>&1 < /dev/null 9>&- &
i=0
while [ $i -lt 100 ]; do
  [ -s "$7" ] && exit 0
  sleep 0.05; i=$((i+1))
done
echo "pgpool did not write its pid file" >&2
tail -n 5 "$6" >&2
exit 1
`;

/** As postgres. $1 pgpool $2 conf $3 pid file. */
export const STOP_SH = `${ALIVE_FN}
[ -f "$3" ] || exit 0
pid=$(head -n 1 "$3")
case "$pid" in ''|*[!0-9]*) rm -f "$3"; exit 0 ;; esac
# Fast shutdown (SIGINT). A main process busy searching for a primary, or a hung one, does not
# act on it: after ~1 s SIGKILL its whole process group (started with setsid, the group is pgpool
# and its children). Nothing is lost: pgpool starts from the status file pgop writes and keeps
# no other state.
if alive "$pid"; then
  kill -INT "$pid" 2>/dev/null
  i=0
  while alive "$pid" && [ $i -lt 10 ]; do sleep 0.1; i=$((i+1)); done
  if alive "$pid"; then kill -KILL "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; sleep 0.1; fi
fi
# Children that outlive their main process still hold the listening sockets, and the next start
# fails with "Address already in use": end the rest of that group (pgpool processes only) and
# wait until it is gone.
if pgrep -g "$pid" -x pgpool >/dev/null 2>&1; then
  kill -KILL -- "-$pid" 2>/dev/null
  i=0
  while pgrep -g "$pid" -x pgpool >/dev/null 2>&1 && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done
fi
rm -f "$3"
exit 0
`;

/** As root: the route to $1 made `unreachable` and pgpool's sessions there ended, then the
 *  route to each further address removed. */
export const CUT_OFF_SH = `ip route replace unreachable "$1"/32 || exit 1
ss -K dst "$1" >/dev/null 2>&1
shift
${ROUTE_BACK_SH}
exit 0`;

/** As root: the route to $1 made `unreachable`, and the connects still waiting for its answer
 *  ended: pgpool's connects there fail at once, and it opens its sessions without that standby
 *  (a connect to a silent host would hold a child until the kernel gives up: minutes). The
 *  sessions it has keep their sockets: a killed one would end its session. */
export const ROUTE_CUT_SH = `ip route replace unreachable "$1"/32 || exit 1
ss -K state syn-sent dst "$1" >/dev/null 2>&1
exit 0`;

/** As root, beside the PCP detach of a node that may have gone silent ($1 its address). A pgpool
 *  child taking a client ("accept connection") waits without a timeout for the node's answer:
 *  to the startup of a connection it had opened before the node went silent, or to the
 *  `SET application_name` it sends on a cached one (child.c,
 *  connect_using_existing_connection). It would wait until TCP gives up (minutes), serving no
 *  one: that socket is destroyed, so its client fails at once and the child is free again. An
 *  idle child with cached connections gets SIGUSR1, pgpool's own request to drop them. Never
 *  SIGQUIT: pgpool does not fork again a child that quit on it. */
export const UNSTICK_CHILDREN_SH = `ss -Htnp state established dst "$1" | while read -r _ _ local _ users; do
  pid=$(printf '%s' "$users" | sed -n 's/.*pid=\\([0-9]*\\).*/\\1/p')
  [ -n "$pid" ] || continue
  title=$(tr '\\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || continue
  case $title in
    'pgpool: wait for connection request'*) kill -USR1 "$pid" 2>/dev/null ;;
    'pgpool: accept connection'*) ss -K state established dst "$1" sport = ":\${local##*:}" >/dev/null 2>&1 ;;
  esac
done
exit 0`;

/** As root: pgpool's directory removed, as postgres (its owner): root never recurses into a
 *  tree postgres can write. */
export const REMOVE_DIR_SH = `${NODE_FS_FUNCS}\npg_rmtree "$1"`;

/** Clients of the old holder tickled at most: their addresses travel on one command line (Linux
 *  takes at most 128 KiB in one argument; 2048 of them take 45 KiB). */
export const MAX_TICKLED_CLIENTS = 2048;

/** As root. $1 the virtual IP, $2 pgpool's port: prints held or free; when held, then the clients
 *  connected to pgpool at the virtual IP, one `c ADDRESS:PORT` line each (the next holder tickles
 *  them, VIP_TAKE_SH). */
export const VIP_HELD_SH = `if ! ip -4 -o addr show to "$1/32" | grep -q .; then echo free; exit 0; fi
echo held
ss -Htn state established src "$1:$2" 2>/dev/null | while read -r _ _ _ peer _; do echo "c $peer"; done |
  head -n ${MAX_TICKLED_CLIENTS}`;

/** As CUT_OFF_SH, without the route: on a database node (pgpool.onNodes) a route would also cut
 *  its own replication off the node, and the fenced node's rejoin needs this one (a left-over
 *  route on the new primary once made the old primary's pg_basebackup time out for minutes). */
export const CUT_SESSIONS_SH = `ss -K dst "$1" >/dev/null 2>&1
shift
${ROUTE_BACK_SH}
exit 0`;

/** As root. $1 the virtual IP: removed from every interface that has it (nothing: a no-op). */
export const VIP_DROP_SH = `set -e
ip -4 -o addr show to "$1/32" | while read -r _ dev _ cidr _; do ip addr del "$cidr" dev "$dev"; done`;

/** Python (stdin), as root. argv: the virtual IP, the host's own address, pgpool's port, then the
 *  old holder's clients as ADDRESS:PORT. A client waiting for an answer the old holder will never
 *  send sends nothing itself, so it would wait out TCP keepalive (hours); one whose request was
 *  lost waits out its retransmit backoff (seconds). Each gets a bare ACK from the virtual IP
 *  that no connection here matches: its kernel answers with an ACK, which this host, holding no
 *  such connection, answers with a reset, so the client learns at once and reconnects (CTDB's
 *  "tickle ACK"). Twice: the first answer may still go to the old holder's MAC, and Linux
 *  answers a socket's stray segments at most every 500 ms. */
const TICKLE_PY = `import socket, struct, sys, time
vip, port, peers = sys.argv[1], int(sys.argv[3]), sys.argv[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.bind((vip, 0))
def ack(ip, p):
    h = struct.pack("!HHIIBBHHH", port, p, 0, 0, 0x50, 0x10, 1024, 0, 0)
    b = socket.inet_aton(vip) + socket.inet_aton(ip) + struct.pack("!BBH", 0, 6, len(h)) + h
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return h[:16] + struct.pack("!H", ~t & 0xFFFF) + h[18:]
for delay in (0, 0.6):
    time.sleep(delay)
    for peer in peers:
        ip, p = peer.rsplit(":", 1)
        try:
            s.sendto(ack(ip, int(p)), (ip, 0))
        except OSError:
            pass`;

/** As root. $1 the virtual IP, $2 the host's own address: the VIP added (as /32) on the interface
 *  that carries $2, then announced with an unsolicited ARP so that neighbours' caches point at
 *  this host at once (no arping: a warning, and neighbours learn it when their entry expires). */
export const VIP_ADD_SH = `set -e
dev=$(ip -4 -o addr show to "$2/32" | while read -r _ d _; do echo "$d"; break; done)
[ -n "$dev" ] || { echo "no interface carries $2" >&2; exit 2; }
ip -4 -o addr show to "$1/32" | grep -q . || ip addr add "$1/32" dev "$dev"
if command -v arping >/dev/null 2>&1; then
  # sent at once; arping then lingers a second per count (not waited for), the second a repeat
  setsid arping -q -U -c 2 -I "$dev" "$1" </dev/null >/dev/null 2>&1 &
else
  echo "warning: no arping (iputils-arping): neighbours keep the old holder until their ARP entry expires"
fi`;

/** As root. VIP_ADD_SH's $1 and $2, then pgpool's port and the old holder's clients
 *  (ADDRESS:PORT): the address added and announced, then the clients tickled (TICKLE_PY, not
 *  waited for; without python3 they learn by their own retransmits or keepalives). */
export const VIP_TAKE_SH = `${VIP_ADD_SH}
if [ $# -gt 3 ] && command -v python3 >/dev/null 2>&1; then
  setsid python3 - "$@" >/dev/null 2>&1 <<'PY' &
${TICKLE_PY}
PY
fi`;
