// The parts that make failover fast, without a lab: wake-ups of the loop, and the PCP client
// that reads and switches pgpool's routing (its wire format, against a server that checks it as pgpool's
// pcp_worker.c does; the lab tests drive the real pgpool with it).

import { afterEach, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { Wakeups } from '../../src/reconcile/reconciler.js';
import { PcpRefused, PcpSession, pcpRequest, requestMessage } from '../../src/drivers/pgpool/pcp.js';
import { renderPcpConf } from '../../src/drivers/pgpool/config.js';
import { poolBackends } from '../../src/drivers/pgpool/backends.js';
import { PoolClusterState } from '../../src/drivers/pgpool/state.js';
import { parseSpecFile } from '../../src/spec/parse.js';
import { join } from 'node:path';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('Wakeups', () => {
  it('cuts a sleep short when a cluster is woken, and hands out each wake-up once', async () => {
    const w = new Wakeups();
    // A sleep that ends only when interrupted (or after a minute, failing the test below).
    let interrupted = 0;
    const sleep = (ms: number, signal?: AbortSignal) =>
      new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 60_000 + ms);
        signal?.addEventListener('abort', () => (interrupted++, clearTimeout(t), resolve()), { once: true });
      });
    setTimeout(() => w.wake('lab'), 20);
    await w.sleep(10_000, sleep);
    expect(interrupted).toBe(1);
    expect([...w.take()]).toEqual(['lab']);
    expect([...w.take()]).toEqual([]);
    // a wake-up that came before the sleep is not lost: no sleep at all
    w.wake('other');
    await w.sleep(10_000, sleep);
    expect(interrupted).toBe(1);
    expect([...w.take()]).toEqual(['other']);
  });
});

