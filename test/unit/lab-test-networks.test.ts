// The lab test files run in parallel inside one hub namespace: two files on the same /24 would
// have two bridges routing it, and a host of one would answer (or not) for the other.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..');
const DIRS = ['integration', 'chaos'];

function networksByFile(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const dir of DIRS) {
    for (const f of readdirSync(join(ROOT, dir)).filter((n) => n.endsWith('.test.ts'))) {
      const text = readFileSync(join(ROOT, dir, f), 'utf8');
      const nets = [...text.matchAll(/network: '?(10\.\d+\.\d+)\.0\/24/g)].map((m) => m[1]!);
      out.set(`${dir}/${f}`, [...new Set(nets)]);
    }
  }
  return out;
}

describe('lab networks of the test files', () => {
  it('no two test files share a /24', () => {
    const owner = new Map<string, string>();
    const clashes: string[] = [];
    for (const [file, nets] of networksByFile()) {
      for (const net of nets) {
        const other = owner.get(net);
        if (other) clashes.push(`${net}.0/24: ${other} and ${file}`);
        else owner.set(net, file);
      }
    }
    expect(owner.size).toBeGreaterThan(5);
    expect(clashes).toEqual([]);
  });
});
