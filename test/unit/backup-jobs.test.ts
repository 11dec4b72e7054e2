// Backups as jobs: what pgop reads of pgBackRest (`info --output=json`, a backup's console
// progress, the new label), the configuration `pgbackrest backup` runs with on the operator's
// host, when the planner starts or cancels a backup, and how `pgop get backups` shows them.

import { describe, expect, it } from 'vitest';
import { PgopError } from '../../src/errors.js';
import { BackupProgress, newBackupLabel, parseInfo } from '../../src/drivers/backup/info.js';
import {
  renderBackupConf,
  renderNodeConf,
  type BackupSource,
  type RepoPaths,
} from '../../src/drivers/backup/config.js';
import { plan } from '../../src/plan/plan.js';
import type { OperatorRequest, PlanInput } from '../../src/plan/types.js';
import type { BackupObservation, BackupRecord, ClusterObservation } from '../../src/observe/types.js';
import type { BackupSpec, ClusterSpec } from '../../src/spec/types.js';
import type { JobRecord } from '../../src/store/jobs.js';
import type { StoredCluster } from '../../src/store/types.js';
import { backupItems, renderBackups } from '../../src/cli/backups.js';
import { healthy3, input, node, primaryPg, states3 } from '../helpers/plan-input.js';
import { labSpec } from '../helpers/lab-spec.js';
import { simSpec } from '../helpers/sim-spec.js';

const SYSTEM_ID = '7715296041331670408'; // > 2^53: a JSON number would round it
const FULL = '20261204-042327F';
const INCR = '20261204-042327F_20261205-010002I';
const FULL_START = 1796358207; // 2026-12-04T04:23:27Z, seconds as pgBackRest prints them
const INCR_START = 1796432402; // 2026-12-05T01:00:02Z

/** `pgbackrest --output=json info --stanza=bk`: one stanza, one repository. The text is kept as
 *  pgBackRest prints it: the system-id is a bare 64-bit number. */
function infoJson(opts: { code: number; message: string; backups: string[]; db: boolean }): string {
  const db = opts.db ? `{"id":1,"repo-key":1,"system-id":${SYSTEM_ID},"version":"15"}` : '';
  const archive = opts.db
    ? '{"database":{"id":1,"repo-key":1},"id":"15-1",' +
      '"max":"000000010000000000000009","min":"000000010000000000000001"}'
    : '';
  return `[{"archive":[${archive}],
"backup":[${opts.backups.join(',')}],
"cipher":"none",
"db":[${db}],
"name":"bk",
"repo":[{"cipher":"none","key":1,"status":{"code":${opts.code},"message":"${opts.message}"}}],
"status":{"code":${opts.code},"lock":{"backup":{"held":false},"restore":{"held":false}},
"message":"${opts.message}"}}]
`;
}

const fullJson = `{"annotation":null,"archive":{"start":"000000010000000000000003",
"stop":"000000010000000000000003"},
"backrest":{"format":5,"version":"2.54.0"},"database":{"id":1,"repo-key":1},"error":false,
"info":{"delta":31457280,"repository":{"delta":4194304,"size":4194304},"size":31457280},
"label":"${FULL}","link":null,"lsn":{"start":"0/3000028","stop":"0/3000138"},"prior":null,"reference":null,
"tablespace":null,"timestamp":{"start":${FULL_START},"stop":${FULL_START + 12}},"type":"full"}`;

const incrJson = `{"annotation":null,"archive":{"start":"000000010000000000000007",
"stop":"000000010000000000000008"},
"backrest":{"format":5,"version":"2.54.0"},"database":{"id":1,"repo-key":1},"error":true,
"info":{"delta":1048576,"repository":{"delta":262144,"size":4456448},"size":31981568},
"label":"${INCR}","link":null,"lsn":{"start":"0/7000028","stop":"0/8000050"},"prior":"${FULL}",
"reference":["${FULL}"],"tablespace":null,"timestamp":{"start":${INCR_START},
"stop":${INCR_START + 3}},"type":"incr"}`;

