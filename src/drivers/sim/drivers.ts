// ProviderDriver, PostgresDriver and PoolDriver over a SimWorld. They enforce the preconditions
// real libvirt/postgres/pgpool enforce (an unreachable node cannot be configured, a standby needs
// a writable primary, data is never re-initialised), so a control loop that passes the property
// tests against them does not lean on behaviour the real drivers lack. Every call settles
// replication first: the world is always current when observed or changed.

import { createHash } from 'node:crypto';
import { internal, terminal, transient } from '../../errors.js';
import type {
  PoolBackend,
  PoolObservation,
  PostgresObservation,
  ReplicaStatus,
} from '../../observe/types.js';
import { poolHoldsStandbys, poolVip, type ClusterSpec, type NodeSpec } from '../../spec/types.js';
import type {
  FaultInjector,
  JobContext,
  MachineRef,
  PoolDriver,
  PostgresDriver,
  ProbeResult,
  ProviderDriver,
  World,
} from '../types.js';
import { downObservation } from '../postgres/probe-query.js';
import { syncStandbyNamesValue } from '../postgres/sync-names.js';
import {
  commonPrefixLength,
  isPrefix,
  lsnOf,
  slotNameFor,
  type SimNode,
  type SimPool,
  SimWorld,
} from './world.js';
import { simPoolHosts } from './pool-hosts.js';
import { isInstant, work, type SimWork } from './work.js';

/** JSON with sorted keys: the same spec content always hashes the same. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

const hash = (v: unknown) => createHash('sha256').update(canonical(v)).digest('hex').slice(0, 16);

/**
 * The configHash a correctly configured node reports: the spec parts that end up in its managed
 * files (parameters, pg_hba, the replication user/slot settings in primary_conninfo) plus the
 * node's own identity (listen address, cluster_name). Sync mode and quorum are not in it: they
 * are applied by ensureSyncStandbys and observed as syncStandbyNames, not as drift.
 */
export function desiredConfigHash(cluster: ClusterSpec, node: NodeSpec): string {
  return hash({
    parameters: cluster.postgres.parameters,
    hba: cluster.postgres.hba,
    replication: { user: cluster.replication.user, slots: cluster.replication.slots },
    node: { name: node.name, address: node.address },
  });
}

/** The configHash pgpool reports when configured from this spec. */
export function desiredPoolConfigHash(cluster: ClusterSpec): string {
  return hash({
    pgpool: cluster.pgpool,
    backends: cluster.nodes.map((n) => ({ name: n.name, address: n.address })),
  });
}

/** The sim's faults reach pool hosts too, by name (kill: its pgpool), as the lab's do. */
export interface SimFaults extends FaultInjector {
  kill(cluster: ClusterSpec, machine: MachineRef): Promise<void>;
  partition(cluster: ClusterSpec, machine: MachineRef): Promise<void>;
  heal(cluster: ClusterSpec, machine: MachineRef): Promise<void>;
  stop(cluster: ClusterSpec, machine: MachineRef): Promise<void>;
  start(cluster: ClusterSpec, machine: MachineRef): Promise<void>;
}

export interface SimDrivers extends World {
  faults: SimFaults;
  sim: SimWorld;
  /** The operator process holding these drivers died: the long operations it started report
   *  nothing more (what their processes on the nodes do by themselves still happens). */
  detach(): void;
}

