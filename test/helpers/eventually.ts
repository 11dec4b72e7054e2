// Waiting helpers shared by the integration tests: retry a check until it passes or a deadline
// passes (the last failure is then the test's), and a short-lived postgres client.

import pg from 'pg';

/** `check()`'s first success within `ms`; a failure is retried every `stepMs` until then. With
 *  `retryIf`, only failures it accepts are retried (others fail at once). */
export async function eventually<T>(
  check: () => Promise<T>,
  ms = 20_000,
  opts: { stepMs?: number; retryIf?: (err: unknown) => boolean } = {},
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() >= deadline || (opts.retryIf && !opts.retryIf(err))) throw err;
      await new Promise((r) => setTimeout(r, opts.stepMs ?? 300));
    }
  }
}

/** A short-lived client, always closed. */
export async function withPg<T>(cfg: pg.ClientConfig, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionTimeoutMillis: 5000, ...cfg });
  c.on('error', () => {});
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}
