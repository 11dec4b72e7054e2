#!/usr/bin/env bash
# Builds an offline Debian cloud image (BIOS boot, one ext4 root partition labelled for the
# kernel command line) into a qcow2. Called by `pgop image build` (src/image/build.ts) inside a
# private mount namespace (`unshare --mount --propagation private`): the loop mounts made here
# never show up in, or leak into, any other namespace, and vanish with this process.
#
#   build-image.sh --out FILE.qcow2 --work DIR --cache DIR --suite SUITE --mirror URL
#                  --packages a,b,c --files DIR --label LABEL --size-gib N [--compress]
#                  [--rootfs-cache FILE.tar]
#
# --rootfs-cache: the system debootstrap made, as a tar file (the caller names it after what
# decides its content: suite, mirror, packages). When it exists it is unpacked instead of running
# debootstrap again (the slow part: ~300 packages unpacked and configured); otherwise it is
# written after debootstrap. The steps after it (configuration, GRUB) always run.
#
# Progress: one "::phase NAME" line per phase on fd 3 (stdout when run by hand); all command
# output goes to stderr (the caller keeps it as the build log).
set -euo pipefail
export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

if { true >&3; } 2>/dev/null; then :; else exec 3>&1; fi
exec 1>&2
phase() { printf '::phase %s\n' "$1" >&3; }
die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }

out='' work='' cache='' suite='' mirror='' packages='' files='' label='' size_gib='' compress=0 rootfs_cache=''
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --suite) suite=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --packages) packages=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    --label) label=$2; shift 2 ;;
    --size-gib) size_gib=$2; shift 2 ;;
    --compress) compress=1; shift ;;
    --rootfs-cache) rootfs_cache=$2; shift 2 ;;
    *) die "unknown argument: $1" ;;
  esac
done
for v in out work cache suite mirror packages files label size_gib; do
  [ -n "${!v}" ] || die "missing --${v//_/-}"
done
case $work in /*) ;; *) die "--work must be absolute" ;; esac
case $cache in /*) ;; *) die "--cache must be absolute" ;; esac
[ "$(id -u)" = 0 ] || die "needs root (loop devices, mounts, chroot)"

raw="$work/root.raw"
mnt="$work/mnt"
loop=''

cleanup() {
  local rc=$?
  set +e
  if [ -n "$mnt" ] && mountpoint -q "$mnt"; then
    umount -R "$mnt" 2>/dev/null || umount -R -l "$mnt"
  fi
  if [ -n "$loop" ]; then
    partx -d "$loop" 2>/dev/null
    losetup -d "$loop"
  fi
  [ -z "$rootfs_cache" ] || rm -f "$rootfs_cache.tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

in_root() { chroot "$mnt" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
  DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true "$@"; }

phase "disk"
mkdir -p "$work" "$mnt" "$cache/debootstrap" "$cache/apt/partial"
rm -f "$raw"
truncate -s "${size_gib}G" "$raw"
# One bootable MBR partition from 1 MiB (GRUB's core image goes into the gap before it).
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk --quiet "$raw"
loop=$(losetup --find --show "$raw")
# Without udev nothing scans the partition table: tell the kernel about the partition ourselves.
partx -a "$loop" 2>/dev/null || true
part="${loop}p1"
for _ in $(seq 50); do [ -b "$part" ] && break; sleep 0.1; done
[ -b "$part" ] || die "partition $part did not appear"
mkfs.ext4 -q -L "$label" -E lazy_itable_init=0,lazy_journal_init=0 "$part"
# No write barriers: dpkg fsyncs every file, and the loop device would pass each flush on to the
# host disk. Nothing here must survive a crash (a failed build is thrown away); umount and
# losetup -d flush everything before the image is converted.
mount -o barrier=0,noatime "$part" "$mnt"

if [ -n "$rootfs_cache" ] && [ -f "$rootfs_cache" ]; then
  phase "unpack"
  tar -C "$mnt" --numeric-owner --xattrs --xattrs-include='*' --acls -xpf "$rootfs_cache"
else
  phase "debootstrap"
  # --cache-dir keeps the downloaded .debs: a warm build downloads nothing but the indexes.
  debootstrap --variant=minbase --include="$packages" --cache-dir="$cache/debootstrap" \
    "$suite" "$mnt" "$mirror"
  # debootstrap leaves its .debs in the image; they live in the cache already.
  rm -f "$mnt"/var/cache/apt/archives/*.deb
  if [ -n "$rootfs_cache" ]; then
    mkdir -p "$(dirname "$rootfs_cache")"
    tar -C "$mnt" --numeric-owner --xattrs --xattrs-include='*' --acls --exclude=./lost+found \
      -cpf "$rootfs_cache.tmp" .
    mv -f "$rootfs_cache.tmp" "$rootfs_cache"
    # Only the newest system is kept (each is about a GiB).
    find "$(dirname "$rootfs_cache")" -maxdepth 1 -name 'rootfs-*.tar' ! -path "$rootfs_cache" -delete
  fi
fi

phase "configure"
mount -t proc proc "$mnt/proc"
mount -t sysfs sysfs "$mnt/sys"
mount --bind /dev "$mnt/dev"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$mnt/dev/pts"
mount -t tmpfs tmpfs "$mnt/run"
# From now on apt downloads into the shared cache.
mkdir -p "$mnt/var/cache/apt/archives"
mount --bind "$cache/apt" "$mnt/var/cache/apt/archives"
# Nothing may start a service inside the chroot.
printf '#!/bin/sh\nexit 101\n' > "$mnt/usr/sbin/policy-rc.d"
chmod 0755 "$mnt/usr/sbin/policy-rc.d"

cp -a "$files/." "$mnt/"
printf 'LABEL=%s / ext4 defaults,errors=remount-ro 0 1\n' "$label" > "$mnt/etc/fstab"
printf 'debian\n' > "$mnt/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$mnt/etc/hosts"
printf 'deb %s %s main\n' "$mirror" "$suite" > "$mnt/etc/apt/sources.list"
# Password logins stay off from the first boot (cloud-init would otherwise rewrite the file and
# restart sshd in the middle of the boot).
sed -i -E 's/^#?[[:space:]]*PasswordAuthentication[[:space:]].*/PasswordAuthentication no/' "$mnt/etc/ssh/sshd_config"
grep -q '^PasswordAuthentication no' "$mnt/etc/ssh/sshd_config" || echo 'PasswordAuthentication no' >> "$mnt/etc/ssh/sshd_config"
# Locales: C.UTF-8 as the default (cloud-init's locale step needs one), en_US.UTF-8 for databases.
if [ -f "$mnt/etc/locale.gen" ]; then
  sed -i -E 's/^# *(en_US\.UTF-8 UTF-8)/\1/' "$mnt/etc/locale.gen"
  in_root locale-gen