describe('parseInfo', () => {
  it('reads the backups (times in ms, sizes mapped) and keeps the system-id exact', () => {
    const listing = parseInfo(infoJson({ code: 0, message: 'ok', backups: [fullJson, incrJson], db: true }));
    expect(listing.systemId).toBe(SYSTEM_ID);
    expect(listing.problem).toBeUndefined();
    expect(listing.backups).toEqual<BackupRecord[]>([
      {
        label: FULL,
        type: 'full',
        startedAt: FULL_START * 1000,
        stoppedAt: (FULL_START + 12) * 1000,
        lsnStart: '0/3000028',
        lsnStop: '0/3000138',
        walStart: '000000010000000000000003',
        walStop: '000000010000000000000003',
        size: 31457280,
        delta: 31457280,
        repoSize: 4194304,
        repoDelta: 4194304,
        error: false,
      },
      {
        label: INCR,
        type: 'incr',
        prior: FULL,
        startedAt: INCR_START * 1000,
        stoppedAt: (INCR_START + 3) * 1000,
        lsnStart: '0/7000028',
        lsnStop: '0/8000050',
        walStart: '000000010000000000000007',
        walStop: '000000010000000000000008',
        size: 31981568,
        delta: 1048576,
        repoSize: 4456448,
        repoDelta: 262144,
        error: true,
      },
    ]);
    // a full has no prior at all (pgBackRest prints null)
    expect(listing.backups[0]).not.toHaveProperty('prior');
  });

  it('status 2 (no valid backup yet) is a usable stanza: its system, no backups, no problem', () => {
    const listing = parseInfo(infoJson({ code: 2, message: 'no valid backups', backups: [], db: true }));
    expect(listing).toEqual({ systemId: SYSTEM_ID, backups: [] });
  });

  it('any other status is a problem, with its message and code', () => {
    const listing = parseInfo(infoJson({ code: 1, message: 'missing stanza path', backups: [], db: false }));
    expect(listing.problem).toBe('missing stanza path (status 1)');
    expect(listing.systemId).toBeUndefined();
    expect(listing.backups).toEqual([]);
    const other = parseInfo(infoJson({ code: 99, message: 'other', backups: [fullJson], db: true }));
    expect(other.problem).toContain('status 99');
  });

  it('newBackupLabel: the label pgBackRest printed', () => {
    const out = `P00   INFO: backup start archive = 000000010000000000000003, lsn = 0/3000028
P00   INFO: new backup label = ${FULL}
P00   INFO: full backup size = 30MB, file total = 1275\n`;
    expect(newBackupLabel(out)).toBe(FULL);
    expect(newBackupLabel('P00   INFO: backup command end: completed successfully\n')).toBeUndefined();
  });
});

describe('BackupProgress', () => {
  it('counts files matched in the prior backup and resumed ones too (their share is in the %)', () => {
    const p = new BackupProgress();
    p.feed('P01 DETAIL: match file from prior backup 10.0.0.1:/d/base/1/1249 (50MB, 50.00%) checksum aa\n');
    p.feed('P01 DETAIL: checksum resumed file 10.0.0.1:/d/base/1/1250 (25MB, 75.00%) checksum bb\n');
    expect(p.done).toBe(75 * 2 ** 20);
    expect(p.total).toBe(100 * 2 ** 20);
  });

  const line = (path: string, size: string, pct: string) =>
    `P01 DETAIL: backup file 10.0.0.1:/u01/pg15/data/${path} (${size}, ${pct}%) checksum 8e2d0f5b0c1c8a7f\n`;

  it('sums the sizes of copied files across chunks split mid-line', () => {
    const p = new BackupProgress();
    const text = line('base/1/1249', '440KB', '0.57') + line('base/1/1259', '1.5MB', '2.50');
    const cut = text.indexOf('(440') + 2; // inside the first line's size
    expect(p.feed(text.slice(0, cut))).toBe(false);
    expect(p.done).toBe(0);
    expect(p.feed(text.slice(cut, text.length - 5))).toBe(true);
    expect(p.done).toBe(440 * 1024);
    expect(p.feed(text.slice(text.length - 5))).toBe(true);
    expect(p.done).toBe(440 * 1024 + Math.round(1.5 * 2 ** 20));
  });

  it('reads B, KB, MB and GB, and derives the total from the percentage of the last line', () => {
    const p = new BackupProgress();
    p.feed(line('global/pg_control', '8192B', '0.00'));
    expect(p.done).toBe(8192);
    expect(p.total).toBeUndefined(); // 0%: no total to derive yet
    p.feed(line('base/5/16384', '1GB', '50.00'));
    expect(p.done).toBe(8192 + 2 ** 30);
    expect(p.total).toBe(Math.round((8192 + 2 ** 30) / 0.5));
    p.feed(line('base/5/16385', '1023.9MB', '99.99') + line('base/5/16386', '24KB', '100.00'));
    const done = 8192 + 2 ** 30 + Math.round(1023.9 * 2 ** 20) + 24 * 1024;
    expect(p.done).toBe(done);
    expect(p.total).toBe(done);
  });

  it('ignores every line that is not a copied file', () => {
    const p = new BackupProgress();
    const noise = [
      'P00   INFO: backup command begin 2.54.0: --exec-id=1234-abcd --log-level-console=detail',
      'P00   INFO: execute non-exclusive backup start: ' +
        'backup begins after the requested immediate checkpoint completes',
      'P00   INFO: backup start archive = 000000010000000000000003, lsn = 0/3000028',
      'P00 DETAIL: wait for replay on the standby to reach 0/3000028',
      'P01 DETAIL: skip file removed by database 10.0.0.1:/u01/pg15/data/base/1/t3_16400',
      `P00   INFO: new backup label = ${FULL}`,
      'P00   INFO: full backup size = 30MB, file total = 1275',
      '',
    ].join('\n');
    expect(p.feed(noise)).toBe(false);
    expect(p.done).toBe(0);
    expect(p.total).toBeUndefined();
  });
});

