// Where files that belong to a node but not to its data directory live.

import type { ClusterSpec } from '../../spec/types.js';

/** `name` in the data directory's parent: the node's, yet outside what a clone, rewind or base
 *  backup copies (TLS files, the replication passfile, pgBackRest's configuration). */
export function besideDataDir(cluster: ClusterSpec, name: string): string {
  const d = cluster.postgres.dataDir.replace(/\/+$/, '');
  return `${d.slice(0, d.lastIndexOf('/'))}/${name}`;
}
