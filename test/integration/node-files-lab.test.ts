// What pgop does as root on a node cannot be turned against root by the OS user postgres (which
// any database superuser is, through COPY ... TO PROGRAM), and an interrupted clone is redone.
// Real lab hosts (network namespaces with their own sshd), driven through SshPostgresDriver as
// the operator drives them. The attacks run as postgres on the node (runuser over SSH).
// Root only: `bash scripts/test-integration.sh test/integration/node-files-lab.test.ts`.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { ClusterSpec, NodeSpec } from '../../src/spec/types.js';
import { createLabProvider, type LabProvider } from '../../src/drivers/lab/provider.js';
import { SshShell, createMemoryPins } from '../../src/drivers/ssh/shell.js';
import { SshPostgresDriver } from '../../src/drivers/postgres/driver.js';
import { PgopError } from '../../src/errors.js';
import { labNode, labSpec } from '../helpers/lab-spec.js';

const inLab = process.getuid?.() === 0 && !!process.env.PGOP_LAB_STATE;

const PW = { su: `su-${randomBytes(9).toString('hex')}`, repl: `repl-${randomBytes(9).toString('hex')}` };
const D = '/u01/pg15/data';
const B = '/usr/lib/postgresql/15/bin';

/** Two lab nodes (pg01 primary, pg02 standby), no pgpool, the seed's archive script. */
function nodeFilesSpec(): ClusterSpec {
  const base = labSpec({ name: 'nfiles', network: '10.86.0.0/24', nodes: 2, pgpool: false });
  return {
    ...base,
    postgres: {
      ...base.postgres,
      parameters: {
        shared_buffers: '16MB',
        max_wal_senders: 5,
        max_replication_slots: 5,
        wal_level: 'replica',
        hot_standby: 'on',
        wal_log_hints: 'on',
      },
      dataDir: D,
      archiveScript: true,
      superuserPassword: { env: 'PGOP_NF_SU_PW' },
      hba: [{ type: 'host', database: 'all', user: 'all', address: '10.86.0.0/24', method: 'scram-sha-256' }],
    },
    nodes: [labNode('pg01', '10.86.0.11'), labNode('pg02', '10.86.0.12')],
    replication: { ...base.replication, password: { env: 'PGOP_NF_REPL_PW' } },
  };
}

/** The reconcile loop retries transient errors; so does the test. */
async function retry<T>(fn: () => Promise<T>, attempts = 3): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof PgopError && err.kind === 'transient') || i >= attempts) throw err;
    }
  }
}