const withBackup = (backup: Partial<BackupSpec> = {}): ClusterSpec => ({
  ...labSpec({ name: 'bk', network: '10.87.0.0/24' }),
  backup: {
    repo: { path: '/var/lib/pgop/backup/bk', port: 8432, nodePort: 8433 },
    compression: 'zst',
    archiveTimeoutS: 60,
    schedule: {},
    retention: { full: 2 },
    processes: 1,
    ...backup,
  },
});
const SOURCE: BackupSource = {
  address: '10.87.0.11',
  dataDir: '/u01/pg15/data',
  port: 5432,
  socketDir: '/var/run/postgresql',
};
const PATHS: RepoPaths = {
  cert: '/var/lib/pgop/tls/bk/repo.crt',
  key: '/var/lib/pgop/tls/bk/repo.key',
  ca: '/var/lib/pgop/tls/bk/ca.crt',
  logDir: '/var/lib/pgop/backup-log/bk',
  lockDir: '/var/lib/pgop/backup-lock/bk',
};

function refusal(f: () => unknown): PgopError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(PgopError);
    return err as PgopError;
  }
  throw new Error('expected a refusal, it rendered');
}

describe('renderBackupConf', () => {
  it('copies from the source node over TLS, with a checkpoint of its own and the retention', () => {
    const conf = renderBackupConf(withBackup(), SOURCE, PATHS);
    const lines = conf.split('\n');
    for (const l of [
      'repo1-path=/var/lib/pgop/backup/bk',
      'repo1-retention-full=2',
      'compress-type=zst',
      'process-max=1',
      'start-fast=y',
      'archive-timeout=300',
      'log-level-console=detail',
      '[bk]',
      'pg1-host=10.87.0.11',
      'pg1-host-type=tls',
      'pg1-host-port=8433',
      'pg1-host-cert-file=/var/lib/pgop/tls/bk/repo.crt',
      'pg1-path=/u01/pg15/data',
      'pg1-port=5432',
      'pg1-socket-path=/var/run/postgresql',
    ])
      expect(lines).toContain(l);
    // the pg1 options are the stanza's, after its section header
    expect(conf.indexOf('[bk]')).toBeLessThan(conf.indexOf('pg1-host='));
    expect(conf).not.toMatch(/cipher/);
    expect(conf).not.toMatch(/retention-diff/);
  });

  it('names the cipher when encrypted, never the passphrase', () => {
    const conf = renderBackupConf(
      withBackup({
        encryption: { passphrase: { env: 'PGOP_BACKUP_PASSPHRASE' } },
        retention: { full: 3, diff: 4 },
      }),
      SOURCE,
      PATHS,
    );
    expect(conf.split('\n')).toContain('repo1-cipher-type=aes-256-cbc');
    expect(conf).not.toMatch(/cipher-pass|PGOP_BACKUP_PASSPHRASE/);
    expect(conf).toContain('repo1-retention-full=3\nrepo1-retention-diff=4\n');
  });

  it('refuses an address or a path that could start another line or word (terminal)', () => {
    for (const source of [
      { ...SOURCE, address: '10.87.0.11\n[global]\nrepo1-path=/' },
      { ...SOURCE, address: '10.87.0.11 10.87.0.12' },
      { ...SOURCE, dataDir: '/u01/pg15/data\nrepo1-retention-full=1' },
      { ...SOURCE, socketDir: '/var/run/my postgresql' },
    ]) {
      const err = refusal(() => renderBackupConf(withBackup(), source, PATHS));
      expect(err.kind).toBe('terminal');
      expect(err.message).toMatch(/unsafe characters/);
    }
    const repo = { path: '/var/lib/pgop/backup/b k', port: 8432, nodePort: 8433 };
    expect(refusal(() => renderBackupConf(withBackup({ repo }), SOURCE, PATHS)).kind).toBe('terminal');
    const logDir = { ...PATHS, logDir: '/var/lib/pgop/log\nlog-level-file=trace' };
    expect(refusal(() => renderBackupConf(withBackup(), SOURCE, logDir)).kind).toBe('terminal');
  });
});

