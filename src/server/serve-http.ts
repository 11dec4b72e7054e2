// How `pgop serve` brings up its HTTP side: on the address it binds itself, or on a socket its
// parent bound and handed over (a lab serve runs in the hub namespace, whose loopback the host
// cannot reach, so the socket is bound before the re-exec).

import { PgopError } from '../errors.js';
import type { Log } from '../reconcile/reconciler.js';
import type { Store } from '../store/store.js';
import { startHttpServer, type HttpServer, type Readiness } from './http.js';
import { LISTEN_FD_ENV, bindForChild, type ListenConfig } from './listen.js';

/** A socket bound here for a child: pass `fds` as the child's fd 3 (the environment names it
 *  until `spawned()`), then call `spawned()`, which closes this process's copy. */
export interface HandOver {
  fds: number[];
  port: number;
  spawned(): void;
}

const cannotListen = (listen: ListenConfig, err: unknown) =>
  new PgopError('terminal', `cannot listen on ${listen.host}:${listen.port}: ${(err as Error).message}`, {
    cause: err,
  });

/** The HTTP server, or null when the default address is taken (another serve of another store
 *  may have it: the loop matters more). An explicit --listen that fails stops serve. */
export async function startServeHttp(
  store: Store,
  listen: ListenConfig,
  log: Log,
  readiness: () => Readiness,
): Promise<HttpServer | null> {
  const inherited = process.env[LISTEN_FD_ENV];
  const fd = inherited && /^\d+$/.test(inherited) ? Number(inherited) : undefined;
  try {
    const server = await startHttpServer({
      store,
      listen,
      readiness,
      log,
      ...(fd !== undefined ? { fd } : {}),
    });
    const a = server.address();
    const where = { listen: `${a.host}:${a.port}`, tls: !!listen.tls, writes: !!listen.token };
    log.info(where, 'HTTP API, metrics and dashboard listening');
    return server;
  } catch (err) {
    if (!listen.explicit && (err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      const msg = 'the default HTTP address is in use; serving without HTTP (pass --listen)';
      log.warn({ listen: `${listen.host}:${listen.port}` }, msg);
      return null;
    }
    throw cannotListen(listen, err);
  }
}

/** Bind the listen address here for a child. When the default address is taken, undefined: the
 *  child then tries in its own namespace. */
export async function handOverListener(listen: ListenConfig): Promise<HandOver | undefined> {
  try {
    const bound = await bindForChild(listen);
    process.env[LISTEN_FD_ENV] = '3';
    return {
      fds: [bound.fd],
      port: bound.port,
      spawned() {
        delete process.env[LISTEN_FD_ENV];
        bound.close();
      },
    };
  } catch (err) {
    if (!listen.explicit) return undefined;
    throw cannotListen(listen, err);
  }
}

/** For `pgop serve` before it may re-execute itself in the lab hub: a hand-over, unless this
 *  process is that re-execution or was handed a socket already. */
export async function handOverBeforeHub(listen: ListenConfig): Promise<HandOver | undefined> {
  if (process.env[LISTEN_FD_ENV] || process.env.PGOP_IN_HUB) return undefined;
  return handOverListener(listen);
}