describe.skipIf(!inLab)('files written as root on a node, and interrupted clones', () => {
  const spec = nodeFilesSpec();
  const [pg01, pg02] = spec.nodes as [NodeSpec, NodeSpec];
  let provider: LabProvider;
  let shell: SshShell;
  let pgd: SshPostgresDriver;
  const driverLog: string[] = [];

  /** Run a shell script on a node as `user`; returns stdout, throws on a non-zero exit. */
  const run = async (
    n: NodeSpec,
    user: 'root' | 'postgres',
    script: string,
    ...args: string[]
  ): Promise<string> => {
    const res = await shell.exec(
      provider.hostRef(spec, n),
      ['sh', '-c', `cd / || exit 1\n${script}`, 'sh', ...args],
      { user, timeoutMs: 120_000 },
    );
    if (res.code !== 0) throw new Error(`script on ${n.name} as ${user} exited ${res.code}: ${res.stderr}`);
    return res.stdout;
  };
  /** pg02 made a standby of pg01 (retried: a clone may meet pg01 still settling) streams from it. */
  const expectClonedStandby = async () => {
    await retry(() => pgd.ensureStandby(spec, pg02, pg01));
    expect((await pgd.probe(spec, pg02)).postgres).toMatchObject({
      running: true,
      inRecovery: true,
      streaming: true,
      upstream: 'pg01',
    });
  };
  /** A root-owned file on the node that the attacks aim at: content, owner and mode. */
  const canary = (n: NodeSpec, path: string) =>
    run(n, 'root', 'stat -c "%U:%G %a" -- "$1" && cat -- "$1"', path);

  beforeAll(async () => {
    process.env.PGOP_NF_SU_PW = PW.su;
    process.env.PGOP_NF_REPL_PW = PW.repl;
    const pins = createMemoryPins();
    provider = createLabProvider({ hostKeys: pins });
    shell = new SshShell(pins);
    const logger = {
      info: (o: object, m?: string) => driverLog.push(`${m} ${JSON.stringify(o)}`),
      warn: (o: object, m?: string) => driverLog.push(`WARN ${m} ${JSON.stringify(o)}`),
    };
    pgd = new SshPostgresDriver({ shell, hostRef: (c, n) => provider.hostRef(c, n), logger });
    await Promise.all(spec.nodes.map((n) => provider.ensureMachine(spec, n)));
    await Promise.all(spec.nodes.map((n) => retry(() => pgd.ensureInstalled(spec, n))));
    await retry(() => pgd.ensurePrimary(spec, pg01, [pg02.name]));
    await retry(() => pgd.ensureStandby(spec, pg02, pg01));
  }, 240_000);

  afterAll(async () => {
    await pgd?.close().catch(() => {});
    await shell?.close().catch(() => {});
    if (provider) {
      for (const n of spec.nodes)
        await provider.deleteMachine(spec, n).catch((e) => console.error(`deleteMachine ${n.name}: ${e}`));
      await provider.deleteClusterResources(spec).catch((e) => console.error(`deleteClusterResources: ${e}`));
    }
    if (process.env.PGOP_IT_VERBOSE) console.log(driverLog.join('\n'));
  });

  it(
    'a reconcile does not follow symlinks that postgres planted under every temp name and for ' +
      'postgresql.conf',
    async () => {
      // root-owned canaries in the node's private /root (postgres cannot even read them)
      const C1 = `/root/canary-${randomBytes(4).toString('hex')}`;
      const C2 = `/root/canary-${randomBytes(4).toString('hex')}`;
      await run(pg01, 'root', 'umask 022; for c in "$1" "$2"; do printf "canary\\n" > "$c"; done', C1, C2);

      // 1. Every name the write path could pick for a temp file beside a managed file (one per
      //    possible pid), a symlink to a root file; then make two managed files differ so that
      //    the next reconcile rewrites them.
      const plantLinks =
        'my ($t, $max, @f) = @ARGV; ' +
        'for my $f (@f) { for my $i (1 .. $max) { symlink($t, "$f.pgop-$i") or die "$f.pgop-$i: $!" } }';
      const planted = await run(
        pg01,
        'postgres',
        `max=$(cat /proc/sys/kernel/pid_max)
      perl -e '${plantLinks}' "$1" "$max" "$2/pg_hba.conf" "$2/conf.d/pgop.conf"
      echo "# changed by postgres" >> "$2/pg_hba.conf"
      echo "# changed by postgres" >> "$2/conf.d/pgop.conf"
      find "$2" -maxdepth 2 -type l -name '*.pgop-*' | wc -l`,
        C1,
        D,
      );
      expect(Number(planted.trim())).toBeGreaterThan(60_000);
      const r1 = await retry(() => pgd.ensureConfigured(spec, pg01)).then(
        () => null,
        (e: unknown) => e,
      );
      expect
        .soft(await canary(pg01, C1), 'the temp-name symlinks were followed')
        .toBe('root:root 644\ncanary\n');
      expect.soft(r1).toBeNull();
      // the managed files were rewritten (the planted lines are gone), owned by postgres
      expect
        .soft(await run(pg01, 'root', 'cat -- "$1/pg_hba.conf" "$1/conf.d/pgop.conf"', D))
        .not.toContain('changed by postgres');
      expect
        .soft(
          (await run(pg01, 'root', 'stat -c "%U:%G %a %F" -- "$1/pg_hba.conf" "$1/conf.d/pgop.conf"', D))
            .trim()
            .split('\n'),
        )
        .toEqual(['postgres:postgres 600 regular file', 'postgres:postgres 600 regular file']);
      await run(pg01, 'postgres', 'find "$1" -maxdepth 2 -type l -name "*.pgop-*" -delete', D);

      // 2. postgresql.conf itself a symlink to a root file (pgop appends its include line to it)
      await run(
        pg01,
        'postgres',
        'cp -p "$1/postgresql.conf" "$1/postgresql.conf.keep" && ln -sf "$2" "$1/postgresql.conf"',
        D,
        C2,
      );
      const r2 = await pgd.ensureConfigured(spec, pg01).then(
        () => null,
        (e: unknown) => e,
      );
      expect
        .soft(await canary(pg01, C2), 'postgresql.conf, a symlink, was followed')
        .toBe('root:root 644\ncanary\n');
      if (r2) expect.soft(r2).toBeInstanceOf(PgopError);
      await run(pg01, 'postgres', 'mv -f "$1/postgresql.conf.keep" "$1/postgresql.conf"', D);
      await retry(() => pgd.ensureConfigured(spec, pg01));
      // postgres still answers with the rewritten files
      expect((await pgd.probe(spec, pg01)).postgres).toMatchObject({ running: true, inRecovery: false });
    },
    180_000,
  );

  it('install refuses to hand a system directory, or a symlink postgres planted, to postgres', async () => {
    // /etc/pgpool2 is root's and private to each lab node (a stand-in for /etc or /usr/local/bin)
    const before = await run(pg01, 'root', 'stat -c "%U:%G %a" /etc/pgpool2');
    expect(before.trim()).toBe('root:root 755');
    // a log directory that postgres replaced with a symlink to a root directory
    await run(pg01, 'postgres', 'ln -sfn /etc/pgpool2 /u02/logs');
    const viaLink = { ...spec, postgres: { ...spec.postgres, logDir: '/u02/logs' } };
    await expect(pgd.ensureInstalled(viaLink, pg01)).rejects.toMatchObject({ kind: 'terminal' });
    expect(await run(pg01, 'root', 'stat -c "%U:%G %a" /etc/pgpool2')).toBe(before);
    // an archive directory that is a system directory
    const system = { ...spec, postgres: { ...spec.postgres, archiveDir: '/etc/pgpool2' } };
    await expect(pgd.ensureInstalled(system, pg01)).rejects.toMatchObject({ kind: 'terminal' });
    expect(await run(pg01, 'root', 'stat -c "%U:%G %a" /etc/pgpool2')).toBe(before);
    await run(pg01, 'root', 'rm -f /u02/logs; chown root:root /etc/pgpool2; chmod 755 /etc/pgpool2');
    // the spec's own directories are still fine
    await retry(() => pgd.ensureInstalled(spec, pg01));
  }, 120_000);

  it('a standby data directory holding something else is refused, neither moved nor deleted', async () => {
    await run(pg02, 'postgres', 'mkdir -p /u02/other && echo precious > /u02/other/notes.txt');
    const other = { ...spec, postgres: { ...spec.postgres, dataDir: '/u02/other' } };
    const err = await pgd.ensureStandby(other, pg02, pg01).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ kind: 'terminal' });
    expect(String((err as Error).message)).toMatch(/not empty/);
    expect(
      await run(pg02, 'root', 'cat /u02/other/notes.txt; ls -d /u02/other.pgop-old-* 2>/dev/null || true'),
    ).toBe('precious\n');
    await run(pg02, 'postgres', 'rm -rf /u02/other');
  }, 60_000);

  it('a clone whose pg_basebackup was killed midway is detected and redone', async () => {
    // stop the standby, empty its data directory and clone by hand, slowly, killing
    // pg_basebackup with SIGKILL once the copy has begun (PG_VERSION there, pg_control not yet)
    const slowClone =
      'PGPASSFILE=/u01/pg15/pgop-replication.pgpass "$2/pg_basebackup" ' +
      '-D "$1" -h "$3" -U replicator -X stream -c fast -w --max-rate=32k';
    const out = await run(
      pg02,
      'postgres',
      `"$2/pg_ctl" -D "$1" -m fast -w -t 30 stop >/dev/null
      find "$1" -mindepth 1 -delete
      ${slowClone} </dev/null >/dev/null 2>&1 &
      pid=$!
      i=0; while [ ! -f "$1/PG_VERSION" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
      # -X stream forks a WAL streamer that outlives a SIGKILL of its parent: that child too
      kill -9 $pid $(cat /proc/$pid/task/*/children 2>/dev/null)
      wait $pid 2>/dev/null
      ls "$1/PG_VERSION" "$1/global/pg_control" 2>&1 || true`,
      D,
      B,
      pg01.address,
    );
    expect(out).toMatch(/PG_VERSION/);
    expect(out).toMatch(/global\/pg_control'?: No such file/);
    // the SSH look says: no database cluster there (so the planner clones, not starts it)
    const p = await pgd.probe(spec, pg02);
    expect(p.postgres).toMatchObject({ running: false, initialized: false });
    await expectClonedStandby();
    expect(driverLog.some((l) => l.startsWith('cloned') && l.includes('"node":"pg02"'))).toBe(true);
  }, 180_000);

  it(
    'a clone moves another cluster aside and keeps it; ' + 'only older copies of this cluster are removed',
    async () => {
      await run(
        pg02,
        'postgres',
        `"$2/pg_ctl" -D "$1" -m fast -w -t 30 stop >/dev/null
      cp -a "$1" "$1.pgop-old-20000101000000"
      "$2/initdb" -D "$1.pgop-old-20000102000000" -A peer >/dev/null
      find "$1" -mindepth 1 -delete
      "$2/initdb" -D "$1" -A peer >/dev/null`,
        D,
        B,
      );
      await expectClonedStandby();
      const aside = (await run(pg02, 'root', 'ls -d "$1".pgop-old-*', D)).trim().split('\n');
      // the copy of this cluster is gone, the other cluster's old copy is kept, and so is the
      // other cluster that was in the data directory (moved aside now)
      expect(aside).not.toContain(`${D}.pgop-old-20000101000000`);
      expect(aside).toContain(`${D}.pgop-old-20000102000000`);
      expect(aside).toHaveLength(2);
      expect(driverLog.some((l) => l.startsWith('WARN keeping /u01/pg15/data.pgop-old-20000102000000'))).toBe(
        true,
      );
    },
    180_000,
  );
});
