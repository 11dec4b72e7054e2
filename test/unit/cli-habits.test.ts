// Issue 18's CLI habits, each as a user meets it through the compiled bin/pgop.

import { beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { bin, ensureBuilt, pgop, root, simSpec, tmp } from '../helpers/pgop-cli.js';
import { tempDir } from '../helpers/temp.js';
import { parseDuration } from '../../src/cli/duration.js';
import { pinChildLocale, userLocaleEnv } from '../../src/cli/child-locale.js';
import { Store, processIsAlive } from '../../src/store/store.js';

beforeAll(ensureBuilt);

const simText = readFileSync(simSpec, 'utf8');
const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;

/** A store with the sim spec applied and converged once (nodes exist). */
function convergedDb(): string {
  const db = join(tmp(), 'pgop.db');
  expect(pgop(db, ['apply', '-f', simSpec]).code).toBe(0);
  const serve = pgop(db, ['serve', '--until-converged', '--timeout', '60s']);
  expect(serve.code, serve.stderr).toBe(0);
  return db;
}

describe('pgop --version', () => {
  it('prints the package version and exits 0', () => {
    expect(pgop(join(tmp(), 'pgop.db'), ['--version'])).toMatchObject({ code: 0, stdout: `${version}\n` });
  });
});

describe('durations', () => {
  it('accept seconds bare or with a unit, and ms, m, h', () => {
    expect(parseDuration('90')).toBe(90_000);
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('5m')).toBe(300_000);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('1.5s')).toBe(1_500);
  });

  it('reject garbage, zero and negatives', () => {
    for (const bad of ['', 'abc', '5x', '-5', '0', '0s', '1m30s', 'NaN', '1e3', 's', '5 m']) {
      expect(() => parseDuration(bad), bad).toThrow(/not a duration/);
    }
  });

  it('garbage exits 2 on every duration flag', () => {
    const db = join(tmp(), 'pgop.db');
    for (const args of [
      ['serve', '--timeout', '60x'],
      ['delete', 'cluster', 'sim', '--timeout', 'soon'],
      ['switchover', 'sim', '--timeout', '-1'],
      ['lab', 'up', '--timeout', '3 m'],
    ]) {
      const r = pgop(db, args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/not a duration/);
    }
  });

  it('serve --timeout 1s gives up after about a second (it was NaN: a busy loop that never ended)', () => {
    const db = join(tmp(), 'pgop.db');
    pgop(db, ['apply', '-f', simSpec]);
    const started = Date.now();
    // the sim never converges without its machines answering quickly enough in 1 s of passes
    const r = pgop(db, ['serve', '--timeout', '1s']);
    expect([0, 1]).toContain(r.code);
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  it('switchover and delete --timeout bound their wait for a serve that does not answer', () => {
    const db = join(tmp(), 'pgop.db');
    pgop(db, ['apply', '-f', simSpec]);
    // this process holds the serve lock and does nothing: the commands wait for it, up to --timeout
    const store = Store.open(db);
    expect(store.acquireServeLock(process.pid, hostname(), Date.now(), processIsAlive).ok).toBe(true);
    try {
      const started = Date.now();
      const sw = pgop(db, ['switchover', 'sim', '--to', 'pg02', '--timeout', '300ms']);
      expect(sw.code, sw.stderr).toBe(3);
      expect(sw.stdout).toContain('switchover still in progress');
      const del = pgop(db, ['delete', 'cluster', 'sim', '--timeout', '0.3s']);
      expect(del.code, del.stderr).toBe(3);
      expect(del.stdout).toContain('not yet deleted');
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      store.releaseServeLock(process.pid);
      store.close();
    }
  });
});

describe('apply -f - (standard input)', () => {
  it('stores a spec read from stdin, and diff -f - compares one', () => {
    const db = join(tmp(), 'pgop.db');
    expect(pgop(db, ['apply', '-f', '-'], { input: simText })).toMatchObject({
      code: 0,
      stdout: 'cluster/sim created (generation 1)\n',
    });
    expect(pgop(db, ['diff', '-f', '-'], { input: simText }).code).toBe(0);
    expect(pgop(db, ['apply', '--dry-run', '-f', '-'], { input: simText }).stdout).toBe(
      'cluster/sim unchanged (dry run)\n',
    );
  });

  it('names <stdin> with line, column and field in its errors', () => {
    const db = join(tmp(), 'pgop.db');
    const bad = simText.replace(/(\n\s+)address: 10\.0\.0\.12/, '$1adress: 10.0.0.12');
    const r = pgop(db, ['apply', '-f', '-'], { input: bad });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/<stdin>:\d+:\d+: spec\.nodes\[1\]\.adress: unknown field/);
  });
});