export function createSimWorld(world: SimWorld): SimDrivers {
  const what = (cluster: ClusterSpec, node: string) => `${cluster.name}/${node}`;
  let detached = false;
  const alive = () => !detached;
  /** A long operation of this operator on a node (see work.ts). */
  const longWork = (w: Omit<SimWork, 'alive'>) => work(world, { ...w, alive });

  /** Why the operator cannot reach a node, or null when it can. */
  function unreachable(n: SimNode | undefined): string | null {
    if (!n) return 'machine missing';
    if (n.machine !== 'running') return 'machine not running';
    if (n.partitioned) return 'unreachable: link down';
    if (n.booting) return 'unreachable: still booting';
    return null;
  }

  /** The node, reachable over SSH, with postgres installed; else a transient error. */
  function reach(cluster: ClusterSpec, node: NodeSpec, verb: string, needInstalled = true): SimNode {
    world.settle(cluster.name);
    const n = world.node(cluster.name, node.name);
    const why = unreachable(n);
    if (why !== null) throw transient(`cannot ${verb} ${what(cluster, node.name)}: ${why}`);
    if (needInstalled && !n!.installed)
      throw transient(`cannot ${verb} ${what(cluster, node.name)}: postgres not installed`);
    return n!;
  }

  function done(cluster: ClusterSpec, text: string) {
    world.note(cluster.name, text);
    world.settle(cluster.name);
  }

  /** The node to make a standby and its primary, as ensureStandby needs them; else transient. */
  function standbyAndPrimary(cluster: ClusterSpec, node: NodeSpec, primary: NodeSpec) {
    const n = reach(cluster, node, 'make standby');
    const p = world.node(cluster.name, primary.name);
    const pwhy = unreachable(p);
    const cannot = `cannot make standby ${what(cluster, node.name)}`;
    if (pwhy !== null || !p) throw transient(`${cannot}: primary ${primary.name}: ${pwhy}`);
    if (!p.pg.running) throw transient(`${cannot}: primary ${primary.name}: postgres not running`);
    if (p.pg.inRecovery) throw transient(`${cannot}: ${primary.name} is not writable (in recovery)`);
    return { n, p };
  }

  /** A fresh data directory: initdb's result, started or not. */
  function initdb(n: SimNode, running: boolean) {
    Object.assign(n.pg, {
      initialized: true,
      partial: false,
      systemId: world.newSystemId(),
      running,
      inRecovery: false,
      timeline: 1,
      log: [],
      recs: [],
      upstream: null,
      slotName: null,
      slots: [],
      syncNames: [],
      syncQuorum: 0,
    });
  }

  /** initdb taking time. It goes on by itself if the operator dies (starting the server, the
   *  config files and the slots are the operator's part). Returns the node, reached again. */
  async function initdbInTime(cluster: ClusterSpec, node: NodeSpec, n: SimNode, job?: JobContext) {
    const epoch = (n.dataEpoch = (n.dataEpoch ?? 0) + 1);
    const ours = () => n.dataEpoch === epoch && !n.pg.initialized && !n.pg.partial;
    const remote = () => {
      if (!ours()) return;
      initdb(n, false);
      done(cluster, `postgres initdb ${node.name} finished after its operator died (not started)`);
    };
    const w = { cluster: cluster.name, node: node.name, what: `initdb on ${what(cluster, node.name)}` };
    await longWork({ ...w, kind: 'initdb', needs: 'session', job, remote });
    const again = reach(cluster, node, 'init primary');
    // as initdb: it refuses a directory someone else wrote meanwhile
    if (again !== n || !ours())
      throw terminal(`cannot initialise ${what(cluster, node.name)}: its data directory is not empty`);
    return n;
  }

  /** A clone or rewind taking time. Until it ends the node holds no usable cluster: pg_basebackup
   *  empties the directory first, pg_rewind rewrites it in place; stopped midway (cancelled, its
   *  source gone) it leaves a partial directory, which the next clone empties. An operator that
   *  dies midway leaves it partial too: a copy that ends without the standby files the operator
   *  writes after it is no usable standby either (the real nodeStateScript calls it partial). */
  async function copyInTime(
    cluster: ClusterSpec,
    node: NodeSpec,
    primary: NodeSpec,
    n: SimNode,
    how: 'clone' | 'rewind',
    job?: JobContext,
  ) {
    const epoch = (n.dataEpoch = (n.dataEpoch ?? 0) + 1);
    Object.assign(n.pg, { running: false, streaming: false, initialized: false, partial: true });
    Object.assign(n.pg, { log: [], recs: [], slots: [], syncNames: [], syncQuorum: 0 });
    done(cluster, `postgres ${how} ${node.name} from ${primary.name} begins`);
    const copy = `${how} ${what(cluster, node.name)} from ${primary.name}`;
    const w = { cluster: cluster.name, node: node.name, source: primary.name, what: copy };
    await longWork({ ...w, kind: 'copy', needs: 'session', job });
    if (n.dataEpoch !== epoch)
      throw transient(`cannot ${copy}: another copy took its data directory over meanwhile`);
  }

  function configure(cluster: ClusterSpec, node: NodeSpec, n: SimNode) {
    n.pg.configHash = desiredConfigHash(cluster, node);
  }

  function makeSlots(cluster: ClusterSpec, n: SimNode, standbys: string[]) {
    if (!cluster.replication.slots) return;
    for (const s of standbys) {
      if (s === n.name) continue;
      const slot = slotNameFor(s);
      if (!n.pg.slots.includes(slot)) n.pg.slots.push(slot);
    }
  }

  const provider: ProviderDriver = {
    async observeMachines(cluster) {
      world.settle(cluster.name);
      const out: Record<string, { state: 'missing' | 'running' | 'stopped'; detail?: string }> = {};
      for (const spec of cluster.nodes) {
        const n = world.node(cluster.name, spec.name);
        // As the real providers, a machine is found only through the node it was made for:
        // asked about a node at another address (a made-up spec of a node that left it), the
        // lab refuses to look (its address lies outside the network) and libvirt looks on
        // another host. Strays are found by listMachines.
        if (n?.address !== undefined && n.address !== spec.address) {
          throw terminal(
            `cannot observe machine ${what(cluster, spec.name)}: ` +
              `it was made at ${n.address}, not ${spec.address}`,
          );
        }
        // The hypervisor sees domains, not links: a partitioned machine is simply running.
        out[spec.name] = n
          ? { state: n.machine, detail: n.machineDetail }
          : { state: 'missing', detail: 'no such domain' };
      }
      return out;
    },

    async listMachines(cluster) {
      world.settle(cluster.name);
      const out: Record<
        string,
        { state: 'missing' | 'running' | 'stopped'; detail?: string; address?: string }
      > = {};
      for (const n of world.clusterNames().includes(cluster.name)
        ? world.state(cluster.name).nodes.values()
        : []) {
        out[n.name] = {
          state: n.machine,
          detail: n.machineDetail,
          ...(n.address !== undefined ? { address: n.address } : {}),
        };
      }
      return out;
    },

    async ensureMachine(cluster, node, job) {
      world.settle(cluster.name);
      poolHostsOf.ensureMachines(cluster);
      const n = world.node(cluster.name, node.name);
      const bootMs = world.jobDuration(cluster.name, node.name, 'machine');
      if (!n) {
        world.boot(cluster.name, world.createNode(cluster.name, node.name, node.address), bootMs);
        done(cluster, `provider create ${node.name}`);
      } else if (n.machine === 'stopped') {
        world.powerOn(n);
        world.boot(cluster.name, n, bootMs);
        done(cluster, `provider start ${node.name}`);
      } else if (!n.booting) return;
      if (isInstant(world, cluster.name, node.name, 'machine')) return;
      // as the real providers: the domain is up, then its SSH is waited for
      const boot = `boot ${what(cluster, node.name)}`;
      await longWork({
        cluster: cluster.name,
        node: node.name,
        kind: 'machine',
        what: boot,
        needs: 'machine',
        job,
      });
      reach(cluster, node, 'boot', false);
    },

    async fenceMachine(cluster, node) {
      // Out of band (the hypervisor): works on partitioned nodes too.
      world.settle(cluster.name);
      const n = world.node(cluster.name, node.name);
      if (!n || n.machine !== 'running') return;
      world.powerOff(n, 'domain shut off (fenced)');
      done(cluster, `provider fence ${node.name}`);
    },

    async deleteMachine(cluster, node, job) {
      world.settle(cluster.name);
      if (!world.node(cluster.name, node.name)) return;
      if (!isInstant(world, cluster.name, node.name, 'delete')) {
        const remove = `remove ${what(cluster, node.name)}`;
        await longWork({
          cluster: cluster.name,
          node: node.name,
          kind: 'delete',
          what: remove,
          needs: 'nothing',
          job,
        });
        if (!world.node(cluster.name, node.name)) return;
      }
      world.removeNode(cluster.name, node.name);
      done(cluster, `provider delete ${node.name}`);
    },

    async deleteClusterResources(cluster) {
      const left = [...world.state(cluster.name).nodes.keys()];
      if (left.length > 0) {
        throw transient(
          `cannot delete resources of cluster ${cluster.name}: machines still exist (${left.join(', ')})`,
        );
      }
      world.dropCluster(cluster.name);
    },

    async close() {},
  };

  const lastProbe = new Map<string, ProbeResult>();
  const probeNow = (cluster: ClusterSpec, node: NodeSpec): ProbeResult => {
    world.settle(cluster.name);
    const key = `${cluster.name}/${node.name}`;
    const n = world.node(cluster.name, node.name);
    const why = unreachable(n);
    const told = world.postmasterNews.delete(key);
    if (why !== null || !n) return { reachable: false, postgres: null, error: why ?? 'machine missing' };
    if (!n.installed) return { reachable: true, postgres: null, error: 'postgres not installed' };
    // the news makes the failure certain (the whole miss budget at once), as in the real driver
    if (told && !n.pg.running)
      return {
        reachable: true,
        postgres: observe(cluster, n),
        error: 'postgres: the postmaster exited (its backend said so)',
        gone: true,
      };
    return { reachable: true, postgres: observe(cluster, n) };
  };

  const postgres: PostgresDriver = {
    async probe(cluster, node, opts = {}) {
      const key = `${cluster.name}/${node.name}`;
      // Accepting an older answer: the sim hands out its last one whatever its age, the
      // stalest a real driver could (property tests check that nothing unsafe follows).
      const last = lastProbe.get(key);
      if (opts.maxAgeMs !== undefined && last) return last;
      const result = probeNow(cluster, node);
      lastProbe.set(key, result);
      return result;
    },

    postmasterDeaths(cluster) {
      return cluster.nodes
        .filter((n) => world.postmasterNews.has(`${cluster.name}/${n.name}`))
        .map((n) => n.name);
    },

    desiredConfigHash,

    async ensureInstalled(cluster, node, job) {
      const n = reach(cluster, node, 'install postgres on', false);
      if (n.installed) return;
      const installed = () => {
        n.installed = true;
        done(cluster, `postgres install ${node.name}`);
      };
      if (!isInstant(world, cluster.name, node.name, 'install')) {
        const install = `install postgres on ${what(cluster, node.name)}`;
        // the package manager on the node goes on if the operator dies
        const w = { cluster: cluster.name, node: node.name, kind: 'install' as const, what: install };
        await longWork({ ...w, needs: 'session', job, remote: installed });
        reach(cluster, node, 'install postgres on', false);
      }
      installed();
    },

    async ensurePrimary(cluster, node, standbys, job) {
      let n = reach(cluster, node, 'init primary');
      if (!n.pg.initialized) {
        if (n.pg.partial) {
          // as the real driver: initdb never writes over files it does not know
          const why = 'its data directory is not empty and holds no database cluster (an interrupted clone)';
          throw terminal(`cannot initialise ${what(cluster, node.name)}: ${why}`);
        }
        if (!isInstant(world, cluster.name, node.name, 'initdb'))
          n = await initdbInTime(cluster, node, n, job);
        // initdb (checksums on), configure, start.
        initdb(n, true);
        configure(cluster, node, n);
        makeSlots(cluster, n, standbys);
        done(cluster, `postgres initdb+start primary ${node.name}`);
        return;
      }
      const pg = n.pg;
      if (pg.inRecovery) {
        // pgop never re-initialises data, and a standby becomes primary only through promote.
        throw terminal(
          `cannot init primary ${what(cluster, node.name)}: ` +
            `its data directory holds a standby; promote it instead`,
        );
      }
      // Already a primary: (re)configure, start if down. Starting an old primary that another
      // node has since replaced creates split brain, exactly as real postgres would.
      const before = `${pg.configHash} ${pg.slots.join()}`;
      configure(cluster, node, n);
      makeSlots(cluster, n, standbys);
      if (!pg.running) {
        pg.running = true;
        done(cluster, `postgres start primary ${node.name}`);
      } else if (`${pg.configHash} ${pg.slots.join()}` !== before)
        done(cluster, `postgres reconfigure primary ${node.name}`);
    },

    async ensureStandby(cluster, node, primary, job) {
      if (node.name === primary.name)
        throw internal(`cannot make ${what(cluster, node.name)} a standby: it is the primary named`);
      let { n, p } = standbyAndPrimary(cluster, node, primary);
      let how: 'clone' | 'rewind' | 'reconfigure' | 'repoint';
      // pg_basebackup (also the fallback when pg_rewind cannot relate the two clusters); pg_rewind
      // goes back to the last common record, then the primary's WAL is replayed
      if (!n.pg.initialized || n.pg.systemId !== p.pg.systemId) how = 'clone';
      else if (!isPrefix(n.pg, p.pg)) how = 'rewind';
      else if (n.pg.upstream === primary.name && n.pg.inRecovery && n.pg.running) {
        if (n.pg.configHash === desiredConfigHash(cluster, node)) return; // already following it
        how = 'reconfigure';
      } else how = 'repoint';
      if (how === 'clone' || how === 'rewind') {
        const common = how === 'rewind' ? commonPrefixLength(n.pg, p.pg) : 0;
        if (!isInstant(world, cluster.name, node.name, 'copy')) {
          const copying = n;
          await copyInTime(cluster, node, primary, n, how, job);
          ({ n, p } = standbyAndPrimary(cluster, node, primary));
          if (n !== copying) throw transient(`cannot make standby ${what(cluster, node.name)}: replaced`);
        }
        // the primary's log only grew meanwhile (the copy failed otherwise): a clone takes all of it
        world.copyLog(n, p, how === 'rewind' ? common : p.pg.log.length);
        // stale pg_replslot entries are emptied (lab notes)
        Object.assign(n.pg, { initialized: true, partial: false, systemId: p.pg.systemId, slots: [] });
      }
      const pg = n.pg;

      // postgresql.auto.conf is rewritten with this node's standby settings only (the copied one
      // carries the source's slot name and synchronous_standby_names).
      pg.timeline = how === 'reconfigure' ? pg.timeline : p.pg.timeline;
      pg.inRecovery = true;
      pg.upstream = primary.name;
      pg.slotName = cluster.replication.slots ? slotNameFor(node.name) : null;
      pg.syncNames = [];
      pg.syncQuorum = 0;
      pg.running = true;
      configure(cluster, node, n);
      // As the real driver: the slot is made on the primary first (slots are not replicated,
      // so after a failover the new primary has none), and the call returns only once the
      // standby streams.
      makeSlots(cluster, p, [node.name]);
      world.settle(cluster.name);
      done(cluster, `postgres ${how} standby ${node.name} -> ${primary.name}`);
      if (!pg.streaming)
        throw transient(
          `cannot make standby ${what(cluster, node.name)}: it does not stream from ${primary.name}`,
        );
    },

    async ensureConfigured(cluster, node) {
      const n = reach(cluster, node, 'configure');
      if (!n.pg.initialized)
        throw transient(`cannot configure ${what(cluster, node.name)}: no data directory yet`);
      if (!n.pg.running) {
        // Started in place: a primary as a primary, a standby (standby.signal) in recovery.
        n.pg.running = true;
        configure(cluster, node, n);
        world.settle(cluster.name);
        done(cluster, `postgres start ${node.name} in place (${n.pg.inRecovery ? 'standby' : 'primary'})`);
        return;
      }
      if (n.pg.configHash === desiredConfigHash(cluster, node)) return;
      // Files rewritten; a running server reloads, a stopped one picks them up at its next start.
      configure(cluster, node, n);
      done(cluster, `postgres configure ${node.name}`);
    },

    async promote(cluster, node) {
      const n = reach(cluster, node, 'promote');
      const pg = n.pg;
      if (!pg.initialized) throw transient(`cannot promote ${what(cluster, node.name)}: no data directory`);
      if (!pg.running) throw transient(`cannot promote ${what(cluster, node.name)}: postgres not running`);
      if (!pg.inRecovery) return; // already a primary: idempotent
      // Promotion replays what was received and opens the next timeline.
      pg.inRecovery = false;
      pg.timeline += 1;
      pg.upstream = null;
      pg.slotName = null;
      pg.streaming = false;
      done(cluster, `postgres promote ${node.name} (timeline ${pg.timeline})`);
    },

    async demote(cluster, node) {
      const n = reach(cluster, node, 'demote');
      const pg = n.pg;
      // Idempotent: the goal is "not a running primary". A standby is left alone.
      if (!pg.running || pg.inRecovery) return;
      // Fast shutdown: walsenders ship everything to connected standbys first; settle did.
      world.settle(cluster.name);
      pg.running = false;
      done(cluster, `postgres demote ${node.name} (clean shutdown)`);
    },

    async ensureSyncStandbys(cluster, primary, names, quorum) {
      const n = reach(cluster, primary, 'set synchronous standbys on');
      if (!n.pg.running)
        throw transient(
          `cannot set synchronous standbys on ${what(cluster, primary.name)}: postgres not running`,
        );
      if (n.pg.inRecovery)
        throw transient(`cannot set synchronous standbys on ${what(cluster, primary.name)}: not a primary`);
      if (names.length > 0 && (!Number.isInteger(quorum) || quorum < 1)) {
        throw terminal(
          `cannot set synchronous standbys on ${what(cluster, primary.name)}: ` +
            `quorum must be a positive integer, got ${quorum}`,
        );
      }
      // Names that do not stream yet are accepted, as postgres does: writes then hang.
      const sameNames =
        n.pg.syncNames.length === names.length && names.every((s, i) => n.pg.syncNames[i] === s);
      if (sameNames && (names.length === 0 || n.pg.syncQuorum === quorum)) return;
      n.pg.syncNames = [...names];
      n.pg.syncQuorum = names.length === 0 ? 0 : quorum;
      done(cluster, `postgres sync standbys ${primary.name} = '${syncStandbyNamesValue(names, quorum)}'`);
    },

    slotName: slotNameFor,

    async ensureSlots(cluster, primary, standbys) {
      const n = reach(cluster, primary, 'manage slots on');
      if (!n.pg.running)
        throw transient(`cannot manage slots on ${what(cluster, primary.name)}: postgres not running`);
      const inSpec = new Set(cluster.nodes.map((s) => slotNameFor(s.name)));
      // Slots of nodes no longer in the spec go (WAL retention is not modelled); slots are off
      // altogether when the spec says so.
      // As postgres: a slot a standby still streams through (active) cannot be dropped.
      const active = new Set(
        [...world.state(cluster.name).nodes.values()]
          .filter((s) => s.pg.streaming && s.pg.upstream === n.name)
          .map((s) => slotNameFor(s.name)),
      );
      const kept = n.pg.slots.filter((s) => (cluster.replication.slots && inSpec.has(s)) || active.has(s));
      const before = n.pg.slots.join(',');
      n.pg.slots = kept;
      makeSlots(cluster, n, standbys);
      if (n.pg.slots.join(',') !== before)
        done(cluster, `postgres slots ${primary.name} = [${n.pg.slots.join(', ')}]`);
    },

    async close() {},
  };

  function observe(cluster: ClusterSpec, n: SimNode): PostgresObservation {
    const pg = n.pg;
    if (!pg.initialized) return { ...downObservation(false, false), configHash: pg.configHash };
    const replicas: ReplicaStatus[] = [];
    if (pg.running && !pg.inRecovery) {
      for (const s of world.state(cluster.name).nodes.values()) {
        if (!s.pg.streaming || s.pg.upstream !== n.name) continue;
        const lsn = lsnOf(s.pg.log.length);
        replicas.push({
          name: s.name,
          state: 'streaming',
          syncState: pg.syncNames.includes(s.name) ? 'quorum' : 'async',
          flushLsn: lsn,
          replayLsn: lsn,
        });
      }
    }
    // A stopped server still has a control file and config files: timeline, LSN and role read
    // from there (pg_controldata), as a real probe over SSH can.
    return {
      initialized: true,
      running: pg.running,
      inRecovery: pg.inRecovery,
      timeline: pg.timeline,
      lsn: lsnOf(pg.log.length),
      receiveLsn: pg.streaming ? lsnOf(pg.log.length) : 0,
      upstream: pg.inRecovery ? pg.upstream : null,
      streaming: pg.streaming,
      replicas,
      syncStandbyNames: syncStandbyNamesValue(pg.syncNames, pg.syncQuorum),
      configHash: pg.configHash,
      // read with SQL, as the real probe does: only from a running server
      ...(pg.running ? { slots: [...pg.slots] } : {}),
    };
  }

  /** What pgpool reports: every backend it was configured with, up unless held down (pgop runs
   *  it without health checks: a node that died is up until pgop detaches it). */
  function poolView(cluster: ClusterSpec, p: SimPool): PoolObservation {
    const backends: PoolBackend[] = cluster.nodes.map((spec) => {
      if (!p.backends.includes(spec.name))
        return { name: spec.name, status: 'unused' as const, role: 'unknown' as const };
      const n = world.node(cluster.name, spec.name);
      // pgop keeps standbys detached when pgpool balances no load to them
      const detached = !poolHoldsStandbys(cluster.pgpool) && spec.name !== p.primary;
      if (detached || p.detached.includes(spec.name))
        return { name: spec.name, status: 'down' as const, role: 'unknown' as const };
      // held up, dead or alive: its role is the last pgpool saw
      return {
        name: spec.name,
        status: 'up' as const,
        role: !n ? ('unknown' as const) : n.pg.inRecovery ? ('standby' as const) : ('primary' as const),
      };
    });
    // As pgpool: it reports every backend it was configured with; one the spec no longer names
    // is known by its host address only (the real driver names backends from the spec).
    for (const name of p.backends) {
      if (cluster.nodes.some((s) => s.name === name)) continue;
      const n = world.node(cluster.name, name);
      const status = n && world.linkUp(n) && n.pg.running ? ('up' as const) : ('down' as const);
      backends.push({
        name: n?.address ?? name,
        status,
        role: status === 'up' ? (n!.pg.inRecovery ? 'standby' : 'primary') : 'unknown',
      });
    }
    return { reachable: true, primary: p.primary, backends, configHash: p.configHash };
  }

  const configuredPool = (
    cluster: ClusterSpec,
    primary: string | null,
    failed: readonly string[],
    prev: SimPool | null,
  ): SimPool => ({
    running: true,
    primary,
    backends: cluster.nodes.map((n) => n.name),
    detached: detachedAfter(cluster, primary, failed, prev),
    configHash: desiredPoolConfigHash(cluster),
  });

  /** The nodes pgpool holds down after ensurePool, as the real driver leaves them: the ones pgop
   *  saw fail, and the ones it cannot reach that pgpool held down, or finds down as it starts or
   *  switches primary (a PCP promote marks every other node down); a node is attached only while
   *  its postgres answers. */
  function detachedAfter(
    cluster: ClusterSpec,
    primary: string | null,
    failed: readonly string[],
    prev: SimPool | null,
  ): string[] {
    const starts =
      !prev?.running || prev.configHash !== desiredPoolConfigHash(cluster) || prev.primary !== primary;
    return cluster.nodes
      .map((n) => n.name)
      .filter((name) => {
        if (name === primary) return false;
        if (failed.includes(name)) return true;
        const n = world.node(cluster.name, name);
        const answers = !!n && world.linkUp(n) && n.pg.running;
        return !answers && (starts || prev.detached.includes(name));
      });
  }

  const samePool = (a: SimPool | null, b: SimPool) =>
    !!a?.running &&
    a.primary === b.primary &&
    a.configHash === b.configHash &&
    a.backends.join() === b.backends.join() &&
    a.detached.join() === b.detached.join();

  const poolHostsOf = simPoolHosts(world, {
    view: poolView,
    configured: configuredPool,
    same: samePool,
    configHash: desiredPoolConfigHash,
  });

  const pool: PoolDriver = {
    desiredConfigHash: (cluster) => desiredPoolConfigHash(cluster),
    async observe(cluster) {
      world.settle(cluster.name);
      if (poolVip(cluster)) return poolHostsOf.observe(cluster);
      const p = world.state(cluster.name).pool;
      if (!p || !p.running) {
        return {
          reachable: false,
          primary: null,
          backends: [],
          configHash: p?.configHash ?? '',
          error: p ? 'pgpool not running' : 'pgpool not configured',
        };
      }
      return poolView(cluster, p);
    },

    async ensurePool(cluster, primary, failed = [], host) {
      world.settle(cluster.name);
      if (primary !== null && !cluster.nodes.some((n) => n.name === primary)) {
        throw internal(
          `cannot configure pgpool of ${cluster.name}: primary ${primary} is not a node of the spec`,
        );
      }
      if (poolVip(cluster)) {
        await poolHostsOf.ensurePool(cluster, primary, failed, host);
        return world.settle(cluster.name);
      }
      const c = world.state(cluster.name);
      const prev = c.pool;
      const next = configuredPool(cluster, primary, failed, prev);
      if (samePool(prev, next)) return;
      c.pool = next;
      done(
        cluster,
        `pgpool ${prev ? (prev.running ? 'reconfigure' : 'restart') : 'start'} primary=${primary ?? '-'}`,
      );
    },

    moveVip: (cluster, holder) => poolHostsOf.moveVip(cluster, holder),
    startHost: (cluster, host) => poolHostsOf.startHost(cluster, host),

    async deletePool(cluster) {
      const c = world.state(cluster.name);
      poolHostsOf.deletePool(cluster);
      if (!c.pool) return;
      c.pool = null;
      world.note(cluster.name, 'pgpool delete');
    },

    async close() {},
  };

  const faults: SimFaults = {
    kill: async (cluster, m) => world.kill(cluster.name, m),
    partition: async (cluster, m) => world.partition(cluster.name, m),
    heal: async (cluster, m) => world.heal(cluster.name, m),
    stop: async (cluster, m) => world.stop(cluster.name, m),
    start: async (cluster, m) => world.start(cluster.name, m),
  };

  const detach = () => {
    detached = true;
  };
  return { provider, postgres, pool, faults, sim: world, detach };
}
