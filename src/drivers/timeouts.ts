// Every remote call pgop makes is bounded, so that a hung node (a SIGSTOPped postmaster, a link
// that drops packets) costs its own time budget and nobody else's. The numbers live here, each
// with why; those that follow the spec's failureDetection are functions of the cluster.

import type { ClusterSpec } from '../spec/types.js';

// ------------------------------------------------------------------ pg sessions to the nodes

/** One probe's budget (connect, then query): a node that does not answer within it is a miss,
 *  whether its link is down or its postgres hangs behind an open port. */
export const probeTimeoutMs = (c: ClusterSpec): number => c.failureDetection.connectTimeoutMs;

/** A whole probe: two tries (a cached session may have died), each a connect and a query, then
 *  an SSH look, with room to spare; beyond it a step hangs that should not (a pgop fault). */
export const probeDeadlineMs = (c: ClusterSpec): number => 4 * probeTimeoutMs(c) + lookTimeoutMs(c) + 2_000;

/** A fresh admin session's connect (TCP, TLS, SCRAM) on a host that may be busy with a failure:
 *  more room than a probe, whose session is kept open. */
export const adminConnectTimeoutMs = (c: ClusterSpec): number =>
  Math.max(5_000, c.failureDetection.connectTimeoutMs);

/** Server-side bound of one admin statement (DDL, slots, pg_promote, reloads: all sub-second
 *  when the node is well); longer means it is stuck. */
export const ADMIN_STATEMENT_MS = 30_000;

/** Admin DDL waiting behind an application's lock gives up (and is retried by the loop) instead
 *  of holding the operator's step. */
export const ADMIN_LOCK_MS = 10_000;

/** The client-side bound beyond a statement's own: a node that hangs cannot cancel anything. */
export const CLIENT_GRACE_MS = 5_000;

/** A CHECKPOINT writes every dirty buffer: minutes on a large shared_buffers, not a hang. */
export const CHECKPOINT_MS = 10 * 60_000;

/** TCP keepalive on every pg session: idle sessions (the probe's, between probes) to a peer
 *  that vanished are noticed by the kernel, not only at the next query's timeout. */
export const KEEPALIVE_IDLE_MS = 5_000;

// ------------------------------------------------------------------ pgpool

/** A look at pgpool's backends over PCP, all of it: the login, the node count and one question
 *  per backend. */
export const poolLookTimeoutMs = (c: ClusterSpec): number =>
  Math.max(2_000, c.failureDetection.connectTimeoutMs * 2);

/** A client session through pgpool (connect, then one query): pgpool's child opens a session to
 *  every node it holds up before it answers, TLS and SCRAM each. */
export const poolSessionTimeoutMs = (c: ClusterSpec): number =>
  Math.max(1_000, 2 * c.failureDetection.connectTimeoutMs);

/** How long a failed standby's port may take to refuse a connect (its postgres died, its host
 *  answers). Refused within it, pgpool skips the standby by itself once a route cuts it off;
 *  anything slower is taken as silent (host down or cut off) and the standby is detached too. */
export const REFUSAL_WAIT_MS = 150;

/** A PCP login and a PCP request each: pgpool answers from its own memory, but may be in the
 *  middle of restarting its children after a failover. */
export const pcpTimeoutMs = (c: ClusterSpec): number =>
  Math.max(2_000, c.failureDetection.connectTimeoutMs * 4);

// ------------------------------------------------------------------ SSH

/** TCP connect to a node's sshd: a partitioned host fails after this. */
export const SSH_CONNECT_MS = 3_000;
/** SSH handshake and authentication after the TCP connect. */
export const SSH_READY_MS = 5_000;
/** A remote command run without a timeout of its own; long operations pass theirs. */
export const SSH_EXEC_DEFAULT_MS = 60_000;
/** SSH keepalive interval; SSH_KEEPALIVE_COUNT unanswered in a row drop the connection, so a
 *  dead peer is noticed in seconds, not when TCP gives up. */
export const SSH_KEEPALIVE_MS = 2_000;
export const SSH_KEEPALIVE_COUNT = 3;

/** The probe's SSH look (is postgres running? is the node there at all?) after a miss. */
export const lookTimeoutMs = (c: ClusterSpec): number =>
  Math.max(2_000, c.failureDetection.connectTimeoutMs * 2);