fi
printf 'LANG=C.UTF-8\n' > "$mnt/etc/default/locale"
# pgop starts postgres and pgpool itself: no stock cluster, no unit enabled at boot.
if [ -x "$mnt/usr/bin/pg_lsclusters" ]; then
  in_root pg_lsclusters -h </dev/null | while read -r ver name _; do
    in_root pg_dropcluster "$ver" "$name" </dev/null
  done
fi
# Nor what a database guest does not need at boot (LVM mirror/snapshot monitoring, fs scrubbing).
for unit in postgresql.service pgpool2.service apt-daily.timer apt-daily-upgrade.timer \
  lvm2-monitor.service e2scrub_reap.service e2scrub_all.timer; do
  if [ -e "$mnt/lib/systemd/system/$unit" ]; then in_root systemctl disable --quiet "$unit"; fi
done
# Each instance gets its own machine id and SSH host keys (cloud-init makes new ones).
: > "$mnt/etc/machine-id"
rm -f "$mnt/var/lib/dbus/machine-id" "$mnt"/etc/ssh/ssh_host_*

phase "bootloader"
in_root debconf-set-selections <<'EOF'
grub-pc grub-pc/install_devices multiselect
grub-pc grub-pc/install_devices_empty boolean true
EOF
in_root apt-get install -y -q --no-install-recommends grub-pc
in_root grub-install --target=i386-pc --modules="part_msdos ext2" "$loop"
in_root update-grub
# Without udev grub-mkconfig names the build's loop partition as root: use the label instead.
sed -i -E "s#root=(/dev/loop[0-9]+p1|UUID=[0-9a-f-]+)#root=LABEL=$label#g" "$mnt/boot/grub/grub.cfg"
grep -q "root=LABEL=$label" "$mnt/boot/grub/grub.cfg" || die "grub.cfg has no root=LABEL=$label"
if grep -q '/dev/loop' "$mnt/boot/grub/grub.cfg"; then die "grub.cfg still names a loop device"; fi

phase "finish"
rm -f "$mnt/usr/sbin/policy-rc.d"
umount "$mnt/var/cache/apt/archives" "$mnt/run" "$mnt/dev/pts" "$mnt/dev" "$mnt/sys" "$mnt/proc"
rm -rf "$mnt"/var/cache/apt/archives/*.deb "$mnt"/var/cache/apt/*.bin "$mnt"/var/lib/apt/lists/*_Packages* \
  "$mnt"/tmp/* "$mnt"/var/tmp/* "$mnt"/var/log/*.log "$mnt"/var/cache/debconf/*-old
# Free blocks become holes in the raw file, so the qcow2 holds only what is used.
fstrim "$mnt" || true
umount "$mnt"
partx -d "$loop" 2>/dev/null || true
losetup -d "$loop"
loop=''

phase "convert"
rm -f "$out"
if [ "$compress" = 1 ]; then
  qemu-img convert -c -O qcow2 "$raw" "$out"
else
  qemu-img convert -O qcow2 "$raw" "$out"
fi
rm -f "$raw"
phase "done"
