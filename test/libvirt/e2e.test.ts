// End to end on real VMs (issue 5, item 6b): a private libvirtd in a test-owned network namespace
// (no default route), the offline Debian image from `pgop image build`, the 3-node seed spec
// (specs/libvirt-3node.yaml, resized for this machine) applied and served by `pgop serve` until
// healthy; a write through pgpool read back on a standby; `virsh destroy` of the primary's domain;
// failover (a new primary, writes through pgpool again) and rejoin (the old primary back as a
// standby); pgpool on every node as in the seed, and `virsh destroy` of the node holding the
// endpoint's virtual IP (writes through it again, the node back); a full backup (pgBackRest,
// repository on the hypervisor) restored with the archive after it into a new 1-node cluster;
// `pgop delete cluster` leaving no domain, volume or network.
//
// Run by scripts/test-e2e-libvirt.sh (npm run test:e2e-libvirt, and npm test as root), which
// builds or reuses the image, starts the libvirtd, runs this file inside its namespace and
// removes the libvirtd, its namespace and its directories afterwards, pass or fail. Without that
// wrapper's environment the suite is skipped.

import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientTls } from '../../src/tls/client.js';
import {
  Pgop,
  describeNodes,
  e2eSpec,
  ensureSecrets,
  healthy,
  libvirtInventory,
  libvirtdFromEnv,
  sql,
  virsh,
  waitFor,
  type E2eSpec,
  type Endpoint,
} from './e2e-helpers/cluster.js';

const lv = libvirtdFromEnv();
const image = process.env.PGOP_E2E_IMAGE;
const enabled = process.getuid?.() === 0 && !!lv && !!image;
const log = (s: string) => process.stderr.write(`[e2e ${new Date().toISOString().slice(11, 19)}] ${s}\n`);

// Generous: three guests and the pgpool host boot at once under TCG on a shared 2-core machine.
// PGOP_E2E_SLOW=N multiplies them (a machine busy with other work).
const SLOW = Math.max(1, Number(process.env.PGOP_E2E_SLOW ?? 1) || 1);
const BRINGUP_MS = 20 * 60_000 * SLOW;
const FAILOVER_MS = 5 * 60_000 * SLOW;
const REJOIN_MS = 10 * 60_000 * SLOW;
// one more guest boots (the restored cluster's) while the first three run
const RESTORE_MS = 15 * 60_000 * SLOW;

