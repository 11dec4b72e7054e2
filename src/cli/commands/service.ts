// `pgop service install|show`: `pgop serve` as a systemd service.

import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXIT } from '../../errors.js';

export const UNIT_NAME = 'pgop.service';
const BIN = fileURLToPath(new URL('../../../../bin/pgop', import.meta.url));

export interface UnitOptions {
  /** the store; absolute */
  db: string;
  /** node and bin/pgop as absolute paths: systemd's PATH may not hold the node pgop runs on */
  node?: string;
  bin?: string;
}

// Hardening: serve runs as root and must change the host itself. The lab provider creates
// network namespaces (bind mounts under /run/netns that the CLI must see), writes cgroups and
// starts sshd/postgres in mount namespaces of their own; the libvirt provider writes disks and
// seeds wherever a spec's paths point. So every option that gives the service its own mount
// namespace (ProtectSystem, ProtectHome, PrivateTmp, PrivateDevices, ProtectKernel*,
// ProtectControlGroups, ReadWritePaths) and RestrictNamespaces would break it, and
// MemoryDenyWriteExecute breaks Node's JIT. What it takes: seccomp and no-privilege-gain
// options (children drop privileges with runuser, none gains any).
// KillMode=mixed: SIGTERM reaches serve alone, which finishes its current step; its helpers
// (virsh event) are killed after it. Lab machines live in cgroups of their own and survive.
export function renderUnit(o: UnitOptions): string {
  const exec = [o.node ?? process.execPath, o.bin ?? BIN, 'serve', '--db', o.db].map(unitWord).join(' ');
  return `[Unit]
Description=pgop operator: keeps HA PostgreSQL clusters matching their specs
Wants=network-online.target
After=network-online.target libvirtd.service

[Service]
Type=exec
ExecStart=${exec}
Environment=PGOP_LOG_LEVEL=info
Restart=always
RestartSec=2s
KillMode=mixed
TimeoutStopSec=90s
NoNewPrivileges=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native
UMask=0077

[Install]
WantedBy=multi-user.target
`;
}

/** One word of an Exec line: systemd splits on whitespace and expands $ and %. */
function unitWord(w: string): string {
  if (/^[A-Za-z0-9_./:@+-]+$/.test(w)) return w;
  return `"${w.replace(/[\\"]/g, '\\$&').replace(/\$/g, '$$$$').replace(/%/g, '%%')}"`;
}

export async function serviceShowCommand(o: { db?: string }): Promise<number> {
  process.stdout.write(renderUnit({ db: resolve(o.db ?? '/var/lib/pgop/pgop.db') }));
  return EXIT.ok;
}

export async function serviceInstallCommand(o: {
  db?: string;
  unitDir: string;
  reload: boolean;
}): Promise<number> {
  const path = join(o.unitDir, UNIT_NAME);
  mkdirSync(o.unitDir, { recursive: true });
  writeFileSync(path, renderUnit({ db: resolve(o.db ?? '/var/lib/pgop/pgop.db') }), { mode: 0o644 });
  process.stdout.write(`wrote ${path}\n`);
  if (o.reload) {
    const r = spawnSync('systemctl', ['daemon-reload'], { encoding: 'utf8' });
    if (r.status !== 0) {
      process.stderr.write(`error: cannot reload systemd: ${(r.stderr || r.error?.message || '').trim()}\n`);
      return EXIT.terminal;
    }
  }
  process.stdout.write(`enable and start it with: systemctl enable --now ${UNIT_NAME}\n`);
  process.stdout.write(`its log: journalctl -u ${UNIT_NAME} -f\n`);
  return EXIT.ok;
}
