// Defence in depth (issue 13): the renderers treat spec values as data even when one got past
// the schema (a spec stored before it was tightened, a bug in a caller). Each case below is
// refused by the schema first; here the renderer is handed the value directly.

import { describe, expect, it } from 'vitest';
import { simSpec } from '../helpers/sim-spec.js';
import {
  renderArchiveScript,
  renderConf,
  renderHba,
  renderStandbyConf,
} from '../../src/drivers/postgres/config.js';
import { renderPgpoolConf, renderPoolPasswd } from '../../src/drivers/pgpool/config.js';
import { renderPoolXml, xmlEscape } from '../../src/drivers/libvirt/xml.js';
import type { ClusterSpec, HbaRule } from '../../src/spec/types.js';

const spec = (o: Partial<ClusterSpec['postgres']> = {}, name = 'sim'): ClusterSpec => {
  const s = simSpec();
  return { ...s, name, postgres: { ...s.postgres, ...o } };
};
const hba = (r: Partial<HbaRule>): ClusterSpec =>
  spec({
    hba: [
      { type: 'host', database: 'all', user: 'all', address: '10.0.0.0/24', method: 'scram-sha-256', ...r },
    ],
  });

describe('renderers refuse or quote values the schema would have refused', () => {
  it('archive.sh: archiveDir appears only in its quoted assignment, never in a comment line', () => {
    const dir = '/u02/archive\ntouch /tmp/pwned';
    const script = renderArchiveScript(spec({ archiveDir: dir }));
    expect(script).toContain(`ARCHIVE_DIR='/u02/archive\ntouch /tmp/pwned'\n`);
    // the only place the value's second line appears is inside that single-quoted word
    expect(script.split('\n').filter((l) => l.includes('touch /tmp/pwned'))).toEqual(["touch /tmp/pwned'"]);
    expect(script).toContain('# Copies WAL segment $1 to $ARCHIVE_DIR/$2.');
  });

  it('postgresql.conf: a __proto__ parameter, a newline or another control character in a value', () => {
    const withParam = (k: string, v: string) => spec({ parameters: Object.fromEntries([[k, v]]) });
    expect(() => renderConf(withParam('__proto__', 'x'))).toThrow(/invalid name/);
    expect(() => renderConf(withParam('work_mem', "4MB\nshared_preload_libraries = 'x'"))).toThrow(/newline/);
    expect(() => renderConf(withParam('work_mem', '4MB\u0085'))).toThrow(/control character/);
    expect(renderConf(withParam('log_line_prefix', "%m '$(id)' \\"))).toContain(
      `log_line_prefix = '%m ''$(id)'' \\\\'`,
    );
  });

  it('comments: a cluster or node name with a newline is refused, not written', () => {
    expect(() => renderConf(spec({}, 'a\nlisten_addresses = x'))).toThrow(/comment/);
    const s = spec();
    const evil = { ...s.nodes[1]!, name: 'pg02\nprimary_conninfo = x' };
    expect(() => renderStandbyConf(s, evil, s.nodes[0]!)).toThrow(/comment|control character/);
    expect(() => renderPgpoolConf({ ...s, name: 'a\nb' })).toThrow(/comment/);
  });

  it('pg_hba.conf: " and control characters refused, @file includes refused, other odd words quoted', () => {
    expect(() => renderHba(hba({ user: 'x"#' }))).toThrow(/pg_hba\.conf word/);
    expect(() => renderHba(hba({ user: 'x\ny' }))).toThrow(/pg_hba\.conf word/);
    expect(() => renderHba(hba({ database: '@/etc/passwd' }))).toThrow(/pg_hba\.conf word/);
    expect(
      renderHba(hba({ user: 'a b#c' }))
        .trimEnd()
        .split('\n')
        .at(-1),
    ).toBe('host\tall\t"a b#c"\t10.0.0.0/24\tscram-sha-256');
    expect(
      renderHba(hba({ user: '+admins,app' }))
        .trimEnd()
        .split('\n')
        .at(-1),
    ).toBe('host\tall\t+admins,app\t10.0.0.0/24\tscram-sha-256');
  });

  it('pgpool: values with control characters and pool_passwd names with them are refused', () => {
    expect(() => renderPgpoolConf(spec({ dataDir: '/u01/d\u0007' }))).toThrow(/control character/);
    expect(() => renderPoolPasswd([{ name: 'a\u0000', password: 'p' }], 'k')).toThrow(/pool_passwd/);
  });

  it('libvirt XML: markup is escaped, line breaks kept as references, NUL refused', () => {
    expect(renderPoolXml("x'/><evil a='", '/srv/p')).toContain('<name>x&apos;/&gt;&lt;evil a=&apos;</name>');
    expect(xmlEscape('a\tb\nc\rd')).toBe('a&#9;b&#10;c&#13;d');
    expect(() => xmlEscape('a\u0000b')).toThrow(/control character/);
  });
});
