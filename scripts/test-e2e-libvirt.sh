#!/usr/bin/env bash
# The libvirt end-to-end test (test/libvirt/e2e.test.ts) with everything it needs around it:
#   1. the offline Debian image (`pgop image build`: reused when its recipe is unchanged),
#   2. a private libvirtd (scripts/libvirtd-test.sh): its own network namespace without a default
#      route, its own libvirt directories under this run's directory,
#   3. vitest inside that namespace (guests, pgpool and ssh are reached from there only),
#   4. on exit, pass, fail or Ctrl-C: vitest stopped by PID, every process of the namespace
#      killed by PID (libvirtd, virtlogd, dnsmasq, qemu), the namespace and this run's directory
#      (domains, networks, pools, volumes, the store) removed. The image is kept for the next run.
#
#   bash scripts/test-e2e-libvirt.sh [vitest args...]
# Environment: PGOP_E2E_IMAGE (default /var/lib/pgop/images/debian-12-pgop.qcow2),
#              PGOP_E2E_KEEP_WORK=1 keeps the test's store and serve log (in the run dir: it is
#              removed anyway; copy it from a failure message's path while the test runs).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "test-e2e-libvirt: skipped: needs root (network namespaces, libvirtd, loop devices)" >&2
  exit 0
fi
for b in qemu-system-x86_64 libvirtd virtlogd virsh qemu-img; do
  if ! command -v "$b" >/dev/null; then
    echo "test-e2e-libvirt: skipped: $b is not installed, this host cannot run the VMs (scripts/bootstrap.sh installs it)" >&2
    exit 0
  fi
done
if ! echo quit | timeout 60 qemu-system-x86_64 -machine none -accel tcg -display none -nodefaults -monitor stdio >/dev/null 2>&1; then
  echo "test-e2e-libvirt: skipped: qemu-system-x86_64 cannot start on this host (not even TCG)" >&2
  exit 0
fi
[ -f dist/src/cli/main.js ] || npm run --silent build

image=${PGOP_E2E_IMAGE:-/var/lib/pgop/images/debian-12-pgop.qcow2}
echo "test-e2e-libvirt: image $image (built when missing or its recipe changed)" >&2
# In the root namespace: the build downloads from the Debian mirror.
./bin/pgop image build -o "$image"

run="/var/lib/pgop/e2e-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
mkdir -p "$run"
chmod 0755 "$run" # the guests' disks live below it; qemu runs as libvirt-qemu
child=''
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  bash scripts/libvirtd-test.sh stop "$run/libvirtd" || true
  rm -rf -- "$run"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

eval "$(bash scripts/libvirtd-test.sh start "$run/libvirtd")"
export LIBVIRTD_DIR LIBVIRTD_NETNS LIBVIRTD_PID LIBVIRTD_SOCKET LIBVIRT_TEST_URI LIBVIRT_QEMU_URI
export PGOP_E2E_IMAGE="$image"
echo "test-e2e-libvirt: libvirtd pid $LIBVIRTD_PID in namespace $LIBVIRTD_NETNS, run dir $run" >&2

[ $# -gt 0 ] || set -- --reporter=default
# nsenter (network namespace only) so that the test sees the machine's mounts; in the
# background so that INT/TERM reach the cleanup at once.
nsenter --net="/run/netns/$LIBVIRTD_NETNS" -- npx vitest run --no-file-parallelism test/libvirt/e2e.test.ts "$@" &
child=$!
wait "$child"
