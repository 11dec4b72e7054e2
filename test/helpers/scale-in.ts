// What scaling in is expected to do, the same in the sim and on the lab.

/** The rules that remove a standby that left the spec, in order: out of the sync set and out of
 *  pgpool before its machine is fenced and removed, then its slot dropped and its rows forgotten. */
export const STANDBY_REMOVAL_RULES = [
  'scale.sync-remove',
  'scale.pool-remove',
  'scale.fence',
  // the machine's removal runs as a job: its start, then the commit of its step
  'job.started',
  'scale.remove-machine',
  'scale.drop-slot',
  'scale.forget',
];
