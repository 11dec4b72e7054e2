// pgop parses what its child processes print (virsh, ip, losetup, qemu-img, pg tools): that text
// is only stable in the C locale, and on a translated system virsh's lifecycle events would
// silently stop matching. Every child inherits this process's environment, so setting LC_ALL
// once here, before any command runs, covers every spawn site (and those added later).
// Remote commands over SSH are not covered: sshd builds their environment (pgop's lab hosts and
// image set no translated locale); a driver that parses a remote tool sets LC_ALL=C for it.

const SAVED = 'PGOP_USER_LC_ALL';

export function pinChildLocale(env: NodeJS.ProcessEnv = process.env): void {
  // kept across pgop re-running itself (inside the lab's hub namespace), so the first value wins
  if (env[SAVED] === undefined) env[SAVED] = env.LC_ALL ?? '';
  env.LC_ALL = 'C';
}

/** The environment for an interactive child whose output a person reads (psql): their locale. */
export function userLocaleEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const { [SAVED]: saved, LC_ALL: _pinned, ...rest } = env;
  return saved ? { ...rest, LC_ALL: saved } : rest;
}
