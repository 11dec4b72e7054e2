// The HTTP side of `pgop serve`: health, readiness, Prometheus metrics, the JSON API (the
// documents `pgop get -o json` prints), the event stream and the dashboard. Read-only unless a
// token is configured; a non-loopback listener is TLS-only and needs the token for everything
// but the health checks and the (data-free) dashboard page.

import { createHash, timingSafeEqual } from 'node:crypto';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Store } from '../store/store.js';
import { PgopError, SpecError, messageOf } from '../errors.js';
import { parseSpecText } from '../spec/parse.js';
import { dryRunResult } from '../cli/commands/apply.js';
import type { Log } from '../reconcile/reconciler.js';
import { isLoopback, type ListenConfig } from './listen.js';
import { ServeMetrics } from './metrics.js';
import { EventStreams } from './event-stream.js';
import { apiDocument, topologyItems, type ApiKind } from './queries.js';
import { DASHBOARD_HTML } from './dashboard.js';

/** What /readyz reports: each check and whether it holds. */
export interface Readiness {
  lockHeld: boolean;
  storeWritable: boolean;
  loopAlive: boolean;
}

export interface HttpServerOptions {
  store: Store;
  listen: ListenConfig;
  readiness: () => Readiness;
  metrics?: ServeMetrics;
  log?: Log;
  /** serve on this inherited listening socket instead of binding `listen` */
  fd?: number;
}

export interface HttpServer {
  readonly metrics: ServeMetrics;
  /** the bound address (port 0 in the config gives a free port) */
  address(): { host: string; port: number };
  close(): Promise<void>;
}

const API_KINDS = new Set<ApiKind>(['clusters', 'nodes', 'events', 'jobs']);

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const SECURITY_HEADERS = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};
// The page may talk to this server only: no fonts, scripts or images from anywhere else.
const DASHBOARD_CSP =
  "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; " +
  "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

function send(
  res: ServerResponse,
  status: number,
  body: string,
  type: string,
  extra: Record<string, string> = {},
): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': type, ...extra });
  res.end(body);
}

const sendJson = (res: ServerResponse, status: number, value: unknown) =>
  send(res, status, `${JSON.stringify(value, null, 2)}\n`, 'application/json; charset=utf-8');

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

function bearer(req: IncomingMessage): string | null {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  return m ? m[1]! : null;
}

