// `pgop apply | diff | delete | switchover`: the commands that change what the store wants.

import { hostname } from 'node:os';
import { Store, processIsAlive } from '../../store/store.js';
import { readFileSync } from 'node:fs';
import { EXIT } from '../../errors.js';
import { parseSpecFile, parseSpecText, type ParseOptions, type ParsedSpec } from '../../spec/parse.js';
import { NotFoundError, UsageError } from '../errors.js';
import type { BackupType, ClusterSpec } from '../../spec/types.js';
import type { JobRecord } from '../../store/jobs.js';
import { enterLabHubIfNeeded } from '../lab-ns.js';
import { jobItem, jobProgress } from '../output.js';
import { labelOfBackupJob } from '../../plan/backup-schedule.js';

/** `-f FILE`, or `-f -` for standard input (its errors then name `<stdin>`). */
export function readSpec(file: string, opts: ParseOptions = {}): ParsedSpec {
  return file === '-' ? parseSpecText(readFileSync(0, 'utf8'), '<stdin>', opts) : parseSpecFile(file, opts);
}

/** What `apply` would do with this spec: nothing stored yet, the same spec, or a change. */
export function dryRunResult(store: Store, parsed: ParsedSpec): 'created' | 'unchanged' | 'configured' {
  const existing = store.getCluster(parsed.spec.name);
  return !existing ? 'created' : existing.specHash === parsed.hash ? 'unchanged' : 'configured';
}

export async function applyCommand(db: string, file: string, dryRun: boolean): Promise<number> {
  const parsed = readSpec(file, { checkHost: true }); // throws SpecError -> exit 2, nothing written
  const kind = `cluster/${parsed.spec.name}`;
  if (dryRun) {
    const store = Store.open(db, { readonly: true });
    try {
      const result = dryRunResult(store, parsed);
      process.stdout.write(`${kind} ${result} (dry run)\n`);
    } finally {
      store.close();
    }
    return EXIT.ok;
  }
  const store = Store.open(db);
  try {
    const { result, generation } = store.applySpec(parsed.spec, parsed.hash, parsed.source, Date.now());
    process.stdout.write(`${kind} ${result}${result === 'unchanged' ? '' : ` (generation ${generation})`}\n`);
  } finally {
    store.close();
  }
  return EXIT.ok;
}

export interface SpecChange {
  op: '+' | '-' | '~';
  path: string;
  from?: unknown;
  to?: unknown;
}

/** Structural difference between two specs, as field paths a person can read. */
export function diffSpecs(a: unknown, b: unknown, path = 'spec'): SpecChange[] {
  if (JSON.stringify(a) === JSON.stringify(b)) return [];
  const isObj = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  if (Array.isArray(a) && Array.isArray(b)) {
    // Arrays of named things (nodes, roles...) diff by name, others by index.
    const named = (v: unknown[]) => v.every((x) => isObj(x) && typeof x.name === 'string');
    if (named(a) && named(b)) {
      const byName = (v: unknown[]) => new Map(v.map((x) => [(x as { name: string }).name, x]));
      const ma = byName(a),
        mb = byName(b);
      const out: SpecChange[] = [];
      for (const [k, v] of ma)
        out.push(
          ...(mb.has(k)
            ? diffSpecs(v, mb.get(k), `${path}[${k}]`)
            : [{ op: '-' as const, path: `${path}[${k}]`, from: v }]),
        );
      for (const [k, v] of mb) if (!ma.has(k)) out.push({ op: '+', path: `${path}[${k}]`, to: v });
      return out;
    }
    return [{ op: '~', path, from: a, to: b }];
  }
  if (isObj(a) && isObj(b)) {
    const out: SpecChange[] = [];
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      if (!(k in b)) out.push({ op: '-', path: `${path}.${k}`, from: a[k] });
      else if (!(k in a)) out.push({ op: '+', path: `${path}.${k}`, to: b[k] });
      else out.push(...diffSpecs(a[k], b[k], `${path}.${k}`));
    }
    return out;
  }
  return [{ op: '~', path, from: a, to: b }];
}

