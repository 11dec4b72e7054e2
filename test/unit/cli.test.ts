// The CLI as a user runs it: the compiled bin/pgop (scripts/test-all.sh builds first).

import { beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bin, ensureBuilt, pgop, root, simSpec, tmp } from '../helpers/pgop-cli.js';

beforeAll(ensureBuilt);

describe('pgop apply / diff', () => {
  it('creates, then reports unchanged, then configured with a new generation', () => {
    const dir = tmp();
    const db = join(dir, 'pgop.db');
    expect(pgop(db, ['apply', '-f', simSpec])).toMatchObject({
      code: 0,
      stdout: 'cluster/sim created (generation 1)\n',
    });
    expect(pgop(db, ['apply', '-f', simSpec])).toMatchObject({ code: 0, stdout: 'cluster/sim unchanged\n' });
    expect(pgop(db, ['diff', '-f', simSpec]).code).toBe(0);
    const changed = join(dir, 'changed.yaml');
    writeFileSync(
      changed,
      readFileSync(simSpec, 'utf8').replace(
        'address: 10.0.0.11',
        'address: 10.0.0.11\n      memoryMiB: 4096',
      ),
    );
    const diff = pgop(db, ['diff', '-f', changed]);
    expect(diff.code).toBe(1);
    expect(diff.stdout).toMatch(/~ spec\.nodes\[pg01\]\.memoryMiB: \d+ -> 4096/);
    expect(pgop(db, ['apply', '--dry-run', '-f', changed]).stdout).toBe('cluster/sim configured (dry run)\n');
    expect(pgop(db, ['apply', '-f', changed])).toMatchObject({
      code: 0,
      stdout: 'cluster/sim configured (generation 2)\n',
    });
  });

  const bad: [string, (s: string) => string, RegExp][] = [
    ['malformed YAML', (s) => s.replace('kind: Cluster', 'kind: [Cluster'), /bad\.yaml:\d+:\d+: /],
    [
      'an unknown field',
      (s) => s.replace(/(\n\s+)address: 10\.0\.0\.12/, '$1adress: 10.0.0.12'),
      /bad\.yaml:\d+:\d+: spec\.nodes\[1\]\.adress: unknown field/,
    ],
    [
      'a wrong type',
      (s) => s.replace('address: 10.0.0.11', 'address: 10.0.0.11\n      vcpus: two'),
      /bad\.yaml:\d+:\d+: spec\.nodes\[0\]\.vcpus: /,
    ],
    [
      'duplicate node names',
      (s) => s.replace('name: pg02', 'name: pg01'),
      /bad\.yaml:\d+:\d+: spec\.nodes\[1\]\.name: duplicate node name/,
    ],
    [
      'duplicate addresses',
      (s) => s.replace('10.0.0.12', '10.0.0.11'),
      /bad\.yaml:\d+:\d+: spec\.nodes\[1\]\.address: duplicate node address/,
    ],
    [
      'a sync quorum larger than the standbys',
      (s) => s.replace(/mode: async/, 'mode: sync\n    syncQuorum: 3'),
      /bad\.yaml:\d+:\d+: spec\.replication\.syncQuorum: /,
    ],
  ];
  for (const [what, mutate, expected] of bad) {
    it(`rejects ${what} with exit 2, file:line and the field, and leaves the store unchanged`, () => {
      const dir = tmp();
      const db = join(dir, 'pgop.db');
      pgop(db, ['apply', '-f', simSpec]);
      const before = readFileSync(db);
      const file = join(dir, 'bad.yaml');
      const text = mutate(readFileSync(simSpec, 'utf8'));
      expect(text).not.toBe(readFileSync(simSpec, 'utf8'));
      writeFileSync(file, text.replace('name: sim', 'name: sim'));
      const r = pgop(db, ['apply', '-f', file]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(expected);
      expect(r.stdout).toBe('');
      expect(readFileSync(db).equals(before)).toBe(true);
      expect(pgop(db, ['get', 'clusters', '-o', 'json']).stdout).toContain('"generation": 1');
    });
  }
});

describe('pgop serve + get on the simulated provider', () => {
  it('converges the sim spec; get shows one primary and two standbys; table fits 100 columns', () => {
    const db = join(tmp(), 'pgop.db');
    expect(pgop(db, ['apply', '-f', simSpec]).code).toBe(0);
    const serve = pgop(db, ['serve', '--until-converged', '--timeout', '60']);
    expect(serve.code, serve.stderr).toBe(0);
    const json = JSON.parse(pgop(db, ['get', 'nodes', '-o', 'json']).stdout);
    expect(json.items).toHaveLength(3);
    for (const k of [
      'cluster',
      'name',
      'state',
      'role',
      'goal',
      'address',
      'timeline',
      'lsn',
      'lag_bytes',
      'last_transition',
      'message',
    ]) {
      expect(json.items[0]).toHaveProperty(k);
    }
    expect(json.items.filter((n: { role: string }) => n.role === 'primary')).toHaveLength(1);
    expect(
      json.items.filter(
        (n: { role: string; state: string }) => n.role === 'standby' && n.state === 'standby',
      ),
    ).toHaveLength(2);
    const clusters = JSON.parse(pgop(db, ['get', 'clusters', '-o', 'json']).stdout);
    expect(clusters.items[0]).toMatchObject({
      name: 'sim',
      generation: 1,
      phase: 'Healthy',
      primary: 'pg01',
    });
    expect(clusters.items[0].endpoint).toMatch(/:\d+$/);
    const table = pgop(db, ['get', 'nodes']).stdout;
    expect(table.split('\n')[0]).toMatch(/^CLUSTER\s+NAME\s+STATE\s+ROLE/);
    for (const line of table.split('\n')) expect(line.length).toBeLessThanOrEqual(100);
    const events = pgop(db, ['get', 'events', '--cluster', 'sim']).stdout;
    expect(events).toContain('bootstrap.init-primary');
    expect(pgop(db, ['get', 'nodes', '-o', 'yaml']).stdout).toMatch(/^kind: nodes/);
    expect(pgop(db, ['describe', 'node', 'pg02']).stdout).toContain('observation:');
    expect(pgop(db, ['get', 'frobs']).code).toBe(2); // an unknown kind is a usage error (issue 18)
    // the bring-up's long steps ran as jobs: each recorded with its kind, node, rule and outcome
    const jobs = JSON.parse(pgop(db, ['get', 'jobs', '--cluster', 'sim', '-o', 'json']).stdout);
    expect(jobs.kind).toBe('jobs');
    const kinds = jobs.items.map((j: { node: string; kind: string }) => `${j.node} ${j.kind}`).sort();
    expect(kinds).toEqual([
      'pg01 initPrimary',
      'pg01 installPostgres',
      'pg01 provisionVm',
      'pg02 cloneStandby',
      'pg02 installPostgres',
      'pg02 provisionVm',
      'pg03 cloneStandby',
      'pg03 installPostgres',
      'pg03 provisionVm',
    ]);
    expect(jobs.items.every((j: { state: string }) => j.state === 'succeeded')).toBe(true);
    expect(jobs.items[0]).toMatchObject({
      cluster: 'sim',
      rule: expect.any(String),
      deadline: expect.any(String),
    });
    const jobTable = pgop(db, ['get', 'jobs']).stdout.split('\n');
    expect(jobTable[0]).toMatch(/^ID\s+CLUSTER\s+NODE\s+KIND\s+STATE\s+AGE\s+PROGRESS\s+DEADLINE/);
    expect(jobTable.filter((l) => /cloneStandby\s+succeeded/.test(l))).toHaveLength(2);
    expect(pgop(db, ['describe', 'node', 'pg02']).stdout).toMatch(/^job: null$/m);
  });

  it('switchover hands the primary role over, and delete tears the cluster down', () => {
    const db = join(tmp(), 'pgop.db');
    pgop(db, ['apply', '-f', simSpec]);
    // sim worlds live in the serving process: switchover and delete drive the loop themselves
    const r = pgop(db, ['switchover', 'sim', '--to', 'pg02']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/switched over: .* -> pg02/);
    const d = pgop(db, ['delete', 'cluster', 'sim']);
    expect(d.code, d.stderr).toBe(0);
    expect(JSON.parse(pgop(db, ['get', 'clusters', '-o', 'json']).stdout).items).toEqual([]);
    // created again under the same name: its own event history, the old one on request (issue 19)
    const rules = (args: string[]) =>
      (
        JSON.parse(pgop(db, ['get', 'events', '--cluster', 'sim', '-o', 'json', ...args]).stdout).items as {
          rule: string;
        }[]
      ).map((e) => e.rule);
    expect(rules([])).toContain('delete.resources');
    pgop(db, ['apply', '-f', simSpec]);
    expect(rules([])).toEqual([]);
    expect(rules(['--all-incarnations'])).toEqual(
      expect.arrayContaining(['bootstrap.init-primary', 'delete.resources']),
    );
  });

  it('serve exits within 2 s of SIGTERM in the middle of its work, and releases its lock', async () => {
    const db = join(tmp(), 'pgop.db');
    pgop(db, ['apply', '-f', simSpec]);
    const serve = spawn(process.execPath, [bin, '--db', db, 'serve'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => serve.once('exit', (code) => resolve(code)));
    // stopped while it brings the cluster up: passes and jobs in flight
    await new Promise<void>((resolve) =>
      serve.stdout.on('data', (d: Buffer) => /job started/.test(d.toString()) && resolve()),
    );
    const t0 = performance.now();
    serve.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(performance.now() - t0).toBeLessThanOrEqual(2_000);
    // the next serve takes the lock at once and finishes the bring-up (jobs interrupted are redone)
    const next = pgop(db, ['serve', '--until-converged', '--timeout', '60']);
    expect(next.code, next.stderr).toBe(0);
  });

  it('refuses a second serve on the same store, naming the holder', async () => {
    const db = join(tmp(), 'pgop.db');
    pgop(db, ['apply', '-f', simSpec]);
    const first = spawn(process.execPath, [bin, '--db', db, 'serve'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      await new Promise<void>((resolve) => first.stdout.once('data', () => resolve()));
      const second = pgop(db, ['serve', '--until-converged', '--timeout', '5']);
      expect(second.code).toBe(5);
      expect(second.stderr).toContain(`pid ${first.pid}`);
    } finally {
      const exited = new Promise<number | null>((resolve) => first.once('exit', (code) => resolve(code)));
      first.kill('SIGTERM');
      // SIGTERM finishes the current step and exits cleanly
      expect(await exited).toBe(0);
    }
  });

  it(
    "the real drivers load under Node's own ESM loader (vitest's CommonJS interop would hide a bad named " +
      'import)',
    () => {
      for (const m of [
        'src/drivers/lab/world.js',
        'src/drivers/libvirt/world.js',
        'src/cli/commands/host-key.js',
      ]) {
        const r = spawnSync(
          process.execPath,
          ['--input-type=module', '-e', `await import(${JSON.stringify(join(root, 'dist', m))})`],
          { encoding: 'utf8' },
        );
        expect(r.status, `${m}: ${r.stderr}`).toBe(0);
      }
      expect(pgop(join(tmp(), 'pgop.db'), ['host-key', 'list'])).toMatchObject({
        code: 0,
        stdout: 'no host keys pinned\n',
      });
    },
  );

  it('creates the store with owner-only permissions', () => {
    const db = join(tmp(), 'sub', 'pgop.db');
    pgop(db, ['apply', '-f', simSpec]);
    expect(statSync(db).mode & 0o777).toBe(0o600);
  });
});
