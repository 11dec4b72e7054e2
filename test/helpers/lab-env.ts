// What the suites that drive the real lab share: whether they run in it, where the CLI is, and the
// spec's secret files. No vitest import: the benches compile and use this file too.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Root, inside the hub namespace that scripts/test-integration.sh made (it sets both variables). */
export const IN_LAB =
  process.getuid?.() === 0 && !!process.env.PGOP_LAB_PREFIX && !!process.env.PGOP_LAB_STATE;

// Works from test/helpers (vitest) and from dist-bench/test/helpers (bench): both are two levels deep.
const here = fileURLToPath(new URL('.', import.meta.url));
const repoGuess = join(here, '..', '..');
export const REPO = existsSync(join(repoGuess, 'package.json')) ? repoGuess : join(repoGuess, '..');
export const PGOP_BIN = join(REPO, 'bin', 'pgop');

/** The CLI against the store `db`, to its end. */
export function runPgop(db: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [PGOP_BIN, '--db', db, ...args], {
    encoding: 'utf8',
    timeout: 240_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `dir`/secrets/NAME for each secret (0600 in a 0700 dir), as the specs' `{file: ...}` name them. */
export function writeSecretFiles(dir: string, secrets: Record<string, string>): void {
  mkdirSync(join(dir, 'secrets'), { recursive: true, mode: 0o700 });
  for (const [k, v] of Object.entries(secrets))
    writeFileSync(join(dir, 'secrets', k), `${v}\n`, { mode: 0o600 });
}
