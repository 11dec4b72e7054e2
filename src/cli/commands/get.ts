// `pgop get` and `pgop describe`: read-only views of the store.

import { Store } from '../../store/store.js';
import { EXIT } from '../../errors.js';
import { CLI_EXIT, NotFoundError, UsageError } from '../errors.js';
import {
  age,
  clusterItem,
  eventItem,
  humanBytes,
  jobItem,
  jobProgress,
  nodeItems,
  operatorItem,
  operatorText,
  until,
  type ClusterItem,
  type NodeItem,
} from '../output.js';
import { renderTable } from '../table.js';
import { backupItems, renderBackups, type BackupItem } from '../backups.js';
import type { StoredCluster } from '../../store/types.js';
import type { ClusterObservation } from '../../observe/types.js';
import { BACKUP_TYPES } from '../../spec/types.js';
import { backupJobKind, lastBackupStarts, type LastBackupStarts } from '../../plan/backup-schedule.js';

type Format = 'table' | 'wide' | 'json' | 'yaml';

/** The cluster's observation and when each backup type was last started (for the next one). */
function observedBackups(store: Store, cluster: string): [ClusterObservation | undefined, LastBackupStarts] {
  const obs = store.getObservation(cluster);
  const jobStarts = store.jobs.lastStarts(cluster, BACKUP_TYPES.map(backupJobKind));
  return [obs, lastBackupStarts(jobStarts, obs?.backup?.backups ?? [])];
}

export function collect(store: Store, kind: string, cluster: string | undefined, allIncarnations = false) {
  const clusters = new Map<string, StoredCluster>(store.listClusters().map((c) => [c.name, c]));
  const history = ['events', 'jobs', 'job'];
  if (cluster && !clusters.has(cluster) && !history.includes(kind))
    throw new NotFoundError(`cannot get ${kind}: no cluster named ${cluster}`);
  switch (kind) {
    case 'clusters':
    case 'cluster': {
      const nodes = store.listNodes();
      const operator = operatorItem(store.serveLockHolder(), Date.now());
      const items = [...clusters.values()]
        .filter((c) => !cluster || c.name === cluster)
        .map((c) => {
          const count = nodes.filter((n) => n.cluster === c.name).length;
          return clusterItem(c, count, operator, ...observedBackups(store, c.name));
        });
      return { kind: 'clusters' as const, items };
    }
    case 'nodes':
    case 'node': {
      const records = store.listNodes(cluster);
      const observations = new Map<string, ClusterObservation | undefined>();
      for (const name of new Set(records.map((r) => r.cluster)))
        observations.set(name, store.getObservation(name));
      return { kind: 'nodes' as const, items: nodeItems(records, clusters, observations) };
    }
    case 'events':
    case 'event':
      return {
        kind: 'events' as const,
        items: store
          .listEvents({
            ...(cluster ? { cluster } : {}),
            ...(allIncarnations ? { allIncarnations } : {}),
            limit: 500,
          })
          .map(eventItem),
      };
    case 'jobs':
    case 'job':
      return {
        kind: 'jobs' as const,
        items: store.jobs.list({ ...(cluster ? { cluster } : {}), limit: 200 }).map(jobItem),
      };
    case 'backups':
    case 'backup': {
      const items = [...clusters.values()]
        .filter((c) => (!cluster || c.name === cluster) && c.spec.backup)
        .flatMap((c) =>
          backupItems(c, store.getObservation(c.name), store.jobs.list({ cluster: c.name, limit: 200 })),
        );
      return { kind: 'backups' as const, items };
    }
    default:
      throw new UsageError(`cannot get ${kind}: unknown kind (clusters, nodes, events, jobs, backups)`);
  }
}

