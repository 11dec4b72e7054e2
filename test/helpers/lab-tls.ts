// node-pg `ssl` options for a test client of a lab cluster: verify-full against the cluster CA
// pgop keeps in <lab state dir>/<cluster>/tls/ca.crt (the lab's pg_hba and pool_hba take network
// clients over TLS only). Read when the client connects: the CA exists once pgop has issued it.
//
// No vitest import here: bench/failover.ts compiles chaos-lab.ts, which uses this file.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { clientTls } from '../../src/tls/client.js';

export function labCaFile(stateDir: string, cluster: string): string {
  return join(stateDir, cluster, 'tls', 'ca.crt');
}

/** `ssl` for a client of `address` (a node's, or pgpool's). */
export function labSsl(
  stateDir: string,
  cluster: string,
  name: string,
  address: string,
): pg.ClientConfig['ssl'] {
  return clientTls(readFileSync(labCaFile(stateDir, cluster), 'utf8'), { name, address });
}
