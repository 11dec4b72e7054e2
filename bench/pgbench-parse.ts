// Reading what pgbench (PostgreSQL 15) wrote: its per-transaction log (-l) and its report.
//
// A log line is `client_id transaction_no time script_no time_epoch time_us`: time is the
// latency in µs (or a word such as "skipped" or "failed" for a transaction that did not
// commit), time_epoch + time_us is when the transaction ended.

import { outage } from '../test/helpers/writer.js';

export interface PgbenchReport {
  /** "number of transactions actually processed" (null: no report, e.g. it could not connect) */
  processed: number | null;
  /** "client N aborted ..." lines: sessions that died under it */
  aborted: string[];
  /** it could not open its sessions at all (a start during an outage) */
  connectFailed: boolean;
}

/** Epoch ms at which each logged transaction committed. */
export function commitTimes(log: string): number[] {
  const out: number[] = [];
  for (const line of log.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6 || !/^\d+$/.test(f[2]!)) continue;
    out.push(Number(f[4]) * 1000 + Number(f[5]) / 1000);
  }
  return out;
}

export function parseReport(output: string): PgbenchReport {
  const processed = /number of transactions actually processed: (\d+)/.exec(output);
  return {
    processed: processed ? Number(processed[1]) : null,
    // "client 0 aborted in command 8 ...", "client 0 script 0 aborted in command 5 query 0: ..."
    aborted: output.split('\n').filter((l) => /\bclient \d+ (script \d+ )?aborted\b/.test(l)),
    connectFailed: /could not create connection for client/.test(output),
  };
}

/** Whether progress output (-P) reports a second with commits: "progress: 5.0 s, 812.0 tps, ...". */
export function progressCommits(text: string): boolean {
  return [...text.matchAll(/progress: [\d.]+ s, ([\d.]+) tps/g)].some((m) => Number(m[1]) > 0);
}

/** The longest time without a commit from the last one at or before t0 until `until`
 *  (Infinity: none after t0), as the writers' outage() counts it. */
export function commitGap(times: readonly number[], t0: number, until: number): number {
  return outage(
    times.map((t) => ({ id: 0, sentAt: t, ackAt: t })),
    t0,
    until,
  ).ms;
}
