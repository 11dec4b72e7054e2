#!/usr/bin/env bash
# A private libvirtd for tests: its own network namespace (loopback only, no default route) and,
# inside it, its own mount namespace in which /etc/libvirt, /run/libvirt, /var/lib/libvirt,
# /var/cache/libvirt and /var/log/libvirt are bind mounts of DIR/{etc,run,lib,cache,log}. So its
# bridges, dnsmasq, iptables rules and guests live in the namespace, its state in DIR, and it
# never meets a libvirtd of the machine (or of another test).
#
#   bash scripts/libvirtd-test.sh start DIR [NETNS]   start; prints shell assignments:
#        LIBVIRTD_DIR LIBVIRTD_NETNS LIBVIRTD_PID LIBVIRTD_SOCKET LIBVIRT_TEST_URI LIBVIRT_QEMU_URI
#   bash scripts/libvirtd-test.sh restart DIR         restart libvirtd alone (as an upgrade would)
#   bash scripts/libvirtd-test.sh stop DIR            kill every process of the namespace (by
#        PID: libvirtd, virtlogd, dnsmasq, qemu), delete the namespace, remove DIR
#
# Clients (virsh, the provider, tests) connect through the socket in DIR, from any namespace:
#   test+unix:///default?socket=DIR/run/libvirt-sock    libvirt's test driver (fake guests)
#   qemu+unix:///system?socket=DIR/run/libvirt-sock     real qemu guests (in the namespace)
# Anything that talks to the guests' addresses must itself run inside the namespace
# (`ip netns exec NETNS ...` or nsenter --net=/run/netns/NETNS).
# Environment: LIBVIRTD_QEMU_USER=root runs guests as root (default: the package's user).
set -euo pipefail

usage() { echo "usage: $0 start DIR [NETNS] | restart DIR | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac

if [ "$(id -u)" != 0 ]; then
  echo "libvirtd-test: needs root (network and mount namespaces)" >&2
  exit 77
fi

stop() {
  local ns pid pids i
  [ -d "$dir" ] || return 0
  ns=$(cat "$dir/netns" 2>/dev/null || true)
  pid=$(cat "$dir/libvirtd.pid" 2>/dev/null || cat "$dir/launch.pid" 2>/dev/null || true)
  # libvirtd first, gently (it tears its networks down), then everything left in the namespace.
  if [ -n "$pid" ] && [ -n "$ns" ] && ip netns identify "$pid" 2>/dev/null | grep -qx "$ns"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ -n "$ns" ] && [ -e "/run/netns/$ns" ]; then
    for i in $(seq 50); do
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [ -z "$pids" ] && break
      # shellcheck disable=SC2086
      kill -9 $pids 2>/dev/null || true
      sleep 0.1
    done
    ip netns delete "$ns" 2>/dev/null || true
  fi
  rm -rf -- "$dir"
}

q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# Start libvirtd (and virtlogd when $1 = yes) in the namespace, in a fresh private mount
# namespace over DIR's directories; wait until it answers.
launch() {
  local ns script sock ok
  ns=$(cat "$dir/netns")
  script="set -e
for p in /etc/libvirt:etc /run/libvirt:run /var/lib/libvirt:lib /var/cache/libvirt:cache /var/log/libvirt:log; do
  t=\${p%%:*}; s=$(q "$dir")/\${p#*:}
  mkdir -p \"\$t\"; mount --bind \"\$s\" \"\$t\"
done
$([ "$1" = yes ] && echo "virtlogd -d -p $(q "$dir/virtlogd.pid")")
exec libvirtd -p $(q "$dir/libvirtd.pid")"
  rm -f "$dir/libvirtd.pid"
  ip netns exec "$ns" unshare --mount --propagation private -- sh -c "$script" >>"$dir/libvirtd.log" 2>&1 </dev/null &
  echo $! > "$dir/launch.pid"
  sock="$dir/run/libvirt-sock"
  ok=0
  for _ in $(seq 300); do
    if [ -S "$sock" ] && [ -s "$dir/libvirtd.pid" ] && virsh -q -c "test+unix:///default?socket=$sock" uri >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "$(cat "$dir/launch.pid")" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$ok" != 1 ]; then
    echo "libvirtd-test: libvirtd did not come up:" >&2
    tail -n 20 "$dir/libvirtd.log" >&2 || true
    return 1
  fi
}

case "$cmd" in
  stop)
    stop
    ;;
  restart)
    # libvirtd only (virtlogd, guests and dnsmasq stay), as a package upgrade would.
    pid=$(cat "$dir/libvirtd.pid")
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    launch no
    echo "LIBVIRTD_PID=$(cat "$dir/libvirtd.pid")"
    ;;
  start)
    ns=${3:-pgvt$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')}
    for b in libvirtd virtlogd virsh; do
      command -v "$b" >/dev/null || { echo "libvirtd-test: $b is not installed (scripts/bootstrap.sh installs libvirt)" >&2; exit 3; }
    done
    [ -e "/run/netns/$ns" ] && { echo "libvirtd-test: namespace $ns exists already" >&2; exit 3; }
    # No udev here: a root-only /dev/kvm makes libvirt re-probe qemu on every call (a define took
    # 68 s). Give it the group udev would (kvm, 0660).
    if [ -c /dev/kvm ] && [ "$(stat -c %a /dev/kvm)" = 600 ] && getent group kvm >/dev/null; then
      chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
    fi
    mkdir -p "$dir"/etc "$dir"/run "$dir"/lib "$dir"/cache "$dir"/log
    # libvirtd does not make the qemu log dir itself (the package does): virtlogd opens the
    # guests' console logs there, and a domain with a log file does not start without it.
    mkdir -p "$dir"/log/qemu
    # The machine's configuration without its guests, networks and pools.
    cp -a /etc/libvirt/. "$dir/etc/"
    rm -rf "$dir/etc/qemu/networks" "$dir/etc/storage" "$dir/etc/qemu/autostart"
    find "$dir/etc/qemu" -maxdepth 1 -name '*.xml' -delete 2>/dev/null || true
    mkdir -p "$dir/etc/qemu/networks/autostart"
    if [ -n "${LIBVIRTD_QEMU_USER:-}" ]; then
      printf '\n# libvirtd-test\nuser = "%s"\ngroup = "%s"\n' "$LIBVIRTD_QEMU_USER" "$LIBVIRTD_QEMU_USER" >> "$dir/etc/qemu.conf"
    fi
    echo "$ns" > "$dir/netns"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # mkdir -p of the mount points touches the machine's filesystem only when they are missing
    # (empty directories); everything written below them goes to DIR.
    launch yes || { stop; exit 1; }
    sock="$dir/run/libvirt-sock"
    test_uri="test+unix:///default?socket=$sock"
    echo "LIBVIRTD_DIR=$(q "$dir")"
    echo "LIBVIRTD_NETNS=$(q "$ns")"
    echo "LIBVIRTD_PID=$(cat "$dir/libvirtd.pid" 2>/dev/null || cat "$dir/launch.pid")"
    echo "LIBVIRTD_SOCKET=$(q "$sock")"
    echo "LIBVIRT_TEST_URI=$(q "$test_uri")"
    echo "LIBVIRT_QEMU_URI=$(q "qemu+unix:///system?socket=$sock")"
    ;;
  *)
    usage
    ;;
esac
