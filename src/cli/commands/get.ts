// `pgop get` and `pgop describe`: read-only views of the store.

import { Store } from '../../store/store.js';
import { EXIT, terminal } from '../../errors.js';
import { age, clusterItem, eventItem, humanBytes, nodeItems, type NodeItem } from '../output.js';
import { renderTable } from '../table.js';
import type { StoredCluster } from '../../store/types.js';
import type { ClusterObservation } from '../../observe/types.js';

type Format = 'table' | 'wide' | 'json' | 'yaml';

export function collect(store: Store, kind: string, cluster: string | undefined, allIncarnations = false) {
  const clusters = new Map<string, StoredCluster>(store.listClusters().map((c) => [c.name, c]));
  if (cluster && !clusters.has(cluster) && kind !== 'events') throw terminal(`cannot get ${kind}: no cluster named ${cluster}`);
  switch (kind) {
    case 'clusters':
    case 'cluster': {
      const nodes = store.listNodes();
      const items = [...clusters.values()].filter((c) => !cluster || c.name === cluster).map((c) => clusterItem(c, nodes.filter((n) => n.cluster === c.name).length));
      return { kind: 'clusters' as const, items };
    }
    case 'nodes':
    case 'node': {
      const records = store.listNodes(cluster);
      const observations = new Map<string, ClusterObservation | undefined>();
      for (const name of new Set(records.map((r) => r.cluster))) observations.set(name, store.getObservation(name));
      return { kind: 'nodes' as const, items: nodeItems(records, clusters, observations) };
    }
    case 'events':
    case 'event':
      return { kind: 'events' as const, items: store.listEvents({ ...(cluster ? { cluster } : {}), ...(allIncarnations ? { allIncarnations } : {}), limit: 500 }).map(eventItem) };
    default:
      throw terminal(`cannot get ${kind}: unknown kind (clusters, nodes, events)`);
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
    const head = ['NAME', 'GEN', 'PHASE', 'PRIMARY', 'ENDPOINT', 'NODES', 'REPLICATION', ...(wide ? ['PROVIDER', 'MESSAGE'] : [])];
    return renderTable(head, data.items.map((c) => [c.name, c.observed_generation === c.generation ? c.generation : `${c.observed_generation}/${c.generation}`, c.phase, c.primary ?? '-', c.endpoint ?? '-', c.nodes, c.replication, ...(wide ? [c.provider, c.message] : [])]));
  }
  if (data.kind === 'nodes') {
    const row = (n: NodeItem) => [n.cluster, n.name, n.state, n.role, n.goal ?? '-', n.address, n.timeline ?? '-', n.lsn ?? '-', humanBytes(n.lag_bytes), age(n.last_transition, now)];
    const head = ['CLUSTER', 'NAME', 'STATE', 'ROLE', 'GOAL', 'ADDRESS', 'TL', 'LSN', 'LAG', 'AGE'];
    if (!wide) return renderTable(head, data.items.map(row), [12, 12]);
    return renderTable([...head, 'MACHINE', 'UPSTREAM', 'MESSAGE'], data.items.map((n) => [...row(n), n.machine, n.upstream ?? '-', n.message]));
  }
  const head = ['TIME', 'CLUSTER', 'NODE', 'TRANSITION', 'RULE', 'REASON'];
  return renderTable(head, data.items.map((e) => [e.time.replace('T', ' ').replace('Z', ''), e.cluster, e.node ?? '-', e.from || e.to ? `${e.from ?? '-'} -> ${e.to ?? '-'}` : '-', e.rule, e.reason]), [undefined, undefined, undefined, undefined, undefined, wide ? undefined : 80]);
}

export async function getCommand(db: string, kind: string, o: { cluster?: string; output: Format; watch?: boolean; allIncarnations?: boolean }): Promise<number> {
  const store = Store.open(db, { readonly: true });
  try {
    let last = '';
    for (;;) {
      const out = await render(collect(store, kind, o.cluster, !!o.allIncarnations), o.output);
      if (out !== last) {
        process.stdout.write(`${o.watch && last ? '\n' : ''}${out}\n`);
        last = out;
      }
      if (!o.watch) return EXIT.ok;
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    store.close();
  }
}

export async function describeCommand(db: string, kind: string, name: string, cluster?: string): Promise<number> {
  const store = Store.open(db, { readonly: true });
  try {
    const { stringify } = await import('yaml');
    if (kind === 'cluster') {
      const c = store.getCluster(name);
      if (!c) throw terminal(`cannot describe cluster ${name}: no such cluster`);
      const nodes = collect(store, 'nodes', name).items;
      const events = store.listEvents({ cluster: name, limit: 15 }).map(eventItem);
      const history = store.specHistory(name).map((h) => ({ generation: h.generation, hash: h.specHash.slice(0, 12), applied: new Date(h.appliedAt).toISOString() }));
      process.stdout.write(stringify({ cluster: clusterItem(c, nodes.length), nodes, spec: c.spec, history, events }));
      return EXIT.ok;
    }
    if (kind === 'node') {
      const records = store.listNodes(cluster).filter((r) => r.name === name);
      if (records.length === 0) throw terminal(`cannot describe node ${name}: no such node${cluster ? ` in cluster ${cluster}` : ''}`);
      if (records.length > 1) throw terminal(`cannot describe node ${name}: it exists in clusters ${records.map((r) => r.cluster).join(', ')}; pass --cluster`);
      const rec = records[0]!;
      const item = (collect(store, 'nodes', rec.cluster).items as NodeItem[]).find((n) => n.name === name);
      const obs = store.getObservation(rec.cluster)?.nodes[name];
      const spec = store.getCluster(rec.cluster)?.spec.nodes.find((n) => n.name === name);
      const events = store.listEvents({ cluster: rec.cluster, limit: 200 }).filter((e) => e.node === name).slice(-15).map(eventItem);
      process.stdout.write(stringify({ node: item, spec: spec ?? null, observation: obs ?? null, events }));
      return EXIT.ok;
    }
    throw terminal(`cannot describe ${kind}: unknown kind (cluster, node)`);
  } finally {
    store.close();
  }
}
