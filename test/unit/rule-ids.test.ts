// Every rule id `pgop get events` can print is registered in RULE_IDS, and every registered id
// is written somewhere: by the planner's ordered rules, or by one of the few other writers
// (found by scanning src/ for `ruleId: '...'`). Derived ids (`<id>.failed`) come from
// failedRuleId() only.

import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { RULE_IDS, failedRuleId } from '../../src/plan/rule-ids.js';
import { NODE_RULES, RULES, STRAY_RULES } from '../../src/plan/rules.js';

const SRC = new URL('../../src/', import.meta.url).pathname;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

interface Written {
  id: string;
  where: string;
}

/** `ruleId: '<literal>'` anywhere in src, and `ruleId: <expression>` that is not a literal. */
function scan(): { literals: Written[]; computed: Written[] } {
  const literals: Written[] = [];
  const computed: Written[] = [];
  for (const file of sourceFiles(SRC)) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/\bruleId\??:\s*([^,;}\n)]+)/g)) {
      const value = m[1]!.trim();
      const where = `${relative(SRC, file)}:${text.slice(0, m.index).split('\n').length}`;
      const literal = /^['"]([^'"]*)['"]$/.exec(value);
      if (literal) literals.push({ id: literal[1]!, where });
      // a type, or an id passed along from a decision or a stored row
      else if (!/^(string|RuleId)$|\.ruleId$|\.rule_id$/.test(value)) computed.push({ id: value, where });
    }
  }
  return { literals, computed };
}

const ordered: string[] = [
  ...RULES.flatMap((s) => ('id' in s ? [s.id] : [])),
  ...NODE_RULES.map((r) => r.id),
  ...STRAY_RULES.map((r) => r.id),
];

describe('rule ids', () => {
  const { literals, computed } = scan();
  const registered = new Set(Object.keys(RULE_IDS));

  it('the scan finds the known writers outside the planner (the scan itself works)', () => {
    const ids = literals.map((l) => l.id);
    expect(ids).toEqual(expect.arrayContaining(['ssh.host-key-refused', 'standby.repoint']));
  });

  it('every id written in src/ is registered, and looks like family.name', () => {
    const unregistered = literals.filter((l) => !registered.has(l.id));
    expect(unregistered).toEqual([]);
    for (const id of registered) expect(id).toMatch(/^[a-z]+\.[a-z]+(-[a-z]+)*$/);
  });

  it('no id is computed on the way, except through failedRuleId', () => {
    expect(computed).toEqual([]);
    expect(failedRuleId('failover.promote')).toBe('failover.promote.failed');
  });

  it("every id the planner writes is in the rules' order (rules.ts)", () => {
    const inPlanner = literals.filter((l) => l.where.startsWith('plan/')).map((l) => l.id);
    expect(inPlanner.filter((id) => !ordered.includes(id))).toEqual([]);
  });

  it('every registered id is written somewhere: in the rules, or by another writer', () => {
    const written = new Set([...ordered, ...literals.map((l) => l.id)]);
    expect([...registered].filter((id) => !written.has(id))).toEqual([]);
  });
});
