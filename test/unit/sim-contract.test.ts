// The driver contract against the simulated world: the same story the lab drivers must tell.

import { createSimWorld } from '../../src/drivers/sim/drivers.js';
import { SimClock } from '../../src/drivers/sim/clock.js';
import { SimWorld } from '../../src/drivers/sim/world.js';
import { driverContract } from '../contract/driver-contract.js';
import { simSpec } from '../helpers/sim-spec.js';

function simEnv(cluster = simSpec()) {
  const sim = new SimWorld({ clock: new SimClock() });
  const drivers = createSimWorld(sim);
  return {
    world: drivers,
    faults: drivers.faults,
    cluster,
    write: async (via: 'pool' | string, id: number) =>
      sim.write(cluster.name, via === 'pool' ? 'pool' : { node: via }, id).acked,
    eventuallyMs: 0, // every effect is immediate in the sim: check once, never sleep
    cleanup: async () => {},
  };
}

driverContract('sim', async () => simEnv());
driverContract('sim (no slots, no pgpool, no client)', async () => {
  const env = simEnv(simSpec({ name: 'sim2', replication: { slots: false }, pgpool: { enabled: false } }));
  return { ...env, write: undefined };
});
