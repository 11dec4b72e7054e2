// Running the compiled CLI (bin/pgop) as a user does, for the CLI tests.

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './temp.js';

export const root = new URL('../../', import.meta.url).pathname;
export const bin = join(root, 'bin/pgop');
export const simSpec = join(root, 'specs/sim-3node.yaml');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function pgop(
  db: string,
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv } = {},
): CliResult {
  const env = { ...process.env, PGOP_DB: '', ...opts.env };
  const r = spawnSync(process.execPath, [bin, '--db', db, ...args], {
    encoding: 'utf8',
    env,
    input: opts.input ?? '',
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export const tmp = () => tempDir('pgop-cli');

/** For beforeAll: the CLI tests run the build (scripts/test-all.sh builds first). */
export function ensureBuilt(): void {
  if (!existsSync(join(root, 'dist/src/cli/main.js')))
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: root, stdio: 'inherit' });
}
