// Does a postgres take sessions: the startup-packet probe pgpool's routing relies on, against
// loopback listeners that answer as postgres does.

import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { acceptsSessions, answerAccepts, startupPacket } from '../../src/drivers/postgres/ready.js';

/** An ErrorResponse as postgres sends it: severity, SQLSTATE, message. */
function errorResponse(code: string, message: string): Buffer {
  const fields = Buffer.from(`SFATAL\0VFATAL\0C${code}\0M${message}\0\0`);
  const head = Buffer.alloc(5);
  head.write('E', 0);
  head.writeInt32BE(4 + fields.length, 1);
  return Buffer.concat([head, fields]);
}
const AUTH_SASL = Buffer.from([0x52, 0, 0, 0, 23, 0, 0, 0, 10, ...Buffer.from('SCRAM-SHA-256\0\0')]);

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A loopback listener that answers the startup packet with `reply` (nothing when null). */
async function listener(reply: Buffer | null): Promise<number> {
  const received: Buffer[] = [];
  const server = createServer((sock) => {
    sock.on('data', (d) => {
      received.push(d);
      if (reply) sock.write(reply);
    });
    sock.on('error', () => undefined);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as { port: number }).port;
}

describe('acceptsSessions', () => {
  it('reads the SQLSTATE: only 57P03 (starting up, not yet accepting, shutting down) refuses', () => {
    expect(
      answerAccepts(errorResponse('57P03', 'the database system is not yet accepting connections')),
    ).toBe(false);
    expect(answerAccepts(errorResponse('28000', 'no pg_hba.conf entry for host'))).toBe(true);
    expect(answerAccepts(AUTH_SASL)).toBe(true);
    // a message cut short tells nothing yet
    expect(answerAccepts(errorResponse('57P03', 'starting up').subarray(0, 12))).toBeUndefined();
  });

  it('sends a protocol 3.0 startup packet with no password', () => {
    const p = startupPacket();
    expect(p.readInt32BE(0)).toBe(p.length);
    expect(p.readInt32BE(4)).toBe(196608);
    expect(p.toString()).not.toMatch(/password/i);
  });

  it('a server starting up refuses, one asking for authentication takes sessions', async () => {
    const starting = await listener(errorResponse('57P03', 'the database system is starting up'));
    const ready = await listener(AUTH_SASL);
    expect(await acceptsSessions('127.0.0.1', starting, 1000)).toBe(false);
    expect(await acceptsSessions('127.0.0.1', ready, 1000)).toBe(true);
  });

  it('no answer within the time, or nothing listening, is no session', async () => {
    const silent = await listener(null);
    const t0 = Date.now();
    expect(await acceptsSessions('127.0.0.1', silent, 200)).toBe(false);
    expect(Date.now() - t0).toBeLessThan(2000);
    const closed = await listener(null);
    servers.pop()!.close();
    expect(await acceptsSessions('127.0.0.1', closed, 500)).toBe(false);
  });
});
