import type { NodeEvent, NodeGoal, NodeState } from '../../machines/node-edges.js';
import type { BackupType, ClusterSpec } from '../spec/types.js';
import type { ClusterObservation } from '../observe/types.js';
import type { RuleId } from './rule-ids.js';

/** An operator's request the planner acts on (stored in the store, decided on here). */
export interface OperatorRequest {
  id: number;
  cluster: string;
  kind: 'switchover' | 'backup';
  args: Record<string, string>;
  createdAt: number;
}

/** A node's job as the planner sees it: running (the node is busy: no other step is planned for
 *  it but the ones that pre-empt jobs, e.g. a fence), or cooling down after a failed job. */
export interface JobView {
  id: number;
  /** the actor it runs (cloneStandby, installPostgres, ...) */
  kind: string;
  state: 'running' | 'cooling';
  /** the primary a standby is cloned or rewound from */
  source?: string;
  deadlineAt: number;
  /** cancellation was asked for and is under way */
  cancelling?: boolean;
  doneBytes?: number;
  totalBytes?: number;
}

export interface PlanInput {
  spec: ClusterSpec;
  deletionRequested: boolean;
  observation: ClusterObservation;
  /** Stored node states by name (nodes never stepped are absent). Includes nodes no longer in
   *  the spec, so they can be removed. */
  states: Record<string, NodeState>;
  /** desired config hash per spec node (from the postgres driver; pure function of the spec) */
  desiredConfigHash: Record<string, string>;
  /** desired pgpool config hash (from the pool driver; pure function of the spec) */
  desiredPoolConfigHash?: string;
  requests: OperatorRequest[];
  now: number;
  /** When each node last changed state (ms): tells the most recent of several old primaries. */
  since?: Record<string, number>;
  /** The replication slot name of each node that left the spec (from the postgres driver):
   *  a removed node is forgotten only once its slot on the primary is gone. */
  slotNames?: Record<string, string>;
  /** each busy node's job (running or cooling down after a failure), by node name */
  jobs?: Record<string, JobView>;
  /** the cluster's backup job, while one runs */
  backupJob?: BackupJobView;
  /** when the newest backup of each type was started (jobs and the repository's list) */
  backupStarts?: Partial<Record<BackupType, number>>;
  /** the promoted primary's push of earlier timelines' WAL: running, and the last outcome */
  walPush?: WalPushView;
  /** pool hosts whose configuration job runs, or failed and cools down, by pool host name */
  poolHostJobs?: Record<string, JobView>;
}

export interface WalPushView {
  running: boolean;
  last?: { primary: string; timeline: number; succeeded: boolean; finishedAt: number };
}

export interface BackupJobView {
  id: number;
  type: BackupType;
  /** the node it copies from */
  source: string;
  cancelling?: boolean;
}

interface DecisionBase {
  reason: string;
  /** Stable id of the rule that decided, for tests and `get events`. */
  ruleId: RuleId;
  requeueAfterMs: number;
}

/** Step one node's statechart with `event`; the edge's actor is the side effect. */
export interface NodeDecision extends DecisionBase {
  kind: 'act';
  node: string;
  event: NodeEvent;
  /** the primary a standby should follow (clone, repoint, rejoin) */
  primary?: string;
  /** the standbys a new primary should prepare slots for */
  standbys?: string[];
  /** fencing a failed primary: the standby the election would promote now. pgpool is switched
   *  to it alongside the fence (it stops sending anything to the fenced node at once, and its
   *  restart of its children overlaps the fence and the promotion instead of following them). */
  successor?: string;
  /** a promotion: the standbys level with the promoted node (same WAL position); each holds
   *  every commit the old primary acknowledged, so they stand as the sync evidence until the new
   *  primary's own synchronous set is seen. */
  levelStandbys?: string[];
  /** fencing a primary whose own backend reported its postmaster's death: nothing of it hangs
   *  a client (its host refused connections at once), so cutting the pool host off it can wait
   *  until the failover is over. */
  postmasterDeathReported?: true;
  /** fencing a node that left the spec (scale-in): pgpool no longer has it as a backend, and the
   *  pool host is not cut off its address (a route left there would refuse a node made again at
   *  that address later). */
  leavingSpec?: true;
}

export type ClusterAction =
  /** failed: nodes whose postgres pgop sees failed (detached, not attached again meanwhile) */
  | { type: 'ensurePool'; primary: string | null; failed?: string[]; host?: string }
  /** configure and route one pool host that serves no client, as a job of the cluster: a
   *  configuration can take a minute (a VM just booted), and the loop must see a failover meanwhile */
  | { type: 'configurePoolHost'; host: string; primary: string; failed?: string[] }
  /** the virtual IP on pool host `to` alone (the others made to drop it first) */
  | { type: 'moveVip'; to: string }
  /** start a pool host's machine again (fenced or stopped) */
  | { type: 'startPoolHost'; host: string }
  /** remove a pool host that left the spec */
  | { type: 'removePoolHost'; host: string }
  | { type: 'ensureSyncStandbys'; primary: string; names: string[]; quorum: number }
  | { type: 'deleteClusterResources' }
  /** the backup repository's server runs with the current configuration */
  | { type: 'ensureBackupRepo' }
  /** the cluster's stanza exists in the backup repository (stanza-create on the primary) */
  | { type: 'createStanza'; primary: string }
  /** drop, on the primary, the replication slots of nodes that left the spec */
  | { type: 'dropSlots'; primary: string; node: string }
  /** a node that left the spec is gone everywhere (machine, pgpool, slot, sync set): forget it */
  | { type: 'forgetNode'; node: string }
  | { type: 'completeRequest'; requestId: number }
  /** start a backup job (from the primary), for an operator request or the schedule */
  | { type: 'startBackup'; backupType: BackupType; source: string; requestId?: number }
  /** push, from the promoted primary, the earlier timelines' segments it holds (a job) */
  | { type: 'pushEarlierTimelines'; primary: string; timeline: number }
  /** stop a running job (its work is redone as the plan then says) */
  | { type: 'cancelJob'; jobId: number; node: string };

/** A side effect that is not a node transition (pgpool, sync quorum, teardown, bookkeeping). */
export interface ClusterDecision extends DecisionBase {
  kind: 'cluster';
  action: ClusterAction;
}

export interface WaitDecision extends DecisionBase {
  kind: 'wait';
  node?: string;
}

export interface DoneDecision extends DecisionBase {
  kind: 'done';
}

export type Decision = NodeDecision | ClusterDecision | WaitDecision | DoneDecision;

export interface PlanResult {
  decision: Decision;
  /** Further node-local actions on other nodes that may run in the same pass, concurrently
   *  with `decision` (at most one per node; never failover, election or cluster actions). */
  also?: NodeDecision[];
  /** Goal per node, for display. */
  goals: Record<string, NodeGoal>;
  /** The node the cluster treats as primary (stored state), or null. */
  primary: string | null;
  phase: 'Provisioning' | 'Healthy' | 'Degraded' | 'FailingOver' | 'SwitchingOver' | 'Deleting' | 'Deleted';
}

/** A decision as a rule returns it: plan() stamps the deciding rule's id on it. */
export type Verdict = Unstamped<Decision> & {
  /** further node-local decisions for the same pass (see PlanResult.also) */
  also?: NodeDecision[];
  /** a wait that holds back only what it names: nodes not yet installed go on being provisioned
   *  and installed meanwhile (plan() adds those steps as `also`) */
  setUpMeanwhile?: true;
};
export type NodeVerdict = Unstamped<NodeDecision>;
type Unstamped<D> = D extends unknown ? Omit<D, 'ruleId'> : never;
