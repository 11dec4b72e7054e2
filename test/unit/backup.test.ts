// Backups with pgBackRest: what the spec accepts, what pgop renders for the nodes and the
// repository's server (nothing a spec value can break out of), and when the planner starts the
// server and creates the stanza.

import { describe, expect, it } from 'vitest';
import { SpecError, type SpecProblem } from '../../src/errors.js';
import { parseSpecText } from '../../src/spec/parse.js';
import type { ClusterSpec } from '../../src/spec/types.js';
import {
  archiveCommand,
  renderNodeCipher,
  renderNodeConf,
  renderRepoConf,
} from '../../src/drivers/backup/config.js';
import { renderConf } from '../../src/drivers/postgres/config.js';
import { plan } from '../../src/plan/plan.js';
import { archiveItem } from '../../src/cli/output.js';
import { HASH, input, node, primaryPg } from '../helpers/plan-input.js';
import { labSpec } from '../helpers/lab-spec.js';

const SPEC = `apiVersion: pgop.dev/v1
kind: Cluster
metadata: {name: bk}
spec:
  provider: {type: lab, network: 10.87.0.0/24}
  postgres:
    superuserPassword: {file: /var/lib/pgop/secrets/bk/postgres}
    parameters: {archive_mode: "on"}
  nodes:
    - {name: pg1, address: 10.87.0.11}
    - {name: pg2, address: 10.87.0.12}
  replication: {password: {file: /var/lib/pgop/secrets/bk/replicator}}
  pgpool: {address: 10.87.0.10}
  backup:
    repo: {path: /var/lib/pgop/backup/bk}
    encryption: {passphrase: {file: /var/lib/pgop/secrets/bk/backup}}
`;

function problems(text: string): SpecProblem[] {
  try {
    parseSpecText(text, 'bk.yaml');
  } catch (err) {
    expect(err).toBeInstanceOf(SpecError);
    return (err as SpecError).problems;
  }
  throw new Error('expected a SpecError, the spec parsed');
}

const withBackup = (): ClusterSpec => ({
  ...labSpec({ name: 'bk', network: '10.87.0.0/24' }),
  backup: {
    repo: { path: '/var/lib/pgop/backup/bk', port: 8432, nodePort: 8433 },
    compression: 'zst',
    archiveTimeoutS: 60,
    schedule: {},
    retention: { full: 2 },
    processes: 1,
  },
});
const TLS = {
  cert: '/u01/pg15/pgop-server.crt',
  key: '/u01/pg15/pgop-server.key',
  ca: '/u01/pg15/pgop-ca.crt',
};

describe('spec.backup', () => {
  it('defaults: ports 8432/8433, zst, archive_timeout 60 s, keep 2 fulls, no schedule nor script', () => {
    const s = parseSpecText(SPEC, 'bk.yaml').spec;
    expect(s.backup).toEqual({
      repo: { path: '/var/lib/pgop/backup/bk', port: 8432, nodePort: 8433 },
      compression: 'zst',
      archiveTimeoutS: 60,
      schedule: {},
      retention: { full: 2 },
      processes: 1,
      encryption: { passphrase: { file: '/var/lib/pgop/secrets/bk/backup' } },
    });
    expect(s.postgres.archiveScript).toBe(false);
  });

  it('refuses what would take archiving away from pgBackRest, naming the line and field', () => {
    const text = SPEC.replace(
      '    parameters: {archive_mode: "on"}',
      '    archiveScript: true\n' +
        '    parameters: {archive_mode: always, archive_command: "cp %p /x", archive_timeout: 5}',
    );
    const got = problems(text).map((p) => `${p.line} ${p.path}`);
    expect(got).toEqual(
      expect.arrayContaining([
        '8 spec.postgres.archiveScript',
        '9 spec.postgres.parameters.archive_mode',
        '9 spec.postgres.parameters.archive_command',
        '9 spec.postgres.parameters.archive_timeout',
      ]),
    );
  });

  it('needs TLS, a real provider, and a repository path below an allowed root', () => {
    expect(problems(`${SPEC}  tls: {enabled: false}\n`).map((p) => p.path)).toContain('spec.tls.enabled');
    const sim = SPEC.replace('{type: lab, network: 10.87.0.0/24}', '{type: sim}');
    expect(problems(sim).map((p) => p.path)).toContain('spec.backup');
    const etc = SPEC.replace('/var/lib/pgop/backup/bk', '/etc/cron.d');
    expect(problems(etc).map((p) => p.path)).toContain('spec.backup.repo.path');
  });
});

