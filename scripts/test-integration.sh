#!/usr/bin/env bash
# Run integration tests inside a fresh lab hub namespace, then remove everything of that lab.
#
#   bash scripts/test-integration.sh [vitest args...]     (default: test/integration)
#
# Why a wrapper: the network rule says every process that talks to lab hosts runs inside the
# lab's hub namespace (the root namespace has a default route off the machine). So vitest itself
# runs in the hub: the tests create lab hosts with their own code and connect to them directly.
# Each run uses a unique prefix (PGOP_LAB_PREFIX=pgt<random>) and state dir (PGOP_LAB_STATE), so it
# never touches a user's lab; on exit (pass, fail or Ctrl-C) every <prefix>-* namespace is emptied
# (SIGKILL of the processes in it, by PID) and deleted, and the state dir is removed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "test-integration: needs root (network namespaces, sshd); skipping" >&2
  exit 0
fi

prefix="pgt$(od -An -N2 -tx2 /dev/urandom | tr -d ' \n')"
# Not under /tmp or /root: lab nodes mount private ones over those.
state="/var/lib/pgop/test-${prefix}"
hub="${prefix}-hub"
export PGOP_LAB_PREFIX="$prefix" PGOP_LAB_STATE="$state"

cleanup() {
  local rc=$?
  local ns pids
  for ns in /run/netns/"${prefix}"-*; do
    [ -e "$ns" ] || continue
    ns=${ns##*/}
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [ -z "$pids" ] && break
      # shellcheck disable=SC2086
      kill -9 $pids 2>/dev/null || true
      sleep 0.1
    done
    ip netns delete "$ns" 2>/dev/null || true
  done
  # the lab machines' cgroups (empty now)
  local cg
  cg=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
  if [ -n "$cg" ]; then rmdir "$cg"/pgop-lab/"${prefix}"-* 2>/dev/null || true; fi
  rm -rf -- "$state"
  exit "$rc"
}
trap cleanup EXIT

ip netns add "$hub"
ip -n "$hub" link set lo up
mkdir -p "$state"

[ $# -gt 0 ] || set -- test/integration
echo "test-integration: prefix $prefix, state $state, vitest in namespace $hub" >&2
# In the background so that INT/TERM are handled at once: stop vitest (by its PID), then clean up.
# nsenter (network namespace only), not `ip netns exec`: the latter gives vitest a private mount
# namespace, and the namespaces the tests create would then be invisible (and uncleanable) here.
nsenter --net="/run/netns/$hub" -- npx vitest run --no-file-parallelism "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true; wait "$child" || true; exit 130' INT
trap 'kill -TERM "$child" 2>/dev/null || true; wait "$child" || true; exit 143' TERM
wait "$child"
