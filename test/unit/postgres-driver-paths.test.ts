// The postgres driver treats spec paths as data: a path that is not plain never reaches a node
// script (terminal error first), and pg_ctl, which runs the postmaster through `sh -c`, is
// given no spec path on that line. A recording NodeShell stands in for SSH.

import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { parseSpecFile } from '../../src/spec/parse.js';
import type { ClusterSpec } from '../../src/spec/types.js';
import type { ExecOptions, ExecResult, HostRef, NodeShell } from '../../src/drivers/types.js';
import { SshPostgresDriver } from '../../src/drivers/postgres/driver.js';

// the lab spec as the seed had it: its archive script, no pgBackRest (whose passphrase file this
// test does not make)
const lab = (): ClusterSpec => {
  const { backup: _backup, ...spec } = parseSpecFile(join(__dirname, '../../specs/lab-3node.yaml')).spec;
  return { ...spec, postgres: { ...spec.postgres, archiveScript: true } };
};

class RecordingShell implements NodeShell {
  readonly calls: { argv: string[]; opts: ExecOptions }[] = [];
  constructor(private readonly answer: (argv: string[]) => ExecResult) {}
  async exec(_host: HostRef, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.calls.push({ argv, opts });
    return this.answer(argv);
  }
  async writeFile(): Promise<boolean> {
    throw new Error('not used');
  }
  async readFile(): Promise<string | null> {
    return null;
  }
  async close(): Promise<void> {}
}

const hostRef = (): HostRef => ({
  id: 'n',
  address: '127.0.0.1',
  port: 22,
  user: 'root',
  privateKeyPath: '/nonexistent',
});

describe('postgres driver: spec paths are data', () => {
  const hostile = [
    '/var/log/pg$(id>/tmp/pwned)',
    '/var/log/`id`',
    '/var/log/pg\n/x',
    '/var/log/a b',
    '/u01/../etc',
  ];

  for (const field of ['logDir', 'dataDir', 'archiveDir', 'backupDir'] as const) {
    it(`refuses a hostile postgres.${field} before any node script runs (terminal)`, async () => {
      for (const value of hostile) {
        const spec = lab();
        spec.postgres[field] = value;
        const shell = new RecordingShell(() => ({ code: 0, stdout: '', stderr: '' }));
        const d = new SshPostgresDriver({ shell, hostRef });
        await expect(
          d.ensureInstalled(spec, spec.nodes[0]!),
          `${field}=${JSON.stringify(value)}`,
        ).rejects.toMatchObject({ kind: 'terminal' });
        expect(shell.calls.filter((c) => c.argv.some((a) => a.includes(value)))).toEqual([]);
        await d.close();
      }
    });
  }

  it(
    'starts postgres with the data directory in PGDATA and its output redirected: pg_ctl gets neither -D ' +
      'nor -l',
    async () => {
      const spec = lab();
      // the node: initialised, postgres down; every other command succeeds
      const shell = new RecordingShell((argv) => ({
        code: 0,
        stdout: argv[2]?.includes('pgdata_kind') ? 'init=1 nonempty=1 standby=0 status=3 partial=0\n' : '',
        stderr: '',
      }));
      const d = new SshPostgresDriver({
        shell,
        hostRef,
        connect: () => ({ host: '127.0.0.1', port: 1, password: 'x' }),
      });
      // the SQL part cannot connect here
      await d.ensureConfigured(spec, spec.nodes[0]!).catch(() => undefined);
      const start = shell.calls.find((c) => c.argv[2]?.includes('pg_ctl') && c.argv[2].includes(' start'));
      expect(start, 'a pg_ctl start').toBeDefined();
      const script = start!.argv[2]!;
      const pgCtl = script.split('\n').find((l) => /pg_ctl"? .*start/.test(l))!;
      expect(pgCtl).not.toMatch(/ -D | -l /);
      expect(script).toContain('PGDATA="$d"; export PGDATA');
      expect(start!.opts.user).toBe('postgres');
      // the values travel as positional parameters only
      expect(start!.argv.slice(4)).toContain(spec.postgres.dataDir);
      expect(start!.argv.slice(4)).toContain(`${spec.postgres.logDir}/startup.log`);
      await d.close();
    },
  );
});