async function render(data: ReturnType<typeof collect>, format: Format): Promise<string> {
  if (format === 'json') return JSON.stringify({ kind: data.kind, items: data.items }, null, 2);
  if (format === 'yaml') {
    const { stringify } = await import('yaml');
    return stringify({ kind: data.kind, items: data.items }).trimEnd();
  }
  const wide = format === 'wide';
  const now = Date.now();
  if (data.kind === 'clusters') {
    const head = [
      'NAME',
      'GEN',
      'PHASE',
      'PRIMARY',
      'ENDPOINT',
      'NODES',
      'REPLICATION',
      'ARCHIVE',
      'BACKUP',
      'OPERATOR',
      ...(wide ? ['NEXT BACKUP', 'PROVIDER', 'MESSAGE'] : []),
    ];
    const next = (n: NonNullable<ClusterItem['archive']>['next_backup'] | undefined) =>
      n ? `${n.type} in ${until(n.at, now)}` : '-';
    return renderTable(
      head,
      data.items.map((c) => [
        c.name,
        c.observed_generation === c.generation ? c.generation : `${c.observed_generation}/${c.generation}`,
        c.phase,
        c.primary ?? '-',
        endpointText(c),
        c.nodes,
        c.replication,
        archiveText(c.archive, now),
        c.archive?.last_backup
          ? `${c.archive.last_backup.type} ${age(c.archive.last_backup.stopped, now)}`
          : c.archive
            ? 'none'
            : '-',
        operatorText(c.operator),
        ...(wide ? [next(c.archive?.next_backup), c.provider, c.message] : []),
      ]),
    );
  }
  if (data.kind === 'nodes') {
    const row = (n: NodeItem) => [
      n.cluster,
      n.name,
      n.state,
      n.role,
      n.goal ?? '-',
      n.address,
      n.timeline ?? '-',
      n.lsn ?? '-',
      humanBytes(n.lag_bytes),
      age(n.last_transition, now),
    ];
    const head = ['CLUSTER', 'NAME', 'STATE', 'ROLE', 'GOAL', 'ADDRESS', 'TL', 'LSN', 'LAG', 'AGE'];
    if (!wide) return renderTable(head, data.items.map(row), [12, 12]);
    return renderTable(
      [...head, 'MACHINE', 'UPSTREAM', 'MESSAGE'],
      data.items.map((n) => [...row(n), n.machine, n.upstream ?? '-', n.message]),
    );
  }
  if (data.kind === 'jobs') return renderJobs(data.items, wide, now);
  if (data.kind === 'backups') return renderBackups(data.items, wide, now);
  const head = ['TIME', 'CLUSTER', 'NODE', 'TRANSITION', 'RULE', 'REASON'];
  return renderTable(
    head,
    data.items.map((e) => [
      e.time.replace('T', ' ').replace('Z', ''),
      e.cluster,
      e.node ?? '-',
      e.from || e.to ? `${e.from ?? '-'} -> ${e.to ?? '-'}` : '-',
      e.rule,
      e.reason,
    ]),
    [undefined, undefined, undefined, undefined, undefined, wide ? undefined : 80],
  );
}

function renderJobs(items: ReturnType<typeof jobItem>[], wide: boolean, now: number): string {
  const head = ['ID', 'CLUSTER', 'NODE', 'KIND', 'STATE', 'AGE', 'PROGRESS', 'DEADLINE'];
  const untilDeadline = (iso: string) => {
    const left = Date.parse(iso) - now;
    return left > 0 ? `in ${age(new Date(now - left).toISOString(), now)}` : 'passed';
  };
  return renderTable(
    [...head, ...(wide ? ['SOURCE', 'RULE', 'MESSAGE'] : [])],
    items.map((j) => [
      j.id,
      j.cluster,
      j.node,
      j.kind,
      j.state,
      age(j.started, now),
      jobProgress(j),
      j.state === 'running' ? untilDeadline(j.deadline) : '-',
      ...(wide ? [j.source ?? '-', j.rule, j.message] : []),
    ]),
  );
}

type Collected = ReturnType<typeof collect>;

/** Only the named items (clusters or nodes by name); a name matching nothing is NotFound. */
function onlyNamed(data: Collected, names: string[]): { data: Collected; missing: string[] } {
  if (names.length === 0) return { data, missing: [] };
  if (data.kind === 'events' || data.kind === 'jobs' || data.kind === 'backups')
    throw new UsageError(`cannot get ${data.kind} by name: filter them with --cluster`);
  const wanted = new Set(names);
  const items = (data.items as { name: string }[]).filter((i) => wanted.has(i.name));
  const missing = names.filter((n) => !items.some((i) => i.name === n));
  return { data: { ...data, items } as Collected, missing };
}

/** An item's identity across polls, for `-w -o json` (one line per item that changed). */
const itemKey = (data: Collected, item: Collected['items'][number]) =>
  data.kind === 'events' || data.kind === 'jobs'
    ? `${data.kind}/${(item as { id: number }).id}`
    : data.kind === 'backups'
      ? backupKey(item as BackupItem)
      : `${(item as { cluster?: string }).cluster ?? ''}/${(item as { name: string }).name}`;

const backupKey = (b: BackupItem) => `backups/${b.cluster}/${b.label ?? `job ${b.job}`}`;

interface GetFlags {
  cluster?: string;
  output: Format;
  watch?: boolean;
  allIncarnations?: boolean;
}

export async function getCommand(db: string, kind: string, names: string[], o: GetFlags): Promise<number> {
  const store = Store.open(db, { readonly: true });
  try {
    const read = () => onlyNamed(collect(store, kind, o.cluster, !!o.allIncarnations), names);
    if (!o.watch) {
      const { data, missing } = read();
      await print(data, o.output);
      return reportMissing(data.kind, missing);
    }
    await watch(read, o.output);
    return EXIT.ok;
  } finally {
    store.close();
  }
}

