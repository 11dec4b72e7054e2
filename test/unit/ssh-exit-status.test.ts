// A quick command's exit status can reach the SSH client in the same read as the confirmation of
// its exec request: ssh2 then emits 'exit' before any code awaiting the channel runs. Under load
// (the lab with two busy cores) that was read as "connection lost before the command finished"
// for a third of the virtual IP's reads, and the address did not move. ssh2's Client is replaced
// here by one that does exactly that: confirmation, output, exit status, close, all at once.

import { createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { LOST_MID_COMMAND, SshShell, createMemoryPins } from '../../src/drivers/ssh/shell.js';

/** How the stand-in server ends each command: an exit status, a signal, or nothing at all. */
const ending = vi.hoisted((): { kind: 'status' | 'signal' | 'none' } => ({ kind: 'status' }));

vi.mock('ssh2', async () => {
  const { EventEmitter } = await import('node:events');
  const { PassThrough } = await import('node:stream');
  class FakeChannel extends PassThrough {
    readonly stderr = new PassThrough();
    signal(): void {}
    close(): void {}
  }
  class Client extends EventEmitter {
    private sock: { destroy(): void } | undefined;
    connect(opts: { sock: { destroy(): void } }): void {
      this.sock = opts.sock;
      setImmediate(() => this.emit('ready'));
    }
    end(): void {
      this.sock?.destroy();
    }
    exec(_cmd: string, cb: (err: Error | undefined, ch: FakeChannel) => void): void {
      setImmediate(() => {
        const ch = new FakeChannel();
        cb(undefined, ch); // CHANNEL_SUCCESS
        // ... and in the same read: output, exit status, EOF, close (ssh2 passes the status on)
        ch.push('held\n');
        ch.push(null);
        ch.stderr.push(null);
        const code = ending.kind === 'status' ? 0 : ending.kind === 'signal' ? null : undefined;
        if (ending.kind === 'status') ch.emit('exit', 0);
        if (ending.kind === 'signal') ch.emit('exit', null, 'SIGKILL'); // as ssh2 names it
        ch.emit('close', code, ending.kind === 'signal' ? 'SIGKILL' : undefined);
      });
    }
  }
  return { Client, default: { Client } };
});

describe(
  'SSH exec: an exit status that arrives with the channel confirmation (stand-in client)',
  { timeout: 5000 },
  () => {
    let server: Server;
    let port = 0;
    const tmp = mkdtempSync(join(tmpdir(), 'pgop-ssh-exit-'));
    const keyPath = join(tmp, 'key');

    beforeAll(async () => {
      writeFileSync(keyPath, 'not read by the stand-in client', { mode: 0o600 });
      server = createServer((sock) => sock.on('error', () => {}));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as AddressInfo).port;
    });
    afterAll(async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(tmp, { recursive: true, force: true });
    });

    const run = async () => {
      const shell = new SshShell(createMemoryPins(), { connectTimeoutMs: 2000 });
      const ref = { id: 't/n1', address: '127.0.0.1', port, user: 'root', privateKeyPath: keyPath };
      try {
        return await shell.exec(ref, ['sh', '-c', 'echo held'], { timeoutMs: 2000 });
      } finally {
        await shell.close();
      }
    };

    it('takes the status and the output, not a lost connection', async () => {
      ending.kind = 'status';
      await expect(run()).resolves.toEqual({ code: 0, stdout: 'held\n', stderr: '' });
    });

    it('a signal is the shell-like 128 + n', async () => {
      ending.kind = 'signal';
      await expect(run()).resolves.toMatchObject({ code: 137 });
    });

    it('a close with no status at all is a lost connection (the outcome is unknown)', async () => {
      ending.kind = 'none';
      await expect(run()).rejects.toThrow(LOST_MID_COMMAND);
    });
  },
);