describe('rendering', () => {
  it("archive_command: pgbackrest with the node's own configuration, every word quoted", () => {
    const spec = withBackup();
    expect(archiveCommand(spec)).toBe(
      "pgbackrest '--config=/u01/pg15/pgbackrest.conf' " +
        "'--config-include-path=/u01/pg15/pgbackrest/conf.d' '--stanza=bk' archive-push %p",
    );
    const conf = renderConf(spec);
    expect(conf).toContain('archive_mode = on');
    expect(conf).toContain('archive_timeout = 60');
    // postgresql.conf quoting doubles the single quotes of the shell words
    expect(conf).toContain(`archive_command = '${archiveCommand(spec).replace(/'/g, "''")}'`);
  });

  it("the nodes reach the repository's server on the gateway over TLS; the passphrase is elsewhere", () => {
    const spec = {
      ...withBackup(),
      backup: { ...withBackup().backup!, encryption: { passphrase: { env: 'X' } } },
    };
    const conf = renderNodeConf(spec, TLS, { port: 5432, socketDir: '/var/run/postgresql' });
    expect(conf).toContain('repo1-host=10.87.0.1\nrepo1-host-type=tls\nrepo1-host-port=8432\n');
    expect(conf).toContain('repo1-host-cert-file=/u01/pg15/pgop-server.crt\n');
    expect(conf).toContain('repo1-path=/var/lib/pgop/backup/bk\nrepo1-cipher-type=aes-256-cbc\n');
    expect(conf).toContain('[bk]\npg1-path=/u01/pg15/data\npg1-port=5432\n');
    expect(conf).not.toContain('cipher-pass');
    expect(renderNodeCipher('a-long-enough-passphrase')).toBe(
      '[global]\nrepo1-cipher-pass=a-long-enough-passphrase\n',
    );
    expect(() => renderNodeCipher('short')).toThrow(/16-1024 printable/);
    expect(() => renderNodeCipher('a passphrase with spaces in it')).toThrow(/without spaces/);
  });

  it('the server authorises each node certificate for the stanza, one line each', () => {
    const conf = renderRepoConf(withBackup(), {
      cert: '/s/server.crt',
      key: '/s/server.key',
      ca: '/s/ca.crt',
      logDir: '/s/log',
      lockDir: '/s/lock',
    });
    expect(conf).toContain('tls-server-address=10.87.0.1\ntls-server-port=8432\n');
    expect(conf).toContain('tls-server-auth=pg1=bk\ntls-server-auth=pg2=bk\n');
    expect(conf).not.toContain('repo1-path'); // the clients name it (pgBackRest's TLS protocol)
  });

  it('a value that could start a new line or section is refused, whatever the schema let through', () => {
    const spec = withBackup();
    const evil = {
      ...spec,
      backup: { ...spec.backup!, repo: { path: '/srv/x\n[global]\nrepo1-path=/etc', port: 1, nodePort: 2 } },
    };
    expect(() => renderNodeConf(evil, TLS, { port: 5432, socketDir: '/run' })).toThrow(/unsafe characters/);
    const node = { ...spec, nodes: [{ ...spec.nodes[0]!, name: 'pg1=other' }] };
    expect(() => renderRepoConf(node, { cert: 'a', key: 'b', ca: 'c', logDir: 'd', lockDir: 'e' })).toThrow(
      /unsafe characters/,
    );
  });
});

