// Where `pgop serve` listens, and what a listen address demands: loopback is open to local
// readers; anything else needs a bearer token and TLS, or it is refused before serve starts.

import { createServer, isIP, type AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';

export const DEFAULT_LISTEN = '127.0.0.1:9187';

export interface ListenFlags {
  /** ADDR:PORT, [V6ADDR]:PORT, or "off" */
  listen?: string;
  tokenFile?: string;
  tlsCert?: string;
  tlsKey?: string;
}

export interface ListenConfig {
  host: string;
  port: number;
  /** the bearer token (from --token-file); never logged, never in a response */
  token: string | null;
  tls: { cert: Buffer; key: Buffer } | null;
  /** asked for with --listen: failing to bind stops serve (the default only warns) */
  explicit: boolean;
}

/** Names the fd of a listening socket a parent process handed over (see bindForChild). */
export const LISTEN_FD_ENV = 'PGOP_LISTEN_FD';

/** A usage mistake in the listen flags (exit 2). */
export class ListenError extends Error {}

export function parseListen(value: string): { host: string; port: number } {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(value) ?? /^([^:\s]+):(\d+)$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ListenError(
      `cannot listen on ${JSON.stringify(value)}: expected ADDR:PORT, [IPV6]:PORT or off`,
    );
  }
  const host = m[1]!;
  if (host !== 'localhost' && isIP(host) === 0) {
    throw new ListenError(
      `cannot listen on ${JSON.stringify(value)}: ${host} is not an IP address (or localhost)`,
    );
  }
  return { host, port };
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function readSecretFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ListenError(
      `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`,
    );
  }
}

/** The listen configuration from the flags, or null for "off". Refuses a non-loopback address
 *  without both a token and TLS: the API shows the whole fleet's topology, and write endpoints
 *  act on it. */
export function resolveListen(flags: ListenFlags): ListenConfig | null {
  const value = flags.listen ?? DEFAULT_LISTEN;
  if (value === 'off') return null;
  const { host, port } = parseListen(value);
  if (!!flags.tlsCert !== !!flags.tlsKey)
    throw new ListenError('cannot use TLS: give both --tls-cert and --tls-key');
  let token: string | null = null;
  if (flags.tokenFile) {
    token = readSecretFile(flags.tokenFile, 'the token file').toString('utf8').trim();
    if (token.length < 16)
      throw new ListenError(`cannot use the token in ${flags.tokenFile}: it must be at least 16 characters`);
  }
  const tls =
    flags.tlsCert && flags.tlsKey
      ? {
          cert: readSecretFile(flags.tlsCert, 'the TLS certificate'),
          key: readSecretFile(flags.tlsKey, 'the TLS key'),
        }
      : null;
  if (!isLoopback(host)) {
    if (!token) throw new ListenError(`cannot listen on ${value}: a non-loopback address needs --token-file`);
    if (!tls)
      throw new ListenError(
        `cannot listen on ${value}: a non-loopback address needs --tls-cert and --tls-key`,
      );
  }
  return { host, port, token, tls, explicit: flags.listen !== undefined };
}

/** Bind the listen address in this process's network namespace for a child to serve on (the
 *  lab's serve runs in the hub namespace; the socket bound here keeps the dashboard reachable
 *  from the host). `close` after the child was spawned: this process must not accept. */
export async function bindForChild(
  listen: ListenConfig,
): Promise<{ fd: number; port: number; close(): void }> {
  const server = createServer({ pauseOnConnect: true }, (socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  return { fd, port: (server.address() as AddressInfo).port, close: () => server.close() };
}
