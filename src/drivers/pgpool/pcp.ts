// A PCP client (pgpool-II's control protocol, 4.x wire format) for the three requests pgop
// makes: promote, attach and detach a backend. Spoken directly over TCP from the operator:
// the pcp_* programs over SSH cost an SSH session and three processes on the pool host per
// request, which on a loaded host delayed routing to a new primary by up to a second.
//
// Wire format (src/libs/pcp/pcp.c): every message is a type byte, a 4-byte big-endian length
// that counts itself, and a body. Authentication: 'M' asks for a 4-byte salt ('m'), 'R' sends
// the user and md5(md5(md5(password) + user) + salt) as hex, 'r' says "AuthenticationOK".

import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';

export interface PcpTarget {
  host: string;
  port: number;
  user: string;
  password: string;
}

export type PcpRequest =
  /** make pgpool route writes to this node at once; pgpool marks every other node down */
  | { kind: 'promote'; nodeId: number }
  | { kind: 'attach'; nodeId: number }
  | { kind: 'detach'; nodeId: number };

/** Questions answered from pgpool's shared memory by its PCP worker: no backend is asked, and
 *  no pgpool child is needed, so they answer while every child is busy with clients. ('I', node
 *  info, is not one of them: its pg_status column opens a session to the node.) */
export type PcpQuery =
  /** how many backends pgpool has */
  | { kind: 'node-count' }
  /** one backend's health-check statistics, which begin with its address, status and role */
  | { kind: 'backend-stats'; nodeId: number };

/** pgpool refused the request (its error message); the connection itself worked. */
export class PcpRefused extends Error {}

const md5hex = (s: Buffer | string) => createHash('md5').update(s).digest('hex');

function message(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

const cstr = (s: string) => Buffer.from(`${s}\0`, 'utf8');

/** The request's message: 'J' promote ("<id> " NUL, then 'n': only switch pgpool's primary),
 *  'C' attach and 'D' detach ("<id>" NUL). */
export function requestMessage(req: PcpRequest): Buffer {
  switch (req.kind) {
    case 'promote':
      return message('J', Buffer.concat([cstr(`${req.nodeId} `), Buffer.from('n', 'latin1')]));
    case 'attach':
      return message('C', cstr(String(req.nodeId)));
    case 'detach':
      return message('D', cstr(String(req.nodeId)));
  }
}

/** 'L' node count (no body), 'H' health-check stats ("<id>" NUL). */
export function queryMessage(q: PcpQuery): Buffer {
  if (q.kind === 'node-count') return message('L', Buffer.alloc(0));
  return message('H', cstr(String(q.nodeId)));
}

/** An answer's body: NUL-terminated strings, the first "CommandComplete". */
export function answerFields(body: Buffer): string[] {
  const fields = body.toString('utf8').split('\0');
  if (fields.at(-1) === '') fields.pop();
  return fields;
}

/** md5 answer to the salt, as pcp_authorize() computes it. */
export function authAnswer(user: string, password: string, salt: Buffer): string {
  return md5hex(
    Buffer.concat([
      Buffer.from(md5hex(Buffer.concat([Buffer.from(md5hex(password)), Buffer.from(user)]))),
      salt,
    ]),
  );
}

/** The human part of an 'E' body: fields of a type byte and a NUL-terminated string. */
function errorText(body: Buffer): string {
  const fields: Record<string, string> = {};
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const type = String.fromCharCode(body[i]!);
    const end = body.indexOf(0, i + 1);
    if (end < 0) break;
    fields[type] = body.subarray(i + 1, end).toString('utf8');
    i = end + 1;
  }
  return [fields.M, fields.D].filter(Boolean).join(': ') || 'unknown error';
}

/** Reads whole messages off a socket, one at a time. */
class Reader {
  private buf = Buffer.alloc(0);
  private waiting: { resolve(m: { type: string; body: Buffer }): void; reject(e: Error): void } | null = null;
  private failure: Error | null = null;

  constructor(socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.deliver();
    });
    const fail = (e: Error) => {
      this.failure ??= e;
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = null;
        w.reject(this.failure);
      }
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('pgpool closed the PCP connection')));
  }

  private deliver(): void {
    if (!this.waiting || this.buf.length < 5) return;
    const len = this.buf.readInt32BE(1);
    if (len < 4 || len > 1 << 20) {
      const w = this.waiting;
      this.waiting = null;
      w.reject(new Error(`malformed PCP message (length ${len})`));
      return;
    }
    if (this.buf.length < 1 + len) return;
    const type = String.fromCharCode(this.buf[0]!);
    const body = this.buf.subarray(5, 1 + len);
    this.buf = this.buf.subarray(1 + len);
    const w = this.waiting;
    this.waiting = null;
    w.resolve({ type, body });
  }

  /** The next message that is not a notice ('N'). */
  async next(): Promise<{ type: string; body: Buffer }> {
    for (;;) {
      // after a failure only a whole message already read can still come
      if (this.failure && (this.buf.length < 5 || this.buf.length < 1 + this.buf.readInt32BE(1)))
        throw this.failure;
      const m = await new Promise<{ type: string; body: Buffer }>((resolve, reject) => {
        this.waiting = { resolve, reject };
        this.deliver();
      });
      if (m.type !== 'N') return m;
    }
  }
}

