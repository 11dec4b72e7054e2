// `pgop host-key list|rotate|forget`: the SSH host keys pgop made for its machines and pinned
// before their first boot. Only fingerprints are ever printed.

import { Store } from '../../store/store.js';
import { EXIT, terminal } from '../../errors.js';
import { enterLabHubIfNeeded } from '../lab-ns.js';
import { NotFoundError } from '../errors.js';
import { renderTable } from '../table.js';
import type { ClusterSpec, NodeSpec } from '../../spec/types.js';

/** The placeholder algo of `forget` (src/drivers/ssh/shell.ts TRUST_NEXT_KEY; not imported so
 *  that `list` does not load ssh2). */
const TRUST_NEXT_KEY = 'trust-next-key';
const POOL = 'pool';

async function fingerprintOf(keyB64: string): Promise<string> {
  const { createHash } = await import('node:crypto');
  const digest = createHash('sha256').update(Buffer.from(keyB64, 'base64')).digest('base64');
  return `SHA256:${digest.replace(/=+$/, '')}`;
}

export async function hostKeyListCommand(
  db: string,
  o: { cluster?: string; output?: 'table' | 'json' },
): Promise<number> {
  const store = Store.open(db, { readonly: true });
  try {
    if (o.cluster !== undefined && !store.getCluster(o.cluster))
      throw new NotFoundError(`cannot list the host keys of cluster ${o.cluster}: no such cluster`);
    const keys = store.listHostKeys(o.cluster);
    const items = await Promise.all(
      keys.map(async (k) => ({
        cluster: k.cluster,
        node: k.node,
        algo: k.algo === TRUST_NEXT_KEY ? null : k.algo,
        fingerprint: k.algo === TRUST_NEXT_KEY ? null : await fingerprintOf(k.keyB64),
        pinnedAt: new Date(k.pinnedAt).toISOString(),
        ...(k.algo === TRUST_NEXT_KEY ? { note: 'forgotten: the next key presented will be accepted' } : {}),
      })),
    );
    if (o.output === 'json') {
      process.stdout.write(`${JSON.stringify({ items }, null, 2)}\n`);
    } else if (items.length === 0) {
      process.stdout.write('no host keys pinned\n');
    } else {
      const rows = items.map((i) => [
        i.cluster,
        i.node,
        i.algo ?? '-',
        i.fingerprint ?? `(${i.note})`,
        i.pinnedAt,
      ]);
      process.stdout.write(`${renderTable(['CLUSTER', 'NODE', 'ALGO', 'FINGERPRINT', 'PINNED'], rows)}\n`);
    }
    return EXIT.ok;
  } finally {
    store.close();
  }
}

function machineOf(spec: ClusterSpec, node: string): NodeSpec | typeof POOL {
  if (node === POOL && spec.pgpool.enabled && spec.pgpool.address) return POOL;
  const n = spec.nodes.find((x) => x.name === node);
  if (!n) {
    const names = [
      ...spec.nodes.map((x) => x.name),
      ...(spec.pgpool.enabled && spec.pgpool.address ? [POOL] : []),
    ];
    throw new NotFoundError(`cannot find ${spec.name}/${node}: no such machine (${names.join(', ')})`);
  }
  return n;
}

export async function hostKeyRotateCommand(db: string, cluster: string, node: string): Promise<number> {
  await enterLabHubIfNeeded(db);
  const store = Store.open(db);
  try {
    const c = store.getCluster(cluster);
    if (!c) throw new NotFoundError(`cannot rotate the host key of ${cluster}/${node}: no such cluster`);
    const spec = c.spec;
    const machine = machineOf(spec, node);
    if (spec.provider.type === 'sim')
      throw terminal(`cannot rotate the host key of ${cluster}/${node}: simulated machines have no SSH`);
    if (process.getuid?.() !== 0)
      throw terminal(
        `cannot rotate the host key of ${cluster}/${node}: ` +
          `needs root (the keys and the SSH login are root's)`,
      );
    let world: {
      rotateHostKey(
        c: ClusterSpec,
        n: NodeSpec | typeof POOL,
      ): Promise<import('../../drivers/ssh/rotate.js').RotateResult>;
      provider: { close(): Promise<void> };
      postgres: { close(): Promise<void> };
      pool: { close(): Promise<void> };
    };
    if (spec.provider.type === 'lab') {
      const { createLabWorld } = await import('../../drivers/lab/world.js');
      world = createLabWorld({ store });
    } else {
      const { createLibvirtWorld } = await import('../../drivers/libvirt/world.js');
      world = createLibvirtWorld({ store, provider: { watchEvents: false } });
    }
    try {
      const r = await world.rotateHostKey(spec, machine);
      const reason =
        `host key of ${r.id} rotated: ${r.previous} -> ${r.current}` +
        `${r.resumed ? ' (a rotation cut short earlier, finished)' : ''}`;
      announce(store, { cluster, node, ruleId: 'ssh.host-key-rotated', reason });
      return EXIT.ok;
    } finally {
      await Promise.allSettled([world.provider.close(), world.postgres.close(), world.pool.close()]);
    }
  } finally {
    store.close();
  }
}

export async function hostKeyForgetCommand(db: string, cluster: string, node: string): Promise<number> {
  const store = Store.open(db);
  try {
    const c = store.getCluster(cluster);
    if (!c) throw new NotFoundError(`cannot forget the host key of ${cluster}/${node}: no such cluster`);
    machineOf(c.spec, node);
    const had = store.getHostKey(cluster, node);
    store.pinHostKey(cluster, node, TRUST_NEXT_KEY, '', Date.now(), { replace: true });
    const reason =
      `host key of ${cluster}/${node} forgotten` +
      `${had && had.algo !== TRUST_NEXT_KEY ? ` (was ${await fingerprintOf(had.keyB64)})` : ''}` +
      `: the next key it presents will be accepted and pinned, unverified`;
    announce(store, { cluster, node, ruleId: 'ssh.host-key-forgotten', reason });
    process.stderr.write(
      'warning: that first contact is not verified; for a machine pgop made, ' +
        '`pgop host-key rotate` (or deleting and re-creating it) keeps every contact verified\n',
    );
    return EXIT.ok;
  } finally {
    store.close();
  }
}

/** A host-key change made by hand: an event (the cluster's story) and the same line on stdout. */
function announce(store: Store, e: { cluster: string; node: string; ruleId: string; reason: string }): void {
  store.recordEvent({ time: Date.now(), from: null, to: null, ...e });
  process.stdout.write(`${e.reason}\n`);
}