describe('get NAME..., usage errors and missing things', () => {
  let db: string;
  beforeAll(() => {
    db = convergedDb();
  }, 90_000);

  it('get nodes NAME... lists only those nodes', () => {
    const r = pgop(db, ['get', 'nodes', 'pg03', 'pg01', '-o', 'json']);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout).items as { name: string }[]).map((n) => n.name).sort()).toEqual([
      'pg01',
      'pg03',
    ]);
    expect(pgop(db, ['get', 'clusters', 'sim', '-o', 'json']).stdout).toContain('"name": "sim"');
  });

  it('a name that matches nothing is NotFound (exit 1), the others still print', () => {
    const r = pgop(db, ['get', 'nodes', 'pg01', 'pg09']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/\bpg01\b/);
    expect(r.stderr).toContain('node "pg09" not found');
  });

  it('usage mistakes exit 2 everywhere', () => {
    for (const args of [
      ['get', 'pods'],
      ['describe', 'pods', 'x'],
      ['delete', 'node', 'pg01'],
      ['get', 'events', 'pg01'],
      ['get'],
      ['get', 'nodes', '--frob'],
      ['switchover'],
      ['completion', 'fish'],
      ['lab', 'fault', 'pg01', 'frob'],
    ]) {
      expect(pgop(db, args).code, args.join(' ')).toBe(2);
    }
  });

  it("things that do not exist exit 1 (kubectl's NotFound), distinct from usage", () => {
    for (const args of [
      ['describe', 'cluster', 'nope'],
      ['describe', 'node', 'pg09'],
      ['get', 'nodes', '--cluster', 'nope'],
      ['switchover', 'nope'],
      ['switchover', 'sim', '--to', 'pg09'],
      ['delete', 'cluster', 'nope'],
      ['host-key', 'list', '--cluster', 'nope'],
      ['host-key', 'forget', 'nope', 'pg01'],
      ['host-key', 'forget', 'sim', 'pg09'],
    ]) {
      const r = pgop(db, args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(/no such|no cluster named/);
      expect(r.stderr).not.toContain('Usage:');
    }
  });
});

describe('empty lists', () => {
  it('say "No resources found" on stderr and exit 0, as kubectl; json still prints the empty list', () => {
    const db = join(tmp(), 'pgop.db');
    expect(pgop(db, ['get', 'clusters'])).toMatchObject({
      code: 0,
      stdout: '',
      stderr: 'No resources found\n',
    });
    expect(pgop(db, ['get', 'nodes', '-o', 'wide'])).toMatchObject({
      code: 0,
      stdout: '',
      stderr: 'No resources found\n',
    });
    const json = pgop(db, ['get', 'nodes', '-o', 'json']);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ kind: 'nodes', items: [] });
  });
});

