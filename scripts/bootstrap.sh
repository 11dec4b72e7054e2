#!/usr/bin/env bash
# Installs what pgop needs on a fresh Debian 12 machine (idempotent, quick when done already):
# Debian packages (as root), npm packages, and the compiled CLI in dist/.
set -euo pipefail
cd "$(dirname "$0")/.."

# The lab provider runs real postgres, pgpool-II and sshd in network namespaces.
PKGS=(postgresql-15 postgresql-client-15 pgpool2 postgresql-15-pgpool2 openssh-server openssh-client iproute2 procps util-linux)
# arping: a pool host announces the virtual IP it takes over (gratuitous ARP); ping: pgpool's
# own watchdog (spec.pgpool.watchdog) checks with it that the address came up, and sudo runs its
# root-owned address script for it (the rule lives in each lab node's own /etc/sudoers.d).
PKGS+=(iputils-arping iputils-ping sudo)
# pgBackRest: WAL archiving and backups (spec.backup): archive-push on the nodes, its TLS server
# (the repository) on the operator's host.
PKGS+=(pgbackrest)
# The libvirt provider: libvirtd + qemu (its contract tests run a private libvirtd), virsh,
# genisoimage for cloud-init seeds, libvirt-dev for @unraid/libvirt (node-gyp, during npm ci).
# No daemon is started here (policy-rc.d below); tests start their own in a namespace.
PKGS+=(libvirt-daemon-system libvirt-clients libvirt-dev qemu-system-x86 qemu-utils dnsmasq-base iptables genisoimage libxml2-utils)
# `pgop image build`: debootstrap into a loop-mounted disk (sfdisk, partx, mkfs.ext4), qemu-img.
PKGS+=(debootstrap fdisk e2fsprogs)
# Only for the test suite (`bootstrap.sh --test`): promtool and a Prometheus server (never
# started as a service here), headless Chromium for the dashboard test.
if [ "${1:-}" = --test ]; then PKGS+=(prometheus chromium); fi

if [ "$(id -u)" = 0 ]; then
  missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Keep Debian's postinst from starting a stock cluster: pgop starts every postgres itself.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
else
  echo "bootstrap: not root; skipping Debian packages (the lab provider and its tests need root)" >&2
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
