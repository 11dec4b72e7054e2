// What the HTTP API answers, from the store: the very documents `pgop get -o json` prints
// (the CLI's own collect()), plus the event rows after an id for the event stream.

import type { Store } from '../store/store.js';
import { collect } from '../cli/commands/get.js';
import { eventItem, type ClusterItem, type EventItem, type JobItem, type NodeItem } from '../cli/output.js';

export type ApiKind = 'clusters' | 'nodes' | 'events' | 'jobs';
export type ApiDocument =
  | { kind: 'clusters'; items: ClusterItem[] }
  | { kind: 'nodes'; items: NodeItem[] }
  | { kind: 'events'; items: EventItem[] }
  | { kind: 'jobs'; items: JobItem[] };

export interface ApiQuery {
  cluster?: string;
  allIncarnations?: boolean;
}

export function apiDocument<K extends ApiKind>(
  store: Store,
  kind: K,
  q: ApiQuery,
): Extract<ApiDocument, { kind: K }> {
  const data = collect(store, kind, q.cluster, !!q.allIncarnations);
  return { kind: data.kind, items: data.items } as Extract<ApiDocument, { kind: K }>;
}

/** Events recorded after `afterId` (ascending), for the event stream. */
export function eventsAfter(store: Store, afterId: number, cluster?: string): EventItem[] {
  return store.listEvents({ afterId, ...(cluster ? { cluster } : {}), limit: 500 }).map(eventItem);
}

/** The id of the newest event (0 when there is none): a stream starts after it. */
export function lastEventId(store: Store): number {
  return store.listEvents({ limit: 1 }).at(-1)?.id ?? 0;
}

/** What the dashboard draws besides `get nodes`: per cluster, the primary's view of its
 *  standbys (sync state), the sync set last seen, and pgpool's routing. */
export interface TopologyItem {
  cluster: string;
  observed_at: string | null;
  replicas: { name: string; state: string; sync_state: string }[];
  sync: { names: string[]; quorum: number } | null;
  pool: {
    reachable: boolean;
    primary: string | null;
    backends: { name: string; status: string; role: string }[];
  } | null;
}

export function topologyItems(store: Store, cluster?: string): TopologyItem[] {
  const names = store
    .listClusters()
    .map((c) => c.name)
    .filter((n) => !cluster || n === cluster);
  return names.map((name) => {
    const obs = store.getObservation(name);
    const primary =
      obs &&
      Object.values(obs.nodes).find((n) => n.reachable && n.postgres?.running && !n.postgres.inRecovery);
    const pool = obs?.pool;
    return {
      cluster: name,
      observed_at: obs ? new Date(obs.at).toISOString() : null,
      replicas: (primary?.postgres?.replicas ?? []).map((r) => ({
        name: r.name,
        state: r.state,
        sync_state: r.syncState,
      })),
      // an election's evidence is not a synchronous_standby_names anyone set
      sync:
        obs?.lastSync && !obs.lastSync.elected
          ? { names: obs.lastSync.names, quorum: obs.lastSync.quorum }
          : null,
      pool: pool
        ? {
            reachable: pool.reachable,
            primary: pool.primary,
            backends: pool.backends.map((b) => ({ name: b.name, status: b.status, role: b.role })),
          }
        : null,
    };
  });
}