describe('renderNodeConf: the node serves backups over TLS', () => {
  it("listens on nodePort and lets the repository's certificate read the stanza", () => {
    const tls = {
      cert: '/u01/pg15/pgop-server.crt',
      key: '/u01/pg15/pgop-server.key',
      ca: '/u01/pg15/pgop-ca.crt',
    };
    const conf = renderNodeConf(withBackup(), tls, { port: 5432, socketDir: '/var/run/postgresql' });
    const lines = conf.split('\n');
    expect(lines).toContain('tls-server-port=8433');
    expect(lines).toContain('tls-server-cert-file=/u01/pg15/pgop-server.crt');
    expect(lines).toContain('tls-server-key-file=/u01/pg15/pgop-server.key');
    expect(lines).toContain('tls-server-ca-file=/u01/pg15/pgop-ca.crt');
    expect(lines).toContain('tls-server-auth=pgbackrest-repo=bk');
    // global options: before the stanza's section
    expect(conf.indexOf('tls-server-auth=')).toBeLessThan(conf.indexOf('[bk]'));
  });
});

describe('planner: backup jobs', () => {
  const backupSpec = (schedule: BackupSpec['schedule'] = {}): ClusterSpec => ({
    ...simSpec(),
    backup: withBackup({ schedule }).backup!,
  });
  const repo = (over: Partial<BackupObservation> = {}): BackupObservation => ({
    server: 'running',
    stanza: true,
    stanzaSystemId: SYSTEM_ID,
    backups: [],
    ...over,
  });
  /** The healthy, converged 3-node cluster of the plan tests, with backups configured. */
  const look = (over: Partial<PlanInput> = {}, backup: BackupObservation = repo()) => {
    const nodes = { ...healthy3(), pg01: node('pg01', { postgres: primaryPg({ systemId: SYSTEM_ID }) }) };
    const i = input(states3, nodes, { spec: backupSpec(), now: Date.UTC(2026, 11, 4, 12), ...over });
    i.observation.backup = backup;
    return plan(i);
  };
  const request = (type?: string): OperatorRequest => ({
    id: 41,
    cluster: 'sim1',
    kind: 'backup',
    args: type ? { type } : {},
    createdAt: 0,
  });

  it('is converged with nothing asked for and nothing scheduled', () => {
    expect(look().decision).toMatchObject({ kind: 'done', ruleId: 'cluster.converged' });
  });

  it('starts a requested backup from the primary, for that request', () => {
    const r = look({ requests: [request('incr')] });
    expect(r.decision).toMatchObject({
      kind: 'cluster',
      ruleId: 'backup.requested',
      action: { type: 'startBackup', backupType: 'incr', source: 'pg01', requestId: 41 },
    });
    // no type asked for: a full
    expect(look({ requests: [request()] }).decision).toMatchObject({
      ruleId: 'backup.requested',
      action: { backupType: 'full' },
    });
  });

  it('starts no requested backup while one runs', () => {
    const backupJob = { id: 5, type: 'full' as const, source: 'pg01' };
    const r = look({ requests: [request('incr')], backupJob });
    expect(r.decision.ruleId).not.toBe('backup.requested');
    expect(r.decision).not.toMatchObject({ action: { type: 'startBackup' } });
  });

  it("starts no backup while the stanza holds another database system than the primary's", () => {
    const foreign = repo({ stanzaSystemId: '7715296041331670409' });
    const r = look({ requests: [request('incr')] }, foreign);
    // the request waits, and says why (pgop backup is waiting for it)
    expect(r.decision).toMatchObject({ kind: 'wait', ruleId: 'backup.requested' });
    expect(r.decision.reason).toMatch(/another database system/);
    const scheduled = look({ spec: backupSpec({ full: '0 1 * * *' }) }, foreign);
    expect(scheduled.decision).not.toMatchObject({ action: { type: 'startBackup' } });
  });

  it('starts no backup before the server runs or the stanza exists', () => {
    expect(look({ requests: [request('incr')] }, repo({ stanza: false })).decision.ruleId).toBe(
      'backup.stanza',
    );
    expect(look({ requests: [request('incr')] }, repo({ server: 'stopped' })).decision.ruleId).toBe(
      'backup.repo-server',
    );
  });

  it('schedule: a first full when no backup was ever started', () => {
    const r = look({ spec: backupSpec({ full: '0 1 * * *' }), backupStarts: {} });
    expect(r.decision).toMatchObject({
      kind: 'cluster',
      ruleId: 'backup.scheduled',
      action: { type: 'startBackup', backupType: 'full', source: 'pg01' },
    });
    expect(r.decision).not.toMatchObject({ action: { requestId: expect.anything() } });
  });

  it('schedule: nothing once a full started after the last fire time, a full once it is older', () => {
    const spec = backupSpec({ full: '0 1 * * *' });
    const lastFire = Date.UTC(2026, 11, 4, 1);
    const after = look({ spec, backupStarts: { full: lastFire + 60_000 } });
    expect(after.decision).not.toMatchObject({ action: { type: 'startBackup' } });
    expect(after.decision).toMatchObject({ kind: 'done' });
    const before = look({ spec, backupStarts: { full: lastFire - 60_000 } });
    expect(before.decision).toMatchObject({
      ruleId: 'backup.scheduled',
      action: { type: 'startBackup', backupType: 'full', source: 'pg01' },
    });
    // one at a time
    const busy = look({ spec, backupStarts: {}, backupJob: { id: 5, type: 'incr', source: 'pg01' } });
    expect(busy.decision).not.toMatchObject({ action: { type: 'startBackup' } });
  });

  describe('after a promotion: the earlier timelines are pushed before a checkpoint there', () => {
    // pg01 promoted (timeline 2); pg02, the old primary, is back and to be rewound: its rewind
    // checkpoints pg01, which deletes the earlier timelines' segments pg01 streamed
    const promoted = (over: Partial<PlanInput> = {}) => {
      const nodes = {
        ...healthy3(),
        pg01: node('pg01', { postgres: primaryPg({ systemId: SYSTEM_ID, timeline: 2 }) }),
        pg02: node('pg02', { postgres: null }),
      };
      const states = { ...states3, pg02: 'rejoining' as const };
      const i = input(states, nodes, { spec: backupSpec(), now: Date.UTC(2026, 11, 4, 12), ...over });
      i.observation.backup = repo();
      return plan(i);
    };
    const tried = (succeeded: boolean) => ({
      running: false,
      last: { primary: 'pg01', timeline: 2, succeeded, finishedAt: Date.UTC(2026, 11, 4, 12) - 1000 },
    });

    it('pushes first; the rewind and a requested backup wait while the push runs', () => {
      const first = promoted({ walPush: { running: false }, requests: [request('incr')] });
      expect(first.decision).toMatchObject({
        kind: 'cluster',
        ruleId: 'backup.push-timelines',
        action: { type: 'pushEarlierTimelines', primary: 'pg01', timeline: 2 },
      });
      const running = promoted({ walPush: { running: true }, requests: [request('incr')] });
      expect(running.decision.ruleId).not.toBe('rejoin.standby');
      expect(running.decision).not.toMatchObject({ action: { type: 'startBackup' } });
      // a push for an older primary or timeline is not this one
      const older = promoted({ walPush: { running: false, last: { ...tried(true).last, timeline: 1 } } });
      expect(older.decision.ruleId).toBe('backup.push-timelines');
    });

    it('the rewind and backups go on once it was tried, even when it failed', () => {
      for (const succeeded of [true, false]) {
        const r = promoted({ walPush: tried(succeeded) });
        expect(r.decision).toMatchObject({ kind: 'act', node: 'pg02', ruleId: 'rejoin.standby' });
      }
      const backup = promoted({ walPush: tried(true), requests: [request('incr')] });
      expect(backup.decision.ruleId).toBe('rejoin.standby');
    });

    it('holds nothing without backups, or when no push can run', () => {
      expect(promoted({ spec: simSpec(), walPush: { running: false } }).decision.ruleId).toBe(
        'rejoin.standby',
      );
      expect(promoted({ walPush: undefined }).decision.ruleId).toBe('rejoin.standby');
    });
  });

  it('cancels a backup that copies from a node that is no longer the primary', () => {
    const r = look({ backupJob: { id: 5, type: 'full', source: 'pg02' } });
    expect(r.decision).toMatchObject({
      kind: 'cluster',
      ruleId: 'backup.cancel',
      action: { type: 'cancelJob', jobId: 5, node: 'pg02' },
    });
    // once cancelling, not again
    const cancelling = look({ backupJob: { id: 5, type: 'full', source: 'pg02', cancelling: true } });
    expect(cancelling.decision.ruleId).not.toBe('backup.cancel');
    // from the primary: it goes on
    expect(look({ backupJob: { id: 5, type: 'full', source: 'pg01' } }).decision.ruleId).not.toBe(
      'backup.cancel',
    );
  });
});

