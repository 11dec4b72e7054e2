// A cluster's TLS material, kept by pgop on the operator host: a private CA and one server
// certificate per node and for the pgpool host, in <provider state dir>/<cluster>/tls/ (0700,
// keys 0600; lab: /var/lib/pgop/lab/<cluster>/tls, libvirt: /var/lib/pgop/libvirt/<cluster>/tls).
// The directory goes with the cluster's other state when the cluster is deleted.
//
//   ca.crt, ca.key          the cluster CA (10 years, ECDSA P-256), renewed a year ahead
//   ca-previous.crt         the CA before the last renewal, trusted until it expires (so nodes
//                           still serving a certificate of the old CA are accepted meanwhile)
//   node-<name>.crt/.key    a node's server certificate: SANs = node name + node address
//   pool.crt/.key           pgpool's (one for every pool host): SANs = "pgpool" + spec.pgpool.address
//                           (+ the watchdog VIP) + each pool host's own address
//
// ensure() runs on every probe: a comparison in memory and a stat; it reads files
// only the first time and issues only what is missing, wrong (names, issuer, key) or due
// (certificateDays, renewed renewBeforeDays ahead). A certificate merely due is renewed in the
// background, so no probe waits on issuance. What changed then reaches the nodes as config drift
// (the material is part of the configuration hash): no SSH while nothing changed.

import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { poolHosts, repoHostAddress, type ClusterSpec } from '../spec/types.js';
import { TLS_DEFAULTS, tlsOf } from './settings.js';
import { terminal } from '../errors.js';
import { certFacts, judgeCa, judgeServerCert, type WantedNames } from './check.js';

const CA_DAYS = 3650;
const CA_RENEW_DAYS = 365;
/** how often ensure() judges the certificates again (in memory) */
const RECHECK_MS = 10_000;

export { TLS_DEFAULTS, tlsOf };

export const POOL_HOST = 'pool';
/** The backup repository's server on the operator's host (src/drivers/backup/). */
export const REPO_HOST = 'repo';
export const REPO_HOST_NAME = 'pgbackrest-repo';

/** The hosts that get a certificate, with the names it must carry. */
export function wantedHosts(cluster: ClusterSpec): Map<string, WantedNames> {
  const out = new Map<string, WantedNames>();
  // With backups, a node's certificate is also its client certificate at the repository's
  // server, and its pgbackrest server's certificate: pgBackRest 2.45 matches the address it
  // dials against the CN and DNS names only, so the address goes in as a DNS name as well.
  const backup = !!cluster.backup;
  for (const n of cluster.nodes)
    out.set(nodeHostId(n.name), {
      dns: backup ? [n.name, n.address] : [n.name],
      ips: [n.address],
      ...(backup ? { clientAuth: true as const } : {}),
    });
  if (backup)
    out.set(REPO_HOST, {
      dns: [REPO_HOST_NAME, repoHostAddress(cluster)],
      ips: [repoHostAddress(cluster)],
      clientAuth: true,
    });
  const pp = cluster.pgpool;
  if (pp.enabled && pp.address) {
    const ips = [
      pp.address,
      ...(pp.watchdog.enabled && pp.watchdog.vip ? [pp.watchdog.vip] : []),
      ...poolHosts(cluster).map((h) => h.address),
    ];
    out.set(POOL_HOST, { dns: ['pgpool'], ips: [...new Set(ips)] });
  }
  return out;
}

export function nodeHostId(node: string): string {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(node))
    throw terminal(`cannot issue a certificate for node ${JSON.stringify(node)}: unsafe name`);
  return `node-${node}`;
}

export interface HostCert {
  cert: string;
  key: string;
}

export interface TlsMaterial {
  dir: string;
  ca: HostCert;
  /** every CA certificate peers must trust now (current first, then the previous one) */
  caBundle: string;
  hosts: Map<string, HostCert>;
}

export interface TlsLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

interface DirState {
  material: TlsMaterial | null;
  checkedAt: number;
  /** what the spec asked for at that check (names, addresses, lifetimes) */
  wantKey: string;
  /** an issuance under way (one at a time per directory) */
  issuing: Promise<TlsMaterial> | null;
}

/** Shared by every ClusterTls of the process: the postgres and pgpool drivers of a world must
 *  see one CA, never issue two. */
const dirs = new Map<string, DirState>();

