// Everything that talks to lab hosts runs inside the lab's hub namespace (no default route):
// the root namespace would route a lab address off the machine whenever it is not up.

import { Store } from '../store/store.js';
import { terminal } from '../errors.js';

/** Re-run this command inside the hub when the store holds lab clusters (never returns then). */
export async function enterLabHubIfNeeded(
  db: string,
  force = false,
  handOver?: { fds: number[]; spawned(): void },
): Promise<void> {
  if (process.env.PGOP_IN_HUB) return;
  if (!force) {
    const store = Store.open(db, { readonly: true });
    try {
      if (!store.listClusters().some((c) => c.spec.provider.type === 'lab')) return;
    } finally {
      store.close();
    }
  }
  if (process.getuid?.() !== 0)
    throw terminal('cannot reach lab clusters: the lab provider needs root (network namespaces, sshd)');
  const { inHub, reexecInHub } = await import('../drivers/lab/netns.js');
  if (inHub()) return;
  await reexecInHub(undefined, handOver);
}