export async function diffCommand(db: string, file: string): Promise<number> {
  const parsed = readSpec(file);
  const store = Store.open(db, { readonly: true });
  try {
    const existing = store.getCluster(parsed.spec.name);
    if (!existing) {
      process.stdout.write(
        `+ cluster/${parsed.spec.name} (new: ${parsed.spec.nodes.length} nodes, ` +
          `provider ${parsed.spec.provider.type})\n`,
      );
      return EXIT.changes;
    }
    if (existing.specHash === parsed.hash) {
      process.stdout.write(`cluster/${parsed.spec.name} unchanged (generation ${existing.generation})\n`);
      return EXIT.ok;
    }
    const show = (v: unknown) => JSON.stringify(v);
    process.stdout.write(
      `cluster/${parsed.spec.name}: generation ${existing.generation} -> ${existing.generation + 1}\n`,
    );
    for (const c of diffSpecs(stripName(existing.spec), stripName(parsed.spec))) {
      process.stdout.write(
        c.op === '~'
          ? `~ ${c.path}: ${show(c.from)} -> ${show(c.to)}\n`
          : c.op === '+'
            ? `+ ${c.path}: ${show(c.to)}\n`
            : `- ${c.path}: ${show(c.from)}\n`,
      );
    }
    return EXIT.changes;
  } finally {
    store.close();
  }
}

const stripName = (s: ClusterSpec) => {
  const { name: _n, apiVersion: _a, kind: _k, ...rest } = s;
  return rest;
};