/** Run `pgop get ... -w`, collect its stdout for `ms`, optionally do something half way. */
async function watchFor(db: string, args: string[], ms: number, midway?: () => void): Promise<string> {
  const child = spawn(process.execPath, [bin, '--db', db, 'get', ...args, '-w'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PGOP_DB: '' },
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise((r) => setTimeout(r, ms / 2));
  midway?.();
  await new Promise((r) => setTimeout(r, ms / 2));
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
  return out;
}

describe('get -w', () => {
  let db: string;
  beforeAll(() => {
    db = convergedDb();
  }, 90_000);
  const changedSpec = () => {
    const file = join(tmp(), 'changed.yaml');
    writeFileSync(file, simText.replace('address: 10.0.0.11', 'address: 10.0.0.11\n      memoryMiB: 4096'));
    return file;
  };

  it('table: does not redraw while nothing changes (the AGE column ticking is no change)', async () => {
    const out = await watchFor(db, ['nodes'], 3_500);
    expect(out.match(/^CLUSTER\s+NAME/gm)).toHaveLength(1);
  });

  it('table: redraws when something changed', async () => {
    const file = changedSpec();
    const out = await watchFor(db, ['clusters'], 4_000, () =>
      expect(pgop(db, ['apply', '-f', file]).code).toBe(0),
    );
    expect(out.match(/^NAME\s+GEN/gm)).toHaveLength(2);
  });

  it('-o json: one JSON object per line, a line for each item that changed', async () => {
    const wantedGen = JSON.parse(pgop(db, ['get', 'clusters', '-o', 'json']).stdout).items[0].generation + 1;
    const file = join(tmp(), 'again.yaml');
    writeFileSync(file, simText.replace('address: 10.0.0.12', 'address: 10.0.0.12\n      memoryMiB: 2048'));
    const out = await watchFor(db, ['clusters', '-o', 'json'], 4_000, () =>
      expect(pgop(db, ['apply', '-f', file]).code).toBe(0),
    );
    const lines = out.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    const items = lines.map((l) => JSON.parse(l) as { name: string; generation: number });
    expect(items.map((i) => i.name)).toEqual(['sim', 'sim']);
    expect(items[1]!.generation).toBe(wantedGen);
  });
});

describe('a reader that goes away (pgop get -w | head -1)', () => {
  it('ends pgop quietly with exit 0', async () => {
    const db = join(tmp(), 'pgop.db');
    pgop(db, ['apply', '-f', simSpec]);
    const child = spawn(process.execPath, [bin, '--db', db, 'get', 'clusters', '-w', '-o', 'json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PGOP_DB: '' },
    });
    child.stdout.destroy(); // before pgop's first write
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise((r) => child.once('exit', r));
    expect(code, stderr).toBe(0);
    expect(stderr).toBe('');
  });
});

describe('PGOP_LOG_LEVEL', () => {
  it('debug logs the debug lines; the default level does not', () => {
    const db = join(tmp(), 'pgop.db');
    pgop(db, ['apply', '-f', simSpec]);
    const debug = pgop(db, ['serve', '--until-converged', '--timeout', '60'], {
      env: { PGOP_LOG_LEVEL: 'debug' },
    });
    expect(debug.code, debug.stderr).toBe(0);
    const levels = (s: string) =>
      s
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { level: number; msg: string });
    expect(levels(debug.stdout)).toContainEqual(expect.objectContaining({ level: 20, msg: 'serve options' }));
    const info = pgop(db, ['serve', '--until-converged', '--timeout', '60'], { env: { PGOP_LOG_LEVEL: '' } });
    expect(levels(info.stdout).filter((l) => l.level < 30)).toEqual([]);
  });
});

describe('child processes run in the C locale', () => {
  it("pinChildLocale sets LC_ALL=C and remembers the user's locale for interactive children", () => {
    const env: NodeJS.ProcessEnv = { LC_ALL: 'de_DE.UTF-8', LANG: 'de_DE.UTF-8' };
    pinChildLocale(env);
    expect(env.LC_ALL).toBe('C');
    // pgop re-running itself (the lab hub) keeps the first value
    pinChildLocale(env);
    expect(userLocaleEnv(env)).toEqual({ LC_ALL: 'de_DE.UTF-8', LANG: 'de_DE.UTF-8' });
    const unset: NodeJS.ProcessEnv = { LANG: 'fr_FR.UTF-8' };
    pinChildLocale(unset);
    expect(userLocaleEnv(unset)).toEqual({ LANG: 'fr_FR.UTF-8' });
  });

  it('every child of the CLI inherits LC_ALL=C', () => {
    const script = `const { main } = await import(${JSON.stringify(join(root, 'dist/src/cli/main.js'))});
      await main(['node', 'pgop', '--version']);
      const { execFileSync } = await import('node:child_process');
      const seen = execFileSync('sh', ['-c', 'printf %s "$LC_ALL"'], { encoding: 'utf8' });
      process.stdout.write('child:' + seen);`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      env: { ...process.env, LC_ALL: 'de_DE.UTF-8', PGOP_USER_LC_ALL: undefined },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('child:C');
  });
});

