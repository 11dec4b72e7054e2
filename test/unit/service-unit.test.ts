// `pgop service install`: the systemd unit for `pgop serve`, checked by systemd itself.

import { beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureBuilt, pgop, root, tmp } from '../helpers/pgop-cli.js';
import { renderUnit } from '../../src/cli/commands/service.js';

beforeAll(ensureBuilt);

const hasSystemdAnalyze = !spawnSync('systemd-analyze', ['--version']).error;
const verify = (unit: string) => spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });

describe('the pgop.service unit', () => {
  it('restarts always and starts serve with absolute node, bin and store paths', () => {
    const unit = renderUnit({
      db: '/var/lib/pgop/pgop.db',
      node: '/usr/bin/node',
      bin: '/usr/lib/node_modules/pgop/bin/pgop',
    });
    expect(unit).toContain(
      '\nExecStart=/usr/bin/node /usr/lib/node_modules/pgop/bin/pgop serve --db /var/lib/pgop/pgop.db\n',
    );
    expect(unit).toContain('\nRestart=always\n');
    expect(unit).toContain('\nKillMode=mixed\n');
    expect(unit).toContain('\nNoNewPrivileges=yes\n');
    // these would give serve a mount namespace of its own, hiding the lab's /run/netns mounts
    expect(unit).not.toMatch(/^(PrivateTmp|ProtectSystem|ProtectHome|RestrictNamespaces)=/m);
  });

  it('quotes a path systemd would otherwise split or expand', () => {
    expect(renderUnit({ db: '/srv/my pgop/%h$x.db', node: '/usr/bin/node', bin: '/b/pgop' })).toContain(
      ' --db "/srv/my pgop/%%h$$x.db"\n',
    );
  });

  it('pgop service install writes it (absolute --db) and says how to enable it', () => {
    const dir = tmp();
    const r = pgop(join(dir, 'ignored.db'), [
      'service',
      'install',
      '--unit-dir',
      dir,
      '--no-reload',
      '--db',
      'rel/pgop.db',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('systemctl enable --now pgop.service');
    const unit = readFileSync(join(dir, 'pgop.service'), 'utf8');
    expect(unit).toMatch(
      new RegExp(
        `^ExecStart=\\S+ ${join(root, 'bin/pgop')} serve --db ${join(process.cwd(), 'rel/pgop.db')}$`,
        'm',
      ),
    );
    expect(pgop(join(dir, 'x.db'), ['service', 'show']).stdout).toContain('Restart=always');
  });

  it.skipIf(!hasSystemdAnalyze)(
    'passes systemd-analyze verify (which does fail a broken unit; skipped without systemd-analyze)',
    () => {
      const dir = tmp();
      expect(pgop(join(dir, 'x.db'), ['service', 'install', '--unit-dir', dir, '--no-reload']).code).toBe(0);
      const ok = verify(join(dir, 'pgop.service'));
      expect(ok.status, ok.stderr).toBe(0);
      expect(ok.stderr).not.toMatch(/pgop\.service:/);
      const broken = join(dir, 'broken', 'pgop.service');
      spawnSync('mkdir', ['-p', join(dir, 'broken')]);
      writeFileSync(
        broken,
        readFileSync(join(dir, 'pgop.service'), 'utf8').replace(
          /^ExecStart=\S+/m,
          'ExecStart=/nonexistent/node',
        ),
      );
      expect(verify(broken).status).not.toBe(0);
    },
  );
});