describe('planner', () => {
  const spec = { ...withBackup(), nodes: withBackup().nodes.map((n, i) => ({ ...n, name: `pg0${i + 1}` })) };
  const healthy = () => ({
    pg01: node('pg01', { postgres: primaryPg() }),
    pg02: node('pg02'),
  });
  const look = (
    backup: { server: 'running' | 'stopped' | 'outdated'; stanza: boolean },
    primaryHash = HASH,
  ) => {
    const nodes = healthy();
    nodes.pg01.postgres = primaryPg({ configHash: primaryHash });
    const i = input({ pg01: 'primary', pg02: 'standby' }, nodes, { spec });
    i.observation.backup = backup;
    i.observation.pool = null;
    return plan({ ...i, spec: { ...spec, pgpool: { ...spec.pgpool, enabled: false } } }).decision;
  };

  it("starts the repository's server when it is down or runs an older configuration", () => {
    expect(look({ server: 'stopped', stanza: false })).toMatchObject({
      ruleId: 'backup.repo-server',
      action: { type: 'ensureBackupRepo' },
    });
    expect(look({ server: 'outdated', stanza: true }).ruleId).toBe('backup.repo-server');
  });

  it('creates the stanza from the primary once it runs the configuration that archives there', () => {
    expect(look({ server: 'running', stanza: false })).toMatchObject({
      ruleId: 'backup.stanza',
      action: { type: 'createStanza', primary: 'pg01' },
    });
    expect(look({ server: 'running', stanza: false }, 'old').ruleId).not.toBe('backup.stanza');
    expect(look({ server: 'running', stanza: true }).ruleId).not.toMatch(/^backup\./);
  });
});

describe('archive health', () => {
  const stored = (primary: string | null) =>
    ({ spec: withBackup(), primary }) as unknown as Parameters<typeof archiveItem>[0];
  const obs = (archiver: object | undefined, backup = { server: 'running' as const, stanza: true }) =>
    ({
      cluster: 'bk',
      at: 0,
      pool: null,
      backup,
      nodes: { pg1: node('pg1', { postgres: primaryPg(archiver ? { archiver: archiver as never } : {}) }) },
    }) as Parameters<typeof archiveItem>[1];
  const a = (lastArchivedAt: number | null, lastFailedAt: number | null) => ({
    archivedCount: 3,
    lastArchivedWal: '000000010000000000000003',
    lastArchivedAt,
    failedCount: lastFailedAt ? 1 : 0,
    lastFailedWal: lastFailedAt ? '000000010000000000000004' : null,
    lastFailedAt,
  });

  it('ok, failing (the last attempt failed), waiting, or what the repository lacks', () => {
    expect(archiveItem(stored('pg1'), obs(a(2000, 1000))).state).toBe('ok');
    expect(archiveItem(stored('pg1'), obs(a(1000, 2000)))).toMatchObject({
      state: 'failing',
      last_failed_wal: '000000010000000000000004',
    });
    expect(archiveItem(stored('pg1'), obs(a(null, null))).state).toBe('waiting');
    expect(archiveItem(stored('pg1'), obs(a(2000, 0), { server: 'running', stanza: false })).state).toBe(
      'no-stanza',
    );
    expect(
      archiveItem(stored('pg1'), obs(undefined, { server: 'stopped', stanza: true } as never)).state,
    ).toBe('server-down');
    // a cluster made again under the same name finds the old system's stanza
    const foreign = obs(a(2000, 0), { server: 'running', stanza: true, stanzaSystemId: '2' } as never);
    foreign!.nodes.pg1!.postgres!.systemId = '1';
    expect(archiveItem(stored('pg1'), foreign).state).toBe('foreign-stanza');
  });

  it("names the schedule's next backup (none without a schedule) and the stanza's problem", () => {
    const now = Date.parse('2026-12-04T10:20:00Z');
    const scheduled = {
      spec: { ...withBackup(), backup: { ...withBackup().backup!, schedule: { incr: '0 * * * *' } } },
      primary: 'pg1',
    } as unknown as Parameters<typeof archiveItem>[0];
    const seen = obs(a(2000, 0), {
      server: 'running',
      stanza: true,
      stanzaProblem: 'no valid backups',
    } as never);
    // a full was started before: the next is the hourly incr
    const item = archiveItem(scheduled, seen, { full: now - 60_000 }, now);
    expect(item.next_backup).toEqual({ type: 'incr', at: '2026-12-04T11:00:00.000Z' });
    expect(item.stanza_problem).toBe('no valid backups');
    // none started yet: the first full at once
    expect(archiveItem(scheduled, seen, {}, now).next_backup).toEqual({
      type: 'full',
      at: new Date(now).toISOString(),
    });
    expect(archiveItem(stored('pg1'), seen, {}, now).next_backup).toBeNull();
  });
});