describe('PCP client', () => {
  const md5 = (b: Buffer | string) => createHash('md5').update(b).digest('hex');
  const msg = (type: string, body: Buffer) => {
    const h = Buffer.alloc(5);
    h.write(type, 0, 'latin1');
    h.writeInt32BE(body.length + 4, 1);
    return Buffer.concat([h, body]);
  };
  const cstr = (s: string) => Buffer.from(`${s}\0`);

  /** A PCP server as pgpool's pcp_worker.c speaks it: salt, md5 check against the pcp.conf line
   *  pgop writes, then one command. Records what it received. */
  async function fakePgpool(password: string, answer: (type: string, body: Buffer) => Buffer | null) {
    const conf = renderPcpConf(password).trim().split('\n').pop()!;
    const [user, hashed] = conf.split(':') as [string, string];
    const got: { type: string; body: Buffer }[] = [];
    const sockets: Socket[] = [];
    const server = createServer((sock: Socket) => {
      sockets.push(sock);
      let buf = Buffer.alloc(0);
      const salt = Buffer.from([1, 2, 3, 4]);
      sock.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 5 && buf.length >= 1 + buf.readInt32BE(1)) {
          const type = String.fromCharCode(buf[0]!);
          const body = buf.subarray(5, 1 + buf.readInt32BE(1));
          buf = buf.subarray(1 + buf.readInt32BE(1));
          got.push({ type, body });
          if (type === 'M') sock.write(msg('m', salt));
          else if (type === 'R') {
            const [u, sent] = body.toString().split('\0');
            // user_authenticate(): md5(md5(stored md5 + user) + salt)
            const want = md5(Buffer.concat([Buffer.from(md5(hashed + u)), salt]));
            if (u === user && sent === want) sock.write(msg('r', cstr('AuthenticationOK')));
            else
              sock.end(
                msg('E', Buffer.concat([cstr('SERROR'), cstr('Mauthentication failed'), Buffer.from([0])])),
              );
          } else if (type === 'X') sock.end();
          else {
            const out = answer(type, body);
            if (out) sock.write(out);
          }
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    return { port: (server.address() as AddressInfo).port, got, sockets };
  }

  it('authenticates as pgpool checks it and sends promote, attach and detach in its layout', async () => {
    const srv = await fakePgpool('s3cret', (type) =>
      type === 'C' ? msg('c', cstr('CommandComplete')) : msg('d', cstr('CommandComplete')),
    );
    const target = { host: '127.0.0.1', port: srv.port, user: 'pgop', password: 's3cret' };
    await pcpRequest(target, { kind: 'promote', nodeId: 1 }, 2000);
    await pcpRequest(target, { kind: 'attach', nodeId: 2 }, 2000);
    await pcpRequest(target, { kind: 'detach', nodeId: 0 }, 2000);
    const commands = srv.got.filter((g) => !'MRX'.includes(g.type));
    // process_promote_node() reads "<id> " up to the space, skips it and the NUL, then the option
    expect(commands.map((c) => [c.type, c.body.toString('latin1')])).toEqual([
      ['J', '1 \0n'],
      ['C', '2\0'],
      ['D', '0\0'],
    ]);
    expect(requestMessage({ kind: 'promote', nodeId: 1 }).readInt32BE(1)).toBe(4 + 4);
  });

  it('an open session carries requests one after another, and is unusable once pgpool ends it', async () => {
    const srv = await fakePgpool('s3cret', (type) => msg(type === 'C' ? 'c' : 'd', cstr('CommandComplete')));
    const session = await PcpSession.open(
      { host: '127.0.0.1', port: srv.port, user: 'pgop', password: 's3cret' },
      2000,
    );
    expect(session.usable).toBe(true);
    await session.request({ kind: 'attach', nodeId: 2 }, 2000);
    await session.request({ kind: 'promote', nodeId: 1 }, 2000);
    // one login for both
    expect(srv.got.map((g) => g.type)).toEqual(['M', 'R', 'C', 'J']);
    session.close();
    expect(session.usable).toBe(false);
    await expect(session.request({ kind: 'attach', nodeId: 2 }, 2000)).rejects.toThrow(/closed/);
    // pgpool ending the session (its PCP process restarts after a failover)
    const again = await PcpSession.open(
      { host: '127.0.0.1', port: srv.port, user: 'pgop', password: 's3cret' },
      2000,
    );
    for (const s of srv.sockets) s.destroy();
    await new Promise((r) => setTimeout(r, 50));
    expect(again.usable).toBe(false);
  });

  it("reads pgpool's backends as pcp_worker.c lays them out: node count, then each one's stats", async () => {
    const spec = parseSpecFile(join(__dirname, '../../specs/lab-3node.yaml')).spec;
    const [a, b, c] = spec.nodes.map((n) => n.address);
    // inform_health_check_stats(): node_id, hostname, port, status, role, then counters
    const rows = [
      [a, 'down', 'standby'],
      [c, 'up', 'standby'], // pgpool's node 1 has pg03's address: matched by address
      [b, 'waiting', 'primary'],
    ];
    const srv = await fakePgpool('s3cret', (type, body) => {
      if (type === 'L') return msg('l', Buffer.concat([cstr('CommandComplete'), cstr('3')]));
      const id = Number(body.toString().replace(/\0$/, ''));
      const [host, status, role] = rows[id]!;
      const f = [String(id), host!, '5432', status!, role!, '2026-12-03 09:00:00', '0', '0'];
      return msg('h', Buffer.concat([cstr('CommandComplete'), ...f.map(cstr)]));
    });
    const cluster = { ...spec, pgpool: { ...spec.pgpool, address: '127.0.0.1', pcpPort: srv.port } };
    const state = new PoolClusterState();
    const link = { cluster, address: '127.0.0.1', state, readPassword: () => Promise.resolve('s3cret\n') };
    expect(await poolBackends(link, 2000)).toEqual([
      { name: 'pg01', status: 'down', role: 'standby' },
      { name: 'pg03', status: 'up', role: 'standby' },
      { name: 'pg02', status: 'up', role: 'primary' },
    ]);
    // one login, closed at once: an open PCP session holds up pgpool's PCP restart
    await new Promise((r) => setTimeout(r, 50));
    expect(srv.got.map((g) => g.type)).toEqual(['M', 'R', 'L', 'H', 'H', 'H', 'X']);
    expect(srv.got.filter((g) => g.type === 'H').map((g) => g.body.toString())).toEqual([
      '0\0',
      '1\0',
      '2\0',
    ]);
    // a wrong password kept: read again at the next look
    state.pcpPassword = 'stale';
    await expect(poolBackends(link, 2000)).rejects.toBeInstanceOf(PcpRefused);
    expect(state.pcpPassword).toBeUndefined();
  });

  it('says why pgpool refused, and refuses a wrong password', async () => {
    const srv = await fakePgpool('s3cret', () =>
      msg(
        'E',
        Buffer.concat([
          cstr('SFATAL'),
          cstr('Minvalid promote request'),
          cstr("Dspecified node is already primary node, can't promote node id 1"),
          Buffer.from([0]),
        ]),
      ),
    );
    const ok = { host: '127.0.0.1', port: srv.port, user: 'pgop', password: 's3cret' };
    await expect(pcpRequest(ok, { kind: 'promote', nodeId: 1 }, 2000)).rejects.toThrow(
      /invalid promote request: specified node is already primary/,
    );
    await expect(
      pcpRequest({ ...ok, password: 'wrong' }, { kind: 'promote', nodeId: 1 }, 2000),
    ).rejects.toBeInstanceOf(PcpRefused);
  });

  it(
    'gives up within its timeout on a pgpool that never answers, ' + 'and fails at once on a closed port',
    async () => {
      const srv = await fakePgpool('s3cret', () => null);
      const t0 = Date.now();
      await expect(
        pcpRequest(
          { host: '127.0.0.1', port: srv.port, user: 'pgop', password: 's3cret' },
          { kind: 'attach', nodeId: 1 },
          300,
        ),
      ).rejects.toThrow(/within 300 ms/);
      expect(Date.now() - t0).toBeLessThan(5000);
      const closed = createServer();
      await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
      const port = (closed.address() as AddressInfo).port;
      await new Promise((r) => closed.close(r));
      await expect(
        pcpRequest(
          { host: '127.0.0.1', port, user: 'pgop', password: 'x' },
          { kind: 'attach', nodeId: 1 },
          2000,
        ),
      ).rejects.toThrow(/ECONNREFUSED/);
    },
  );
});