describe.skipIf(!enabled)(
  'libvirt end to end: real VMs, failover by virsh destroy, rejoin (root)',
  { timeout: BRINGUP_MS + 120_000 },
  () => {
    const work = join(lv?.dir ?? '/nonexistent', '..', 'e2e');
    const db = join(work, 'pgop.db');
    const serveLog = join(work, 'serve.log');
    const secrets = ensureSecrets(); // before Pgop: its children get a copy of this env
    const pgop = new Pgop(db, { ...process.env, PGOP_LIBVIRT_STATE: join(work, 'libvirt-state') });
    let spec: E2eSpec;
    let restored: E2eSpec | undefined;
    let deleted = false;
    let restoredDeleted = false;
    let primary = '';
    let newPrimary = '';
    const node = (name: string) => spec.nodes.find((n) => n.name === name)!;
    // over TLS, verify-full against the CA pgop keeps beside the cluster's operator key
    const tlsOf = (cluster: string, name: string, address: string) =>
      clientTls(readFileSync(join(work, 'libvirt-state', cluster, 'tls', 'ca.crt'), 'utf8'), {
        name,
        address,
      });
    const ssl = (name: string, address: string) => tlsOf(spec.name, name, address);
    const viaPgpool = (): Endpoint => ({
      host: spec.pgpool.address,
      port: spec.pgpool.port,
      password: secrets.PGOP_SUPERUSER_PASSWORD,
      database: 'critlib',
      ssl: ssl('pgpool', spec.pgpool.address!),
    });
    const direct = (name: string): Endpoint => ({
      host: node(name).address,
      port: 5432,
      password: secrets.PGOP_SUPERUSER_PASSWORD,
      database: 'critlib',
      ssl: ssl(name, node(name).address),
    });
    const poolOf = async (cluster: string) => {
      const r = await pgop.runAsync(['get', 'clusters', cluster, '-o', 'json'], 60_000);
      const items = r.code === 0 ? (JSON.parse(r.stdout) as { items: ClusterPool[] }).items : [];
      return items[0]?.pool;
    };
    const archiveOf = async (cluster: string) => {
      const r = await pgop.runAsync(['get', 'clusters', cluster, '-o', 'json'], 60_000);
      const items = r.code === 0 ? (JSON.parse(r.stdout) as { items: ClusterArchive[] }).items : [];
      return items[0]?.archive;
    };
    const state = async () =>
      pgop.unexpectedExits.map((e) => `  ${e} (restarted)\n`).join('') +
      `  cluster: ${JSON.stringify(await pgop.cluster(spec.name))}\n` +
      `${describeNodes(await pgop.nodes())}\n  serve log tail:\n${tailOf(serveLog, 25)}`;

    beforeAll(() => {
      mkdirSync(work, { recursive: true, mode: 0o755 }); // the pool is below it: qemu runs as libvirt-qemu
      const subnet = 100 + Math.floor(Math.random() * 150);
      const common = { uri: lv!.qemuUri, baseImage: image!, backupRepo: join(work, 'backup-repo') };
      spec = e2eSpec({ ...common, poolPath: join(work, 'pool'), subnet });
      // the restore's target: one node and no pgpool host, on a network and pool of its own
      restored = e2eSpec({
        ...common,
        poolPath: join(work, 'pool-restored'),
        subnet: subnet + 1,
        name: `${spec.name}-restored`,
        nodeCount: 1,
        pgpool: false,
      });
      writeFileSync(join(work, 'spec.yaml'), spec.yaml);
      writeFileSync(join(work, 'restored.yaml'), restored.yaml);
      log(`work dir ${work}; libvirtd ${lv!.qemuUri} in netns ${lv!.netns}; network ${spec.cidr}`);
    });

    afterAll(async () => {
      // Tear down whatever the tests left (a failure half-way included); the wrapper then kills
      // what is left in the namespace and removes the libvirtd's directories.
      try {
        if (!restoredDeleted && restored && (await pgop.cluster(restored.name))) {
          if (!pgop.serveAlive()) pgop.startServe(serveLog);
          const r = await pgop.runAsync(['delete', 'cluster', restored.name], 600_000);
          if (r.code !== 0) log(`delete of the restored cluster after failure: exit ${r.code}`);
        }
        if (!deleted && spec) {
          if (!pgop.serveAlive()) pgop.startServe(serveLog);
          const r = await pgop.runAsync(['delete', 'cluster', spec.name], 600_000);
          if (r.code !== 0) log(`delete after failure: exit ${r.code}: ${r.stderr.slice(-500)}`);
        }
      } finally {
        await pgop.stopServe();
        for (const e of pgop.unexpectedExits)
          log(`NOTE: ${e}; restarted as its unit would (serve log: kernel lines)`);
        if (process.env.PGOP_E2E_KEEP_WORK !== '1') rmSync(work, { recursive: true, force: true });
      }
    }, 900_000);

    it('applies the seed spec and serves it to 3 healthy VMs, pgpool on each', async () => {
      const t0 = Date.now();
      const applied = await pgop.runAsync(['apply', '-f', join(work, 'spec.yaml')]);
      expect(applied.stderr).toBe('');
      expect(applied.stdout).toBe(`cluster/${spec.name} created (generation 1)\n`);
      pgop.startServe(serveLog);
      await waitFor(
        '3 healthy nodes',
        async () => {
          if (!pgop.serveAlive()) throw new Error(`pgop serve exited:\n${tailOf(serveLog, 40)}`);
          const [c, items] = [await pgop.cluster(spec.name), await pgop.nodes()];
          return c && healthy(c, items, 3) ? c : undefined;
        },
        { timeoutMs: BRINGUP_MS, intervalMs: 10_000, log, describe: state },
      ).then((c) => (primary = c.primary!));
      log(`healthy after ${((Date.now() - t0) / 1000).toFixed(0)} s; primary ${primary}`);
      const inv = await libvirtInventory(lv!.qemuUri);
      expect(inv.domains.sort()).toEqual(spec.nodes.map((n) => `${spec.name}-${n.name}`).sort());
      const pool = await poolOf(spec.name);
      expect(pool?.hosts.map((h) => h.name).sort(), JSON.stringify(pool)).toEqual(
        spec.nodes.map((n) => n.name).sort(),
      );
      expect(pool?.holder, JSON.stringify(pool)).toBeTruthy();
      expect(inv.networks).toContain(spec.networkName);
      for (const d of inv.domains) expect((await virsh(lv!.qemuUri, 'domstate', d)).trim()).toBe('running');
    });

    // Each step needs the one before it: once one failed, the rest fail at once (afterAll cleans up).
    const needPrimary = () => {
      if (!primary) throw new Error('the cluster never became healthy (see the first test)');
    };

    it("replicates a write through pgpool to every standby, with the seed's roles and grants", async () => {
      needPrimary();
      await sql(
        viaPgpool(),
        'CREATE TABLE IF NOT EXISTS cl_owner.e2e (id int PRIMARY KEY, at timestamptz DEFAULT now())',
      );
      await sql(viaPgpool(), 'INSERT INTO cl_owner.e2e (id) SELECT g FROM generate_series(1, 100) g');
      const standbys = spec.nodes.map((n) => n.name).filter((n) => n !== primary);
      for (const s of standbys) {
        const row = await waitFor(
          `the rows on ${s}`,
          async () => {
            const [r] = await sql<{ n: string; rec: boolean }>(
              direct(s),
              'SELECT count(*) AS n, pg_is_in_recovery() AS rec FROM cl_owner.e2e',
            );
            return r && r.n === '100' ? r : undefined;
          },
          { timeoutMs: 60_000, intervalMs: 500 },
        );
        expect(row).toEqual({ n: '100', rec: true });
      }
      // cl_user (the seed's application role) reads and writes through pgpool, unqualified via its
      // search_path.
      const user: Endpoint = { ...viaPgpool(), user: 'cl_user', password: secrets.PGOP_CL_USER_PASSWORD };
      await sql(
        { ...viaPgpool(), user: 'cl_owner', password: secrets.PGOP_CL_OWNER_PASSWORD },
        'CREATE TABLE IF NOT EXISTS cl_owner.items (id int)',
      );
      await sql(user, 'INSERT INTO items VALUES (1)');
      // replication is async here and pgpool balances a new session's read to any node: a
      // standby shows the row once it has replayed it
      const seen = await waitFor(
        'the row read back through pgpool',
        async () => {
          const [r] = await sql<{ n: string }>(user, 'SELECT count(*) AS n FROM items');
          return r?.n === '1' ? r.n : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 500 },
      );
      expect(seen).toBe('1');
      await expect(sql(user, 'DROP TABLE items')).rejects.toThrow(/must be owner|permission denied/);
    });

    it(
      'fails over after `virsh destroy` of the primary: a new primary, writes through pgpool again',
      { timeout: FAILOVER_MS + 60_000 },
      async () => {
        needPrimary();
        const domain = `${spec.name}-${primary}`;
        const t0 = Date.now();
        await virsh(lv!.qemuUri, 'destroy', domain);
        log(`destroyed ${domain}`);
        let attempts = 0;
        await waitFor(
          'a write through pgpool',
          async () => {
            attempts++;
            await sql(viaPgpool(), 'INSERT INTO cl_owner.e2e (id) VALUES (1000)', [], 5000);
            return true;
          },
          { timeoutMs: FAILOVER_MS, intervalMs: 500, log, describe: state },
        );
        log(
          `first write through pgpool ${((Date.now() - t0) / 1000).toFixed(1)} s after the destroy ` +
            `(${attempts} attempts)`,
        );
        const c = await waitFor(
          'a new primary in the store',
          async () => {
            const cl = await pgop.cluster(spec.name);
            return cl?.primary && cl.primary !== primary ? cl : undefined;
          },
          { timeoutMs: 60_000, intervalMs: 1000, describe: state },
        );
        newPrimary = c.primary!;
        const [r] = await sql<{ rec: boolean; n: string }>(
          direct(newPrimary),
          'SELECT pg_is_in_recovery() AS rec, count(*) AS n FROM cl_owner.e2e',
        );
        expect(r).toEqual({ rec: false, n: '101' });
        // every write acknowledged before the destroy survived (async replication; the standby had
        // replayed them)
        // pgpool may restart its children once more as pgop settles it after the failover (issue
        // 16): a session cut then is retried, the count itself must be exact.
        const [kept] = await waitFor(
          'a read through pgpool after the failover',
          () => sql<{ n: string }>(viaPgpool(), 'SELECT count(*) AS n FROM cl_owner.e2e WHERE id <= 100'),
          { timeoutMs: 60_000, intervalMs: 1000, describe: state },
        );
        expect(kept!.n).toBe('100');
      },
    );

    it(
      'brings the old primary back as a standby of the new one (rejoin)',
      { timeout: REJOIN_MS + 60_000 },
      async () => {
        if (!newPrimary) throw new Error('there was no failover (see the test before)');
        const t0 = Date.now();
        await waitFor(
          `${primary} streaming as a standby`,
          async () => {
            const [c, items] = [await pgop.cluster(spec.name), await pgop.nodes()];
            const old = items.find((n) => n.name === primary);
            return c?.primary === newPrimary &&
              old?.role === 'standby' &&
              old.state === 'standby' &&
              old.streaming &&
              healthy(c, items, 3)
              ? old
              : undefined;
          },
          { timeoutMs: REJOIN_MS, intervalMs: 5000, log, describe: state },
        );
        log(`${primary} rejoined after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
        expect((await virsh(lv!.qemuUri, 'domstate', `${spec.name}-${primary}`)).trim()).toBe('running');
        // pgpool attaches the rejoined node meanwhile (its children restart): retried, as a client
        // would, and a retry after a commit whose acknowledgement was lost changes nothing
        const t1 = Date.now();
        await waitFor(
          'a write through pgpool after the rejoin',
          async () => {
            await sql(viaPgpool(), 'INSERT INTO cl_owner.e2e (id) VALUES (1001) ON CONFLICT DO NOTHING');
            return true;
          },
          { timeoutMs: 60_000, intervalMs: 500, log, describe: state },
        );
        log(`a write through pgpool ${((Date.now() - t1) / 1000).toFixed(1)} s after the rejoin was seen`);
        const row = await waitFor(
          `the newest row on ${primary}`,
          async () => {
            const [r] = await sql<{ n: string; rec: boolean }>(
              direct(primary),
              'SELECT count(*) AS n, pg_is_in_recovery() AS rec FROM cl_owner.e2e',
            );
            return r && r.n === '102' ? r : undefined;
          },
          { timeoutMs: 60_000, intervalMs: 500 },
        );
        expect(row).toEqual({ n: '102', rec: true });
      },
    );

    it(
      "`virsh destroy` of the virtual IP's holder (a node): the address moves to another node, " +
        'writes through it again, and the node comes back with its pgpool as a spare',
      { timeout: FAILOVER_MS + REJOIN_MS },
      async () => {
        if (!newPrimary) throw new Error('there was no failover (see the tests before)');
        const names = spec.nodes.map((n) => n.name);
        const holder = (await poolOf(spec.name))?.holder ?? '';
        expect(names, 'one node holds the virtual IP').toContain(holder);
        const wasPrimary = (await pgop.cluster(spec.name))?.primary === holder;
        const t0 = Date.now();
        await virsh(lv!.qemuUri, 'destroy', `${spec.name}-${holder}`);
        log(`destroyed ${spec.name}-${holder}, the virtual IP's holder${wasPrimary ? ' and primary' : ''}`);
        await waitFor(
          'a write through the virtual IP',
          async () => {
            await sql(viaPgpool(), 'INSERT INTO cl_owner.e2e (id) VALUES (1002)', [], 5000);
            return true;
          },
          { timeoutMs: FAILOVER_MS, intervalMs: 500, log, describe: state },
        );
        log(
          `first write through the virtual IP ${((Date.now() - t0) / 1000).toFixed(1)} s after the destroy`,
        );
        const moved = await poolOf(spec.name);
        expect(moved?.holder, JSON.stringify(moved)).not.toBe(holder);
        expect(names).toContain(moved?.holder);
        // the node rejoins (as a standby when it was the primary) and its pgpool is a spare
        const back = await waitFor(
          `${holder} running again, its pgpool a spare, the cluster healthy`,
          async () => {
            const [p, c, items] = [
              await poolOf(spec.name),
              await pgop.cluster(spec.name),
              await pgop.nodes(),
            ];
            const old = p?.hosts.find((h) => h.name === holder);
            return p &&
              c &&
              healthy(c, items, 3) &&
              p.holder !== holder &&
              old?.machine === 'running' &&
              old.pgpool !== 'down' &&
              !old.holds_vip
              ? p
              : undefined;
          },
          { timeoutMs: REJOIN_MS, intervalMs: 5000, log, describe: state },
        );
        log(`${holder} a spare again ${((Date.now() - t0) / 1000).toFixed(0)} s after the destroy`);
        expect(back.hosts.filter((h) => h.holds_vip === true)).toHaveLength(1);
        // one new session, no retry: the cluster says it is healthy, so pgpool must take it
        const [kept] = await sql<{ n: string }>(viaPgpool(), 'SELECT count(*) AS n FROM cl_owner.e2e').catch(
          async (e: unknown) => {
            // as waitFor's describe: a failing look must not hide the session's own error
            const seen = await Promise.all([poolOf(spec.name), state()]).then(
              ([pool, s]) => `  pool: ${JSON.stringify(pool)}\n${s}`,
              (d: unknown) => `  (cannot describe the cluster: ${String(d)})`,
            );
            throw new Error(`a new session through the virtual IP: ${String(e)}\n${seen}`);
          },
        );
        expect(kept!.n, 'every acknowledged row, 1002 included').toBe('103');
      },
    );

    it(
      'takes a full backup, then restores it and the archive after it into a new 1-node cluster',
      { timeout: RESTORE_MS + 120_000 },
      async () => {
        if (!newPrimary) throw new Error('there was no failover (see the tests before)');
        const t0 = Date.now();
        const b = await pgop.runAsync(['backup', spec.name, '--type', 'full', '--timeout', '10m'], 660_000);
        expect(b.code, b.stdout + b.stderr.slice(-2000)).toBe(0);
        log(`full backup of ${spec.name} in ${secondsSince(t0)} s`);
        // the listing is pgbackrest info's, kept in the observation: the next pass stores it
        const listed = await waitFor(
          'the backup in get backups',
          async () => {
            const r = await pgop.runAsync(['get', 'backups', '--cluster', spec.name, '-o', 'json']);
            const items = r.code === 0 ? (JSON.parse(r.stdout) as { items: BackupListed[] }).items : [];
            return items.length > 0 ? items : undefined;
          },
          { timeoutMs: 120_000, intervalMs: 2000, describe: state },
        );
        expect(listed).toEqual([expect.objectContaining({ type: 'full', state: 'ok' })]);
        // a row after the backup: the restore finds it in the archive only
        await sql(viaPgpool(), 'INSERT INTO cl_owner.e2e (id) VALUES (2000)');
        const [sw] = await sql<{ wal: string }>(
          viaPgpool(),
          'SELECT pg_walfile_name(pg_switch_wal()) AS wal',
        );
        await waitFor(
          `${sw!.wal} archived`,
          async () => ((await archiveOf(spec.name))?.last_archived_wal ?? '') >= sw!.wal || undefined,
          { timeoutMs: 120_000, intervalMs: 2000, describe: state },
        );
        const t1 = Date.now();
        const r = await pgop.runAsync(
          ['restore', '--from', spec.name, '--latest', '-f', join(work, 'restored.yaml'), '--no-wait'],
          60_000,
        );
        expect(r.code, r.stdout + r.stderr).toBe(0);
        const into = restored!;
        await waitFor(
          `${into.name} restored and healthy`,
          async () => {
            const [c, items] = [await pgop.cluster(into.name), await pgop.nodes(into.name)];
            return c && healthy(c, items, 1) ? c : undefined;
          },
          { timeoutMs: RESTORE_MS, intervalMs: 10_000, log, describe: state },
        );
        log(`${into.name} restored and healthy ${secondsSince(t1)} s after pgop restore`);
        const [only] = into.nodes;
        const restoredNode: Endpoint = {
          host: only!.address,
          port: 5432,
          password: secrets.PGOP_SUPERUSER_PASSWORD,
          database: 'critlib',
          ssl: tlsOf(into.name, only!.name, only!.address),
        };
        const [got] = await sql<{ n: string; ids: string; rec: boolean }>(
          restoredNode,
          'SELECT count(*) AS n, pg_is_in_recovery() AS rec, ' +
            "string_agg(id::text, ',' ORDER BY id) FILTER (WHERE id > 100) AS ids FROM cl_owner.e2e",
        );
        // the 100 rows, the ones written during the failover, after the rejoin and after the pool
        // host's loss, and the one after the backup (replayed from the archive)
        expect(got).toEqual({ n: '104', rec: false, ids: '1000,1001,1002,2000' });
        const d = await pgop.runAsync(['delete', 'cluster', into.name], 600_000);
        expect(d.code, d.stderr.slice(-2000)).toBe(0);
        restoredDeleted = true;
        const inv = await libvirtInventory(lv!.qemuUri);
        expect(inv.domains.filter((x) => x.startsWith(`${into.name}-`))).toEqual([]);
        expect(inv.networks).not.toContain(into.networkName);
      },
    );

    it('deletes the cluster: no domain, volume or network is left', { timeout: 660_000 }, async () => {
      const r = await pgop.runAsync(['delete', 'cluster', spec.name], 600_000);
      expect(r.code, r.stderr.slice(-2000)).toBe(0);
      deleted = true;
      const inv = await libvirtInventory(lv!.qemuUri);
      expect(inv.domains).toEqual([]);
      expect(inv.volumes).toEqual([]);
      expect(inv.networks).not.toContain(spec.networkName);
      expect(inv.pools).not.toContain(spec.poolName);
      expect((await pgop.nodes()).length).toBe(0);
    });

    it('never printed a secret', () => {
      const all = pgop.outputs.join('\n') + readFileSafe(serveLog);
      for (const s of Object.values(secrets)) expect(all).not.toContain(s);
    });
  },
);

interface ClusterPool {
  pool?: {
    holder: string | null;
    hosts: { name: string; holds_vip: boolean | null; pgpool: string; machine: string }[];
  };
}

interface BackupListed {
  cluster: string;
  type: string;
  state: string;
}

interface ClusterArchive {
  archive?: { state: string; last_archived_wal: string | null };
}

const secondsSince = (t: number) => ((Date.now() - t) / 1000).toFixed(0);

function readFileSafe(p: string): string {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return '';
  }
}

function tailOf(p: string, n: number): string {
  return readFileSafe(p)
    .trimEnd()
    .split('\n')
    .slice(-n)
    .map((l) => `    ${l.slice(0, 300)}`)
    .join('\n');
}
