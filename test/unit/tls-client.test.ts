// The operator's pg connections against a stand-in server on loopback: verify-full refuses a
// certificate of another CA or for another address (with words that say so, before anything is
// sent), and a server that asks for a clear-text or MD5 password gets neither.

import { createServer, type Server, type Socket } from 'node:net';
import { TLSSocket, createSecureContext } from 'node:tls';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createCa, issueServer, type Pem } from '../../src/tls/ca.js';
import { clientTls, explainTlsError } from '../../src/tls/client.js';
import { newClient } from '../../src/drivers/pg-clients.js';

interface Seen {
  startup: boolean;
  /** bytes the client sent after the startup message */
  after: Buffer;
}

/** A server that speaks just enough of the protocol: SSLRequest -> 'S' -> TLS with `cert`, reads
 *  the startup message, then asks for a password of `auth` kind (3 clear text, 5 MD5). */
function fakePostgres(cert: Pem | null, auth: 3 | 5): Promise<{ server: Server; port: number; seen: Seen }> {
  const seen: Seen = { startup: false, after: Buffer.alloc(0) };
  const server = createServer((raw: Socket) => {
    raw.once('data', (first) => {
      // 8 bytes: length 8, code 80877103 (SSLRequest)
      const isSsl = first.length >= 8 && first.readInt32BE(4) === 80877103;
      let sock: Socket | TLSSocket = raw;
      const onStartup = () => {
        let buf = Buffer.alloc(0);
        sock.on('data', (d: Buffer) => {
          if (!seen.startup) {
            buf = Buffer.concat([buf, d]);
            if (buf.length >= 4 && buf.length >= buf.readInt32BE(0)) {
              seen.startup = true;
              const req =
                auth === 3
                  ? Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 3])
                  : Buffer.from([0x52, 0, 0, 0, 12, 0, 0, 0, 5, 1, 2, 3, 4]);
              sock.write(req);
            }
          } else seen.after = Buffer.concat([seen.after, d]);
        });
      };
      if (isSsl && cert) {
        raw.write('S');
        sock = new TLSSocket(raw, {
          isServer: true,
          secureContext: createSecureContext({ cert: cert.cert, key: cert.key }),
        });
        sock.on('error', () => {});
        onStartup();
      } else if (isSsl) {
        raw.write('N');
        onStartup();
      }
    });
    raw.on('error', () => {});
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({ server, port: (server.address() as { port: number }).port, seen }),
    ),
  );
}

describe('operator connections: verify-full and SCRAM only', () => {
  let ca: Pem;
  let other: Pem;
  let good: Pem;
  let foreign: Pem;
  let wrongAddress: Pem;
  let server: Server | null = null;
  beforeAll(async () => {
    const now = new Date();
    ca = await createCa('t', now, 30);
    other = await createCa('t', now, 30);
    good = await issueServer(ca, { name: 'pg01', ips: ['127.0.0.1'] }, now, 2);
    foreign = await issueServer(other, { name: 'pg01', ips: ['127.0.0.1'] }, now, 2);
    wrongAddress = await issueServer(ca, { name: 'pg01', ips: ['127.0.0.2'] }, now, 2);
  });
  afterEach(() => {
    server?.close();
    server = null;
  });

  const connect = async (port: number) => {
    const c = newClient({
      host: '127.0.0.1',
      port,
      user: 'postgres',
      password: 'the-secret-password',
      database: 'postgres',
      ssl: clientTls(ca.cert, { name: 'pg01', address: '127.0.0.1' }),
      connectionTimeoutMillis: 3000,
    });
    c.on('error', () => {});
    try {
      await c.connect();
      return null;
    } catch (err) {
      return err as Error & { code?: string };
    } finally {
      await c.end().catch(() => {});
    }
  };

  it(
    'a certificate of another CA is refused before the startup message: ' + '"not issued by the cluster CA"',
    async () => {
      const f = await fakePostgres(foreign, 5);
      server = f.server;
      const err = await connect(f.port);
      expect(err).not.toBeNull();
      expect(explainTlsError(err, 'pg01')).toMatch(
        /^TLS: the server certificate of pg01 is refused: not issued by the cluster CA/,
      );
      expect(f.seen.startup).toBe(false);
    },
  );

  it(
    'a certificate of the cluster CA for another address is refused: ' + 'it "does not name" the address',
    async () => {
      const f = await fakePostgres(wrongAddress, 5);
      server = f.server;
      const err = await connect(f.port);
      expect(err?.message).toMatch(/the certificate of pg01 does not name 127\.0\.0\.1/);
      expect(explainTlsError(err)).toMatch(/issued for another host/);
      expect(f.seen.startup).toBe(false);
    },
  );

  it('a server that does not speak TLS is refused (no fallback to clear text)', async () => {
    const f = await fakePostgres(null, 3);
    server = f.server;
    const err = await connect(f.port);
    expect(err?.message).toMatch(/does not support SSL/);
    expect(f.seen.startup).toBe(false);
  });

  for (const [kind, auth] of [
    ['clear-text', 3],
    ['MD5', 5],
  ] as const) {
    it(`a server with a good certificate that asks for a ${kind} password gets none`, async () => {
      const f = await fakePostgres(good, auth);
      server = f.server;
      const err = await connect(f.port);
      expect(err?.message).toMatch(new RegExp(`asked for a ${kind} password: refused`));
      expect(f.seen.startup).toBe(true);
      await new Promise((r) => setTimeout(r, 100));
      // no PasswordMessage ('p') at all, let alone the password
      expect(f.seen.after.includes(Buffer.from('the-secret-password'))).toBe(false);
      expect(f.seen.after.length === 0 || f.seen.after[0] !== 0x70).toBe(true);
    });
  }
});
