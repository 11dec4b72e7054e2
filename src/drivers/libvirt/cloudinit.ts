// The cloud-init NoCloud seed of one machine: meta-data, user-data, network-config (pure
// renderers) and the ISO 9660 image with volume id `cidata` that carries them (genisoimage, the
// tool cloud-localds uses).
//
// What the guest gets on first boot:
//  - hostname = node name; a static address on the NIC with the derived MAC (network-config v2:
//    no DHCP in the guest, the network's DHCP reservation only keeps the address reserved);
//  - the ed25519 host key pgop generated for this machine and pinned before its first boot
//    (cloud-init ssh_keys; ssh_deletekeys removes the image's shared keys first and, with keys
//    given, cloud-init generates none; its ssh module runs once per instance, so it never
//    replaces the key later). sshd offers that key only;
//  - root login with the operator's key only (pgop's SSH layer runs commands as root, as on lab
//    hosts: it installs packages, writes system files and runs services, so a narrower sudo rule
//    would still be root); the spec's sshUser with the same key, a locked password and NO sudo
//    (it used to get passwordless sudo: a second way to root that pgop never used);
//  - /etc/ssh/sshd_config.d/10-pgop.conf: public keys only (no passwords, no keyboard-interactive),
//    root by key only, the one host key (written before sshd starts; cloud-init's ssh_pwauth is
//    left unset so it never restarts sshd mid-boot);
//  - growpart + resize of / to the overlay's size;
//  - the data disk (virtio serial pgop-data) formatted and mounted: layout lvm = VG vg01 with
//    lv_01 -> /u01 (60%) and lv_02 -> /u02 (the rest), as in the seed; layout plain = one
//    filesystem (label pgopdata) on /srv/pgop-data with /u01 and /u02 bind-mounted from it.
//    The pool host has no data disk: /u01 and /u02 are plain directories there.

import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { terminal } from '../../errors.js';

const execFileP = promisify(execFile);

export interface SeedInput {
  cluster: string;
  /** node name (or the pool host's) */
  name: string;
  hostname: string;
  osFamily: 'debian' | 'rhel';
  sshUser: string;
  /** the operator's public key line (ssh-ed25519 AAAA... comment) */
  publicKey: string;
  /** the machine's own ed25519 host key, made and pinned by pgop before the first boot */
  hostKey: { privateKey: string; publicLine: string };
  mac: string;
  address: string;
  prefixLen: number;
  gateway: string;
  /** null: no data disk (the pool host) */
  dataDisk: { layout: 'lvm' | 'plain'; filesystem: 'xfs' | 'ext4' } | null;
}

export interface SeedFiles {
  'meta-data': string;
  'user-data': string;
  'network-config': string;
}

export const DATADISK_SCRIPT_PATH = '/usr/local/sbin/pgop-datadisk';

/** Runs once per instance (cloud-init runcmd) and is safe to run again: every step checks what
 *  exists first. $1 layout (lvm|plain), $2 filesystem (xfs|ext4). */
const FSTAB_APPEND = `printf '%s %s %s %s 0 %s\\n' "$1" "$2" "$3" "$4" "$5" >> /etc/fstab`;

export const DATADISK_SCRIPT = `#!/bin/sh
# Written by pgop: format and mount the data disk on /u01 and /u02 (idempotent).
set -eu
layout="$1"; fs="$2"
dev=/dev/disk/by-id/virtio-pgop-data
i=0
while [ ! -b "$dev" ] && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done
[ -b "$dev" ] || dev=/dev/vdb
[ -b "$dev" ] || { echo "pgop-datadisk: no data disk found" >&2; exit 1; }
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2"
  elif command -v dnf >/dev/null 2>&1; then dnf -y -q install "$2"
  else yum -y -q install "$2"; fi
}
settle() { command -v udevadm >/dev/null 2>&1 && udevadm settle || true; }
mkfs_() { if [ "$fs" = xfs ]; then mkfs.xfs -q -L "$2" "$1"; else mkfs.ext4 -q -L "$2" "$1"; fi; }
hasfs() { [ -n "$(blkid -o value -s TYPE "$1" 2>/dev/null || true)" ]; }
fstab() { grep -qs "^[^#]*[[:space:]]$2[[:space:]]" /etc/fstab || ${FSTAB_APPEND}; }
[ "$fs" = xfs ] && need mkfs.xfs xfsprogs
mkdir -p /u01 /u02
if [ "$layout" = lvm ]; then
  need pvcreate lvm2
  if ! vgs vg01 >/dev/null 2>&1; then pvcreate -y "$dev"; vgcreate vg01 "$dev"; fi
  lvs vg01/lv_01 >/dev/null 2>&1 || lvcreate -y -n lv_01 -l 60%VG vg01
  lvs vg01/lv_02 >/dev/null 2>&1 || lvcreate -y -n lv_02 -l 100%FREE vg01
  settle
  hasfs /dev/vg01/lv_01 || mkfs_ /dev/vg01/lv_01 u01
  hasfs /dev/vg01/lv_02 || mkfs_ /dev/vg01/lv_02 u02
  fstab /dev/vg01/lv_01 /u01 "$fs" defaults,nofail 2
  fstab /dev/vg01/lv_02 /u02 "$fs" defaults,nofail 2
else
  hasfs "$dev" || mkfs_ "$dev" pgopdata
  settle
  mkdir -p /srv/pgop-data
  fstab LABEL=pgopdata /srv/pgop-data "$fs" defaults,nofail 2
  mountpoint -q /srv/pgop-data || mount /srv/pgop-data
  mkdir -p /srv/pgop-data/u01 /srv/pgop-data/u02
  fstab /srv/pgop-data/u01 /u01 none bind,nofail 0
  fstab /srv/pgop-data/u02 /u02 none bind,nofail 0
fi
mountpoint -q /u01 || mount /u01
mountpoint -q /u02 || mount /u02
echo "pgop-datadisk: /u01 and /u02 mounted ($layout, $fs)"
`;