async function print(data: Collected, format: Format): Promise<void> {
  // As kubectl: an empty table is a sentence on stderr; json/yaml still print the empty list.
  if (data.items.length === 0 && (format === 'table' || format === 'wide'))
    process.stderr.write('No resources found\n');
  else process.stdout.write(`${await render(data, format)}\n`);
}

function reportMissing(kind: string, missing: string[]): number {
  for (const name of missing)
    process.stderr.write(`error: ${kind.replace(/s$/, '')} ${JSON.stringify(name)} not found\n`);
  return missing.length > 0 ? CLI_EXIT.notFound : EXIT.ok;
}

/** Print again only when something changed: the table whole, JSON one changed item a line. */
async function watch(read: () => { data: Collected }, format: Format): Promise<never> {
  let lastState: string | undefined;
  const printed = new Map<string, string>();
  for (;;) {
    const { data } = read();
    const state = JSON.stringify(data.items);
    if (state !== lastState) {
      if (format === 'json') {
        for (const item of data.items) {
          const line = JSON.stringify(item);
          const key = itemKey(data, item);
          if (printed.get(key) !== line) process.stdout.write(`${line}\n`);
          printed.set(key, line);
        }
      } else {
        if (lastState !== undefined) process.stdout.write(format === 'yaml' ? '---\n' : '\n');
        await print(data, format);
      }
      lastState = state;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

export async function describeCommand(
  db: string,
  kind: string,
  name: string,
  cluster?: string,
): Promise<number> {
  const store = Store.open(db, { readonly: true });
  try {
    const { stringify } = await import('yaml');
    if (kind === 'cluster') {
      const c = store.getCluster(name);
      if (!c) throw new NotFoundError(`cannot describe cluster ${name}: no such cluster`);
      const nodes = collect(store, 'nodes', name).items;
      const events = store.listEvents({ cluster: name, limit: 15 }).map(eventItem);
      const history = store.specHistory(name).map((h) => ({
        generation: h.generation,
        hash: h.specHash.slice(0, 12),
        applied: new Date(h.appliedAt).toISOString(),
      }));
      process.stdout.write(
        stringify({
          cluster: clusterItem(
            c,
            nodes.length,
            operatorItem(store.serveLockHolder(), Date.now()),
            ...observedBackups(store, name),
          ),
          nodes,
          spec: c.spec,
          history,
          events,
        }),
      );
      return EXIT.ok;
    }
    if (kind === 'node') {
      const records = store.listNodes(cluster).filter((r) => r.name === name);
      if (records.length === 0)
        throw new NotFoundError(
          `cannot describe node ${name}: no such node${cluster ? ` in cluster ${cluster}` : ''}`,
        );
      if (records.length > 1)
        throw new UsageError(
          `cannot describe node ${name}: ` +
            `it exists in clusters ${records.map((r) => r.cluster).join(', ')}; pass --cluster`,
        );
      const rec = records[0]!;
      const item = (collect(store, 'nodes', rec.cluster).items as NodeItem[]).find((n) => n.name === name);
      const obs = store.getObservation(rec.cluster)?.nodes[name];
      const spec = store.getCluster(rec.cluster)?.spec.nodes.find((n) => n.name === name);
      const events = store
        .listEvents({ cluster: rec.cluster, limit: 200 })
        .filter((e) => e.node === name)
        .slice(-15)
        .map(eventItem);
      const running = store.jobs.list({ cluster: rec.cluster, running: true }).find((j) => j.node === name);
      const job = running ? jobItem(running) : null;
      process.stdout.write(
        stringify({ node: item, job, spec: spec ?? null, observation: obs ?? null, events }),
      );
      return EXIT.ok;
    }
    throw new UsageError(`cannot describe ${kind}: unknown kind (cluster, node)`);
  } finally {
    store.close();
  }
}

/** "ok 12s" (the last segment's age), "failing 3m" (since the last success), or the state. */
function archiveText(a: ClusterItem['archive'], now: number): string {
  if (!a) return '-';
  if (a.state === 'ok' && a.last_archived_at) return `ok ${age(a.last_archived_at, now)}`;
  if (a.state === 'failing')
    return a.last_archived_at ? `failing ${age(a.last_archived_at, now)}` : 'failing';
  return a.state;
}

/** The endpoint, and with several pool hosts who holds it: "10.0.0.10:9999 (pool1; pool2 down)". */
function endpointText(c: ClusterItem): string {
  if (!c.endpoint) return '-';
  if (!c.pool) return c.endpoint;
  const others = c.pool.hosts.filter((h) => h.name !== c.pool!.holder);
  const notes = others.filter((h) => h.pgpool !== 'routing').map((h) => `${h.name} ${h.pgpool}`);
  const holder = c.pool.holder ?? 'no holder';
  return `${c.endpoint} (${[holder, ...notes].join('; ')})`;
}