/** Destroys the socket unless cleared within timeoutMs (the pending read then fails). */
function deadline(socket: Socket, timeoutMs: number): NodeJS.Timeout {
  return setTimeout(
    () => socket.destroy(new Error(`no answer from pgpool's PCP port within ${timeoutMs} ms`)),
    timeoutMs,
  );
}

/** An authenticated PCP connection: requests one after another, until close() or pgpool ends it
 *  (it does on every failover, when it restarts its PCP process). Opening one ahead of time
 *  takes pgpool's fork of a PCP worker and the login's round trips off a failover. */
export class PcpSession {
  private closed = false;
  private busy = false;

  private constructor(
    private readonly socket: Socket,
    private readonly reader: Reader,
  ) {
    socket.on('close', () => (this.closed = true));
  }

  /** Connect and log in, within timeoutMs. Throws PcpRefused on a refused login. */
  static async open(target: PcpTarget, timeoutMs: number): Promise<PcpSession> {
    const socket = connect({ host: target.host, port: target.port });
    socket.setNoDelay(true);
    const timer = deadline(socket, timeoutMs);
    try {
      const reader = new Reader(socket);
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      socket.write(message('M', Buffer.alloc(0)));
      const salt = await reader.next();
      if (salt.type !== 'm' || salt.body.length < 4)
        throw new Error(`unexpected PCP answer '${salt.type}' to the salt request`);
      socket.write(
        message(
          'R',
          Buffer.concat([
            cstr(target.user),
            cstr(authAnswer(target.user, target.password, salt.body.subarray(0, 4))),
          ]),
        ),
      );
      const auth = await reader.next();
      if (auth.type === 'E') throw new PcpRefused(`PCP authentication failed: ${errorText(auth.body)}`);
      if (auth.type !== 'r') throw new Error(`unexpected PCP answer '${auth.type}' to authentication`);
      return new PcpSession(socket, reader);
    } catch (err) {
      socket.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Open and not in the middle of a request. */
  get usable(): boolean {
    return !this.closed && !this.busy && !this.socket.destroyed;
  }

  /** Send one request and wait for pgpool's answer (at most timeoutMs: then the session is
   *  closed, the request may or may not have been carried out). A refusal (PcpRefused) also
   *  ends the session: pgpool reports most of them as FATAL and ends its worker. */
  async request(req: PcpRequest, timeoutMs: number): Promise<void> {
    const fields = await this.exchange(requestMessage(req), timeoutMs, req.kind);
    if (fields.length !== 0) {
      this.close();
      throw new Error(`unexpected PCP answer (${fields.join(' ')}) to ${req.kind}`);
    }
  }

  /** Ask a read-only question; resolves with the answer's fields. */
  query(q: PcpQuery, timeoutMs: number): Promise<string[]> {
    return this.exchange(queryMessage(q), timeoutMs, q.kind);
  }

  /** One message out, one answer in: its NUL-separated fields after "CommandComplete". */
  private async exchange(out: Buffer, timeoutMs: number, what: string): Promise<string[]> {
    if (!this.usable) throw new Error('PCP session is closed or busy');
    this.busy = true;
    const timer = deadline(this.socket, timeoutMs);
    try {
      this.socket.write(out);
      const answer = await this.reader.next();
      if (answer.type === 'E') {
        this.close();
        throw new PcpRefused(errorText(answer.body));
      }
      const [code, ...fields] = answerFields(answer.body);
      if (code !== 'CommandComplete') {
        this.close();
        throw new Error(`unexpected PCP answer '${answer.type}' (${code ?? ''}) to ${what}`);
      }
      return fields;
    } finally {
      clearTimeout(timer);
      this.busy = false;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.socket.destroyed) this.socket.end(message('X', Buffer.alloc(0)));
    this.socket.destroy();
  }
}

/** Connect, authenticate, send one request, wait for pgpool's answer, say goodbye. Throws
 *  PcpRefused when pgpool answered with an error, another Error when it could not be asked. */
export async function pcpRequest(target: PcpTarget, req: PcpRequest, timeoutMs: number): Promise<void> {
  // timeoutMs bounds the login and the request each
  const session = await PcpSession.open(target, timeoutMs);
  try {
    await session.request(req, timeoutMs);
  } finally {
    session.close();
  }
}
