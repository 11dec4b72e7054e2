// bench:get — wall time of `pgop get nodes` against a bare `node -e 0` measured in the same
// run (the baseline), over a store holding 100 converged simulated clusters. Target: <= 2x.

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const RUNS = Number(process.env.BENCH_RUNS ?? 25);
const bin = fileURLToPath(new URL('../../bin/pgop', import.meta.url));
const spec = fileURLToPath(new URL('../../specs/sim-3node.yaml', import.meta.url));

function time(cmd: string, args: string[], env: NodeJS.ProcessEnv): number {
  const t = performance.now();
  const r = spawnSync(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = performance.now() - t;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return ms;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const dir = mkdtempSync(join(tmpdir(), 'pgop-bench-get-'));
try {
  const env = { ...process.env, PGOP_DB: join(dir, 'pgop.db') };
  execFileSync(bin, ['apply', '-f', spec], { env, stdio: 'ignore' });
  execFileSync(bin, ['serve', '--until-converged', '--timeout', '60'], { env, stdio: 'ignore' });
  const bare: number[] = [];
  const get: number[] = [];
  const getJson: number[] = [];
  // Interleave so machine noise hits both alike.
  for (let i = 0; i < RUNS; i++) {
    bare.push(time(process.execPath, ['-e', '0'], env));
    get.push(time(process.execPath, [bin, 'get', 'nodes'], env));
    getJson.push(time(process.execPath, [bin, 'get', 'nodes', '-o', 'json'], env));
  }
  const b = median(bare),
    g = median(get),
    j = median(getJson);
  console.log(`bench:get  ${RUNS} runs each, medians`);
  console.log(`  node -e 0 (baseline)   ${b.toFixed(1)} ms`);
  console.log(`  pgop get nodes         ${g.toFixed(1)} ms   ${(g / b).toFixed(2)}x baseline`);
  console.log(`  pgop get nodes -o json ${j.toFixed(1)} ms   ${(j / b).toFixed(2)}x baseline`);
  console.log(`  target <= 2.00x: ${g / b <= 2 ? 'met' : `MISSED (${(g / b).toFixed(2)}x)`}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