export interface ClusterTlsOptions {
  /** the cluster's TLS directory (default: defaultTlsDir) */
  dirOf?: (cluster: ClusterSpec) => string;
  now?: () => number;
  log?: TlsLog;
}

/** <provider state dir>/<cluster>/tls, the way the lab and libvirt providers place a cluster's
 *  state (their defaults and environment overrides). */
export function defaultTlsDir(cluster: ClusterSpec): string {
  const p = cluster.provider;
  const base =
    p.type === 'lab'
      ? (p.stateDir ?? process.env.PGOP_LAB_STATE ?? '/var/lib/pgop/lab')
      : p.type === 'libvirt'
        ? (process.env.PGOP_LIBVIRT_STATE ?? '/var/lib/pgop/libvirt')
        : (process.env.PGOP_SIM_STATE ?? '/var/lib/pgop/sim');
  return join(base, cluster.name, 'tls');
}

export class ClusterTls {
  private readonly dirOf: (cluster: ClusterSpec) => string;
  private readonly now: () => number;
  private readonly log: TlsLog | undefined;

  constructor(opts: ClusterTlsOptions = {}) {
    this.dirOf = opts.dirOf ?? defaultTlsDir;
    this.now = opts.now ?? Date.now;
    this.log = opts.log;
  }

  enabled(cluster: ClusterSpec): boolean {
    return tlsOf(cluster).enabled;
  }

  dir(cluster: ClusterSpec): string {
    return this.dirOf(cluster);
  }

  /** The material as it is now, without issuing anything: what the last ensure() left, else
   *  what the directory holds; null when there is no CA yet. */
  peek(cluster: ClusterSpec): TlsMaterial | null {
    const dir = this.dirOf(cluster);
    const st = state(dir);
    st.material ??= loadSync(dir, wantedHosts(cluster));
    return st.material;
  }

  /** The material, every certificate usable for the spec as it is now. Cheap when nothing
   *  changed: no I/O but a stat (the certificates are judged again every 10 s, in memory). */
  async ensure(cluster: ClusterSpec): Promise<TlsMaterial> {
    const dir = this.dirOf(cluster);
    const st = state(dir);
    const now = this.now();
    // a changed spec (a node added or moved, other lifetimes) is looked at at once
    const wantKey = JSON.stringify([[...wantedHosts(cluster)], tlsOf(cluster)]);
    // (a stat, ~2 us: a cluster deleted and made again under the same name lost its directory)
    const present = existsSync(join(dir, 'ca.crt'));
    if (st.material && present && now - st.checkedAt < RECHECK_MS && st.wantKey === wantKey)
      return st.material;
    if (st.issuing) return st.issuing;
    if (st.material && !present) st.material = null;
    st.material ??= loadSync(dir, wantedHosts(cluster));
    const problems = this.judge(cluster, st.material, now);
    if (problems.length === 0) {
      st.checkedAt = now;
      st.wantKey = wantKey;
      return st.material!;
    }
    const run = this.issue(cluster, dir, problems).finally(() => {
      st.issuing = null;
    });
    st.issuing = run;
    // merely due: serve what we have, renew in the background
    if (st.material && problems.every((p) => p.usable)) {
      run.catch((err) =>
        this.log?.warn(
          { cluster: cluster.name, error: (err as Error).message },
          'tls: cannot renew certificates (will retry)',
        ),
      );
      st.checkedAt = now;
      st.wantKey = wantKey;
      return st.material;
    }
    return run;
  }

  private judge(
    cluster: ClusterSpec,
    m: TlsMaterial | null,
    now: number,
  ): { host: string; usable: boolean; reason: string }[] {
    const t = tlsOf(cluster);
    const out: { host: string; usable: boolean; reason: string }[] = [];
    const caV = judgeCa(m?.ca.cert ?? null, m?.ca.key ?? null, now, CA_RENEW_DAYS);
    if (caV) out.push({ host: 'ca', ...caV });
    for (const [host, want] of wantedHosts(cluster)) {
      const h = m?.hosts.get(host);
      const v = m
        ? judgeServerCert(h?.cert ?? null, h?.key ?? null, m.ca.cert, want, now, t.renewBeforeDays)
        : { usable: false, reason: 'no CA yet' };
      if (v) out.push({ host, ...v });
    }
    return out;
  }