describe('pgop get backups', () => {
  const cluster = { name: 'bk', spec: withBackup() } as unknown as StoredCluster;
  const listed: BackupRecord = {
    label: FULL,
    type: 'full',
    startedAt: FULL_START * 1000,
    stoppedAt: (FULL_START + 12) * 1000,
    lsnStart: '0/3000028',
    lsnStop: '0/3000138',
    walStart: '000000010000000000000003',
    walStop: '000000010000000000000003',
    size: 30 * 2 ** 20,
    delta: 30 * 2 ** 20,
    repoSize: 4 * 2 ** 20,
    repoDelta: 4 * 2 ** 20,
    error: false,
  };
  const job = (over: Partial<JobRecord>): JobRecord => ({
    id: 12,
    cluster: 'bk',
    node: 'pg1',
    kind: 'backup.full',
    ruleId: 'backup.scheduled',
    from: '',
    to: '',
    source: 'pg1',
    startedAt: (INCR_START - 30) * 1000,
    deadlineAt: (INCR_START + 3600) * 1000,
    doneBytes: null,
    totalBytes: null,
    progressAt: null,
    state: 'running',
    finishedAt: null,
    message: '',
    owner: 'test',
    requestId: null,
    ...over,
  });
  const obs = (backups: BackupRecord[]) =>
    ({
      cluster: 'bk',
      at: 0,
      nodes: {},
      pool: null,
      backup: { server: 'running', stanza: true, backups },
    }) as ClusterObservation;

  it('lists the repository’s backups and a running backup job with its percentage', () => {
    const running = job({ doneBytes: 2 ** 29, totalBytes: 2 ** 31 });
    const made = job({
      id: 3,
      state: 'succeeded',
      message: `full backup ${FULL}: 30.0 MiB copied of 30.0 MiB, 4.0 MiB in the repository, WAL a..b`,
    });
    const items = backupItems(cluster, obs([listed]), [running, made]);
    expect(items).toHaveLength(2);
    expect(items[0]).toMatchObject({
      cluster: 'bk',
      label: FULL,
      type: 'full',
      state: 'ok',
      prior: null,
      duration_s: 12,
      size_bytes: 30 * 2 ** 20,
      repo_bytes: 4 * 2 ** 20,
      job: 3,
      percent: null,
    });
    expect(items[1]).toMatchObject({
      label: null,
      type: 'full',
      state: 'running',
      stopped: null,
      copied_bytes: 2 ** 29,
      size_bytes: 2 ** 31,
      job: 12,
      percent: 25,
    });

    const table = renderBackups(items, false, INCR_START * 1000);
    const rows = table.split('\n');
    expect(rows).toHaveLength(3);
    expect(rows[0]).toMatch(/^CLUSTER\s+LABEL\s+TYPE\s+STATE/);
    expect(rows[1]).toContain(FULL);
    expect(rows[1]).toMatch(/\bok\b/);
    expect(rows[2]).toContain('running 25%');
    expect(rows[2]).toMatch(/30s ago/);
    expect(renderBackups(items, true, INCR_START * 1000).split('\n')[0]).toMatch(/PRIOR\s+WAL\s+JOB$/);
  });

  it('shows neither finished jobs nor other kinds as rows; a running job without figures plainly', () => {
    const items = backupItems(cluster, obs([]), [
      job({ id: 1, state: 'failed' }),
      job({ id: 2, kind: 'archive.earlier-timelines' }),
      job({ id: 4, kind: 'backup.incr' }),
    ]);
    expect(items).toHaveLength(1);
    expect(items[0]).toMatchObject({ job: 4, type: 'incr', state: 'running', percent: null });
    expect(renderBackups(items, false, INCR_START * 1000)).toMatch(/incr\s+running\s/);
  });
});
