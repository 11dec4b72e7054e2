// Every rule id `pgop get events` can print, with what it means. The planner's rules (rules.ts)
// and the other writers of events import their ids from here; a unit test (rule-ids.test.ts)
// scans src/ and fails on an id that is written but not listed, or listed but never written.

export const RULE_IDS = {
  // deletion of the whole cluster
  'delete.fence': 'cluster deletion: a node is powered off first',
  'delete.remove-machine': "cluster deletion: a fenced node's machine and data are removed",
  'delete.resources': 'cluster deletion: leftover machines, networks and the pgpool host are removed',
  // bookkeeping: the world is ahead of the records
  'node.machine-vanished': "a node's machine no longer exists; the node starts over",
  'node.adopt-clone': 'an installed node already runs as a standby; recorded as one',
  'node.start-unrecorded': 'an installed node holds unrecorded data; its postgres is started to adopt it',
  // failover
  'failover.fence-primary': 'the primary failed its probes and a standby can take over: fence it',
  'failover.no-candidate': 'the primary failed, but no standby can take over: wait',
  'failover.adopt-promoted': 'a standby is already writable (an unrecorded promotion): recorded as primary',
  'failover.promote': 'no primary: the most advanced standby is promoted',
  'failover.sync-evidence': 'no primary, but too few sync-set members can be read to promote safely',
  'failover.pool-route': 'right after a failover: pgpool is pointed at the new primary',
  // bringing a primary back when nobody can replace it
  'recover.start-primary': "the failed primary's machine is off and nobody can take over: start it",
  'recover.restart-primary': "the failed primary's postgres is down and nobody can take over: restart it",
  'recover.restart-in-place': "no primary: a node's postgres is restarted in place to be looked at",
  'recover.release-last-primary': 'no standby can be promoted: the most recent primary comes back',
  // bootstrap
  'bootstrap.wait-unseen': 'no data yet, but an installed node cannot be read: wait before initdb',
  'bootstrap.init-primary': 'no data yet: the first installed node is initialised as primary',
  // per node
  'node.provision': 'a spec node has no machine: provision it',
  'node.reprovision': 'a machine stopped before installation: provision it again',
  'node.start-machine': "a node's machine is off: start it",
  'node.install': 'a machine answers over SSH: install and configure postgres',
  'node.clone-standby': 'an installed node is cloned from the primary as a streaming standby',
  'node.config-drift': "a node's configuration differs from the spec: rewrite and reload it",
  'node.remove-machine': "a fenced node's machine is removed",
  'node.waiting': 'nothing to do but wait for a node to reach its goal',
  'standby.failed': 'a standby failed its probes: marked degraded',
  'standby.repoint': 'a standby does not stream from the primary: point it there',
  'rejoin.start-machine': "a degraded or rejoining node's machine is off: start it",
  'rejoin.standby': 'a degraded or rejoining node is rewound or rejoined as a standby',
  'rejoin.release-fence': 'a fenced old primary is restarted to rejoin as a standby',
  // synchronous replication
  'sync.quorum': 'synchronous_standby_names is set to the streaming standbys and the quorum',
  'sync.off': 'async mode: synchronous_standby_names is cleared',
  // pgpool
  'pool.vip-holder':
    'the virtual IP is on no live pool host (or on two): move it, fencing the old holder first',
  'pool.host-remove': 'a pool host left the spec: its machine is removed (the virtual IP with it)',
  'pool.holder-unanswered':
    'the virtual IP holder misses looks, not yet enough to move the address: look again soon',
  'pool.hosts-waiting':
    'the virtual IP has no live holder yet, or a spare pool host has no pgpool or routes otherwise: wait',
  'pool.attach-settling': 'pgpool still handles an attach and ends new sessions meanwhile: wait',
  'pool.host-start': 'a pool host is fenced or stopped: start it again',
  'pool.host-route':
    'a pool host that does not serve clients is configured and routed like the serving one (a job)',
  'pool.host-configured': "written by the loop: a pool host's configuration job finished",
  'pool.route': 'pgpool routes writes elsewhere or marks a healthy node down: point it at the primary',
  'pool.reconfigure': "pgpool's configuration differs from the spec: rewrite it and restart pgpool",
  'pool.detach-failed': 'pgpool still opens sessions on a failed standby: detach it',
  // backups (spec.backup)
  'backup.repo-server': "the backup repository's server on the operator's host is started or restarted",
  'backup.stanza': 'the cluster has no stanza in the backup repository: stanza-create on the primary',
  'backup.archive-failed': "the primary's archive_command (pgbackrest archive-push) started failing",
  'backup.archive-resumed': "the primary's WAL archiving works again",
  'backup.restore-server':
    "a cluster restored from a stanza: its repository's server starts before the first primary",
  'backup.requested': 'a backup was asked for (pgop backup): it starts as a job, from the primary',
  'backup.scheduled': 'a backup is due by spec.backup.schedule: it starts as a job, from the primary',
  'backup.cancel': 'a running backup copies from a node that is no longer the primary: cancelled',
  'backup.succeeded': 'written by the loop: a backup job finished; the repository lists it',
  'backup.push-timelines':
    "a promoted primary pushes the earlier timelines' segments it holds (the old primary may not have)",
  'backup.timelines-pushed': "written by the loop: the earlier timelines' WAL is in the repository",
  // scale-in: a node that left the spec
  'scale.sync-remove': 'it is taken out of synchronous_standby_names',
  'scale.pool-remove': "it is taken out of pgpool's backends",
  'scale.fence': 'it is fenced',
  'scale.remove-machine': 'its machine and data are deleted',
  'scale.drop-slot': 'its replication slot is dropped on the primary',
  'scale.forget': 'it is gone everywhere: its record is deleted',
  'scale.wait-handover': 'the primary left the spec: wait for a streaming standby to hand over to',
  'scale.handover': 'the primary left the spec: shut it down cleanly so a standby takes over',
  // planned switchover
  'switchover.rejected': 'a switchover to a node not in the spec is dropped',
  'switchover.wait-target': 'a switchover waits for a streaming standby to hand over to',
  'switchover.demote': 'a switchover shuts the primary down cleanly',
  'switchover.promote': 'a switchover promotes its target (or the most advanced standby)',
  'switchover.done': 'a switchover request is complete (or settled otherwise): closed',
  // jobs: long actions the loop does not wait on
  'job.running': "a node's job is running (or cooling down after a failure): nothing else for it",
  'job.cancel': 'a running job is cancelled: its primary changed, or it passed its deadline',
  'job.started': "written by the loop: a long action started as a job (its success is the step's own event)",
  'job.failed': 'written by the loop: a job failed; the node cools down before it is tried again',
  'job.cancelled': 'written by the loop: a job was cancelled and stopped',
  'job.interrupted': 'written by the loop: a job of an earlier operator process did not finish; redone',
  // steady state
  'primary.unhealthy': 'the primary misses probes, not yet enough to fail over',
  'cluster.converged': 'every node is at its goal',
  // written outside the planner
  'ssh.host-key-rotated': "pgop host-key: a node's pinned SSH host key was replaced",
  'ssh.host-key-forgotten': "pgop host-key: a node's pinned SSH host key was forgotten",
  'ssh.host-key-refused': "a node's SSH host key does not match the pinned one: the connection is refused",
} as const;

export type RuleId = keyof typeof RULE_IDS;

/** The event id of a decision whose side effect failed (the reconciler records it). */
export function failedRuleId(ruleId: RuleId): string {
  return `${ruleId}.failed`;
}
