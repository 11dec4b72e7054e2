// Where a problem is and how it is said: JSON path -> YAML node -> file:line:column, one
// problem per path, and the phrases messages share.

import { isAlias, isMap, isScalar, isSeq, type Document } from 'yaml';
import type { SpecProblem } from '../errors.js';

export type Seg = string | number;

export class Reporter {
  readonly problems: SpecProblem[] = [];
  private readonly seen = new Set<string>();

  constructor(
    private readonly file: string,
    private readonly doc: Document,
    private readonly linePos: (offset: number) => { line: number; col: number },
  ) {}

  /** `at` overrides the node whose position is reported (default: the field itself);
   *  `atKey` points at the field's key rather than its value. */
  add(path: Seg[], message: string, opts: { at?: Seg[]; atKey?: boolean } = {}): void {
    const p = formatPath(path);
    // One problem per path: schema errors come first and are the more precise.
    if (this.seen.has(p)) return;
    this.seen.add(p);
    const offset = this.offsetOf(opts.at ?? path, opts.atKey ?? false);
    const { line, col } = this.linePos(offset);
    this.problems.push({ file: this.file, line, column: col, path: p, message });
  }

  sorted(): SpecProblem[] {
    return [...this.problems].sort((a, b) => a.line - b.line || a.column - b.column);
  }

  /** Offset of the YAML node at `path`; when the path does not exist in the document (a
   *  defaulted field), the deepest part that does, at its key. */
  private offsetOf(path: Seg[], atKey: boolean): number {
    let node: unknown = this.doc.contents;
    let keyPos: number | undefined;
    let found = true;
    for (const seg of path) {
      if (isAlias(node)) node = node.resolve(this.doc);
      if (isMap(node)) {
        const pair = node.items.find((it) => isScalar(it.key) && String(it.key.value) === String(seg));
        if (!pair) {
          found = false;
          break;
        }
        keyPos = rangeStart(pair.key);
        node = pair.value;
      } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
        keyPos = undefined;
        node = node.items[seg];
      } else {
        found = false;
        break;
      }
    }
    const valuePos = isEmptyScalar(node) ? undefined : rangeStart(node);
    if (!found || atKey) return keyPos ?? valuePos ?? 0;
    return valuePos ?? keyPos ?? 0;
  }
}

function rangeStart(n: unknown): number | undefined {
  const r = (n as { range?: [number, number, number] } | null | undefined)?.range;
  return r ? r[0] : undefined;
}

/** `key:` with nothing after it: its zero-width range sits at the end of the line. */
const isEmptyScalar = (n: unknown) => isScalar(n) && n.value === null && !n.source;

export function isEmptyDocument(d: Document): boolean {
  return d.contents === null || isEmptyScalar(d.contents);
}

export function pointerSegments(pointer: string): Seg[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => {
      const t = s.replace(/~1/g, '/').replace(/~0/g, '~');
      return /^(0|[1-9]\d*)$/.test(t) ? Number(t) : t;
    });
}

/** spec.nodes[1].address; keys that are not identifiers are quoted: parameters["a b"]. */
export function formatPath(segs: readonly Seg[]): string {
  let out = '';
  for (const s of segs) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(s)) out += out === '' ? s : `.${s}`;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out === '' ? '(root)' : out;
}

// ---------------------------------------------------------------------------------------------
// Message helpers

export function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'object') return 'object';
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v)}`;
  return `${typeof v} ${String(v)}`;
}

export function orList(items: string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} or ${items.at(-1)}`;
}

/** The known name within edit distance 2 of a misspelt one, if any. */
export function closest(name: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const k of known) {
    const d = editDistance(name.toLowerCase(), k.toLowerCase());
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