export const SSHD_DROPIN_PATH = '/etc/ssh/sshd_config.d/10-pgop.conf';
export const HOST_KEY_PATH = '/etc/ssh/ssh_host_ed25519_key';
export const SSHD_DROPIN = `# Written by pgop: public keys only; the host key pgop made for this machine.
HostKey ${HOST_KEY_PATH}
HostKeyAlgorithms ssh-ed25519
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
`;

const PRIVATE_KEY =
  /^-----BEGIN OPENSSH PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END OPENSSH PRIVATE KEY-----\n?$/;

export function renderMetaData(s: SeedInput): string {
  return stringify({ 'instance-id': `pgop-${s.cluster}-${s.name}`, 'local-hostname': s.hostname });
}

export function renderUserData(s: SeedInput): string {
  // cloud-init hands these to useradd and hostnamectl: names only, whatever reached here.
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(s.sshUser))
    throw terminal(
      `cannot render the cloud-init seed of ${s.cluster}/${s.name}: ` +
        `${JSON.stringify(s.sshUser)} is not a Unix user name`,
    );
  if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(s.hostname))
    throw terminal(
      `cannot render the cloud-init seed of ${s.cluster}/${s.name}: ` +
        `${JSON.stringify(s.hostname)} is not a host name`,
    );
  const key = s.publicKey.trim();
  if (!/^ssh-ed25519 [A-Za-z0-9+/=]+( \S.*)?$/.test(key))
    throw terminal(
      `cannot render the cloud-init seed of ${s.cluster}/${s.name}: ` +
        `the operator key is not an ssh-ed25519 public key`,
    );
  const hostPub = s.hostKey.publicLine.trim();
  if (!/^ssh-ed25519 [A-Za-z0-9+/=]+( \S.*)?$/.test(hostPub) || !PRIVATE_KEY.test(s.hostKey.privateKey)) {
    throw terminal(
      `cannot render the cloud-init seed of ${s.cluster}/${s.name}: ` +
        `the host key is not an OpenSSH ed25519 key pair`,
    );
  }
  const doc: Record<string, unknown> = {
    hostname: s.hostname,
    preserve_hostname: false,
    manage_etc_hosts: true,
    disable_root: false,
    ssh_authorized_keys: [key],
    // the host key pgop pinned before this boot; the image's keys are removed, none generated
    ssh_deletekeys: true,
    ssh_genkeytypes: [],
    ssh_keys: { ed25519_private: s.hostKey.privateKey, ed25519_public: hostPub },
    users: [
      {
        name: s.sshUser,
        gecos: 'pgop operator',
        shell: '/bin/bash',
        lock_passwd: true,
        ssh_authorized_keys: [key],
      },
    ],
    growpart: { mode: 'auto', devices: ['/'] },
    resize_rootfs: true,
    write_files: [
      { path: SSHD_DROPIN_PATH, permissions: '0644', owner: 'root:root', content: SSHD_DROPIN },
      ...(s.dataDisk
        ? [{ path: DATADISK_SCRIPT_PATH, permissions: '0755', owner: 'root:root', content: DATADISK_SCRIPT }]
        : []),
    ],
    runcmd: s.dataDisk
      ? [[DATADISK_SCRIPT_PATH, s.dataDisk.layout, s.dataDisk.filesystem]]
      : [['mkdir', '-p', '/u01', '/u02']],
  };
  return `#cloud-config\n${stringify(doc, { lineWidth: 0 })}`;
}

export function renderNetworkConfig(s: SeedInput): string {
  return stringify({
    version: 2,
    ethernets: {
      eth0: {
        match: { macaddress: s.mac },
        'set-name': 'eth0',
        dhcp4: false,
        addresses: [`${s.address}/${s.prefixLen}`],
        routes: [{ to: '0.0.0.0/0', via: s.gateway }],
        nameservers: { addresses: [s.gateway] },
      },
    },
  });
}

export function renderSeed(s: SeedInput): SeedFiles {
  return {
    'meta-data': renderMetaData(s),
    'user-data': renderUserData(s),
    'network-config': renderNetworkConfig(s),
  };
}

export const GENISOIMAGE = 'genisoimage';

/** The NoCloud ISO (volume id cidata, Joliet + Rock Ridge) as bytes. */
export async function buildSeedIso(files: SeedFiles): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'pgop-seed-'));
  try {
    const names = Object.keys(files) as (keyof SeedFiles)[];
    for (const n of names) await writeFile(join(dir, n), files[n], { mode: 0o600 });
    const out = join(dir, 'seed.iso');
    try {
      await execFileP(
        GENISOIMAGE,
        [
          '-quiet',
          '-output',
          out,
          '-volid',
          'cidata',
          '-joliet',
          '-rock',
          '-input-charset',
          'utf-8',
          ...names.map((n) => join(dir, n)),
        ],
        {
          timeout: 30_000,
        },
      );
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      const why =
        e.code === 'ENOENT'
          ? `${GENISOIMAGE} is not installed (Debian package genisoimage)`
          : e.stderr?.trim() || e.message;
      throw terminal(`cannot build the cloud-init seed ISO: ${why}`, err);
    }
    return await readFile(out);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