/** Wait for `done()` while a running `pgop serve` does the work; when none runs, do it here. */
export async function driveUntil(
  db: string,
  store: Store,
  done: () => boolean,
  what: string,
  timeoutMs: number,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  const lock = store.acquireServeLock(process.pid, hostname(), Date.now(), processIsAlive);
  if (lock.ok) {
    store.releaseServeLock(process.pid);
    process.stderr.write(`no pgop serve is running; ${what} in this process\n`);
    const { runServe } = await import('./serve.js');
    return runServe(db, { until: done, timeoutMs, quiet: true });
  }
  process.stderr.write(`pgop serve (pid ${lock.pid}) is ${what}; waiting\n`);
  while (Date.now() < deadline) {
    if (done()) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return done();
}

export async function deleteCommand(
  db: string,
  kind: string,
  name: string,
  wait: boolean,
  timeoutMs = 10 * 60_000,
): Promise<number> {
  if (kind !== 'cluster')
    throw new UsageError(
      `cannot delete ${kind}: only clusters can be deleted ` +
        `(remove a node from the spec and apply it to delete a node)`,
    );
  if (wait) await enterLabHubIfNeeded(db);
  const store = Store.open(db);
  try {
    if (!store.getCluster(name)) throw new NotFoundError(`cannot delete cluster ${name}: no such cluster`);
    store.requestDeletion(name, Date.now());
    process.stdout.write(`cluster/${name} deletion requested\n`);
    if (!wait) return EXIT.ok;
    const ok = await driveUntil(db, store, () => !store.getCluster(name), 'tearing it down', timeoutMs);
    process.stdout.write(
      ok
        ? `cluster/${name} deleted\n`
        : `cluster/${name} not yet deleted (see pgop get events --cluster ${name})\n`,
    );
    return ok ? EXIT.ok : EXIT.transient;
  } finally {
    store.close();
  }
}

export async function switchoverCommand(
  db: string,
  cluster: string,
  to: string | undefined,
  timeoutMs = 5 * 60_000,
): Promise<number> {
  await enterLabHubIfNeeded(db);
  const store = Store.open(db);
  try {
    const c = store.getCluster(cluster);
    if (!c) throw new NotFoundError(`cannot switch over cluster ${cluster}: no such cluster`);
    if (to && !c.spec.nodes.some((n) => n.name === to))
      throw new NotFoundError(`cannot switch over cluster ${cluster} to ${to}: no such node in its spec`);
    if (to && c.primary === to) {
      process.stdout.write(`cluster/${cluster}: ${to} is already the primary\n`);
      return EXIT.ok;
    }
    const from = c.primary;
    const id = store.enqueueRequest(
      cluster,
      'switchover',
      { ...(from ? { from } : {}), ...(to ? { to } : {}) },
      Date.now(),
    );
    const started = Date.now();
    const ok = await driveUntil(
      db,
      store,
      () => !store.pendingRequests(cluster).some((r) => r.id === id),
      'switching over',
      timeoutMs,
    );
    const now = store.getCluster(cluster);
    process.stdout.write(
      ok
        ? `cluster/${cluster} switched over: ${from ?? '-'} -> ${now?.primary ?? '-'} ` +
            `in ${((Date.now() - started) / 1000).toFixed(2)} s\n`
        : `cluster/${cluster}: switchover still in progress\n`,
    );
    return ok ? EXIT.ok : EXIT.transient;
  } finally {
    store.close();
  }
}

/** How long `pgop backup` waits, after its job succeeded, for `get backups` to list the backup. */
const LISTING_WAIT_MS = 60_000;

/** `pgop backup`: asks the loop for a backup and follows its job (progress on stderr) until the
 *  backup is listed. */
export async function backupCommand(
  db: string,
  cluster: string,
  type: BackupType,
  wait: boolean,
  timeoutMs: number,
): Promise<number> {
  if (wait) await enterLabHubIfNeeded(db);
  const store = Store.open(db);
  try {
    const c = store.getCluster(cluster);
    if (!c) throw new NotFoundError(`cannot back up cluster ${cluster}: no such cluster`);
    if (!c.spec.backup)
      throw new UsageError(`cannot back up cluster ${cluster}: its spec has no backup section (spec.backup)`);
    const id = store.enqueueRequest(cluster, 'backup', { type }, Date.now());
    process.stdout.write(`cluster/${cluster}: ${type} backup requested (request #${id})\n`);
    if (!wait) return EXIT.ok;
    const shown = { at: 0, text: '' };
    // done once `get backups` lists it too: the loop stores the repository's listing a pass later
    const listed = (job: JobRecord) => {
      const label = labelOfBackupJob(job.message);
      const backups = store.getObservation(cluster)?.backup?.backups ?? [];
      const late = Date.now() - (job.finishedAt ?? 0) > LISTING_WAIT_MS;
      return !label || late || backups.some((b) => b.label === label);
    };
    const settled = () => {
      const job = store.jobs.forRequest(id);
      if (job) showProgress(job, shown);
      return job !== undefined && job.state !== 'running' && (job.state !== 'succeeded' || listed(job));
    };
    await driveUntil(db, store, settled, 'backing up', timeoutMs);
    const job = store.jobs.forRequest(id);
    if (!job || job.state === 'running') {
      const what = job ? `job #${job.id} still running` : 'not started yet (is the primary healthy?)';
      process.stdout.write(`cluster/${cluster}: backup ${what}; see pgop get backups\n`);
      return EXIT.transient;
    }
    const took = `${(((job.finishedAt ?? Date.now()) - job.startedAt) / 1000).toFixed(1)} s`;
    if (job.state === 'succeeded') {
      process.stdout.write(`cluster/${cluster}: ${job.message} (job #${job.id}, ${took})\n`);
      return EXIT.ok;
    }
    process.stdout.write(`cluster/${cluster}: backup job #${job.id} ${job.state}: ${job.message}\n`);
    return job.message.startsWith('terminal') ? EXIT.terminal : EXIT.transient;
  } finally {
    store.close();
  }
}

/** One line on stderr per second at most while the job copies. */
function showProgress(job: JobRecord, shown: { at: number; text: string }): void {
  if (job.state !== 'running' || Date.now() - shown.at < 1_000) return;
  const text =
    job.doneBytes === null
      ? `job #${job.id}: starting (checkpoint, then copy)`
      : `job #${job.id}: ${jobProgress(jobItem(job))}`;
  if (text === shown.text) return;
  process.stderr.write(`${text}\n`);
  shown.at = Date.now();
  shown.text = text;
}
