// The words commands take as arguments: commander validates them (a wrong one is a usage error)
// and shell completion offers them. Kept apart so that the commands' modules, loaded lazily,
// share them with main.ts without loading it.

/** The resource kinds each command takes (singular forms too, as kubectl). */
export const KINDS = {
  get: ['clusters', 'nodes', 'events', 'jobs', 'backups', 'cluster', 'node', 'event', 'job', 'backup'],
  describe: ['cluster', 'node'],
  delete: ['cluster'],
} as const;

/** What `pgop lab fault NODE ACTION` can do. */
export const LAB_FAULTS = [
  'kill',
  'kill-pgpool',
  'partition',
  'heal',
  'stop',
  'start',
  'hang',
  'resume',
] as const;
export type LabFault = (typeof LAB_FAULTS)[number];
