// The driver's PCP requests to one cluster's pgpool: a session opened ahead of the request a
// failover will need (the login is most of a request's time), and the request itself on that
// session or a fresh one. The wire protocol is in pcp.ts.

import { setTimeout as delay } from 'node:timers/promises';
import type { ClusterSpec } from '../../spec/types.js';
import { transient } from '../../errors.js';
import { PCP_USER } from './config.js';
import { PcpRefused, PcpSession, pcpRequest, type PcpRequest, type PcpTarget } from './pcp.js';
import type { PoolClusterState } from './state.js';
import { pcpTimeoutMs } from '../timeouts.js';

/** One cluster's pgpool as PCP sees it. */
export interface PcpLink {
  cluster: ClusterSpec;
  /** the pool host's own address (its PCP port listens there) */
  address: string;
  state: PoolClusterState;
  /** The PCP password kept on the pool host (null or empty: none yet). */
  readPassword(): Promise<string | null>;
}

/** A session opened ahead is replaced after this long. */
const OPENED_AHEAD_MAX_AGE_MS = 20_000;
/** No session is opened ahead for this long after a request (see warmPcp). */
const QUIET_AFTER_REQUEST_MS = 8_000;
/** A session opened because a node is failing is closed unused after this long. */
const FAILING_SESSION_MS = 3_000;

/** Where pgpool's PCP port is, with the password kept on the pool host. */
export async function pcpTarget(link: PcpLink): Promise<PcpTarget> {
  const { cluster, state } = link;
  let password = state.pcpPassword;
  if (!password) {
    password = ((await link.readPassword()) ?? '').trim();
    if (!password) {
      const why = 'no PCP password on the pool host yet';
      throw transient(`cannot reach pgpool's PCP port of ${cluster.name}: ${why}`);
    }
    state.pcpPassword = password;
  }
  return { host: link.address, port: cluster.pgpool.pcpPort, user: PCP_USER, password };
}

/** Open a PCP session now for the next request (a failover's), unless one is open.
 *  pgpool restarts its PCP process 1 s after each failover or failback it carries out, and its
 *  main process waits for that until every PCP session of the old one is closed: a session
 *  opened ahead at the wrong moment holds up the very request it was opened for. So none is
 *  opened ahead for 8 s after a request of ours (pgpool's failover, its search for a primary
 *  of at most 5 s, the 1 s, the restart), and one is kept at most 20 s (then opened anew),
 *  which bounds such a wait should pgpool ever fail over by itself (its own failover is off).
 *  `failing`: a node is failing (a probe session dropped) and a switch is likely within the
 *  next moments: open one whatever was sent before (pgpool's main waits at most until it is
 *  used), and close it unused after 3 s. */
export function warmPcp(link: PcpLink, failing = false): void {
  const { state } = link;
  const ready = state.pcpOpenedAhead;
  if (ready && Date.now() - ready.at < OPENED_AHEAD_MAX_AGE_MS) {
    void ready.session.then((s) => {
      if ((!s || !s.usable) && state.pcpOpenedAhead === ready) state.pcpOpenedAhead = undefined;
    });
    return;
  }
  if (ready) state.dropPcp();
  if (!failing && Date.now() < state.pcpQuietUntil) return;
  const session = pcpTarget(link)
    .then((t) => PcpSession.open(t, pcpTimeoutMs(link.cluster)))
    .catch(() => null);
  const entry = { at: Date.now(), session };
  state.pcpOpenedAhead = entry;
  if (failing) {
    setTimeout(() => {
      if (state.pcpOpenedAhead === entry) state.dropPcp();
    }, FAILING_SESSION_MS).unref();
  }
}

/** Send `req`; resolves with the session used: 'ready' (opened ahead) or 'fresh'.
 *  The session opened ahead is taken if it is still there (one request per session, the next
 *  look opens another). It may have died unseen (a pool host that went away): a short bound,
 *  then a fresh session. A request sent twice is harmless (pgpool refuses the second promote
 *  as "already primary", attach and detach are idempotent). */
export async function sendPcp(link: PcpLink, req: PcpRequest): Promise<'ready' | 'fresh'> {
  const { cluster, state } = link;
  const ready = state.pcpOpenedAhead;
  state.pcpOpenedAhead = undefined;
  // every request makes pgpool fail over or back, then restart its PCP process (warmPcp)
  state.pcpQuietUntil = Date.now() + QUIET_AFTER_REQUEST_MS;
  // one still logging in (opened when the failure was signalled) is waited for: a fresh one
  // would only start that login later
  const warm = !ready
    ? null
    : Date.now() - ready.at < 2000
      ? await ready.session
      : await Promise.race([ready.session, delay(50).then(() => null)]);
  if (warm?.usable) {
    try {
      await warm.request(req, Math.max(500, cluster.failureDetection.connectTimeoutMs));
      return 'ready';
    } catch (err) {
      if (err instanceof PcpRefused) throw err;
    } finally {
      warm.close();
    }
  } else void ready?.session.then((s) => s?.close());
  try {
    await pcpRequest(await pcpTarget(link), req, pcpTimeoutMs(cluster));
    return 'fresh';
  } catch (err) {
    // a refused login: the password changed on the pool host; read it again next time
    if (err instanceof PcpRefused && /authentication/i.test(err.message)) state.pcpPassword = undefined;
    throw err;
  }
}
