// The sim's pgpool on several pool hosts (spec.pgpool.hosts), reported and moved the way the real
// SshPoolDriver (src/drivers/pgpool/pool-hosts.ts) does: each look reports every host's port
// ('silent' when down or cut off, counted per look; 'refused' when its pgpool is dead) and the
// virtual IP's place as last read over SSH, then reads it again (the real read runs in the
// background: the look takes the previous answer, and an unreachable host keeps its last one).
// Moving the address drops it everywhere else first, powering off a host SSH cannot reach.

import { transient } from '../../errors.js';
import type { PoolHostObservation, PoolObservation } from '../../observe/types.js';
import { poolHostNode, poolHosts, poolVip, type ClusterSpec } from '../../spec/types.js';
import type { SimPool, SimPoolHost, SimWorld } from './world.js';

/** What the single-pgpool sim driver lends: a pgpool's view, and the pgpool a spec configures. */
export interface SimPgpoolParts {
  view(cluster: ClusterSpec, p: SimPool): PoolObservation;
  configured(
    cluster: ClusterSpec,
    primary: string | null,
    failed: readonly string[],
    prev: SimPool | null,
  ): SimPool;
  same(a: SimPool | null, b: SimPool): boolean;
  configHash(cluster: ClusterSpec): string;
}

/** The operator's memory of one pool host (lost with the operator, as the real driver's). */
interface HostLook {
  holds: boolean | null;
  shellReachable: boolean;
  silentLooks: number;
}

type Port = PoolHostObservation['port'];

const lostView = (error: string): PoolObservation => ({
  reachable: false,
  primary: null,
  backends: [],
  configHash: '',
  error,
});

