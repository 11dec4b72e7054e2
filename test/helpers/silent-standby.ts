// A standby's link goes down while pgpool's children are taking clients on it
// (standby-death.md §4e): half of pgpool's 8 children held by idle sessions, as pgbench's clients
// would hold them, the other half caught connecting to the victim when its link goes down (a busy
// pool host's connects take long enough to be caught so; the victim is hung first to make sure of
// it). Then new sessions through pgpool's address for 20 s, four at a time. Shared by the chaos
// suites with pgpool on pool hosts of its own and on the database nodes.

import pg from 'pg';
import { expect } from 'vitest';
import { chaosLog } from './chaos-suite.js';
import type { ChaosLab } from './chaos-lab.js';
import { waitConverged } from './chaos-scenario.js';
import { now, sleep } from './writer.js';

interface Probe {
  /** ms after the fault */
  at: number;
  error: string | null;
}

/** The trial on `victim` (a standby), then: every new session that started 8 s or more after
 *  the fault worked, and pgop converged again. */
export async function expectSessionsBackAfterSilentStandby(lab: ChaosLab, victim: string): Promise<void> {
  const r = await silentStandbyTrial(lab, victim);
  chaosLog(`partition-standby: ${r.report}`);
  const late = r.probes.filter((p) => p.at >= 8000);
  expect(late.length, r.report).toBeGreaterThan(10);
  expect(
    late.filter((p) => p.error),
    r.report,
  ).toEqual([]);
  await waitConverged(lab, 120_000);
}

/** The trial on `victim` (a standby); it is healed and resumed before this returns. */
async function silentStandbyTrial(
  lab: ChaosLab,
  victim: string,
): Promise<{ probes: Probe[]; report: string }> {
  const held = await openSessions(lab, 4, 'pgbench');
  let probes: Probe[] = [];
  let caught: (string | null)[] = [];
  let t0 = 0;
  try {
    t0 = await lab.fault(victim, 'hang');
    const connecting = [0, 1, 2, 3].map(() => lab.newSessionFails('probe'));
    await sleep(500);
    await lab.fault(victim, 'partition');
    await lab.fault(victim, 'resume');
    probes = await probeSessions(lab, t0, 20_000);
    caught = await Promise.all(connecting);
  } finally {
    await Promise.all(held.map((c) => c.end().catch(() => {})));
    if (t0) await lab.fault(victim, 'resume');
    if (t0) await lab.fault(victim, 'heal');
  }
  const failed = probes.filter((p) => p.error);
  const report =
    `${victim} hung, its link down at +0.5 s; the sessions caught connecting: ${caught.join(' | ')}\n` +
    `${failed.length} of ${probes.length} new sessions failed:\n` +
    failed.map((p) => `+${(p.at / 1000).toFixed(2)} ${p.error}`).join('\n');
  return { probes, report };
}

/** Sessions through pgpool, all open at once (each has a child of its own), each after one
 *  query. pgbench's application name is one of the lab spec's primaryApplications. */
async function openSessions(lab: ChaosLab, n: number, applicationName: string): Promise<pg.Client[]> {
  const clients = Array.from({ length: n }, () => {
    const c = new pg.Client({ ...lab.poolConfig(), application_name: applicationName });
    c.on('error', () => {});
    return c;
  });
  await Promise.all(clients.map((c) => c.connect()));
  await Promise.all(clients.map((c) => c.query('SELECT 1')));
  return clients;
}

/** New sessions through pgpool for `ms` after `t0`, four at a time, one every 50 ms at most
 *  (each gives up after 3 s), with an application name as most clients send one. */
async function probeSessions(lab: ChaosLab, t0: number, ms: number): Promise<Probe[]> {
  const probes: Probe[] = [];
  await Promise.all(
    [0, 1, 2, 3].map(async (k) => {
      await sleep(k * 50);
      while (now() < t0 + ms) {
        const at = now();
        probes.push({ at: at - t0, error: await lab.newSessionFails('probe') });
        await sleep(Math.max(0, 200 - (now() - at)));
      }
    }),
  );
  return probes.sort((a, b) => a.at - b.at);
}
