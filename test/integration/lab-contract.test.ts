// The driver contract (test/contract) against the real lab drivers: namespaces, sshd, postgres
// and pgpool over SSH. The same story the simulated world tells, told by real processes.
// Root only; runs inside the hub namespace (scripts/test-integration.sh).

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe } from 'vitest';
import { createLabWorld } from '../../src/drivers/lab/world.js';
import { labSsl } from '../helpers/lab-tls.js';
import { createMemoryPins } from '../../src/drivers/ssh/shell.js';
import { driverContract } from '../contract/driver-contract.js';
import { labSpec } from '../helpers/lab-spec.js';

const root = process.getuid?.() === 0 && !!process.env.PGOP_LAB_PREFIX;

if (!root) {
  describe.skip('driver contract: lab (needs root, run by scripts/test-integration.sh)', () => {});
} else {
  process.env.PGOP_TEST_SUPERUSER_PASSWORD ??= randomBytes(12).toString('base64url');
  process.env.PGOP_TEST_REPL_PASSWORD ??= randomBytes(12).toString('base64url');
  const cluster = labSpec({ name: 'lc', network: '10.79.0.0/24', nodes: 3 });
  driverContract('lab', async () => {
    const world = createLabWorld({ pins: createMemoryPins() });
    const su = process.env.PGOP_TEST_SUPERUSER_PASSWORD!;
    const write = async (via: 'pool' | string, id: number): Promise<boolean> => {
      const node = cluster.nodes.find((n) => n.name === via);
      if (node) {
        // A client colocated with the node: psql from inside the node's own namespace, so it
        // still reaches the node while the node's link is down.
        const ns = `/run/netns/${process.env.PGOP_LAB_PREFIX}-${cluster.name}-${node.name}`;
        const sql =
          'CREATE TABLE IF NOT EXISTS contract_writes (id bigint PRIMARY KEY); ' +
          `INSERT INTO contract_writes VALUES (${Number(id)}) ON CONFLICT DO NOTHING`;
        const r = spawnSync(
          'nsenter',
          [
            `--net=${ns}`,
            '--',
            '/usr/lib/postgresql/15/bin/psql',
            `host=${node.address} port=5432 user=postgres dbname=postgres connect_timeout=3`,
            '-v',
            'ON_ERROR_STOP=1',
            '-qc',
            sql,
          ],
          {
            env: { ...process.env, PGPASSWORD: su, PGOPTIONS: '-c statement_timeout=3000' },
            timeout: 8000,
            encoding: 'utf8',
          },
        );
        return r.status === 0;
      }
      const client = new pg.Client({
        host: cluster.pgpool.address,
        port: cluster.pgpool.port,
        user: 'postgres',
        password: su,
        database: 'postgres',
        connectionTimeoutMillis: 3000,
        statement_timeout: 3000,
        query_timeout: 4000,
        ssl: labSsl(process.env.PGOP_LAB_STATE!, cluster.name, 'pgpool', cluster.pgpool.address!),
      });
      try {
        await client.connect();
        await client.query('CREATE TABLE IF NOT EXISTS contract_writes (id bigint PRIMARY KEY)');
        await client.query('INSERT INTO contract_writes VALUES ($1) ON CONFLICT DO NOTHING', [id]);
        return true;
      } catch {
        return false;
      } finally {
        await client.end().catch(() => undefined);
      }
    };
    return {
      world,
      faults: world.faults,
      cluster,
      write,
      eventuallyMs: 20_000,
      cleanup: async () => {
        // Each step bounded: after the contract's own teardown nothing is left to answer, and a
        // cleanup must never be what fails the run (scripts/test-integration.sh sweeps anyway).
        const bounded = (p: Promise<unknown>) =>
          Promise.race([p.catch(() => undefined), new Promise((r) => setTimeout(r, 15_000))]);
        await bounded(world.pool.deletePool(cluster));
        for (const n of cluster.nodes) await bounded(world.provider.deleteMachine(cluster, n));
        await bounded(world.provider.deleteClusterResources(cluster));
        await bounded(
          Promise.allSettled([world.provider.close(), world.postgres.close(), world.pool.close()]),
        );
      },
    };
  });
}