describe('pgop completion', () => {
  // bash runs the script as a user's shell would: `pgop` found on PATH
  const pathDir = tempDir('pgop-completion');
  writeFileSync(
    join(pathDir, 'pgop'),
    `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(bin)} "$@"\n`,
  );
  chmodSync(join(pathDir, 'pgop'), 0o755);
  const script = join(pathDir, 'pgop.bash');
  const complete = (line: string): string[] => {
    const words = line.split(' ');
    const compWords = words.map((w) => JSON.stringify(w)).join(' ');
    const sh = `source ${script}; COMP_WORDS=(${compWords}); COMP_CWORD=${words.length - 1}; _pgop; \
      printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = spawnSync('bash', ['-c', sh], {
      encoding: 'utf8',
      env: { ...process.env, PATH: `${pathDir}:${process.env.PATH}` },
    });
    expect(r.status, r.stderr).toBe(0);
    return r.stdout.split('\n').filter(Boolean);
  };

  beforeAll(() => {
    const r = pgop(join(tmp(), 'pgop.db'), ['completion', 'bash']);
    expect(r.code).toBe(0);
    writeFileSync(script, r.stdout);
  });

  it('completes commands (hidden ones not), subcommands and resource kinds', () => {
    expect(complete('pgop ge')).toEqual(['get']);
    expect(complete('pgop s').sort()).toEqual(['serve', 'service', 'switchover']);
    expect(complete('pgop __')).toEqual([]);
    expect(complete('pgop get ').sort()).toEqual([
      'backup',
      'backups',
      'cluster',
      'clusters',
      'event',
      'events',
      'job',
      'jobs',
      'node',
      'nodes',
    ]);
    expect(complete('pgop describe c')).toEqual(['cluster']);
    expect(complete('pgop delete ')).toEqual(['cluster']);
    expect(complete('pgop service ').sort()).toEqual(['help', 'install', 'show']);
    expect(complete('pgop completion ').sort()).toEqual(['bash', 'zsh']);
    expect(complete('pgop lab fault pg01 ').sort()).toEqual([
      'hang',
      'heal',
      'kill',
      'kill-pgpool',
      'partition',
      'resume',
      'start',
      'stop',
    ]);
  });

  it("completes flags, global ones too, and the choices of a flag's value", () => {
    expect(complete('pgop get nodes --o')).toEqual(['--output']);
    expect(complete('pgop get nodes -o ').sort()).toEqual(['json', 'table', 'wide', 'yaml']);
    expect(complete('pgop --db x.db get nodes -o j')).toEqual(['json']);
    const serve = complete('pgop serve --');
    expect(serve).toEqual(expect.arrayContaining(['--timeout', '--until-converged', '--db', '--help']));
    expect(complete('pgop switchover sim --t')).toEqual(['--to', '--timeout']);
    // a flag's free value (a file): nothing, so bash falls back to file names
    expect(complete('pgop apply -f ')).toEqual([]);
  });

  // the zsh script is the bash one's twin over the same `__complete`; here only its syntax
  const hasZsh = !spawnSync('zsh', ['--version']).error;
  it.skipIf(!hasZsh)('zsh: the script is valid zsh (skipped where zsh is not installed)', () => {
    const r = pgop(join(tmp(), 'pgop.db'), ['completion', 'zsh']);
    const check = spawnSync('zsh', ['-n'], { input: r.stdout, encoding: 'utf8' });
    expect(check.status, check.stderr).toBe(0);
  });
});
