import { describe, expect, it } from 'vitest';
import { commitGap, commitTimes, parseReport, progressCommits } from '../../bench/pgbench-parse.js';

describe('pgbench log and report', () => {
  it('reads commit times from per-transaction log lines, skipping what did not commit', () => {
    const log = [
      '0 0 5123 0 1700000000 250000',
      '0 1 4890 0 1700000000 255120',
      '0 2 skipped 0 1700000000 260000',
      '0 3 failed 0 1700000001 1000',
      '',
      'garbage',
      '0 4 6001 0 1700000001 500 12',
    ].join('\n');
    expect(commitTimes(log)).toEqual([1700000000250, 1700000000255.12, 1700000001000.5]);
  });

  it('finds the longest gap after a fault, a trailing one and none after it', () => {
    const t = [1000, 1010, 1020, 2500, 2510];
    expect(commitGap(t, 1015, 3000)).toBe(1480);
    expect(commitGap([1000, 1010, 1020, 1030], 1015, 2000)).toBe(970);
    expect(commitGap([1000, 1010], 1015, 2000)).toBe(Infinity);
  });

  it('counts aborted sessions and reads the committed count of an aborted run', () => {
    const out = [
      'pgbench (15.18 (Debian 15.18-0+deb12u1))',
      'pgbench: error: client 0 aborted in command 8 (SQL) of script 0; perhaps the backend died',
      'pgbench: error: client 3 aborted in command 4 (SQL) of script 0; server closed the connection',
      'pgbench: error: client 2 script 0 aborted in command 5 query 0: FATAL:  terminating connection',
      'transaction type: <builtin: TPC-B (sort of)>',
      'number of clients: 4',
      'number of transactions actually processed: 1234',
      'number of failed transactions: 0 (0.000%)',
      'pgbench: error: Run was aborted; the above results are incomplete.',
    ].join('\n');
    const r = parseReport(out);
    expect(r.processed).toBe(1234);
    expect(r.aborted).toHaveLength(3);
    expect(r.connectFailed).toBe(false);
  });

  it('reads from progress lines whether a client committed in the last second', () => {
    expect(progressCommits('progress: 3.0 s, 0.0 tps, lat 0.000 ms stddev 0.000, 0 failed\n')).toBe(false);
    expect(
      progressCommits(
        'progress: 4.0 s, 0.0 tps, lat 0.000 ms stddev 0.000, 0 failed\n' +
          'progress: 5.0 s, 123.5 tps, lat 8.091 ms stddev 2.310, 0 failed\n',
      ),
    ).toBe(true);
    expect(progressCommits('pgbench: error: client 0 aborted in command 8 (SQL) of script 0\n')).toBe(false);
  });

  it('tells a run that never connected from one that committed nothing', () => {
    const r = parseReport(
      'pgbench: error: connection to server at "10.95.0.10", port 9999 failed: Connection refused\n' +
        'pgbench: error: could not create connection for client 0\n',
    );
    expect(r).toEqual({ processed: null, aborted: [], connectFailed: true });
    expect(parseReport('number of transactions actually processed: 0/10\n').processed).toBe(0);
  });
});
