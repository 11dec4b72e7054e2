// YAML text -> validated, defaulted ClusterSpec. Every problem found is reported at once, in
// document order, with file:line:column and the field's path in the user's document. Here: YAML
// parsing and the order of the steps; schema-check.ts maps the JSON Schema's errors,
// semantics.ts adds what a schema cannot express, defaults.ts fills defaults, report.ts places
// each problem in the document, rules.ts holds the names, paths and URIs a spec may use.

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { LineCounter, parseAllDocuments, visit } from 'yaml';
import { SpecError, type SpecProblem } from '../errors.js';
import type { ClusterSpec } from './types.js';
import { Reporter, isEmptyDocument } from './report.js';
import { schemaProblem, validator } from './schema-check.js';
import { checkSemantics } from './semantics.js';
import { normalize } from './defaults.js';
import type { RawDoc } from './rules.js';

export interface ParsedSpec {
  spec: ClusterSpec;
  /** sha256 (hex) of canonicalJson(spec): equal specs hash equal whatever the key order. */
  hash: string;
  /** The YAML text as the user wrote it (stored with each spec generation). */
  source: string;
}

// ---------------------------------------------------------------------------------------------
// Public API

export interface ParseOptions {
  /** Also check what the spec names on this machine, as \`pgop apply\` does: the base image of a
   *  libvirt cluster whose hypervisor is local must exist. Off for pure parsing (tests, diff). */
  checkHost?: boolean;
}

export function parseSpecFile(path: string, opts: ParseOptions = {}): ParsedSpec {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EISDIR'
          ? 'is a directory'
          : code === 'EACCES'
            ? 'permission denied'
            : String(code ?? err);
    throw new SpecError([
      { file: path, line: 1, column: 1, path: '(file)', message: `cannot read spec: ${why}` },
    ]);
  }
  return parseSpecText(text, path, opts);
}

export function parseSpecText(text: string, file: string, opts: ParseOptions = {}): ParsedSpec {
  const lineCounter = new LineCounter();
  // prettyErrors off: we want the bare message; the position comes from the LineCounter.
  const docs = Array.from(parseAllDocuments(text, { lineCounter, prettyErrors: false }));
  const at = (offset: number) => lineCounter.linePos(offset);

  // Only the first syntax error: the parser's later ones are mostly consequences of it.
  const first = docs.flatMap((d) => d.errors).sort((a, b) => a.pos[0] - b.pos[0])[0];
  if (first) {
    const { line, col } = at(first.pos[0]);
    throw new SpecError([{ file, line, column: col, path: '(yaml)', message: first.message }]);
  }

  const real = docs.filter((d) => !isEmptyDocument(d));
  const doc = real[0];
  if (!doc) {
    throw new SpecError([
      { file, line: 1, column: 1, path: '(document)', message: 'empty document: expected a Cluster spec' },
    ]);
  }
  if (real.length > 1) {
    // Point at the `---` that starts the second cluster.
    const second = real[1]!;
    const { line, col } = at(second.range[0]);
    throw new SpecError([
      {
        file,
        line,
        column: col,
        path: '(document)',
        message: 'more than one YAML document: write one cluster per file',
      },
    ]);
  }

  // toJS() would throw on these without a position.
  const syntax: SpecProblem[] = [];
  visit(doc, {
    Alias(_, node) {
      if (!node.resolve(doc)) {
        const { line, col } = at(node.range?.[0] ?? 0);
        syntax.push({
          file,
          line,
          column: col,
          path: '(yaml)',
          message: `unknown alias *${node.source}: no anchor &${node.source} before it`,
        });
      }
    },
  });
  if (syntax.length > 0) throw new SpecError(syntax);

  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new SpecError([
      { file, line: 1, column: 1, path: '(yaml)', message: err instanceof Error ? err.message : String(err) },
    ]);
  }

  const report = new Reporter(file, doc, at);
  const validate = validator();
  if (!validate(raw)) {
    for (const e of validate.errors ?? []) schemaProblem(e, report);
  }
  // Semantic checks run even when the schema failed (they guard every access), so one run
  // lists everything; a path the schema already flagged is not reported twice.
  checkSemantics(raw, report, opts);
  if (report.problems.length > 0) throw new SpecError(report.sorted());

  const spec = normalize(raw as RawDoc);
  return { spec, hash: createHash('sha256').update(canonicalJson(spec)).digest('hex'), source: text };
}

/** JSON with object keys sorted at every level (arrays keep their order). */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value))
    return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const parts: string[] = [];
  for (const k of Object.keys(obj).sort()) {
    const v = obj[k];
    if (v === undefined || typeof v === 'function') continue;
    parts.push(`${JSON.stringify(k)}:${canonicalJson(v)}`);
  }
  return `{${parts.join(',')}}`;
}

export {
  HOST_PATH_ROOTS,
  LAB_POSTGRES_MOUNTS,
  LAB_PRIVATE_MOUNTS,
  LIBVIRT_URI_PARAMS,
  LIBVIRT_URI_SCHEMES,
  MANAGED_PARAMETERS,
  POSTGRES_DIR_PARENTS,
  POSTGRES_DIR_ROOTS,
  libvirtUriProblem,
  pathProblem,
} from './rules.js';
export { formatPath } from './report.js';
