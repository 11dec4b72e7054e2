// Does a postgres accept sessions? A TCP connect is not enough: a standby that is starting up
// (not yet consistent) or shutting down accepts the connection and then refuses every session
// with SQLSTATE 57P03, and pgpool, which opens each session on all its backends, fails every
// session while it holds such a node up. This asks as pg_isready does: a startup packet, and
// the first answer read. No credentials are sent; an authentication request or any other
// refusal (pg_hba: TLS only) means the server would take a session.

import { connect } from 'node:net';

/** The startup packet of protocol 3.0 for a user that need not exist. */
export function startupPacket(): Buffer {
  const params = Buffer.from('user\0pgop_ready\0database\0postgres\0application_name\0pgop-ready\0\0');
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + params.length, 0);
  head.writeInt32BE(196608, 4);
  return Buffer.concat([head, params]);
}

/** From the bytes received so far: whether the server takes sessions (undefined: too few bytes
 *  to tell). Only "cannot connect now" (57P03: starting up, not yet accepting connections,
 *  shutting down, in recovery mode) counts as a refusal. */
export function answerAccepts(buf: Buffer): boolean | undefined {
  if (buf.length < 5) return undefined;
  if (buf[0] !== 0x45 /* 'E' */) return true;
  const len = buf.readInt32BE(1);
  if (buf.length < 1 + len) return undefined;
  for (let i = 5; i < 1 + len && buf[i] !== 0;) {
    const end = buf.indexOf(0, i + 1);
    if (end < 0) break;
    if (buf[i] === 0x43 /* 'C' */) return buf.toString('utf8', i + 1, end) !== '57P03';
    i = end + 1;
  }
  return true;
}

/** Whether postgres at host:port takes sessions now; false when it does not answer in time. */
export function acceptsSessions(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    let received = Buffer.alloc(0);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('connect', () => socket.write(startupPacket()));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const verdict = answerAccepts(received);
      if (verdict !== undefined) done(verdict);
    });
    socket.once('error', () => done(false));
    socket.once('end', () => done(answerAccepts(received) ?? false));
  });
}
