// One TCP connect, classified: the difference between a refused and a silent port is what tells
// a dead process on a live host from a host that is down or cut off.

import { createConnection } from 'node:net';

export type PortState = 'open' | 'refused' | 'silent';

/** A TCP connect to host:port: accepted, refused (nothing listens), or no answer in time. */
export function tcpPortState(host: string, port: number, timeoutMs: number): Promise<PortState> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    const done = (state: PortState) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(state);
    };
    const timer = setTimeout(() => done('silent'), timeoutMs);
    socket.once('connect', () => done('open'));
    socket.once('error', (err: NodeJS.ErrnoException) =>
      done(err.code === 'ECONNREFUSED' ? 'refused' : 'silent'),
    );
  });
}