  private async issue(
    cluster: ClusterSpec,
    dir: string,
    problems: { host: string; reason: string }[],
  ): Promise<TlsMaterial> {
    const { createCa, issueServer } = await import('./ca.js');
    const t = tlsOf(cluster);
    const now = this.now();
    ensureDir(dir);
    const st = state(dir);
    let m = loadSync(dir, wantedHosts(cluster));
    const renewCa = problems.some((p) => p.host === 'ca');
    let previous = readOr(join(dir, 'ca-previous.crt'));
    if (previous && (certFacts(previous)?.notAfter ?? 0) <= now) previous = null;
    let ca = m?.ca ?? null;
    if (!ca || renewCa) {
      const old = ca;
      ca = await createCa(cluster.name, new Date(now), CA_DAYS);
      // the old CA stays trusted while it is valid: nodes serve its certificates until rewritten
      previous = old && judgeCa(old.cert, old.key, now, 0) === null ? old.cert : null;
      if (previous) writeAtomic(join(dir, 'ca-previous.crt'), previous, 0o600);
      else rmSync(join(dir, 'ca-previous.crt'), { force: true });
      writeAtomic(join(dir, 'ca.key'), ca.key, 0o600);
      writeAtomic(join(dir, 'ca.crt'), ca.cert, 0o600);
      this.log?.info(
        { cluster: cluster.name, dir, reason: problems.find((p) => p.host === 'ca')?.reason },
        'tls: cluster CA issued',
      );
      m = null;
    }
    const hosts = new Map(m?.hosts ?? []);
    for (const [host, want] of wantedHosts(cluster)) {
      const h = hosts.get(host);
      const v = judgeServerCert(h?.cert ?? null, h?.key ?? null, ca.cert, want, now, t.renewBeforeDays);
      if (!v) continue;
      const issued = await issueServer(
        ca,
        { name: want.dns[0]!, dns: want.dns.slice(1), ips: want.ips, clientAuth: want.clientAuth === true },
        new Date(now),
        t.certificateDays,
      );
      writeAtomic(join(dir, `${host}.key`), issued.key, 0o600);
      writeAtomic(join(dir, `${host}.crt`), issued.cert, 0o600);
      hosts.set(host, issued);
      this.log?.info(
        { cluster: cluster.name, host, reason: v.reason, days: t.certificateDays },
        'tls: server certificate issued',
      );
    }
    const material: TlsMaterial = { dir, ca, caBundle: bundle(ca.cert, previous), hosts };
    st.material = material;
    st.checkedAt = now;
    return material;
  }
}

function state(dir: string): DirState {
  let st = dirs.get(dir);
  if (!st) {
    st = { material: null, checkedAt: 0, wantKey: '', issuing: null };
    dirs.set(dir, st);
  }
  return st;
}

function bundle(current: string, previous: string | null): string {
  return previous ? `${current.trimEnd()}\n${previous.trimEnd()}\n` : current;
}

function readOr(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function loadSync(dir: string, hosts: Map<string, WantedNames>): TlsMaterial | null {
  const caCert = readOr(join(dir, 'ca.crt'));
  const caKey = readOr(join(dir, 'ca.key'));
  if (!caCert || !caKey) return null;
  const out = new Map<string, HostCert>();
  for (const host of hosts.keys()) {
    const cert = readOr(join(dir, `${host}.crt`));
    const key = readOr(join(dir, `${host}.key`));
    if (cert && key) out.set(host, { cert, key });
  }
  return {
    dir,
    ca: { cert: caCert, key: caKey },
    caBundle: bundle(caCert, readOr(join(dir, 'ca-previous.crt'))),
    hosts: out,
  };
}

/** The TLS directory: created 0700 (and made 0700 again if it was not), owned by whoever runs
 *  pgop (root). */
function ensureDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = statSync(dir);
  if (!st.isDirectory()) throw terminal(`cannot keep TLS material in ${dir}: not a directory`);
  if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
}

/** Write through a fresh private temp file (O_EXCL, 0600) and rename it into place. */
function writeAtomic(path: string, content: string, mode: number): void {
  const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  try {
    writeFileSync(tmp, content, { mode, flag: 'wx' });
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw terminal(`cannot write ${path}: ${(err as Error).message}`);
  }
}

/** For tests: forget what this process cached (the files stay). */
export function forgetTlsCache(): void {
  dirs.clear();
}