export function simPoolHosts(world: SimWorld, parts: SimPgpoolParts) {
  const looks = new Map<string, HostLook>();
  const lookOf = (cluster: ClusterSpec, host: string): HostLook => {
    const key = `${cluster.name}/${host}`;
    let l = looks.get(key);
    if (!l) looks.set(key, (l = { holds: null, shellReachable: true, silentLooks: 0 }));
    return l;
  };

  const portOf = (h: SimPoolHost | undefined): Port =>
    !world.poolHostUp(h) ? 'silent' : h.pgpool?.running ? 'open' : 'refused';

  const unreachable = (cluster: ClusterSpec, name: string): string | null => {
    const h = world.poolHost(cluster.name, name);
    if (!h) return 'machine missing';
    if (world.poolHostMachine(h) !== 'running') return 'machine not running';
    return world.poolHostUp(h) ? null : 'unreachable: link down';
  };

  function lookAt(cluster: ClusterSpec, name: string): PoolHostObservation {
    const h = world.poolHost(cluster.name, name);
    const l = lookOf(cluster, name);
    const port = portOf(h);
    l.silentLooks = port === 'silent' ? l.silentLooks + 1 : 0;
    // as the real driver: a host last unreachable whose port answers again waits for its read
    if (port !== 'silent' && !l.shellReachable) readVip(h, l);
    const view = port === 'open' ? parts.view(cluster, h!.pgpool!) : lostView(`pgpool's port ${port}`);
    const look: PoolHostObservation = {
      ...view,
      name,
      port,
      // the sim's pgpool is never busy: PCP answers exactly when its port does
      pcpPort: port,
      silentLooks: l.silentLooks,
      // the sim's pgpool answers whenever its port accepts
      unansweredLooks: 0,
      holdsVip: l.holds,
      shellReachable: l.shellReachable,
      machine: h ? world.poolHostMachine(h) : 'missing',
    };
    // the SSH read the look started ends after it
    readVip(h, l);
    return look;
  }

  function readVip(h: SimPoolHost | undefined, l: HostLook): void {
    l.shellReachable = world.poolHostUp(h);
    if (l.shellReachable) l.holds = h!.holdsVip;
  }

  /** The holder as last read (the real driver's serving host). */
  const servingHost = (cluster: ClusterSpec): string | undefined =>
    poolHosts(cluster).find((h) => lookOf(cluster, h.name).holds === true)?.name;

  function ensureOn(
    cluster: ClusterSpec,
    name: string,
    primary: string | null,
    failed: readonly string[],
  ): void {
    const why = unreachable(cluster, name);
    if (why !== null)
      throw transient(`cannot configure pgpool on pool host ${name} of ${cluster.name}: ${why}`);
    const h = world.poolHost(cluster.name, name)!;
    const prev = h.pgpool;
    const next = parts.configured(cluster, primary, failed, prev);
    if (parts.same(prev, next)) return;
    h.pgpool = next;
    world.note(
      cluster.name,
      `pgpool on ${name} ${prev?.running ? 'reconfigure' : 'start'} primary=${primary ?? '-'}`,
    );
  }

  /** The address off one host: over SSH, else by powering it off (fence). */
  function dropVip(cluster: ClusterSpec, name: string): void {
    const l = lookOf(cluster, name);
    // known not to hold it: nothing to take off (only the driver adds the address)
    if (l.holds === false) return;
    const h = world.poolHost(cluster.name, name);
    if (l.silentLooks === 0 && world.poolHostUp(h)) {
      h.holdsVip = false;
      Object.assign(l, { holds: false, shellReachable: true });
      return;
    }
    if (h && world.poolHostMachine(h) === 'running') {
      world.powerOffPoolHost(h);
      world.note(cluster.name, `provider fence pool host ${name} (the virtual IP cannot be taken off it)`);
    }
    Object.assign(l, { holds: false, shellReachable: false });
  }

  return {
    async observe(cluster: ClusterSpec): Promise<PoolObservation> {
      const all = poolHosts(cluster).map((h) => lookAt(cluster, h.name));
      const holders = all.filter((l) => l.holdsVip === true);
      const main = (holders.length === 1 ? holders[0] : undefined) ?? all.find((l) => l.reachable) ?? all[0]!;
      const { reachable, primary, backends, configHash, error } = main;
      return { reachable, primary, backends, configHash, ...(error ? { error } : {}), hosts: all };
    },

    /** One host, or every one that looked alive and the holder (which must listen). */
    async ensurePool(
      cluster: ClusterSpec,
      primary: string | null,
      failed: readonly string[],
      host?: string,
    ): Promise<void> {
      if (host !== undefined) return ensureOn(cluster, host, primary, failed);
      const serving = servingHost(cluster);
      const port = serving === undefined ? 'open' : portOf(world.poolHost(cluster.name, serving));
      if (port !== 'open')
        throw transient(
          `cannot route pgpool of ${cluster.name}: pool host ${serving}, which holds the virtual IP, ` +
            `is down (its port ${port}): the address moves first`,
        );
      const alive = (n: string) => lookOf(cluster, n).shellReachable && lookOf(cluster, n).silentLooks === 0;
      // as the real driver: beside a serving host, one that needs configuring is its own job's
      const routesOnly = (n: string) => {
        const running = world.poolHost(cluster.name, n)?.pgpool;
        return !!running?.running && running.configHash === parts.configHash(cluster);
      };
      const names = poolHosts(cluster)
        .map((h) => h.name)
        .filter((n) => n === serving || (alive(n) && (serving === undefined || routesOnly(n))));
      if (names.length === 0) throw transient(`cannot route pgpool of ${cluster.name}: no pool host answers`);
      const failures = names.flatMap((n) => {
        try {
          ensureOn(cluster, n, primary, failed);
          return [];
        } catch (err) {
          return [{ n, err }];
        }
      });
      // as the real driver: the holder's failure, or everyone's, fails the step
      const fatal =
        failures.find((f) => f.n === serving) ?? (failures.length === names.length ? failures[0] : undefined);
      if (fatal) throw fatal.err;
    },

    async moveVip(cluster: ClusterSpec, holder: string): Promise<void> {
      const vip = poolVip(cluster);
      if (!vip) return;
      for (const h of poolHosts(cluster)) if (h.name !== holder) dropVip(cluster, h.name);
      const why = unreachable(cluster, holder);
      if (why !== null)
        throw transient(`cannot put ${vip} on pool host ${holder} of ${cluster.name}: ${why}`);
      world.poolHost(cluster.name, holder)!.holdsVip = true;
      Object.assign(lookOf(cluster, holder), { holds: true, shellReachable: true });
      world.note(cluster.name, `virtual IP ${vip} moved to ${holder}`);
    },

    async startHost(cluster: ClusterSpec, name: string): Promise<void> {
      if (poolHostNode(cluster, name))
        throw transient(`cannot start pool host ${name} of ${cluster.name}: it is a node's machine`);
      const spec = poolHosts(cluster).find((h) => h.name === name);
      if (!spec) throw transient(`cannot start pool host ${name} of ${cluster.name}: not in the spec`);
      const h = world.poolHost(cluster.name, name);
      if (!h) world.createPoolHost(cluster.name, name, spec.address);
      else h.machine = 'running';
      // as the real driver: the providers return once its SSH answers
      lookOf(cluster, name).shellReachable = true;
      world.note(cluster.name, `provider start pool host ${name}`);
    },

    /** Made along with the first node, as the real providers do. */
    ensureMachines(cluster: ClusterSpec): void {
      if (!poolVip(cluster)) return;
      for (const h of poolHosts(cluster))
        if (!world.poolHost(cluster.name, h.name))
          world.createPoolHost(cluster.name, h.name, h.address, !!poolHostNode(cluster, h.name));
    },

    deletePool(cluster: ClusterSpec): void {
      for (const h of world.state(cluster.name).poolHosts ?? []) h.pgpool = null;
    },
  };
}
