// Which domain type a hypervisor can really run. libvirt advertises kvm whenever /dev/kvm
// exists, but a /dev/kvm can be a nested PVM device on which a stock guest never boots (see
// shared lab notes). So `domainType: auto` on a local hypervisor boots a 512-byte guest under
// `qemu -accel kvm`: real-mode BIOS code that writes a marker to the serial port. The marker
// arrives within milliseconds where KVM works; where it does not, qemu fails or nothing arrives
// before the timeout. The answer is cached per process. Remote hypervisors (qemu+ssh://host/...)
// cannot be probed from here: auto trusts their advertised kvm support (set domainType
// explicitly when that is wrong).

import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DomainType } from './xml.js';

export const ACCEL_MARKER = 'PGOP-ACCEL-OK';

/** A boot sector: mov dx,0x3f8; (mov al,c; out dx,al)*; cli; hlt; jmp $-1; 0x55AA. */
export function bootSector(marker: string = ACCEL_MARKER): Buffer {
  const code: number[] = [0xba, 0xf8, 0x03];
  for (const c of Buffer.from(`${marker}\n`, 'latin1')) code.push(0xb0, c, 0xee);
  code.push(0xfa, 0xf4, 0xeb, 0xfd);
  if (code.length > 510) throw new Error('boot sector marker too long');
  const img = Buffer.alloc(512);
  Buffer.from(code).copy(img);
  img[510] = 0x55;
  img[511] = 0xaa;
  return img;
}

const QEMU_CANDIDATES = ['/usr/bin/qemu-system-x86_64', '/usr/libexec/qemu-kvm', '/usr/bin/qemu-kvm'];

export function qemuBinary(): string | null {
  return QEMU_CANDIDATES.find((p) => existsSync(p)) ?? null;
}

export interface ProbeResult {
  ok: boolean;
  detail: string;
  ms: number;
}

/** Boot the marker guest with the given accelerator; ok when the marker reaches the serial port
 *  before timeoutMs. */
export async function probeAccel(accel: 'kvm' | 'tcg', timeoutMs = 10_000): Promise<ProbeResult> {
  const t0 = performance.now();
  const done = (ok: boolean, detail: string): ProbeResult => ({
    ok,
    detail,
    ms: Math.round(performance.now() - t0),
  });
  const qemu = qemuBinary();
  if (!qemu) return done(false, 'no qemu-system-x86_64 on this host');
  const dir = await mkdtemp(join(tmpdir(), 'pgop-accel-'));
  try {
    const img = join(dir, 'boot.img');
    await writeFile(img, bootSector());
    return await new Promise<ProbeResult>((resolve) => {
      const child = spawn(
        qemu,
        [
          '-accel',
          accel,
          '-machine',
          'pc',
          '-m',
          '16',
          '-nodefaults',
          '-display',
          'none',
          '-serial',
          'stdio',
          '-monitor',
          'none',
          '-no-reboot',
          '-drive',
          `file=${img},format=raw,if=ide,snapshot=on`,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      let err = '';
      let settled = false;
      const finish = (ok: boolean, detail: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        resolve(done(ok, detail));
      };
      const timer = setTimeout(
        () => finish(false, `no output from a ${accel} guest within ${timeoutMs} ms`),
        timeoutMs,
      );
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString('latin1');
        if (out.includes(ACCEL_MARKER)) finish(true, `${accel} guest booted`);
      });
      child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString('utf8')).slice(-500)));
      child.on('error', (e) => finish(false, e.message));
      child.on('exit', (code, sig) =>
        finish(false, `qemu exited (${sig ?? code}) before the guest spoke: ${err.trim()}`),
      );
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** /dev/kvm exists and this process may open it read-write. */
export function kvmDeviceUsable(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Advice when /dev/kvm is root-only (no udev): libvirt then re-probes qemu on every call and
 *  a define takes a minute (measured 68 s vs 0.08 s). */
export function kvmPermissionAdvice(): string | null {
  try {
    const st = statSync('/dev/kvm');
    if ((st.mode & 0o060) === 0o060) return null;
    return (
      '/dev/kvm is not group read-write (no udev?): libvirt re-probes qemu on every call; ' +
      'run `chgrp kvm /dev/kvm && chmod 0660 /dev/kvm`'
    );
  } catch {
    return null;
  }
}

let localKvm: Promise<ProbeResult> | null = null;

/** Whether KVM really runs a guest on this host (probed once per process). */
export function localKvmWorks(): Promise<ProbeResult> {
  if (!localKvm) {
    localKvm = kvmDeviceUsable()
      ? probeAccel('kvm')
      : Promise.resolve({
          ok: false,
          detail: existsSync('/dev/kvm') ? '/dev/kvm is not accessible' : 'no /dev/kvm',
          ms: 0,
        });
  }
  return localKvm;
}

/** For tests: forget the cached answer. */
export function resetAccelCache(): void {
  localKvm = null;
}

export interface UriInfo {
  scheme: string;
  /** '' for a local hypervisor */
  host: string;
  driver: string;
  /** libvirt's test driver (no real guests, disks or content) */
  test: boolean;
}

export function parseUri(uri: string): UriInfo {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?]*)/.exec(uri);
  const scheme = m?.[1] ?? '';
  const host = (m?.[2] ?? '').replace(/^[^@]*@/, '');
  const driver = scheme.split('+')[0] ?? '';
  return { scheme, host, driver, test: driver === 'test' };
}

/** Resolve spec.provider.domainType for a hypervisor URI. */
export async function resolveDomainType(
  uri: string,
  requested: 'auto' | DomainType,
  advertisesKvm: () => Promise<boolean>,
): Promise<{ type: DomainType; why: string }> {
  if (requested !== 'auto') return { type: requested, why: 'set in the spec' };
  const info = parseUri(uri);
  if (info.test) return { type: 'qemu', why: 'libvirt test driver' };
  if (info.host !== '') {
    const adv = await advertisesKvm().catch(() => false);
    return {
      type: adv ? 'kvm' : 'qemu',
      why: adv ? 'remote hypervisor advertises kvm (not probed)' : 'remote hypervisor does not advertise kvm',
    };
  }
  const probe = await localKvmWorks();
  return {
    type: probe.ok ? 'kvm' : 'qemu',
    why: probe.ok ? `kvm probe: ${probe.detail} in ${probe.ms} ms` : `kvm not usable: ${probe.detail}`,
  };
}