async function readBody(req: IncomingMessage, limit = 64 * 1024): Promise<string> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new HttpError(413, 'request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export async function startHttpServer(o: HttpServerOptions): Promise<HttpServer> {
  const { store, listen } = o;
  const metrics = o.metrics ?? new ServeMetrics(store);
  const streams = new EventStreams(store, (err) =>
    o.log?.warn({ err: messageOf(err) }, 'cannot read events for the stream'),
  );
  const tokenDigest = listen.token ? digest(listen.token) : null;
  const readsNeedToken = !isLoopback(listen.host);

  const tokenOk = (req: IncomingMessage) => {
    const given = bearer(req);
    return !!tokenDigest && given !== null && timingSafeEqual(digest(given), tokenDigest);
  };

  // A loopback listener answers only requests addressed to loopback: a web page elsewhere cannot
  // read the API through a DNS name that resolves to 127.0.0.1 (DNS rebinding).
  const hostAllowed = (req: IncomingMessage) => {
    if (readsNeedToken) return true;
    const host = (req.headers.host ?? '').replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
    return isLoopback(host);
  };

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://pgop');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    if (!hostAllowed(req))
      throw new HttpError(421, 'this server answers only requests addressed to loopback');
    if (path === '/healthz') return send(res, 200, 'ok\n', 'text/plain; charset=utf-8');
    if (path === '/readyz') {
      const r = o.readiness();
      const ready = r.lockHeld && r.storeWritable && r.loopAlive;
      return sendJson(res, ready ? 200 : 503, { ready, checks: r });
    }
    if (path === '/' && req.method === 'GET') {
      return send(res, 200, DASHBOARD_HTML, 'text/html; charset=utf-8', {
        'content-security-policy': DASHBOARD_CSP,
      });
    }
    if (req.method === 'POST') return write(req, res, path);
    if (req.method !== 'GET' && req.method !== 'HEAD')
      throw new HttpError(405, `method ${req.method} not allowed`);
    if (readsNeedToken && !tokenOk(req)) throw new HttpError(401, 'a bearer token is needed');
    if (path === '/metrics') return send(res, 200, await metrics.scrape(), metrics.contentType);
    const cluster = url.searchParams.get('cluster') ?? undefined;
    if (path === '/api/v1/events/stream') {
      const last = req.headers['last-event-id'] ?? url.searchParams.get('after');
      const afterId = typeof last === 'string' && /^\d+$/.test(last) ? Number(last) : undefined;
      return streams.open(res, {
        ...(cluster ? { cluster } : {}),
        ...(afterId !== undefined ? { afterId } : {}),
      });
    }
    if (path === '/api/v1/topology')
      return sendJson(res, 200, { kind: 'topology', items: topologyItems(store, cluster) });
    const kind = /^\/api\/v1\/([a-z]+)$/.exec(path)?.[1] as ApiKind | undefined;
    if (kind && API_KINDS.has(kind)) {
      const allIncarnations = ['1', 'true', ''].includes(url.searchParams.get('all-incarnations') ?? 'no');
      return sendJson(
        res,
        200,
        apiDocument(store, kind, { ...(cluster ? { cluster } : {}), allIncarnations }),
      );
    }
    throw new HttpError(404, `no such endpoint: ${path}`);
  }

  async function write(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    if (!tokenDigest) throw new HttpError(403, 'write endpoints are off: start pgop serve with --token-file');
    if (!tokenOk(req)) throw new HttpError(401, 'a bearer token is needed');
    if (path === '/api/v1/apply') {
      const dryRun = ['1', 'true', ''].includes(
        new URL(req.url ?? '/', 'http://x').searchParams.get('dryRun') ?? 'no',
      );
      return sendJson(res, 200, applySpecText(store, await readBody(req), dryRun));
    }
    const m = /^\/api\/v1\/clusters\/([^/]+)\/switchover$/.exec(path);
    if (!m) throw new HttpError(404, `no such endpoint: POST ${path}`);
    const body = await readBody(req);
    let to: unknown;
    try {
      to = body.trim() ? (JSON.parse(body) as { to?: unknown }).to : undefined;
    } catch {
      throw new HttpError(400, 'the body must be JSON: {"to": "NODE"} or {}');
    }
    if (to !== undefined && typeof to !== 'string') throw new HttpError(400, '"to" must be a node name');
    const requested = requestSwitchover(store, decodeURIComponent(m[1]!), to);
    return sendJson(res, 202, requested);
  }

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    route(req, res).catch((err: unknown) => {
      const status =
        err instanceof HttpError
          ? err.status
          : err instanceof PgopError && err.kind === 'terminal'
            ? 404
            : 500;
      if (status === 500)
        o.log?.error({ err: messageOf(err), path: (req.url ?? '').split('?')[0] }, 'HTTP request failed');
      if (res.headersSent) return void res.end();
      sendJson(res, status, {
        error: status === 500 ? 'internal error (see the serve log)' : messageOf(err),
      });
    });
  };
  const server: Server = listen.tls
    ? createHttpsServer({ cert: listen.tls.cert, key: listen.tls.key, minVersion: 'TLSv1.2' }, handler)
    : createHttpServer(handler);
  server.headersTimeout = 10_000;
  server.requestTimeout = 0; // event streams stay open
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const ready = () => {
      server.off('error', reject);
      resolve();
    };
    if (o.fd !== undefined) server.listen({ fd: o.fd }, ready);
    else server.listen(listen.port, listen.host, ready);
  });
  return {
    metrics,
    address() {
      const a = server.address() as AddressInfo;
      return { host: a.address, port: a.port };
    },
    close() {
      streams.close();
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Queue a switchover as `pgop switchover` does; the loop carries it out. */
export function requestSwitchover(
  store: Store,
  cluster: string,
  to: string | undefined,
): { request: number | null; message: string } {
  const c = store.getCluster(cluster);
  if (!c) throw new HttpError(404, `cannot switch over cluster ${cluster}: no such cluster`);
  if (to && !c.spec.nodes.some((n) => n.name === to))
    throw new HttpError(400, `cannot switch over cluster ${cluster} to ${to}: no such node in its spec`);
  if (to && c.primary === to) return { request: null, message: `${to} is already the primary` };
  const args = { ...(c.primary ? { from: c.primary } : {}), ...(to ? { to } : {}) };
  const id = store.enqueueRequest(cluster, 'switchover', args, Date.now());
  return { request: id, message: 'switchover requested' };
}

/** `pgop apply -f -` over HTTP: the body is the spec YAML; an invalid spec changes nothing and its
 *  error names `<request>`, the line, column and field, as the CLI does for a file. */
export function applySpecText(
  store: Store,
  yaml: string,
  dryRun: boolean,
): { cluster: string; result: string; generation?: number; dryRun: boolean } {
  let parsed;
  try {
    parsed = parseSpecText(yaml, '<request>', { checkHost: true });
  } catch (err) {
    if (err instanceof SpecError) throw new HttpError(400, err.message);
    throw err;
  }
  const cluster = parsed.spec.name;
  if (dryRun) {
    return { cluster, result: dryRunResult(store, parsed), dryRun };
  }
  const { result, generation } = store.applySpec(parsed.spec, parsed.hash, parsed.source, Date.now());
  return { cluster, result, generation, dryRun };
}
