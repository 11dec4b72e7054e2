// A bench that talks to lab hosts runs inside a lab hub namespace of its own (the root namespace
// routes unknown addresses off the machine): the outer process makes a fresh hub with a unique
// prefix, runs the same script again inside it, and on exit (pass, fail or Ctrl-C) empties and
// deletes every namespace of that prefix, the lab's cgroups and its state directory (sweepLab).

import { spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';

/** Returns inside the hub; in the outer process it never returns (exits with the inner code). */
export async function enterLabHub(tag: string): Promise<void> {
  if (process.env.PGOP_IN_HUB) return;
  const netns = await import('../src/drivers/lab/netns.js');
  const prefix = process.env.PGOP_LAB_PREFIX ?? `${tag}${process.pid.toString(36).slice(-4)}`;
  const state = process.env.PGOP_LAB_STATE ?? `/var/lib/pgop/bench-${prefix}`;
  process.env.PGOP_LAB_PREFIX = prefix;
  const hub = await netns.ensureHub(prefix);
  mkdirSync(state, { recursive: true });
  const child = spawn(
    netns.NSENTER,
    [`--net=${netns.netnsPath(hub)}`, '--', process.execPath, ...process.execArgv, ...process.argv.slice(1)],
    {
      stdio: 'inherit',
      env: { ...process.env, PGOP_LAB_PREFIX: prefix, PGOP_LAB_STATE: state, PGOP_IN_HUB: prefix },
    },
  );
  const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
  process.on('SIGINT', forward('SIGINT'));
  process.on('SIGTERM', forward('SIGTERM'));
  const code = await new Promise<number>((r) => child.on('exit', (c, s) => r(c ?? (s ? 130 : 1))));
  await netns.sweepLab(prefix);
  rmSync(state, { recursive: true, force: true });
  process.exit(code);
}
